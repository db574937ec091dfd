"""punktfunk/1 control plane against a real host: conformance and abuse.

The client side here is written with the wire helpers directly (raw TLS +
framed JSON), so each message the specification names is exercised on its
own; pairing uses the reference client's code in-process."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from test_native_e2e import start_host

from punktfunk_native.client import ClientOptions, NativeClient, PairingFailed
from punktfunk_native.datapath import NativeReceiver, make_probe
from punktfunk_native.identity import client_context
from punktfunk_native.wire import (
    MAX_CONTROL_MESSAGE,
    MessageReader,
    b64d,
    b64e,
    encode_message,
    fingerprint,
    session_keys,
)


class Raw:
    def __init__(self, port: int, identity=None, source: str = "127.0.0.1") -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        self.sock = client_context(identity).wrap_socket(raw)
        self.reader = MessageReader()
        self.pending: list = []

    def send(self, msg: dict) -> None:
        self.sock.sendall(encode_message(msg))

    def recv(self, timeout: float = 10.0, skip_pings: bool = True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                m = self.pending.pop(0)
                if skip_pings and m["type"] == "ping":
                    self.send({"type": "pong", "id": m["id"], "t_us": m["t_us"]})
                    continue
                return m
            assert time.monotonic() < deadline, "no message in time"
            self.sock.settimeout(0.2)
            self.pending.extend(self.reader.read(self.sock))

    def closed(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sock.settimeout(0.2)
                self.pending.extend(self.reader.read(self.sock))
            except (EOFError, ConnectionError, ssl.SSLError):
                return True
        return False


def paired_client(h, tmp_path: Path) -> NativeClient:
    h.call("pairing.pin", protocol="native", pin="2468")
    c = NativeClient(ClientOptions(host="127.0.0.1", port=h.native_port, pin="2468", config_dir=tmp_path / "cli"))
    c.ensure_paired()
    return c


def open_session(h, c: NativeClient, **req):
    r = Raw(h.native_port, c.identity)
    host_cert = r.sock.getpeercert(binary_form=True)
    assert host_cert is not None
    host_fp = fingerprint(host_cert)
    r.send({"type": "hello", "versions": ["punktfunk/1"]})
    w = r.recv()
    assert w["type"] == "welcome" and w["paired"] is True and w["version"] == "punktfunk/1"
    priv = X25519PrivateKey.generate()
    nonce = os.urandom(16)
    r.send({"type": "session_request", "width": 320, "height": 180, "fps": 30, "codec": "h264", "bitrate_kbps": 1000,
            "client_pub": b64e(priv.public_key().public_bytes_raw()), "client_nonce": b64e(nonce), **req})
    acc = r.recv()
    assert acc["type"] == "session_accept", acc
    shared = priv.exchange(X25519PublicKey.from_public_bytes(b64d(acc["host_pub"], "host_pub")))
    k_h2c, k_c2h = session_keys(shared, nonce, b64d(acc["host_nonce"], "n"), host_fp, c.identity.fingerprint)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.sendto(os.urandom(60), ("127.0.0.1", acc["udp_port"]))  # junk probe: ignored and counted
    udp.sendto(make_probe(k_c2h, 0), ("127.0.0.1", acc["udp_port"]))
    started = r.recv()
    assert started["type"] == "session_started", started
    return r, udp, acc, k_h2c, started


def test_console_pairing_bridge_opens_pairing_and_sets_permissions(host_factory, tmp_path):
    from punktfunk_core.paths import Paths

    from punktfunk_webui.app import create_app
    from punktfunk_webui.auth import TokenStore

    h = start_host(host_factory, tmp_path)
    paths = Paths(config=h.dirs["config"], runtime=h.dirs["runtime"])
    token = TokenStore(paths.config).ensure_admin_token()
    app = create_app({"console": {"enabled": True, "bind": "127.0.0.1", "port": 0, "workers": 1}}, paths)
    web = app.test_client()
    assert web.post("/api/v1/pairing/native/pin", json={"pin": "7777"}).status_code in (401, 403)
    bad = web.post("/api/v1/pairing/native/pin", json={"pin": "77x"}, headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and "digits" in bad.get_json()["error"]
    ok = web.post("/api/v1/pairing/native/pin", json={"pin": "7777", "seconds": 60},
                  headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.get_json()["pairing_open"] is True
    assert h.call("host.status")["protocols"]["native"]["pairing_open"] is True
    # and the PIN opened that way really pairs
    c = NativeClient(ClientOptions(host="127.0.0.1", port=h.native_port, pin="7777", config_dir=tmp_path / "cli"))
    c.ensure_paired()
    (client,) = h.call("pairing.clients", protocol="native")
    assert client["fingerprint"] == c.identity.fingerprint and client["view_only"] is False
    # the operator makes it view-only through the same bridge; the store keeps it
    fp = client["fingerprint"]
    r = web.patch(f"/api/v1/pairing/native/clients/{fp[:12]}", json={"view_only": True},
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.get_json()["view_only"] is True
    stored = json.loads((h.dirs["config"] / "native" / "paired-clients.json").read_text())
    assert stored[fp]["view_only"] is True
    assert web.patch(f"/api/v1/pairing/native/clients/{fp}", json={"view_only": "yes"},
                     headers={"Authorization": f"Bearer {token}"}).status_code == 400


def test_session_control_messages(host_factory, tmp_path):
    h = start_host(host_factory, tmp_path, timeout=5.0)
    c = paired_client(h, tmp_path)
    r, udp, acc, k_h2c, started = open_session(h, c, fec_percent=50)
    assert acc["fec_percent"] == 50 and acc["cipher"] == "AES-128-GCM" and acc["report_interval_ms"] == 2000
    # video arrives and decrypts with the derived key
    rx = NativeReceiver(k_h2c)
    udp.settimeout(3)
    units = []
    while len(units) < 5:
        u = rx.push(udp.recv(4096))
        if u is not None:
            units.append(u)
    assert units[0].keyframe and [u.au_seq for u in units] == list(range(5))
    # bitrate change is applied to the running encoder
    r.send({"type": "set_bitrate", "bitrate_kbps": 2500})
    m = r.recv()
    assert m == {"type": "bitrate_changed", "bitrate_kbps": 2500}
    sid = started["session_id"]
    info = [s for s in h.call("sessions.list") if s["id"] == sid][0]
    assert info["bitrate_kbps"] == 2500 and info["details"]["cipher"] == "AES-128-GCM"
    # keyframe request: an IDR follows within a few frames
    seen_key = False
    r.send({"type": "keyframe_request"})
    deadline = time.monotonic() + 3
    while not seen_key and time.monotonic() < deadline:
        u = rx.push(udp.recv(4096))
        seen_key = bool(u and u.keyframe)
    assert seen_key
    # the host pings us (keepalive) and answers our ping (RTT)
    r.send({"type": "ping", "id": 99, "t_us": 5})
    got = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not {"ping", "pong"} <= {m["type"] for m in got}:
        got.append(r.recv(skip_pings=False))
        if got[-1]["type"] == "ping":
            r.send({"type": "pong", "id": got[-1]["id"], "t_us": got[-1]["t_us"]})
    assert {"type": "pong", "id": 99, "t_us": 5} in got and any(m["type"] == "ping" for m in got)
    # a bad report value is a protocol error: session ends, host answers error and closes
    r.send({"type": "report", "packets_lost": -5})
    m = r.recv()
    assert m["type"] == "error" and m["code"] == "protocol_error"
    assert r.closed()
    deadline = time.monotonic() + 5
    while any(s["id"] == sid for s in h.call("sessions.list")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert h.call("host.status")["protocols"]["native"]["counters"]["probes_rejected"] >= 1
    udp.close()


def test_clean_teardown_with_bye(host_factory, tmp_path):
    h = start_host(host_factory, tmp_path)
    c = paired_client(h, tmp_path)
    r, udp, _acc, _k, started = open_session(h, c)
    r.send({"type": "bye", "reason": "user quit"})
    assert r.closed()
    deadline = time.monotonic() + 5
    while h.call("sessions.list"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "client said bye (user quit)" in h.log()
    udp.close()


def test_abuse_of_the_control_port_never_hurts_the_host(host_factory, tmp_path):
    h = start_host(host_factory, tmp_path)
    port = h.native_port
    # 1. not TLS at all
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(os.urandom(3000))
    s.close()
    # 2. TLS 1.2 is refused
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    # 3. an oversized length prefix closes the connection before any body is read
    r = Raw(port)
    r.sock.sendall(struct.pack("!I", MAX_CONTROL_MESSAGE + 1))
    m = r.recv()
    assert m["type"] == "error" and m["code"] == "protocol_error" and r.closed()
    # 4. unknown version
    r = Raw(port)
    r.send({"type": "hello", "versions": ["punktfunk/9"]})
    m = r.recv()
    assert m["code"] == "unsupported_version" and "punktfunk/1" in m["message"] and r.closed()
    # 5. an unpaired client may not stream
    r = Raw(port)
    r.send({"type": "hello", "versions": ["punktfunk/1"]})
    assert r.recv()["paired"] is False
    r.send({"type": "session_request", "width": 320, "height": 180})
    assert r.recv()["code"] == "not_paired" and r.closed()
    # 6. a forged pairing attempt with garbage SPAKE2 data while pairing is open
    h.call("pairing.pin", protocol="native", pin="1357")
    r = Raw(port)
    r.send({"type": "hello", "versions": ["punktfunk/1"]})
    r.recv()
    r.send({"type": "pair_start", "spake": b64e(os.urandom(33)), "client_cert": b64e(b"not a cert")})
    assert r.recv()["code"] == "protocol_error" and r.closed()
    # 7. a client certificate the host never paired is counted and may not stream
    from punktfunk_native.identity import load_or_create_identity

    stranger = load_or_create_identity(tmp_path / "stranger", "client", "stranger")
    r = Raw(port, stranger)
    r.send({"type": "hello", "versions": ["punktfunk/1"]})
    assert r.recv()["paired"] is False
    r.send({"type": "session_request", "width": 320, "height": 180})
    assert r.recv()["code"] == "not_paired" and r.closed()
    # the host is still fine and still pairs a real client with the open PIN
    st = h.call("host.status")["protocols"]["native"]
    assert st["counters"]["protocol_errors"] >= 2 and st["counters"]["tls_failed"] >= 2
    assert st["counters"]["tls_unpaired"] == 1 and st["counters"]["sessions"] == 0
    c = NativeClient(ClientOptions(host="127.0.0.1", port=port, pin="1357", config_dir=tmp_path / "cli"))
    c.ensure_paired()
    # and a wrong PIN through the library raises PairingFailed with the host's reason
    h.call("pairing.pin", protocol="native", pin="1357")
    c2 = NativeClient(ClientOptions(host="127.0.0.1", port=port, pin="9999", config_dir=tmp_path / "cli2"))
    with pytest.raises(PairingFailed, match="wrong PIN"):
        c2.ensure_paired()


def test_unpair_revokes_the_client(host_factory, tmp_path):
    import subprocess
    import sys

    h = start_host(host_factory, tmp_path)
    c = paired_client(h, tmp_path)
    r, udp, _acc, _k, _started = open_session(h, c)
    r.send({"type": "bye"})
    udp.close()
    fp = c.identity.fingerprint
    out = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "native", "unpair", fp[:12]], env=h.env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and fp[:16] in out.stdout, out.stderr
    assert h.call("pairing.clients", protocol="native") == []
    # the revoked certificate is no longer recognised: the client is told to pair again
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "cli"))
    p = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(h.native_port),
                        "--seconds", "1", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and "does not recognise this client" in p.stderr, p.stderr
    from punktfunk_core.ipc import IpcError

    with pytest.raises(IpcError) as e:
        h.call("pairing.unpair", protocol="native", fingerprint=fp[:12])
    assert e.value.code == 404
    # with a PIN the client pairs again by itself
    h.call("pairing.pin", protocol="native", pin="1122")
    p = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(h.native_port),
                        "--pin", "1122", "--seconds", "1", "--json", "--width", "320", "--height", "180"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert len(h.call("pairing.clients", protocol="native")) == 1


def test_pairing_cli_lists_every_protocol_and_makes_a_client_view_only(host_factory, tmp_path):
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "pairing", *args], env=h.env,
                              capture_output=True, text=True, timeout=30)

    h = start_host(host_factory, tmp_path)
    fp = paired_client(h, tmp_path).identity.fingerprint
    out = cli("list")
    assert out.returncode == 0, out.stderr
    assert "native: 1 paired (PIN window from the host)" in out.stdout and "gamestream: not running" in out.stdout
    assert fp[:16] in out.stdout and "view only" not in out.stdout
    out = cli("view-only", "native", fp[:10], "on")
    assert out.returncode == 0 and "view only" in out.stdout, out.stderr
    assert h.call("pairing.clients", protocol="native")[0]["view_only"] is True
    listed = json.loads(cli("list", "--json").stdout)
    assert listed["clients"]["native"][0]["view_only"] is True
    bad = cli("view-only", "native", "abc", "on")  # too short to name a client
    assert bad.returncode == 1 and "8 hex digits" in bad.stderr
    off = cli("unpair", "gamestream", fp)
    assert off.returncode == 1 and "not running" in off.stderr


def test_client_refuses_a_host_whose_certificate_changed(host_factory, tmp_path):
    import json
    import subprocess
    import sys

    h = start_host(host_factory, tmp_path)
    paired_client(h, tmp_path)
    known_path = tmp_path / "cli" / "native" / "known-hosts.json"
    known = json.loads(known_path.read_text())
    entry = known[f"127.0.0.1:{h.native_port}"]
    entry["fingerprint"] = "00" * 32  # as if a different machine answered on that address
    known_path.write_text(json.dumps(known))
    conns = h.call("host.status")["protocols"]["native"]["counters"]["connections"]
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "cli"))
    p = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(h.native_port),
                        "--pin", "2468", "--seconds", "1", "--json"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and "certificate of 127.0.0.1" in p.stderr and "changed" in p.stderr, p.stderr
    assert p.stdout == ""
    time.sleep(0.3)
    st = h.call("host.status")["protocols"]["native"]
    assert st["counters"]["connections"] == conns + 1 and st["counters"]["sessions"] == 0


def test_busy_host_refuses_clearly(host_factory, tmp_path):
    import subprocess
    import sys

    h = host_factory(config='[host]\nmax_sessions = 1\n'
                            '[native]\nbind = "127.0.0.1"\nport = 0\n[stream]\nencoder = "x264"\n')
    deadline = time.monotonic() + 15
    while "native" not in h.call("host.status")["protocols"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    h.native_port = h.call("host.status")["protocols"]["native"]["port"]
    c = paired_client(h, tmp_path)
    r, udp, _acc, _k, _started = open_session(h, c)
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "cli"))
    p = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(h.native_port),
                        "--seconds", "1", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "busy" in p.stderr and "max_sessions" in p.stderr, p.stderr
    assert h.call("host.status")["protocols"]["native"]["counters"]["refused_busy"] == 1
    r.send({"type": "bye"})
    udp.close()
