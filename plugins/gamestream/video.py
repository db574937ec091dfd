"""GameStream video stages: the ``gamestream`` packetizer and sender.

Packetizer: an access unit gets the 8-byte Sunshine frame header (host
processing latency in 0.1 ms, frame type), is cut into ``packetSize - 16``
byte payloads and split into up to 4 FEC blocks. Every shard is
``packetSize + 16`` bytes (RTP + reserved, NV video header, payload); parity
is nanors-compatible Reed-Solomon over the whole data shards (headers
included). Parity packets then get their own RTP header, frame index,
block and FEC fields (the client rewrites exactly those in recovered
packets). With video encryption each datagram is sealed with AES-128-GCM:
``[iv 12][LE frame][tag 16][ciphertext]``.

Sender: the core's UDP sender (:mod:`punktfunk_core.transport`) on the
plane's video socket, to the endpoint learned from the client's pings, paced
so that a frame's packets spread over part of the frame interval instead of
leaving as one burst.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_core.stages import AccessUnit, PacketBatch, Packetizer, StreamSpec
from punktfunk_core.transport import Datagrams, DatagramSender, Pacing, UdpTransport

from punktfunk_gamestream import fec
from punktfunk_gamestream.wire import (
    ENC_VIDEO_HEADER,
    FRAME_HEADER,
    MAX_FEC_BLOCKS,
    NV_HEADER,
    RTP_HEADER,
    VIDEO_FLAG_EOF,
    VIDEO_FLAG_PIC_DATA,
    VIDEO_FLAG_SOF,
)

if TYPE_CHECKING:
    from punktfunk_gamestream.adaptive import StreamAdaptation

perf_ns = time.perf_counter_ns


@dataclass
class VideoContext:
    """What the plane negotiated for one session's video (shared by the stages)."""

    packet_size: int = 1392
    fec_percent: int = 20
    min_fec_packets: int = 2
    #: AES-GCM key when video encryption was negotiated
    key: bytes | None = None
    sock: socket.socket | None = None
    peer: tuple[str, int] | None = None
    #: fraction of the frame interval a frame's packets are spread over
    pacing: float = 0.5
    #: hand the kernel up to 64 equal datagrams per sendmsg (UDP GSO) when it can
    gso: bool = True
    #: adaptive FEC/bitrate of the session (None: ``fec_percent`` for every frame)
    adaptive: StreamAdaptation | None = None


_SKIP_NALS = {"h264": (6, 9), "hevc": (39, 35)}  # SEI, access unit delimiter


def strip_leading_sei(data: bytes, codec: str) -> bytes:
    """Drop SEI and AUD NAL units that come before the first slice.

    Moonlight looks for the IDR slice while parsing the *first packet* of a
    keyframe; encoders put large SEIs (x265's settings string is ~2 kB) between
    the parameter sets and the slice, which pushes the slice out of that packet
    and the keyframe is never recognised. Only the non-VCL prefix is scanned
    (start codes cannot occur inside NAL payloads), so the cost is a few
    ``bytes.find`` calls per frame."""
    skip = _SKIP_NALS.get(codec)
    if skip is None:
        return data
    hevc = codec == "hevc"
    parts: list[bytes] = []
    dropped = False
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        start = pos - 1 if pos > 0 and data[pos - 1] == 0 else pos
        header = data[pos + 3]
        nal = (header >> 1) & 0x3F if hevc else header & 0x1F
        vcl = nal < 32 if hevc else 1 <= nal <= 5
        if vcl:
            if not dropped:
                return data
            parts.append(data[start:])
            return b"".join(parts)
        nxt = data.find(b"\x00\x00\x01", pos + 3)
        end = len(data) if nxt < 0 else (nxt - 1 if data[nxt - 1] == 0 else nxt)
        if nal in skip:
            dropped = True
        else:
            parts.append(data[start:end])
        pos = nxt
    return data


def fec_layout(n: int, pct: int, min_fec: int, block_limit: int = 0,
               parity_for: Callable[[int], int] | None = None) -> tuple[list[tuple[int, int, int]], int]:
    """Split ``n`` data shards into FEC blocks: [(data, parity, written_pct)], pct.

    Blocks hold at most 255·100/(100+pct) data shards (212 at 20 %), parity is
    ceil(data·pct/100) — or ``parity_for(data)`` when given (the adaptive
    controller's count, which may exceed the share for small blocks) — but at
    least ``min_fec``, data + parity ≤ 255, and the written percentage makes
    the client's (data·pct+99)/100 give the same parity count. Frames too
    large for 4 FEC blocks go without FEC (up to 4 blocks of 1023 data
    shards). ``block_limit`` makes blocks smaller than needed (at most that
    many data shards, up to 4 blocks), so that small frames use several
    blocks too."""
    if n <= 0:
        raise ValueError("a frame has at least one data shard")
    max_k = 255 * 100 // (100 + pct) if pct > 0 else 255
    if pct > 0 and n <= MAX_FEC_BLOCKS * max_k:
        nblocks = -(-n // max_k)
        if block_limit > 0:
            nblocks = max(nblocks, min(MAX_FEC_BLOCKS, n, -(-n // block_limit)))
        use_fec = True
    else:
        nblocks = -(-n // 1023)
        if nblocks > MAX_FEC_BLOCKS:
            raise ValueError(f"frame of {n} packets is too large for GameStream (max {4 * 1023})")
        use_fec = False
    base, extra = divmod(n, nblocks)
    blocks = []
    for b in range(nblocks):
        k = base + (1 if b < extra else 0)
        if not use_fec:
            blocks.append((k, 0, 0))
            continue
        # the header's percent is 8 bits: k data shards can announce at most (255·k + 99) // 100 parity
        top = min((255 * k + 99) // 100, 255 - k)
        want = min(max(parity_for(k) if parity_for is not None else -(-k * pct // 100), min_fec), top)
        # the header carries a percentage, not a count: take the nearest parity count
        # the client derives from some percentage, upwards first (never below the
        # client's minimum), downwards only at the 255-shard ceiling
        p, w = want, _written_pct(k, want)
        while w is None and p < top:
            p += 1
            w = _written_pct(k, p)
        if w is None:
            p = want
            while w is None and p > 0:
                p -= 1
                w = _written_pct(k, p)
        blocks.append((k, p, w or 0))
    return blocks, (pct if use_fec else 0)


def _written_pct(k: int, p: int) -> int | None:
    """Smallest 8-bit percentage with (k·pct + 99) // 100 == p."""
    if p == 0:
        return 0
    lo = max(0, (100 * (p - 1) - 99 + k - 1) // k)  # first candidate
    for w in range(lo, 256):
        got = (k * w + 99) // 100
        if got == p:
            return w
        if got > p:
            return None
    return None


class GameStreamPacketizer(Packetizer):
    """Access units → RTP/NV video datagrams with nanors FEC (stage ``gamestream``)."""

    #: at most this many data shards per FEC block (0: as few blocks as the rule allows);
    #: a subclass may lower it (the multi-block tests do)
    block_limit = 0

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.spec = spec
        ctx = options.get("context")
        if ctx is None:
            ctx = VideoContext(
                packet_size=int(options.get("packet_size", 1392)),
                fec_percent=int(options.get("fec_percent", 20)),
                min_fec_packets=int(options.get("min_fec_packets", 2)),
                key=bytes.fromhex(options["key_hex"]) if options.get("key_hex") else None,
            )
        if ctx.packet_size % 16 or not 256 <= ctx.packet_size <= 9000:
            raise ValueError(f"packet size {ctx.packet_size} must be a multiple of 16 in 256..9000")
        if not 0 <= ctx.fec_percent <= 255:
            raise ValueError("fec_percent must be 0..255")
        self.ctx = ctx
        kernel = options.get("fec_kernel", "auto")
        threads = int(options.get("fec_threads", 1))
        if kernel == "numpy":
            self.kernel: fec.FecKernel = fec.NumpyKernel()
        elif kernel == "isal" or (kernel == "auto" and threads > 1 and fec.best_kernel().name == "isal"):
            self.kernel = fec.IsalKernel(threads=threads)
        else:
            self.kernel = fec.best_kernel()
        self.shard = ctx.packet_size + RTP_HEADER
        self.payload = ctx.packet_size - NV_HEADER
        self.aead = AESGCM(ctx.key) if ctx.key else None
        self.seq = 0  # 16-bit RTP sequence, continuous over data and parity
        self.frame_index = 0  # first frame sent is 1
        self._iv_salt = os.urandom(4)
        self._iv_counter = 0
        self.epoch_ns = time.monotonic_ns()
        self.frames = 0
        self.strip_sei = bool(options.get("strip_sei", True))

    def packetize(self, au: AccessUnit) -> PacketBatch:
        t0 = perf_ns()
        self.frame_index = (self.frame_index + 1) & 0xFFFFFFFF
        frame = self.frame_index
        now = time.monotonic_ns()
        latency = min(0xFFFF, max(0, (now - au.capture_ns) // 100_000)) if au.capture_ns else 0
        data = strip_leading_sei(au.data, au.codec) if self.strip_sei else au.data
        total = FRAME_HEADER + len(data)
        n = -(-total // self.payload)
        last_len = total - (n - 1) * self.payload
        header = struct.pack("<BHBHH", 0x01, latency, 2 if au.keyframe else 1, min(last_len, 0xFFFF), 0)
        adaptive = self.ctx.adaptive
        fec_ctl = adaptive.fec if adaptive is not None else None
        if fec_ctl is not None:  # the share the controller chose last, read without a lock
            shard_bytes = self.payload  # each block's bytes count toward the rate the controller sees sent
            blocks, _ = fec_layout(n, min(255, max(1, math.ceil(fec_ctl.percent))), self.ctx.min_fec_packets,
                                   self.block_limit, lambda k: fec_ctl.parity_for(k, k * shard_bytes))
        else:
            blocks, _ = fec_layout(n, self.ctx.fec_percent, self.ctx.min_fec_packets, self.block_limit)
        rows = sum(k + p for k, p, _ in blocks)
        S = self.shard
        buf = fec.shard_buffer(rows, S)  # 64-byte aligned rows: faster SIMD parity
        # payload matrix: every data shard's payload, the last one zero-padded
        flat = np.zeros(n * self.payload, dtype=np.uint8)
        flat[:FRAME_HEADER] = np.frombuffer(header, dtype=np.uint8)
        flat[FRAME_HEADER:total] = np.frombuffer(data, dtype=np.uint8)
        payload = flat.reshape(n, self.payload)
        ts = ((au.capture_ns or now) - self.epoch_ns) * 9 // 100_000 & 0xFFFFFFFF
        nb = len(blocks)
        seq0 = self.seq
        r0 = 0
        j0 = 0
        coded: list[tuple[int, int, int, int]] = []  # (block, first row, k, parity) of blocks with parity
        for b, (k, p, w) in enumerate(blocks):
            blk = buf[r0:r0 + k + p]
            seqs = (seq0 + r0 + np.arange(k + p, dtype=np.uint32)) & 0xFFFF
            blk[:k, RTP_HEADER + NV_HEADER:] = payload[j0:j0 + k]
            # RTP header + reserved
            blk[:, 0] = 0x90
            blk[:, 2] = seqs >> 8
            blk[:, 3] = seqs & 0xFF
            blk[:, 4:8] = np.frombuffer(struct.pack(">I", ts), dtype=np.uint8)
            # NV video header (little-endian fields)
            blk[:, 16:20].view("<u4")[:, 0] = (seqs & 0xFFFFFF) << 8
            blk[:, 20:24] = np.frombuffer(struct.pack("<I", frame), dtype=np.uint8)
            blk[:k, 24] = VIDEO_FLAG_PIC_DATA
            blk[0, 24] |= VIDEO_FLAG_SOF
            blk[k - 1, 24] |= VIDEO_FLAG_EOF
            blk[:, 26] = 0x10
            blk[:, 27] = (b << 4) | ((nb - 1) << 6)
            info = (k << 22) | (np.arange(k + p, dtype=np.uint32) << 12) | (w << 4)
            blk[:k, 28:32].view("<u4")[:, 0] = info[:k]
            if p:
                coded.append((b, r0, k, p))
            r0 += k + p
            j0 += k
        # every block's parity in one kernel call (one compiled call per frame where it is built)
        fec_ns = 0
        if coded:
            tf = perf_ns()
            self.kernel.encode_blocks(buf, [c[1:] for c in coded])
            fec_ns = perf_ns() - tf
        for b, r0, k, p in coded:
            seqs = (seq0 + r0 + k + np.arange(p, dtype=np.uint32)) & 0xFFFF
            par = buf[r0 + k:r0 + k + p]
            # parity packets carry their own RTP/frame/block/FEC fields;
            # spi, flags and the payload region stay parity bytes
            par[:, 0] = 0x90
            par[:, 1] = 0
            par[:, 2] = seqs >> 8
            par[:, 3] = seqs & 0xFF
            par[:, 4:8] = np.frombuffer(struct.pack(">I", ts), dtype=np.uint8)
            par[:, 8:16] = 0
            par[:, 20:24] = np.frombuffer(struct.pack("<I", frame), dtype=np.uint8)
            par[:, 26] = 0x10
            par[:, 27] = (b << 4) | ((nb - 1) << 6)
            shard_index = np.arange(k, k + p, dtype=np.uint32)
            par[:, 28:32].view("<u4")[:, 0] = (k << 22) | (shard_index << 12) | (blocks[b][2] << 4)
        self.seq = (seq0 + rows) & 0xFFFF
        seal_ns = 0
        packets: list[bytes] | Datagrams
        if self.aead is not None:
            ts0 = perf_ns()
            packets = []
            prefix = struct.pack("<I", frame)
            aead = self.aead
            for r in range(rows):
                self._iv_counter += 1
                iv = struct.pack("<Q", self._iv_counter) + self._iv_salt
                ct = aead.encrypt(iv, buf[r].tobytes(), None)
                packets.append(iv + prefix + ct[-16:] + ct[:-16])
            seal_ns = perf_ns() - ts0
            wire = rows * (S + ENC_VIDEO_HEADER)
        else:
            packets = Datagrams(buf.reshape(-1).data, S, rows)  # one buffer: one iovec per GSO send
            wire = rows * S
        self.frames += 1
        if adaptive is not None:
            adaptive.packetized(rows, n, au.keyframe)
        extra = {"fec": fec_ns} if rows > n else {}  # no parity (fec_percent 0): fec_us stays absent
        if seal_ns:
            extra["seal"] = seal_ns
        return PacketBatch(packets, au.frame_id, au.capture_ns, au.keyframe, wire, extra,
                           {"frame_index": frame, "blocks": nb, "data": n, "parity": rows - n,
                            "payload_bytes": len(data), "packetize_ns": perf_ns() - t0}, wire // rows)

    def close(self) -> None:
        if isinstance(self.kernel, fec.IsalKernel) and self.kernel is not fec.best_kernel():
            self.kernel.close()


class GameStreamSender(DatagramSender):
    """Paced UDP to the endpoint the client's pings revealed (stage ``gamestream``).

    The core's UDP sender on the plane's socket (Moonlight expects the stream
    from the port it pinged), to ``context.peer`` as the plane last learned
    it; until a ping has shown one, datagrams are counted as dropped. A
    frame is spread over ``context.pacing`` of the frame interval in steps
    ≥ 0.5 ms apart, and the first-to-last time is reported as ``send_spread``.
    Used for audio too, with no pacing.
    """

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.spec = spec
        ctx = options.get("context")
        if ctx is None:
            ctx = VideoContext()
            host, port = options.get("host"), options.get("port")
            if host and port:
                ctx.peer = (str(host), int(port))
            ctx.pacing = float(options.get("pacing", 0.5))
        self.ctx = ctx
        if "gso" in options:
            ctx.gso = bool(options["gso"])
        shared = ctx.sock is not None
        if ctx.sock is None:  # standalone (benchmarks, tests): a socket of its own
            ctx.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        super().__init__(UdpTransport(ctx.sock, ctx.peer, gso=ctx.gso, shared=shared),
                         Pacing.share(spec.fps, ctx.pacing), report_spread=True)

    def send(self, batch: PacketBatch) -> None:
        peer = self.ctx.peer
        if peer is None:
            self.transport.drop(len(batch.packets))
            return
        self.transport.peer = peer
        super().send(batch)
