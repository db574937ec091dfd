"""GameStream audio: ``tone`` → ``opus`` (48 kHz stereo, 5 ms) → RTP with RS(4,2) FEC.

RTP (version 2, payload type 97, timestamps in milliseconds) carries one Opus
packet each; after every 4 data packets come 2 FEC packets (payload type 127)
whose 12-byte FEC header names the block, followed by Reed-Solomon parity over
the 4 payloads with the fixed matrix moonlight-common-c uses. When the client
asked for audio encryption each payload is AES-128-CBC (PKCS#7) with the IV
``BE u32(rikeyid + sequence)`` followed by 12 zero bytes; parity then covers
the ciphertexts (they are equal-sized for constant-bitrate Opus).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from punktfunk_core.stages import StreamSpec

from punktfunk_gamestream import fec
from punktfunk_gamestream.wire import AUDIO_DATA_SHARDS, AUDIO_FEC_MATRIX, AUDIO_FEC_PT, AUDIO_FEC_SHARDS, AUDIO_PT

if TYPE_CHECKING:
    from punktfunk_gamestream.plane import GameStreamPlane, Launch

log = logging.getLogger("punktfunk.gamestream.audio")

_MATRIX = np.array(AUDIO_FEC_MATRIX, dtype=np.uint8)


def cbc_encrypt(key: bytes, rikeyid: int, seq: int, data: bytes) -> bytes:
    iv = struct.pack(">I", (rikeyid + seq) & 0xFFFFFFFF) + bytes(12)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


class AudioPacketizer:
    """Opus packets → RTP datagrams (+ FEC every 4 packets); pure, testable."""

    def __init__(self, packet_ms: int = 5, key: bytes | None = None, rikeyid: int = 0,
                 kernel: fec.FecKernel | None = None) -> None:
        self.packet_ms = packet_ms
        self.key = key
        self.rikeyid = rikeyid
        self.kernel = kernel or fec.best_kernel()
        self.seq = 0
        self.ts = 0
        self.fec_seq = 0
        self._block: list[bytes] = []
        self._block_ts = 0
        self.fec_skipped = 0

    def packets_for(self, opus: bytes) -> list[bytes]:
        seq = self.seq
        payload = cbc_encrypt(self.key, self.rikeyid, seq, opus) if self.key else opus
        out = [struct.pack(">BBHII", 0x80, AUDIO_PT, seq, self.ts & 0xFFFFFFFF, 0) + payload]
        if seq % AUDIO_DATA_SHARDS == 0:
            self._block = []
            self._block_ts = self.ts
        self._block.append(payload)
        self.seq = (seq + 1) & 0xFFFF
        self.ts = (self.ts + self.packet_ms) & 0xFFFFFFFF
        if len(self._block) == AUDIO_DATA_SHARDS:
            out.extend(self._fec(seq - AUDIO_DATA_SHARDS + 1))
            self._block = []
        return out

    def _fec(self, base_seq: int) -> list[bytes]:
        sizes = {len(p) for p in self._block}
        if len(sizes) != 1:
            self.fec_skipped += 1  # variable-size packets: the client cannot use FEC for them
            return []
        size = sizes.pop()
        buf = np.zeros((AUDIO_DATA_SHARDS + AUDIO_FEC_SHARDS, size), dtype=np.uint8)
        for i, p in enumerate(self._block):
            buf[i] = np.frombuffer(p, dtype=np.uint8)
        self.kernel.encode(buf, AUDIO_DATA_SHARDS, AUDIO_FEC_SHARDS, _MATRIX)
        out = []
        for j in range(AUDIO_FEC_SHARDS):
            rtp = struct.pack(">BBHII", 0x80, AUDIO_FEC_PT, self.fec_seq, 0, 0)
            self.fec_seq = (self.fec_seq + 1) & 0xFFFF
            hdr = struct.pack(">BBHII", j, AUDIO_PT, base_seq & 0xFFFF, self._block_ts & 0xFFFFFFFF, 0)
            out.append(rtp + hdr + buf[AUDIO_DATA_SHARDS + j].tobytes())
        return out


class AudioStreamer:
    """One session's audio thread, paced on the monotonic clock."""

    def __init__(self, plane: GameStreamPlane, launch: Launch) -> None:
        ann = launch.announce
        assert ann is not None
        self.plane = plane
        self.peer = launch.audio_peer
        self.packet_ms = ann.audio_packet_ms
        spec = StreamSpec(width=ann.width, height=ann.height, fps=ann.fps, codec=ann.codec)
        stages = plane.host.pm.stages
        cfg = plane.config
        self.source = stages.create("audio_source", cfg.get("audio_source", "tone"), spec, {})
        try:
            self.encoder = _create_opus(stages, spec, self.packet_ms)
        except Exception:
            self.source.close()
            raise
        self.samples = int(getattr(self.encoder, "frame_samples", 48 * self.packet_ms) or 48 * self.packet_ms)
        self.packetizer = AudioPacketizer(self.packet_ms, launch.rikey if ann.audio_encrypted else None,
                                          launch.rikeyid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gamestream-audio", daemon=True)
        self.sent = 0
        #: test hook: drop the data packet with sequence % N == 1 (FEC must repair it)
        self.drop_every = int(cfg.get("test_drop_audio_every", 0))
        self.dropped_on_purpose = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(1.0)

    def _run(self) -> None:
        sock = self.plane.audio_sock
        interval = self.samples / 48_000
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if next_due > now:
                    time.sleep(next_due - now)
                elif now - next_due > 0.2:
                    next_due = now  # fell far behind: do not burst
                next_due += interval
                pcm = self.source.read(self.samples)
                for opus in self.encoder.encode(pcm):
                    for pkt in self.packetizer.packets_for(opus):
                        peer = self.peer
                        if peer is None or sock is None:
                            continue
                        if (self.drop_every and pkt[1] == AUDIO_PT
                                and int.from_bytes(pkt[2:4], "big") % self.drop_every == 1):
                            self.dropped_on_purpose += 1
                            continue
                        try:
                            sock.sendto(pkt, peer)
                            self.sent += 1
                        except OSError:
                            self.plane.count("audio_send_errors")
        except Exception as exc:  # noqa: BLE001 - audio failing never ends the video session
            log.error("GameStream audio stopped: %s", exc, exc_info=exc)
            self.plane.count("audio_failed")
        finally:
            for stage in (self.encoder, self.source):
                try:
                    stage.close()
                except Exception:  # noqa: BLE001
                    log.debug("closing audio stage failed", exc_info=True)


def _create_opus(stages: Any, spec: StreamSpec, packet_ms: int) -> Any:
    """The ``opus`` stage at ``packet_ms`` frames (option names differ between versions)."""
    last: Exception | None = None
    for opts in ({"frame_samples": 48 * packet_ms}, {}):
        try:
            return stages.create("audio_encoder", "opus", spec, opts)
        except ValueError as exc:
            last = exc
    raise last or ValueError("no opus encoder")
