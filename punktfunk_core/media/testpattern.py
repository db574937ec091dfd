"""The ``testpattern`` capture source: moving synthetic content with a frame stamp.

The picture is generated directly in the encoder's input format (I420 or
NV12). A periodic pattern is precomputed once on a tile twice the picture's
size; each frame is a window into that tile shifted by ``speed`` pixels per
frame (diagonally), copied into one of a few reused output buffers, and the
frame id + capture time are drawn with :func:`stamp.draw_stamp`. Per frame
that is one strided copy of the picture and one small store: no per-pixel
Python, no colour conversion.

Once the session's input opens, the source draws a **pointer marker**: a
white square of :data:`MARKER` pixels centred where the client's pointing
input put the pointer (:class:`~punktfunk_core.inputevents.ScreenPointer`,
read once per frame, no lock), so a client can measure click-to-photon on
the test pattern as on a desktop capture. No marker before the first
pointing event.

Like every builtin capture source, the planes of a returned frame are reused
buffers: they stay valid for the next two grabs (the encoder consumes a frame
inside ``submit``); copy them to keep a picture longer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from punktfunk_core.inputevents import ScreenPointer
from punktfunk_core.media import stamp
from punktfunk_core.media.options import TestPatternOptions
from punktfunk_core.media.yuv import alloc_planes
from punktfunk_core.stages import CaptureSource, Frame, StreamSpec

#: output buffers in rotation; the encoder consumes a frame before the next grab,
#: a few spares keep a late reader (a test holding two frames) safe
RING = 3
#: side of the pointer marker in pixels (even: chroma covers it in whole samples)
MARKER = 32
#: the marker's luma: the legal white, above anything the pattern's waves reach (222)
MARKER_LUMA = 235


def _pattern(w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (h×w), U and V (h/2×w/2) of one period of the pattern, legal range."""
    x = np.arange(w, dtype=np.float32)[None, :] / w
    y = np.arange(h, dtype=np.float32)[:, None] / h
    # smooth waves with whole periods across the picture (so tiling is seamless)
    luma = 0.5 + 0.22 * np.sin(2 * np.pi * (3 * x + y)) + 0.22 * np.cos(2 * np.pi * (2 * y - x))
    yp = (16 + 219 * luma).astype(np.uint8)
    # a grid of thin lines gives the encoder edges to track
    step = max(8, w // 16)
    yp[:, ::step] = 235
    yp[::step, :] = 235
    yp[:, 1::step] = 16
    yp[1::step, :] = 16
    cx = np.arange(w // 2, dtype=np.float32)[None, :] / (w // 2)
    cy = np.arange(h // 2, dtype=np.float32)[:, None] / (h // 2)
    u = (128 + 96 * np.sin(2 * np.pi * (cx + cy))).astype(np.uint8)
    v = (128 + 96 * np.cos(2 * np.pi * (2 * cx - cy))).astype(np.uint8)
    return yp, u, v


class TestPattern(CaptureSource):
    """Moving synthetic picture, stamped with frame id and capture time.

    Options: ``pixel_format`` (``i420``/``nv12``, default the spec's),
    ``speed`` (pixels per frame the content moves, even, default 4).
    """

    __test__ = False  # not a pytest class despite the name

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        opts = TestPatternOptions.take("testpattern", options)
        self.format: str = opts.pixel_format or spec.pixel_format
        self.speed = opts.speed & ~1  # even: chroma moves by whole samples
        w, h = spec.width, spec.height
        self.width, self.height = w, h
        stamp.cell_size(w, h)  # fail now, not on the first frame, when the stamp cannot fit
        yp, u, v = _pattern(w, h)
        self._y = np.tile(yp, (2, 2))
        if self.format == "i420":
            self._u = np.tile(u, (2, 2))
            self._v = np.tile(v, (2, 2))
        else:
            uv = np.empty((h // 2, w // 2, 2), dtype=np.uint8)
            uv[:, :, 0] = u
            uv[:, :, 1] = v
            self._uv = np.tile(uv.reshape(h // 2, w), (2, 2))
        self._ring = [alloc_planes(w, h, self.format)[1] for _ in range(RING)]
        self._next = 0
        self._pointer: ScreenPointer | None = None

    def follow_pointer(self, pointer: ScreenPointer) -> None:
        self._pointer = pointer

    def grab(self, frame_id: int) -> Frame:
        w, h = self.width, self.height
        step = frame_id * self.speed
        ox = step % w
        oy = (step // 2) % h & ~1
        planes = self._ring[self._next]
        self._next = (self._next + 1) % RING
        np.copyto(planes[0], self._y[oy : oy + h, ox : ox + w])
        cx, cy = ox // 2, oy // 2
        if self.format == "i420":
            np.copyto(planes[1], self._u[cy : cy + h // 2, cx : cx + w // 2])
            np.copyto(planes[2], self._v[cy : cy + h // 2, cx : cx + w // 2])
            chroma: Any = planes[1:]
        else:
            np.copyto(planes[1], self._uv[cy : cy + h // 2, 2 * cx : 2 * cx + w])
            chroma = planes[1]
        at = self._pointer.pixel(w, h) if self._pointer is not None else None
        if at is not None:
            self._draw_marker(planes, *at)
        capture_ns = time.monotonic_ns()
        stamp.draw_stamp(planes[0], frame_id, (capture_ns // 1000) & 0xFFFFFFFF, chroma)
        return Frame(planes, self.format, w, h, frame_id, capture_ns)

    def _draw_marker(self, planes: tuple[np.ndarray, ...], x: int, y: int) -> None:
        """A white square centred on (x, y), clipped to the picture."""
        half = MARKER // 2
        x0, y0 = max(0, (x - half) & ~1), max(0, (y - half) & ~1)
        x1, y1 = min(self.width, x0 + MARKER), min(self.height, y0 + MARKER)
        planes[0][y0:y1, x0:x1] = MARKER_LUMA
        if self.format == "i420":
            planes[1][y0 // 2:y1 // 2, x0 // 2:x1 // 2] = 128
            planes[2][y0 // 2:y1 // 2, x0 // 2:x1 // 2] = 128
        else:
            planes[1][y0 // 2:y1 // 2, x0:x1] = 128  # interleaved U and V: one byte each per pixel pair

    def close(self) -> None:
        self._ring = []
