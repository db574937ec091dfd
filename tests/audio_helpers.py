"""Audio checks shared by the tests: pitch of a signal, and libopus's own multistream decoder.

The decoder is libopus through ctypes, called exactly as a Moonlight client calls it
(``opus_multistream_decoder_create(48000, channels, streams, coupled, mapping)``), so a
layout that decodes here decodes there. Debian/Ubuntu package: ``libopus0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence

import numpy as np

MAX_FRAME = 5760  # 120 ms at 48 kHz: the longest Opus packet


def peak_hz(mono: np.ndarray, rate: int = 48_000) -> float:
    """The dominant frequency of a signal (Hann window; zero-padded to 4 s, so the peak
    of a short piece is placed to a quarter hertz)."""
    mono = np.asarray(mono, dtype=np.float64)
    n = max(mono.size, 4 * rate)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size), n))
    return float(np.argmax(spectrum) * rate / n)


def libopus() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("opus")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.opus_multistream_decoder_create.restype = ctypes.c_void_p
    lib.opus_multistream_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                    ctypes.POINTER(ctypes.c_ubyte), ctypes.POINTER(ctypes.c_int)]
    lib.opus_multistream_decode.restype = ctypes.c_int
    lib.opus_multistream_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                            ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int]
    lib.opus_multistream_decoder_destroy.argtypes = [ctypes.c_void_p]
    return lib


class MultistreamDecoder:
    """libopus's multistream decoder for one layout; counts packets it refused."""

    def __init__(self, lib: ctypes.CDLL, channels: int, streams: int, coupled: int, mapping: Sequence[int]) -> None:
        self.lib, self.channels = lib, channels
        err = ctypes.c_int()
        table = (ctypes.c_ubyte * channels)(*mapping)
        self._dec = lib.opus_multistream_decoder_create(48_000, channels, streams, coupled, table, ctypes.byref(err))
        if err.value != 0 or not self._dec:
            raise ValueError(f"libopus refused the layout {channels}/{streams}/{coupled}/{list(mapping)}: {err.value}")
        self._pcm = (ctypes.c_int16 * (MAX_FRAME * channels))()
        self.failed = 0

    def decode(self, packet: bytes) -> np.ndarray:
        n = self.lib.opus_multistream_decode(self._dec, packet, len(packet), self._pcm, MAX_FRAME, 0)
        if n <= 0:
            self.failed += 1
            return np.zeros((0, self.channels), np.int16)
        return np.ctypeslib.as_array(self._pcm)[:n * self.channels].reshape(n, self.channels).copy()

    def close(self) -> None:
        if self._dec:
            self.lib.opus_multistream_decoder_destroy(self._dec)
            self._dec = None
