"""The one UDP sender (punktfunk_core/transport.py) on real loopback sockets.

GSO and its fallback, the errno policy, pacing steps, sending through a socket
someone else reads, and the rule that no other module talks to the socket
layer for sending (one place to get GSO and errors right).
"""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import pytest

from punktfunk_core.transport import (
    GSO_MAX_SEGMENTS,
    Datagrams,
    DatagramSender,
    Pacing,
    UdpTransport,
    gso_supported,
)

REPO = Path(__file__).resolve().parent.parent
SO_NO_CHECK = getattr(socket, "SO_NO_CHECK", 11)


@pytest.fixture
def rx():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.settimeout(2)
    yield s
    s.close()


def datagrams(count: int, size: int) -> Datagrams:
    """``count`` datagrams of ``size`` bytes back to back, each starting with its index."""
    buf = bytearray()
    for i in range(count):
        buf += i.to_bytes(4, "big") + bytes([i % 251]) * (size - 4)
    return Datagrams(memoryview(bytes(buf)), size, count)


def receive(rx: socket.socket, count: int) -> list[bytes]:
    return [rx.recv(65536) for _ in range(count)]


def test_only_the_transport_module_sends_with_gso_or_sendmsg():
    """One UDP sender: no other module of the host calls sendmsg or sets the GSO option."""
    offenders = []
    for folder in ("punktfunk_core", "plugins", "webui"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "punktfunk_core" / "transport.py":
                continue
            text = path.read_text()
            for pattern in (r"\.sendmm?sg\(", r"\bUDP_SEGMENT\b", r"\bSOL_UDP\b"):  # calls, the GSO option
                if re.search(pattern, text):
                    offenders.append(f"{path.relative_to(REPO)}: {pattern}")
    assert offenders == []


def test_no_fault_injection_in_the_shipped_code():
    """Dropping on purpose, hashing for tests: test plugins do that (tests/plugins/pf_faults.py)."""
    offenders = []
    for folder in ("punktfunk_core", "plugins", "webui"):
        for path in sorted(p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".js", ".html", ".toml")):
            for word in ("test_frame_hashes", "drop_every", "dropped_on_purpose", "test_drop", "test_block"):
                if word in path.read_text():
                    offenders.append(f"{path.relative_to(REPO)}: {word}")
    assert offenders == []


@pytest.mark.parametrize("gso", [True, False])
def test_every_datagram_arrives_intact_in_order(rx, gso):
    tx = UdpTransport(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), rx.getsockname(), gso=gso)
    if gso and not tx.gso:
        pytest.skip("this kernel has no UDP GSO")
    packets = datagrams(150, 1000)  # > 64: several GSO sends
    tx.send(packets, 1000, 150 * 1000)
    assert receive(rx, 150) == [bytes(p) for p in packets]
    assert (tx.packets_sent, tx.send_dropped, tx.bytes_sent) == (150, 0, 150_000)
    assert tx.gso_sends == (-(-150 // min(GSO_MAX_SEGMENTS, 65000 // 1000)) if gso else 0)
    # a list of equal datagrams and a shorter last one go out the same way
    parts = [b"a" * 500] * 9 + [b"z" * 17]
    tx.send(parts, 500, 9 * 500 + 17)
    assert receive(rx, 10) == parts
    tx.close()


def test_a_device_that_refuses_gso_gets_plain_datagrams_and_nothing_is_lost(rx):
    """A socket without UDP checksums (SO_NO_CHECK) cannot be segmented: the
    kernel refuses the GSO send (EINVAL); the sender sends those datagrams on
    their own and stays with plain sends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = UdpTransport(sock, rx.getsockname())
    if not tx.gso:
        pytest.skip("this kernel has no UDP GSO")
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    packets = datagrams(40, 1200)
    tx.send(packets, 1200, 40 * 1200)
    assert tx.gso is False and tx.gso_sends == 0
    assert receive(rx, 40) == [bytes(p) for p in packets]
    assert tx.send_dropped == 0
    tx.close()


def test_refused_datagrams_are_counted_and_the_stream_goes_on():
    """ECONNREFUSED (nobody listens on the connected port) is counted, not raised."""
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(gone.getsockname())
    gone.close()
    tx = UdpTransport(sock, connected=True)
    for _ in range(5):
        tx.send([b"x" * 100, b"y" * 100], 100, 200)
    assert tx.send_dropped > 0
    assert tx.packets_sent + tx.send_dropped == 10
    tx.close()


@pytest.mark.parametrize("gso", [True, False])
def test_a_frame_before_the_peer_is_known_is_counted_as_dropped_and_the_next_one_arrives(rx, gso):
    """GameStream learns the client's port from its first ping: until then there is nowhere to send."""
    tx = UdpTransport(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), None, gso=gso)
    assert tx.send(datagrams(3, 100), 100, 300) == (0, 0)
    assert (tx.send_dropped, tx.packets_sent) == (3, 0)
    tx.peer = rx.getsockname()
    tx.send(datagrams(2, 100), 100, 200)
    assert [int.from_bytes(d[:4], "big") for d in receive(rx, 2)] == [0, 1]
    assert (tx.send_dropped, tx.packets_sent) == (3, 2)
    tx.close()


def test_a_datagram_the_path_cannot_carry_is_fatal(rx):
    """Not a passing condition: every later datagram would fail too, so the error ends the session."""
    tx = UdpTransport(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), rx.getsockname())
    with pytest.raises(OSError) as e:
        tx.send([bytes(70_000)], 0, 70_000)
    assert e.value.errno == errno.EMSGSIZE
    tx.close()


def test_pacing_steps():
    # GameStream: steps ≥ 0.5 ms apart over half of a 60 fps interval, any datagram count per step
    gs = Pacing.share(60, 0.5)
    assert gs.steps(100, 140_000, 46) == 16 and gs.steps(5, 7_000, 46) == 5 and gs.steps(1, 1400, 46) == 1
    # punktfunk/1: a step is a full GSO send; frames up to 64 KiB are not paced
    native = Pacing.share(60, 0.5, burst_bytes=64 * 1024, step_datagrams=0)
    assert native.steps(50, 60_000, 52) == 1
    assert native.steps(200, 250_000, 52) == 4
    assert native.steps(5000, 6_000_000, 52) == 16  # no step shorter than 0.5 ms
    assert Pacing().steps(500, 600_000, 52) == 1  # no budget: all at once


def test_paced_sender_waits_and_steps_by_its_policy(rx):
    """The step count shows in the GSO sends (one per step here): no timing in the assertion."""
    tx = UdpTransport(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), rx.getsockname())
    if not tx.gso:
        pytest.skip("this kernel has no UDP GSO")
    sender = DatagramSender(tx, Pacing.share(60, 0.5), report_spread=True)
    assert sender.waits is True and DatagramSender(tx).waits is False
    from punktfunk_core.stages import PacketBatch

    batch = PacketBatch(datagrams(48, 1000), 1, 0, False, 48_000, datagram_size=1000)
    sender.send(batch)
    assert tx.gso_sends == 16  # 48 datagrams in 16 steps of 3
    assert receive(rx, 48) == [bytes(p) for p in batch.packets]
    assert batch.extra_ns["sock"] > 0 and batch.extra_ns["send_spread"] >= batch.extra_ns["sock"]
    sender.close()


def test_a_shared_socket_is_sent_through_a_duplicate_and_stays_open(rx):
    """A plane's listening socket: the transport sends from its port and leaves it to its owner."""
    plane_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plane_sock.bind(("127.0.0.1", 0))
    plane_sock.settimeout(0.5)  # the plane reads it with a timeout
    tx = UdpTransport(plane_sock, rx.getsockname(), shared=True)
    tx.send([b"hello"], 0, 5)
    data, src = rx.recvfrom(100)
    assert data == b"hello" and src == plane_sock.getsockname()
    tx.close()
    rx.sendto(b"ping", plane_sock.getsockname())
    assert plane_sock.recvfrom(100)[0] == b"ping"  # still open, still reading with its timeout
    assert plane_sock.gettimeout() == 0.5
    blocking = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="timeout or non-blocking"):
        UdpTransport(blocking, rx.getsockname(), shared=True)
    blocking.close()
    plane_sock.close()


def test_gso_probe_only_answers_for_udp_sockets():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert gso_supported(tcp) is False and gso_supported(None) is False
        assert gso_supported(udp) in (True, False)
    finally:
        udp.close()
        tcp.close()
