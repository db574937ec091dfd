"""punktfunk_core.tls on real loopback sockets: the handshake accepts any client certificate
and names it by fingerprint; the connection behaves like a socket for http.server and the
control loop, and every wait is bounded by the timeout the caller set."""

from __future__ import annotations

import datetime
import hashlib
import json
import socket
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from punktfunk_core.tls import HandshakeFailed, TlsConnection, TlsServer, cert_fingerprint


def self_signed(directory: Path, name: str, cn: str = "NVIDIA GameStream Client", kind: str = "ec",
                days: int = 30, ca: bool = False, names: int = 0) -> tuple[Path, Path, str]:
    """A self-signed certificate and key in ``directory``; returns (cert, key, fingerprint).

    ``kind``: ec, rsa, rsa1024 or ed25519; ``days`` < 0 makes it expired; ``names`` adds that
    many DNS names (a large certificate)."""
    key: Any = {"ec": lambda: ec.generate_private_key(ec.SECP256R1()),
                "rsa": lambda: rsa.generate_private_key(65537, 2048),
                "rsa1024": lambda: rsa.generate_private_key(65537, 1024),
                "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)) if days > 0 else \
        (now + datetime.timedelta(days=days - 1), now + datetime.timedelta(days=days))
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(f"device-{i}.example") for i in range(names)]), critical=False)
    cert = builder.sign(key, None if kind == "ed25519" else hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def client_ctx(cert: tuple[Path, Path, str] | None = None, max_version: ssl.TLSVersion | None = None,
               weak_keys: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if weak_keys:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets this client present an RSA-1024 certificate
    if max_version is not None:
        ctx.maximum_version = max_version
    if cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def client_hello() -> bytes:
    """The first flight of a real TLS client (Python's ssl)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx().wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def send_and_hang_up(port: int, data: bytes) -> None:
    """Send ``data`` to a loopback port, close our side, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass


class Listener:
    """Accepts connections on loopback and runs ``handle(conn)`` for each on its own thread;
    what each handshake gave (a TlsConnection's fingerprint or the HandshakeFailed) is queued."""

    def __init__(self, server: TlsServer, handle: Any = None, timeout: float = 5.0) -> None:
        self.server, self.handle, self.timeout = server, handle, timeout
        self.results: list[Any] = []
        self.done = threading.Condition()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        t0 = time.monotonic()
        try:
            conn = self.server.accept(raw, self.timeout)
            result: Any = conn
            if self.handle is not None:
                self.handle(conn)
        except HandshakeFailed as exc:
            raw.close()
            result = exc
        with self.done:
            self.results.append((result, time.monotonic() - t0))
            self.done.notify_all()

    def wait(self, n: int, timeout: float = 15.0) -> list[Any]:
        with self.done:
            assert self.done.wait_for(lambda: len(self.results) >= n, timeout), self.results
            return list(self.results)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    d = tmp_path_factory.mktemp("certs")
    return {"host": self_signed(d, "host", "host", kind="rsa"), "a": self_signed(d, "a"), "b": self_signed(d, "b"),
            "c": self_signed(d, "c", kind="rsa")}


def server(certs, min_version: str = "1.3", require: bool = False) -> TlsServer:
    return TlsServer(certs["host"][0], certs["host"][1], min_version=min_version, require_client_cert=require,
                     session_id=b"test")


def test_certificates_with_one_subject_are_all_accepted_and_told_apart_by_fingerprint(certs) -> None:
    lst = Listener(server(certs, "1.2", require=True), handle=lambda c: c.close())
    for name in ("a", "b", "c"):
        with client_ctx(certs[name]).wrap_socket(socket.create_connection(("127.0.0.1", lst.port))) as s:
            s.recv(1)  # the server closes after the handshake
    got = [r for r, _ in lst.wait(3)]
    assert all(isinstance(r, TlsConnection) for r in got), got
    assert sorted(r.peer_fingerprint for r in got) == sorted(certs[n][2] for n in ("a", "b", "c"))
    assert all(r.peer_fingerprint == cert_fingerprint(r.peer_cert_der) for r in got)
    lst.close()


def test_required_certificate_missing_and_versions_below_the_minimum_fail_the_handshake(certs) -> None:
    lst = Listener(server(certs, "1.3", require=True))
    for ctx in (client_ctx(None), client_ctx(certs["a"], max_version=ssl.TLSVersion.TLSv1_2)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst.port), timeout=5)) as s:
                s.sendall(b"x")
                if not s.recv(1):  # TLS 1.3: the refusal of our certificate arrives with the first read
                    raise ConnectionError("closed")
    got = [r for r, _ in lst.wait(2)]
    assert all(isinstance(r, HandshakeFailed) for r in got), got
    assert any("certificate" in str(r) for r in got) and any("protocol" in str(r) for r in got), got
    lst.close()


def test_optional_certificate_absent_gives_a_connection_without_fingerprint(certs) -> None:
    lst = Listener(server(certs), handle=lambda c: c.close())
    with client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", lst.port))) as s:
        s.recv(1)
    (conn, _), = lst.wait(1)
    assert isinstance(conn, TlsConnection) and conn.peer_fingerprint is None and conn.peer_cert_der is None
    assert conn.version == "TLSv1.3"
    lst.close()


@pytest.mark.parametrize("garbage", [b"", b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\xff\xff" + b"\0" * 64,
                                     b"\xff" * 4096])
def test_garbage_instead_of_a_client_hello_fails_the_handshake(certs, garbage: bytes) -> None:
    lst = Listener(server(certs))
    send_and_hang_up(lst.port, garbage)
    (res, _), = lst.wait(1)
    assert isinstance(res, HandshakeFailed), res
    lst.close()


def test_a_client_that_trickles_its_hello_cannot_hold_the_handshake_past_the_timeout(certs) -> None:
    lst = Listener(server(certs), timeout=1.0)
    hello = client_hello()  # sent a byte every 0.1 s: each read gets data in time
    s = socket.create_connection(("127.0.0.1", lst.port), timeout=5)
    try:
        for b in hello[:40]:  # 4 s of trickle unless the host hangs up first
            try:
                s.send(bytes([b]))
            except OSError:
                break
            time.sleep(0.1)
        (res, took), = lst.wait(1)
    finally:
        s.close()
    assert isinstance(res, HandshakeFailed) and "1 s" in str(res), res
    assert took < 3.0, took  # one deadline for the whole handshake, not one per read


def test_the_connection_serves_http_server_and_honours_its_timeouts(certs, tmp_path) -> None:
    """http.server's StreamRequestHandler runs over it unchanged: makefile, sendall, timeouts."""

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            out = json.dumps({"fingerprint": self.connection.peer_fingerprint, "sha": hashlib.sha256(body).hexdigest(),
                              "local": self.connection.getsockname()[0]}).encode() + body
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        tls = server(certs, "1.2", require=True)

        def finish_request(self, request: Any, client_address: Any) -> None:
            conn = self.tls.accept(request, 5.0)
            conn.settimeout(1.0)
            try:
                # the TLS connection stands in for the socket: makefile() is all the handler calls on it
                super().finish_request(conn, client_address)  # type: ignore[arg-type]
            finally:
                conn.close()

    httpd = Server(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        port = httpd.server_address[1]
        body = bytes(range(256)) * 4096  # 1 MiB each way, many records
        req = urllib.request.Request(f"https://127.0.0.1:{port}/", data=body, method="POST")
        raw = urllib.request.urlopen(req, context=client_ctx(certs["b"]), timeout=10).read()
        head, echoed = raw[: raw.index(b"}") + 1], raw[raw.index(b"}") + 1:]
        meta = json.loads(head)
        assert meta == {"fingerprint": certs["b"][2], "sha": hashlib.sha256(body).hexdigest(), "local": "127.0.0.1"}
        assert echoed == body
        # a client that sends half a request and goes quiet is cut off by the 1 s timeout
        with client_ctx(certs["a"]).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
            s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort")
            t0 = time.monotonic()
            assert s.recv(100) == b""  # the server gave up and closed (with close_notify)
            assert time.monotonic() - t0 < 5.0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_recv_returns_empty_when_the_peer_closes_and_times_out_when_it_is_silent(certs) -> None:
    seen: dict[str, Any] = {}

    def handle(conn: TlsConnection) -> None:
        conn.settimeout(0.3)
        try:
            conn.recv(10)
        except TimeoutError:
            seen["timeout"] = True
        conn.settimeout(5.0)
        seen["data"] = conn.recv(100)
        seen["eof"] = conn.recv(100)
        conn.close()

    lst = Listener(server(certs), handle=handle)
    with client_ctx(certs["a"]).wrap_socket(socket.create_connection(("127.0.0.1", lst.port))) as s:
        time.sleep(0.6)
        s.sendall(b"hello")
        time.sleep(0.2)
        s.unwrap()  # close_notify
    lst.wait(1)
    assert seen == {"timeout": True, "data": b"hello", "eof": b""}
    lst.close()


def test_a_certificate_that_does_not_load_is_refused_clearly(tmp_path, certs) -> None:
    bad = tmp_path / "broken.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="broken.pem"):
        TlsServer(bad, certs["host"][1], min_version="1.3", require_client_cert=False, session_id=b"t")
    with pytest.raises(ValueError, match="a-key.pem"):  # a key that is not the certificate's
        TlsServer(certs["host"][0], certs["a"][1], min_version="1.3", require_client_cert=False, session_id=b"t")
