"""ConnectionGate on real loopback sockets: eviction, deadlines, the established bound."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import pytest

from punktfunk_core.admission import ConnectionGate


class Listener:
    """Accepts connections into a gate; each accepted one is read by its own thread until EOF."""

    def __init__(self, **limits) -> None:
        self.events: Counter = Counter()
        self.gate = ConnectionGate("t", count=lambda e: self.events.update([e]), **limits)
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.ended: dict = {}  # peer addr -> monotonic time the host side saw EOF
        self.addrs: list = []

    def connect(self, source: str = "127.0.0.1") -> tuple[socket.socket, tuple]:
        c = socket.create_connection(("127.0.0.1", self.port), source_address=(source, 0), timeout=5)
        conn, addr = self.lsock.accept()
        assert self.gate.admit(conn, addr)
        self.addrs.append(addr)
        threading.Thread(target=self._read, args=(conn, addr), daemon=True).start()
        return c, addr

    def _read(self, conn: socket.socket, addr) -> None:
        conn.settimeout(30)
        try:
            while conn.recv(100):
                pass
        except OSError:
            pass
        self.ended[addr] = time.monotonic()
        conn.close()
        self.gate.release(addr)

    def wait_ended(self, addr, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while addr not in self.ended and time.monotonic() < deadline:
            time.sleep(0.01)
        return addr in self.ended

    def close(self) -> None:
        self.gate.close()
        self.lsock.close()


@pytest.fixture
def listener():
    made = []

    def make(**kw):
        defaults = {"max_pending": 8, "max_pending_per_source": 2, "pending_timeout_s": 30.0, "max_established": 2}
        made.append(Listener(**{**defaults, **kw}))
        return made[-1]

    yield make
    for x in made:
        x.close()


def test_a_new_connection_beyond_the_per_source_limit_closes_that_sources_oldest(listener) -> None:
    lst = listener()
    _a, first = lst.connect()
    _b, second = lst.connect()
    _o, other = lst.connect("127.0.0.2")
    _c, third = lst.connect()
    assert lst.wait_ended(first), "the oldest pending connection of that address is closed"
    time.sleep(0.2)
    assert second not in lst.ended and third not in lst.ended and other not in lst.ended
    assert lst.events["t_evicted"] == 1
    assert lst.gate.snapshot() == {"pending": 3, "established": 0}


def test_the_total_limit_closes_the_oldest_pending_connection_of_any_address(listener) -> None:
    lst = listener(max_pending=3, max_pending_per_source=3)
    socks = [lst.connect(f"127.0.0.{i}") for i in (2, 3, 4, 5)]
    assert lst.wait_ended(socks[0][1])
    assert lst.gate.snapshot()["pending"] == 3


def test_a_pending_connection_is_closed_at_its_deadline_while_another_thread_reads_it(listener) -> None:
    lst = listener(pending_timeout_s=0.3)
    client, addr = lst.connect()
    for _ in range(5):  # traffic does not extend the deadline
        client.sendall(b"ping")
        time.sleep(0.05)
    assert lst.wait_ended(addr)
    assert lst.events["t_timed_out"] == 1
    client.settimeout(2)
    assert client.recv(10) == b""


def test_established_connections_leave_the_pending_limits_and_have_their_own_bound(listener) -> None:
    lst = listener(pending_timeout_s=0.3, max_established=2)
    conns = [lst.connect() for _ in range(2)]
    assert all(lst.gate.establish(addr) for _c, addr in conns)
    extra = lst.connect()
    assert not lst.gate.establish(extra[1]), "a third established connection is refused"
    more = [lst.connect() for _ in range(2)]  # the pending limit counts pending ones only
    assert lst.wait_ended(extra[1])  # still pending: its deadline ends it
    time.sleep(0.5)
    assert not any(addr in lst.ended for _c, addr in conns), "established connections have no deadline"
    assert all(addr in lst.ended for _c, addr in more)


def test_a_deadline_can_be_set_and_lifted_for_an_established_connection(listener) -> None:
    lst = listener(pending_timeout_s=30.0)
    _c1, waiting = lst.connect()
    _c2, answering = lst.connect()
    assert lst.gate.establish(waiting, timeout_s=0.2) and lst.gate.establish(answering, timeout_s=0.2)
    lst.gate.set_deadline(waiting, None)  # e.g. waiting for the operator
    assert lst.wait_ended(answering)
    time.sleep(0.4)
    assert waiting not in lst.ended
    lst.gate.set_deadline(waiting, 0.1)
    assert lst.wait_ended(waiting)
