"""The console under real gunicorn workers against a real host."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from webui_helpers import UdpSink, admin_token, console_cfg, paths_of, wait_for

from punktfunk_webui.server import ConsoleError, start_console


@pytest.fixture
def console(pf_dirs: dict[str, Path]) -> Iterator[Any]:
    handles: list[Any] = []

    def start(workers: int = 2, **extra: Any) -> Any:
        h = start_console(console_cfg(workers=workers, **extra), paths_of(pf_dirs))
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()


def get(url: str, token: str, **kw: Any) -> requests.Response:
    # a fresh connection per request, so requests spread over the workers
    return requests.get(url, headers={"Authorization": f"Bearer {token}", "Connection": "close"}, timeout=5, **kw)


def post(url: str, token: str) -> requests.Response:
    return requests.post(url, headers={"Authorization": f"Bearer {token}", "Connection": "close"}, timeout=5)


def test_three_workers_share_one_recorder(host_factory: Any, pf_dirs: dict[str, Path], console: Any) -> None:
    host = host_factory()
    c = console(workers=3)
    token = admin_token(paths_of(pf_dirs))
    api = c.url + "api/v1/stats/capture/"
    idle = get(api + "status", token)
    assert idle.status_code == 200 and idle.json()["armed"] is False
    started = post(api + "start", token)
    assert started.status_code == 200 and started.json()["armed"] is True
    starter = started.headers["X-Punktfunk-Worker"]
    seen: dict[str, bool] = {}
    # concurrent requests: a busy sync worker leaves the next connection to another one
    # (one client in a loop may keep landing on the same worker on a loaded machine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):
            for r in pool.map(lambda _i: get(api + "status", token), range(40)):
                seen[r.headers["X-Punktfunk-Worker"]] = r.json()["armed"]
            if len(seen) == 3:
                break
    assert len(seen) == 3, f"requests reached only workers {sorted(seen)}"
    assert all(seen.values()), seen
    assert any(pid != starter for pid in seen)
    # the host's own view agrees
    assert host.call("stats.status")["armed"] is True
    # stop through whichever worker answers: every worker then sees it idle
    assert post(api + "stop", token).status_code in (200, 204)
    for _ in range(20):
        assert get(api + "status", token).json()["armed"] is False


def test_serve_starts_the_console_and_prints_its_url(host_factory: Any, pf_dirs: dict[str, Path]) -> None:
    host = host_factory(args=["--console-port", "0", "--console-workers", "2"], console=True)
    m = wait_for(lambda: re.search(r"punktfunk console: (http://127\.0\.0\.1:\d+/)", host.log()), 20,
                 what="console URL")
    url = m.group(1)
    assert "mgmt-token" in host.log()
    token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
    assert requests.get(url + "healthz", timeout=5).json() == {"status": "ok", "host": "up"}
    st = get(url + "api/v1/host", token).json()
    assert st["pid"] == host.proc.pid
    assert requests.get(url + "api/v1/host", timeout=5).status_code == 401
    assert host.stop() == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "healthz", timeout=2)


def test_console_answers_503_within_2_s_once_the_host_is_gone(host_factory: Any, pf_dirs: dict[str, Path],
                                                              console: Any) -> None:
    host = host_factory()
    c = console(workers=2)
    token = admin_token(paths_of(pf_dirs))
    assert get(c.url + "api/v1/host", token).status_code == 200
    host.stop()
    for url in ("api/v1/host", "api/v1/stats/capture/status", "api/v1/stats/recordings", "api/v1/sessions"):
        t0 = time.monotonic()
        r = get(c.url + url, token)
        assert time.monotonic() - t0 < 2.0
        assert r.status_code == 503 and "not reachable" in r.json()["error"]


def _thread_states(pid: int) -> list[str]:
    """Each thread's state letter from /proc (T: stopped)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return states


def _all_threads_stopped(pid: int) -> bool:
    return all(s in ("T", "t") for s in _thread_states(pid))


def test_console_answers_503_within_2_s_while_the_host_is_frozen(host_factory: Any, pf_dirs: dict[str, Path],
                                                                console: Any) -> None:
    host = host_factory()
    c = console(workers=2)
    token = admin_token(paths_of(pf_dirs))
    os.kill(host.proc.pid, signal.SIGSTOP)
    try:
        # kill() returns before every thread has stopped: wait until the kernel shows them all stopped
        assert wait_for(lambda: _all_threads_stopped(host.proc.pid), 5, what="host stopped")
        for i in range(4):  # more requests than workers: none may hang
            t0 = time.monotonic()
            r = get(c.url + "api/v1/stats/capture/status", token)
            took = time.monotonic() - t0
            assert took < 2.0, (i, took)
            assert r.status_code == 503, (i, r.status_code, r.text, _thread_states(host.proc.pid))
    finally:
        os.kill(host.proc.pid, signal.SIGCONT)
    assert wait_for(lambda: get(c.url + "api/v1/host", token).status_code == 200, 10, what="host back")


def test_metrics_show_a_running_session(host_factory: Any, pf_dirs: dict[str, Path], console: Any) -> None:
    host = host_factory()
    c = console(workers=2)
    token = admin_token(paths_of(pf_dirs))
    sink = UdpSink()
    try:
        host.call("stats.start")  # measuring on: windows carry stage timings
        info = host.call("sessions.loopback", port=sink.port, seconds=8, width=160, height=96, fps=30)

        def scraped() -> str | None:
            sink.drain()
            text = get(c.url + "metrics", token).text
            return text if "punktfunk_stage_latency_p99_seconds{" in text else None

        text = wait_for(scraped, 10, interval=0.3, what="stage latencies in /metrics")
    finally:
        sink.close()
    assert "punktfunk_host_up 1.0" in text
    assert f'session="{info["id"]}"' in text
    assert re.search(r'punktfunk_session_fps\{[^}]*kind="loopback"[^}]*\} (\d+\.\d+)', text)
    assert re.search(r'punktfunk_stage_latency_p99_seconds\{[^}]*stage="encode"', text)
    assert re.search(r"punktfunk_session_target_bytes_per_second\{[^}]*\} 1\.25e\+06", text)  # 10 Mb/s
    sessions = get(c.url + "api/v1/sessions", token).json()
    assert [s["id"] for s in sessions] == [info["id"]]
    # ending the session from the console
    assert post(c.url + f"api/v1/sessions/{info['id']}/stop", token).json() == {"id": info["id"], "stopping": True}
    wait_for(lambda: get(c.url + "api/v1/sessions", token).json() == [], 5, what="session gone")


def test_busy_port_is_a_clear_error(pf_dirs: dict[str, Path], console: Any) -> None:
    first = console(workers=1)
    port = int(first.url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(ConsoleError, match=rf"127\.0\.0\.1:{port}.*console\.port"):
        console(workers=1, port=port)


def test_stop_ends_master_and_workers(pf_dirs: dict[str, Path], console: Any) -> None:
    c = console(workers=2)
    children = subprocess.run(["pgrep", "-P", str(c.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    t0 = time.monotonic()
    c.stop()
    assert time.monotonic() - t0 < 3.5
    assert c.proc.poll() is not None
    for pid in children:
        wait_for(lambda p=pid: not Path(f"/proc/{p}").exists() or "zombie" in Path(f"/proc/{p}/status").read_text(),
                 3, what=f"worker {pid} gone")


def test_punktfunk_console_runs_alone_against_a_running_host(host_factory: Any, pf_dirs: dict[str, Path]) -> None:
    host = host_factory()
    proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "console", "--port", "0", "--workers", "2"],
                            env=host.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # a suite started in the background inherits SIGINT ignored; Ctrl-C is the point here
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        m = re.search(r"punktfunk console: (http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        url = m.group(1)
        # it reads the config as serve does: no -c and no host.toml in the config dir
        assert proc.stdout.readline() == f"punktfunk config: built-in defaults (no {pf_dirs['config'] / 'host.toml'})\n"
        token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
        r = wait_for(lambda: _try_get(url + "api/v1/host", token), 20, interval=0.2, what="console answering")
        assert r.json()["pid"] == host.proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(6) == 0 or proc.returncode in (-signal.SIGINT, 130)
        finally:
            if proc.poll() is None:
                proc.kill()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "healthz", timeout=2)


def _try_get(url: str, token: str) -> requests.Response | None:
    try:
        r = get(url, token)
    except requests.ConnectionError:
        return None
    return r if r.status_code == 200 else None


def test_console_exits_when_its_host_is_killed(host_factory: Any, pf_dirs: dict[str, Path]) -> None:
    host = host_factory(args=["--console-port", "0"], console=True)
    m = wait_for(lambda: re.search(r"punktfunk console: (http://127\.0\.0\.1:\d+/)", host.log()), 20,
                 what="console URL")
    url = m.group(1)
    assert requests.get(url + "healthz", timeout=5).status_code == 200
    host.kill()  # SIGKILL: the host cannot stop its console

    def gone() -> bool:
        try:
            requests.get(url + "healthz", timeout=3)  # /healthz waits up to 1.5 s for the dead host
            return False
        except requests.ConnectionError:
            return True

    wait_for(gone, 15, interval=0.2, what="console to notice its host is gone")


def test_pairing_bridge_serves_every_protocol_through_the_core_pairing_ipc(host_factory: Any, pf_dirs: dict[str, Path],
                                                                           console: Any) -> None:
    host = host_factory()
    c = console(workers=1)
    token = admin_token(paths_of(pf_dirs))
    auth = {"Authorization": f"Bearer {token}"}
    protocols = {p["protocol"]: p for p in get(c.url + "api/v1/pairing", token).json()}
    # every registered protocol is listed, running or not, with how it takes a PIN
    assert protocols["gamestream"]["running"] is False and protocols["gamestream"]["pin_from"] == "client"
    if "native" in host.call("host.status")["protocols"]:
        assert protocols["native"]["running"] is True and protocols["native"]["pin_from"] == "host"
        assert protocols["native"]["pairing"] == {"open": False, "expires_in_s": 0.0}
        assert protocols["native"]["paired"] == 0
        r = get(c.url + "api/v1/pairing/native/clients", token)
        assert r.status_code == 200 and r.json() == {"protocol": "native", "clients": []}
        r = requests.patch(c.url + "api/v1/pairing/native/clients/0123456789abcdef", json={"view_only": True},
                           headers=auth, timeout=5)
        assert r.status_code == 404 and "0123456789abcdef" in r.json()["error"]
    off = requests.post(c.url + "api/v1/pairing/gamestream/pin", json={"pin": "1234"}, headers=auth, timeout=5)
    assert off.status_code == 409 and "not running" in off.json()["error"]
    unknown = get(c.url + "api/v1/pairing/nosuchproto/clients", token)
    assert unknown.status_code == 404 and "nosuchproto" in unknown.json()["error"]
    bad = get(c.url + "api/v1/pairing/Bad.Name/clients", token)
    assert bad.status_code == 404
    r = requests.delete(c.url + "api/v1/pairing/nosuchproto/clients/abcd", headers=auth, timeout=5)
    assert r.status_code == 404 and "nosuchproto" in r.json()["error"]


def test_console_lists_the_apps_and_quits_the_running_one_as_its_protocol_does(host_factory: Any,
                                                                                pf_dirs: dict[str, Path], console: Any,
                                                                                tmp_path: Path) -> None:
    pytest.importorskip("moonlight_python")
    from gamestream_helpers import group_alive, gs_config, launch_marker_app, marker_app

    host = host_factory(config=gs_config(apps=(marker_app(tmp_path),)))
    c = console()
    token = admin_token(paths_of(pf_dirs))
    st = get(c.url + "api/v1/apps", token).json()
    assert [a["name"] for a in st["apps"]] == ["Desktop", "Marker"] and st["running"] is None
    assert st["apps"][1]["cmd"].startswith("sh -c ") and st["apps"][0]["cmd"] == ""
    assert post(c.url + "api/v1/apps/quit", token).json() == {"quitting": None}

    pgid = launch_marker_app(host, tmp_path)  # a real Moonlight launch through GameStream
    running = get(c.url + "api/v1/apps", token).json()["running"]
    assert (running["name"], running["pgid"], running["protocol"]) == ("Marker", pgid, "gamestream")
    assert running["client"] == host.call("pairing.clients", protocol="gamestream")[0]["name"]
    r = post(c.url + "api/v1/apps/quit", token)
    assert r.status_code == 200 and r.json()["quitting"]["name"] == "Marker", r.text
    wait_for(lambda: not group_alive(pgid), 10, what="the app's process group to end")
    wait_for(lambda: (tmp_path / "undone").exists(), 10, what="the undo step")
    wait_for(lambda: get(c.url + "api/v1/apps", token).json()["running"] is None, 10, what="no running app")
    assert host.call("gamestream.status")["app_running"] is False  # the plane's launch ended with it
    # without a token: 401, like every admin route
    assert requests.post(c.url + "api/v1/apps/quit", timeout=5).status_code == 401
