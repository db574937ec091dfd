"""The stats management API over HTTP: the console app (and a bare Flask app)
against a real host process."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from stats_helpers import DETAIL_B, STAGES_B, plugin_env, wait_for

from punktfunk_core.paths import Paths
from punktfunk_core.plugins import PluginManager

import punktfunk_stats.plugin as stats_plugin
from punktfunk_stats.routes import register_routes

SPEC_ROUTES = {
    ("/api/v1/stats/capture/start", "POST"),
    ("/api/v1/stats/capture/stop", "POST"),
    ("/api/v1/stats/capture/status", "GET"),
    ("/api/v1/stats/capture/live", "GET"),
    ("/api/v1/stats/recordings", "GET"),
    ("/api/v1/stats/recordings/<rid>", "GET"),
    ("/api/v1/stats/recordings/<rid>", "DELETE"),
    ("/api/v1/stats/recordings/<rid>/summary", "GET"),
    ("/api/v1/stats/recordings/<rid>.csv", "GET"),
}
R = "/api/v1/stats/recordings"
TRAVERSAL_PATHS = [
    f"{R}/..", f"{R}/.", f"{R}/a/b", f"{R}/a%2Fb", f"{R}/a%5Cb", f"{R}/a\\b", f"{R}/%2e%2e", f"{R}/%2E%2E",
    f"{R}/..%2Fmgmt-token", f"{R}/%2e%2e%2fmgmt-token", f"{R}/..%2F..%2Fetc%2Fpasswd", f"{R}/%2Fetc%2Fpasswd",
    f"{R}/", f"{R}//etc/passwd", f"{R}/../../mgmt-token", f"{R}/..%252F..%252Fmgmt-token", f"{R}/{'x' * 300}",
    f"{R}/../summary", f"{R}/...csv", f"{R}/a/b/summary",
]


def stats_only_pm() -> PluginManager:
    pm = PluginManager()
    pm.register(stats_plugin, "stats")
    pm.build_registries()
    return pm


@pytest.fixture
def console(host_factory, pf_dirs) -> dict[str, Any]:
    from punktfunk_webui import auth
    from punktfunk_webui.app import create_app

    host = host_factory(env=plugin_env())
    paths = Paths(pf_dirs["config"], pf_dirs["runtime"])
    token = auth.TokenStore(paths.config).ensure_admin_token()
    app = create_app({"console": {}}, paths, pm=stats_only_pm())
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    return {"host": host, "app": app, "client": client, "h": headers, "paths": paths}


def test_routes_registered_on_the_admin_lane_only() -> None:
    seen: list[tuple[str, list[str], str]] = []
    register_routes(lambda rule, view, methods=None, lane="admin": seen.append((rule, methods, lane)), None)
    pairs = {(rule, m) for rule, methods, _ in seen for m in methods}
    assert SPEC_ROUTES <= pairs
    assert {lane for *_, lane in seen} == {"admin"}
    assert all(rule.startswith("/api/v1/stats/") for rule, *_ in seen)


def test_console_app_classifies_every_stats_route_as_admin(console: dict[str, Any]) -> None:
    table = console["app"].extensions["punktfunk"]["routes"]
    stats = [r for r in table.by_endpoint.values() if r.rule.startswith("/api/v1/stats")]
    assert {(r.rule, m) for r in stats for m in r.methods} >= SPEC_ROUTES
    assert {r.lane for r in stats} == {"admin"}
    client = console["client"]
    for rule, method in SPEC_ROUTES:
        url = rule.replace("<rid>", "x")
        resp = client.open(url, method=method)
        assert resp.status_code == 401, (url, method)


def test_full_flow_over_http(console: dict[str, Any]) -> None:
    c, h, host = console["client"], console["h"], console["host"]
    r = c.get("/api/v1/stats/capture/status", headers=h)
    assert r.status_code == 200 and r.get_json()["armed"] is False
    r = c.get("/api/v1/stats/capture/live", headers=h)
    assert r.status_code == 404 and r.get_json() == {"error": "not recording"}
    r = c.post("/api/v1/stats/capture/stop", headers=h)
    assert r.status_code == 204 and r.data == b""
    r = c.post("/api/v1/stats/capture/start", headers=h)
    st = r.get_json()
    assert r.status_code == 200 and st["armed"] is True
    assert {"armed", "sample_count", "started_unix_ms", "elapsed_ms", "kind"} <= set(st)
    host.call("statstest.session", proto="b", seconds=1.0, fps=60)
    wait_for(lambda: host.call("stats.status")["sample_count"] >= 4, what="windows")
    live = c.get("/api/v1/stats/capture/live", headers=h).get_json()
    assert len(live["samples"]) >= 4 and live["meta"]["kind"] == "statsproto_b"
    cut = live["samples"][1]["t_ms"]
    newer = c.get(f"/api/v1/stats/capture/live?since={cut}", headers=h).get_json()
    assert newer["samples"] and all(s["t_ms"] > cut for s in newer["samples"])
    r = c.get("/api/v1/stats/capture/live?since=yesterday", headers=h)
    assert r.status_code == 400 and "error" in r.get_json()
    r = c.post("/api/v1/stats/capture/stop", headers=h)
    meta = r.get_json()
    assert r.status_code == 200 and meta["sample_count"] >= 4
    cid = meta["id"]
    r = c.get("/api/v1/stats/recordings", headers=h)
    assert r.status_code == 200 and [m["id"] for m in r.get_json()] == [cid]
    r = c.get(f"{R}/{cid}", headers=h)
    cap = r.get_json()
    assert r.status_code == 200 and cap["meta"] == meta and len(cap["samples"]) == meta["sample_count"]
    r = c.get(f"{R}/{cid}/summary", headers=h)
    summ = r.get_json()
    assert r.status_code == 200 and [s["name"] for s in summ["stages"]] == STAGES_B
    assert [s["name"] for s in summ["detail"]] == DETAIL_B
    assert set(summ["stages"][0]) == {"name", "windows", "p50_us", "p95_us", "p99_us", "median_p99_us", "max_p99_us"}
    assert set(summ["fps"]) >= {"min", "mean"} and summ["counters"]["send_dropped"] == 0
    r = c.get(f"{R}/{cid}.csv", headers=h)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert cid in r.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == meta["sample_count"] + 1
    assert rows[0][:6] == ["t_ms", "session_id", "fps", "repeat_fps", "mbps", "bitrate_kbps"]
    assert "capture_frame_p50_us" in rows[0] and "send_spread_frame_p50_us" in rows[0] and "send_dropped" in rows[0]
    r = c.delete(f"{R}/{cid}", headers=h)
    assert r.status_code == 204 and r.data == b""
    r = c.delete(f"{R}/{cid}", headers=h)
    assert r.status_code == 404 and r.get_json() == {"error": "recording not found"}
    for url in (f"{R}/{cid}", f"{R}/{cid}/summary", f"{R}/{cid}.csv"):
        r = c.get(url, headers=h)
        assert r.status_code == 404 and "error" in r.get_json(), url


def test_traversal_paths_are_not_found_over_http(console: dict[str, Any]) -> None:
    c, h, paths = console["client"], console["h"], console["paths"]
    before = (paths.config / "mgmt-token").read_text()
    (paths.config / "summary.json").write_text('{"meta": {}, "samples": []}')
    for url in TRAVERSAL_PATHS:
        for method in ("GET", "DELETE"):
            # an empty path segment ("//", also from %2F at the start of an id) is
            # answered by Flask with a 308 to the merged path: follow it
            r = c.open(url, method=method, headers=h, follow_redirects=True)
            assert r.status_code == 404, (method, url, r.status_code)
            assert "error" in r.get_json(), (method, url)
    assert (paths.config / "mgmt-token").read_text() == before
    assert (paths.config / "summary.json").exists()


def test_failed_save_is_500_and_retry_works(console: dict[str, Any]) -> None:
    c, h, host, paths = console["client"], console["h"], console["host"], console["paths"]
    c.post("/api/v1/stats/capture/start", headers=h)
    host.call("statstest.session", proto="a", seconds=0.5, fps=60)
    wait_for(lambda: host.call("stats.status")["sample_count"] >= 1, what="a window")
    capdir = stats_plugin.captures_dir(paths)
    aside = capdir.with_name("captures.aside")
    capdir.rename(aside)
    capdir.write_text("in the way")
    try:
        r = c.post("/api/v1/stats/capture/stop", headers=h)
        assert r.status_code == 500 and "kept in memory" in r.get_json()["error"]
        assert c.get("/api/v1/stats/capture/status", headers=h).get_json()["unsaved"] == 1
    finally:
        capdir.unlink()
        aside.rename(capdir)
    r = c.post("/api/v1/stats/capture/stop", headers=h)
    assert r.status_code == 200 and r.get_json()["sample_count"] >= 1
    assert len(c.get("/api/v1/stats/recordings", headers=h).get_json()) == 1


def test_bare_flask_app_and_host_unreachable(host_factory, pf_dirs, tmp_path: Path) -> None:
    """The views work in any Flask app (no console auth); a host that is down is 503."""
    from punktfunk_core.ipc import IpcClient

    host = host_factory(env=plugin_env())
    app = Flask("t")
    register_routes(lambda rule, view, methods=None, lane="admin": app.add_url_rule(rule, view.__name__, view,
                                                                                  methods=methods),
                    host.ipc)
    c = app.test_client()
    assert c.post("/api/v1/stats/capture/start").status_code == 200
    assert c.get("/api/v1/stats/capture/status").get_json()["armed"] is True
    assert c.post("/api/v1/stats/capture/stop").status_code == 200
    down = Flask("down")
    register_routes(lambda rule, view, methods=None, lane="admin": down.add_url_rule(rule, view.__name__, view,
                                                                                   methods=methods),
                    IpcClient(f"ipc://{tmp_path / 'nobody.sock'}", timeout=0.5))
    r = down.test_client().get("/api/v1/stats/recordings")
    assert r.status_code == 503 and "not reachable" in r.get_json()["error"]
