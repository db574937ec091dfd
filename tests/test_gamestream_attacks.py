"""GameStream (opt-in) under attack, against a real host on ephemeral ports.

Attackers are plain HTTP/TLS/TCP clients in the test process; "another machine"
is another loopback source address (127.0.0.0/8 is all local). The Moonlight
side is moonlight-python where its behaviour matters (launch, quit)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from gamestream_helpers import MOONLIGHT_UID, HandPairing, gs_config, http_get, pair, run_client, wait_ready, xml_field


def _wait_pending(host, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = host.call("gamestream.status")["pairing"]
        if pending:
            return pending
        time.sleep(0.02)
    raise AssertionError("no client is waiting for a PIN")


def hand_pair(host, port: int, pin: str = "4321", pin_after_s: float = 0.0, **kw) -> tuple[HandPairing, bool]:
    """Pair a hand-driven client; the operator enters the PIN ``pin_after_s`` after it waits."""
    client = HandPairing(port, pin, **kw)
    got: dict = {}
    t = threading.Thread(target=lambda: got.setdefault("xml", client.get_server_cert()), daemon=True)
    t.start()
    _wait_pending(host)
    time.sleep(pin_after_s)
    host.call("pairing.pin", protocol="gamestream", pin=pin)
    t.join(60)
    return client, xml_field(got["xml"], "paired") == "1" and client.finish()


def test_strangers_cannot_break_a_pairing_in_progress(host_factory, figures) -> None:
    host = host_factory(config=gs_config())
    port = wait_ready(host)["ports"]["http"]
    legit = HandPairing(port, "4321", name="living-room")
    got: dict = {}
    t = threading.Thread(target=lambda: got.setdefault("xml", legit.get_server_cert()), daemon=True)
    t.start()
    assert _wait_pending(host)["device"] == "living-room"
    # another machine tries to cancel it: without a uniqueid, and with Moonlight's fixed one
    http_get(port, "/unpair", source="127.0.0.2")
    http_get(port, f"/unpair?uniqueid={MOONLIGHT_UID}", source="127.0.0.2")
    # and to take the pairing over with its own request
    stranger = HandPairing(port, "0000", source="127.0.0.2", name="living-room-2")
    assert xml_field(stranger.get_server_cert(timeout=10), "paired") == "0"
    assert host.call("gamestream.status")["pairing"]["device"] == "living-room"
    host.call("pairing.pin", protocol="gamestream", pin="4321")
    t.join(30)
    assert xml_field(got["xml"], "paired") == "1", got
    # between the client's steps, the stranger sends a challenge of its own under the client's uniqueid
    xml = http_get(port, f"/pair?uniqueid={MOONLIGHT_UID}&devicename=x&clientchallenge={'00' * 16}",
                   source="127.0.0.2")
    assert xml_field(xml, "paired") == "0"
    http_get(port, f"/unpair?uniqueid={MOONLIGHT_UID}", source="127.0.0.2")
    assert legit.finish(), "the client that started pairing finishes it"
    st = host.call("gamestream.status")
    assert [c["name"] for c in st["paired_clients"]] == ["living-room"]
    refused = st["counters"].get("pairing_refused", 0)
    figures("stranger requests refused while one client paired (it paired)", refused)
    assert refused >= 5, st["counters"]
    assert "not the client that started it" in host.log()


@pytest.mark.moonlight
def test_only_the_launching_client_or_the_operator_ends_the_app(host_factory, tmp_path: Path, figures) -> None:
    pytest.importorskip("moonlight_python")
    host = host_factory(config=gs_config())
    ports = wait_ready(host)["ports"]
    launcher = tmp_path / "launcher"
    assert pair(host, launcher)["ok"]
    other, ok = hand_pair(host, ports["http"], name="other client")
    assert ok
    other_tls = other.tls_context(tmp_path / "other")
    assert run_client("launch", host, launcher)["ok"]
    assert host.call("gamestream.status")["app_running"] is True
    # the other client is paired too, but did not launch the app: its "quit" (what Moonlight sends) ends nothing
    xml = http_get(ports["https"], f"/cancel?uniqueid={MOONLIGHT_UID}&uuid=1", tls=other_tls)
    assert 'status_code="200"' in xml and xml_field(xml, "cancel") == "0", xml
    st = host.call("gamestream.status")
    assert st["app_running"] is True and st["counters"].get("cancel_refused") == 1
    assert "'other client' asked to end the app" in host.log()
    figures("cancel requests from a paired client that did not launch the app / apps they ended",
            f"{st['counters']['cancel_refused']} / 0")
    # the launching client may, with Moonlight's own request
    res = run_client("quit", host, launcher)
    assert xml_field(res["xml"], "cancel") == "1", res
    assert host.call("gamestream.status")["app_running"] is False
    # and the operator may end an app whoever launched it
    assert run_client("launch", host, launcher)["ok"]
    assert host.call("gamestream.cancel") == {"cancelled": True}
    assert host.call("gamestream.status")["app_running"] is False


def _flood(port: int, sources: dict[str, int]) -> list[socket.socket]:
    out = []
    for source, n in sources.items():
        for _ in range(n):
            try:
                out.append(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)))
            except OSError:
                pass
    return out


def _closed_by_host(s: socket.socket, until: float) -> bool:
    s.settimeout(max(0.01, until - time.monotonic()))
    try:
        return s.recv(1) == b""
    except (ConnectionError, OSError) as exc:
        return not isinstance(exc, TimeoutError)


def test_idle_connections_cannot_block_serverinfo_or_paired_clients(host_factory, tmp_path: Path, figures) -> None:
    """Hundreds of idle connections on HTTP, HTTPS and RTSP: a new client and a
    paired one are served at once, the idle ones are closed by their deadline,
    and a pairing request still waits for the operator's PIN past that deadline."""
    host = host_factory(config=gs_config(request_timeout_s=1))
    ports = wait_ready(host)["ports"]
    paired, ok = hand_pair(host, ports["http"], name="paired")
    assert ok
    tls = paired.tls_context(tmp_path / "paired")
    flood = {"127.0.0.1": 100, "127.0.0.2": 40}
    idle = {name: _flood(ports[name], flood) for name in ("http", "https", "rtsp")}
    t_flood = time.monotonic()
    # a new client from the flooded address and one from elsewhere get serverinfo
    for source in ("127.0.0.1", "127.0.0.3"):
        xml = http_get(ports["http"], "/serverinfo?uniqueid=1", source=source)
        assert xml_field(xml, "state") == "SUNSHINE_SERVER_FREE", xml
    # the paired client gets its app list over HTTPS
    xml = http_get(ports["https"], f"/applist?uniqueid={MOONLIGHT_UID}", tls=tls)
    assert xml_field(xml, "App/AppTitle") == "Desktop", xml
    # RTSP answers (no app runs, so: session not found)
    with socket.create_connection(("127.0.0.1", ports["rtsp"]), timeout=5) as s:
        s.sendall(b"OPTIONS rtsp://127.0.0.1 RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert s.recv(200).startswith(b"RTSP/1.0 454")
    # every idle connection is closed by the host: evicted by newer ones, or at its deadline
    until = t_flood + 8.0
    still_open = {name: sum(not _closed_by_host(s, until) for s in socks) for name, socks in idle.items()}
    for socks in idle.values():
        for s in socks:
            s.close()
    c = host.call("gamestream.status")["counters"]
    figures("idle connections opened per port (HTTP, HTTPS, RTSP) / still open after 8 s (deadline 1 s)",
            f"{sum(flood.values())} / {sum(still_open.values())}")
    figures("idle connections closed by eviction / by deadline (HTTP+HTTPS+RTSP)",
            f"{sum(c.get(f'{n}_evicted', 0) for n in idle)} / {sum(c.get(f'{n}_timed_out', 0) for n in idle)}")
    assert still_open == {"http": 0, "https": 0, "rtsp": 0}, still_open
    assert all(c.get(f"{n}_timed_out", 0) >= 1 and c.get(f"{n}_evicted", 0) >= 1 for n in idle), c
    # a client waiting for the operator's PIN is not idle: it may wait past the deadline
    _late, ok = hand_pair(host, ports["http"], pin="5555", pin_after_s=2.5, name="late")
    assert ok
    assert len(host.call("gamestream.status")["paired_clients"]) == 2
    assert host.proc.poll() is None
