/* The Performance page: capture card, live card, recordings, detail, compare.
   What it shows and why: docs/console.md, "Pages"; the numbers: docs/stats.md. */
(function () {
  "use strict";
  const { el, api, card, clear, toast } = PF;
  const U = window.PFUnits;
  const C = window.PFCharts;
  const STATS = "/api/v1/stats";
  const LIVE_WINDOW_S = 120; // the live card plots this much recent history

  const modeText = (m) => (m && m.width ? `${m.width}\u00d7${m.height}@${m.fps}` : U.NO_VALUE);
  const pathText = (kind) => kind || U.NO_VALUE;
  /** The summary's latency columns: what is aggregated over what (plugins/stats/summary.py STAGE_COLUMNS). */
  const STAGE_COLUMNS = [
    ["p50_us", "median", "window p50s"], ["p95_us", "p95", "window p50s"],
    ["median_p99_us", "median", "window p99s"], ["max_p99_us", "max", "window p99s"],
  ];

  function fact(label, id, value = U.NO_VALUE) {
    return el("div", { class: "fact" }, el("dt", {}, label), el("dd", { id }, value));
  }

  function destroyCharts(node) {
    node.querySelectorAll(".chart").forEach((c) => c.pfChart && c.pfChart.pfDestroy());
  }

  function chartBlock(title, id) {
    const box = el("div", { class: "chart", id });
    return { node: el("div", { class: "chart-block" }, el("h3", {}, title), box), box };
  }

  function quantileSwitch(current, onChange) {
    const group = el("div", { class: "segmented", role: "group", "aria-label": "latency quantile" });
    for (const q of ["p50", "p99"]) {
      group.append(el("button", {
        type: "button", class: "seg", "data-q": q, "aria-pressed": String(q === current),
        onclick: () => {
          group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.q === q)));
          onChange(q);
        },
      }, q));
    }
    return group;
  }

  // -- summary tables ---------------------------------------------------------------------
  function summaryTable(sum) {
    const windows = Math.max(0, ...sum.stages.map((st) => st.windows));
    const head = [
      el("tr", {}, el("th", { rowspan: 2 }, "stage"),
        el("th", { colspan: 2, class: "num group" }, "p50 of the frames, over windows"),
        el("th", { colspan: 2, class: "num group" }, "p99 of the frames, over windows")),
      el("tr", {}, STAGE_COLUMNS.map(([k, q, of]) => el("th", { class: "num", title: `${q} of the ${of}` }, q))),
    ];
    const row = (name, st, cls, swatch) => el("tr", { "data-stage": name, class: cls },
      el("th", { scope: "row" }, swatch ? el("span", { class: "swatch", style: `background:${swatch}` }) : "", name),
      STAGE_COLUMNS.map(([k]) => el("td", { class: "num", "data-key": k }, U.formatUs(st[k]))));
    const rows = sum.stages.map((st, i) => row(st.name, st, "", C.stageColor(st.name, i)));
    rows.push(...(sum.detail || []).map((st) => row(st.name, st, "detail")));
    if (sum.host) rows.push(row("host total", sum.host, "total"));
    const table = el("table", { class: "data summary", id: "summary-table" },
      el("caption", {}, `Each window holds the p50 and p99 of its frames; the columns aggregate those over ${windows} ` +
        `windows (median, p95, max of the windows' values)` + ((sum.detail || []).length ? "; indented rows are parts of a stage and are not added up." : ".")),
      el("thead", {}, head), el("tbody", {}, rows));
    const counters = sum.counters || {};
    const lossFacts = C.COUNTERS.filter(([k]) => k in counters).map(([k, label]) => {
      const bad = counters[k] > 0 && (k === "frames_unrecoverable" || k === "frames_dropped");
      return el("div", { class: `fact${bad ? " bad" : ""}` }, el("dt", {}, label), el("dd", { id: `sum-${k}` }, U.formatCount(counters[k])));
    });
    const rate = (r) => `${U.formatFps(r.min)} / ${U.formatFps(r.mean)}`;
    const facts = el("dl", { class: "facts", id: "summary-facts" },
      fact("host fps (sent) min / mean", "sum-fps", rate(sum.fps)),
      sum.delivered_fps ? fact("client fps (decoded) min / mean", "sum-delivered", rate(sum.delivered_fps)) : "",
      fact("Mb/s mean / max", "sum-mbps", `${U.formatMbps(sum.mbps.mean)} / ${U.formatMbps(sum.mbps.max)}`),
      fact("sessions", "sum-sessions", String(sum.sessions)),
      sum.input ? fact("input receive \u2192 injected p50 / p99", "sum-input",
        `${U.formatUs(sum.input.p50_us)} / ${U.formatUs(sum.input.median_p99_us)}`) : "",
      lossFacts.length ? lossFacts : fact("loss counters", "sum-loss", "none on this path"));
    return el("div", { class: "summary-wrap" }, el("div", { class: "table-scroll" }, table), facts);
  }

  function compareTable(sa, sb) {
    const names = [];
    for (const s of [...sa.stages, ...sb.stages]) if (!names.includes(s.name)) names.push(s.name);
    const find = (sum, n) => (n === "host total" ? sum.host : sum.stages.find((s) => s.name === n)) || {};
    if (sa.host || sb.host) names.push("host total");
    const head = el("tr", {}, el("th", {}, "stage"), el("th", {}, ""), el("th", { class: "num" }, "A"),
      el("th", { class: "num" }, "B"), el("th", { class: "num" }, "B \u2212 A"));
    const body = [];
    const row = (label, q, a, b, fmt, lowerIsBetter = true, first = false) => {
      const d = (Number.isFinite(a) && Number.isFinite(b)) ? b - a : 0;
      const cls = d === 0 || lowerIsBetter === null ? "" : (d > 0) === lowerIsBetter ? "worse" : "better";
      body.push(el("tr", { "data-stage": label, "data-q": q, class: first ? "group-start" : "" },
        el("th", { scope: "row" }, first ? label : ""), el("td", { class: "q" }, q),
        el("td", { class: "num", "data-side": "a" }, fmt(a)), el("td", { class: "num", "data-side": "b" }, fmt(b)),
        el("td", { class: `num delta ${cls}`, "data-side": "delta" }, U.formatDelta(a, b, fmt))));
    };
    for (const n of names) {
      const a = find(sa, n), b = find(sb, n);
      [["p50", "p50_us"], ["p95", "p95_us"], ["p99", "median_p99_us"]].forEach(([q, k], i) => row(n, q, a[k], b[k], U.formatUs, true, i === 0));
    }
    row("fps (host)", "mean", sa.fps.mean, sb.fps.mean, U.formatFps, false, true);
    row("fps (host)", "min", sa.fps.min, sb.fps.min, U.formatFps, false);
    if (sa.delivered_fps || sb.delivered_fps) {
      row("fps (client)", "mean", (sa.delivered_fps || {}).mean, (sb.delivered_fps || {}).mean, U.formatFps, false, true);
    }
    row("Mb/s", "mean", sa.mbps.mean, sb.mbps.mean, U.formatMbps, null, true);
    let first = true;
    for (const [k, label] of C.COUNTERS) {
      if (!(k in (sa.counters || {})) && !(k in (sb.counters || {}))) continue;
      // recovered by FEC is neither better nor worse: it is what FEC is for
      row(label, "total", (sa.counters || {})[k], (sb.counters || {})[k], U.formatCount, k === "fec_recovered" ? null : true, first);
      first = false;
    }
    const note = el("p", { class: "hint" }, "Latency rows: p50 and p95 of the windows' p50s, and the median of the windows' p99s.");
    return el("div", {}, el("div", { class: "table-scroll" },
      el("table", { class: "data compare", id: "compare-table" }, el("thead", {}, head), el("tbody", {}, body))), note);
  }

  function metaLine(m) {
    const session = m.kind
      ? [pathText(m.kind), " \u00b7 ", modeText(m), " \u00b7 ", m.codec || U.NO_VALUE, " \u00b7 ",
        el("span", { title: m.gpu || "" }, m.encoder_backend || U.NO_VALUE), m.gpu ? ` (${m.gpu})` : "",
        " \u00b7 client ", m.client || U.NO_VALUE]
      : ["no session ran while it was armed"];
    return el("p", { class: "meta-line" },
      el("strong", {}, PF.fmtTime(m.started_unix_ms)), " \u00b7 ", ...session, " \u00b7 ", U.formatDurationMs(m.duration_ms),
      " \u00b7 ", `${m.sample_count} windows`, m.truncated ? el("span", { class: "badge warn" }, "truncated") : "");
  }

  // -- the page ------------------------------------------------------------------------------
  PF.pages.performance = async function (root) {
    const state = { status: null, live: { id: "", samples: [], lastT: null }, recordings: [], detailId: null, quantile: "p50" };

    // capture card
    const startBtn = el("button", { type: "button", class: "primary", id: "capture-start", onclick: () => startCapture() }, "Start");
    const stopBtn = el("button", { type: "button", class: "danger", id: "capture-stop", onclick: () => stopCapture() }, "Stop & save");
    const badge = el("span", { class: "badge idle", id: "capture-badge" }, "Idle");
    const capture = card("Capture", { id: "capture-card", actions: [startBtn, stopBtn] });
    capture.head.querySelector("h2").after(badge);
    const unsaved = el("p", { class: "warn-line", id: "capture-unsaved", hidden: true });
    capture.body.append(
      el("dl", { class: "facts" }, fact("elapsed", "capture-elapsed"), fact("samples", "capture-samples"),
        fact("path", "capture-path"), fact("capture", "capture-id")),
      unsaved,
      el("p", { class: "hint" }, "Start records every session's stats windows until you stop; no restart needed. ",
        "Captures are saved as files in the host's captures directory."));

    // live card
    const live = card("Live", { id: "live-card" });
    live.hidden = true;
    const liveFacts = el("dl", { class: "facts" }, fact("fps (host sent)", "live-fps"),
      fact("fps (client decoded)", "live-delivered"), fact("Mb/s", "live-mbps"), fact("samples received", "live-count", "0"),
      el("div", { class: "fact wide" }, el("dt", {}, "last window, p50 per stage"), el("dd", { id: "live-last" }, U.NO_VALUE)));
    const liveLat = chartBlock(`Latency by stage, p50 (last ${LIVE_WINDOW_S} s)`, "live-latency");
    const liveThr = chartBlock("Throughput", "live-throughput");
    const liveEmpty = el("p", { class: "empty", id: "live-empty" }, "Armed. Waiting for the first window of a session\u2026");
    live.body.append(liveFacts, liveEmpty, el("div", { class: "chart-grid" }, liveLat.node, liveThr.node));

    // recordings card
    const compareBtn = el("button", { type: "button", id: "compare-btn", disabled: true, onclick: () => openCompare() }, "Compare selected");
    const refreshBtn = el("button", { type: "button", class: "ghost", onclick: () => loadRecordings() }, "Refresh");
    const recs = card("Recordings", { id: "recordings-card", actions: [compareBtn, refreshBtn] });
    const recBody = el("tbody", {});
    recs.body.append(el("div", { class: "table-scroll" }, el("table", { class: "data", id: "recordings-table" },
      el("thead", {}, el("tr", {}, el("th", { title: "pick two to compare" }, "\u2194"),
        ["time", "path", "mode", "codec", "encoder", "duration", "samples", ""].map((h) => el("th", {
          class: ["duration", "samples"].includes(h) ? "num" : ["mode", "codec", "encoder"].includes(h) ? h : "" }, h)))),
      recBody)));

    const detail = card("Recording", { id: "detail-card" });
    detail.hidden = true;
    const cmp = card("Compare", { id: "compare-card" });
    cmp.hidden = true;
    root.append(capture, live, recs, detail, cmp);

    // -- capture ---------------------------------------------------------------------------
    function renderStatus(st) {
      const was = state.status;
      state.status = st;
      // a capture stopped elsewhere (CLI, another tab): show the new recording
      if (was && was.armed && !st.armed) loadRecordings();
      badge.textContent = st.armed ? "Recording" : "Idle";
      badge.className = `badge ${st.armed ? "rec" : "idle"}`;
      document.getElementById("capture-elapsed").textContent = st.armed ? U.formatDurationMs(st.elapsed_ms) : U.NO_VALUE;
      document.getElementById("capture-samples").textContent = st.armed ? U.formatCount(st.sample_count) : U.NO_VALUE;
      document.getElementById("capture-path").textContent = st.armed ? pathText(st.kind) : U.NO_VALUE;
      document.getElementById("capture-id").textContent = st.armed ? st.id || U.NO_VALUE : U.NO_VALUE;
      startBtn.disabled = !!st.armed;
      stopBtn.disabled = !st.armed && !st.unsaved;
      stopBtn.textContent = !st.armed && st.unsaved ? "Retry save" : "Stop & save";
      unsaved.hidden = !st.unsaved;
      unsaved.textContent = st.unsaved ? `${st.unsaved} capture(s) could not be saved and are kept in memory; "Retry save" tries again.` : "";
      live.hidden = !st.armed;
    }

    async function pollStatus() {
      try {
        renderStatus(await api.get(`${STATS}/capture/status`));
      } catch (e) {
        badge.textContent = e.status === 503 ? "host not running" : e.status === 0 ? "host gone" : "unknown";
        badge.className = "badge bad";
        badge.title = e.message;
        throw e;
      }
    }

    async function startCapture() {
      startBtn.disabled = true;
      try {
        renderStatus(await api.post(`${STATS}/capture/start`));
        toast("Capture started.");
        pollLive();
      } catch (e) {
        toast(`Start failed: ${e.message}`, "error");
        startBtn.disabled = false;
      }
    }

    async function stopCapture() {
      stopBtn.disabled = true;
      try {
        const meta = await api.post(`${STATS}/capture/stop`);
        if (meta === null) toast("Nothing was recording.");
        else toast(`Saved capture ${meta.id} (${meta.sample_count} samples).`);
        await pollStatus();
        await loadRecordings();
        if (meta) openDetail(meta.id);
      } catch (e) {
        toast(e.status === 500 ? `Saving failed; the capture is kept in memory: ${e.message}` : `Stop failed: ${e.message}`, "error");
        await pollStatus().catch(() => {});
      }
    }

    // -- live --------------------------------------------------------------------------------
    async function pollLive() {
      const st = state.status;
      if (!st || !st.armed) return;
      const L = state.live;
      const reset = (id) => {
        Object.assign(L, { id, samples: [], lastT: null });
        destroyCharts(live);
        liveEmpty.hidden = false;
        for (const f of ["live-last", "live-fps", "live-delivered", "live-mbps"]) document.getElementById(f).textContent = U.NO_VALUE;
      };
      if (L.id !== st.id) reset(st.id);
      const q = L.lastT === null ? "" : `?since=${encodeURIComponent(L.lastT)}`;
      let cap;
      try {
        cap = await api.get(`${STATS}/capture/live${q}`);
      } catch (e) {
        if (e.status === 404) return; // stopped between the polls
        throw e;
      }
      if (cap.meta && cap.meta.id && cap.meta.id !== L.id) reset(cap.meta.id);
      if (cap.samples.length) {
        L.samples.push(...cap.samples);
        L.lastT = L.samples[L.samples.length - 1].t_ms;
      }
      document.getElementById("live-count").textContent = U.formatCount(L.samples.length);
      if (!L.samples.length) return;
      liveEmpty.hidden = true;
      const last = L.samples[L.samples.length - 1];
      document.getElementById("live-last").textContent =
        (last.stages || []).map((s) => `${s.name} ${U.formatUs(s.p50_us)}`).join(" \u00b7 ") || U.NO_VALUE;
      document.getElementById("live-fps").textContent = U.formatFps(last.fps);
      document.getElementById("live-delivered").textContent =
        last.delivered_fps === undefined ? "not reported" : U.formatFps(last.delivered_fps);
      document.getElementById("live-mbps").textContent = U.formatMbps(last.mbps);
      const recent = L.samples.filter((s) => s.t_ms >= last.t_ms - LIVE_WINDOW_S * 1000);
      destroyCharts(live);
      C.latency(liveLat.box, recent, { quantile: "p50", fps: cap.meta.fps || null, height: 200 });
      C.throughput(liveThr.box, recent, { height: 200, fps: cap.meta.fps || null });
    }

    // -- recordings ------------------------------------------------------------------------
    function selectedIds() {
      return [...recBody.querySelectorAll("input.pick:checked")].map((i) => i.value);
    }
    function updateCompareBtn() {
      const n = selectedIds().length;
      compareBtn.disabled = n !== 2;
      compareBtn.textContent = n === 2 ? "Compare selected" : `Compare selected (${n}/2)`;
    }

    async function loadRecordings() {
      let list;
      try {
        list = await api.get(`${STATS}/recordings`);
      } catch (e) {
        clear(recBody).append(el("tr", {}, el("td", { colspan: 9 }, PF.errorBox(e))));
        return;
      }
      const picked = new Set(selectedIds());
      state.recordings = list;
      clear(recBody);
      if (!list.length) {
        recBody.append(el("tr", { class: "empty-row" }, el("td", { colspan: 9, class: "empty" },
          "No recordings yet. Start a capture, stream a session, then Stop & save.")));
      }
      for (const m of list) {
        recBody.append(el("tr", { "data-id": m.id, class: m.id === state.detailId ? "selected" : "" },
          el("td", {}, el("input", { type: "checkbox", class: "pick", value: m.id, "aria-label": `pick ${m.id} for comparison`,
            checked: picked.has(m.id), onchange: (ev) => {
              if (selectedIds().length > 2) ev.target.checked = false;
              updateCompareBtn();
            } })),
          el("td", { title: m.id }, PF.fmtTime(m.started_unix_ms)),
          el("td", {}, m.kind || "no session"),
          el("td", { class: "mode" }, modeText(m)),
          el("td", { class: "codec" }, m.codec || U.NO_VALUE),
          el("td", { title: m.gpu ? `GPU: ${m.gpu}` : "no GPU", class: "encoder" }, m.encoder_backend || U.NO_VALUE),
          el("td", { class: "num" }, U.formatDurationMs(m.duration_ms)),
          el("td", { class: "num" }, U.formatCount(m.sample_count), m.truncated ? el("span", { class: "badge warn", title: "hit the 5400-sample cap" }, "cut") : ""),
          el("td", { class: "row-actions" },
            el("button", { type: "button", class: "view", onclick: () => openDetail(m.id) }, "View"),
            el("button", { type: "button", class: "ghost json", title: "Download JSON", onclick: () => downloadJson(m.id) }, "JSON"),
            el("button", { type: "button", class: "ghost csv", title: "Download CSV", onclick: () => downloadCsv(m.id) }, "CSV"),
            el("button", { type: "button", class: "ghost danger delete", onclick: () => deleteRecording(m) }, "Delete"))));
      }
      updateCompareBtn();
    }

    async function downloadJson(id) {
      try {
        const cap = await api.get(`${STATS}/recordings/${encodeURIComponent(id)}`);
        PF.download(`punktfunk-capture-${id}.json`, new Blob([JSON.stringify(cap)], { type: "application/json" }));
      } catch (e) {
        toast(`Download failed: ${e.message}`, "error");
      }
    }
    async function downloadCsv(id) {
      try {
        const text = await api.raw("GET", `${STATS}/recordings/${encodeURIComponent(id)}.csv`, { accept: "text" });
        PF.download(`punktfunk-capture-${id}.csv`, new Blob([text], { type: "text/csv" }));
      } catch (e) {
        toast(`Download failed: ${e.message}`, "error");
      }
    }

    async function deleteRecording(m) {
      const ok = await PF.confirm(`Delete the recording from ${PF.fmtTime(m.started_unix_ms)} (${m.sample_count} samples)? This removes the file.`, "Delete");
      if (!ok) return;
      try {
        await api.del(`${STATS}/recordings/${encodeURIComponent(m.id)}`);
        toast("Recording deleted.");
        if (state.detailId === m.id) closeDetail();
      } catch (e) {
        toast(`Delete failed: ${e.message}`, "error");
      }
      await loadRecordings();
    }

    // -- detail ------------------------------------------------------------------------------
    function closeDetail() {
      destroyCharts(detail);
      detail.hidden = true;
      state.detailId = null;
      recBody.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
    }

    async function openDetail(id) {
      state.detailId = id;
      recBody.querySelectorAll("tr[data-id]").forEach((r) => r.classList.toggle("selected", r.dataset.id === id));
      destroyCharts(detail);
      detail.hidden = false;
      detail.dataset.id = id;
      clear(detail.body).append(el("p", { class: "empty" }, "Loading\u2026"));
      let cap, sum;
      try {
        [cap, sum] = await Promise.all([
          api.get(`${STATS}/recordings/${encodeURIComponent(id)}`),
          api.get(`${STATS}/recordings/${encodeURIComponent(id)}/summary`),
        ]);
      } catch (e) {
        clear(detail.body).append(PF.errorBox(e));
        return;
      }
      if (state.detailId !== id) return;
      const m = cap.meta;
      detail.head.querySelector("h2").textContent = `Recording ${PF.fmtTime(m.started_unix_ms)}`;
      const actions = detail.head.querySelector(".actions");
      const lat = chartBlock("Latency by stage", "detail-latency");
      const latNote = el("p", { class: "hint chart-note", id: "detail-latency-note" });
      lat.node.append(latNote);
      const drawLatency = () => {
        if (lat.box.pfChart) lat.box.pfChart.pfDestroy();
        lat.node.querySelector("h3").textContent = state.quantile === "p99" ? "Latency by stage, p99 (lines)" : "Latency by stage, p50 (stacked)";
        latNote.textContent = C.latencyNote(state.quantile);
        C.latency(lat.box, cap.samples, { quantile: state.quantile, fps: m.fps || null });
      };
      clear(actions).append(
        quantileSwitch(state.quantile, (q) => { state.quantile = q; drawLatency(); }),
        el("button", { type: "button", class: "ghost", onclick: () => downloadJson(id) }, "JSON"),
        el("button", { type: "button", class: "ghost", onclick: () => downloadCsv(id) }, "CSV"),
        el("button", { type: "button", class: "ghost", "aria-label": "close", onclick: closeDetail }, "Close"));
      clear(detail.body);
      detail.body.append(metaLine(m), el("h3", {}, "Summary"), summaryTable(sum));
      if (!cap.samples.length) {
        detail.body.append(el("p", { class: "empty" }, "This recording has no samples (no session ran while it was armed)."));
        return;
      }
      const thr = chartBlock("Throughput", "detail-throughput");
      const health = chartBlock("Health", "detail-health");
      detail.body.append(lat.node, thr.node, health.node);
      drawLatency();
      C.throughput(thr.box, cap.samples, { fps: m.fps || null });
      if (!C.health(health.box, cap.samples)) {
        health.box.classList.add("no-chart");
        health.box.append(el("p", { class: "empty", id: "no-loss-counters" }, "This path records no loss counters."));
      } else {
        health.node.append(el("p", { class: "hint" }, "Lost, recovered and unrecoverable are counted apart: a packet FEC ",
          "rebuilt was lost and recovered, and cost nothing. Only unrecoverable frames reached the picture."));
        if (C.ADAPTIVE.some(([f]) => C.has(cap.samples, f))) {
          health.node.append(el("p", { class: "hint", id: "adaptive-hint" }, "Dashed, against the % axis: the parity ",
            "share adaptive FEC gave the window's frames and the loss estimate that chose it; the throughput chart's ",
            "dotted line is the adaptive bitrate target."));
        }
      }
      if (C.has(cap.samples, "rtt_us")) {
        const rtt = chartBlock("Round trip", "detail-rtt");
        detail.body.append(rtt.node);
        C.roundTrip(rtt.box, cap.samples);
      }
      if (C.has(cap.samples, "input_p50_us")) {
        const inp = chartBlock("Input: receive \u2192 injected", "detail-input");
        inp.node.append(el("p", { class: "hint" }, "From the client's input message arriving at the host to the input ",
          "backend's flush, p50/p99 over each window's events; windows without input have no point."));
        detail.body.append(inp.node);
        C.inputLatency(inp.box, cap.samples);
      }
      if (C.SEALING.some(([f]) => C.has(cap.samples, f))) {
        const seal = chartBlock("Sealing split (mean per frame)", "detail-sealing");
        detail.body.append(seal.node);
        C.sealing(seal.box, cap.samples);
      }
      detail.scrollIntoView({ behavior: "smooth", block: "start" });
    }

    // -- compare -----------------------------------------------------------------------------
    async function openCompare() {
      // A is the older recording, B the newer: "B − A" reads as "what changed since"
      const started = new Map(state.recordings.map((m) => [m.id, m.started_unix_ms]));
      const ids = selectedIds().sort((x, y) => (started.get(x) || 0) - (started.get(y) || 0));
      if (ids.length !== 2) return;
      destroyCharts(cmp);
      cmp.hidden = false;
      clear(cmp.body).append(el("p", { class: "empty" }, "Loading\u2026"));
      let a, b, sa, sb;
      try {
        [a, b, sa, sb] = await Promise.all([
          ...ids.map((id) => api.get(`${STATS}/recordings/${encodeURIComponent(id)}`)),
          ...ids.map((id) => api.get(`${STATS}/recordings/${encodeURIComponent(id)}/summary`)),
        ]);
      } catch (e) {
        clear(cmp.body).append(PF.errorBox(e));
        return;
      }
      cmp.dataset.ids = ids.join(",");
      const chart = chartBlock("", "compare-latency");
      const note = el("p", { class: "hint chart-note", id: "compare-note" });
      chart.node.append(note);
      const stages = C.stageNames([...a.samples, ...b.samples]);
      if (C.has(a.samples, "host_p50_us") || C.has(b.samples, "host_p50_us")) stages.push("host total");
      let quantile = "p50";
      let stage = stages.includes("host total") ? "host total" : stages[0];
      const draw = () => {
        if (chart.box.pfChart) chart.box.pfChart.pfDestroy();
        chart.node.querySelector("h3").textContent = `${stage}, ${quantile}: A and B (seconds from each capture's start)`;
        C.compare(chart.box, a, b, { quantile, stage });
        const budget = U.frameBudgetUs(Math.max(a.meta.fps || 0, b.meta.fps || 0));
        note.textContent = chart.box.dataset.budget === "far above"
          ? `The frame budget (${U.formatUs(budget)}) is far above these values and is not drawn.` : "";
      };
      const picker = el("div", { class: "segmented stage-pick", role: "group", "aria-label": "stage to compare" },
        stages.map((n) => el("button", { type: "button", class: "seg", "data-stage": n, "aria-pressed": String(n === stage),
          onclick: () => {
            stage = n;
            picker.querySelectorAll("button").forEach((x) => x.setAttribute("aria-pressed", String(x.dataset.stage === n)));
            draw();
          } }, n)));
      clear(cmp.head.querySelector(".actions")).append(
        quantileSwitch(quantile, (q) => { quantile = q; draw(); }),
        el("button", { type: "button", class: "ghost", onclick: () => { destroyCharts(cmp); cmp.hidden = true; } }, "Close"));
      clear(cmp.body).append(
        el("div", { class: "compare-heads" },
          el("div", {}, el("span", { class: "tag a" }, "A"), metaLine(a.meta)),
          el("div", {}, el("span", { class: "tag b" }, "B"), metaLine(b.meta))),
        picker, chart.node, el("h3", {}, "Summaries"), compareTable(sa, sb));
      draw();
      cmp.scrollIntoView({ behavior: "smooth", block: "start" });
    }

    await loadRecordings();
    const stopStatus = PF.every(1000, pollStatus);
    const stopLive = PF.every(2000, pollLive);
    return () => {
      stopStatus();
      stopLive();
    };
  };
})();
