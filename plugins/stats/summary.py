"""Numbers over a whole capture (summary) and CSV export.

Summary, per stage: p50 / p95 / p99 of the windows' p50s and the max of the
windows' p99s; fps min / mean; totals of the drop counters. Percentiles use
the core's definition (``punktfunk_core.stats.percentile``: index
``min(floor(n·q), n−1)`` of the sorted values).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable

from punktfunk_core.stats import COUNT_FIELDS, OPTIONAL_FIELDS, percentile

#: counters whose totals make up ``total_drops``
DROP_FIELDS = ("frames_dropped", "packets_dropped", "send_dropped")
BASE_COLUMNS = ("t_ms", "session_id", "fps", "repeat_fps", "mbps", "bitrate_kbps")


def stage_names(samples: Iterable[dict[str, Any]]) -> list[str]:
    """Stage names in order of first appearance."""
    names: list[str] = []
    seen: set[str] = set()
    for s in samples:
        for st in s.get("stages", ()):
            n = st.get("name")
            if n not in seen:
                seen.add(n)
                names.append(n)
    return names


def present_optional(samples: Iterable[dict[str, Any]]) -> list[str]:
    """Optional fields present in at least one sample, in the canonical order."""
    present: set[str] = set()
    for s in samples:
        present.update(k for k in OPTIONAL_FIELDS if s.get(k) is not None)
    return [k for k in OPTIONAL_FIELDS if k in present]


def _r(v: float) -> float:
    return round(float(v), 1)


def summarize(capture: dict[str, Any]) -> dict[str, Any]:
    meta = capture.get("meta", {})
    samples = capture.get("samples", [])
    stages = []
    for name in stage_names(samples):
        p50s: list[float] = []
        p99s: list[float] = []
        for s in samples:
            for st in s.get("stages", ()):
                if st.get("name") == name:
                    p50s.append(float(st["p50_us"]))
                    p99s.append(float(st["p99_us"]))
                    break
        p50s.sort()
        stages.append({
            "name": name,
            "windows": len(p50s),
            "p50_us": _r(percentile(p50s, 0.50)),
            "p95_us": _r(percentile(p50s, 0.95)),
            "p99_us": _r(percentile(p50s, 0.99)),
            "max_p99_us": _r(max(p99s)) if p99s else 0.0,
        })
    fps = [float(s.get("fps", 0.0)) for s in samples]
    mbps = [float(s.get("mbps", 0.0)) for s in samples]
    counters: dict[str, float] = {}
    for key in present_optional(samples):
        if key in COUNT_FIELDS:
            counters[key] = sum(int(s[key]) for s in samples if s.get(key) is not None)
    host = [float(s["host_p50_us"]) for s in samples if s.get("host_p50_us") is not None]
    host99 = [float(s["host_p99_us"]) for s in samples if s.get("host_p99_us") is not None]
    out: dict[str, Any] = {
        "id": meta.get("id", ""),
        "meta": meta,
        "sample_count": len(samples),
        "sessions": len({s.get("session_id") for s in samples}),
        "duration_ms": meta.get("duration_ms", 0),
        "stages": stages,
        "fps": {
            "min": round(min(fps), 2) if fps else 0.0,
            "mean": round(sum(fps) / len(fps), 2) if fps else 0.0,
            "max": round(max(fps), 2) if fps else 0.0,
        },
        "mbps": {
            "mean": round(sum(mbps) / len(mbps), 3) if mbps else 0.0,
            "max": round(max(mbps), 3) if mbps else 0.0,
        },
        "counters": counters,
        "total_drops": int(sum(counters.get(k, 0) for k in DROP_FIELDS)),
    }
    if host:
        host.sort()
        out["host"] = {
            "p50_us": _r(percentile(host, 0.50)),
            "p95_us": _r(percentile(host, 0.95)),
            "p99_us": _r(percentile(host, 0.99)),
            "max_p99_us": _r(max(host99)) if host99 else 0.0,
        }
    return out


def csv_columns(samples: list[dict[str, Any]]) -> list[str]:
    cols = list(BASE_COLUMNS)
    for name in stage_names(samples):
        cols += [f"{name}_p50_us", f"{name}_p99_us"]
    cols += present_optional(samples)
    return cols


def to_csv(capture: dict[str, Any]) -> str:
    """One row per sample; one column per stage (p50 and p99) and per counter
    present in the capture. Empty cell = not measured in that window."""
    samples = capture.get("samples", [])
    cols = csv_columns(samples)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    names = stage_names(samples)
    optional = present_optional(samples)
    for s in samples:
        row: list[Any] = [s.get(c, "") for c in BASE_COLUMNS]
        by_name = {st.get("name"): st for st in s.get("stages", ())}
        for name in names:
            st = by_name.get(name)
            row += [st["p50_us"], st["p99_us"]] if st else ["", ""]
        row += ["" if s.get(k) is None else s[k] for k in optional]
        w.writerow(row)
    return buf.getvalue()


def fmt_us(us: float) -> str:
    """Units of the console: ≥ 1000 µs as ms with one decimal, else µs."""
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} µs"


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table (CLI ``punktfunk stats show``)."""
    meta = summary["meta"]
    lines = [
        f"capture {meta['id']}: {meta['kind'] or '-'} {meta['width']}x{meta['height']}@{meta['fps']} "
        f"{meta['codec'] or '-'} via {meta['encoder_backend'] or '-'}"
        + (f" ({meta['gpu']})" if meta.get("gpu") else "")
        + f", client {meta['client'] or '-'}",
        f"  {summary['sample_count']} samples over {summary['duration_ms'] / 1000:.1f} s"
        f" from {summary['sessions']} session(s)" + (" — TRUNCATED" if meta.get("truncated") else ""),
        "",
        f"  {'stage':<12} {'p50':>10} {'p95':>10} {'p99':>10} {'max p99':>10}",
    ]
    for st in summary["stages"]:
        lines.append(f"  {st['name']:<12} {fmt_us(st['p50_us']):>10} {fmt_us(st['p95_us']):>10} "
                     f"{fmt_us(st['p99_us']):>10} {fmt_us(st['max_p99_us']):>10}")
    if "host" in summary:
        h = summary["host"]
        lines.append(f"  {'host total':<12} {fmt_us(h['p50_us']):>10} {fmt_us(h['p95_us']):>10} "
                     f"{fmt_us(h['p99_us']):>10} {fmt_us(h['max_p99_us']):>10}")
    lines.append("")
    lines.append(f"  fps min {summary['fps']['min']:.1f} / mean {summary['fps']['mean']:.1f}, "
                 f"Mb/s mean {summary['mbps']['mean']:.2f} / max {summary['mbps']['max']:.2f}")
    if summary["counters"]:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in summary["counters"].items())
                     + f"; total drops {summary['total_drops']}")
    else:
        lines.append("  this path records no loss counters")
    return "\n".join(lines)
