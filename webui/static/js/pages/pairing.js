/* Pairing: PIN entry and paired clients of every protocol, plus the console's
   device tokens. Everything goes through the console's pairing bridge
   (/api/v1/pairing: the protocols and how each takes a PIN; .../<protocol>/pin;
   .../<protocol>/clients), which calls the core's pairing.* IPC commands that
   every protocol plane answers (see docs/console.md). */
(function () {
  "use strict";
  const { el, api, card, clear, toast } = PF;

  function clientName(c) {
    return c.name || c.label || c.common_name || c.id;
  }

  /** What a protocol's card says; its plugin may set PF.pairingCards[name] (title, off(), pinLabel, pinButton). */
  function looks(name) {
    return Object.assign({
      title: name,
      off: () => ["This protocol is not running on the host (enable it in the config)."],
      pinLabel: "Pairing PIN",
      pinButton: "Pair",
    }, PF.pairingCards[name] || {});
  }

  async function protocolCard(name, pinRule, status) {
    const look = looks(name);
    const c = card(look.title, { id: `pair-${name}`, cls: "pair-card" });
    if (status) c.body.append(PF.statusFacts(status));
    else c.body.append(el("p", { class: "hint protocol-off" }, ...look.off()));
    if (pinRule && status) {  // a PIN is only useful to a protocol that runs
      const input = el("input", { type: "text", inputmode: "numeric", pattern: "[0-9]{4,8}", maxlength: 8, required: true,
        placeholder: "1234", name: "pin", autocomplete: "off", "aria-label": `${name} PIN` });
      const form = el("form", { class: "pin-form", method: "post" },
        el("label", {}, look.pinLabel, input),
        el("button", { type: "submit", class: "primary" }, look.pinButton));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          const r = await api.post(pinRule, { pin: input.value.trim() });
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
      const base = `/api/v1/pairing/${encodeURIComponent(name)}/clients`;
      try {
        const data = await api.get(base);
        clear(list).append(el("h3", {}, "Paired clients"));
        if (!data.clients.length) return list.append(el("p", { class: "empty" }, "No paired clients."));
        list.append(el("div", { class: "table-scroll" }, el("table", { class: "data", id: `clients-${name}` }, el("tbody", {}, data.clients.map((cl) => el("tr", { "data-fingerprint": cl.fingerprint || "" },
          el("td", {}, clientName(cl)),
          el("td", { class: "mono", title: cl.fingerprint || "" }, cl.fingerprint ? `${String(cl.fingerprint).slice(0, 16)}\u2026` : ""),
          el("td", {}, cl.paired_unix_ms ? PF.fmtTime(cl.paired_unix_ms) : ""),
          el("td", { class: "row-actions" }, cl.fingerprint ? el("button", { type: "button", class: "ghost danger revoke", onclick: async () => {
            if (!(await PF.confirm(`Revoke ${clientName(cl)}? It must pair again to stream.`, "Revoke"))) return;
            try {
              await api.del(`${base}/${encodeURIComponent(cl.fingerprint)}`);
              toast("Client revoked.");
            } catch (e) {
              toast(`Revoke failed: ${e.message}`, "error");
            }
            loadClients();
          } }, "Revoke") : "")))))));
      } catch (e) {
        clear(list);
        if (status) list.append(PF.errorBox(e));
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
    let pairing = [], protocols = {};
    try {
      [pairing, protocols] = await Promise.all([
        api.get("/api/v1/pairing"),
        api.get("/api/v1/host").then((h) => h.protocols || {}),
      ]);
    } catch (e) {
      root.append(PF.errorBox(e));
    }
    const found = {};
    for (const p of pairing) if (p.pin_from) found[p.protocol] = `/api/v1/pairing/${encodeURIComponent(p.protocol)}/pin`;
    const names = pairing.map((p) => p.protocol).sort();
    if (!names.length) {
      root.append(card("Pairing").body.parentElement);
      root.lastChild.querySelector(".card-body").append(el("p", { class: "empty" },
        "No protocol plugin offers pairing. Enable one in the host's config."));
    }
    for (const n of names) root.append(await protocolCard(n, found[n], protocols[n]));
    root.append(await tokensCard());
    return null;
  };
})();
