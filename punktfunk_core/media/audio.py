"""Audio stages: the ``tone`` source and the ``opus`` encoder (libopus through ctypes).

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
from typing import Any

import numpy as np

from punktfunk_core.media.libopus import MultistreamEncoder
from punktfunk_core.media.options import AUDIO_SAMPLE_RATE, OpusOptions, ToneOptions
from punktfunk_core.stages import AudioEncoder, AudioSource, StreamSpec

SAMPLE_RATE = AUDIO_SAMPLE_RATE
#: the interleaved order of PCM channels (PulseAudio names) for each channel count
CHANNEL_ORDER: dict[int, tuple[str, ...]] = {
    2: ("front-left", "front-right"),
    6: ("front-left", "front-right", "front-center", "lfe", "rear-left", "rear-right"),
    8: ("front-left", "front-right", "front-center", "lfe", "rear-left", "rear-right", "side-left", "side-right"),
}


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
#: The normal-quality mappings are the ones libopus's surround layout gives: FL+FR,
#: BL+BR (and SL+SR) coupled, FC and LFE mono. The encoder is created with them.
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


class OpusEncoder(AudioEncoder):
    """Opus through libopus's multistream encoder (:mod:`punktfunk_core.media.libopus`): 48 kHz,
    restricted low delay (``application`` "lowdelay"), CBR, libopus's default complexity.

    Options: :class:`punktfunk_core.media.options.OpusOptions` (``channels`` 2/6/8,
    ``high_quality``: see :data:`OPUS_LAYOUTS`; ``bitrate_kbps`` 0 = the layout's).
    ``encode(pcm)`` takes exactly ``frame_samples`` frames of int16 shaped (n, channels)
    and returns one Opus packet in a list. ``layout`` says streams, coupled streams and
    mapping, for the protocol to announce: the encoder is created with exactly those,
    as Sunshine creates its own.
    """

    codec = "opus"

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        opts = OpusOptions.take("opus", options)  # the bitrate's range per channel count included
        self.channels = channels = opts.channels
        table = OPUS_LAYOUTS[(channels, opts.high_quality)]
        kbps = opts.bitrate_kbps or table.bitrate_kbps
        self.frame_samples = opts.frame_samples
        if opts.frame_ms:
            self.frame_samples = round(opts.frame_ms * SAMPLE_RATE / 1000)
        self.bitrate_kbps = kbps
        #: the multistream configuration the packets are coded in
        self.layout = OpusLayout(channels, table.streams, table.coupled, table.mapping, kbps, opts.high_quality)
        self._enc = MultistreamEncoder(channels, table.streams, table.coupled, table.mapping, opts.application,
                                       kbps * 1000, self.frame_samples)
        self._shape = (self.frame_samples, channels)

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        if pcm.dtype != np.int16 or pcm.shape != self._shape:
            raise ValueError(f"opus: expected int16 PCM shaped {self._shape}, got {pcm.dtype} {pcm.shape}")
        return [self._enc.encode(pcm)]  # copied into the encoder's own buffer, whatever its strides

    def close(self) -> None:
        self._enc.close()
