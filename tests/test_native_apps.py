"""punktfunk/1 apps: the reference client lists the host's ``[[apps]]`` and launches one by name
(``punktfunk client HOST --app NAME``); a real host starts it through host.apps and ends it with
the session, and a session ends with its app."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from app_helpers import group_alive, marker_app, wait_for
from gamestream_helpers import _toml
from test_native_e2e import client_cmd, client_env, run_client, start_host, summary_of

STREAM = ("--json", "--details", "--width", "320", "--height", "180", "--bitrate", "1000")


def _host(host_factory, tmp_path: Path, *apps: dict):
    """A native host with these ``[[apps]]``, pairing open for PIN 4821."""
    tables = "".join("\n[[apps]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in app.items()) for app in apps)
    h = start_host(host_factory, tmp_path, stream=tables)  # after [stream], the last table
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    return h


def test_the_client_lists_the_hosts_apps_with_their_ids(host_factory, tmp_path: Path) -> None:
    from punktfunk_core.apps import app_id

    h = _host(host_factory, tmp_path, marker_app(tmp_path), {"name": "Steam Big Picture", "cmd": ["true"]})
    p = run_client(h, tmp_path, "--pin", "4821", "--list-apps", "--json")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout.strip().splitlines()[-1])
    assert [(a["id"], a["name"]) for a in listed["apps"]] == [
        (1, "Desktop"), (app_id("Marker"), "Marker"), (app_id("Steam Big Picture"), "Steam Big Picture")]
    assert listed["running"] is None
    text = run_client(h, tmp_path, "--list-apps")
    assert text.returncode == 0 and "Steam Big Picture" in text.stdout, text


def test_a_launched_app_runs_after_its_prep_and_the_session_end_ends_its_group_then_undoes(
        host_factory, tmp_path: Path) -> None:
    h = _host(host_factory, tmp_path, marker_app(tmp_path))
    client = subprocess.Popen(client_cmd(h, "--pin", "4821", "--app", "Marker", "--seconds", "60", *STREAM),
                              env=client_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "marker").exists(), 30), "the app did not start"
        assert (tmp_path / "prepared").exists() and not (tmp_path / "undone").exists()
        pgid = int((tmp_path / "pgid").read_text())
        assert group_alive(pgid) and os.getpgid(pgid) == pgid != os.getpgid(0)  # a group of its own
        assert h.call("apps.list")["running"]["name"] == "Marker"
        assert wait_for(lambda: _streaming(h, "Marker"), 30)
        client.send_signal(2)  # Ctrl-C: the client says bye, the session ends
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert summary_of(subprocess.CompletedProcess([], 0, out, err))["frames_decoded"] > 0
    assert wait_for(lambda: not group_alive(pgid)), "the app's process group outlived the session"
    assert wait_for(lambda: (tmp_path / "undone").exists()), "undo did not run"
    assert wait_for(lambda: h.call("apps.list")["running"] is None)


def test_the_operators_quit_ends_the_native_stream_the_group_and_runs_undo(host_factory, tmp_path: Path) -> None:
    h = _host(host_factory, tmp_path, marker_app(tmp_path))
    client = _stream_in_background(h, tmp_path, "--app", "Marker")
    try:
        assert wait_for(lambda: _streaming(h, "Marker"), 30), "the app's stream did not start"
        pgid = int((tmp_path / "pgid").read_text())
        running = h.call("apps.list")["running"]
        assert running["name"] == "Marker" and running["protocol"] == "native", running
        quitting = h.call("apps.quit")["quitting"]  # `punktfunk apps quit`, the console's Quit app
        assert quitting["name"] == "Marker"
        out, err = client.communicate(timeout=30)  # the stream ends with the app: the client returns
    finally:
        if client.poll() is None:
            client.kill()
    assert "quit" in err + out, (out, err)
    assert wait_for(lambda: not group_alive(pgid)), "the app's process group outlived the quit"
    assert wait_for(lambda: (tmp_path / "undone").exists()), "undo did not run"
    assert wait_for(lambda: not h.call("sessions.list")) and h.call("apps.list")["running"] is None


def test_an_app_that_cannot_start_gives_the_client_an_error_and_the_host_stays_ready(host_factory,
                                                                                        tmp_path: Path) -> None:
    h = _host(host_factory, tmp_path, {"name": "Broken", "cmd": [str(tmp_path / "no-such-program")],
                                       "prep": [{"do": ["true"], "undo": ["touch", f"{tmp_path}/undone"]}]})
    p = run_client(h, tmp_path, "--pin", "4821", "--app", "Broken", "--seconds", "3", *STREAM)
    assert p.returncode == 1, (p.returncode, p.stdout)
    assert "launch_failed" in p.stderr and "cannot start" in p.stderr and "not found" in p.stderr, p.stderr
    assert (tmp_path / "undone").exists()  # the prep step was undone
    lines = [ln for ln in h.log().splitlines() if "no-such-program" in ln]
    assert len(lines) == 1 and "cannot start" in lines[0], lines
    st = h.call("host.status")["protocols"]["native"]
    assert st["counters"]["launch_failed"] == 1 and st["counters"].get("sessions", 0) == 0
    # nothing is left half-launched: Desktop streams right away
    s = summary_of(run_client(h, tmp_path, "--seconds", "1.5", *STREAM))
    assert s["frames_decoded"] > 0, s
    # an app the host does not have: the client hears which ones it has
    unknown = run_client(h, tmp_path, "--app", "Nope", "--seconds", "1", *STREAM)
    assert unknown.returncode == 1 and "unknown_app" in unknown.stderr and "'Broken'" in unknown.stderr


def test_an_app_that_exits_by_itself_ends_the_stream(host_factory, tmp_path: Path) -> None:
    h = _host(host_factory, tmp_path, {"name": "Short", "cmd": ["sleep", "4"],
                                       "prep": [{"do": ["true"], "undo": ["touch", f"{tmp_path}/undone"]}]})
    p = run_client(h, tmp_path, "--pin", "4821", "--app", "Short", "--seconds", "40", *STREAM)
    s = summary_of(p)
    assert s["frames_decoded"] > 30, s
    assert "the app 'Short' exited (0)" in s["details"]["host_bye"], s["details"]
    assert (tmp_path / "undone").exists()
    assert h.call("apps.list")["running"] is None and not h.call("sessions.list")
    assert "exited by itself" in h.log()


def _streaming(h, app: str) -> bool:
    """A session of ``app`` runs and has sent frames (the client streams: Ctrl-C now ends a stream)."""
    return any(s.get("details", {}).get("app") == app and s.get("frames_sent", 0) > 10 for s in h.call("sessions.list"))


def _stream_in_background(h, tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(client_cmd(h, "--pin", "4821", "--seconds", "60", *STREAM, *args),
                            env=client_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(client: subprocess.Popen) -> None:
    """Ctrl-C the client; it ends its session cleanly."""
    client.send_signal(2)
    try:
        _out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err


def test_the_plain_desktop_streams_without_taking_the_app_slot(host_factory, tmp_path: Path) -> None:
    """Desktop with no prep steps has nothing to launch: a GameStream client could still launch an app."""
    h = _host(host_factory, tmp_path)
    client = _stream_in_background(h, tmp_path)
    try:
        assert wait_for(lambda: _streaming(h, "Desktop"), 30)
        assert h.call("apps.list")["running"] is None
    finally:
        _stop(client)


def test_a_desktop_with_prep_steps_runs_them_for_the_session_and_undoes_them_after(host_factory,
                                                                                      tmp_path: Path) -> None:
    h = _host(host_factory, tmp_path, {"name": "Desktop", "prep": [{"do": ["touch", f"{tmp_path}/prepared"],
                                                                    "undo": ["touch", f"{tmp_path}/undone"]}]})
    client = _stream_in_background(h, tmp_path)
    try:
        assert wait_for(lambda: _streaming(h, "Desktop"), 30)
        assert (tmp_path / "prepared").exists() and not (tmp_path / "undone").exists()
        assert h.call("apps.list")["running"]["name"] == "Desktop"
    finally:
        _stop(client)
    assert wait_for(lambda: (tmp_path / "undone").exists()), "undo did not run when the session ended"
    assert h.call("apps.list")["running"] is None
