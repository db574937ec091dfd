/* Charts for stats samples, drawn with uPlot (shipped in static/vendor/uplot).
   x = seconds from t_ms; where session_id changes a null row is inserted so
   lines and areas break instead of joining two sessions. */
(function () {
  "use strict";
  const U = window.PFUnits;
  const STAGE_COLORS = {
    queue: "#8c6bb1", capture: "#2b8cbe", submit: "#41b6c4", encode: "#f28e2b", packetize: "#59a14f",
    send: "#e15759", send_spread: "#b07aa1",
  };
  const EXTRA_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];
  /** The loss counters, in the words every view uses (plugins/stats/summary.py LOSS_LABELS), with their colours. */
  const COUNTERS = [
    ["packets_dropped", "packets lost (client)", "#e8590c"],
    ["fec_recovered", "recovered by FEC (client)", "#2f9e44"],
    ["frames_unrecoverable", "frames unrecoverable (client)", "#c92a2a"],
    ["frames_dropped", "frames dropped (host queue)", "#4e79a7"],
    ["send_dropped", "datagrams not sent (host socket)", "#868e96"],
  ];
  const SEALING = [["fec_us", "FEC"], ["seal_us", "encryption"], ["sock_us", "socket"]];
  /** Adaptive FEC (docs/adaptive.md), drawn on the health chart against a percent axis of its own. */
  const ADAPTIVE = [
    ["fec_parity_pct", "FEC parity % (adaptive)", "#7048e8"],
    ["loss_estimate_pct", "loss estimate % (adaptive)", "#f08c00"],
  ];
  /** The two sides of a comparison: never the same colour. */
  const SIDE_COLORS = { A: "#1c7ed6", B: "#e8590c" };
  const HOST_COLOR = "#222";

  function stageColor(name, i) {
    return STAGE_COLORS[name] || EXTRA_COLORS[i % EXTRA_COLORS.length];
  }
  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
  }

  /** Stage names in pipeline order, as first seen across samples. */
  function stageNames(samples) {
    const names = [];
    for (const s of samples) for (const st of s.stages || []) if (!names.includes(st.name)) names.push(st.name);
    return names;
  }
  function has(samples, field) {
    return samples.some((s) => s[field] !== undefined && s[field] !== null);
  }

  /** Rows with break markers: [{x, s}] where s is a sample or null (a gap). */
  function rows(samples, t0 = 0) {
    const out = [];
    let prev = null;
    for (const s of samples) {
      const x = (s.t_ms - t0) / 1000;
      if (prev && prev.s.session_id !== s.session_id) out.push({ x: (prev.x + x) / 2, s: null });
      const r = { x, s };
      out.push(r);
      prev = r;
    }
    return out;
  }

  function stageValue(s, name, key) {
    if (!s) return null;
    const st = (s.stages || []).find((t) => t.name === name);
    return st ? st[key] : null;
  }
  const field = (rs, f, scale = 1) => rs.map((r) => (r.s && r.s[f] !== undefined && r.s[f] !== null ? r.s[f] * scale : null));

  /** Legend values: the number under the cursor, nothing while the cursor is away. */
  const shown = (fmt) => (u, v) => (v === null || v === undefined ? "" : fmt(v));
  const timeSeries = { label: "time", value: shown((v) => `${v.toFixed(1)} s`) };

  const usAxis = (label) => ({
    label,
    values: (u, ticks) => ticks.map((v) => U.formatUs(v)),
    size: 64,
  });
  const secondsAxis = { label: "seconds", values: (u, ticks) => ticks.map((v) => `${+v.toFixed(1)} s`) };

  /** Size charts to their container and keep them so; an idle legend shows only what each line is. */
  function mount(el, opts, data) {
    PF.clear(el);
    const width = Math.max(280, el.clientWidth || el.parentElement.clientWidth || 600);
    const idle = (u) => u.root.classList.toggle("idle", u.legend.idx === null || u.legend.idx === undefined);
    const hooks = { ...(opts.hooks || {}), setLegend: [...((opts.hooks || {}).setLegend || []), idle], ready: [idle] };
    const chart = new uPlot({ width, height: opts.height || 240, ...opts, hooks }, data, el);
    const ro = new ResizeObserver(() => {
      const w = Math.max(280, el.clientWidth);
      if (Math.abs(w - chart.width) > 4) chart.setSize({ width: w, height: chart.height });
    });
    ro.observe(el);
    chart.pfDestroy = () => {
      ro.disconnect();
      chart.destroy();
    };
    el.pfChart = chart;
    return chart;
  }

  /** What the latency chart shows, in words (put under it). */
  function latencyNote(quantile) {
    return quantile === "p99"
      ? "Each stage's p99 over the frames of a window, drawn as its own line: p99s do not add up. " +
        "Host total p99 is the p99 of each frame's whole time (capture to last packet); when stages are slow " +
        "on different frames it lies above their sum."
      : "Stages stacked: each band is a stage's p50 over the frames of a window; their sum is close to the " +
        "host total p50 (medians add up only approximately).";
  }

  /** Latency by stage: p50 stacked, p99 as separate lines; dashed frame budget; host total drawn on its own. */
  function latency(el, samples, { quantile = "p50", fps = null, height = 260, title } = {}) {
    const key = quantile === "p99" ? "p99_us" : "p50_us";
    const stacked = quantile !== "p99";
    const rs = rows(samples);
    const names = stageNames(samples);
    const x = rs.map((r) => r.x);
    const raw = names.map((n) => rs.map((r) => stageValue(r.s, n, key)));
    const acc = x.map(() => 0);
    const drawn = stacked ? raw.map((vals) => vals.map((v, i) => (rs[i].s ? (acc[i] += v || 0) : null))) : raw;
    const hostKey = quantile === "p99" ? "host_p99_us" : "host_p50_us";
    const hostVals = has(samples, hostKey) ? field(rs, hostKey) : null;
    const budget = U.frameBudgetUs(fps);
    const peak = Math.max(0, ...drawn.flat().filter((v) => v !== null), ...(hostVals || []).filter((v) => v !== null));
    const top = U.latencyAxisMaxUs(budget, peak);

    const series = [timeSeries];
    const data = [x];
    const bands = [];
    names.forEach((n, i) => {
      const c = stageColor(n, i);
      series.push(stacked
        ? { label: n, stroke: c, width: 1, fill: alpha(c, 0.55), points: { show: false },
          value: (u, v, si, idx) => (idx === null || idx === undefined ? "" : U.formatUs(raw[i][idx])) }
        : { label: `${n} p99`, stroke: c, width: 2, value: shown(U.formatUs) });
      data.push(drawn[i]);
      if (stacked && i > 0) bands.push({ series: [i + 1, i], fill: alpha(c, 0.55) });
    });
    if (hostVals) {
      series.push({ label: `host total ${quantile} (per frame)`, stroke: HOST_COLOR, width: 2, dash: stacked ? undefined : [3, 3],
        value: shown(U.formatUs) });
      data.push(hostVals);
    }
    if (budget !== null) {
      series.push({ label: `frame budget (${fps} fps)`, stroke: "#c0392b", width: 1.5, dash: [6, 4], points: { show: false },
        value: () => U.formatUs(budget) });
      data.push(x.map(() => budget));
    }
    el.dataset.mode = stacked ? "stacked" : "lines";
    return mount(el, {
      title, height, series, bands,
      scales: { x: { time: false }, y: { range: () => [0, top] } },
      axes: [secondsAxis, usAxis(`${quantile} latency`)],
      legend: { live: true },
    }, data);
  }

  /** Frames per second on the left (host sent, client decoded, repeats); Mb/s and the encoder target on the right.
      The axes keep different headroom so that two flat lines never sit on top of each other. */
  function throughput(el, samples, { height = 220, fps = null } = {}) {
    const rs = rows(samples);
    const target = field(rs, "bitrate_kbps", 1 / 1000);
    const series = [timeSeries,
      { label: "fps (host sent)", stroke: "#1c7ed6", width: 2, scale: "fps", value: shown(U.formatFps) }];
    const data = [rs.map((r) => r.x), field(rs, "fps")];
    if (has(samples, "delivered_fps")) {
      series.push({ label: "fps (client decoded)", stroke: "#2f9e44", width: 2, scale: "fps", value: shown(U.formatFps) });
      data.push(field(rs, "delivered_fps"));
    }
    series.push(
      { label: "repeat fps", stroke: "#a5d8ff", width: 1.5, scale: "fps", value: shown(U.formatFps) },
      { label: "Mb/s (wire)", stroke: "#e8590c", width: 2, scale: "mbps", value: shown(U.formatMbps) },
      { label: "target Mb/s (encoder)", stroke: "#868e96", width: 1.5, dash: [8, 5], scale: "mbps", value: shown(U.formatMbps) });
    data.push(field(rs, "repeat_fps"), field(rs, "mbps"), target);
    // adaptive rate control: where the controller is steering the encoder (absent when fixed)
    const steered = has(samples, "bitrate_target_kbps") ? field(rs, "bitrate_target_kbps", 1 / 1000) : [];
    if (steered.length) {
      series.push({ label: "adaptive target Mb/s", stroke: "#7048e8", width: 1.5, dash: [2, 3], scale: "mbps",
        value: shown(U.formatMbps) });
      data.push(steered);
    }
    const fpsTop = (mx) => Math.max(1, mx, fps || 0) * 1.25;
    const mbpsTop = (mx) => Math.max(0.1, mx, ...target.filter((v) => v !== null),
      ...steered.filter((v) => v !== null)) * 1.6;
    return mount(el, {
      height, series,
      scales: { x: { time: false }, fps: { range: (u, mn, mx) => [0, fpsTop(mx)] }, mbps: { range: (u, mn, mx) => [0, mbpsTop(mx)] } },
      axes: [secondsAxis, { scale: "fps", label: "frames / s" },
        { scale: "mbps", side: 1, label: "Mb/s", grid: { show: false } }],
    }, data);
  }

  /** Simple line chart of sample fields; returns null when none of the fields is present.
      ``percent`` fields, when present, are drawn dashed against a percent axis on the right. */
  function fieldLines(el, samples, fields, { height = 180, unit = "count", percent = [] } = {}) {
    const present = fields.filter(([f]) => has(samples, f));
    if (!present.length) return null;
    const pct = percent.filter(([f]) => has(samples, f));
    const rs = rows(samples);
    const data = [rs.map((r) => r.x)];
    const series = [timeSeries];
    const fmt = unit === "us" ? U.formatUs : U.formatCount;
    present.forEach(([f, label, color], i) => {
      data.push(field(rs, f));
      // recovered is dashed: where FEC repaired every loss it lies on the lost line and both stay visible
      series.push({ label, stroke: color || EXTRA_COLORS[i % EXTRA_COLORS.length], width: 2, value: shown(fmt),
        dash: f === "fec_recovered" ? [6, 4] : undefined });
    });
    pct.forEach(([f, label, color]) => {
      data.push(field(rs, f));
      series.push({ label, stroke: color, width: 1.5, dash: [3, 3], scale: "pct", value: shown((v) => `${v.toFixed(1)} %`) });
    });
    // counts are whole numbers: only integer ticks
    const axis = unit === "us" ? usAxis("")
      : { label: "per window", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6],
        values: (u, t) => t.map((v) => U.formatCount(v)) };
    const scales = { x: { time: false }, y: { range: (u, mn, mx) => [0, Math.max(unit === "us" ? 10 : 1, mx * 1.15)] } };
    const axes = [secondsAxis, axis];
    if (pct.length) {
      scales.pct = { range: (u, mn, mx) => [0, Math.max(10, mx * 1.15)] };
      axes.push({ scale: "pct", side: 1, label: "%", grid: { show: false } });
    }
    return mount(el, { height, series, scales, axes }, data);
  }

  const health = (el, samples, o) => fieldLines(el, samples, COUNTERS, { ...o, unit: "count", percent: ADAPTIVE });
  const roundTrip = (el, samples, o) => fieldLines(el, samples, [["rtt_us", "round trip"]], { ...o, unit: "us" });
  const sealing = (el, samples, o) => fieldLines(el, samples, SEALING, { ...o, unit: "us" });
  const inputLatency = (el, samples, o) => fieldLines(el, samples,
    [["input_p50_us", "input p50"], ["input_p99_us", "input p99"]], { ...o, unit: "us" });

  /** The latency of one stage (or "host total") of two recordings on one time axis:
      A and B in their own colours, seconds from each capture's start. */
  function compare(el, a, b, { quantile = "p50", stage = "host total", labels = ["A", "B"], height = 280 } = {}) {
    const key = quantile === "p99" ? "p99_us" : "p50_us";
    const hostKey = quantile === "p99" ? "host_p99_us" : "host_p50_us";
    const valueOf = (s) => (stage === "host total" ? (s[hostKey] ?? null) : stageValue(s, stage, key));
    const ra = rows(a.samples), rb = rows(b.samples);
    // one x axis: the union of both recordings' x values (seconds since each capture started)
    const xs = Array.from(new Set([...ra.map((r) => r.x), ...rb.map((r) => r.x)])).sort((p, q) => p - q);
    const index = (rs) => new Map(rs.map((r) => [r.x, r.s]));
    const series = [timeSeries];
    const data = [xs];
    let peak = 0;
    [[labels[0], index(ra)], [labels[1], index(rb)]].forEach(([side, idx]) => {
      // undefined = no point here (joined across), null = a session break (a gap)
      const vals = xs.map((x) => (!idx.has(x) ? undefined : idx.get(x) === null ? null : valueOf(idx.get(x))));
      vals.forEach((v) => { if (v) peak = Math.max(peak, v); });
      series.push({ label: `${side}: ${stage} ${quantile}`, stroke: SIDE_COLORS[side] || EXTRA_COLORS[0], width: 2,
        spanGaps: false, value: shown(U.formatUs) });
      data.push(vals);
    });
    const fps = Math.max(a.meta.fps || 0, b.meta.fps || 0);
    const budget = U.frameBudgetUs(fps);
    // the budget line is drawn inside the axis when it is near the data; far above it, it would
    // squash the differences to nothing, so then it is left out and the note under the chart says so
    const withBudget = budget !== null && peak > 0 && budget <= 3 * peak;
    if (withBudget) {
      series.push({ label: `frame budget (${fps} fps)`, stroke: "#c0392b", width: 1.5, dash: [2, 4], points: { show: false },
        value: () => U.formatUs(budget) });
      data.push(xs.map(() => budget));
    }
    el.dataset.budget = budget === null ? "none" : withBudget ? "drawn" : "far above";
    const top = Math.max(peak > 0 ? peak * 1.15 : 1000, withBudget ? budget * 1.1 : 0);
    return mount(el, {
      height, series,
      scales: { x: { time: false }, y: { range: () => [0, top] } },
      axes: [secondsAxis, usAxis(`${quantile} latency`)],
    }, data);
  }

  window.PFCharts = {
    latency, latencyNote, throughput, health, roundTrip, sealing, inputLatency, compare, stageNames, stageColor, has, rows,
    COUNTERS, SEALING, ADAPTIVE, SIDE_COLORS,
  };
})();
