"""How the console shows numbers: the reference for ``static/units.js``.

The browser code mirrors these functions operation for operation (same
divisions, same half-up rounding with ``floor(x + 0.5)``) so both give the
same text for the same IEEE double; the browser test checks a table of cases
against this module.

Rules (docs/console.md, "Units"): a duration of 1000 µs or more is shown in
ms with one decimal ("8.3 ms"), anything smaller in whole µs ("450 µs"). The
boundary is decided on the *rounded* value, so 999.6 µs reads "1.0 ms", never
"1000 µs". A capture's length under a minute has one decimal ("10.8 s", never
cut to "10 s"), longer ones read "3 min 05 s" and "1 h 02 min".
"""

from __future__ import annotations

import math

NO_VALUE = "–"


def _half_up(x: float) -> float:
    # Python's round() rounds half to even and JS's toFixed() rounds the binary
    # value; floor(x + 0.5) is the one rule both languages compute identically.
    return math.floor(x + 0.5)


def format_us(us: float | None) -> str:
    """A duration given in µs: "450 µs" below 1000 µs, else "8.3 ms"."""
    if us is None or not math.isfinite(us):
        return NO_VALUE
    sign = "-" if us < 0 else ""
    us = abs(us)
    whole_us = _half_up(us)
    if whole_us < 1000:
        return f"{sign}{whole_us:.0f} µs"
    tenths_ms = _half_up(us / 100)
    return f"{sign}{tenths_ms / 10:.1f} ms"


def frame_budget_us(fps: float | None) -> float | None:
    """The time one frame may take at ``fps``: 1 000 000 / fps µs (None without a rate)."""
    if fps is None or not math.isfinite(fps) or fps <= 0:
        return None
    return 1_000_000 / fps


def latency_axis_max_us(budget_us: float | None, peak_us: float) -> float:
    """Top of the latency axis: at least 1.2 × the frame budget, and above the data."""
    top = peak_us * 1.05 if peak_us > 0 else 0.0
    if budget_us is not None:
        top = max(top, 1.2 * budget_us)
    return top if top > 0 else 1000.0


def format_mbps(mbps: float | None) -> str:
    """Megabit per second with one decimal ("12.4 Mb/s")."""
    if mbps is None or not math.isfinite(mbps):
        return NO_VALUE
    return f"{_half_up(mbps * 10) / 10:.1f} Mb/s"


def format_fps(fps: float | None) -> str:
    if fps is None or not math.isfinite(fps):
        return NO_VALUE
    return f"{_half_up(fps * 10) / 10:.1f}"


def format_duration_ms(ms: float | None) -> str:
    """A capture length: "10.8 s", "3 min 05 s", "1 h 02 min" (rounded, never cut)."""
    if ms is None or not math.isfinite(ms) or ms < 0:
        return NO_VALUE
    tenths = _half_up(ms / 100)
    if tenths < 600:
        return f"{tenths / 10:.1f} s"
    total_s = _half_up(ms / 1000)
    if total_s < 3600:
        return f"{int(total_s // 60)} min {int(total_s % 60):02d} s"
    total_min = _half_up(ms / 60_000)
    return f"{int(total_min // 60)} h {int(total_min % 60):02d} min"


#: (function name, argument, expected text) — shared with the browser test
REFERENCE_CASES: list[tuple[str, float | None, str]] = [
    ("format_us", 0, "0 µs"),
    ("format_us", 450, "450 µs"),
    ("format_us", 999.4, "999 µs"),
    ("format_us", 999.5, "1.0 ms"),
    ("format_us", 1000, "1.0 ms"),
    ("format_us", 1049, "1.0 ms"),
    ("format_us", 1050, "1.1 ms"),
    ("format_us", 8333.3, "8.3 ms"),
    ("format_us", 16666.7, "16.7 ms"),
    ("format_us", 123456, "123.5 ms"),
    ("format_us", None, NO_VALUE),
    ("format_mbps", 12.44, "12.4 Mb/s"),
    ("format_mbps", 0.05, "0.1 Mb/s"),
    ("format_duration_ms", 42_900, "42.9 s"),
    ("format_duration_ms", 10_800, "10.8 s"),
    ("format_duration_ms", 59_960, "1 min 00 s"),
    ("format_duration_ms", 185_000, "3 min 05 s"),
    ("format_duration_ms", 185_600, "3 min 06 s"),
    ("format_duration_ms", 3_720_000, "1 h 02 min"),
]
