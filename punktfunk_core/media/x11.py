"""The ``x11`` capture source: grabs the X11 screen through ``mss``.

``mss`` is an optional extra (``pip install punktfunk[x11]``). The BGRA
screenshot is converted to the encoder's input format straight into a reused
4:2:0 buffer by libyuv when the monitor has the stream's size and libyuv is
installed (``media/libyuv.py``: ~0.4 ms per 1080p frame); otherwise swscale
(PyAV ``reformat``) converts and scales it (~7 ms) and the result is copied
in. No stamp is drawn: the picture is the user's desktop. The pointer is
blended into the screenshot first (``media/cursor.py``), unless the option
``cursor = false`` leaves it to a client that draws its own.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import av
import numpy as np

from punktfunk_core.media import libyuv
from punktfunk_core.media.cursor import open_overlay
from punktfunk_core.media.options import X11Options
from punktfunk_core.media.yuv import AV_FORMAT, alloc_planes, copy_av_frame
from punktfunk_core.stages import CaptureSource, Frame, ScreenArea, StreamSpec

RING = 3

log = logging.getLogger("punktfunk.media.x11")


def available(display: str | None = None) -> str:
    """"" when X11 capture can work here, else the reason it cannot."""
    try:
        import mss  # noqa: F401
    except ImportError:
        return "the python package 'mss' is not installed (pip install 'punktfunk[x11]')"
    if not (display or os.environ.get("DISPLAY")):
        return "no X11 display (DISPLAY is not set)"
    return ""


class X11Capture(CaptureSource):
    """Captures one monitor of an X11 display (options:
    :class:`punktfunk_core.media.options.X11Options`: ``display``, ``monitor``,
    ``pixel_format``, ``converter``, ``cursor``)."""

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        opts = X11Options.take("x11", options)
        if opts.converter == "libyuv" and libyuv.converter() is None:
            raise RuntimeError("x11 capture: converter 'libyuv' is not installed (Debian/Ubuntu: apt-get install "
                               "libyuv0)")
        reason = available(opts.display)
        if reason:
            raise RuntimeError(f"x11 capture is not available: {reason}")
        import mss

        kwargs = {"display": opts.display} if opts.display else {}
        try:
            # mss ≥ 10.2 names the class MSS and deprecates the mss() factory
            self._mss = getattr(mss, "MSS", mss.mss)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - mss raises its own ScreenShotError and others
            display = opts.display or os.environ.get("DISPLAY")
            raise RuntimeError(f"x11 capture: cannot open display {display!r}: {exc}") from None
        monitors = self._mss.monitors
        if opts.monitor >= len(monitors):
            self._mss.close()
            raise ValueError(f"x11: monitor {opts.monitor} does not exist (0..{len(monitors) - 1})")
        self.monitor = dict(monitors[opts.monitor])
        # where absolute pointer positions of the stream land on the desktop
        self.screen_area = ScreenArea(self.monitor["left"], self.monitor["top"], self.monitor["width"],
                                      self.monitor["height"])
        self.format = opts.pixel_format or spec.pixel_format
        self.width, self.height = spec.width, spec.height
        self._ring = [alloc_planes(self.width, self.height, self.format)[1] for _ in range(RING)]
        self._next = 0
        same_size = (self.monitor["width"], self.monitor["height"]) == (self.width, self.height)
        # libyuv converts without scaling; a monitor of another size goes through swscale
        self._libyuv = libyuv.converter() if opts.converter != "swscale" and same_size else None
        if opts.converter == "libyuv" and self._libyuv is None:
            self._mss.close()
            raise ValueError(f"x11: converter 'libyuv' does not scale, and monitor {opts.monitor} is "
                             f"{self.monitor['width']}x{self.monitor['height']}, not {self.width}x{self.height}")
        #: what converts the screenshot: "libyuv" or "swscale"
        self.converter = "libyuv" if self._libyuv is not None else "swscale"
        self._cursor = None
        #: how the pointer gets into the picture: "xfixes", "off", or why it does not
        self.cursor = "off"
        if opts.cursor:
            self._cursor, why = open_overlay(opts.display)
            self.cursor = "xfixes" if self._cursor is not None else f"unavailable: {why}"
            if self._cursor is None:
                log.warning("x11 capture: the pointer will not be drawn: %s", why)

    def grab(self, frame_id: int) -> Frame:
        shot = self._mss.grab(self.monitor)
        capture_ns = time.monotonic_ns()
        bgra = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
        if self._cursor is not None:
            try:
                self._cursor.draw(bgra, self.monitor["left"], self.monitor["top"])
            except Exception as exc:  # noqa: BLE001 - a lost cursor never costs the picture
                log.warning("x11 capture: drawing the pointer failed, going on without it: %s", exc)
                self._cursor.close()
                self._cursor, self.cursor = None, f"unavailable: {exc}"
        planes = self._ring[self._next]
        self._next = (self._next + 1) % RING
        if self._libyuv is not None and (shot.width, shot.height) == (self.width, self.height):
            self._libyuv.convert(bgra, self.format, planes)
        else:
            vf = av.VideoFrame.from_numpy_buffer(bgra, format="bgra")
            vf = vf.reformat(width=self.width, height=self.height, format=AV_FORMAT[self.format])
            copy_av_frame(vf, planes)
        return Frame(planes, self.format, self.width, self.height, frame_id, capture_ns)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
        self._mss.close()
