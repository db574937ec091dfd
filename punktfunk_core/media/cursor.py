"""The X11 pointer, drawn into captured pictures (X never puts it in a screenshot).

:class:`CursorOverlay` keeps its own connection to the display (python-xlib)
and asks for the XFixes cursor image only when XFixes says the cursor changed
(``CursorNotify``; the image is cached by its serial). Each frame costs one
``QueryPointer`` round trip for the position and a blend of the cursor's own
rectangle into the BGRA screenshot, before it is converted to 4:2:0.

XFixes cursor images are premultiplied ARGB, so the blend is
``screen = cursor + screen × (255 − alpha) / 255``.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("punktfunk.media.cursor")


def available() -> str:
    """"" when python-xlib is installed, else the reason the cursor cannot be drawn."""
    try:
        import Xlib.ext.xfixes  # noqa: F401
    except ImportError:
        return "the python package 'python-xlib' is not installed (pip install 'punktfunk[x11]')"
    return ""


class CursorOverlay:
    """Draws the pointer of ``display`` into BGRA screenshots."""

    def __init__(self, display: str = "") -> None:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        from Xlib import display as xdisplay
        from Xlib.ext import xfixes

        self._d = xdisplay.Display(display or None)
        try:
            if not self._d.has_extension("XFIXES"):
                raise RuntimeError("the X server has no XFIXES extension")
            self._d.xfixes_query_version()  # XFixes requests are refused before this
            self._root = self._d.screen().root
            self._d.xfixes_select_cursor_input(self._root, xfixes.XFixesDisplayCursorNotifyMask)
        except Exception:
            self._d.close()
            raise
        #: serial of the cached image; None until the first fetch
        self.serial: int | None = None
        #: images fetched from the server (a new cursor shape each)
        self.fetches = 0
        self._stale = True
        self._rgb = np.zeros((0, 0, 3), np.uint16)
        self._inv_alpha = np.zeros((0, 0, 1), np.uint16)
        self._hot = (0, 0)
        self._visible = False

    def _refresh(self) -> None:
        """Fetch the cursor image if it changed since the last fetch."""
        reply = self._d.xfixes_get_cursor_image(self._root)
        self._stale = False
        if reply.cursor_serial == self.serial:
            return
        self.serial = reply.cursor_serial
        self.fetches += 1
        h, w = reply.height, reply.width
        argb = np.asarray(reply.cursor_image, dtype=np.uint32)[:w * h]
        # CARD32 ARGB → bytes B, G, R, A on a little-endian machine (the order of mss's BGRA)
        px = argb.astype("<u4").view(np.uint8).reshape(h, w, 4)
        self._rgb = px[..., :3].astype(np.uint16)
        self._inv_alpha = (255 - px[..., 3:4]).astype(np.uint16)
        self._hot = (reply.xhot, reply.yhot)
        self._visible = bool(px[..., 3].any())

    def draw(self, bgra: np.ndarray, left: int, top: int) -> None:
        """Blend the pointer into ``bgra`` (h, w, 4), a screenshot whose top-left pixel is
        the screen's (left, top)."""
        d = self._d
        if d.pending_events():  # only CursorNotify is selected: the shape changed
            while d.pending_events():
                d.next_event()
            self._stale = True
        if self._stale:
            self._refresh()
        if not self._visible:
            return
        pointer = self._root.query_pointer()
        h, w = self._rgb.shape[:2]
        x = pointer.root_x - self._hot[0] - left
        y = pointer.root_y - self._hot[1] - top
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, bgra.shape[1]), min(y + h, bgra.shape[0])
        if x0 >= x1 or y0 >= y1:
            return  # on another monitor, or off this picture
        dst = bgra[y0:y1, x0:x1, :3]
        src = self._rgb[y0 - y:y1 - y, x0 - x:x1 - x]
        inv = self._inv_alpha[y0 - y:y1 - y, x0 - x:x1 - x]
        blended = src + (dst * inv + 127) // 255
        np.minimum(blended, 255, out=blended)  # a cursor that is not properly premultiplied
        dst[...] = blended

    def close(self) -> None:
        try:
            self._d.close()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            log.debug("closing the cursor's X connection failed", exc_info=True)


def open_overlay(display: str) -> tuple[CursorOverlay | None, str]:
    """A cursor overlay, or None and why not (logged once by the caller)."""
    try:
        return CursorOverlay(display), ""
    except Exception as exc:  # noqa: BLE001 - no cursor is no reason to fail the capture
        return None, str(exc) or type(exc).__name__

