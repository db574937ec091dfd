"""GameStream plumbing in a real host: opt-in, CLI/IPC/console PIN entry, bad input, mDNS."""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import pf_env
from gamestream_helpers import gs_config, start_client, wait_ready

from punktfunk_core.ipc import IpcError


def test_off_by_default(host_factory) -> None:
    host = host_factory(config="")
    with pytest.raises(IpcError) as e:
        host.call("gamestream.status")
    assert e.value.code == 409
    assert "gamestream" not in host.call("host.status")["protocols"]


@pytest.mark.parametrize("flag", [["--gamestream"], ["--enable", "gamestream"]])
def test_serve_flag_enables_it_and_warns_about_plain_http(host_factory, flag) -> None:
    host = host_factory(config="[gamestream]\nport_base = 0\nmdns = false\n", args=flag)
    st = wait_ready(host)
    assert set(st["ports"]) == {"http", "https", "rtsp", "video", "audio", "control"}
    assert all(isinstance(p, int) and p > 0 for p in st["ports"].values())
    assert "gamestream" in host.call("host.status")["protocols"]
    assert re.search(r"WARNING .*pairing runs over plain HTTP", host.log())


def test_config_section_is_validated(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[gamestream]\nenabled = true\nfec_percent = 400\nbogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "config", "check", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "gamestream.fec_percent" in r.stderr and "gamestream.bogus" in r.stderr


def _cli(host, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "gamestream", *args],
                          capture_output=True, text=True, env=pf_env(host.dirs), timeout=60)


def test_cli_pin_and_status(host_factory, tmp_path) -> None:
    host = host_factory(config=gs_config())
    wait_ready(host)
    r = _cli(host, "pin", "1234")
    assert r.returncode == 1 and "no client is waiting" in r.stderr
    proc = start_client("pair", host, tmp_path / "client", "--pin", "4321")
    try:
        deadline = time.monotonic() + 30
        while not host.call("gamestream.status")["pairing"] and time.monotonic() < deadline:
            time.sleep(0.05)
        r = _cli(host, "status")
        assert r.returncode == 0 and "waiting for a PIN" in r.stdout
        r = _cli(host, "pin", "4321")
        assert r.returncode == 0 and "pairing" in r.stdout
        out, _ = proc.communicate(timeout=60)
        assert json.loads(out.strip().splitlines()[-1])["ok"] is True
    finally:
        if proc.poll() is None:
            proc.kill()
    r = _cli(host, "status", "--json")
    st = json.loads(r.stdout)
    assert len(st["paired_clients"]) == 1
    r = _cli(host, "unpair", "--all")
    assert r.returncode == 0 and "removed 1" in r.stdout
    assert host.call("gamestream.status")["paired_clients"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_console_pin_route_is_admin_only(host_factory, tmp_path) -> None:
    pytest.importorskip("punktfunk_webui.server")
    port = _free_port()
    host = host_factory(config=gs_config(), args=["--console-port", str(port), "--console-workers", "1"], console=True)
    wait_ready(host)
    url = f"http://127.0.0.1:{port}/api/v1/pairing/gamestream/pin"
    deadline = time.monotonic() + 30
    token = None
    while time.monotonic() < deadline:
        try:
            token = (host.dirs["config"] / "mgmt-token").read_text().strip()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            break
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    assert token, host.log()[-2000:]

    def post(pin: str, auth: str | None) -> tuple[int, dict]:
        req = urllib.request.Request(url, data=json.dumps({"pin": pin}).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {auth}"} if auth else {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body or b"{}")
            except ValueError:
                return e.code, {}

    assert post("1234", None)[0] in (401, 403)
    assert post("1234", "wrong-token")[0] in (401, 403)
    code, body = post("1234", token)
    assert code == 409 and "waiting" in body["error"]
    proc = start_client("pair", host, tmp_path / "client", "--pin", "2468")
    try:
        while not host.call("gamestream.status")["pairing"] and time.monotonic() < deadline + 30:
            time.sleep(0.05)
        code, body = post("2468", token)
        assert code == 200 and body["ok"] is True
        out, _ = proc.communicate(timeout=60)
        assert json.loads(out.strip().splitlines()[-1])["ok"] is True
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_input_is_counted_and_dropped(host_factory) -> None:
    host = host_factory(config=gs_config())
    ports = wait_ready(host)["ports"]
    rnd = secrets.token_bytes
    # RTSP: garbage, an oversized header, and a valid request with no app running
    for payload in (rnd(300), b"X" * 70000, b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq: 1\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", ports["rtsp"]), timeout=5) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                s.recv(4096)
            except OSError:
                pass
    # HTTP: bad queries and unknown commands
    for path in ("/serverinfo?a=%ff%fe", "/serverinfo?" + "a=1&" * 5000,
                 "/pair?uniqueid=x&phrase=getservercert&salt=zz", "/nope"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}{path}", timeout=5).read()
        except urllib.error.HTTPError:
            pass
    with socket.create_connection(("127.0.0.1", ports["http"]), timeout=5) as s:
        s.sendall(rnd(200) + b"\r\n\r\n")
        try:
            s.recv(100)
        except OSError:
            pass
    # HTTPS: not TLS at all, and TLS without a certificate
    with socket.create_connection(("127.0.0.1", ports["https"]), timeout=5) as s:
        s.sendall(rnd(500))
        try:
            s.recv(100)
        except OSError:
            pass
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, OSError)):
        with socket.create_connection(("127.0.0.1", ports["https"]), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET /applist HTTP/1.1\r\nHost: x\r\n\r\n")
                if not s.recv(100):
                    raise OSError("closed")
    # UDP: pings of the wrong size and unknown payloads; ENet garbage
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for port in (ports["video"], ports["audio"]):
        for n in (0, 1, 19, 21, 1500):
            u.sendto(rnd(n), ("127.0.0.1", port))
        u.sendto(rnd(20), ("127.0.0.1", port))
    for n in (1, 4, 48, 400):
        u.sendto(rnd(n), ("127.0.0.1", ports["control"]))
    u.close()
    time.sleep(1.0)
    st = host.call("gamestream.status")
    c = st["counters"]
    assert c.get("rtsp_bad", 0) >= 2 and c.get("rtsp_unexpected", 0) >= 1, c
    assert c.get("http_bad", 0) >= 3, c
    assert c.get("tls_rejected", 0) >= 2, c
    assert c.get("ping_bad", 0) >= 8 and c.get("ping_unexpected", 0) >= 2, c
    assert host.proc.poll() is None
    # and the host still serves
    body = urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/serverinfo?uniqueid=1", timeout=5).read()
    assert b"<appversion>7.1.431.-1</appversion>" in body


def test_mdns_advertises_nvstream(host_factory) -> None:
    pytest.importorskip("zeroconf")
    import zeroconf  # as a module name, so its classes are types

    host = host_factory(config=gs_config(mdns=True))
    ports = wait_ready(host)["ports"]
    found: list = []

    class Listener(zeroconf.ServiceListener):
        def add_service(self, zc, type_, name):
            info = zc.get_service_info(type_, name, timeout=2000)
            if info is not None:
                found.append(info)

        def update_service(self, zc, type_, name):
            pass

        def remove_service(self, zc, type_, name):
            pass

    zc = zeroconf.Zeroconf()
    try:
        zeroconf.ServiceBrowser(zc, "_nvstream._tcp.local.", Listener())
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not any(i.port == ports["http"] for i in found):
            time.sleep(0.2)
    finally:
        zc.close()
    assert any(i.port == ports["http"] for i in found), [(i.name, i.port) for i in found]


def test_mdns_off_switch(host_factory) -> None:
    host = host_factory(config=gs_config(mdns=False))
    wait_ready(host)
    assert host.call("gamestream.status")["ports"]["http"] > 0
    assert "mDNS: advertising" not in host.log()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pings=st.lists(st.binary(max_size=40), min_size=1, max_size=8),
       rtsp=st.one_of(st.binary(min_size=1, max_size=200), st.builds(
           lambda m, h, b: f"{m} rtsp://x RTSP/1.0\r\n{h}\r\n\r\n".encode(errors="replace") + b,
           st.sampled_from(["OPTIONS", "DESCRIBE", "SETUP", "ANNOUNCE", "PLAY", "TEARDOWN", "get"]),
           st.text(max_size=40), st.binary(max_size=40))),
       query=st.text(max_size=80))
def test_fuzzed_input_on_live_ports_is_counted_and_dropped(host_factory, pings, rtsp, query) -> None:
    host = _fuzz_host(host_factory)
    ports = host.gs_ports
    before = host.call("gamestream.status")["counters"]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for p in pings:
        u.sendto(p, ("127.0.0.1", ports["video"]))
    u.close()
    with socket.create_connection(("127.0.0.1", ports["rtsp"]), timeout=5) as s:
        s.sendall(rtsp)
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(4096)
        except OSError:
            pass
    url = f"http://127.0.0.1:{ports['http']}/serverinfo?{urllib.parse.quote(query, safe='=&%')}"
    try:
        body = urllib.request.urlopen(url, timeout=10).read()
        assert b"<root status_code=" in body
    except urllib.error.HTTPError as e:
        assert e.code in (400, 414)
    # every datagram ends up counted as a bad or an unexpected ping (no app is running)
    want = sum(1 for p in pings)
    deadline = time.monotonic() + 5
    while True:
        after = host.call("gamestream.status")["counters"]
        got = sum(after.get(k, 0) - before.get(k, 0) for k in ("ping_bad", "ping_unexpected"))
        if got >= want or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert got == want
    rt = sum(after.get(k, 0) - before.get(k, 0) for k in ("rtsp_bad", "rtsp_unexpected", "rtsp_io_errors"))
    assert rt == 1, (rtsp[:80], after)
    assert host.proc.poll() is None


_FUZZ: dict = {}


def _fuzz_host(host_factory):
    # one host for all examples of the test (the fixture is per test function)
    key = id(host_factory)
    if key not in _FUZZ:
        _FUZZ.clear()
        h = host_factory(config=gs_config())
        h.gs_ports = wait_ready(h)["ports"]
        _FUZZ[key] = h
    return _FUZZ[key]


def test_host_stops_promptly_while_a_client_waits_for_its_pin(host_factory, tmp_path) -> None:
    host = host_factory(config=gs_config())
    wait_ready(host)
    proc = start_client("pair", host, tmp_path / "client")
    try:
        deadline = time.monotonic() + 30
        while not host.call("gamestream.status")["pairing"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host.call("gamestream.status")["pairing"]
        t0 = time.monotonic()
        assert host.stop(timeout=10) == 0
        assert time.monotonic() - t0 < 5
        out, _ = proc.communicate(timeout=30)
        assert json.loads(out.strip().splitlines()[-1])["ok"] is False
    finally:
        if proc.poll() is None:
            proc.kill()
