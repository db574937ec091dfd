"""Security by default, checked against real processes: who may use the admin
lane, file permissions of secrets, the IPC socket, secrets in logs and URLs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def wait_console(host, timeout: float = 30.0) -> str:
    """The console URL `punktfunk serve` prints once gunicorn answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"punktfunk console: (\S+)", host.log())
        if m:
            return m.group(1)
        time.sleep(0.2)
    raise AssertionError(f"the console did not start:\n{host.log()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_admin_lane_refuses_non_loopback_addresses_app(host_factory, pf_dirs):
    """The rule itself, through the app: same valid token, loopback vs a LAN address."""
    from punktfunk_core.config import build_schema, validate
    from punktfunk_core.paths import Paths
    from punktfunk_core.plugins import load_plugin_manager

    from punktfunk_webui.app import create_app

    host_factory()
    paths = Paths(pf_dirs["config"], pf_dirs["runtime"])
    from punktfunk_webui.auth import TokenStore

    app = create_app(validate(build_schema(load_plugin_manager()), {}), paths)
    token = TokenStore(paths.config).ensure_admin_token()
    c = app.test_client()
    hdr = {"Authorization": f"Bearer {token}"}
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert c.get("/api/v1/stats/capture/status", headers=hdr, environ_base=local).status_code == 200
    for addr in ("192.168.1.20", "10.0.0.7", "fe80::1", "::ffff:192.168.1.20"):
        r = c.get("/api/v1/stats/capture/status", headers=hdr, environ_base={"REMOTE_ADDR": addr})
        assert r.status_code in (401, 403), (addr, r.status_code)
    assert c.get("/api/v1/stats/capture/status", headers={"Authorization": "Bearer wrong"},
                 environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 401


@pytest.fixture
def netns():
    """A network namespace joined to this one by a veth pair (10.231.77.1 <-> .2)."""
    if not IS_ROOT or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"pfsec{os.getpid()}"
    host_if, ns_if = f"pfh{os.getpid() % 100000}", f"pfn{os.getpid() % 100000}"
    steps = [
        ("ip", "netns", "add", name),
        ("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if),
        ("ip", "link", "set", ns_if, "netns", name),
        ("ip", "addr", "add", "10.231.77.1/30", "dev", host_if),
        ("ip", "link", "set", host_if, "up"),
        ("ip", "netns", "exec", name, "ip", "addr", "add", "10.231.77.2/30", "dev", ns_if),
        ("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"),
        ("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"),
    ]
    for cmd in steps:
        r = _run(*cmd)
        if r.returncode != 0:
            _run("ip", "link", "del", host_if)
            _run("ip", "netns", "del", name)
            pytest.skip(f"cannot set up a network namespace: {' '.join(cmd)}: {r.stderr.strip()}")
    yield name
    _run("ip", "link", "del", host_if)
    _run("ip", "netns", "del", name)


def test_admin_token_refused_from_another_network_real_sockets(host_factory, pf_dirs, netns):
    """A console reachable on a non-loopback address (an operator's choice) still
    refuses the admin token from there: real gunicorn, a real second namespace."""
    port = free_port()
    host = host_factory(config=f'[console]\nbind = "10.231.77.1"\nport = {port}\n', console=True)
    wait_console(host)
    token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
    probe = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
        "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    url = f"http://10.231.77.1:{port}/api/v1/stats/capture/status"
    deadline = time.monotonic() + 20
    while True:
        r = _run("ip", "netns", "exec", netns, sys.executable, "-c", probe, url, token)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.returncode == 0, r.stderr + host.log()
    assert r.stdout.strip() in ("401", "403"), r.stdout


def test_secret_files_and_directories_are_owner_only(host_factory, pf_dirs):
    port = free_port()
    port_base = free_port() // 100 * 100 % 50000 + 10000
    host = host_factory(config=f"[console]\nport = {port}\n[gamestream]\nmdns = false\nport_base = {port_base}\n",
                        args=["--gamestream"], console=True)
    wait_console(host)
    host.call("stats.start")
    time.sleep(0.2)
    host.call("stats.stop")  # nothing recorded; the captures dir exists anyway
    cfg = pf_dirs["config"]
    assert (cfg / "mgmt-token").exists()
    checked = 0
    for path in [cfg, *cfg.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, f"{path}: {oct(mode)}"
        else:
            assert mode & 0o077 == 0, f"{path}: {oct(mode)}"
        checked += 1
    keys = [p for p in cfg.rglob("*") if re.search(r"key|token|secret|\.pem$", p.name)]
    assert keys, "expected key/token files to check"
    assert checked >= 4
    assert stat.S_IMODE((pf_dirs["runtime"]).stat().st_mode) == 0o700


def test_ipc_socket_refuses_other_users(host_factory, pf_dirs):
    if not IS_ROOT:
        pytest.skip("needs root to act as another user")
    host_factory()
    sock_path = pf_dirs["runtime"] / "host.sock"
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1]); print('CONNECTED')\n"
        "except PermissionError:\n    print('EACCES')\n"
    )
    # the base dir is a private tmp dir; let 'nobody' walk to the runtime dir's parent
    os.chmod(pf_dirs["base"], 0o711)
    # a system interpreter: the venv's may live under a directory 'nobody' cannot enter
    py = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
    if py is None:
        pytest.skip("no system python3 that another user can run")
    r = subprocess.run([py, "-c", code, str(sock_path)], capture_output=True, text=True,
                       preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    assert r.stdout.strip() == "EACCES", r.stdout + r.stderr


def test_no_secret_in_logs_or_urls(host_factory, pf_dirs):
    requests = pytest.importorskip("requests")
    port = free_port()
    host = host_factory(config=f"[console]\nport = {port}\n[native]\nport = 0\n", console=True,
                        env={"PUNKTFUNK_LOG_LEVEL": "debug"}, args=["-v"])
    wait_console(host)
    token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(base + "/healthz", timeout=2)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    hdr = {"Authorization": f"Bearer {token}"}
    assert requests.get(base + "/api/v1/stats/capture/status", headers=hdr, timeout=5).status_code == 200
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(base + "/api/v1/stats/capture/status", headers=wrong, timeout=5).status_code == 401
    host.call("pairing.pin", protocol="native", pin="830592", seconds=5)
    page = requests.get(base + "/", timeout=5).text
    assert token not in page
    host.stop()
    logs = host.log()
    assert "native" in logs and "pairing" in logs.lower()  # the log is real and covers the pairing
    assert token not in logs
    assert not re.search(r"(?<!\d)830592(?!\d)", logs), "the pairing PIN was logged"
    for line in logs.splitlines():
        assert "token=" not in line.lower() and "access_token" not in line.lower(), line


def test_bad_network_input_is_counted_in_metrics(host_factory, pf_dirs):
    requests = pytest.importorskip("requests")
    port = free_port()
    host = host_factory(config=f'[console]\nport = {port}\n[native]\nbind = "127.0.0.1"\nport = 0\n', console=True)
    wait_console(host)
    native_port = host.call("host.status")["protocols"]["native"]["port"]
    for payload in (b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\xff\xff" + b"\x00" * 64, b"\xff" * 4096):
        with socket.create_connection(("127.0.0.1", native_port), timeout=5) as s:
            s.sendall(payload)
            try:
                s.recv(100)
            except OSError:
                pass
    token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
    deadline = time.monotonic() + 10
    while True:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"},
                            timeout=5).text
        m = re.search(r'punktfunk_host_events_total\{counter="native\.tls_failed"\} (\d+)', text)
        if (m and int(m.group(1)) >= 3) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert m and int(m.group(1)) >= 3, text
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 401
    assert host.proc.poll() is None
