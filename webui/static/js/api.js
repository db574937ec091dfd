/* The console's plumbing: the token, API calls, small DOM helpers, sign-in, boot.
   The token lives in sessionStorage (this tab only) and travels only in the
   Authorization header — never in a URL. */
(function () {
  "use strict";
  const TOKEN_KEY = "punktfunk.token";
  const PF = (window.PF = window.PF || {});
  PF.pages = PF.pages || {};
  /** How each protocol's card on the Pairing page reads: set by the protocol plugin's script (register.script). */
  PF.pairingCards = PF.pairingCards || {};

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }
  PF.ApiError = ApiError;

  PF.token = () => sessionStorage.getItem(TOKEN_KEY);
  PF.setToken = (t) => (t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY));

  /** fetch() with the bearer token; JSON in and out. Throws ApiError with the server's message. */
  async function request(method, path, { body, accept = "json", signal } = {}) {
    const headers = { Accept: accept === "json" ? "application/json" : "*/*" };
    const token = PF.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, signal, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      PF.hostReachable(false, 0);
      throw new ApiError(0, "the console is not reachable");
    }
    PF.hostReachable(resp.status !== 503, resp.status);
    if (resp.status === 401 && path !== "/api/v1/whoami") {
      PF.signOut("Your session has ended; sign in again.");
      throw new ApiError(401, "not signed in");
    }
    if (resp.status === 204) return null;
    const type = resp.headers.get("Content-Type") || "";
    let data = null;
    if (accept === "json" || type.includes("application/json")) {
      data = await resp.json().catch(() => null);
    } else if (accept === "blob") {
      data = await resp.blob();
    } else {
      data = await resp.text();
    }
    if (!resp.ok) {
      const msg = (data && data.error) || `${resp.status} ${resp.statusText}`;
      throw new ApiError(resp.status, msg);
    }
    return data;
  }
  PF.api = {
    get: (p, o) => request("GET", p, o),
    post: (p, body, o) => request("POST", p, { ...o, body: body === undefined ? {} : body }),
    del: (p, o) => request("DELETE", p, o),
    raw: request,
  };

  /** el("div", {class: "x", onclick: fn}, child, "text", ...) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (v === true) node.setAttribute(k, "");
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  PF.el = el;
  PF.clear = (node) => {
    while (node.firstChild) node.firstChild.remove();
    return node;
  };

  /** A card: <section class="card"><header><h2>title</h2>…actions</header>body</section> */
  PF.card = (title, { id, actions = [], cls = "" } = {}) => {
    const body = el("div", { class: "card-body" });
    const head = el("header", { class: "card-head" }, el("h2", {}, title), el("div", { class: "actions" }, actions));
    const node = el("section", { class: `card ${cls}`.trim(), id }, head, body);
    node.body = body;
    node.head = head;
    return node;
  };

  PF.toast = (message, kind = "info") => {
    const box = document.getElementById("toasts");
    const t = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
    box.append(t);
    setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
  };

  /** A confirmation dialog; resolves true when the operator confirms. */
  PF.confirm = (message, okLabel = "Confirm", danger = true) =>
    new Promise((resolve) => {
      const dlg = document.getElementById("confirm");
      dlg.querySelector(".confirm-message").textContent = message;
      const ok = dlg.querySelector(".confirm-ok");
      ok.textContent = okLabel;
      ok.classList.toggle("danger", danger);
      const done = (v) => {
        dlg.close();
        resolve(v);
      };
      ok.onclick = () => done(true);
      dlg.querySelector(".confirm-cancel").onclick = () => done(false);
      dlg.oncancel = () => resolve(false);
      dlg.showModal();
    });

  PF.download = (filename, blob) => {
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };

  /** Repeats fn every ms while the page is shown; returns a stop function. */
  PF.every = (ms, fn) => {
    let timer = null, stopped = false;
    const tick = async () => {
      if (stopped) return;
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) console.warn(e);
      }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  };

  PF.fmtTime = (unixMs) => {
    if (!unixMs) return PFUnits.NO_VALUE;
    const d = new Date(unixMs);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };

/** A status value in words: a key's unit suffix (_s, _ms, _us, _kbps) gives the unit, not the label. */
  PF.statusFact = function (key, v) {
    const U = PFUnits;
    const unit = /_(s|ms|us|kbps)$/.exec(key);
    const label = (unit ? key.slice(0, -unit[0].length) : key).replace(/_/g, " ");
    if (v === null || v === undefined || v === "") return [label, U.NO_VALUE];
    if (typeof v === "boolean") return [label, v ? "yes" : "no"];
    if (typeof v === "number" && unit) {
      const text = { s: U.formatDurationMs(v * 1000), ms: U.formatDurationMs(v), us: U.formatUs(v),
        kbps: U.formatMbps(v / 1000) }[unit[1]];
      return [label, text];
    }
    return [label, String(v)];
  };

  /** A protocol status object as facts; nested objects go into a "details" box. */
  PF.statusFacts = function (status) {
    const scalars = Object.entries(status).filter(([, v]) => v === null || typeof v !== "object");
    const nested = Object.entries(status).filter(([, v]) => v !== null && typeof v === "object");
    const box = el("div", { class: "proto-status" },
      el("dl", { class: "facts" }, scalars.map(([k, v]) => {
        const [label, text] = PF.statusFact(k, v);
        return el("div", { class: "fact", "data-key": k }, el("dt", {}, label),
          el("dd", { class: typeof v === "string" && v.length > 24 ? "mono small" : "" }, text));
      })));
    if (nested.length) {
      box.append(el("details", {}, el("summary", {}, "details"),
        el("pre", { class: "json" }, JSON.stringify(Object.fromEntries(nested), null, 2))));
    }
    return box;
  };

  PF.errorBox = (e) => el("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e));

  // -- sign-in and boot -------------------------------------------------------------------
  PF.signOut = (why) => {
    PF.setToken(null);
    if (PF.stopPage) PF.stopPage();
    PF.stopPage = null;
    showLogin(why || "");
  };

  function showLogin(message) {
    document.getElementById("page").hidden = true;
    document.getElementById("logout").hidden = true;
    const login = document.getElementById("login");
    login.hidden = false;
    document.getElementById("login-error").textContent = message || "";
    document.getElementById("token-input").focus();
  }

  async function whoami() {
    return request("GET", "/api/v1/whoami");
  }

  // -- is the host there? ------------------------------------------------------------------
  // Every answer tells: a 503 (the console is up, the host is not) or no answer at all (the
  // console is gone, and with `punktfunk serve` the host with it). Then a banner says so and
  // every control of the page is switched off, new ones too, until the host answers again.
  const held = new WeakSet();  // controls this switched off (the page's own disabled ones stay as they are)
  const controls = (root) => root.querySelectorAll("button, input, select, textarea");
  const hold = (node) => {
    for (const c of controls(node)) {
      if (!c.disabled) {
        c.disabled = true;
        held.add(c);
      }
    }
  };
  const watcher = new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1) hold(n.parentElement || n);
  });
  PF.hostGone = false;
  PF.hostReachable = function (ok, status) {
    if (ok === !PF.hostGone) return;
    PF.hostGone = !ok;
    const banner = document.getElementById("host-gone");
    const page = document.getElementById("page");
    document.body.classList.toggle("host-gone", PF.hostGone);
    const badge = document.getElementById("host-badge");
    if (PF.hostGone) {
      badge.textContent = status === 503 ? "host not running" : "host gone";
      badge.className = "badge bad";
      banner.querySelector("p").textContent = status === 503
        ? "The host is not running: the console cannot reach it. What this page shows is from before it stopped; " +
          "its controls are off until the host is back."
        : "The console does not answer: the host has stopped (or the connection is gone). What this page shows is " +
          "from before; its controls are off until the host is back.";
      banner.hidden = false;
      hold(page);
      watcher.observe(page, { childList: true, subtree: true });
    } else {
      banner.hidden = true;
      watcher.disconnect();
      for (const c of controls(page)) {
        if (held.has(c)) {
          c.disabled = false;
          held.delete(c);
        }
      }
    }
  };

  async function hostBadge() {
    const badge = document.getElementById("host-badge");
    try {
      const st = await PF.api.get("/api/v1/host");
      badge.textContent = `${st.hostname} \u00b7 ${st.sessions} session${st.sessions === 1 ? "" : "s"}`;
      badge.className = "badge ok";
      badge.title = `punktfunk ${st.version}, pid ${st.pid}`;
    } catch (e) {
      badge.textContent = e.status === 503 ? "host not running" : e.status === 0 ? "host gone" : `host: ${e.message}`;
      badge.className = "badge bad";
      badge.title = e.message;
    }
  }

  async function start() {
    const pageName = document.body.dataset.page;
    const root = document.getElementById("page");
    document.getElementById("login").hidden = true;
    document.getElementById("logout").hidden = false;
    root.hidden = false;
    PF.clear(root);
    if (PF.me && !PF.me.admin) return startDevice(root);
    const stopBadge = PF.every(2000, hostBadge);
    const page = PF.pages[pageName];
    const stopPage = page ? await page(root) : null;
    PF.stopPage = () => {
      stopBadge();
      if (typeof stopPage === "function") stopPage();
    };
  }

  /** A device token reads only the device lane: show what it may see. */
  async function startDevice(root) {
    const c = PF.card("Read-only device access", { id: "device-card" });
    root.append(c);
    c.body.append(el("p", {}, `Signed in as device "${PF.me.name}". Device tokens read only the device routes; `,
      "the console's pages need the admin token."));
    try {
      const info = await PF.api.get("/api/v1/device/info");
      c.body.append(PF.statusFacts(info));
    } catch (e) {
      c.body.append(PF.errorBox(e));
    }
    PF.stopPage = null;
  }

  async function boot() {
    document.getElementById("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = document.getElementById("token-input");
      const token = input.value.trim();
      if (!token) return;
      PF.setToken(token);
      try {
        const me = await whoami();
        input.value = "";
        PF.me = me;
        if (!me.admin) PF.toast("Signed in with a device token: read-only.", "info");
        await start();
      } catch (e) {
        PF.setToken(null);
        showLogin(e.status === 401 ? "That token is not valid." : e.status === 403 ? e.message : `Sign-in failed: ${e.message}`);
      }
    });
    document.getElementById("logout").addEventListener("click", () => PF.signOut("Signed out."));
    if (!PF.token()) return showLogin("");
    try {
      PF.me = await whoami();
      await start();
    } catch (e) {
      PF.setToken(null);
      showLogin(e.status === 401 ? "" : e.message);
    }
  }
  document.addEventListener("DOMContentLoaded", boot);
})();
