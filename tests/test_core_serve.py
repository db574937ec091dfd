"""`punktfunk serve` and `punktfunk console` as processes: the signals they
handle, what they do when nothing could start, the directories and files they
create. Real processes, real gunicorn, real signals."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import pf_env
from webui_helpers import run_cli_to_exit, wait_for

REPO = Path(__file__).resolve().parent.parent
#: `console` stops on these; `serve` on the first two (SIGHUP reloads its config: test_core_reload.py)
HANDLED = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
SERVE_STOPS_ON = [signal.SIGTERM, signal.SIGINT]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # a suite started in the background inherits SIGINT ignored; it is tested here
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def _group_of(pid: int) -> list[int]:
    """Live processes of the console's gunicorn: children of ``pid`` and theirs."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,stat="], capture_output=True, text=True).stdout
    procs = [tuple(line.split()) for line in out.splitlines()]
    found, frontier = [], {pid}
    while frontier:
        kids = {int(p) for p, pp, st in procs if int(pp) in frontier and not st.startswith("Z")}
        found += sorted(kids)
        frontier = kids
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _console_url(proc: subprocess.Popen) -> str:
    for line in proc.stdout:  # type: ignore[union-attr]
        m = re.search(r"punktfunk console: (\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no console URL; exit status {proc.wait()}")


def _answers(url: str) -> bool:
    try:
        requests.get(url + "healthz", timeout=2)
        return True
    except requests.ConnectionError:
        return False


@contextlib.contextmanager
def _console_process(host: Any, port: int, workers: int) -> Iterator[tuple[subprocess.Popen, str, list[int]]]:
    """`punktfunk console` against ``host``, answering: (process, URL, its gunicorn pids)."""
    proc = _cli("console", "--port", str(port), "--workers", str(workers), env=host.env)
    try:
        url = _console_url(proc)
        wait_for(lambda: _answers(url), 20, interval=0.2, what="console answering")
        yield proc, url, _group_of(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", HANDLED, ids=lambda s: s.name)
def test_punktfunk_console_stops_its_gunicorn_on_every_signal_it_handles(host_factory: Any, sig: signal.Signals,
                                                                        figures: Any) -> None:
    port = _free_port()
    with _console_process(host_factory(), port, workers=2) as (proc, url, gunicorn):
        assert len(gunicorn) >= 3, gunicorn  # master and two workers
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        wait_for(lambda: not any(_alive(p) for p in gunicorn), 5, what="gunicorn master and workers gone")
        assert not _answers(url)
        assert _port_free(port), "the console port is still held"
        figures(f"gunicorn processes left / console port held after {sig.name}", "0 / no")


def test_a_killed_punktfunk_console_takes_its_gunicorn_with_it(host_factory: Any, figures: Any) -> None:
    port = _free_port()
    with _console_process(host_factory(), port, workers=1) as (proc, _url, gunicorn):
        proc.kill()  # SIGKILL: no handler runs; gunicorn must notice by itself
        proc.wait()
        t0 = time.monotonic()
        wait_for(lambda: not any(_alive(p) for p in gunicorn), 10, what="gunicorn gone after its parent died")
        figures("seconds until gunicorn stopped after punktfunk console was SIGKILLed", round(time.monotonic() - t0, 1))
        assert _port_free(port)


@pytest.mark.parametrize("sig", SERVE_STOPS_ON, ids=lambda s: s.name)
def test_punktfunk_serve_stops_host_and_console_on_every_signal_it_handles(host_factory: Any,
                                                                          sig: signal.Signals) -> None:
    port = _free_port()
    host = host_factory(args=["--console-port", str(port)], console=True)
    m = wait_for(lambda: re.search(r"punktfunk console: (\S+)", host.log()), 20, what="console URL")
    url = m.group(1)
    gunicorn = _group_of(host.proc.pid)
    assert len(gunicorn) >= 3, gunicorn
    host.proc.send_signal(sig)
    assert host.proc.wait(10) == 0, host.log()
    wait_for(lambda: not any(_alive(p) for p in gunicorn), 5, what="gunicorn gone")
    assert not _answers(url)
    assert _port_free(port)


def test_sighup_reloads_serve_instead_of_stopping_it_and_its_console_stays(host_factory: Any) -> None:
    port = _free_port()
    host = host_factory(args=["--console-port", str(port)], console=True)
    m = wait_for(lambda: re.search(r"punktfunk console: (\S+)", host.log()), 20, what="console URL")
    gunicorn = _group_of(host.proc.pid)
    host.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded from" in host.log(), 10, what="the reload's log line")
    # --console-port is kept over the file's console.port: nothing needs a restart
    assert "applied: nothing changed" in host.log() and "needs a restart" not in host.log()
    assert host.proc.poll() is None and all(_alive(p) for p in gunicorn)
    assert _answers(m.group(1))


def test_serve_that_can_start_nothing_exits_with_one_line_saying_what_to_fix(pf_dirs: dict[str, Path]) -> None:
    with socket.socket() as busy_tcp:
        busy_tcp.bind(("127.0.0.1", 0))
        busy_tcp.listen()
        taken = busy_tcp.getsockname()[1]
        config = pf_dirs["base"] / "host.toml"
        config.write_text(f'[native]\nbind = "127.0.0.1"\nport = {taken}\n[console]\nport = {taken}\n')
        rc, out = run_cli_to_exit(["serve", "-c", str(config)], pf_env(pf_dirs))
    assert rc is not None, f"serve kept running with nothing started:\n{out}"
    assert rc == 1, out
    assert "host running" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("punktfunk: "), out
    assert "native" in last and "console" in last and str(taken) in last, last


def test_serve_without_console_and_protocols_by_choice_still_serves_ipc(host_factory: Any) -> None:
    """Nothing was asked for, so nothing failed: an IPC-only host (loopback, stats) is fine."""
    host = host_factory(config="[native]\nenabled = false\n")
    assert host.call("host.status")["protocols"] == {}
    assert host.proc.poll() is None


def test_nested_config_and_runtime_dirs_get_private_parents_under_umask_000(pf_dirs: dict[str, Path]) -> None:
    base = pf_dirs["base"]
    env = pf_env(pf_dirs, PUNKTFUNK_CONFIG_DIR=str(base / "a" / "b" / "cfg"),
                 PUNKTFUNK_RUNTIME_DIR=str(base / "r" / "s" / "run"))
    proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "--no-console"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.umask(0))
    try:
        wait_for(lambda: (base / "r" / "s" / "run" / "host.sock").exists() or proc.poll() is not None, 20,
                 what="host socket")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    for d in ("a", "a/b", "a/b/cfg", "r", "r/s", "r/s/run"):
        mode = stat.S_IMODE((base / d).stat().st_mode)
        assert mode == 0o700, (d, oct(mode), out)


def test_gunicorn_leaves_nothing_in_xdg_runtime_dir(pf_dirs: dict[str, Path]) -> None:
    xdg = pf_dirs["base"] / "xdg"
    xdg.mkdir(mode=0o700)
    env = pf_env(pf_dirs, XDG_RUNTIME_DIR=str(xdg))
    env.pop("PUNKTFUNK_RUNTIME_DIR")  # the default: $XDG_RUNTIME_DIR/punktfunk
    config = pf_dirs["base"] / "host.toml"
    config.write_text("[native]\nport = 0\n")  # never the fixed default port (a real host may hold it)
    proc = _cli("serve", "-c", str(config), "--console-port", "0", env=env)
    assert proc.stdout is not None
    try:
        line = ""
        while "punktfunk console:" not in line:
            line = proc.stdout.readline()
            assert line, "serve ended before its console started"
        time.sleep(1.0)  # gunicorn's master has set up everything it sets up
        assert sorted(p.name for p in xdg.iterdir()) == ["punktfunk"], list(xdg.iterdir())
        assert sorted(p.name for p in (xdg / "punktfunk").iterdir()) == ["host.sock"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:  # a hang is this test's failure, not a host left running
                proc.kill()
                proc.wait()


# -- every file the host creates is listed in docs/security.md --------------------------------
def _documented_files() -> list[tuple[re.Pattern[str], int]]:
    """(path pattern, mode) rows of the table under "## Every file the host creates"."""
    text = (REPO / "docs" / "security.md").read_text()
    section = text.split("## Every file the host creates", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|\s*(0[0-7]{3})\s*\|", line)
        if m:
            pattern = re.escape(m.group(1))
            for placeholder, regex in (("<name>", r"[^/]+"), ("<id>", r"[^/.][^/]*"), ("<dirs>/", r"(?:[^/]+/)*")):
                pattern = pattern.replace(re.escape(placeholder), regex)
            rows.append((re.compile(pattern + "$"), int(m.group(2), 8)))
    return rows


def test_every_file_the_host_creates_is_listed_with_its_mode_in_docs_security(host_factory: Any,
                                                                              pf_dirs: dict[str, Path]) -> None:
    rows = _documented_files()
    assert rows, "docs/security.md has no file table"
    base = 10000 + _free_port() // 100 * 100 % 50000
    host = host_factory(config=f"[console]\nport = {_free_port()}\n[gamestream]\nmdns = false\nport_base = {base}\n",
                        args=["--gamestream"], console=True)
    url = wait_for(lambda: re.search(r"punktfunk console: (\S+)", host.log()), 30, what="console URL").group(1)
    token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
    hdr = {"Authorization": f"Bearer {token}"}
    assert requests.post(url + "api/v1/stats/capture/start", headers=hdr, timeout=5).status_code == 200
    assert requests.post(url + "api/v1/stats/capture/stop", headers=hdr, timeout=5).status_code == 200
    assert requests.get(url + "api/v1/stats/recordings", headers=hdr, timeout=5).status_code == 200  # the index
    for kind in ("device", "plugin"):
        assert requests.post(url + f"api/v1/tokens/{kind}", json={"name": "t"}, headers=hdr, timeout=5).ok
    found = 0
    for root, label in ((pf_dirs["config"], "$PUNKTFUNK_CONFIG_DIR"), (pf_dirs["runtime"], "$PUNKTFUNK_RUNTIME_DIR")):
        for path in [root, *root.rglob("*")]:
            rel = label + ("/" + str(path.relative_to(root)) if path != root else "")
            mode = stat.S_IMODE(path.lstat().st_mode)
            match = [m for pattern, m in rows if pattern.match(rel)]
            assert match, f"{rel} ({oct(mode)}) is not listed in docs/security.md"
            assert mode == match[0], f"{rel} is {oct(mode)}; docs/security.md says {oct(match[0])}"
            found += 1
    assert found >= 12, found


@pytest.mark.parametrize("command", [["serve", "--console-port", "0"], ["console", "--port", "0"], ["config", "check"]],
                         ids=["serve", "console", "config-check"])
def test_an_admin_token_shorter_than_16_characters_stops_the_start_with_one_line(pf_dirs: dict[str, Path],
                                                                                 command: list[str]) -> None:
    pf_dirs["config"].mkdir(mode=0o700)
    token = pf_dirs["config"] / "mgmt-token"
    token.write_text("hunter2\n")
    token.chmod(0o600)
    config = pf_dirs["base"] / "host.toml"
    config.write_text("[native]\nport = 0\n")
    args = [*command, str(config)] if command[0] == "config" else [*command[:1], "-c", str(config), *command[1:]]
    rc, out = run_cli_to_exit(args, pf_env(pf_dirs))
    assert rc is not None, f"started with a 7-character admin token:\n{out}"
    assert rc == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert str(token) in lines[0] and "16" in lines[0], lines
    assert "hunter2" not in out
