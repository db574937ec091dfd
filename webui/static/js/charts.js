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
  const COUNTERS = [
    ["frames_dropped", "frames dropped (host)"],
    ["packets_dropped", "packets lost (client)"],
    ["send_dropped", "send drops (buffer full)"],
    ["fec_recovered", "FEC shards recovered"],
  ];
  const SEALING = [["fec_us", "FEC"], ["seal_us", "encryption"], ["sock_us", "socket"]];

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

  const usAxis = (label) => ({
    label,
    values: (u, ticks) => ticks.map((v) => U.formatUs(v)),
    size: 64,
  });
  const secondsAxis = { label: "seconds", values: (u, ticks) => ticks.map((v) => `${+v.toFixed(1)} s`) };

  /** Size charts to their container and keep them so. */
  function mount(el, opts, data) {
    PF.clear(el);
    const width = Math.max(280, el.clientWidth || el.parentElement.clientWidth || 600);
    const chart = new uPlot({ width, height: opts.height || 240, ...opts }, data, el);
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

  /** Latency by stage, stacked (p50 or p99), dashed frame budget, host total line. */
  function latency(el, samples, { quantile = "p50", fps = null, height = 260, title } = {}) {
    const key = quantile === "p99" ? "p99_us" : "p50_us";
    const rs = rows(samples);
    const names = stageNames(samples);
    const x = rs.map((r) => r.x);
    const raw = names.map((n) => rs.map((r) => stageValue(r.s, n, key)));
    const acc = x.map(() => 0);
    const stacked = raw.map((vals) => vals.map((v, i) => (rs[i].s ? (acc[i] += v || 0) : null)));
    const hostKey = quantile === "p99" ? "host_p99_us" : "host_p50_us";
    const hostVals = has(samples, hostKey) ? rs.map((r) => (r.s && r.s[hostKey] !== undefined ? r.s[hostKey] : null)) : null;
    const budget = U.frameBudgetUs(fps);
    const peak = Math.max(0, ...acc, ...(hostVals || []).filter((v) => v !== null));
    const top = U.latencyAxisMaxUs(budget, peak);

    const series = [{ label: "t", value: (u, v) => (v === null ? "" : `${v.toFixed(1)} s`) }];
    const data = [x];
    const bands = [];
    names.forEach((n, i) => {
      const c = stageColor(n, i);
      series.push({
        label: n, stroke: c, width: 1, fill: alpha(c, 0.55), points: { show: false },
        value: (u, v, si, idx) => (idx === null || idx === undefined ? "" : U.formatUs(raw[i][idx])),
      });
      data.push(stacked[i]);
      if (i > 0) bands.push({ series: [i + 1, i], fill: alpha(c, 0.55) });
    });
    if (hostVals) {
      series.push({ label: `host total ${quantile}`, stroke: "#222", width: 2, value: (u, v) => U.formatUs(v) });
      data.push(hostVals);
    }
    if (budget !== null) {
      series.push({ label: `frame budget (${fps} fps)`, stroke: "#c0392b", width: 1.5, dash: [6, 4], points: { show: false },
        value: () => U.formatUs(budget) });
      data.push(x.map(() => budget));
    }
    return mount(el, {
      title, height, series, bands,
      scales: { x: { time: false }, y: { range: () => [0, top] } },
      axes: [secondsAxis, usAxis(`${quantile} latency`)],
      legend: { live: true },
    }, data);
  }

  /** fps and repeat fps (left), Mb/s and target Mb/s (right). */
  function throughput(el, samples, { height = 220 } = {}) {
    const rs = rows(samples);
    const pick = (f, scale = 1) => rs.map((r) => (r.s && r.s[f] !== undefined ? r.s[f] * scale : null));
    const data = [rs.map((r) => r.x), pick("fps"), pick("repeat_fps"), pick("mbps"), pick("bitrate_kbps", 1 / 1000)];
    return mount(el, {
      height,
      series: [
        { label: "t", value: (u, v) => (v === null ? "" : `${v.toFixed(1)} s`) },
        { label: "fps", stroke: "#2b8cbe", width: 2, scale: "fps", value: (u, v) => U.formatFps(v) },
        { label: "repeat fps", stroke: "#9ecae1", width: 1.5, scale: "fps", value: (u, v) => U.formatFps(v) },
        { label: "Mb/s", stroke: "#e15759", width: 2, scale: "mbps", value: (u, v) => U.formatMbps(v) },
        { label: "target Mb/s", stroke: "#e15759", width: 1, dash: [4, 4], scale: "mbps", value: (u, v) => U.formatMbps(v) },
      ],
      scales: { x: { time: false }, fps: { range: (u, mn, mx) => [0, Math.max(1, mx * 1.15)] },
        mbps: { range: (u, mn, mx) => [0, Math.max(0.1, mx * 1.15)] } },
      axes: [secondsAxis, { scale: "fps", label: "frames / s" },
        { scale: "mbps", side: 1, label: "Mb/s", grid: { show: false } }],
    }, data);
  }

  /** Simple line chart of sample fields; returns null when none of the fields is present. */
  function fieldLines(el, samples, fields, { height = 180, unit = "count" } = {}) {
    const present = fields.filter(([f]) => has(samples, f));
    if (!present.length) return null;
    const rs = rows(samples);
    const data = [rs.map((r) => r.x)];
    const series = [{ label: "t", value: (u, v) => (v === null ? "" : `${v.toFixed(1)} s`) }];
    const fmt = unit === "us" ? U.formatUs : U.formatCount;
    present.forEach(([f, label], i) => {
      data.push(rs.map((r) => (r.s && r.s[f] !== undefined && r.s[f] !== null ? r.s[f] : null)));
      series.push({ label, stroke: EXTRA_COLORS[i % EXTRA_COLORS.length], width: 2, value: (u, v) => fmt(v) });
    });
    // counts are whole numbers: only integer ticks
    const axis = unit === "us" ? usAxis("")
      : { label: "per window", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6],
        values: (u, t) => t.map((v) => U.formatCount(v)) };
    return mount(el, {
      height, series,
      scales: { x: { time: false }, y: { range: (u, mn, mx) => [0, Math.max(unit === "us" ? 10 : 1, mx * 1.15)] } },
      axes: [secondsAxis, axis],
    }, data);
  }

  const health = (el, samples, o) => fieldLines(el, samples, COUNTERS, { ...o, unit: "count" });
  const roundTrip = (el, samples, o) => fieldLines(el, samples, [["rtt_us", "round trip"]], { ...o, unit: "us" });
  const sealing = (el, samples, o) => fieldLines(el, samples, SEALING, { ...o, unit: "us" });

  /** Two recordings' stage latencies on one time axis: A solid, B dashed, same colour per stage. */
  function compare(el, a, b, { quantile = "p50", labels = ["A", "B"], height = 280 } = {}) {
    const key = quantile === "p99" ? "p99_us" : "p50_us";
    const names = stageNames([...a.samples, ...b.samples]);
    const ra = rows(a.samples), rb = rows(b.samples);
    // one x axis: the union of both recordings' x values (seconds since each capture started)
    const xs = Array.from(new Set([...ra.map((r) => r.x), ...rb.map((r) => r.x)])).sort((p, q) => p - q);
    const index = (rs) => new Map(rs.map((r) => [r.x, r.s]));
    const ia = index(ra), ib = index(rb);
    const series = [{ label: "t", value: (u, v) => (v === null ? "" : `${v.toFixed(1)} s`) }];
    const data = [xs];
    let peak = 0;
    names.forEach((n, i) => {
      const c = stageColor(n, i);
      for (const [side, idx, dash] of [[labels[0], ia, undefined], [labels[1], ib, [6, 4]]]) {
        const vals = xs.map((x) => (idx.has(x) ? stageValue(idx.get(x), n, key) : undefined));
        vals.forEach((v) => { if (v) peak = Math.max(peak, v); });
        series.push({ label: `${side} ${n}`, stroke: c, width: dash ? 1.5 : 2, dash, spanGaps: false,
          value: (u, v) => U.formatUs(v) });
        data.push(vals);
      }
    });
    const fps = Math.max(a.meta.fps || 0, b.meta.fps || 0);
    const budget = U.frameBudgetUs(fps);
    if (budget !== null) {
      series.push({ label: `frame budget (${fps} fps)`, stroke: "#c0392b", width: 1, dash: [2, 4], value: () => U.formatUs(budget) });
      data.push(xs.map(() => budget));
    }
    // undefined = "no point here" (join across), null = a session break (gap)
    const joined = data.map((col, ci) => (ci === 0 ? col : col.map((v) => (v === undefined ? undefined : v))));
    // scaled to the data (not to the budget) so that small differences stay visible;
    // the budget line shows when the stages come near it
    return mount(el, {
      height, series,
      scales: { x: { time: false }, y: { range: () => [0, peak > 0 ? peak * 1.15 : 1000] } },
      axes: [secondsAxis, usAxis(`${quantile} latency per stage`)],
    }, joined);
  }

  window.PFCharts = { latency, throughput, health, roundTrip, sealing, compare, stageNames, stageColor, has, rows, COUNTERS, SEALING };
})();
