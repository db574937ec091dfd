"""GameStream audio: ``audio_source`` → ``opus`` (48 kHz; stereo, 5.1 or 7.1; 5 ms) → RTP with RS(4,2) FEC.

The channel count and the Opus layout (normal or high quality) are what the
client's ANNOUNCE asked for, out of the layouts the DESCRIBE offered
(:func:`punktfunk_gamestream.wire_rtsp.surround_params`, docs/audio.md).

RTP (version 2, payload type 97, timestamps in milliseconds) carries one Opus
packet each; after every 4 data packets come 2 FEC packets (payload type 127)
whose 12-byte FEC header names the block, followed by Reed-Solomon parity over
the 4 payloads with the fixed matrix moonlight-common-c uses. When the client
asked for audio encryption each payload is AES-128-CBC (PKCS#7) with the IV
``BE u32(rikeyid + sequence)`` followed by 12 zero bytes; parity then covers
the ciphertexts (they are equal-sized for constant-bitrate Opus).

The stages run in the session's audio pipeline (the core's audio runner,
:class:`punktfunk_core.pipeline.AudioPipeline`): the ``gamestream-audio``
packetizer here, the ``gamestream`` sender (unpaced) on the plane's audio
socket to the endpoint the client's audio pings revealed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from punktfunk_core.stages import AccessUnit, PacketBatch, Packetizer, Stage, StreamSpec

from punktfunk_gamestream import fec
from punktfunk_gamestream.wire import AUDIO_DATA_SHARDS, AUDIO_FEC_MATRIX, AUDIO_FEC_PT, AUDIO_FEC_SHARDS, AUDIO_PT

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


@dataclass
class AudioContext:
    """What the plane negotiated for one session's audio (shared by its stages)."""

    packet_ms: int = 5
    #: channels the client asked for (2, 6, 8) and whether in the high-quality layout
    channels: int = 2
    high_quality: bool = False
    #: AES-CBC key when audio encryption was negotiated
    key: bytes | None = None
    rikeyid: int = 0
    sock: Any = None
    peer: tuple[str, int] | None = None
    #: audio packets leave as they are made (the audio clock is the pace)
    pacing: float = 0.0
    gso: bool = False


class GameStreamAudioPacketizer(Packetizer):
    """Opus packets → RTP datagrams with RS(4,2) FEC (stage ``gamestream-audio``)."""

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        ctx = options.get("context") or AudioContext()
        self.ctx = ctx
        self.rtp = AudioPacketizer(ctx.packet_ms, ctx.key, ctx.rikeyid)

    def packetize(self, au: AccessUnit) -> PacketBatch:
        packets = self.rtp.packets_for(au.data)
        return PacketBatch(packets, au.frame_id, au.capture_ns, au.keyframe, sum(map(len, packets)))


def audio_stages(stages: Any, config: dict[str, Any], spec: StreamSpec, ctx: AudioContext) -> tuple[Stage, ...]:
    """The audio source, encoder, packetizer and sender a session's audio runs
    (the stage names from the ``gamestream`` config section); on failure the
    stages made so far are closed."""
    made: list[Stage] = []
    try:
        made.append(stages.create("audio_source", config.get("audio_source", "auto"), spec,
                                  {"channels": ctx.channels}))
        made.append(_create_opus(stages, spec, ctx))
        made.append(stages.create("packetizer", config.get("audio_packetizer", "gamestream-audio"), spec,
                                  {**config.get("audio_packetizer_options", {}), "context": ctx}))
        made.append(stages.create("sender", config.get("audio_sender", "gamestream"), spec,
                                  {**config.get("audio_sender_options", {}), "context": ctx}))
    except BaseException:
        for stage in made:
            try:
                stage.close()
            except Exception:  # noqa: BLE001 - the creation error is the one to report
                pass
        raise
    return tuple(made)


def _create_opus(stages: Any, spec: StreamSpec, ctx: AudioContext) -> Any:
    """The ``opus`` stage at the negotiated frame length, channels and quality; its layout must
    be the one the DESCRIBE announced (the client decodes with that)."""
    from punktfunk_core.media.audio import OPUS_LAYOUTS

    enc = stages.create("audio_encoder", "opus", spec, {"frame_samples": 48 * ctx.packet_ms,
                                                        "channels": ctx.channels, "high_quality": ctx.high_quality})
    want = OPUS_LAYOUTS[(ctx.channels, ctx.high_quality)]
    got = getattr(enc, "layout", None)
    if got is not None and (got.streams, got.coupled, got.mapping) != (want.streams, want.coupled, want.mapping):
        enc.close()
        raise RuntimeError(f"opus: the encoder codes {got}, not the announced {want}")
    return enc
