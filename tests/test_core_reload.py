"""Reloading a running host's config file: SIGHUP to `punktfunk serve`, `punktfunk config
reload`, the console's POST /api/v1/config/reload. Real host processes, real signals,
real sockets: what is live changes, what needs a restart is said and keeps running as it
was, and a broken file is refused with `config check`'s lines."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import requests
from webui_helpers import admin_token, console_cfg, paths_of, run_cli_to_exit, wait_for

from punktfunk_core.plugins import load_plugin_manager

from punktfunk_webui.server import start_console

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins"))  # the test-only input backend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _app_names(host: Any) -> list[str]:
    return [a["name"] for a in host.call("apps.list")["apps"]]


STEAM = '[[apps]]\nname = "Steam"\ncmd = ["steam", "-bigpicture"]\n'


def test_sighup_applies_stats_settings_and_apps_and_the_host_keeps_serving(host_factory: Any) -> None:
    host = host_factory(config="[stats]\nmax_samples = 100\n")
    assert host.call("stats.status")["max_samples"] == 100
    assert _app_names(host) == ["Desktop"]
    host.config_path.write_text(host.config_path.read_text().replace("max_samples = 100", "max_samples = 250")
                                + STEAM)
    host.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: host.call("stats.status")["max_samples"] == 250, 10, what="the new stats.max_samples")
    assert _app_names(host) == ["Desktop", "Steam"]
    wait_for(lambda: "config reloaded from" in host.log(), 5, what="the reload's log line")
    assert f"config reloaded from {host.config_path}: applied: apps, stats.max_samples" in host.log()
    assert host.proc.poll() is None, "SIGHUP stopped the host"


def test_config_reload_prints_the_answer_and_a_port_change_needs_a_restart(host_factory: Any,
                                                                           pf_dirs: dict[str, Path]) -> None:
    old_port, new_port = _free_port(), _free_port()
    base = f'[native]\nbind = "127.0.0.1"\nport = {old_port}\nfec_percent = 20\n'
    host = host_factory(config=base)
    assert host.call("host.status")["protocols"]["native"]["port"] == old_port
    host.config_path.write_text(base.replace(f"port = {old_port}", f"port = {new_port}")
                                .replace("fec_percent = 20", "fec_percent = 35") + STEAM)
    rc, out = run_cli_to_exit(["config", "reload"], host.env)
    assert rc == 0, out
    assert out.strip() == (f"{host.config_path}: applied: apps, native.fec_percent (applies to new sessions); "
                           "needs a restart: native.port")
    # the running config keeps the old port: the host still listens there, and says so
    assert host.call("host.status")["protocols"]["native"]["port"] == old_port
    assert _listening(old_port) and not _listening(new_port)
    assert _app_names(host) == ["Desktop", "Steam"]
    # asked again, the port is still pending and nothing else changed
    rc, out = run_cli_to_exit(["config", "reload", "--json"], host.env)
    assert rc == 0 and json.loads(out) == {"file": str(host.config_path), "applied": [],
                                           "needs_restart": ["native.port"], "refused": [], "notes": {}}


def test_a_broken_file_is_refused_with_config_checks_lines_and_the_old_config_stays(host_factory: Any) -> None:
    host = host_factory(config="[stats]\nmax_samples = 100\n")
    good = host.config_path.read_text()
    host.config_path.write_text(good.replace("max_samples = 100", "max_samples = 5\nbogus = 1") + STEAM)
    rc_check, check = run_cli_to_exit(["config", "check", str(host.config_path)], host.env)
    assert rc_check == 2 and len(check.strip().splitlines()) == 2, check
    rc, out = run_cli_to_exit(["config", "reload"], host.env)
    assert rc == 2
    lines = out.strip().splitlines()
    assert lines[:-1] == check.strip().splitlines()  # the same lines as `config check`, then the summary
    assert lines[-1] == f"{host.config_path}: refused (2 problem(s)); the running config stays"
    assert host.call("stats.status")["max_samples"] == 100 and _app_names(host) == ["Desktop"]
    # SIGHUP with the same file: logged, refused, the host keeps running as it was
    host.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: host.log().count("refused; the running config stays") >= 2, 10, what="the refusal logged")
    assert check.strip().splitlines()[0] in host.log()
    assert host.proc.poll() is None and host.call("stats.status")["max_samples"] == 100


def test_the_consoles_reload_route_reloads_and_answers_with_what_it_did(host_factory: Any,
                                                                        pf_dirs: dict[str, Path]) -> None:
    host = host_factory(config="[stats]\nmax_samples = 100\n")
    paths = paths_of(pf_dirs)
    console = start_console(console_cfg(workers=1), paths)
    try:
        url = console.url + "api/v1/config/reload"
        assert requests.post(url, timeout=5).status_code == 401  # the admin lane
        host.config_path.write_text(host.config_path.read_text().replace("max_samples = 100", "max_samples = 300"))
        r = requests.post(url, headers={"Authorization": f"Bearer {admin_token(paths)}"}, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json() == {"file": str(host.config_path), "applied": ["stats.max_samples"], "needs_restart": [],
                            "refused": [], "notes": {}}
        assert host.call("stats.status")["max_samples"] == 300
    finally:
        console.stop()


def test_input_switches_reach_running_sessions_on_reload(pf_dirs: dict[str, Path], tmp_path: Path) -> None:
    """[input] keyboard = false on reload: a running session's sink drops new key presses
    (counted as disabled) but still lets go of a key it holds; mouse input goes on."""
    import pf_input_recorder

    from punktfunk_core import config as configmod
    from punktfunk_core.host import Host
    from punktfunk_core.inputevents import Key, PointerMove
    from punktfunk_core.inputsink import open_input_sink
    from punktfunk_core.reload import reload_config
    from punktfunk_core.stages import StreamSpec

    pm = load_plugin_manager(extra=[(pf_input_recorder, "pf_input_recorder")])
    path = tmp_path / "host.toml"
    path.write_text('[input]\nbackend = "recording"\n')
    host = Host(configmod.load(path, pm), pm, paths_of(pf_dirs))
    host.config_request = str(path)
    sink = open_input_sink(pm.stages, host.settings.input, StreamSpec(width=320, height=180, fps=30))
    try:
        assert sink.submit(Key(code=0x41, down=True))
        path.write_text('[input]\nbackend = "recording"\nkeyboard = false\n')
        answer = reload_config(host)
        assert answer["applied"] == ["input.keyboard"] and answer["needs_restart"] == []
        assert host.settings.input.keyboard is False
        assert not sink.submit(Key(code=0x42, down=True))
        assert sink.submit(Key(code=0x41, down=False)), "a held key must still be released"
        assert sink.submit(PointerMove(dx=3, dy=4))
        assert sink.counters()["dropped_disabled"] == 1
    finally:
        sink.close()


def test_a_fifo_in_place_of_the_config_file_is_refused_at_once_on_reload(host_factory: Any) -> None:
    host = host_factory(config="[stats]\nmax_samples = 100\n")
    host.config_path.unlink()
    os.mkfifo(host.config_path)  # nobody will ever write to it
    # a reload that waited for a writer would outlast the CLI's 2 s IPC bound: exit 1, "not answering"
    rc, out = run_cli_to_exit(["config", "reload"], host.env, timeout=10)
    assert rc == 2, out
    assert out.strip().splitlines()[0] == f"{host.config_path}: is not a regular file"
    assert host.call("stats.status")["max_samples"] == 100
