"""Numbers over a whole capture (summary) and CSV export.

A capture is a series of windows, and each window already reduced its frames
to percentiles. A summary therefore aggregates *over windows*, and every
number says which: per stage, the median and p95 of the windows' p50s (how
long a typical frame took, in a typical and in a bad window), and the median
and the largest of the windows' p99s (the tail). These are not percentiles
over all frames of the capture; no capture keeps single frames.

Rates: fps mean is frames over time (windows weighted by their length); fps
min/max look at whole windows only (a session's last window is usually
shorter and its rate noisy). Counts are totals over all windows.
Percentiles use the core's definition (``punktfunk_core.stats.percentile``:
index ``min(floor(n·q), n−1)`` of the sorted values).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from punktfunk_core.stats import COUNT_FIELDS, OPTIONAL_FIELDS, percentile

BASE_COLUMNS = ("t_ms", "session_id", "fps", "repeat_fps", "mbps", "bitrate_kbps")
#: how loss totals are labelled wherever a summary is shown (field → words)
LOSS_LABELS = {
    "packets_dropped": "packets lost (client)",
    "fec_recovered": "recovered by FEC (client)",
    "frames_unrecoverable": "frames unrecoverable (client)",
    "frames_dropped": "frames dropped (host queue)",
    "send_dropped": "datagrams not sent (host socket)",
    "input_events": "input events (client)",
    "input_dropped": "input events dropped (host)",
}
#: the stage summary columns, in the words every view uses
STAGE_COLUMNS = (
    ("p50_us", "median of window p50s"),
    ("p95_us", "p95 of window p50s"),
    ("median_p99_us", "median of window p99s"),
    ("max_p99_us", "max of window p99s"),
)
#: a window shorter than this share of the typical one is partial (a session's last)
FULL_WINDOW_SHARE = 0.5


def timing_names(samples: Iterable[dict[str, Any]], key: str = "stages") -> list[str]:
    """Names in a sample's timing list (``stages`` or ``detail``), in order of first appearance."""
    names: list[str] = []
    seen: set[str] = set()
    for s in samples:
        for st in s.get(key, ()):
            n = st.get("name")
            if n not in seen:
                seen.add(n)
                names.append(n)
    return names


def stage_names(samples: Iterable[dict[str, Any]]) -> list[str]:
    return timing_names(samples, "stages")


def present_optional(samples: Iterable[dict[str, Any]]) -> list[str]:
    """Optional fields present in at least one sample, in the canonical order."""
    present: set[str] = set()
    for s in samples:
        present.update(k for k in OPTIONAL_FIELDS if s.get(k) is not None)
    return [k for k in OPTIONAL_FIELDS if k in present]


def _r(v: float) -> float:
    return round(float(v), 1)


def _timing_summary(samples: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    out = []
    for name in timing_names(samples, key):
        p50s: list[float] = []
        p99s: list[float] = []
        for s in samples:
            for st in s.get(key, ()):
                if st.get("name") == name:
                    p50s.append(float(st["p50_us"]))
                    p99s.append(float(st["p99_us"]))
                    break
        p50s.sort()
        p99s.sort()
        out.append({
            "name": name,
            "windows": len(p50s),
            "p50_us": _r(percentile(p50s, 0.50)),
            "p95_us": _r(percentile(p50s, 0.95)),
            "p99_us": _r(percentile(p50s, 0.99)),
            "median_p99_us": _r(percentile(p99s, 0.50)),
            "max_p99_us": _r(p99s[-1]) if p99s else 0.0,
        })
    return out


def full_windows(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples that cover a whole window (files without ``window_ms``: all)."""
    lengths = sorted(s["window_ms"] for s in samples if s.get("window_ms"))
    if not lengths:
        return samples
    typical = percentile(lengths, 0.5)
    return [s for s in samples if not s.get("window_ms") or s["window_ms"] >= FULL_WINDOW_SHARE * typical]


def _rate(samples: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """min / mean / max of a per-window rate; the mean weighs windows by their length."""
    have = [s for s in samples if s.get(key) is not None]
    if not have:
        return None
    weights = [float(s.get("window_ms") or 1.0) for s in have]
    mean = sum(float(s[key]) * w for s, w in zip(have, weights, strict=True)) / sum(weights)
    whole = [float(s[key]) for s in full_windows(have)] or [float(s[key]) for s in have]
    return {"min": round(min(whole), 2), "mean": round(mean, 2), "max": round(max(whole), 2)}


def summarize(capture: dict[str, Any]) -> dict[str, Any]:
    meta = capture.get("meta", {})
    samples = capture.get("samples", [])
    counters: dict[str, int] = {}
    for key in present_optional(samples):
        if key in COUNT_FIELDS:
            counters[key] = sum(int(s[key]) for s in samples if s.get(key) is not None)
    mbps = [float(s.get("mbps", 0.0)) for s in samples]
    out: dict[str, Any] = {
        "id": meta.get("id", ""),
        "meta": meta,
        "sample_count": len(samples),
        "sessions": len({s.get("session_id") for s in samples}),
        "duration_ms": meta.get("duration_ms", 0),
        "stages": _timing_summary(samples, "stages"),
        "detail": _timing_summary(samples, "detail"),
        "fps": _rate(samples, "fps") or {"min": 0.0, "mean": 0.0, "max": 0.0},
        "mbps": {
            "mean": round(sum(mbps) / len(mbps), 3) if mbps else 0.0,
            "max": round(max(mbps), 3) if mbps else 0.0,
        },
        "counters": counters,
    }
    delivered = _rate(samples, "delivered_fps")
    if delivered is not None:
        out["delivered_fps"] = delivered
    host = sorted(float(s["host_p50_us"]) for s in samples if s.get("host_p50_us") is not None)
    host99 = sorted(float(s["host_p99_us"]) for s in samples if s.get("host_p99_us") is not None)
    if host:
        out["host"] = {
            "p50_us": _r(percentile(host, 0.50)),
            "p95_us": _r(percentile(host, 0.95)),
            "p99_us": _r(percentile(host, 0.99)),
            "median_p99_us": _r(percentile(host99, 0.50)),
            "max_p99_us": _r(host99[-1]) if host99 else 0.0,
        }
    latency = _input_latency(samples)
    if latency is not None:
        out["input"] = latency
    return out


def _input_latency(samples: list[dict[str, Any]]) -> dict[str, float] | None:
    """Receive → injected over the windows in which input was injected: the
    median of their p50s and of their p99s, and the largest p99; None without any."""
    p50 = sorted(float(s["input_p50_us"]) for s in samples if s.get("input_p50_us") is not None)
    p99 = sorted(float(s["input_p99_us"]) for s in samples if s.get("input_p99_us") is not None)
    if not p50:
        return None
    return {"p50_us": _r(percentile(p50, 0.50)), "median_p99_us": _r(percentile(p99, 0.50)),
            "max_p99_us": _r(p99[-1])}


def csv_columns(samples: list[dict[str, Any]]) -> list[str]:
    """One row per window: per stage (and detail entry) the p50 and p99 over the
    window's frames (``<name>_frame_p50_us``), then the optional fields present."""
    cols = list(BASE_COLUMNS)
    for name in stage_names(samples) + timing_names(samples, "detail"):
        cols += [f"{name}_frame_p50_us", f"{name}_frame_p99_us"]
    cols += [_csv_name(k) for k in present_optional(samples)]
    return cols


def _csv_name(field: str) -> str:
    # host latency is per frame too: say so like the stage columns
    return {"host_p50_us": "host_frame_p50_us", "host_p99_us": "host_frame_p99_us"}.get(field, field)


def to_csv(capture: dict[str, Any]) -> str:
    """One row per sample; one column per stage (p50 and p99) and per counter
    present in the capture. Empty cell = not measured in that window."""
    samples = capture.get("samples", [])
    cols = csv_columns(samples)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    timed = [("stages", n) for n in stage_names(samples)] + [("detail", n) for n in timing_names(samples, "detail")]
    optional = present_optional(samples)
    for s in samples:
        row: list[Any] = [s.get(c, "") for c in BASE_COLUMNS]
        by_name = {key: {st.get("name"): st for st in s.get(key, ())} for key in ("stages", "detail")}
        for key, name in timed:
            st = by_name[key].get(name)
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
    mode = f"{meta['width']}x{meta['height']}@{meta['fps']}" if meta.get("width") else "-"
    lines = [
        f"capture {meta['id']}: {meta.get('kind') or 'no session'} {mode} {meta.get('codec') or '-'} "
        f"via {meta.get('encoder_backend') or '-'}"
        + (f" ({meta['gpu']})" if meta.get("gpu") else "")
        + f", client {meta.get('client') or '-'}",
        f"  {summary['sample_count']} windows over {summary['duration_ms'] / 1000:.1f} s"
        f" from {summary['sessions']} session(s)" + (" — TRUNCATED" if meta.get("truncated") else ""),
    ]
    if summary["stages"]:
        windows = max(st["windows"] for st in summary["stages"])
        lines += [
            "",
            f"  latency per stage: each window holds the p50 and p99 of its frames; "
            f"the columns aggregate those over {windows} windows",
            f"  {'stage':<16} " + " ".join(f"{label:>22}" for _, label in STAGE_COLUMNS),
        ]
        rows = [(st["name"], st) for st in summary["stages"]]
        rows += [(f"  {st['name']}", st) for st in summary.get("detail", [])]
        if "host" in summary:
            rows.append(("host total", summary["host"]))
        for label, st in rows:
            lines.append(f"  {label:<16} " + " ".join(f"{fmt_us(st[k]):>22}" for k, _ in STAGE_COLUMNS))
        if summary.get("detail"):
            lines.append("  (indented: parts of a stage and measurements inside one; they are not added up)")
    lines.append("")
    fps = summary["fps"]
    lines.append(f"  host fps (new frames sent) min {fps['min']:.1f} / mean {fps['mean']:.1f} / max {fps['max']:.1f}"
                 f", Mb/s mean {summary['mbps']['mean']:.2f} / max {summary['mbps']['max']:.2f}")
    if "delivered_fps" in summary:
        d = summary["delivered_fps"]
        lines.append(f"  client fps (frames decoded) min {d['min']:.1f} / mean {d['mean']:.1f} / max {d['max']:.1f}")
    if "input" in summary:
        i = summary["input"]
        lines.append(f"  input receive → injected p50 {fmt_us(i['p50_us'])}, p99 {fmt_us(i['median_p99_us'])} "
                     f"(median of windows), max p99 {fmt_us(i['max_p99_us'])}")
    counters = summary["counters"]
    if counters:
        lines.append("  totals: " + ", ".join(f"{LOSS_LABELS.get(k, k)} {v}" for k, v in counters.items()))
    else:
        lines.append("  this path records no loss counters")
    return "\n".join(lines)
