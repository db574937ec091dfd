/* Pairing: PIN entry and paired clients of each protocol plugin, plus the
   console's device tokens. Protocol plugins contribute the routes (see
   docs/console.md, "Routes a protocol plugin contributes"); this page finds
   them in the console's route table:
     POST   /api/v1/<protocol>/pin            {"pin": "1234"}
     GET    /api/v1/<protocol>/clients        [{id, name, ...}]
     DELETE /api/v1/<protocol>/clients/<id>                              */
(function () {
  "use strict";
  const { el, api, card, clear, toast } = PF;

  function protocolRoutes(routes) {
    const by = {};
    for (const r of routes) {
      const m = r.rule.match(/^\/api\/v1\/([A-Za-z0-9_-]+)\/(.+)$/);
      if (!m || r.lane !== "admin" || ["stats", "sessions", "tokens", "console", "host", "plugins", "device"].includes(m[1])) continue;
      const p = (by[m[1]] = by[m[1]] || { plugin: r.plugin });
      const rest = m[2];
      if (r.methods.includes("POST") && /(^|\/)pin$/.test(rest) && !rest.includes("<")) p.pin = r.rule;
      if (r.methods.includes("GET") && /(^|\/)clients$/.test(rest)) p.clients = r.rule;
      if (r.methods.includes("DELETE") && /(^|\/)clients\/<[^>]+>$/.test(rest)) p.revoke = r.rule;
    }
    return by;
  }
  const fill = (rule, value) => rule.replace(/<[^>]+>$/, encodeURIComponent(value));

  function clientName(c) {
    return c.name || c.label || c.common_name || c.id;
  }

  async function protocolCard(name, p, status) {
    const c = card(name === "gamestream" ? "GameStream (Moonlight)" : name === "native" ? "punktfunk native" : name,
      { id: `pair-${name}`, cls: "pair-card" });
    if (status) c.body.append(el("p", { class: "hint" }, Object.entries(status).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" \u00b7 ")));
    else c.body.append(el("p", { class: "hint" }, "This protocol is not running on the host."));
    if (p.pin) {
      const input = el("input", { type: "text", inputmode: "numeric", pattern: "[0-9]{4,8}", maxlength: 8, required: true,
        placeholder: "1234", name: "pin", autocomplete: "off", "aria-label": `${name} PIN` });
      const form = el("form", { class: "pin-form", method: "post" },
        el("label", {}, name === "gamestream" ? "PIN shown by the Moonlight client" : "Pairing PIN (the client enters the same)", input),
        el("button", { type: "submit", class: "primary" }, name === "gamestream" ? "Pair" : "Open pairing"));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          const r = await api.post(p.pin, { pin: input.value.trim() });
          input.value = "";
          toast((r && (r.message || r.status)) || "PIN accepted.");
          loadClients();
        } catch (e) {
          toast(`PIN not accepted: ${e.message}`, "error");
        }
      });
      c.body.append(form);
    }
    const list = el("div", { class: "clients" });
    c.body.append(list);
    async function loadClients() {
      if (!p.clients) return;
      try {
        const data = await api.get(p.clients);
        const clients = Array.isArray(data) ? data : data.clients || [];
        clear(list).append(el("h3", {}, "Paired clients"));
        if (!clients.length) return list.append(el("p", { class: "empty" }, "No paired clients."));
        list.append(el("table", { class: "data" }, el("tbody", {}, clients.map((cl) => el("tr", {},
          el("td", {}, clientName(cl)), el("td", { class: "mono" }, cl.fingerprint ? String(cl.fingerprint).slice(0, 16) : cl.id || ""),
          el("td", {}, cl.paired_unix_ms ? PF.fmtTime(cl.paired_unix_ms) : ""),
          el("td", { class: "row-actions" }, p.revoke ? el("button", { type: "button", class: "ghost danger", onclick: async () => {
            if (!(await PF.confirm(`Revoke ${clientName(cl)}? It must pair again to stream.`, "Revoke"))) return;
            try {
              await api.del(fill(p.revoke, cl.id));
              toast("Client revoked.");
            } catch (e) {
              toast(`Revoke failed: ${e.message}`, "error");
            }
            loadClients();
          } }, "Revoke") : ""))))));
      } catch (e) {
        clear(list).append(PF.errorBox(e));
      }
    }
    loadClients();
    return c;
  }

  async function tokensCard() {
    const c = card("Console device tokens", { id: "tokens-card" });
    const list = el("div", {});
    const name = el("input", { type: "text", name: "name", placeholder: "living-room-tv", pattern: "[A-Za-z0-9._-]{1,64}", required: true, "aria-label": "device name" });
    const out = el("div", { class: "issued", "aria-live": "polite" });
    const form = el("form", { class: "pin-form", method: "post" }, el("label", {}, "New device token", name), el("button", { type: "submit" }, "Issue"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const r = await api.post("/api/v1/tokens/device", { name: name.value.trim() });
        name.value = "";
        clear(out).append(el("p", {}, `Token for ${r.name} (shown once; it can read only the device routes):`), el("code", { class: "token" }, r.token));
        load();
      } catch (e) {
        toast(`Could not issue: ${e.message}`, "error");
      }
    });
    c.body.append(el("p", { class: "hint" }, "A device token opens only the read-only device lane (no stats, no control)."), form, out, list);
    async function load() {
      const t = await api.get("/api/v1/tokens");
      clear(list);
      if (!t.device.length) return list.append(el("p", { class: "empty" }, "No device tokens."));
      list.append(el("table", { class: "data" }, el("tbody", {}, t.device.map((n) => el("tr", {}, el("td", {}, n),
        el("td", { class: "row-actions" }, el("button", { type: "button", class: "ghost danger", onclick: async () => {
          if (!(await PF.confirm(`Revoke the device token ${n}?`, "Revoke"))) return;
          await api.del(`/api/v1/tokens/device/${encodeURIComponent(n)}`).catch((e) => toast(e.message, "error"));
          load();
        } }, "Revoke")))))));
    }
    load().catch((e) => list.append(PF.errorBox(e)));
    return c;
  }

  PF.pages.pairing = async function (root) {
    let routes = [], protocols = {};
    try {
      [routes, protocols] = await Promise.all([
        api.get("/api/v1/console/routes").then((r) => r.routes),
        api.get("/api/v1/host").then((h) => h.protocols || {}),
      ]);
    } catch (e) {
      root.append(PF.errorBox(e));
    }
    const found = protocolRoutes(routes);
    const names = Array.from(new Set([...Object.keys(protocols), ...Object.keys(found)])).sort();
    if (!names.length) {
      root.append(card("Pairing").body.parentElement);
      root.lastChild.querySelector(".card-body").append(el("p", { class: "empty" },
        "No protocol plugin offers pairing. Enable native or GameStream in the host's config."));
    }
    for (const n of names) root.append(await protocolCard(n, found[n] || {}, protocols[n]));
    root.append(await tokensCard());
    return null;
  };
})();
