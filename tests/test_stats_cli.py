"""``punktfunk stats`` commands as subprocesses against a real host."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from stats_helpers import plugin_env, wait_for


def pf(host, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "stats", *args], env=host.env,
                          capture_output=True, text=True, timeout=timeout)


def test_record_list_show_export_rm(host_factory, tmp_path: Path) -> None:
    host = host_factory(env=plugin_env())
    r = pf(host, "--once")
    assert r.returncode == 0 and "idle (not recording)" in r.stdout
    r = pf(host, "list")
    assert r.returncode == 0 and "no recordings" in r.stdout
    assert host.call("host.status")["measuring"] is False  # reading never arms
    r = pf(host, "record", "stop")
    assert r.returncode == 0 and "nothing was recording" in r.stderr

    r = pf(host, "record", "start")
    assert r.returncode == 0 and r.stdout.startswith("recording ")
    cid = host.call("stats.status")["id"]
    assert cid in r.stdout
    # long enough that the session is still streaming while the live views below are read (a slow
    # machine takes seconds for the three CLI runs); the recording stops while it streams
    host.call("statstest.session", proto="b", seconds=20.0, fps=60)
    wait_for(lambda: host.call("stats.status")["sample_count"] >= 3, what="windows")
    r = pf(host, "--once")
    assert r.returncode == 0 and f"recording {cid}" in r.stdout and "latest window" in r.stdout
    assert "send_spread" in r.stdout and "Mb/s" in r.stdout
    r = pf(host, "--once", "--json")
    snap = json.loads(r.stdout)
    assert snap["status"]["armed"] is True and snap["latest"]["stages"][0]["name"] == "capture"
    r = pf(host, "record", "stop")
    assert r.returncode == 0 and r.stdout.startswith(f"saved {cid}: ")

    r = pf(host, "list")
    assert r.returncode == 0 and cid in r.stdout and "statsproto_b" in r.stdout and "64x32@60" in r.stdout
    r = pf(host, "list", "--json")
    assert [m["id"] for m in json.loads(r.stdout)] == [cid]
    r = pf(host, "show", cid)
    assert r.returncode == 0
    # the header says what is aggregated over what; the loss totals say whose count they are
    for words in ("each window holds the p50 and p99 of its frames", "median of window p50s", "p95 of window p50s",
                  "median of window p99s", "max of window p99s", "capture", "send_spread", "host fps",
                  "datagrams not sent (host socket) 0"):
        assert words in r.stdout, (words, r.stdout)
    r = pf(host, "show", cid, "--json")
    assert json.loads(r.stdout)["id"] == cid

    r = pf(host, "export", cid)
    assert r.returncode == 0 and json.loads(r.stdout) == host.call("stats.load", id=cid)
    r = pf(host, "export", cid, "--csv")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("t_ms,session_id,fps,")
    assert len(lines) == host.call("stats.load", id=cid)["meta"]["sample_count"] + 1
    out = tmp_path / "cap.csv"
    r = pf(host, "export", cid, "--csv", "-o", str(out))
    assert r.returncode == 0 and out.read_text().splitlines() == lines

    r = pf(host, "rm", cid)
    assert r.returncode == 0 and f"deleted {cid}" in r.stdout
    r = pf(host, "rm", cid)
    assert r.returncode == 1 and "not found" in r.stderr
    for bad in ("../mgmt-token", "..", "/etc/passwd"):
        r = pf(host, "show", bad)
        assert r.returncode == 1 and "not found" in r.stderr
    assert host.call("host.status")["measuring"] is False


def test_list_show_export_read_the_files_when_no_host_runs(host_factory, pf_dirs) -> None:
    host = host_factory(env=plugin_env())
    host.call("stats.start")
    host.call("statstest.session", proto="a", seconds=0.6, fps=60)
    wait_for(lambda: host.call("stats.status")["sample_count"] >= 3 and not host.call("sessions.list"), what="windows")
    cid = host.call("stats.stop")["id"]
    saved = host.call("stats.load", id=cid)
    online = {cmd: pf(host, *cmd).stdout for cmd in (("list",), ("show", cid), ("export", cid, "--csv"))}
    host.stop()
    entries = sorted(p.name for p in (pf_dirs["config"] / "captures").iterdir())
    for cmd, text in online.items():
        r = pf(host, *cmd)
        assert r.returncode == 0 and r.stdout == text, (cmd, r.stderr)
        assert "no host is running; reading the captures in" in r.stderr
    r = pf(host, "export", cid)
    assert r.returncode == 0 and json.loads(r.stdout) == saved
    r = pf(host, "show", "no-such-capture")
    assert r.returncode == 1 and "not found" in r.stderr
    assert sorted(p.name for p in (pf_dirs["config"] / "captures").iterdir()) == entries  # reading wrote nothing


def test_host_down_is_a_clear_error(pf_dirs) -> None:
    from conftest import pf_env

    env = pf_env(pf_dirs, **plugin_env())
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "stats", "--once"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not reachable" in r.stderr


def test_watch_refreshes_in_place_until_ctrl_c(host_factory) -> None:
    host = host_factory(env=plugin_env())
    host.call("stats.start")
    host.call("statstest.session", proto="a", seconds=3, fps=60)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "stats", "--interval", "0.2"],
                            env=host.env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            # a suite started in the background inherits SIGINT ignored; Ctrl-C is the point here
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline and buf.count(b"\x1b[") < 3:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    buf += os.read(master, 65536)
                except OSError:
                    break
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = buf.decode(errors="replace")
    assert rc == 0, text
    assert text.count("\x1b[") >= 3  # cursor moved back up: the block is redrawn, not appended
    assert "recording" in text and "latest window" in text
    assert host.call("stats.status")["armed"] is True  # watching changed nothing
    host.call("stats.stop")
