/* Sessions: what is streaming now, with a way to end a session. */
(function () {
  "use strict";
  const { el, api, card, clear, toast } = PF;
  const U = window.PFUnits;

  PF.pages.sessions = async function (root) {
    const c = card("Live sessions", { id: "sessions-card" });
    const body = el("tbody", {});
    c.body.append(el("div", { class: "table-scroll" }, el("table", { class: "data", id: "sessions-table" },
      el("thead", {}, el("tr", {}, ["id", "protocol", "client", "mode", "codec", "encoder", "fps", "Mb/s", "target", "state", "since", ""]
        .map((h) => el("th", { class: ["fps", "Mb/s", "target"].includes(h) ? "num" : "" }, h)))),
      body)));
    c.body.append(el("p", { class: "hint" }, "fps and Mb/s: from the last measurement window while a capture is armed ",
      "(Performance page) or the host runs with PUNKTFUNK_PERF=1; otherwise from the frame and byte counters over the last seconds."));
    root.append(c);

    async function end(s) {
      const ok = await PF.confirm(`End session ${s.id} (${s.kind}, client ${s.client})? The client's stream stops.`, "End session");
      if (!ok) return;
      try {
        await api.post(`/api/v1/sessions/${s.id}/stop`);
        toast(`Session ${s.id} is ending.`);
      } catch (e) {
        toast(`Could not end session ${s.id}: ${e.message}`, "error");
      }
      refresh();
    }

    async function refresh() {
      let list;
      try {
        list = await api.get("/api/v1/sessions");
      } catch (e) {
        clear(body).append(el("tr", {}, el("td", { colspan: 12 }, PF.errorBox(e))));
        throw e;
      }
      clear(body);
      if (!list.length) body.append(el("tr", { class: "empty-row" }, el("td", { colspan: 12, class: "empty" }, "No sessions are streaming.")));
      for (const s of list) {
        const details = Object.entries(s.details || {}).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("\n");
        body.append(el("tr", { "data-id": s.id },
          el("td", {}, String(s.id)),
          el("td", {}, s.kind),
          el("td", { class: "mono", title: details || null }, s.client),
          el("td", {}, `${s.width}\u00d7${s.height}@${s.fps}`),
          el("td", {}, s.codec),
          el("td", { title: s.gpu ? `GPU: ${s.gpu}` : "no GPU" }, s.encoder_backend || U.NO_VALUE),
          el("td", { class: "num fps" }, U.formatFps(s.fps_measured ?? s.fps_recent)),
          el("td", { class: "num mbps" }, U.formatMbps(s.mbps_measured ?? s.mbps_recent)),
          el("td", { class: "num" }, U.formatMbps(s.bitrate_kbps / 1000)),
          el("td", {}, s.state),
          el("td", {}, PF.fmtTime(s.started_unix_ms)),
          el("td", { class: "row-actions" }, el("button", { type: "button", class: "danger end", onclick: () => end(s) }, "End"))));
      }
    }
    return PF.every(2000, refresh);
  };
})();
