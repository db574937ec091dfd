"""libopus's multistream encoder, through ctypes.

The ``opus`` stage codes 200 packets a second. Through PyAV each one costs a
frame object built from the array, a packet object and a copy out of it, on
top of libopus itself; here the frame is copied into an input buffer made once
and one ``opus_multistream_encode`` call writes into an output buffer made once
(docs/audio.md, "Why libopus through ctypes"). The encoder is created as
Sunshine creates its own: ``opus_multistream_encoder_create`` with the
layout's streams, coupled streams and mapping, and the restricted low-delay
application (CELT only, 2.5 ms look-ahead), then a bitrate and CBR; libopus's
default complexity is kept.

libopus's ABI is stable since 1.0 (the functions and request numbers below
are from ``opus_defines.h`` / ``opus_multistream.h``); Debian/Ubuntu ship it
as ``libopus0``.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from punktfunk_core.media.clib import load_library

#: ``opus_defines.h``: the applications, by the names FFmpeg's wrapper uses for them
APPLICATIONS = {"voip": 2048, "audio": 2049, "lowdelay": 2051}  # lowdelay = OPUS_APPLICATION_RESTRICTED_LOWDELAY
OPUS_SET_BITRATE = 4002
OPUS_SET_VBR = 4006
OPUS_SET_COMPLEXITY = 4010
OPUS_GET_COMPLEXITY = 4011
OPUS_GET_LOOKAHEAD = 4027
#: the largest packet we ask for: one per Opus stream is at most 1275 bytes
MAX_PACKET = 1275


class LibOpus:
    """The few entry points the encoder needs, typed once."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.path = path
        lib.opus_multistream_encoder_create.restype = ctypes.c_void_p
        lib.opus_multistream_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                        ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_multistream_encode.restype = ctypes.c_int
        lib.opus_multistream_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                ctypes.c_int32]
        lib.opus_multistream_encoder_destroy.restype = None
        lib.opus_multistream_encoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_strerror.restype = ctypes.c_char_p
        lib.opus_strerror.argtypes = [ctypes.c_int]
        lib.opus_get_version_string.restype = ctypes.c_char_p
        # opus_multistream_encoder_ctl is variadic: its arguments are typed per call (c_void_p, c_int)
        lib.opus_multistream_encoder_ctl.restype = ctypes.c_int
        self.lib = lib
        self.version = (lib.opus_get_version_string() or b"").decode()

    def strerror(self, code: int) -> str:
        return (self.lib.opus_strerror(code) or b"").decode()


def _wheel_copies() -> tuple[str, ...]:
    """libopus inside PyAV's wheel (``av.libs/libopus-<hash>.so.*``, as auditwheel names it)."""
    spec = importlib.util.find_spec("av")
    if spec is None or spec.origin is None:
        return ()
    libs = Path(spec.origin).parent.parent / "av.libs"
    return tuple(str(p) for p in sorted(libs.glob("libopus*.so*")))


@lru_cache(maxsize=1)
def load() -> LibOpus | None:
    """libopus when it loads and has the multistream encoder, else None: the system's
    (``libopus0``), else the copy PyAV's wheel bundles (a pip dependency already), so a
    fresh ``pip install`` streams audio with nothing installed by hand."""
    found = load_library("opus", "libopus.so.0", ("opus_multistream_encode",), _wheel_copies())
    return LibOpus(*found) if found else None


def missing() -> str:
    """"" when libopus is there, else what to install."""
    return "" if load() is not None else "libopus is not installed (Debian/Ubuntu: apt-get install libopus0)"


class MultistreamEncoder:
    """One ``OpusMSEncoder``: 48 kHz int16 interleaved in, one packet out per call."""

    def __init__(self, channels: int, streams: int, coupled: int, mapping: tuple[int, ...], application: str,
                 bitrate: int, frame_samples: int) -> None:
        opus = load()
        if opus is None:
            raise RuntimeError(missing())
        self._opus = opus
        self.channels, self.frame_samples = channels, frame_samples
        err = ctypes.c_int()
        handle = opus.lib.opus_multistream_encoder_create(48_000, channels, streams, coupled, bytes(mapping),
                                                          APPLICATIONS[application], ctypes.byref(err))
        if err.value != 0 or not handle:
            raise RuntimeError(f"libopus refused the layout {channels}/{streams}/{coupled}/{list(mapping)}: "
                               f"{opus.strerror(err.value)}")
        self._handle: ctypes.c_void_p | None = ctypes.c_void_p(handle)
        try:
            self._set(OPUS_SET_BITRATE, bitrate)
            self._set(OPUS_SET_VBR, 0)
        except BaseException:
            self.close()
            raise
        self._out = ctypes.create_string_buffer(MAX_PACKET * streams)
        # the frame is copied into an input buffer made once (about 0.5 µs): asking a new array
        # for its address (``ndarray.ctypes``) costs several times that, every frame
        self._pcm = np.zeros((frame_samples, channels), np.int16)
        self._pcm_at = self._pcm.ctypes.data
        self._encode = opus.lib.opus_multistream_encode

    def _set(self, request: int, value: int) -> None:
        code = self._opus.lib.opus_multistream_encoder_ctl(self._handle, ctypes.c_int(request), ctypes.c_int(value))
        if code != 0:
            raise RuntimeError(f"libopus refused request {request} = {value}: {self._opus.strerror(code)}")

    def get(self, request: int) -> int:
        """An ``OPUS_GET_*`` value (complexity, look-ahead)."""
        value = ctypes.c_int()
        code = self._opus.lib.opus_multistream_encoder_ctl(self._handle, ctypes.c_int(request), ctypes.byref(value))
        if code != 0:
            raise RuntimeError(f"libopus refused request {request}: {self._opus.strerror(code)}")
        return value.value

    def encode(self, pcm: np.ndarray) -> bytes:
        """One packet from ``frame_samples`` int16 frames shaped ``(frame_samples, channels)``."""
        if self._handle is None:
            raise RuntimeError("opus: the encoder is closed")
        np.copyto(self._pcm, pcm, casting="no")
        n = self._encode(self._handle, self._pcm_at, self.frame_samples, self._out, len(self._out))
        if n < 0:
            raise RuntimeError(f"opus: libopus could not encode: {self._opus.strerror(n)}")
        return ctypes.string_at(self._out, n)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            self._opus.lib.opus_multistream_encoder_destroy(handle)
