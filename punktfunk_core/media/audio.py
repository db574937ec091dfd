"""Audio stages: the ``tone`` source and the ``opus`` encoder (PyAV libopus).

``tone`` produces a phase-continuous sine (48 kHz, s16, 2/6/8 channels) so
that a receiver can check pitch and continuity after decoding. ``opus``
encodes one packet per call with libopus in low-delay mode (default 5 ms
frames = 240 samples) and returns raw Opus packets, the payload both
protocols carry. Stereo is one coupled stream; 5.1 and 7.1 are Opus
multistream, in the layouts GameStream clients decode (:data:`OPUS_LAYOUTS`),
and the encoder says which one it uses (:attr:`OpusEncoder.layout`).

PCM is interleaved in the WAVE / FFmpeg / GameStream channel order
(:data:`CHANNEL_ORDER`): FL FR FC LFE BL BR SL SR. The layout's ``mapping``
is libopus's: ``mapping[i]`` is the coded channel that carries input channel
``i``, so a decoder created with ``opus_multistream_decoder_create(48000,
channels, streams, coupled, mapping)`` gives back the same order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from punktfunk_core.media.options import AUDIO_SAMPLE_RATE, OpusOptions, ToneOptions
from punktfunk_core.stages import AudioEncoder, AudioSource, StreamSpec

SAMPLE_RATE = AUDIO_SAMPLE_RATE
#: the interleaved order of PCM channels (PulseAudio names) for each channel count
CHANNEL_ORDER: dict[int, tuple[str, ...]] = {
    2: ("front-left", "front-right"),
    6: ("front-left", "front-right", "front-center", "lfe", "rear-left", "rear-right"),
    8: ("front-left", "front-right", "front-center", "lfe", "rear-left", "rear-right", "side-left", "side-right"),
}
#: FFmpeg's name of each layout
_AV_LAYOUT = {2: "stereo", 6: "5.1", 8: "7.1"}
#: where each of our channels sits in Vorbis order (FL FC FR [SL SR] BL BR LFE), which
#: is the order of the mapping an Ogg Opus header (family 1) carries
_VORBIS_POSITION = {6: (0, 2, 1, 5, 3, 4), 8: (0, 2, 1, 7, 5, 6, 3, 4)}


@dataclass(frozen=True, slots=True)
class OpusLayout:
    """One Opus multistream configuration: what a decoder must be told."""

    channels: int
    streams: int
    coupled: int
    #: libopus mapping: coded channel of each input channel (input in CHANNEL_ORDER)
    mapping: tuple[int, ...]
    bitrate_kbps: int
    high_quality: bool = False


#: The layouts GameStream hosts use (Sunshine's stream_configs, the bitrates included):
#: normal quality couples channel pairs, high quality codes every channel on its own.
#: The normal-quality mappings are the ones libopus's surround layout gives (and the
#: encoder reports): FL+FR, BL+BR (and SL+SR) coupled, FC and LFE mono.
OPUS_LAYOUTS: dict[tuple[int, bool], OpusLayout] = {
    (2, False): OpusLayout(2, 1, 1, (0, 1), 96),
    (2, True): OpusLayout(2, 1, 1, (0, 1), 512, True),
    (6, False): OpusLayout(6, 4, 2, (0, 1, 4, 5, 2, 3), 256),
    (6, True): OpusLayout(6, 6, 0, (0, 1, 2, 3, 4, 5), 1536, True),
    (8, False): OpusLayout(8, 5, 3, (0, 1, 6, 7, 4, 5, 2, 3), 450),
    (8, True): OpusLayout(8, 8, 0, (0, 1, 2, 3, 4, 5, 6, 7), 2048, True),
}


class ToneSource(AudioSource):
    """A sine tone (options: :class:`punktfunk_core.media.options.ToneOptions`; every
    channel carries the tone). Consecutive reads continue the wave without a phase jump."""

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        opts = ToneOptions.take("tone", options)
        self.frequency = opts.frequency
        self.amplitude = opts.amplitude
        self.channels = opts.channels
        self._step = 2 * math.pi * self.frequency / SAMPLE_RATE
        self._phase = 0.0
        self._ramp: np.ndarray = np.arange(0, dtype=np.float64)

    def read(self, samples: int) -> np.ndarray:
        if samples <= 0:
            raise ValueError("tone: samples must be positive")
        self.capture_ns = time.monotonic_ns()
        if self._ramp.size != samples:
            self._ramp = np.arange(samples, dtype=np.float64) * self._step
        wave = np.sin(self._phase + self._ramp) * (self.amplitude * 32767.0)
        # keep the phase small so float precision does not drift over hours
        self._phase = math.fmod(self._phase + samples * self._step, 2 * math.pi)
        mono = wave.astype(np.int16)
        return np.repeat(mono[:, None], self.channels, axis=1)


def _layout_from_header(head: bytes, channels: int) -> tuple[int, int, tuple[int, ...]]:
    """(streams, coupled, libopus mapping in our channel order) from the encoder's OpusHead."""
    if len(head) < 19 or head[:8] != b"OpusHead" or head[9] != channels:
        raise RuntimeError("opus: the encoder wrote no usable OpusHead")
    family = head[18]
    if family == 0:
        return 1, channels - 1, tuple(range(channels))
    if len(head) < 21 + channels:
        raise RuntimeError("opus: the encoder's OpusHead has no channel mapping")
    streams, coupled, mapping = head[19], head[20], tuple(head[21:21 + channels])
    if family == 1:  # the header lists Vorbis order; ours is FFmpeg's
        mapping = tuple(mapping[pos] for pos in _VORBIS_POSITION[channels])
    return streams, coupled, mapping


class OpusEncoder(AudioEncoder):
    """Opus through PyAV libopus: 48 kHz, low-delay application, CBR.

    Options: :class:`punktfunk_core.media.options.OpusOptions` (``channels`` 2/6/8,
    ``high_quality``: see :data:`OPUS_LAYOUTS`; ``bitrate_kbps`` 0 = the layout's).
    ``encode(pcm)`` takes exactly ``frame_samples`` frames of int16 shaped (n, channels)
    and returns the Opus packets produced (one per call in steady state). ``layout``
    says streams, coupled streams and mapping, for the protocol to announce.
    """

    codec = "opus"

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        opts = OpusOptions.take("opus", options)  # the bitrate's range per channel count included
        self.channels = channels = opts.channels
        kbps = opts.bitrate_kbps or OPUS_LAYOUTS[(channels, opts.high_quality)].bitrate_kbps
        self.frame_samples = opts.frame_samples
        if opts.frame_ms:
            self.frame_samples = round(opts.frame_ms * SAMPLE_RATE / 1000)
        self.bitrate_kbps = kbps
        self._av_layout = _AV_LAYOUT[channels]
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = self._av_layout
        ctx.format = "s16"
        ctx.bit_rate = kbps * 1000
        ctx.time_base = Fraction(1, SAMPLE_RATE)
        ms = self.frame_samples * 1000 / SAMPLE_RATE
        options_av = {"application": opts.application, "frame_duration": f"{ms:g}", "vbr": "off"}
        if opts.high_quality and channels > 2:
            options_av["mapping_family"] = "255"  # one mono stream a channel, in input order
        ctx.options = options_av
        ctx.open()
        streams, coupled, mapping = _layout_from_header(bytes(ctx.extradata or b""), channels)
        #: the multistream configuration the packets are coded in
        self.layout = OpusLayout(channels, streams, coupled, mapping, kbps, opts.high_quality)
        self._ctx: av.AudioCodecContext | None = ctx
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        if pcm.dtype != np.int16 or pcm.shape != (self.frame_samples, self.channels):
            raise ValueError(f"opus: expected int16 PCM shaped ({self.frame_samples}, {self.channels}), "
                             f"got {pcm.dtype} {pcm.shape}")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16",
                                           layout=self._av_layout)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += self.frame_samples
        if self._ctx is None:
            raise RuntimeError("opus: the encoder is closed")
        return [bytes(p) for p in self._ctx.encode(frame)]

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                ctx.encode(None)
            except Exception:  # noqa: BLE001 - nothing to save at close
                pass
