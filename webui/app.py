"""The console's Flask app factory.

The app holds no host state: every view reaches the host over the IPC channel
(:class:`punktfunk_core.ipc.IpcClient`), so any number of gunicorn workers show
the same host, sessions and recorder. Routes come from two places, both through
the same ``register(rule, view, methods=None, lane="admin")`` callback:

* the console's own routes (pages, host status, sessions, plugins, /metrics),
* every plugin's ``console_routes(register, ipc)`` hook: single routes
  (``register(rule, view, ...)``), Flask blueprints with their own static files
  and templates and a lane per route (``register.blueprint``), console pages
  (``register.page``: the stats plugin's Performance page) and scripts a page
  loads (``register.script``: each protocol's pairing card).

Pairing is one bridge for every protocol (``/api/v1/pairing/...``) over the
core's ``pairing.*`` IPC commands, which every protocol plane answers through
the pairing contract of :class:`punktfunk_core.protocol.ProtocolPlane`.

Each route is put into exactly one auth lane when it is registered (see
:mod:`punktfunk_webui.auth`); a request is checked against its lane before the
view runs, so a view never has to remember to check. Before the lane, every
request (any route, also unknown ones) must name the console in its ``Host``
header (:class:`punktfunk_webui.auth.HostNames`) and carry a body of at most
:data:`MAX_BODY_BYTES`; request JSON is parsed by the core's bounded loader.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, render_template, request, url_for
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Response as WerkzeugResponse

from punktfunk_core import __version__, boundedjson
from punktfunk_core.ipc import DEFAULT_TIMEOUT_S, HostUnreachable, IpcClient, IpcError, host_endpoint
from punktfunk_core.paths import Paths

from punktfunk_webui import auth, metrics

log = logging.getLogger("punktfunk.console")

HERE = Path(__file__).resolve().parent
CORE_PLUGIN = "console"
HEALTH_TIMEOUT_S = 0.5
#: the console's own pages (all the same HTML shell; the page's script draws it), with their place in the nav;
#: plugins add theirs with ``register.page`` (the stats plugin's Performance page comes first)
CORE_PAGES = (("sessions", "Sessions", 20), ("pairing", "Pairing", 30), ("host", "Host", 40))
PAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
#: /api/v1/<plugin>/… and /plugins/<plugin>/… belong to that plugin: no other may add routes there
NAMESPACE = re.compile(r"^/(?:api/v1|plugins)/([^/<]+)(?:/|$)")
PROTOCOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: methods a device-lane route may answer: the lane is read-only
DEVICE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: request bodies are a name, a PIN or a few flags; larger ones are refused unread
MAX_BODY_BYTES = 64 * 1024


class BoundedJSONProvider(DefaultJSONProvider):
    """Request JSON through the core's bounded loader: a body nested too deep or
    holding NaN is a 400 like any other bad JSON, not a RecursionError."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return boundedjson.loads(s, max_bytes=MAX_BODY_BYTES)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One registered route and the lane that guards it."""

    rule: str
    endpoint: str
    methods: tuple[str, ...]
    lane: str
    plugin: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "methods": list(self.methods), "lane": self.lane, "plugin": self.plugin}


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the console shell: its nav entry and the script that draws it."""

    name: str
    title: str
    order: int
    plugin: str
    #: the script's static endpoint and file (Flask's ``static``, or a blueprint's ``<name>.static``)
    script: tuple[str, str]


class Pages:
    """The console's pages and the extra scripts each loads, from the console and the plugins."""

    def __init__(self) -> None:
        self.by_name: dict[str, Page] = {}
        self.scripts: dict[str, list[tuple[str, str]]] = {}

    def ordered(self) -> list[Page]:
        return sorted(self.by_name.values(), key=lambda p: (p.order, p.name))

    def script_urls(self, page: str) -> list[str]:
        """What a page loads after the shell's scripts: the plugins' scripts for it, then its own."""
        return [url_for(endpoint, filename=file) for endpoint, file in
                [*self.scripts.get(page, []), self.by_name[page].script]]


class ConsoleRegister:
    """The ``register`` handed to one plugin's ``console_routes``: a callable for
    single routes, and ``blueprint``/``page``/``script`` for the rest."""

    def __init__(self, table: RouteTable, plugin: str) -> None:
        self.table, self.plugin = table, plugin

    def __call__(self, rule: str, view: Callable[..., Any], methods: list[str] | None = None,
                 lane: str = "admin") -> None:
        self.table.add(self.plugin, rule, view, methods, lane)

    def blueprint(self, bp: Blueprint, lanes: dict[str, str] | None = None, lane: str = "admin") -> None:
        """Register a Flask blueprint: each view on ``lanes[endpoint]`` (``lane`` for the rest, admin unless
        said); its static folder is public at ``/plugins/<plugin>/static/``, its templates are found by name."""
        self.table.add_blueprint(self.plugin, bp, lanes or {}, lane)

    def page(self, name: str, title: str, script: str, bp: Blueprint, order: int = 50) -> None:
        """A console page at ``/<name>`` in the nav, drawn by ``script`` from ``bp``'s static folder
        (register ``bp`` first); the script sets ``PF.pages[name] = async (root) => stop``."""
        self.table.add_page(self.plugin, name, title, (f"{bp.name}.static", script), order)

    def script(self, page: str, script: str, bp: Blueprint) -> None:
        """A script of ``bp``'s static folder that page ``page`` loads before its own
        (a protocol's pairing card: ``PF.pairingCards[protocol] = {...}``)."""
        self.table.pages.scripts.setdefault(page, []).append((f"{bp.name}.static", script))


class RouteTable:
    """The lane of every endpoint; the single source the request guard reads."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.by_endpoint: dict[str, RouteInfo] = {}
        self.failed: dict[str, str] = {}  # plugin -> why its routes are (partly) missing
        self.pages = Pages()
        self.plugins: set[str] = set()  # the loaded plugins, whose namespaces are theirs
        self.page_views: dict[str, Callable[[], str]] = {}

    def register_for(self, plugin: str) -> ConsoleRegister:
        """The ``register`` handed to one plugin."""
        return ConsoleRegister(self, plugin)

    def _check(self, plugin: str, rule: str, wanted: tuple[str, ...], lane: str) -> None:
        if lane not in auth.LANES:
            raise ValueError(f"{plugin}: route {rule!r} has lane {lane!r}; use one of {', '.join(auth.LANES)}")
        if not isinstance(rule, str) or not rule.startswith("/"):
            raise ValueError(f"{plugin}: route {rule!r} must be a path starting with '/'")
        owner = NAMESPACE.match(rule)
        if owner and owner[1] != plugin and owner[1] in self.plugins:
            raise ValueError(f"route {rule} is in the namespace of plugin {owner[1]!r}; "
                             f"plugin {plugin!r} may not add routes there")
        if lane == "device" and not set(wanted) <= DEVICE_METHODS:
            raise ValueError(f"{plugin}: device-lane route {rule} must be read-only (GET), not {', '.join(wanted)}")
        for other in self.app.url_map.iter_rules():
            if other.rule == rule and set(wanted) & (other.methods or set()) - {"HEAD", "OPTIONS"}:
                taken = self.by_endpoint.get(other.endpoint)
                raise ValueError(f"route {' '.join(wanted)} {rule} is registered by both plugin "
                                 f"{taken.plugin if taken else '?'!r} and plugin {plugin!r}")

    def add(self, plugin: str, rule: str, view: Callable[..., Any], methods: list[str] | None,
            lane: str) -> None:
        if not callable(view):
            raise ValueError(f"{plugin}: view for {rule!r} is not callable")
        wanted = tuple(sorted({m.upper() for m in (methods or ["GET"])}))
        self._check(plugin, rule, wanted, lane)
        base = f"{plugin}.{getattr(view, '__name__', 'view')}"
        endpoint, n = base, 1
        while endpoint in self.app.view_functions:
            n += 1
            endpoint = f"{base}_{n}"
        self.app.add_url_rule(rule, endpoint, view, methods=list(wanted))
        self.by_endpoint[endpoint] = RouteInfo(rule, endpoint, wanted, lane, plugin)

    def add_blueprint(self, plugin: str, bp: Blueprint, lanes: dict[str, str], lane: str) -> None:
        if not isinstance(bp, Blueprint):
            raise ValueError(f"{plugin}: {bp!r} is not a flask.Blueprint")
        if bp.has_static_folder:  # beside the console's /static, never over it
            bp.static_url_path = f"/plugins/{plugin}/static"
        # its rules, learnt on a scratch app first: nothing is added unless every route passes
        probe = Flask(bp.import_name, static_folder=None)
        probe.register_blueprint(bp)
        planned: list[tuple[str, str, tuple[str, ...], str]] = []
        for r in probe.url_map.iter_rules():
            short = r.endpoint.split(".", 1)[1]
            wanted = tuple(sorted((r.methods or set()) - {"HEAD", "OPTIONS"}))
            route_lane = "public" if short == "static" else lanes.get(short, lane)
            self._check(plugin, r.rule, wanted, route_lane)
            planned.append((r.rule, r.endpoint, wanted, route_lane))
        unknown = set(lanes) - {e.split(".", 1)[1] for _, e, _, _ in planned}
        if unknown:
            raise ValueError(f"{plugin}: lanes name endpoints blueprint {bp.name!r} does not have: "
                             f"{', '.join(sorted(unknown))}")
        self.app.register_blueprint(bp)
        for rule, endpoint, wanted, route_lane in planned:
            self.by_endpoint[endpoint] = RouteInfo(rule, endpoint, wanted, route_lane, plugin)

    def add_page(self, plugin: str, name: str, title: str, script: tuple[str, str], order: int) -> None:
        if not PAGE_NAME.match(name):
            raise ValueError(f"{plugin}: page name {name!r} must be lower-case letters, digits and '-'")
        if name in self.pages.by_name:
            raise ValueError(f"page {name!r} is registered by both plugin {self.pages.by_name[name].plugin!r} "
                             f"and plugin {plugin!r}")
        pages = self.pages

        def view() -> str:
            return render_template("shell.html", page=name, pages=pages.ordered(), scripts=pages.script_urls(name),
                                   title=title, version=__version__)

        view.__name__ = f"page_{name.replace('-', '_')}"
        self.add(plugin, f"/{name}", view, None, "public")
        pages.by_name[name] = Page(name, title, order, plugin, script)
        self.page_views[name] = view

    def routes(self) -> list[RouteInfo]:
        return sorted(self.by_endpoint.values(), key=lambda r: (r.rule, r.methods))


def json_error(code: int, message: str, **headers: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = code
    for k, v in headers.items():
        resp.headers[k.replace("_", "-")] = v
    return resp


def create_app(config: dict[str, Any], paths: Paths, pm: Any = None) -> Flask:
    """Build one console app. ``pm`` defaults to the standard plugin manager."""
    console_cfg = dict(config.get("console", {}))
    app = Flask(
        "punktfunk_webui",
        static_folder=str(HERE / "static"),
        template_folder=str(HERE / "templates"),
    )
    # '//' in a path is a 404 like any unknown path, not a redirect served before auth runs
    app.url_map.merge_slashes = False
    app.config.update(
        PF_CONFIG=config,
        PF_ALLOW_REMOTE_ADMIN=bool(console_cfg.get("allow_remote_admin", False)),
        SEND_FILE_MAX_AGE_DEFAULT=300,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,  # werkzeug's own check, behind the guard's
    )
    app.json = BoundedJSONProvider(app)
    hosts = auth.HostNames(str(console_cfg.get("bind", "127.0.0.1")), list(console_cfg.get("allowed_hosts", [])))
    ipc = IpcClient(host_endpoint(paths), timeout=DEFAULT_TIMEOUT_S)
    tokens = auth.TokenStore(paths.config)
    if pm is None:
        from punktfunk_core.plugins import load_plugin_manager

        pm = load_plugin_manager()
    table = RouteTable(app)
    table.plugins = set(pm.infos)
    app.extensions["punktfunk"] = {"ipc": ipc, "tokens": tokens, "routes": table, "paths": paths}
    # Flask's own static route: public, carries only the shipped files
    assert app.static_url_path is not None  # Flask sets it with the static folder the console ships
    table.by_endpoint["static"] = RouteInfo(app.static_url_path + "/<path:filename>", "static",
                                            ("GET", "HEAD", "OPTIONS"), "public", CORE_PLUGIN)

    _add_core_routes(table.register_for(CORE_PLUGIN), ipc, table, tokens)
    # one plugin's routes failing does not take the console down: it is named in route_failures
    for failure in pm.call_each("console_routes", lambda plugin: {"register": table.register_for(plugin), "ipc": ipc}):
        table.failed[failure.plugin] = str(failure)

    _install_guard(app, table, tokens, hosts)
    _install_error_handlers(app)
    return app


# -- the request guard -----------------------------------------------------------------
def _refuse_body(code: int = 413, message: str = f"request bodies are limited to {MAX_BODY_BYTES} bytes") -> Response:
    # the body stays unread: stop reading this connection, so the server closes it
    # instead of draining the rest of the body to keep the connection alive
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
    return json_error(code, message)


def _install_guard(app: Flask, table: RouteTable, tokens: auth.TokenStore, hosts: auth.HostNames) -> None:
    allow_remote = app.config["PF_ALLOW_REMOTE_ADMIN"]

    @app.before_request
    def guard() -> Response | None:
        if not hosts.allows(request.headers.get("Host")):
            return json_error(400, "this console answers only to localhost, loopback addresses, its bind address "
                                   "and the names in console.allowed_hosts; the Host header named none of them")
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _refuse_body()
        if request.content_length is None and request.headers.get("Transfer-Encoding"):
            # a body of unknown length (chunked): werkzeug would cut it off silently at the limit
            return _refuse_body(411, "a request body needs a Content-Length (of at most "
                                   f"{MAX_BODY_BYTES} bytes); chunked bodies are not accepted")
        if request.url_rule is None:
            return None  # Flask answers 404/405 itself; no route, nothing to protect
        info = table.by_endpoint.get(request.endpoint or "")
        lane = info.lane if info is not None else "admin"  # unclassified: fail closed
        if lane == "public":
            return None
        caller = tokens.identify(auth.bearer_token(request.headers.get("Authorization")))
        if caller is None:
            return json_error(401, "a bearer token is required (Authorization: Bearer <token>)",
                              WWW_Authenticate='Bearer realm="punktfunk"')
        if caller.is_admin:
            if not allow_remote and not auth.is_loopback(request.remote_addr):
                return json_error(403, "the admin token is accepted only from loopback "
                                       "(set console.allow_remote_admin = true to allow other addresses)")
            g.caller = caller
            return None
        if lane == "device" and request.method in DEVICE_METHODS:
            g.caller = caller
            return None
        return json_error(403, "this device token may use only the read-only device routes")

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["X-Punktfunk-Worker"] = str(os.getpid())
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'none'",
        )
        if request.path.startswith("/api/") or request.path == "/metrics":
            resp.headers["Cache-Control"] = "no-store"
        return resp


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(IpcError)
    def ipc_error(exc: IpcError) -> Response:
        code = exc.code if 400 <= exc.code <= 599 else 500
        return json_error(code, exc.message)

    @app.errorhandler(RequestEntityTooLarge)
    def body_too_large(_exc: RequestEntityTooLarge) -> Response:
        return _refuse_body()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        if request.path.startswith("/api/") or request.path == "/metrics":
            resp = json_error(exc.code or 500, exc.description or exc.name)
            if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
                resp.headers["Allow"] = ", ".join(exc.valid_methods)
            return resp
        return exc.get_response()

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> WerkzeugResponse:
        if isinstance(exc, HTTPException):
            return http_error(exc)
        log.exception("console view failed")
        return json_error(500, f"console error: {type(exc).__name__}: {exc}")


# -- the console's own routes --------------------------------------------------------------
def _add_core_routes(register: Callable[..., None], ipc: IpcClient, table: RouteTable,
                     tokens: auth.TokenStore) -> None:
    for name, title, order in CORE_PAGES:
        table.add_page(CORE_PLUGIN, name, title, ("static", f"js/pages/{name}.js"), order)

    def home() -> str | Response:
        """The first page of the nav (Performance, with the stats plugin)."""
        return table.page_views[table.pages.ordered()[0].name]()

    register("/", home, lane="public")

    # public: a short timeout, so unauthenticated callers cannot hold workers for long
    health_ipc = IpcClient(ipc.endpoint, timeout=HEALTH_TIMEOUT_S)

    def healthz() -> Response:
        try:
            health_ipc.call("host.status")
            host = "up"
        except IpcError:
            host = "down"
        return jsonify({"status": "ok", "host": host})

    register("/healthz", healthz, lane="public")

    # device lane: what a paired device may read (an explicit, short list)
    def whoami() -> Response:
        caller: auth.Caller = g.caller
        return jsonify({"role": caller.role, "name": caller.name, "admin": caller.is_admin})

    def device_info() -> Response:
        st = ipc.call("host.status")
        return jsonify({"hostname": st.get("hostname"), "version": st.get("version"),
                        "protocols": sorted(st.get("protocols", {})), "sessions": st.get("sessions", 0)})

    register("/api/v1/whoami", whoami, lane="device")
    register("/api/v1/device/info", device_info, lane="device")

    # admin lane
    def host_status() -> Response:
        st = ipc.call("host.status")
        st["console"] = {"worker_pid": os.getpid(), "route_failures": table.failed}
        return jsonify(st)

    def sessions_list() -> Response:
        return jsonify(ipc.call("sessions.list"))

    def session_stop(session_id: int) -> Response:
        return jsonify(ipc.call("sessions.stop", id=session_id))

    def plugins_list() -> Response:
        return jsonify(ipc.call("plugins.list"))

    def config_reload() -> Response:
        """Reload the host's config file (as SIGHUP); refused problems are in the answer, not an error."""
        return jsonify(ipc.call("config.reload"))

    def apps_list() -> Response:
        return jsonify(ipc.call("apps.list"))

    def apps_quit() -> Response:
        """Quit the running app as its protocol's cancel does; answered at once (``quitting``)."""
        return jsonify(ipc.call("apps.quit"))

    def console_routes() -> Response:
        return jsonify({"routes": [r.to_dict() for r in table.routes()], "failed": table.failed})

    def tokens_list() -> Response:
        return jsonify(tokens.names())

    def token_issue(kind: str) -> Response:
        body = request.get_json(silent=True) or {}
        name = body.get("name") if isinstance(body, dict) else None
        if kind not in ("device", "plugin"):
            return json_error(404, f"unknown token kind {kind!r} (device or plugin)")
        if not isinstance(name, str):
            return json_error(400, "give the token a name: {\"name\": \"living-room-tv\"}")
        try:
            issue = auth.issue_device_token if kind == "device" else auth.issue_plugin_token
            token = issue(tokens.config_dir, name)
        except ValueError as exc:
            return json_error(400, str(exc))
        return jsonify({"kind": kind, "name": name, "token": token})

    def token_revoke(kind: str, name: str) -> Response:
        if kind not in ("device", "plugin") or not auth.revoke_token(tokens.config_dir, kind, name):
            return json_error(404, f"no {kind} token named {name!r}")
        return Response(status=204)

    # the pairing bridge: every protocol's pairing contract through the core's pairing.* IPC
    def _protocol(name: str) -> str:
        if not PROTOCOL_NAME.match(name):
            raise IpcError(404, f"no protocol {name!r}")
        return name

    def pairing_protocols() -> Response:
        return jsonify(ipc.call("pairing.protocols"))

    def pairing_pin(protocol: str) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            body = {"pin": request.form.get("pin")} if request.form.get("pin") is not None else {}
        if "pin" not in body:
            return json_error(400, "send JSON {\"pin\": \"4821\"} (and \"seconds\" for a pairing window)")
        args = {k: body[k] for k in ("pin", "seconds") if k in body}
        return jsonify(ipc.call("pairing.pin", protocol=_protocol(protocol), **args))

    def pairing_clients(protocol: str) -> Response:
        proto = _protocol(protocol)
        return jsonify({"protocol": proto, "clients": ipc.call("pairing.clients", protocol=proto)})

    def pairing_revoke(protocol: str, fingerprint: str) -> Response:
        return jsonify(ipc.call("pairing.unpair", protocol=_protocol(protocol), fingerprint=fingerprint))

    def pairing_permissions(protocol: str, fingerprint: str) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("view_only"), bool):
            return json_error(400, "send JSON {\"view_only\": true} or {\"view_only\": false}")
        return jsonify(ipc.call("pairing.permissions", protocol=_protocol(protocol), fingerprint=fingerprint,
                                view_only=body["view_only"]))

    def prometheus() -> Response:
        body = metrics.render(ipc)
        return Response(body, mimetype=metrics.CONTENT_TYPE)

    register("/api/v1/host", host_status)
    register("/api/v1/sessions", sessions_list)
    register("/api/v1/sessions/<int:session_id>/stop", session_stop, methods=["POST"])
    register("/api/v1/plugins", plugins_list)
    register("/api/v1/config/reload", config_reload, methods=["POST"])
    register("/api/v1/apps", apps_list)
    register("/api/v1/apps/quit", apps_quit, methods=["POST"])
    register("/api/v1/console/routes", console_routes)
    register("/api/v1/tokens", tokens_list)
    register("/api/v1/tokens/<kind>", token_issue, methods=["POST"])
    register("/api/v1/tokens/<kind>/<name>", token_revoke, methods=["DELETE"])
    register("/api/v1/pairing", pairing_protocols)
    register("/api/v1/pairing/<protocol>/pin", pairing_pin, methods=["POST"])
    register("/api/v1/pairing/<protocol>/clients", pairing_clients)
    register("/api/v1/pairing/<protocol>/clients/<fingerprint>", pairing_revoke, methods=["DELETE"])
    register("/api/v1/pairing/<protocol>/clients/<fingerprint>", pairing_permissions, methods=["PATCH"])
    register("/metrics", prometheus)


__all__ = ["create_app", "RouteInfo", "RouteTable", "HostUnreachable"]
