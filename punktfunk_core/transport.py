"""The one UDP sender: datagrams onto a socket, paced, batched with UDP GSO.

Every protocol's sender stage is a :class:`DatagramSender` (punktfunk/1's
``native``, GameStream's video and audio, the loopback ``udp``); the protocols
only say which socket, which peer and how to pace. Nothing else in the code
calls ``sendmsg`` or sets a GSO socket option (a test checks).

**GSO.** With UDP generic segmentation offload (Linux ≥ 4.18) one ``sendmsg``
hands the kernel up to 64 datagrams of one size (the last may be shorter) and
the kernel cuts them. It is probed once per socket (:func:`gso_supported`:
the ``UDP_SEGMENT`` option can be read); a device or path that cannot
segment refuses the first GSO send, and the sender then sends each datagram
on its own from then on (the refused ones again, at once).

**Errors** (one policy for every protocol):

- *retried* — a GSO send the kernel or device refuses (``EIO``, ``EINVAL``,
  ``ENOPROTOOPT``, ``EOPNOTSUPP``): the same datagrams go out one by one at
  once, and plain sends from then on (logged once); nothing is lost. A send
  a signal interrupts is retried by Python itself (PEP 475).
- *counted and dropped* — the datagram is lost, the stream goes on, and
  ``send_dropped`` counts it: a full socket buffer or device queue
  (``EAGAIN``, ``ENOBUFS``), an ICMP error an earlier datagram provoked
  (``ECONNREFUSED``: nobody listens yet), a route that is gone for the
  moment (``EHOSTUNREACH``, ``ENETUNREACH``, ``EHOSTDOWN``, ``ENETDOWN``), a
  firewall that drops on output (``EPERM``), and ``EINTR`` should it ever
  surface. Sockets are non-blocking: a send never waits for buffer space.
- *fatal* — anything else (a closed socket, a datagram larger than the path
  allows, an address of the wrong family) is raised: the runner ends the
  session with the error logged, the host goes on.

**Pacing.** A frame's datagrams leave in steps spread evenly over
``Pacing.budget_ns`` (the first at once). Steps are at least
:data:`MIN_STEP_NS` apart (finer sleeps are not precise) and carry at least
``Pacing.step_datagrams`` datagrams (0: as many as one GSO send holds);
frames of at most ``Pacing.burst_bytes`` leave in one step. Each step is one
GSO send per 64 datagrams, or one ``sendto`` per datagram without GSO. A
sender with a zero budget never sleeps (``waits`` is False): the runner then
calls it on the encode thread.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from punktfunk_core.stages import PacketBatch, Sender

log = logging.getLogger("punktfunk.transport")

perf_counter_ns = time.perf_counter_ns
SOL_UDP = 17
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: the kernel's limit on segments per GSO send (UDP_MAX_SEGMENTS)
GSO_MAX_SEGMENTS = 64
#: bytes per GSO send (below the 64 KiB IP limit with headers)
GSO_MAX_BYTES = 65000
#: pacing steps are at least this far apart: shorter sleeps overshoot
MIN_STEP_NS = 500_000
#: a step due sooner than this goes out without a sleep
MIN_SLEEP_NS = 20_000
#: what a transport asks the kernel for as send buffer
SNDBUF_BYTES = 4 << 20

DROPPED_ERRNOS = frozenset({
    errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.EHOSTDOWN, errno.ENETDOWN, errno.EPERM, errno.EINTR,
})
GSO_REFUSED_ERRNOS = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.ENOTSUP})
_SEGMENT = struct.Struct("=H")


class Datagrams(Sequence[memoryview]):
    """Equal-size datagrams back to back in one buffer.

    Behaves as a sequence of per-datagram memoryviews; the transport hands
    whole runs of it to the kernel as one buffer (one iovec per GSO send).
    """

    __slots__ = ("buffer", "psize", "length")

    def __init__(self, buffer: memoryview, psize: int, count: int) -> None:
        self.buffer = buffer
        self.psize = psize
        self.length = count  # not ``count``: that is Sequence's count(value)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            buf, size = self.buffer, self.psize
            return [buf[j * size:(j + 1) * size] for j in range(*i.indices(self.length))]
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError("datagram index out of range")
        return self.buffer[i * self.psize:(i + 1) * self.psize]

    def run(self, start: int, stop: int) -> memoryview:
        """Datagrams ``start..stop-1`` as one contiguous buffer."""
        stop = min(stop, self.length)
        return self.buffer[start * self.psize:stop * self.psize]


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a frame's datagrams are spread out (see the module docstring)."""

    #: spread a frame over this long; 0 = every datagram at once
    budget_ns: int = 0
    #: frames of at most this many wire bytes leave at once
    burst_bytes: int = 0
    #: fewest datagrams per step; 0 = as many as one GSO send holds
    step_datagrams: int = 1

    @classmethod
    def share(cls, fps: int, fraction: float, **kw: Any) -> Pacing:
        """Spread over ``fraction`` (0..1) of the frame interval at ``fps``."""
        interval = 1_000_000_000 // max(1, fps)
        return cls(int(interval * max(0.0, min(1.0, fraction))), **kw)

    def steps(self, count: int, wire_bytes: int, per_gso: int) -> int:
        """In how many steps ``count`` datagrams (``wire_bytes`` on the wire) leave."""
        if not self.budget_ns or count <= 1 or (self.burst_bytes and wire_bytes <= self.burst_bytes):
            return 1
        least = self.step_datagrams or per_gso
        return max(1, min(-(-count // least), self.budget_ns // MIN_STEP_NS))


def gso_supported(sock: socket.socket | None) -> bool:
    """Whether the kernel knows UDP_SEGMENT on this socket (the one GSO probe)."""
    if sock is None or sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
        return True
    except OSError:
        return False


def _dropped_or_raise(exc: OSError) -> None:
    """A send's error: counted as a dropped datagram (return) or fatal (raise), by the errno policy."""
    if exc.errno not in DROPPED_ERRNOS:
        raise exc


class UdpTransport:
    """The sending side of one UDP socket: GSO, pacing, the errno policy.

    ``peer`` is where datagrams go (it may change between frames: set the
    attribute; while it is None a frame is counted in ``send_dropped``); a
    ``connected`` socket sends to its connected address. A
    transport given a socket someone else reads from (``shared``; its owner
    must read it with a timeout or non-blocking, as the planes do) sends
    through a duplicate of it: same port, its own file object that never
    polls before a send, and closing the transport leaves the original open.
    ``own`` (not shared): close the socket with the transport. ``packets_sent``,
    ``bytes_sent``, ``send_dropped`` and ``gso_sends`` are written by the
    sending thread only.
    """

    def __init__(self, sock: socket.socket, peer: tuple[Any, ...] | None = None, *, connected: bool = False,
                 gso: bool = True, shared: bool = False, own: bool = True, sndbuf: int = SNDBUF_BYTES) -> None:
        if shared and sock.gettimeout() is None:
            raise ValueError("a shared socket must be read with a timeout or non-blocking (its descriptor is)")
        self.sock = sock.dup() if shared else sock
        self._close = shared or own
        self.peer = peer
        if sndbuf:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            except OSError:
                pass
        self.sock.setblocking(False)  # a full buffer is counted in send_dropped, never waited for
        self.connected = connected
        self.gso = bool(gso) and gso_supported(self.sock)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.send_dropped = 0
        self.gso_sends = 0

    # -- one frame ---------------------------------------------------------------
    def send(self, packets: Sequence[Any], datagram_size: int = 0, wire_bytes: int = 0,
             pacing: Pacing | None = None) -> tuple[int, int]:
        """Send a frame's datagrams; returns (ns inside socket calls, ns first to last step).

        ``datagram_size``: every datagram has this size but the last, which
        may be shorter (0 = unknown: no GSO). ``wire_bytes`` is what the
        frame puts on the wire (it decides whether the frame is a burst)."""
        count = len(packets)
        if not count:
            return 0, 0
        if self.peer is None and not self.connected:  # nowhere to send yet: counted, never a TypeError
            self.send_dropped += count
            return 0, 0
        gso = self.gso and datagram_size > 0 and count > 1
        if pacing is None and not gso:  # one step of plain sends (audio, every frame): none of the stepping below
            t0 = perf_counter_ns()
            dropped = self._plain(packets)
            sock_ns = perf_counter_ns() - t0
            self.send_dropped += dropped
            self.packets_sent += count - dropped
            self.bytes_sent += wire_bytes
            return sock_ns, sock_ns
        per_gso = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // datagram_size)) if datagram_size else 1
        steps = pacing.steps(count, wire_bytes, per_gso) if pacing else 1
        per_step = -(-count // steps)
        dropped = sock_ns = 0
        start = perf_counter_ns()
        for s in range(steps):
            if s:
                wait = start + pacing.budget_ns * s // steps - perf_counter_ns()  # type: ignore[union-attr]
                if wait > MIN_SLEEP_NS:
                    time.sleep(wait / 1e9)
            t0 = perf_counter_ns()
            first = s * per_step
            last = min(count, first + per_step)
            if gso:
                while first < last:
                    n = min(per_gso, last - first)
                    dropped += self._gso(packets, first, n, datagram_size)
                    first += n
                    if not self.gso:  # refused: the rest of the frame goes plain
                        gso = False
                        dropped += self._plain(packets[first:last])
                        break
            else:
                dropped += self._plain(packets[first:last])
            sock_ns += perf_counter_ns() - t0
        spread = perf_counter_ns() - start
        self.send_dropped += dropped
        self.packets_sent += count - dropped
        self.bytes_sent += wire_bytes
        return sock_ns, spread

    def drop(self, count: int) -> None:
        """Count ``count`` datagrams as dropped without sending (no peer yet)."""
        self.send_dropped += count

    # -- the socket calls ----------------------------------------------------------
    def _plain(self, packets: Sequence[Any]) -> int:
        dropped = 0
        if self.connected:
            send = self.sock.send
            for p in packets:
                try:
                    send(p)
                except OSError as exc:
                    _dropped_or_raise(exc)
                    dropped += 1
        else:  # a loop of its own: no argument tuple to unpack per datagram
            sendto, peer = self.sock.sendto, self.peer
            assert peer is not None  # send() drops a frame while there is no peer
            for p in packets:
                try:
                    sendto(p, peer)
                except OSError as exc:
                    _dropped_or_raise(exc)
                    dropped += 1
        return dropped

    def _gso(self, packets: Any, first: int, n: int, size: int) -> int:
        """One GSO sendmsg of datagrams ``first..first+n-1``; returns how many were dropped."""
        if n == 1:
            return self._plain(packets[first:first + 1])
        run = getattr(packets, "run", None)
        buffers = [run(first, first + n)] if run is not None else packets[first:first + n]
        ancillary = [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))]
        try:
            if self.connected:
                self.sock.sendmsg(buffers, ancillary)
            else:
                self.sock.sendmsg(buffers, ancillary, 0, self.peer)
        except OSError as exc:
            if exc.errno in DROPPED_ERRNOS:
                return n
            if exc.errno not in GSO_REFUSED_ERRNOS:
                raise
            log.info("UDP GSO refused (%s); sending datagrams one by one from now on", exc)
            self.gso = False
            return self._plain(packets[first:first + n])
        self.gso_sends += 1
        return 0

    def close(self) -> None:
        if self._close:
            try:
                self.sock.close()
            except OSError:
                pass


class DatagramSender(Sender):
    """The sender stage over a :class:`UdpTransport`: every protocol's sender.

    Sends each batch with the transport's pacing and reports the time spent
    in socket calls as ``extra_ns["sock"]`` (and, with ``report_spread``, the
    first-to-last-step time as ``extra_ns["send_spread"]``). A batch whose
    ``datagram_size`` is set goes out with GSO where the kernel can.
    """

    def __init__(self, transport: UdpTransport, pacing: Pacing | None = None, *,
                 report_spread: bool = False) -> None:
        self.transport = transport
        self.pacing = pacing if pacing is not None and pacing.budget_ns > 0 else None
        #: only a pacing sender sleeps; one that does not runs on the encode thread
        self.waits = self.pacing is not None
        self.report_spread = report_spread

    @property
    def gso(self) -> bool:
        return self.transport.gso

    @property
    def send_dropped(self) -> int:  # type: ignore[override]
        return self.transport.send_dropped

    @property
    def packets_sent(self) -> int:
        return self.transport.packets_sent

    @property
    def bytes_sent(self) -> int:
        return self.transport.bytes_sent

    @property
    def gso_sends(self) -> int:
        return self.transport.gso_sends

    def send(self, batch: PacketBatch) -> None:
        sock_ns, spread = self.transport.send(batch.packets, batch.datagram_size, batch.wire_bytes, self.pacing)
        batch.extra_ns["sock"] = sock_ns
        if self.report_spread:
            batch.extra_ns["send_spread"] = spread

    def close(self) -> None:
        self.transport.close()
