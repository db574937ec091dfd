"""The host as a systemd user service: the unit `punktfunk service install` writes (checked by
systemd-analyze), and sd_notify from a real `punktfunk serve` on a datagram socket the test owns."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import pf_env


@pytest.fixture
def user_env(pf_dirs):
    """XDG_CONFIG_HOME in the test's directory, and no user manager reachable (so a test never
    enables a unit in the real session of whoever runs the suite)."""
    runtime = pf_dirs["base"] / "xdg-run"
    runtime.mkdir(mode=0o700)
    env = pf_env(pf_dirs, XDG_CONFIG_HOME=str(pf_dirs["base"] / "xdg"), XDG_RUNTIME_DIR=str(runtime),
                 DBUS_SESSION_BUS_ADDRESS=f"unix:path={runtime}/no-bus")
    return env


def punktfunk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def systemd_verify(unit: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return subprocess.run([exe, "--user", "verify", str(unit)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("headless", [False, True], ids=["graphical-session", "headless"])
def test_installed_unit_passes_systemd_analyze_verify(user_env, pf_dirs, headless):
    config = pf_dirs["base"] / "host.toml"
    config.write_text("[stream]\nfps = 30\n")
    done = punktfunk(user_env, "service", "install", "-c", str(config), *(["--headless"] if headless else []))
    unit = Path(user_env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "punktfunk.service"
    assert unit.is_file(), done.stdout + done.stderr
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m punktfunk_core.cli serve -c {config}" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text  # `systemctl --user reload` is serve's SIGHUP reload
    for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=30", "NotifyAccess=main"):
        assert line in text.splitlines()
    assert f"WantedBy={'default.target' if headless else 'graphical-session.target'}" in text
    assert ("PartOf=graphical-session.target" in text) is not headless
    verify = systemd_verify(unit, user_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    # no user manager here: written, and said clearly that it is not enabled
    assert done.returncode == 1
    assert "not enabled" in done.stderr and "systemctl --user enable --now punktfunk.service" in done.stderr


def test_a_broken_unit_fails_the_same_verification(user_env, pf_dirs):
    """The check above can fail: systemd-analyze rejects a unit with a relative ExecStart."""
    unit = pf_dirs["base"] / "punktfunk.service"
    unit.write_text("[Service]\nType=notify\nExecStart=punktfunk-does-not-exist serve\n")
    assert systemd_verify(unit, user_env).returncode != 0


def test_uninstall_removes_the_unit_and_status_says_so(user_env):
    assert punktfunk(user_env, "service", "install").returncode == 1
    unit = Path(user_env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "punktfunk.service"
    assert unit.exists()
    status = punktfunk(user_env, "service", "status")
    assert f"unit file: {unit}" in status.stdout and "systemd user manager: none" in status.stdout
    done = punktfunk(user_env, "service", "uninstall")
    assert not unit.exists() and f"removed {unit}" in done.stdout
    status = punktfunk(user_env, "service", "status")
    assert "not installed" in status.stdout and status.returncode == 1


def test_install_refuses_a_config_file_that_does_not_exist(user_env, pf_dirs):
    done = punktfunk(user_env, "service", "install", "-c", str(pf_dirs["base"] / "nope.toml"))
    assert done.returncode == 2 and "no such file" in done.stderr
    assert not (Path(user_env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "punktfunk.service").exists()


# -- sd_notify from a real host ---------------------------------------------------------
class NotifySocket:
    """The systemd side: a datagram socket receiving sd_notify messages with the sender's pid."""

    def __init__(self, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.dir = tempfile.mkdtemp(prefix="pf-notify-")
        if abstract:
            name = f"pf-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self.env_value = f"{self.dir}/notify"
            self.sock.bind(self.env_value)

    def receive(self, timeout: float = 30.0) -> tuple[dict[str, str], int]:
        """One message as a dict, and the pid of the process that sent it."""
        self.sock.settimeout(timeout)
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = next(struct.unpack("iII", d[:12])[0] for level, kind, d in ancdata
                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
        return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line), pid

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_serve_sends_ready_then_watchdog_and_stopping_on_sigterm(host_factory, abstract):
    notify = NotifySocket(abstract)
    try:
        host = host_factory(env={"NOTIFY_SOCKET": notify.env_value, "WATCHDOG_USEC": "200000"})
        msg, pid = notify.receive()
        assert msg.get("READY") == "1", msg
        assert msg["STATUS"].startswith("serving native"), msg
        assert pid == host.proc.pid
        pings = [notify.receive() for _ in range(3)]
        assert all(m == {"WATCHDOG": "1"} and p == host.proc.pid for m, p in pings), pings
        host.proc.send_signal(signal.SIGTERM)
        msg, pid = notify.receive()
        while msg == {"WATCHDOG": "1"}:
            msg, pid = notify.receive()
        assert msg.get("STOPPING") == "1" and pid == host.proc.pid, msg
        assert host.proc.wait(10) == 0
    finally:
        notify.close()


def test_the_console_child_never_reports_readiness_for_the_host(host_factory):
    """gunicorn speaks sd_notify too; it must not inherit NOTIFY_SOCKET from the host."""
    notify = NotifySocket(abstract=False)
    try:
        host = host_factory(env={"NOTIFY_SOCKET": notify.env_value}, console=True)
        msg, pid = notify.receive()
        assert msg.get("READY") == "1" and "console: http://127.0.0.1:" in msg["STATUS"], msg
        assert pid == host.proc.pid
        host.stop()
        msgs = []
        notify.sock.settimeout(2.0)
        try:
            while True:
                msgs.append(notify.receive(2.0))
        except TimeoutError:
            pass
        assert [m for m, _ in msgs] == [{"STOPPING": "1", "STATUS": "stopping"}], msgs
    finally:
        notify.close()


def test_without_notify_socket_serve_runs_as_before(host_factory):
    host = host_factory()
    assert host.call("host.status")["pid"] == host.proc.pid


def test_log_lines_for_the_journal_carry_a_priority_and_no_time_stamp(pf_dirs):
    """stderr connected to "the journal" (JOURNAL_STREAM naming that very file): one line per event."""
    log_path = pf_dirs["base"] / "journal.log"
    (pf_dirs["base"] / "host.toml").write_text("[native]\nport = 0\n")
    with open(log_path, "wb") as log:
        st = os.fstat(log.fileno())
        proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "--no-console", "-c",
                                 str(pf_dirs["base"] / "host.toml")],
                                env=pf_env(pf_dirs, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"),
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while "stopping" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.3)
                if proc.poll() is None and "punktfunk" in log_path.read_text():
                    proc.send_signal(signal.SIGTERM)  # started and logged: now its stopping lines
        finally:
            proc.send_signal(signal.SIGTERM) if proc.poll() is None else None
            proc.wait(10)
    lines = [line for line in log_path.read_text().splitlines() if line]
    assert lines, "the host logged nothing"
    assert all(line[:1] == "<" and line[2] == ">" and line[1] in "234567" for line in lines), lines
    assert any(line.startswith("<6>punktfunk") for line in lines), lines
    assert not any("\x1b" in line for line in lines)


def test_log_lines_keep_their_time_when_journal_stream_is_only_inherited(pf_dirs):
    """A JOURNAL_STREAM that names another stream (inherited by a shell) changes nothing."""
    (pf_dirs["base"] / "host.toml").write_text("[native]\nport = 0\n")
    proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "--no-console", "-c",
                             str(pf_dirs["base"] / "host.toml")],
                            env=pf_env(pf_dirs, JOURNAL_STREAM="1:1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    lines = [line for line in err.splitlines() if line]
    assert lines and all(line[:2].isdigit() and line[2] == ":" for line in lines), lines
