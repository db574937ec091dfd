"""Click-to-photon: how long a pointer move takes to show in a decoded frame.

The probe runs on the receive thread, after each decoded frame. When a
measurement is due it remembers the picture around a target point (a square
of luma), sends an absolute pointer move to that point and waits for the
first decoded frame in which that square changed: the host drew the pointer
there (x11 capture composes the cursor into the picture). The targets
alternate between two points far apart, so each move makes the pointer
appear where it was not. The time from handing the move to the control
connection to the end of decoding that frame is one sample; a move that
shows nothing within :data:`TIMEOUT_S` counts as missed (a capture without a
pointer in its picture misses them all). docs/input.md, "Click-to-photon".
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


class ClickToPhoton:
    """Measures click-to-photon on a ``width``×``height`` stream; ``send``
    hands one pointer event to the control connection (thread-safe)."""

    def __init__(self, width: int, height: int, send: Callable[[PointerPosition], None]) -> None:
        self.width, self.height = width, height
        self.send = send
        self.targets = [(width // 4, height // 4), (width * 3 // 4, height * 3 // 4)]
        self._next_target = 0
        self._due = time.perf_counter() + INTERVAL_S
        self._waiting: tuple[tuple[int, int], np.ndarray, float] | None = None
        #: click-to-photon samples in ms
        self.samples_ms: list[float] = []
        self.missed = 0

    def _square(self, frame: Any, x: int, y: int) -> np.ndarray | None:
        plane = frame.planes[0]
        if frame.width != self.width or frame.height != self.height:
            return None
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return luma[max(0, y - HALF):y + HALF, max(0, x - HALF):x + HALF].astype(np.int16)

    def on_frame(self, frame: Any) -> None:
        """One decoded frame (receive thread)."""
        now = time.perf_counter()
        if self._waiting is not None:
            (x, y), before, sent = self._waiting
            square = self._square(frame, x, y)
            if square is not None and int((np.abs(square - before) >= STEP).sum()) >= CHANGED:
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
        x, y = self.targets[self._next_target]
        self._next_target = 1 - self._next_target
        square = self._square(frame, x, y)
        if square is None:
            return
        sent = time.perf_counter()
        self.send(PointerPosition(x, y, self.width - 1, self.height - 1))
        self._waiting = ((x, y), square, sent)

    def summary(self) -> dict[str, Any]:
        s = sorted(self.samples_ms)
        return {"click_to_photon_p50_ms": round(percentile(s, 0.5), 2) if s else None,
                "click_to_photon_p99_ms": round(percentile(s, 0.99), 2) if s else None,
                "click_to_photon_samples": len(s), "click_to_photon_missed": self.missed}
