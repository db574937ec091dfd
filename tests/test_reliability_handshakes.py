"""Hostile TLS handshakes on both planes: unpaired certificates of every shape and garbage
instead of a handshake are refused and counted, one by one, and the paired devices are
served as before (figures in docs/reliability.md)."""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from gamestream_helpers import gs_config, pair, run_client, wait_ready
from test_core_tls import client_ctx, client_hello, self_signed, send_and_hang_up
from test_native_protocol import open_session

from punktfunk_native.client import ClientOptions, NativeClient
from punktfunk_native.wire import MessageReader, encode_message

pytest.importorskip("moonlight_python")

#: unpaired client certificates: (label, self_signed() keyword arguments)
STRANGERS: list[tuple[str, dict[str, Any]]] = [
    ("same subject as Moonlight's", {}),
    ("same subject as the native client's", {"cn": socket.gethostname()}),
    ("RSA 2048", {"kind": "rsa"}),
    ("RSA 1024", {"kind": "rsa1024"}),
    ("Ed25519", {"kind": "ed25519"}),
    ("expired", {"days": -10}),
    ("a CA certificate", {"ca": True}),
    ("11 KB, 400 names", {"names": 400}),
]
ROUNDS = 3


def _garbage(hello: bytes) -> list[bytes]:
    rnd = [os.urandom(n) for n in (1, 5, 300, 4096)]
    return [*rnd, b"GET /applist HTTP/1.1\r\nHost: x\r\n\r\n", hello[:20], hello[:-8],
            hello[:5] + os.urandom(len(hello) - 5), b"\x16\x03\x01\xff\xff" + b"\0" * 64]


def _native_attempt(port: int, ctx: ssl.SSLContext) -> dict:
    """hello + session_request with an unpaired certificate; the host's answers."""
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5)) as s:
        s.sendall(encode_message({"type": "hello", "versions": ["punktfunk/1"]}))
        s.sendall(encode_message({"type": "session_request", "width": 320, "height": 180}))
        reader = MessageReader()
        got: list[dict[str, Any]] = []
        while len(got) < 2:
            got += reader.read(s)
    return {"welcome": got[0], "answer": got[1]}


def _https(port: int, ctx: ssl.SSLContext, cmd: str) -> str:
    body = urllib.request.urlopen(f"https://127.0.0.1:{port}/{cmd}", context=ctx, timeout=5).read()
    root = ElementTree.fromstring(body)
    assert len(root) == 0, body  # nothing but the refusal
    return root.get("status_code", "")


def test_unpaired_and_garbage_certificates_are_refused_counted_and_the_host_keeps_serving(
        host_factory, tmp_path: Path, figures) -> None:
    cfg = gs_config(client_timeout_s=3) + '[native]\nbind = "127.0.0.1"\nport = 0\n[stream]\nencoder = "x264"\n'
    host = host_factory(config=cfg)
    gs_ports = wait_ready(host)["ports"]
    host.native_port = native_port = host.call("host.status")["protocols"]["native"]["port"]
    moonlight = tmp_path / "moonlight"
    assert pair(host, moonlight)["ok"]
    host.call("pairing.pin", protocol="native", pin="2468")
    native = NativeClient(ClientOptions(host="127.0.0.1", port=native_port, pin="2468", config_dir=tmp_path / "cli"))
    native.ensure_paired()

    def counters() -> tuple[dict, dict]:
        st = host.call("host.status")["protocols"]["native"]["counters"]
        return host.call("gamestream.status")["counters"], st

    gs0, nat0 = counters()
    unpaired = 0
    for label, kw in STRANGERS:
        cert = self_signed(tmp_path / "strangers", label.replace(" ", "_").replace(",", ""), **kw)
        for _ in range(ROUNDS):
            ctx = client_ctx(cert, weak_keys=kw.get("kind") == "rsa1024")
            for cmd in ("serverinfo", "applist", "launch?appid=1&mode=640x360x60&rikey=" + "00" * 16 + "&rikeyid=1"):
                assert _https(gs_ports["https"], ctx, cmd) == "401", (label, cmd)
            res = _native_attempt(native_port, ctx)
            assert res["welcome"]["paired"] is False and res["answer"]["code"] == "not_paired", (label, res)
            unpaired += 1
    hello = client_hello()
    garbage = _garbage(hello) * ROUNDS
    for data in garbage:
        send_and_hang_up(gs_ports["https"], data)
        send_and_hang_up(native_port, data)
    # GameStream requires a certificate: none is a failed handshake too
    no_cert = 0
    for _ in range(ROUNDS):
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            _https(gs_ports["https"], client_ctx(), "applist")
        no_cert += 1
    gs1, nat1 = counters()
    assert gs1.get("tls_unpaired", 0) - gs0.get("tls_unpaired", 0) == 3 * unpaired
    assert gs1.get("tls_rejected", 0) - gs0.get("tls_rejected", 0) == len(garbage) + no_cert
    assert nat1["tls_unpaired"] - nat0["tls_unpaired"] == unpaired
    assert nat1["tls_failed"] - nat0["tls_failed"] == len(garbage)
    assert host.call("sessions.list") == [] and host.call("gamestream.status")["app_running"] is False
    # the paired devices are served as before
    assert run_client("applist", host, moonlight)["apps"] == ["Desktop"]
    r, udp, _acc, _k, started = open_session(host, native)
    assert started["type"] == "session_started"
    r.send({"type": "bye"})
    udp.close()
    assert host.proc.poll() is None
    figures("handshakes with unpaired certificates (8 kinds) refused: GameStream 401 / punktfunk/1 not_paired",
            f"{3 * unpaired} / {unpaired}")
    figures("garbage instead of a handshake, refused and counted: GameStream / punktfunk/1",
            f"{len(garbage)} / {len(garbage)}")
    figures("GameStream handshakes without a client certificate, refused and counted", no_cert)
    figures("paired Moonlight and punktfunk/1 devices served afterwards", "yes")
