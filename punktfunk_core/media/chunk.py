"""Protocol-neutral packetizer ``chunk`` and senders ``udp`` and ``null``.

Used by the loopback diagnostic session and benchmarks, not by a real
protocol. A ``chunk`` datagram is a 9-byte header followed by up to
``payload_size`` bytes of the access unit::

    frame_id u32 | index u16 | count u16 | flags u8 (bit 0: keyframe)   (big-endian)

:class:`ChunkAssembler` puts access units back together on the receiving
side and counts (never raises on) malformed or incomplete input.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from punktfunk_core.media.options import ChunkOptions, NoOptions, UdpOptions
from punktfunk_core.stages import AccessUnit, PacketBatch, Packetizer, Sender, StreamSpec
from punktfunk_core.transport import DatagramSender, UdpTransport

HEADER = struct.Struct("!IHHB")
FLAG_KEYFRAME = 1
MAX_CHUNKS = 0xFFFF


class ChunkPacketizer(Packetizer):
    """Splits an access unit into datagrams of at most ``payload_size`` bytes
    of payload (option, default 1200) plus the 9-byte header."""

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        self.payload_size = ChunkOptions.take("chunk", options).payload_size

    def packetize(self, au: AccessUnit) -> PacketBatch:
        data = memoryview(au.data)
        size = self.payload_size
        count = max(1, -(-len(data) // size))
        if count > MAX_CHUNKS:
            raise ValueError(f"chunk: access unit of {len(data)} bytes needs {count} datagrams (max {MAX_CHUNKS})")
        fid = au.frame_id & 0xFFFFFFFF
        flags = FLAG_KEYFRAME if au.keyframe else 0
        pack = HEADER.pack
        packets = [pack(fid, i, count, flags) + data[i * size : (i + 1) * size] for i in range(count)]
        wire = len(data) + count * HEADER.size
        # every datagram but the last is full: the sender may batch them (GSO)
        return PacketBatch(packets, au.frame_id, au.capture_ns, au.keyframe, wire_bytes=wire,
                           datagram_size=size + HEADER.size if count > 1 else 0)


class ChunkAssembler:
    """Receiver side of ``chunk``: feed datagrams, get ``(frame_id, keyframe, data)``
    when every chunk of a frame has arrived. Frames older than the newest
    completed one are given up and counted in ``incomplete``."""

    def __init__(self, max_pending: int = 16) -> None:
        self.max_pending = max_pending
        self.malformed = 0
        self.incomplete = 0
        self._pending: dict[int, tuple[int, int, dict[int, bytes]]] = {}

    def feed(self, datagram: bytes) -> tuple[int, bool, bytes] | None:
        if len(datagram) < HEADER.size:
            self.malformed += 1
            return None
        fid, idx, count, flags = HEADER.unpack_from(datagram)
        if count == 0 or idx >= count:
            self.malformed += 1
            return None
        entry = self._pending.get(fid)
        if entry is None:
            if len(self._pending) >= self.max_pending:
                self._pending.pop(min(self._pending))
                self.incomplete += 1
            entry = self._pending[fid] = (count, flags, {})
        if entry[0] != count:
            self.malformed += 1
            return None
        entry[2][idx] = bytes(datagram[HEADER.size :])
        if len(entry[2]) < count:
            return None
        del self._pending[fid]
        for old in [f for f in self._pending if f < fid]:
            del self._pending[old]
            self.incomplete += 1
        parts = entry[2]
        return fid, bool(flags & FLAG_KEYFRAME), b"".join(parts[i] for i in range(count))


class UdpSender(DatagramSender):
    """Sends every datagram to ``host``:``port`` (options; port required)
    through the core's UDP sender, unpaced, on a connected socket (GSO where
    the kernel can). Datagrams the kernel refuses (full socket buffer, no
    listener) are counted in ``send_dropped``."""

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        opts = UdpOptions.take("udp", options)
        infos = socket.getaddrinfo(opts.host, opts.port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        self.address = addr
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
        super().__init__(UdpTransport(sock, connected=True, sndbuf=opts.sndbuf))


class NullSender(Sender):
    """Discards every batch, counting packets and bytes (benchmarks)."""

    waits = False

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        NoOptions.take("null", options)
        self.send_dropped = 0
        self.bytes_sent = 0
        self.packets_sent = 0

    def send(self, batch: PacketBatch) -> None:
        self.packets_sent += len(batch.packets)
        self.bytes_sent += sum(map(len, batch.packets))
