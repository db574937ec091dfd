"""Admission and deadlines for TCP connections from the network.

A connection is *pending* from accept until its protocol says it has proved
itself (a paired certificate, a complete request). Pending connections are few
per source address and overall, and each has a deadline that no traffic
extends. A new connection beyond either limit closes the oldest pending one
(of its own source first), not itself: a flood of idle connections only
displaces its own sender's older ones, and the next honest client, even from
the same address, still gets its turn. *Established* connections have their
own bound and a deadline only when the protocol sets one.

Deadlines are kept by one reaper thread per gate. It ends a connection with
``shutdown()`` on a duplicate of its descriptor, which works under a TLS
wrapper and while another thread is blocked reading it; the protocol's own
thread then sees end-of-file and cleans up as for any closed connection.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("punktfunk.admission")


@dataclass(eq=False, slots=True)
class _Ticket:
    key: Any  # the peer address tuple
    source: str
    handle: socket.socket  # a duplicate descriptor, only for shutdown()
    deadline: float | None
    established: bool = False
    ended: bool = False  # evicted or timed out: no longer holds a pending slot


class ConnectionGate:
    """Per-listener admission: ``admit`` at accept, ``establish`` once the peer
    proved itself, ``release`` when the connection's thread is done.

    Connections are keyed by the peer address tuple ``accept()`` returned
    (unique while the connection is open). ``count(event)`` is called with
    ``"<name>_evicted"`` or ``"<name>_timed_out"``.
    """

    def __init__(self, name: str, *, max_pending: int, max_pending_per_source: int, pending_timeout_s: float,
                 max_established: int, count: Callable[[str], None]) -> None:
        self.name = name
        self.max_pending = max(1, max_pending)
        self.max_pending_per_source = max(1, max_pending_per_source)
        self.pending_timeout_s = pending_timeout_s
        self.max_established = max_established
        self._count = count
        self._cond = threading.Condition()
        self._tickets: dict[Any, _Ticket] = {}
        self._pending: dict[Any, _Ticket] = {}  # insertion order = age
        self._established = 0
        self._closed = False
        self._reaper = threading.Thread(target=self._reap, name=f"gate-{name}", daemon=True)
        self._reaper.start()

    # -- the connection's life ---------------------------------------------------------
    def admit(self, sock: socket.socket, addr: Any) -> bool:
        """Take a just-accepted connection as pending; False only when the gate is
        closed or the descriptor cannot be duplicated (the caller closes it)."""
        try:
            handle = sock.dup()
        except OSError:
            return False
        source = str(addr[0])
        with self._cond:
            if self._closed:
                handle.close()
                return False
            victim = None
            same = [t for t in self._pending.values() if t.source == source]
            if len(same) >= self.max_pending_per_source:
                victim = same[0]
            elif len(self._pending) >= self.max_pending:
                victim = next(iter(self._pending.values()))
            if victim is not None:
                self._end_locked(victim)
            ticket = _Ticket(addr, source, handle, time.monotonic() + self.pending_timeout_s)
            self._tickets[addr] = ticket
            self._pending[addr] = ticket
            self._cond.notify()
        if victim is not None:
            self._shut(victim, "evicted")
        return True

    def establish(self, addr: Any, timeout_s: float | None = None) -> bool:
        """The peer proved itself: it leaves the pending limits. False (and the
        caller refuses it) when it was already ended or the established bound is
        reached. ``timeout_s`` sets a deadline for the rest of the connection."""
        with self._cond:
            t = self._tickets.get(addr)
            if t is None or t.ended:
                return False
            if t.established:
                return True
            if self._established >= self.max_established:
                return False
            self._pending.pop(addr, None)
            t.established = True
            self._established += 1
            t.deadline = None if timeout_s is None else time.monotonic() + timeout_s
            self._cond.notify()
        return True

    def set_deadline(self, addr: Any, timeout_s: float | None) -> None:
        """A new deadline for an established connection (None: none, e.g. while
        the protocol itself waits for the operator)."""
        with self._cond:
            t = self._tickets.get(addr)
            if t is not None and t.established and not t.ended:
                t.deadline = None if timeout_s is None else time.monotonic() + timeout_s
                self._cond.notify()

    def release(self, addr: Any) -> None:
        with self._cond:
            t = self._tickets.pop(addr, None)
            if t is None:
                return
            if self._pending.get(addr) is t:
                del self._pending[addr]
            if t.established:
                self._established -= 1
        t.handle.close()

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {"pending": len(self._pending), "established": self._established}

    def close(self) -> None:
        """Stop the reaper and end every connection still held."""
        with self._cond:
            self._closed = True
            tickets = list(self._tickets.values())
            self._cond.notify()
        for t in tickets:
            try:
                t.handle.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._reaper.join(1.0)

    # -- internals ---------------------------------------------------------------------------
    def _end_locked(self, t: _Ticket) -> None:
        t.ended = True
        t.deadline = None
        if self._pending.get(t.key) is t:
            del self._pending[t.key]

    def _shut(self, t: _Ticket, why: str) -> None:
        self._count(f"{self.name}_{why}")
        log.debug("%s connection from %s %s", self.name, t.source, why.replace("_", " "))
        try:
            t.handle.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reap(self) -> None:
        while True:
            expired: list[_Ticket] = []
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                nearest = None
                for t in self._tickets.values():
                    if t.deadline is None:
                        continue
                    if t.deadline <= now:
                        expired.append(t)
                    elif nearest is None or t.deadline < nearest:
                        nearest = t.deadline
                for t in expired:
                    self._end_locked(t)
                if not expired:
                    self._cond.wait(None if nearest is None else nearest - now)
            for t in expired:
                self._shut(t, "timed_out")
