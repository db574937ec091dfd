"""The client's audio: ``PKT_AUDIO`` datagrams → FEC → Opus (PyAV libopus) → PCM.

The host announced the Opus layout in ``session_accept.audio``
(docs/protocol-native.md, "Audio"); the decoder is libopus set up with an
OpusHead carrying that layout, so 5.1 and 7.1 decode like stereo. The PCM
(int16, interleaved in the WAVE channel order) is kept for the last
``keep_s`` seconds (:meth:`AudioReceiver.pcm`) and written to a WAV file when
one was given. Runs on the receive thread; nothing a datagram holds raises.
"""

from __future__ import annotations

import collections
import struct
import wave
from typing import Any

import numpy as np

from punktfunk_native.datapath import NativeReceiver
from punktfunk_native.wire import DIR_AUDIO_HOST_TO_CLIENT, PKT_AUDIO, ProtocolError, get_int

SAMPLE_RATE = 48_000


def opus_head(channels: int, streams: int, coupled: int, mapping: list[int]) -> bytes:
    """An OpusHead (RFC 7845 §5.1) for the layout: family 0 for plain stereo, else 255
    (the mapping as libopus takes it, so the decoded channels come out in our order)."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, SAMPLE_RATE, 0,
                                     0 if channels == 2 and streams == 1 and coupled == 1 else 255)
    if head[-1] == 255:
        head += bytes([streams, coupled, *mapping])
    return head


class AudioReceiver:
    """One session's audio on the client: datagrams in, PCM out, and counters."""

    def __init__(self, key: bytes, layout: dict[str, Any], wav_path: str | None = None, keep_s: float = 30.0) -> None:
        import av

        self.av = av
        channels = get_int(layout, "channels", 2, 8)
        streams = get_int(layout, "streams", 1, 8)
        coupled = get_int(layout, "coupled", 0, streams)
        mapping = layout.get("mapping")
        if (layout.get("codec") != "opus" or get_int(layout, "sample_rate", 8000, 48000) != SAMPLE_RATE
                or not isinstance(mapping, list) or len(mapping) != channels
                or not all(isinstance(m, int) and 0 <= m < streams + coupled for m in mapping)):
            raise ProtocolError(f"the host announced an audio layout this client cannot decode: {layout!r}")
        self.channels = channels
        self.receiver = NativeReceiver(key, DIR_AUDIO_HOST_TO_CLIENT, PKT_AUDIO)
        self.ctx = av.CodecContext.create("libopus", "r")
        self.ctx.extradata = opus_head(channels, streams, coupled, mapping)
        self.packets_decoded = 0
        self.decode_errors = 0
        self.samples = 0
        self._keep = int(keep_s * SAMPLE_RATE)
        self._kept = 0
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._wav: Any = None
        if wav_path:
            self._wav = wave.open(wav_path, "wb")  # noqa: SIM115 - closed in close()
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(SAMPLE_RATE)

    def push(self, pkt: bytes) -> None:
        """One audio datagram (already known to carry ``PKT_AUDIO``)."""
        au = self.receiver.push(pkt)
        if au is None:
            return
        try:
            frames = self.ctx.decode(self.av.Packet(au.data))
        except Exception:  # noqa: BLE001 - InvalidDataError and friends: counted, the next packet decodes
            self.decode_errors += 1
            return
        self.packets_decoded += 1
        for frame in frames:
            self._take(self._int16(frame.to_ndarray()))

    def _int16(self, arr: np.ndarray) -> np.ndarray:
        """PyAV's frame as interleaved int16 (samples, channels), whatever format libopus gave."""
        if arr.dtype == np.int16:  # packed s16: one plane of interleaved samples
            return arr.reshape(-1, self.channels)
        planar = arr.shape[0] == self.channels and arr.shape[0] > 1
        x = np.ascontiguousarray(arr.T if planar else arr.reshape(-1, self.channels))
        return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)

    def _take(self, pcm: np.ndarray) -> None:
        self.samples += len(pcm)
        if self._wav is not None:
            self._wav.writeframes(pcm.tobytes())
        self._chunks.append(pcm)
        self._kept += len(pcm)
        while self._kept - len(self._chunks[0]) >= self._keep:
            self._kept -= len(self._chunks.popleft())

    def pcm(self) -> np.ndarray:
        """The decoded audio of the last ``keep_s`` seconds: int16 (samples, channels)."""
        chunks = list(self._chunks)
        return np.concatenate(chunks) if chunks else np.zeros((0, self.channels), np.int16)

    def summary(self) -> dict[str, Any]:
        r = self.receiver
        return {"audio_channels": self.channels, "audio_packets": self.packets_decoded,
                "audio_lost": r.reasm.frames_unrecoverable, "audio_datagrams_lost": r.packets_lost,
                "audio_recovered": r.reasm.shards_recovered, "audio_decode_errors": self.decode_errors,
                "audio_seconds": round(self.samples / SAMPLE_RATE, 3)}

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        # PyAV before 14 closes a codec context by close(); later ones free it with the object
        close = getattr(self.ctx, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - nothing to save at close
                pass
