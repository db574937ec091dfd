"""punktfunk/1 data plane: the ``native`` packetizer and sender (host side)
and the receiver that validates, decrypts and reassembles (client side).

Host: access unit → ``k`` equal data shards → ``m`` Reed–Solomon parity
shards over GF(2^16) (``reed_solomon_leopard``) → one AES-GCM sealed datagram
per shard, written back to back into one buffer → the core's UDP sender
(:mod:`punktfunk_core.transport`: paced, batched with UDP GSO where the
kernel supports it).

Client: :class:`PacketOpener` authenticates and de-duplicates datagrams,
:class:`Reassembler` collects the shards of each access unit and recovers
missing data shards from parity. Every bad datagram is counted by reason and
dropped; nothing a peer sends can raise out of :meth:`NativeReceiver.push`.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from reed_solomon_leopard import decode as rs_decode
from reed_solomon_leopard import encode as rs_encode

if TYPE_CHECKING:
    from collections.abc import Callable

from punktfunk_core.stages import AccessUnit, PacketBatch, Packetizer
from punktfunk_core.transport import Datagrams, DatagramSender, Pacing, UdpTransport

from punktfunk_native.wire import (
    DIR_CLIENT_TO_HOST,
    DIR_HOST_TO_CLIENT,
    FLAG_KEYFRAME,
    HEADER,
    HEADER_BYTES,
    MAX_TOTAL_SHARDS,
    OVERHEAD,
    PKT_PROBE,
    PKT_VIDEO,
    WIRE_VERSION,
    PacketHeader,
    PacketRejected,
    ReplayWindow,
    parity_count,
    parse_header,
    shard_plan,
)

try:  # optional C helper (setup.py): one call seals a whole access unit
    from punktfunk_native._seal import Sealer as _CSealer
    from punktfunk_native._seal import split as _csplit
except ImportError:  # pragma: no cover - depends on the build
    _CSealer = _csplit = None

perf_counter_ns = time.perf_counter_ns
_NONCE = struct.Struct("!IQ")


@dataclass(slots=True)
class FecParams:
    fec_percent: int = 20
    min_parity: int = 2
    max_shard: int = 1200
    target_shards: int = 64
    min_shard: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.fec_percent <= 100:
            raise ValueError("fec_percent must be 0..100")
        if self.max_shard % 2 or not 64 <= self.max_shard <= 1408:
            raise ValueError("max_shard must be even and 64..1408")
        if self.min_shard % 2 or not 2 <= self.min_shard <= self.max_shard:
            raise ValueError("min_shard must be even and 2..max_shard")


def split_shards(data: bytes | bytearray | memoryview, k: int, slen: int) -> list[bytes]:
    """The ``k`` shards of an access unit, ``slen`` bytes each, the last one zero-padded
    (the compiled ``_seal.split`` does the same in one call)."""
    data = bytes(data)  # no copy when it already is bytes
    last = data[(k - 1) * slen:]
    return [data[i * slen:(i + 1) * slen] for i in range(k - 1)] + [last + bytes(slen - len(last))]


def batch_sealer_available() -> bool:
    """Whether the compiled batch sealer (``punktfunk_native._seal``) was built."""
    return _CSealer is not None


class NativePacketizer(Packetizer):
    """AU → data shards → RS parity → AES-GCM sealed datagrams in one buffer.

    Sealing uses the compiled batch sealer when it was built (one C call per
    access unit, GIL released) and cryptography's AESGCM per datagram
    otherwise; both write the same bytes. ``batch_seal=False`` forces the
    Python path.
    """

    name = "native"

    def __init__(self, key: bytes, fec: FecParams, direction: int = DIR_HOST_TO_CLIENT,
                 *, batch_seal: bool = True, packet_type: int = PKT_VIDEO,
                 parity_for: Callable[[int, int], int] | None = None) -> None:
        self._aead = AESGCM(key)
        self._sealer = _CSealer(key, direction) if batch_seal and _CSealer is not None else None
        self.fec = fec
        self.direction = direction
        #: PKT_VIDEO, or PKT_AUDIO for a session's audio (its own direction, so its own nonces)
        self.packet_type = packet_type
        self.seq = 0  # next packet sequence number = nonce counter; never reused
        self.au_seq = 0
        #: parity shards per block of k data shards: the session's FEC controller (docs/adaptive.md),
        #: else the fixed share of ``fec``
        self.parity_for = parity_for or (lambda k, _n: parity_count(k, fec.fec_percent, fec.min_parity))

    def packetize(self, au: AccessUnit) -> PacketBatch:
        data = au.data
        n = len(data)
        fec = self.fec
        k, slen = shard_plan(n, fec.max_shard, fec.target_shards, fec.min_shard)
        m = min(self.parity_for(k, n), MAX_TOTAL_SHARDS - k)
        total = k + m
        psize = OVERHEAD + slen
        shards = (_csplit if self._sealer is not None else split_shards)(data, k, slen)
        t0 = perf_counter_ns()
        every = shards + rs_encode(shards, m) if m else shards
        t1 = perf_counter_ns()
        flags = FLAG_KEYFRAME if au.keyframe else 0
        seq = self.seq
        if self._sealer is not None:
            buf = self._sealer.seal_frame(every, seq, WIRE_VERSION, self.packet_type, flags, au.frame_id & 0xFFFFFFFF,
                                          self.au_seq & 0xFFFFFFFF, n, k, m, slen)
            packets: Any = Datagrams(memoryview(buf), psize, total)
        else:
            packets = self._seal_each(every, seq, flags, au.frame_id, n, k, m, slen)
        t2 = perf_counter_ns()
        self.seq = seq + total
        self.au_seq += 1
        # no parity, no FEC time: fec_us stays absent rather than a measured 0
        extra = {"fec": t1 - t0, "seal": t2 - t1} if m else {"seal": t2 - t1}
        return PacketBatch(
            packets=packets, frame_id=au.frame_id, capture_ns=au.capture_ns, keyframe=au.keyframe,
            wire_bytes=total * psize, extra_ns=extra,
            meta={"psize": psize, "count": total, "data_shards": k, "parity_shards": m}, datagram_size=psize,
        )

    def _seal_each(self, shards: list[bytes], seq: int, flags: int, frame_id: int, n: int, k: int, m: int,
                   slen: int) -> list[bytes]:
        """The portable path: one cryptography AESGCM call per datagram."""
        # one bytes object per datagram (header || ciphertext || tag): senders hand
        # these straight to sendmsg as an iovec list, so nothing is copied again
        seal = self._aead.encrypt
        hpack = HEADER.pack
        npack = _NONCE.pack
        direction, ptype = self.direction, self.packet_type
        frame_id &= 0xFFFFFFFF
        au_seq = self.au_seq & 0xFFFFFFFF
        # list comprehensions: ~20 % less interpreter overhead per datagram than a loop
        headers = [hpack(WIRE_VERSION, ptype, flags, 0, seq + i, frame_id, au_seq, n, i, k, m, slen)
                   for i in range(len(shards))]
        return [h + seal(npack(direction, seq + i), shard, h)
                for i, (h, shard) in enumerate(zip(headers, shards, strict=True))]


class NativeSender(DatagramSender):
    """The ``native`` sender: the core's UDP sender, paced over part of the frame interval.

    ``pace_percent`` of the frame interval is the budget over which a frame's
    datagrams are spread (0 = back to back: the sender never waits and the
    runner calls it on the encode thread); frames of at most ``burst_bytes``
    on the wire go out at once (pacing them would only add latency); a
    pacing step is one full GSO send (up to 64 datagrams, ≤ 65000 bytes).
    Errors, GSO and its fallback: :mod:`punktfunk_core.transport`.
    """

    name = "native"

    def __init__(self, sock: socket.socket, addr: tuple[Any, ...], fps: int, *, gso: bool = True,
                 pace_percent: int = 50, burst_bytes: int = 64 * 1024, close_socket: bool = True) -> None:
        pacing = Pacing.share(fps, max(0, min(100, pace_percent)) / 100, burst_bytes=burst_bytes, step_datagrams=0)
        super().__init__(UdpTransport(sock, addr, gso=gso, own=close_socket), pacing)


# -- receiving side ----------------------------------------------------------------------
REJECT_REASONS = ("truncated", "malformed", "forged", "replayed", "too_old", "late", "inconsistent")


class PacketOpener:
    """Authenticates datagrams of one direction and rejects replays."""

    def __init__(self, key: bytes, direction: int, window: int = 8192) -> None:
        self._aead = AESGCM(key)
        self.direction = direction
        self.window = ReplayWindow(window)

    def open(self, pkt: bytes | bytearray | memoryview) -> tuple[PacketHeader, bytes]:
        """Return (header, plaintext) or raise :class:`PacketRejected`."""
        hdr = parse_header(pkt)
        state = self.window.check(hdr.seq)
        if state == "old":
            raise PacketRejected("too_old", f"seq {hdr.seq}")
        if state == "replayed":
            raise PacketRejected("replayed", f"seq {hdr.seq}")
        mv = memoryview(pkt)
        try:
            plain = self._aead.decrypt(_NONCE.pack(self.direction, hdr.seq), mv[HEADER_BYTES:], mv[:HEADER_BYTES])
        except InvalidTag:
            raise PacketRejected("forged", f"seq {hdr.seq}") from None
        self.window.accept(hdr.seq)
        return hdr, plain


def make_probe(key: bytes, seq: int, direction: int = DIR_CLIENT_TO_HOST) -> bytes:
    """A client→host probe datagram: announces the client's UDP address."""
    hdr = HEADER.pack(WIRE_VERSION, PKT_PROBE, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0)
    payload = struct.pack("!Q", time.monotonic_ns() // 1000)
    return hdr + AESGCM(key).encrypt(_NONCE.pack(direction, seq), payload, hdr)


@dataclass(slots=True)
class _Slot:
    frame_id: int
    au_len: int
    k: int
    m: int
    slen: int
    keyframe: bool
    first_ns: int
    data: dict[int, bytes] = field(default_factory=dict)
    parity: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class ReceivedAU:
    au_seq: int
    frame_id: int
    keyframe: bool
    data: bytes
    recovered: int
    first_ns: int


class Reassembler:
    """Collects shards per access unit and delivers complete units in order.

    A unit completes once any ``k`` of its ``k + m`` shards are in; missing
    data shards are then rebuilt from parity (``shards_recovered``). When unit
    ``s`` is delivered, every unit before ``s`` that has not completed is
    given up (``frames_unrecoverable``), so the decoder only ever sees units
    in order. Memory is bounded by ``max_pending`` units.
    """

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self.slots: dict[int, _Slot] = {}
        self.last_delivered = -1
        self.first_au = -1
        self.highest_au = -1
        self.shards_recovered = 0
        self.frames_complete = 0
        self.frames_unrecoverable = 0
        self.late = 0
        self.surplus = 0
        self.inconsistent = 0

    def add(self, hdr: PacketHeader, shard: bytes, now_ns: int = 0) -> ReceivedAU | None:
        s = hdr.au_seq
        if s <= self.last_delivered:
            if s == self.last_delivered:
                self.surplus += 1  # parity beyond what the newest unit needed: normal
            else:
                self.late += 1
            return None
        if self.first_au < 0:
            self.first_au = s
            self.last_delivered = s - 1
        slot = self.slots.get(s)
        if slot is None:
            if len(self.slots) >= self.max_pending:
                del self.slots[min(self.slots)]  # bounded memory: the oldest pending unit goes
            slot = _Slot(hdr.frame_id, hdr.au_len, hdr.data_count, hdr.parity_count, hdr.shard_len,
                         bool(hdr.flags & FLAG_KEYFRAME), now_ns)
            self.slots[s] = slot
            if s > self.highest_au:
                self.highest_au = s
        elif (slot.k, slot.m, slot.slen, slot.au_len, slot.frame_id) != (
                hdr.data_count, hdr.parity_count, hdr.shard_len, hdr.au_len, hdr.frame_id):
            self.inconsistent += 1
            return None
        idx = hdr.shard_index
        if idx < slot.k:
            slot.data[idx] = shard
        else:
            slot.parity[idx - slot.k] = shard
        if len(slot.data) + len(slot.parity) < slot.k:
            return None
        # complete: rebuild, deliver, give up everything older
        del self.slots[s]
        recovered = 0
        if len(slot.data) < slot.k:
            try:
                restored = rs_decode(slot.k, slot.m, slot.data, slot.parity)
            except Exception:  # noqa: BLE001 - authenticated but undecodable: count, never raise
                self.frames_unrecoverable += 1
                return None
            recovered = slot.k - len(slot.data)
            slot.data.update(restored)
        data = b"".join(slot.data[i] for i in range(slot.k))[: slot.au_len]
        self.shards_recovered += recovered
        self.frames_complete += 1
        self.frames_unrecoverable += s - self.last_delivered - 1
        for old in [q for q in self.slots if q < s]:
            del self.slots[old]
        self.last_delivered = s
        return ReceivedAU(s, slot.frame_id, slot.keyframe, data, recovered, slot.first_ns)


class NativeReceiver:
    """Client side of the data plane: datagram in, complete access units out."""

    def __init__(self, key: bytes, direction: int = DIR_HOST_TO_CLIENT, packet_type: int = PKT_VIDEO) -> None:
        self.opener = PacketOpener(key, direction)
        self.packet_type = packet_type
        self.reasm = Reassembler()
        self.rejected: dict[str, int] = {r: 0 for r in REJECT_REASONS}
        self.packets_accepted = 0
        self.bytes_received = 0
        self._first_seq = -1
        #: runs of consecutive missing sequence numbers (a gap before a datagram that arrived)
        self.loss_runs = 0

    @property
    def packets_lost(self) -> int:
        """Datagrams never received: sequence-number span minus those accepted."""
        if self._first_seq < 0:
            return 0
        return max(0, self.opener.window.highest - self._first_seq + 1 - self.packets_accepted)

    @property
    def packets_expected(self) -> int:
        """Datagrams the sequence numbers say were sent, from the first one seen to the highest."""
        if self._first_seq < 0:
            return 0
        return self.opener.window.highest - self._first_seq + 1

    def push(self, pkt: bytes | bytearray | memoryview, now_ns: int = 0) -> ReceivedAU | None:
        self.bytes_received += len(pkt)
        highest = self.opener.window.highest
        try:
            hdr, plain = self.opener.open(pkt)
        except PacketRejected as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            return None
        except Exception:  # noqa: BLE001 - belt and braces: a datagram never raises
            self.rejected["malformed"] += 1
            return None
        if hdr.type != self.packet_type:
            self.rejected["malformed"] += 1
            return None
        if self._first_seq < 0:
            self._first_seq = hdr.seq
        elif hdr.seq < self._first_seq:
            self._first_seq = hdr.seq
        elif hdr.seq > highest + 1:
            self.loss_runs += 1
        self.packets_accepted += 1
        before = self.reasm.late + self.reasm.inconsistent
        au = self.reasm.add(hdr, plain, now_ns)
        if self.reasm.late + self.reasm.inconsistent != before:
            self.rejected["late"] = self.reasm.late
            self.rejected["inconsistent"] = self.reasm.inconsistent
        return au

    def counters(self) -> dict[str, Any]:
        return {
            "packets_accepted": self.packets_accepted,
            "packets_lost": self.packets_lost,
            "loss_runs": self.loss_runs,
            "shards_recovered": self.reasm.shards_recovered,
            "frames_complete": self.reasm.frames_complete,
            "frames_unrecoverable": self.reasm.frames_unrecoverable,
            "rejected": dict(self.rejected),
        }
