"""Click-to-photon: how long a pointer move takes to show in a decoded frame.

The probe runs on the receive thread, after each decoded frame. When a
measurement is due it keeps the picture around a target point (a square of
luma), looks whether the picture moves by itself between two consecutive
frames (a sample of its pixels), sends an absolute pointer move to that
point and waits for the first decoded frame that shows the pointer there:

- on a still picture (a desktop), the first frame in which the square
  changed: the host drew the pointer there (x11 capture composes the cursor
  into the picture);
- on a moving one (the test pattern), the first frame in which most of the
  square turned white: the test pattern's pointer marker (a white square the
  host draws where the session's pointer is). A desktop playing a video hides
  its small cursor from this test: those moves count as missed.

The targets alternate between two points far apart, so each move makes the
pointer appear where it was not. The time from handing the move to the
control connection to the end of decoding that frame is one sample; a move
that shows nothing within :data:`TIMEOUT_S` counts as missed (a capture
without a pointer in its picture misses them all). docs/input.md,
"Click-to-photon".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from punktfunk_core.inputevents import PointerPosition
from punktfunk_core.stats import percentile

#: one measurement at most this often
INTERVAL_S = 0.25
#: a move that shows nothing this long after it was sent is missed
TIMEOUT_S = 1.0
#: half the side of the square watched around the target
HALF = 12
#: a luma step this large is a changed pixel (x264 noise on a still picture stays far below)
STEP = 48
#: this many changed pixels in the square are the pointer
CHANGED = 10
#: a pixel this bright is white (the marker's 235 after encoding; the test pattern's waves stay at 222 and below)
WHITE = 228
#: on a moving picture: this share of the square turning white is the marker
MARKER_SHARE = 0.5
#: every this many pixels each way make the sample that tells a moving picture
SAMPLE_STEP = 4
#: a picture moves by itself when this share of the sample changed by a step between two frames
MOVING_SHARE = 0.005


class ClickToPhoton:
    """Measures click-to-photon on a ``width``×``height`` stream; ``send``
    hands one pointer event to the control connection (thread-safe)."""

    def __init__(self, width: int, height: int, send: Callable[[PointerPosition], None]) -> None:
        self.width, self.height = width, height
        self.send = send
        self.targets = [(width // 4, height // 4), (width * 3 // 4, height * 3 // 4)]
        self._next_target = 0
        self._due = time.perf_counter() + INTERVAL_S
        #: the picture's sample in the frame before the move (to tell a still picture)
        self._armed: np.ndarray | None = None
        #: the target, its square before the move, when the move went, whether the picture moves by itself
        self._waiting: tuple[tuple[int, int], np.ndarray, float, bool] | None = None
        #: click-to-photon samples in ms
        self.samples_ms: list[float] = []
        self.missed = 0

    def _luma(self, frame: Any) -> np.ndarray | None:
        plane = frame.planes[0]
        if frame.width != self.width or frame.height != self.height:
            return None
        return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:, :self.width]

    def _square(self, frame: Any, x: int, y: int) -> np.ndarray | None:
        luma = self._luma(frame)
        if luma is None:
            return None
        return luma[max(0, y - HALF):y + HALF, max(0, x - HALF):x + HALF].astype(np.int16)

    def on_frame(self, frame: Any) -> None:
        """One decoded frame (receive thread)."""
        now = time.perf_counter()
        if self._waiting is not None:
            (x, y), before, sent, moving = self._waiting
            square = self._square(frame, x, y)
            if square is not None and self._shows_pointer(before, square, moving):
                self.samples_ms.append((now - sent) * 1000)
                self._waiting = None
                self._due = now + INTERVAL_S
            elif now - sent > TIMEOUT_S:
                self.missed += 1
                self._waiting = None
                self._due = now + INTERVAL_S
            return
        if now < self._due:
            return
        luma = self._luma(frame)
        if luma is None:
            return
        sample = luma[::SAMPLE_STEP, ::SAMPLE_STEP].astype(np.int16)
        if self._armed is None or self._armed.shape != sample.shape:
            self._armed = sample
            return
        moving = _changed(self._armed, sample) >= MOVING_SHARE * sample.size
        self._armed = None
        x, y = self.targets[self._next_target]
        square = self._square(frame, x, y)
        if square is None:
            return
        self._next_target = 1 - self._next_target
        sent = time.perf_counter()
        self.send(PointerPosition(x, y, self.width - 1, self.height - 1))
        self._waiting = ((x, y), square, sent, moving)

    @staticmethod
    def _shows_pointer(before: np.ndarray, square: np.ndarray, moving: bool) -> bool:
        if not moving:
            return _changed(before, square) >= CHANGED
        turned_white = int((square >= WHITE).sum()) - int((before >= WHITE).sum())
        return turned_white >= MARKER_SHARE * square.size

    def summary(self) -> dict[str, Any]:
        s = sorted(self.samples_ms)
        return {"click_to_photon_p50_ms": round(percentile(s, 0.5), 2) if s else None,
                "click_to_photon_p99_ms": round(percentile(s, 0.99), 2) if s else None,
                "click_to_photon_samples": len(s), "click_to_photon_missed": self.missed}


def _changed(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels whose luma differs by a step or more."""
    return int((np.abs(a - b) >= STEP).sum())
