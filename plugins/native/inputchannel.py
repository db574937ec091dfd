"""punktfunk/1 input datagrams: the client's input on a UDP flow of its own, read by the
host's injector process (punktfunk_core.inputproc), not by the host's control thread.

The client numbers its input batches (the binary batches of punktfunk_native.input)
and sends every batch the host has not acknowledged yet in each datagram, oldest
first; the host takes the batches in order, skips the ones it has, and answers
each round of datagrams with the next batch number it expects. So no key or
button event is lost or reordered while the client retransmits, and a lost
datagram costs one retransmission interval. Datagrams are sealed like the rest of
the data plane (AES-128-GCM, the 32-byte header as associated data, a replay
window): the client's under the session's c2h key with nonce direction 4, the
host's acks under the h2c key with direction 5 (docs/protocol-native.md,
"Input datagrams").
"""

from __future__ import annotations

import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_native.datapath import PacketOpener
from punktfunk_native.input import MAX_INPUT_EVENTS, BatchTooLarge, decode_batch, encode_batch
from punktfunk_native.wire import (
    DIR_INPUT_ACK_HOST_TO_CLIENT,
    DIR_INPUT_CLIENT_TO_HOST,
    HEADER,
    MAX_INPUT_PAYLOAD,
    PKT_INPUT,
    PKT_INPUT_ACK,
    WIRE_VERSION,
    PacketRejected,
)

if TYPE_CHECKING:
    from punktfunk_core.inputevents import InputEvent

_NONCE = struct.Struct("!IQ")
_LEN = struct.Struct("!H")
#: batch numbers are u32 on the wire
_BATCH_MOD = 1 << 32
#: a batch's records fill at most this many bytes, so a batch always fits a datagram
MAX_BATCH_BYTES = MAX_INPUT_PAYLOAD - _LEN.size
#: how long the client waits for an ack before it sends its unacknowledged batches again
RETRANSMIT_S = 0.03
#: the host acks at most this often while datagrams keep coming (each ack wakes the client; the
#: client's next datagram repeats what is unacknowledged anyway): a third of RETRANSMIT_S, so a
#: steady flow is acked before the client retransmits, and the end of a burst costs one retransmission
ACK_INTERVAL_S = 0.01
#: unacknowledged batches the client keeps; beyond them the oldest are given up (the host counts the gap)
MAX_UNACKED = 4096
#: datagrams the host reads in one round before it answers
MAX_ROUND = 64
#: what a rejected datagram counts as
_REJECTED = {"forged": "input_forged", "replayed": "input_replayed", "too_old": "input_replayed",
             "truncated": "input_malformed", "malformed": "input_malformed"}


def _seal(aead: AESGCM, direction: int, ptype: int, seq: int, first: int, payload: bytes) -> bytes:
    hdr = HEADER.pack(WIRE_VERSION, ptype, 0, 0, seq, 0, first, len(payload), 0, 0, 0, 0)
    return hdr + aead.encrypt(_NONCE.pack(direction, seq), payload, hdr)


class HostInputChannel:
    """The host's end, in the injector process: datagrams → ordered batches → events."""

    def __init__(self, sock: socket.socket, k_c2h: str, k_h2c: str) -> None:
        self.sock = sock
        self._opener = PacketOpener(bytes.fromhex(k_c2h), DIR_INPUT_CLIENT_TO_HOST)
        self._acks = AESGCM(bytes.fromhex(k_h2c))
        self._ack_seq = 0
        self._acked_at = 0.0
        #: the next batch number to take
        self.expected = 0
        #: where the latest authentic datagram came from: the acks go there
        self.peer: tuple | None = None
        self._counts: dict[str, int] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def _count(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + n

    def take_counts(self) -> dict[str, int]:
        counts, self._counts = self._counts, {}
        return counts

    def receive(self) -> list[tuple[list[InputEvent], int]]:
        """Every datagram waiting (up to MAX_ROUND), as the events of each new batch in order with
        its receive stamp; one ack for the round (at most every ACK_INTERVAL_S). Bad datagrams and
        records are counted, never raised."""
        out: list[tuple[list[InputEvent], int]] = []
        authentic = False
        for _ in range(MAX_ROUND):
            try:
                pkt, src = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. an ICMP error of an earlier ack: nothing to read
                break
            received_ns = time.perf_counter_ns()
            try:
                hdr, plain = self._opener.open(pkt)
            except PacketRejected as exc:
                self._count(_REJECTED.get(exc.reason, "input_malformed"))
                continue
            if hdr.type != PKT_INPUT:
                self._count("input_malformed")
                continue
            authentic = True
            self.peer = src
            self._count("input_datagrams")
            self._take(plain, hdr.au_seq, received_ns, out)
        now = time.monotonic()
        if authentic and self.peer is not None and now - self._acked_at >= ACK_INTERVAL_S:
            self._acked_at = now
            self._ack_seq += 1
            try:
                self.sock.sendto(_seal(self._acks, DIR_INPUT_ACK_HOST_TO_CLIENT, PKT_INPUT_ACK, self._ack_seq,
                                       self.expected, b""), self.peer)
            except OSError:  # a full buffer or an unreachable client: the next round acks again
                pass
        return out

    def _take(self, payload: bytes, first: int, received_ns: int, out: list[tuple[list[InputEvent], int]]) -> None:
        off, end, number = 0, len(payload), first
        while off < end:
            if off + _LEN.size > end:
                self._count("input_malformed")
                return
            (n,) = _LEN.unpack_from(payload, off)
            off += _LEN.size
            if n == 0 or off + n > end:
                self._count("input_malformed")
                return
            ahead = (number - self.expected) % _BATCH_MOD
            if ahead < _BATCH_MOD // 2:  # not one the host has already taken
                if ahead:
                    self._count("input_lost", ahead)  # the client gave those up
                self.expected = (number + 1) % _BATCH_MOD
                self._count("input_messages")
                try:
                    events, bad = decode_batch(payload[off:off + n])
                except BatchTooLarge:
                    self._count("input_oversized")
                else:
                    if bad:
                        self._count("input_malformed", len(bad))
                    out.append((events, received_ns))
            off += n
            number = (number + 1) % _BATCH_MOD


class ClientInputChannel:
    """The client's end: events → numbered batches, each sent until the host acknowledges it.

    Not thread-safe: the client's control thread alone calls it."""

    def __init__(self, host: tuple, k_c2h: bytes, k_h2c: bytes, family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("", 0))
        self.sock.connect(host)
        self.sock.setblocking(False)
        self._aead = AESGCM(k_c2h)
        self._acks = PacketOpener(k_h2c, DIR_INPUT_ACK_HOST_TO_CLIENT)
        self._seq = 0
        self._next = 0
        #: (batch number, records) not acknowledged yet, oldest first
        self.unacked: deque[tuple[int, bytes]] = deque()
        self._sent_at = 0.0
        self.datagrams_sent = 0
        self.retransmissions = 0
        self.given_up = 0
        self.acks_rejected = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_events(self, events: list[InputEvent]) -> None:
        """Number ``events`` as one batch or more (each fits a datagram) and send what is unacknowledged."""
        if len(events) <= MAX_INPUT_EVENTS:
            whole = encode_batch(events)  # the usual case: a few events, one batch
            if len(whole) <= MAX_BATCH_BYTES:
                self._queue(whole)
                self._send()
                return
        records, count = bytearray(), 0
        for event in events:
            rec = encode_batch((event,))
            if records and (len(records) + len(rec) > MAX_BATCH_BYTES or count == MAX_INPUT_EVENTS):
                self._queue(bytes(records))
                records, count = bytearray(), 0
            records += rec
            count += 1
        if records:
            self._queue(bytes(records))
        self._send()

    def _queue(self, records: bytes) -> None:
        self.unacked.append((self._next, records))
        self._next = (self._next + 1) % _BATCH_MOD
        while len(self.unacked) > MAX_UNACKED:
            self.unacked.popleft()
            self.given_up += 1

    def _send(self) -> None:
        if not self.unacked:
            return
        first = self.unacked[0][0]
        payload = bytearray()
        for _, records in self.unacked:
            if len(payload) + _LEN.size + len(records) > MAX_INPUT_PAYLOAD:
                break
            payload += _LEN.pack(len(records)) + records
        try:
            self.sock.send(_seal(self._aead, DIR_INPUT_CLIENT_TO_HOST, PKT_INPUT, self._seq, first, bytes(payload)))
        except OSError:  # a full buffer, or the host's port is not there (yet): the retransmission tries again
            pass
        self._seq += 1
        self.datagrams_sent += 1
        self._sent_at = time.monotonic()

    def read_acks(self) -> None:
        """Take the host's acks waiting on the socket; drop what they acknowledge."""
        while True:
            try:
                pkt = self.sock.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable of an earlier datagram
                continue
            try:
                hdr, _ = self._acks.open(pkt)
            except PacketRejected:
                self.acks_rejected += 1
                continue
            if hdr.type != PKT_INPUT_ACK:
                self.acks_rejected += 1
                continue
            expected = hdr.au_seq
            while self.unacked and 0 < (expected - self.unacked[0][0]) % _BATCH_MOD <= _BATCH_MOD // 2:
                self.unacked.popleft()

    def retransmit_in(self, now: float) -> float | None:
        """Seconds until unacknowledged batches go again (0: now), None when all are acknowledged."""
        if not self.unacked:
            return None
        return max(0.0, self._sent_at + RETRANSMIT_S - now)

    def retransmit(self) -> None:
        self.retransmissions += 1
        self._send()

    def close(self) -> None:
        self.sock.close()
