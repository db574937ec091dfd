"""BGRA screen pixels → I420/NV12 with libyuv, through ctypes.

A desktop frame arrives as packed BGRA (X11's 32-bit TrueColor). swscale's
BGRA → yuv420p path (PyAV ``reformat``) is the generic scaler and costs
about 7 ms per 1080p frame on the 2-core development VM; libyuv's
``ARGBToI420`` (libyuv's "ARGB" is B, G, R, A in memory) does the same
conversion with AVX2 in about 0.4 ms, writing straight into our plane
buffers (docs/benchmarks.md, "Desktop capture"). Both use the BT.601
limited-range matrix, so pictures match swscale's within rounding.

libyuv is Chromium's converter; Debian/Ubuntu ship it as ``libyuv0``. When
it is not installed :func:`converter` returns None and the capture source
uses swscale.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

from punktfunk_core.media.clib import load_library

#: libyuv's entry points by our pixel format: (src, stride, then each plane and its stride, w, h)
_FUNCTIONS = {"i420": ("ARGBToI420", 3), "nv12": ("ARGBToNV12", 2)}


class Converter:
    """libyuv's BGRA → 4:2:0 conversions."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._fns = {}
        for fmt, (name, planes) in _FUNCTIONS.items():
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int] * (1 + planes) + [ctypes.c_int, ctypes.c_int]
            fn.restype = ctypes.c_int
            self._fns[fmt] = fn

    def convert(self, bgra: np.ndarray, fmt: str, planes: tuple[np.ndarray, ...]) -> None:
        """Write the (h, w, 4) BGRA picture into ``planes`` (same size) in ``fmt``."""
        h, w = bgra.shape[:2]
        if planes[0].shape != (h, w):
            raise ValueError(f"planes are {planes[0].shape[::-1]}, the picture is {w}x{h}")
        args: list[int] = [bgra.ctypes.data, bgra.strides[0]]
        for p in planes:
            args += [p.ctypes.data, p.strides[0]]
        if self._fns[fmt](*args, w, h) != 0:
            raise ValueError(f"libyuv refused a {w}x{h} BGRA → {fmt} conversion")


@lru_cache(maxsize=1)
def converter() -> Converter | None:
    """libyuv when it loads and has the conversions, else None (use swscale)."""
    found = load_library("yuv", "libyuv.so.0", tuple(fn for fn, _ in _FUNCTIONS.values()))
    return Converter(*found) if found else None
