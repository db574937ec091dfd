"""Adaptive FEC: a loss sweep, fixed vs adaptive, side by side (docs/adaptive.md).

For each loss pattern — 0, 1, 2, 5, 10 and 20 % uniform random loss and a
bursty Gilbert–Elliott pattern — each protocol's runner streams once with
``fec = "fixed"`` (today's share: 20 %, at least 2 parity shards) and once with
``fec = "adaptive"`` (with adaptive rate control), and reports the share of
frames that could not be rebuilt, the keyframes the losses cost per minute and
the wire overhead (every byte on the wire beyond the video payload: parity,
headers, tags). Where the fixed 20 % misses the 0.1 % goal, larger fixed
shares are run too, to show what a fixed share that meets it costs.

The native runner (bench/adaptive_native.py) drives the real data plane and
controllers on a simulated clock; the GameStream runner
(bench/adaptive_gamestream.py, when present) is that protocol's own. Importing
this module does nothing.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

#: uniform loss rates, and one bursty pattern: good → bad 1 %, bad → good 30 %, 80 % lost when bad
PATTERNS = ["uniform:0", "uniform:0.01", "uniform:0.02", "uniform:0.05", "uniform:0.1", "uniform:0.2",
            "ge:0.01,0.3,0.8"]
QUICK_PATTERNS = ["uniform:0.05", "ge:0.01,0.3,0.8"]
#: the goal: at most this share of frames unrecoverable up to 10 % uniform loss
GOAL_PCT = 0.1
#: fixed shares tried where 20 % misses the goal (native; GameStream's blocks are a few data shards,
#: so its steps are larger, up to its ``fec_percent`` maximum, and only up to 10 % loss, the goal's range)
LARGER_FIXED = (30, 40, 50)
GS_LARGER_FIXED = (40, 60, 80, 100)


def _mean_loss(pattern: str) -> float:
    from punktfunk_native.client.impair import LossPattern

    return LossPattern.parse(pattern).mean_loss


def _label(pattern: str) -> str:
    kind, _, args = pattern.partition(":")
    return f"{float(args) * 100:g} %" if kind == "uniform" else f"GE {args}"


def _figures(r: dict[str, Any], seconds: float) -> dict[str, float]:
    frames = max(1, int(r["frames_sent"]))
    after = r.get("frames_unrecoverable_after_first_window")
    return {"unrec_pct": 100 * r["frames_unrecoverable"] / frames, "kbps": r.get("mean_target_kbps"),
            "unrec_after_pct": 100 * after / frames if after is not None else None,
            "kf_min": r["keyframes"] / (seconds / 60),
            "overhead_pct": 100 * (r["wire_bytes"] / max(1, r["payload_bytes"]) - 1)}


def _meeting(row: dict[str, Any], meet: dict[str, Any] | None) -> str:
    """The smallest larger fixed share that met the goal, or why there is none."""
    if meet is not None:
        return f"{meet['share']} %: {meet['overhead_pct']:.1f}"
    if row["fixed"]["unrec_pct"] <= GOAL_PCT:
        return "–"  # the fixed 20 % meets it
    return "none tried met it" if "tried" in row else "not tried"


def _runner(module: str) -> Callable[[str, str, float], dict[str, Any]] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    fn = getattr(mod, "sweep_point", None)
    return fn if callable(fn) else None


def _sweep(point: Callable[..., dict[str, Any]], patterns: list[str], seconds: float,
           larger: tuple[int, ...], up_to_loss: float = 1.0) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        row: dict[str, Any] = {}
        for mode in ("fixed", "adaptive"):
            row[mode] = _figures(point(mode, pattern, seconds), seconds)
        if row["fixed"]["unrec_pct"] > GOAL_PCT and _mean_loss(pattern) <= up_to_loss:
            for share in larger:
                f = _figures(point(f"fixed:{share}", pattern, seconds), seconds)
                row.setdefault("tried", []).append({"share": share, **f})
                if f["unrec_pct"] <= GOAL_PCT:
                    row["fixed_meeting_goal"] = {"share": share, **f}
                    break
        out[pattern] = row
    return out


def run(quick: bool = False) -> dict[str, Any]:
    patterns = QUICK_PATTERNS if quick else PATTERNS
    seconds = 4.0 if quick else 60.0
    gs_seconds = 3.0 if quick else 8.0
    native = _runner("bench.adaptive_native")
    assert native is not None
    t0 = time.perf_counter()
    nat = _sweep(native, patterns, seconds, () if quick else LARGER_FIXED)
    native_s = time.perf_counter() - t0
    gs_point = _runner("bench.adaptive_gamestream")
    gs: dict[str, dict[str, Any]] = {}
    gs_note = "GameStream: not measured (bench/adaptive_gamestream.py is not there)"
    if gs_point is not None:
        try:
            gs = _sweep(gs_point, patterns, gs_seconds, () if quick else GS_LARGER_FIXED, up_to_loss=0.10)
            gs_note = f"GameStream: bench/adaptive_gamestream.py, {gs_seconds:g} s per point"
        except Exception as exc:  # noqa: BLE001 - the other protocol's runner failing costs only its column
            gs_note = f"GameStream: not measured (its runner failed: {exc})"

    def cell(row: dict[str, Any] | None, mode: str, key: str) -> float | None:
        return round(row[mode][key], 3) if row and mode in row else None

    rows = []
    for p in patterns:
        n, g = nat[p], gs.get(p)
        meet = n.get("fixed_meeting_goal")
        gs_meet = g.get("fixed_meeting_goal") if g else None
        rows.append([_label(p), round(100 * _mean_loss(p), 2),
                     cell(n, "fixed", "unrec_pct"), cell(n, "adaptive", "unrec_pct"),
                     cell(n, "fixed", "kf_min"), cell(n, "adaptive", "kf_min"),
                     cell(n, "fixed", "overhead_pct"), cell(n, "adaptive", "overhead_pct"),
                     f"{meet['share']} %: {meet['overhead_pct']:.1f}" if meet else "–",
                     n["adaptive"]["kbps"],
                     cell(g, "fixed", "unrec_pct") if gs else "not measured",
                     cell(g, "adaptive", "unrec_pct") if gs else "not measured",
                     cell(g, "adaptive", "unrec_after_pct") if gs else "not measured",
                     cell(g, "fixed", "overhead_pct") if gs else "not measured",
                     cell(g, "adaptive", "overhead_pct") if gs else "not measured",
                     _meeting(g, gs_meet) if g else "not measured"])
    headers = ["loss", "mean loss %", "native fixed: unrec. %", "native adaptive: unrec. %",
               "native fixed: keyframes/min", "native adaptive: keyframes/min", "native fixed: overhead %",
               "native adaptive: overhead %", "smallest fixed share meeting 0.1 %: overhead %",
               "native adaptive: mean bitrate target kbps",
               "GameStream fixed: unrec. %", "GameStream adaptive: unrec. %",
               "GameStream adaptive: unrec. % after the first report window",
               "GameStream fixed: overhead %", "GameStream adaptive: overhead %",
               "GameStream smallest fixed share meeting 0.1 %: overhead %"]
    ratios = []
    for p in patterns:
        kind, _, rate = p.partition(":")
        if kind == "uniform" and float(rate) <= 0.10:
            v = nat[p]["adaptive"]["unrec_pct"]
            ratios.append({"name": f"native adaptive frames unrecoverable % at {_label(p)} loss", "value": round(v, 3),
                           "target": f"<= {GOAL_PCT}", "ok": v <= GOAL_PCT})
            meet = nat[p].get("fixed_meeting_goal")
            base = meet or (nat[p]["fixed"] if nat[p]["fixed"]["unrec_pct"] <= GOAL_PCT else None)
            if base is not None:
                ratio = (100 + nat[p]["adaptive"]["overhead_pct"]) / (100 + base["overhead_pct"])
                ratios.append({"name": f"native wire bytes adaptive / fixed meeting the goal at {_label(p)}",
                               "value": round(ratio, 3), "target": "< 1", "ok": ratio < 1})
    for p in patterns:
        kind, _, rate = p.partition(":")
        if gs and kind == "uniform" and float(rate) <= 0.10:  # the whole run, first window included
            v = gs[p]["adaptive"]["unrec_pct"]
            ratios.append({"name": f"GameStream adaptive frames unrecoverable % at {_label(p)} loss",
                           "value": round(v, 3), "target": f"<= {GOAL_PCT}", "ok": v <= GOAL_PCT})
            base = gs[p].get("fixed_meeting_goal") or (gs[p]["fixed"] if gs[p]["fixed"]["unrec_pct"] <= GOAL_PCT
                                                       else None)
            if base is not None:
                ratio = (100 + gs[p]["adaptive"]["overhead_pct"]) / (100 + base["overhead_pct"])
                ratios.append({"name": f"GameStream wire bytes adaptive / fixed meeting the goal at {_label(p)}",
                               "value": round(ratio, 3), "target": "< 1", "ok": ratio < 1})
    series = {"native fixed 20 %": [nat[p]["fixed"]["unrec_pct"] for p in patterns],
              "native adaptive": [nat[p]["adaptive"]["unrec_pct"] for p in patterns]}
    if gs:
        series["GameStream fixed"] = [gs[p]["fixed"]["unrec_pct"] for p in patterns]
        series["GameStream adaptive"] = [gs[p]["adaptive"]["unrec_pct"] for p in patterns]
    tried = [[proto, _label(p), f"{t['share']} %", round(t["unrec_pct"], 3), round(t["overhead_pct"], 1)]
             for proto, sweep in (("native", nat), ("GameStream", gs)) for p in patterns
             for t in sweep.get(p, {}).get("tried", [])]
    tables = [{"title": "frames unrecoverable, keyframes and overhead per loss pattern", "headers": headers,
               "rows": rows}]
    if tried:
        tables.append({"title": "larger fixed shares, tried where the fixed 20 % misses the goal (up to the first "
                                "that meets it)",
                       "headers": ["protocol", "loss", "fixed share", "unrec. %", "overhead %"], "rows": tried})
    return {
        "title": "Adaptive FEC",
        "what": (f"Loss sweep, fixed vs adaptive. Native: the real packetizer, receiver and controllers on a "
                 f"simulated clock (bench/adaptive_native.py), 720p60-sized frames starting at 6 Mbit/s, "
                 f"{seconds:g} s of stream per point ({native_s:.0f} s of wall time for the sweep); "
                 f"fixed = 20 % parity, at least 2 per block; adaptive = fec and rate_control adaptive with "
                 f"their defaults. Unrecoverable = frames the receiver gave up, in % of frames sent (the first "
                 f"0.5 s, before the client's first report, included); overhead = wire bytes / payload bytes − 1 "
                 f"(parity, 32-byte headers, 16-byte tags)."),
        "tables": tables,
        "ratios": ratios,
        "plot": {"title": "frames unrecoverable (%), fixed vs adaptive", "labels": [_label(p) for p in patterns],
                 "series": series, "ylabel": "% of frames", "log": True, "target": GOAL_PCT},
        "notes": [gs_note,
                  "GameStream: a real Moonlight core (moonlight-python) against a real host streaming 720p60 at "
                  "8 Mbit/s (x264), the loss dropped in the host's sender. Its goal ratios use the whole run "
                  "(unrec. %), the first 0.5 s window included; the issue's tests count after the first report "
                  "window (the next column). Overhead is high at any loss: most frames of the test pattern are "
                  "a few shards, and a small block gets at least the client's 2 parity shards. Where its fixed "
                  f"20 % misses the goal (up to 10 % loss), fixed shares of {', '.join(map(str, GS_LARGER_FIXED))} % "
                  "are tried in turn (its fec_percent goes up to 100); in an 8 s run (about 480 frames) meeting "
                  "0.1 % means losing none, so one run of a fixed share is a noisy verdict.",
                  "The rate controller takes loss in long runs (3 datagrams or more on average) as congestion "
                  "and lowers the bitrate instead of adding parity; the mean bitrate target column shows where "
                  "it did (the simulated link's loss does not depend on the rate, so a cut does not help here).",
                  "A zero is drawn as no bar on the log scale."],
    }
