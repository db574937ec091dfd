"""Audio stages: the ``tone`` source and the ``opus`` encoder (PyAV libopus).

``tone`` produces a phase-continuous sine (48 kHz, stereo, s16) so that a
receiver can check pitch and continuity after decoding. ``opus`` encodes one
packet per call with libopus in low-delay mode (default 5 ms frames = 240
samples) and returns raw Opus packets, the payload both protocols carry.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import av
import numpy as np

from punktfunk_core.media.options import int_range, one_of, take_options
from punktfunk_core.stages import AudioEncoder, AudioSource, StreamSpec

SAMPLE_RATE = 48_000
CHANNELS = 2
#: Opus frame sizes at 48 kHz (2.5, 5, 10, 20, 40, 60 ms)
OPUS_FRAME_SAMPLES = (120, 240, 480, 960, 1920, 2880)


def _fraction(value: Any) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{v} is not in 0..1")
    return v


def _frequency(value: Any) -> float:
    v = float(value)
    if not 1.0 <= v < SAMPLE_RATE / 2:
        raise ValueError(f"{v} Hz is not in 1..{SAMPLE_RATE // 2} Hz")
    return v


def _frame_ms(value: Any) -> float:
    v = float(value)
    if v and round(v * SAMPLE_RATE / 1000) not in OPUS_FRAME_SAMPLES:
        raise ValueError(f"{v} ms is not an Opus frame duration (2.5, 5, 10, 20, 40, 60)")
    return v


class ToneSource(AudioSource):
    """A sine tone. Options: ``frequency`` (Hz, default 440), ``amplitude``
    (0..1 of full scale, default 0.25). Consecutive reads continue the wave
    without a phase jump."""

    sample_rate = SAMPLE_RATE
    channels = CHANNELS

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        opts = take_options("tone", options, {"frequency": 440.0, "amplitude": 0.25},
                            {"frequency": _frequency, "amplitude": _fraction})
        self.frequency = opts["frequency"]
        self.amplitude = opts["amplitude"]
        self._step = 2 * math.pi * self.frequency / SAMPLE_RATE
        self._phase = 0.0
        self._ramp: np.ndarray = np.arange(0, dtype=np.float64)

    def read(self, samples: int) -> np.ndarray:
        if samples <= 0:
            raise ValueError("tone: samples must be positive")
        if self._ramp.size != samples:
            self._ramp = np.arange(samples, dtype=np.float64) * self._step
        wave = np.sin(self._phase + self._ramp) * (self.amplitude * 32767.0)
        # keep the phase small so float precision does not drift over hours
        self._phase = math.fmod(self._phase + samples * self._step, 2 * math.pi)
        mono = wave.astype(np.int16)
        return np.repeat(mono[:, None], CHANNELS, axis=1)


class OpusEncoder(AudioEncoder):
    """Opus through PyAV libopus: 48 kHz stereo, low-delay application, CBR.

    Options: ``frame_samples`` (120/240/480/960/1920/2880, default 240 = 5 ms)
    or ``frame_ms`` (2.5/5/10/20/40/60, wins when set), ``bitrate_kbps`` (default 128), ``application`` (lowdelay/audio/voip,
    default lowdelay). ``encode(pcm)`` takes exactly ``frame_samples`` frames
    of int16 shaped (n, 2) and returns the Opus packets produced (one per
    call in steady state).
    """

    codec = "opus"

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        opts = take_options("opus", options, {"frame_samples": 240, "frame_ms": 0.0, "bitrate_kbps": 128,
                                              "application": "lowdelay"},
                            {"frame_samples": lambda v: int(one_of(*map(str, OPUS_FRAME_SAMPLES))(str(v))),
                             "frame_ms": _frame_ms,
                             "bitrate_kbps": int_range(6, 510),
                             "application": one_of("lowdelay", "audio", "voip")})
        self.frame_samples = opts["frame_samples"]
        if opts["frame_ms"]:
            self.frame_samples = round(opts["frame_ms"] * SAMPLE_RATE / 1000)
        self.bitrate_kbps = opts["bitrate_kbps"]
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "s16"
        ctx.bit_rate = self.bitrate_kbps * 1000
        ctx.time_base = Fraction(1, SAMPLE_RATE)
        ms = self.frame_samples * 1000 / SAMPLE_RATE
        ctx.options = {"application": opts["application"], "frame_duration": f"{ms:g}", "vbr": "off"}
        ctx.open()
        self._ctx = ctx
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        if pcm.dtype != np.int16 or pcm.shape != (self.frame_samples, CHANNELS):
            raise ValueError(f"opus: expected int16 PCM shaped ({self.frame_samples}, {CHANNELS}), "
                             f"got {pcm.dtype} {pcm.shape}")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += self.frame_samples
        return [bytes(p) for p in self._ctx.encode(frame)]

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                ctx.encode(None)
            except Exception:  # noqa: BLE001 - nothing to save at close
                pass
