/* Host: status, config, apps, protocols, plugins, and the console's routes with their lanes. */
(function () {
  "use strict";
  const { el, api, card, clear } = PF;
  const U = window.PFUnits;

  const fact = (label, value, id) => el("div", { class: "fact" }, el("dt", {}, label), el("dd", { id }, value));

  PF.pages.host = async function (root) {
    const status = card("Host", { id: "host-card" });
    const config = card("Configuration", { id: "config-card" });
    const apps = card("Apps", { id: "apps-card" });
    const protocols = card("Protocols", { id: "protocols-card" });
    const plugins = card("Plugins", { id: "plugins-card" });
    const routes = card("Console routes", { id: "routes-card" });
    root.append(status, config, apps, protocols, plugins, routes);

    // the config file: which one, and a reload (as SIGHUP) that says what it applied
    const configFile = el("p", { id: "config-file", class: "mono" }, U.NO_VALUE);
    const reloadResult = el("div", { id: "config-reload-result" });
    const reloadButton = el("button", { id: "config-reload", type: "button" }, "Reload config file");
    const line = (label, items, cls) => el("p", { class: cls }, `${label}: ${items.length ? items.join(", ") : "none"}`);
    reloadButton.addEventListener("click", async () => {
      reloadButton.disabled = true;
      try {
        const a = await api.post("/api/v1/config/reload");
        const notes = a.notes || {};
        clear(reloadResult);
        if (a.refused.length) {
          reloadResult.append(el("p", { class: "error" }, "refused; the running config stays:"),
            ...a.refused.map((r) => el("p", { class: "error mono refused" }, r)));
        } else {
          reloadResult.append(line("applied", a.applied.map((k) => (notes[k] ? `${k} (${notes[k]})` : k)), "applied"),
            line("needs a restart", a.needs_restart, a.needs_restart.length ? "warn-line needs-restart" : "needs-restart"));
        }
      } catch (e) {
        clear(reloadResult).append(PF.errorBox(e));
      } finally {
        reloadButton.disabled = false;
      }
    });
    config.body.append(configFile, reloadButton, reloadResult);

    // the [[apps]] clients can launch, the running one and who launched it, and Quit (as the
    // launching protocol's cancel: its stream ends, then the app's process group, then undo)
    const appsTable = el("div", { id: "apps-list" });
    const appsRunning = el("p", { id: "apps-running" }, U.NO_VALUE);
    const quitButton = el("button", { id: "apps-quit", type: "button", class: "danger", disabled: true }, "Quit app");
    const appsResult = el("div", { id: "apps-result" });
    let runningApp = null;
    quitButton.addEventListener("click", async () => {
      const app = runningApp;
      if (!app) return;
      const ok = await PF.confirm(`Quit ${app.name}? Its stream ends, then the app and what it started.`, "Quit app");
      if (!ok) return;
      quitButton.disabled = true;
      try {
        const a = await api.post("/api/v1/apps/quit");
        clear(appsResult).append(el("p", { class: "applied" }, a.quitting
          ? `quitting ${a.quitting.name}: its stream ended; the app ends within ${U.formatDurationMs(a.quitting.ends_within_s * 1000)}`
          : "no app was running"));
      } catch (e) {
        clear(appsResult).append(PF.errorBox(e));
      }
      await refreshApps();
    });
    apps.body.append(appsTable, appsRunning, quitButton, appsResult);

    async function refreshApps() {
      let st;
      try {
        st = await api.get("/api/v1/apps");
      } catch (e) {
        // the list stays as it was; what runs is unknown while the host is gone
        runningApp = null;
        quitButton.disabled = true;
        clear(appsRunning).append(PF.errorBox(e));
        return;
      }
      const r = st.running;
      runningApp = r && !r.ending ? r : null;
      clear(appsTable).append(el("div", { class: "table-scroll" }, el("table", { class: "data", id: "apps-table" },
        el("thead", {}, el("tr", {}, ["", "app", "id", "command"].map((h) => el("th", {}, h)))),
        el("tbody", {}, st.apps.map((a) => {
          const on = r !== null && r.id === a.id;
          return el("tr", { class: on ? "running" : "", "data-app": a.name },
            el("td", {}, on ? el("span", { class: "badge ok" }, "running") : ""), el("td", {}, a.name),
            el("td", { class: "mono" }, String(a.id)), el("td", { class: "mono small" }, a.cmd || "(the screen as it is)"));
        })))));
      if (r === null) {
        appsRunning.textContent = "No app is running.";
      } else {
        const who = r.protocol ? `${r.protocol}${r.client ? ` (client ${r.client})` : ""}` : "the host";
        const group = r.pgid ? `process group ${r.pgid}` : r.detached ? "detached, not tracked" : "no process";
        appsRunning.textContent = `${r.name} ${r.ending ? "is ending; it ran" : "runs"} since ${PF.fmtTime(r.since * 1000)} ` +
          `(${U.formatDurationMs(r.seconds * 1000)}), launched by ${who}, ${group}.`;
      }
      // the page's own state; while the host is gone the banner holds every control off anyway
      if (!PF.hostGone) quitButton.disabled = r === null || r.ending;
    }

    async function refreshStatus() {
      let st;
      try {
        st = await api.get("/api/v1/host");
      } catch (e) {
        clear(status.body).append(PF.errorBox(e));
        clear(protocols.body);
        throw e;
      }
      clear(status.body).append(el("dl", { class: "facts" },
        fact("name", st.hostname, "host-name"), fact("version", st.version), fact("pid", String(st.pid)),
        fact("up", U.formatDurationMs(st.uptime_ms), "host-uptime"), fact("sessions", String(st.sessions)),
        fact("measuring", st.measuring ? "yes" : "no"),
        fact("console worker", String(st.console ? st.console.worker_pid : U.NO_VALUE))));
      configFile.textContent = st.config || U.NO_VALUE;
      const failed = Object.entries((st.console && st.console.route_failures) || {});
      if (failed.length) status.body.append(...failed.map(([p, why]) => el("p", { class: "error" }, `plugin ${p}: console routes failed: ${why}`)));
      const names = Object.keys(st.protocols || {});
      clear(protocols.body);
      if (!names.length) protocols.body.append(el("p", { class: "empty" }, "No protocol is enabled. Enable one in the config ([<name>] enabled = true) or start with --enable <name>."));
      for (const n of names) {
        protocols.body.append(el("div", { class: "proto", id: `proto-${n}` }, el("h3", {}, n), PF.statusFacts(st.protocols[n])));
      }
    }

    async function loadPlugins() {
      try {
        const list = await api.get("/api/v1/plugins");
        clear(plugins.body).append(el("div", { class: "table-scroll" }, el("table", { class: "data", id: "plugins-table" },
          el("thead", {}, el("tr", {}, ["plugin", "distribution", "version", "hooks"].map((h) => el("th", {}, h)))),
          el("tbody", {}, list.map((p) => el("tr", { class: p.error ? "failed" : "" },
            el("td", {}, p.name), el("td", {}, p.distribution), el("td", {}, p.version),
            el("td", { class: "hooks" }, p.error ? el("span", { class: "error" }, `failed to load: ${p.error}`) : p.hooks.join(", "))))))));
      } catch (e) {
        clear(plugins.body).append(PF.errorBox(e));
      }
      try {
        const r = await api.get("/api/v1/console/routes");
        clear(routes.body).append(
          el("p", { class: "hint" }, "Every route is in exactly one lane: public (no token), device (read-only, device or admin token), admin (admin or plugin token, loopback only by default)."),
          el("div", { class: "table-scroll" }, el("table", { class: "data", id: "routes-table" },
            el("thead", {}, el("tr", {}, ["rule", "methods", "lane", "plugin"].map((h) => el("th", {}, h)))),
            el("tbody", {}, r.routes.map((x) => el("tr", {}, el("td", { class: "mono" }, x.rule),
              el("td", {}, x.methods.filter((m) => m !== "HEAD" && m !== "OPTIONS").join(" ")),
              el("td", {}, el("span", { class: `lane ${x.lane}` }, x.lane)), el("td", {}, x.plugin)))))));
      } catch (e) {
        clear(routes.body).append(PF.errorBox(e));
      }
    }

    loadPlugins();
    return PF.every(3000, async () => {
      await refreshApps();
      await refreshStatus();
    });
  };
})();
