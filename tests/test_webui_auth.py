"""Auth lanes, tokens and host-unreachable behaviour of the console app (Flask test client)."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, jsonify, render_template
from webui_helpers import admin_token, console_cfg, iter_rules, paths_of, sample_url

from punktfunk_core import hookimpl
from punktfunk_core.plugins import load_plugin_manager

from punktfunk_webui import auth
from punktfunk_webui.app import create_app


class RoutesPlugin:
    """A third-party plugin contributing console routes on each lane."""

    @hookimpl
    def console_routes(self, register: Any, ipc: Any) -> None:
        def demo_status() -> Any:
            return jsonify(ok=True)

        def demo_public() -> Any:
            return jsonify(hello="world")

        def demo_device() -> Any:
            return jsonify(read="only")

        register("/api/v1/demo/status", demo_status)
        register("/demo/public", demo_public, lane="public")
        register("/api/v1/demo/device", demo_device, lane="device")


class BadRoutesPlugin:
    @hookimpl
    def console_routes(self, register: Any, ipc: Any) -> None:
        def bad_stats() -> Any:
            return jsonify()

        register("/api/v1/stats/leak", bad_stats, lane="device")


@pytest.fixture
def env(pf_dirs: dict[str, Path]) -> dict[str, Any]:
    paths = paths_of(pf_dirs)
    token = admin_token(paths)
    pm = load_plugin_manager(extra=[(RoutesPlugin(), "demo")])
    app = create_app(console_cfg(), paths, pm=pm)
    return {"paths": paths, "token": token, "app": app, "client": app.test_client(), "pm": pm}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def table(app: Any) -> Any:
    return app.extensions["punktfunk"]["routes"]


def test_every_route_is_classified_into_exactly_one_lane(env: dict[str, Any]) -> None:
    app = env["app"]
    lanes = table(app).by_endpoint
    rules = list(iter_rules(app))
    assert len(rules) > 20  # core + stats plugin + demo plugin
    for rule in rules:
        assert rule.endpoint in lanes, f"route {rule.rule} ({rule.endpoint}) has no lane"
        assert lanes[rule.endpoint].lane in auth.LANES
    # every registered route is in the map exactly once (no lane without a route)
    endpoints = [r.endpoint for r in rules]
    assert sorted(set(endpoints)) == sorted(endpoints)
    assert set(lanes) == set(endpoints)
    # the stats plugin's routes arrived through the hook, all admin
    stats = [r for r in rules if r.rule.startswith("/api/v1/stats")]
    assert len(stats) >= 7
    assert {lanes[r.endpoint].lane for r in stats} == {"admin"}


def test_unauthenticated_request_to_any_non_public_route_gets_401(env: dict[str, Any]) -> None:
    app, client = env["app"], env["client"]
    lanes = table(app).by_endpoint
    checked = 0
    for rule in iter_rules(app):
        if lanes[rule.endpoint].lane == "public":
            continue
        url = sample_url(rule.rule)
        for method in sorted(rule.methods - {"OPTIONS"}):
            for headers in ({}, bearer("not-a-token-" + "x" * 20), {"Authorization": "Basic Zm9vOmJhcg=="}):
                resp = client.open(url, method=method, headers=headers)
                assert resp.status_code == 401, f"{method} {url} {headers}: {resp.status_code}"
                if method != "HEAD":
                    assert resp.is_json and "error" in resp.get_json()
                checked += 1
    assert checked > 60


def test_public_routes_answer_without_a_token(env: dict[str, Any]) -> None:
    client = env["client"]
    for url in ("/", "/performance", "/sessions", "/pairing", "/host", "/demo/public",
                "/static/vendor/uplot/uPlot.iife.min.js", "/static/js/units.js"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        resp.close()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["host"] == "down"


def test_shell_page_carries_no_host_data_and_no_token(env: dict[str, Any]) -> None:
    html = env["client"].get("/performance").get_data(as_text=True)
    assert env["token"] not in html
    assert 'id="login-form"' in html and 'type="password"' in html
    assert "uPlot.iife.min.js" in html


def test_admin_token_file_is_owner_only(env: dict[str, Any]) -> None:
    path = env["paths"].mgmt_token
    assert path.read_text().strip() == env["token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # a second start reads the same token
    assert admin_token(env["paths"]) == env["token"]


def test_admin_token_opens_admin_routes(env: dict[str, Any]) -> None:
    client, token = env["client"], env["token"]
    assert client.get("/api/v1/demo/status", headers=bearer(token)).get_json() == {"ok": True}
    who = client.get("/api/v1/whoami", headers=bearer(token)).get_json()
    assert who == {"role": "admin", "name": "admin", "admin": True}
    # "bearer" is case-insensitive, surrounding blanks ignored
    assert client.get("/api/v1/demo/status", headers={"Authorization": f"bearer  {token} "}).status_code == 200


def test_a_token_differing_in_one_character_is_refused(env: dict[str, Any]) -> None:
    token = env["token"]
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert env["client"].get("/api/v1/demo/status", headers=bearer(wrong)).status_code == 401
    assert env["client"].get("/api/v1/demo/status", headers=bearer(token + "x")).status_code == 401


def test_admin_token_is_refused_from_other_addresses_by_default(env: dict[str, Any]) -> None:
    resp = env["client"].get("/api/v1/demo/status", headers=bearer(env["token"]),
                             environ_base={"REMOTE_ADDR": "192.168.1.20"})
    assert resp.status_code == 403
    assert "loopback" in resp.get_json()["error"]
    # IPv6 loopback and v4-mapped loopback are loopback
    for addr in ("::1", "::ffff:127.0.0.1", "127.0.0.2"):
        ok = env["client"].get("/api/v1/demo/status", headers=bearer(env["token"]), environ_base={"REMOTE_ADDR": addr})
        assert ok.status_code == 200, addr


def test_allow_remote_admin_accepts_other_addresses(env: dict[str, Any]) -> None:
    app = create_app(console_cfg(allow_remote_admin=True), env["paths"], pm=env["pm"])
    resp = app.test_client().get("/api/v1/demo/status", headers=bearer(env["token"]),
                                 environ_base={"REMOTE_ADDR": "192.168.1.20"})
    assert resp.status_code == 200


def test_device_token_reads_only_the_device_allow_list(env: dict[str, Any]) -> None:
    app, client = env["app"], env["client"]
    dev = auth.issue_device_token(env["paths"].config, "living-room-tv")
    assert stat.S_IMODE((env["paths"].config / "device-tokens" / "living-room-tv").stat().st_mode) == 0o600
    who = client.get("/api/v1/whoami", headers=bearer(dev), environ_base={"REMOTE_ADDR": "192.168.1.30"})
    assert who.status_code == 200 and who.get_json()["role"] == "device"
    assert client.get("/api/v1/demo/device", headers=bearer(dev)).get_json() == {"read": "only"}
    lanes = table(app).by_endpoint
    device_rules = sorted(r.rule for r in iter_rules(app) if lanes[r.endpoint].lane == "device")
    assert device_rules == ["/api/v1/demo/device", "/api/v1/device/info", "/api/v1/whoami"]
    for rule in iter_rules(app):
        if lanes[rule.endpoint].lane != "admin":
            continue
        for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
            resp = client.open(sample_url(rule.rule), method=method, headers=bearer(dev))
            assert resp.status_code == 403, f"device token on {method} {rule.rule}: {resp.status_code}"
    # revoking the token takes effect without restarting the console
    assert auth.revoke_token(env["paths"].config, "device", "living-room-tv")
    assert client.get("/api/v1/whoami", headers=bearer(dev)).status_code == 401


def test_no_stats_route_can_join_the_device_lane(env: dict[str, Any]) -> None:
    pm = load_plugin_manager(extra=[(BadRoutesPlugin(), "bad")])
    app = create_app(console_cfg(), env["paths"], pm=pm)
    # /api/v1/stats/ is the stats plugin's namespace, which keeps all of its routes on the admin lane
    assert "bad" in table(app).failed and "namespace of plugin 'stats'" in table(app).failed["bad"]
    assert all(not r.rule.startswith("/api/v1/stats/leak") for r in app.url_map.iter_rules())
    # the console still works
    assert app.test_client().get("/api/v1/whoami", headers=bearer(env["token"])).status_code == 200


def test_two_plugins_registering_one_route_are_named(env: dict[str, Any]) -> None:
    class Clash:
        @hookimpl
        def console_routes(self, register: Any, ipc: Any) -> None:
            def other_status() -> Any:
                return jsonify()

            register("/api/v1/demo/status", other_status)

    pm = load_plugin_manager(extra=[(RoutesPlugin(), "demo"), (Clash(), "clash")])
    app = create_app(console_cfg(), env["paths"], pm=pm)
    failed = table(app).failed
    assert len(failed) == 1
    (why,) = failed.values()
    assert "'demo'" in why and "'clash'" in why


def test_plugin_and_admin_tokens_issued_through_the_api(env: dict[str, Any]) -> None:
    client, token = env["client"], env["token"]
    issued = client.post("/api/v1/tokens/plugin", json={"name": "prometheus"}, headers=bearer(token)).get_json()
    assert issued["kind"] == "plugin" and len(issued["token"]) >= 32
    assert client.get("/metrics", headers=bearer(issued["token"])).status_code == 200
    assert client.get("/api/v1/tokens", headers=bearer(token)).get_json() == {"device": [], "plugin": ["prometheus"]}
    assert client.post("/api/v1/tokens/device", json={"name": "../evil"}, headers=bearer(token)).status_code == 400
    assert client.delete("/api/v1/tokens/plugin/prometheus", headers=bearer(token)).status_code == 204
    assert client.get("/metrics", headers=bearer(issued["token"])).status_code == 401


def test_host_down_gives_503_json_quickly(env: dict[str, Any]) -> None:
    client, token = env["client"], env["token"]
    for url in ("/api/v1/host", "/api/v1/sessions", "/api/v1/plugins", "/api/v1/stats/capture/status",
                "/api/v1/stats/recordings"):
        t0 = time.monotonic()
        resp = client.get(url, headers=bearer(token))
        assert time.monotonic() - t0 < 2.0
        assert resp.status_code == 503, url
        assert "not reachable" in resp.get_json()["error"]
    resp = client.post("/api/v1/sessions/3/stop", headers=bearer(token))
    assert resp.status_code == 503


def test_a_silent_host_socket_still_answers_503_within_2_s(env: dict[str, Any]) -> None:
    """The socket file exists but nobody answers (a hung or SIGSTOPped host)."""
    sock_path = env["paths"].ipc_socket
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))  # bound, never listening or answering
    try:
        t0 = time.monotonic()
        resp = env["client"].get("/api/v1/stats/capture/status", headers=bearer(env["token"]))
        elapsed = time.monotonic() - t0
        assert resp.status_code == 503
        assert elapsed < 2.0, elapsed
    finally:
        dead.close()
        os.unlink(sock_path)


def test_metrics_without_a_host_report_host_down(env: dict[str, Any]) -> None:
    resp = env["client"].get("/metrics", headers=bearer(env["token"]))
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert "punktfunk_host_up 0.0" in resp.get_data(as_text=True)


def test_api_errors_are_json(env: dict[str, Any]) -> None:
    client, token = env["client"], env["token"]
    nf = client.get("/api/v1/nope", headers=bearer(token))
    assert nf.status_code == 404 and "error" in nf.get_json()
    wrong_method = client.get("/api/v1/sessions/1/stop", headers=bearer(token))
    assert wrong_method.status_code == 405 and "error" in wrong_method.get_json()


def test_responses_forbid_caching_of_api_data_and_set_a_csp(env: dict[str, Any]) -> None:
    resp = env["client"].get("/api/v1/whoami", headers=bearer(env["token"]))
    assert resp.headers["Cache-Control"] == "no-store"
    page = env["client"].get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Punktfunk-Worker"] == str(os.getpid())


def _widget_plugin(root: Path, lanes: dict[str, str]) -> Any:
    """A third-party plugin with a blueprint: its own static file, template and page."""
    (root / "static").mkdir(exist_ok=True)
    (root / "static" / "widget.js").write_text("PF.pages.widget = async () => null;\n")
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "widget_report.html").write_text("<p>report {{ n }}</p>")

    class Widget:
        @hookimpl
        def console_routes(self, register: Any, ipc: Any) -> None:
            bp = Blueprint("widget", "widget_plugin", root_path=str(root), static_folder="static",
                           template_folder="templates")

            @bp.route("/api/v1/widget/report")
            def report() -> Any:
                return render_template("widget_report.html", n=3)

            @bp.route("/api/v1/widget/info", methods=["GET", "POST"])
            def info() -> Any:
                return jsonify(ok=True)

            register.blueprint(bp, lanes=lanes)
            register.page("widget", "Widget", "widget.js", bp, order=60)

    return Widget()


def test_a_plugin_blueprint_brings_static_files_templates_a_page_and_a_lane_per_route(env: dict[str, Any],
                                                                                    tmp_path: Path) -> None:
    pm = load_plugin_manager(extra=[(_widget_plugin(tmp_path, {"info": "public"}), "widget")])
    app = create_app(console_cfg(), env["paths"], pm=pm)
    assert not table(app).failed
    lanes = {r.rule: (r.lane, r.plugin) for r in table(app).routes()}
    assert lanes["/api/v1/widget/report"] == ("admin", "widget")  # not named in lanes: admin
    assert lanes["/api/v1/widget/info"] == ("public", "widget")
    assert lanes["/plugins/widget/static/<path:filename>"] == ("public", "widget")
    client, token = app.test_client(), env["token"]
    assert client.get("/api/v1/widget/report").status_code == 401
    report = client.get("/api/v1/widget/report", headers=bearer(token))
    assert report.status_code == 200 and report.get_data(as_text=True) == "<p>report 3</p>"
    assert client.post("/api/v1/widget/info").get_json() == {"ok": True}
    js = client.get("/plugins/widget/static/widget.js")
    assert js.status_code == 200 and "PF.pages.widget" in js.get_data(as_text=True)
    js.close()
    # its page: in every page's nav, after the console's own pages; it loads the plugin's script
    page = client.get("/widget").get_data(as_text=True)
    assert '<script src="/plugins/widget/static/widget.js"></script>' in page
    nav = client.get("/sessions").get_data(as_text=True)
    assert nav.index('href="/host"') < nav.index('href="/widget"')
    assert 'src="/static/js/pages/sessions.js"' in nav and "widget.js" not in nav


def test_a_blueprint_with_one_bad_route_adds_none_of_its_routes(env: dict[str, Any], tmp_path: Path) -> None:
    # a read-write route on the read-only device lane: the whole blueprint is refused, named by its plugin
    pm = load_plugin_manager(extra=[(_widget_plugin(tmp_path, {"info": "device"}), "widget")])
    app = create_app(console_cfg(), env["paths"], pm=pm)
    assert "device-lane route /api/v1/widget/info must be read-only" in table(app).failed["widget"]
    assert not [r for r in app.url_map.iter_rules() if "widget" in r.rule]
    assert app.test_client().get("/widget").status_code == 404


def test_each_protocol_plugin_brings_its_pairing_card_and_stats_brings_the_performance_page(
        env: dict[str, Any]) -> None:
    client = env["client"]
    pairing = client.get("/pairing").get_data(as_text=True)
    cards = ['<script src="/plugins/gamestream/static/pairing-card.js"></script>',
             '<script src="/plugins/native/static/pairing-card.js"></script>']
    assert all(c in pairing for c in cards)
    assert pairing.index('src="/plugins/') < pairing.index('src="/static/js/pages/pairing.js"')  # cards first
    home = client.get("/").get_data(as_text=True)
    assert '<script src="/plugins/stats/static/performance.js"></script>' in home
    assert home.index('href="/performance"') < home.index('href="/sessions"')
    for url in ("/plugins/gamestream/static/pairing-card.js", "/plugins/stats/static/performance.js"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        resp.close()
    assert all(c not in client.get("/host").get_data(as_text=True) for c in cards)
