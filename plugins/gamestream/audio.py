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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from punktfunk_core.stages import AccessUnit, PacketBatch, Packetizer, Stage, StreamSpec

from punktfunk_gamestream import fec
from punktfunk_gamestream.wire import AUDIO_DATA_SHARDS, AUDIO_FEC_MATRIX, AUDIO_FEC_PT, AUDIO_FEC_SHARDS, AUDIO_PT

_MATRIX = np.array(AUDIO_FEC_MATRIX, dtype=np.uint8)
_RTP = struct.Struct(">BBHII")
#: an FEC datagram's RTP header and the 12-byte audio FEC header after it
_FEC_HEADERS = struct.Struct(">BBHIIBBHII")
_AES_BLOCK = 16
_int = int.from_bytes


class CbcEncryptor:
    """AES-128-CBC with PKCS#7 of one payload per call, the IV ``BE u32(rikeyid + seq)`` || 12 zero bytes.

    The IV changes with every packet, and a cryptography CBC context is made per IV
    (most of a packet's cost before). One CBC context made once carries on from the
    last ciphertext block ``L`` it wrote instead: feeding it ``P[0] XOR IV XOR L`` as
    the first block gives ``AES(P[0] XOR IV)``, the block a fresh context with this
    IV would write, and the rest chains as usual. Same bytes as CBC per packet."""

    def __init__(self, key: bytes, rikeyid: int) -> None:
        self._cbc = Cipher(algorithms.AES(key), modes.CBC(bytes(_AES_BLOCK))).encryptor().update
        self._last = 0  # the context's chaining block (its IV before the first call)
        self.rikeyid = rikeyid

    def encrypt(self, seq: int, data: bytes) -> bytes:
        pad = _AES_BLOCK - len(data) % _AES_BLOCK
        plain = data + bytes((pad,)) * pad
        iv = ((self.rikeyid + seq) & 0xFFFFFFFF) << 96  # the IV as a 128-bit integer
        first = _int(plain[:_AES_BLOCK], "big") ^ iv ^ self._last
        out = self._cbc(first.to_bytes(_AES_BLOCK, "big") + plain[_AES_BLOCK:])
        self._last = _int(out[-_AES_BLOCK:], "big")
        return out


class AudioPacketizer:
    """Opus packets → RTP datagrams (+ FEC every 4 packets); pure, testable.

    Each payload is copied once into a block buffer kept from block to block
    (rows 0..3 data, 4..5 parity), which the FEC kernel fills in place."""

    def __init__(self, packet_ms: int = 5, key: bytes | None = None, rikeyid: int = 0,
                 kernel: fec.FecKernel | None = None) -> None:
        self.packet_ms = packet_ms
        self.key = key
        self.rikeyid = rikeyid
        self._cbc = CbcEncryptor(key, rikeyid) if key else None
        self.kernel = kernel or fec.best_kernel()
        self.seq = 0
        self.ts = 0
        self.fec_seq = 0
        self._shards = np.zeros((AUDIO_DATA_SHARDS + AUDIO_FEC_SHARDS, 0), dtype=np.uint8)
        self._rows: list[memoryview] = []
        #: the payload size of the block being collected; None once its packets differ in size
        self._size: int | None = 0
        self._block_ts = 0
        self.fec_skipped = 0

    def packets_for(self, opus: bytes) -> list[bytes]:
        seq, ts = self.seq, self.ts
        payload = self._cbc.encrypt(seq, opus) if self._cbc is not None else opus
        out = [_RTP.pack(0x80, AUDIO_PT, seq, ts, 0) + payload]
        at = seq % AUDIO_DATA_SHARDS
        size = len(payload)
        if at == 0:
            self._block_ts = ts
            if size != self._shards.shape[1]:  # CBR: once per session
                self._shards = np.zeros((AUDIO_DATA_SHARDS + AUDIO_FEC_SHARDS, size), dtype=np.uint8)
                self._rows = [row.data for row in self._shards]
            self._size = size
        if size == self._size:
            self._rows[at][:] = payload
        else:
            self._size = None
        self.seq = (seq + 1) & 0xFFFF
        self.ts = (ts + self.packet_ms) & 0xFFFFFFFF
        if at == AUDIO_DATA_SHARDS - 1:
            if self._size is None:
                self.fec_skipped += 1  # variable-size packets: the client cannot use FEC for them
            else:
                out += self._fec(seq - AUDIO_DATA_SHARDS + 1)
        return out

    def _fec(self, base_seq: int) -> list[bytes]:
        self.kernel.encode(self._shards, AUDIO_DATA_SHARDS, AUDIO_FEC_SHARDS, _MATRIX)
        out = []
        for j in range(AUDIO_FEC_SHARDS):
            out.append(_FEC_HEADERS.pack(0x80, AUDIO_FEC_PT, self.fec_seq, 0, 0, j, AUDIO_PT, base_seq & 0xFFFF,
                                         self._block_ts, 0) + self._rows[AUDIO_DATA_SHARDS + j])
            self.fec_seq = (self.fec_seq + 1) & 0xFFFF
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
