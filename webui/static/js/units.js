/* How the console shows numbers. Mirrors punktfunk_webui/units.py operation for
   operation (same divisions, half-up rounding with Math.floor(x + 0.5)), so both
   give the same text for the same number; a browser test checks the table. */
(function () {
  "use strict";
  const NO_VALUE = "\u2013";
  const halfUp = (x) => Math.floor(x + 0.5);
  const finite = (v) => typeof v === "number" && Number.isFinite(v);

  /** A duration in µs: "450 µs" below 1000 µs (decided on the rounded value), else "8.3 ms". */
  function formatUs(us) {
    if (!finite(us)) return NO_VALUE;
    const sign = us < 0 ? "-" : "";
    us = Math.abs(us);
    const wholeUs = halfUp(us);
    if (wholeUs < 1000) return `${sign}${wholeUs.toFixed(0)} \u00b5s`;
    const tenthsMs = halfUp(us / 100);
    return `${sign}${(tenthsMs / 10).toFixed(1)} ms`;
  }

  /** The time one frame may take at fps: 1 000 000 / fps µs (null without a rate). */
  function frameBudgetUs(fps) {
    if (!finite(fps) || fps <= 0) return null;
    return 1000000 / fps;
  }

  /** Top of the latency axis: at least 1.2 × the frame budget, and above the data. */
  function latencyAxisMaxUs(budgetUs, peakUs) {
    let top = peakUs > 0 ? peakUs * 1.05 : 0;
    if (budgetUs !== null && budgetUs !== undefined) top = Math.max(top, 1.2 * budgetUs);
    return top > 0 ? top : 1000;
  }

  function formatMbps(mbps) {
    if (!finite(mbps)) return NO_VALUE;
    return `${(halfUp(mbps * 10) / 10).toFixed(1)} Mb/s`;
  }

  function formatFps(fps) {
    if (!finite(fps)) return NO_VALUE;
    return `${(halfUp(fps * 10) / 10).toFixed(1)}`;
  }

  /** A capture length: "10.8 s", "3 min 05 s", "1 h 02 min" (rounded, never cut). */
  function formatDurationMs(ms) {
    if (!finite(ms) || ms < 0) return NO_VALUE;
    const tenths = halfUp(ms / 100);
    if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
    const totalS = halfUp(ms / 1000);
    if (totalS < 3600) return `${Math.floor(totalS / 60)} min ${String(totalS % 60).padStart(2, "0")} s`;
    const totalMin = halfUp(ms / 60000);
    return `${Math.floor(totalMin / 60)} h ${String(totalMin % 60).padStart(2, "0")} min`;
  }

  function formatCount(n) {
    if (!finite(n)) return NO_VALUE;
    return Math.round(n).toLocaleString("en-US");
  }

  /** Signed difference b − a in the unit's own format, e.g. "+1.2 ms", "−300 µs". */
  function formatDelta(a, b, fmt) {
    if (!finite(a) || !finite(b)) return NO_VALUE;
    const d = b - a;
    const text = fmt(Math.abs(d));
    const zero = text === fmt(0); // too small to show: no sign
    const pct = a !== 0 && !zero ? ` (${d >= 0 ? "+" : "\u2212"}${Math.abs((d / a) * 100).toFixed(0)} %)` : "";
    return `${zero ? "\u00b1" : d > 0 ? "+" : "\u2212"}${text}${pct}`;
  }

  window.PFUnits = {
    NO_VALUE, formatUs, frameBudgetUs, latencyAxisMaxUs, formatMbps, formatFps,
    formatDurationMs, formatCount, formatDelta,
    // snake_case aliases so a test can call the same names as units.py
    format_us: formatUs, frame_budget_us: frameBudgetUs, latency_axis_max_us: latencyAxisMaxUs,
    format_mbps: formatMbps, format_fps: formatFps, format_duration_ms: formatDurationMs,
  };
})();
