"""A private Xvfb display and a real X client window that records what it receives.

``private_xvfb(w, h)`` starts Debian's Xvfb on a display number no other
server holds and stops it afterwards (skipping the test when Xvfb is
missing). ``XWindowRecorder`` is an ordinary X client (python-xlib): a
window covering the screen with the keyboard focus, which records every
KeyPress/KeyRelease (with the keysym its own keymap gives, after any
MappingNotify), ButtonPress/ButtonRelease and pointer motion, on a thread of
its own. Input tests drive a backend and read what this window saw.
"""

from __future__ import annotations

import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from bench.xvfb import start_xvfb


@dataclass
class XvfbDisplay:
    name: str
    width: int
    height: int
    proc: subprocess.Popen

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@contextmanager
def private_xvfb(width: int = 640, height: int = 360, *extra: str) -> Iterator[XvfbDisplay]:
    """An Xvfb of ``width``×``height`` at 24 bits on a free display number."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no Xvfb to start a private display (apt-get install xvfb)")
    try:
        proc, name = start_xvfb(width, height, *extra)
    except RuntimeError:
        pytest.skip("Xvfb did not start")
    try:
        yield XvfbDisplay(name, width, height, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(5)


def keysym_char(keysym: int) -> str:
    """The character a keysym types (Latin-1 and Unicode keysyms), else ""."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if keysym & 0xFF000000 == 0x01000000:
        return chr(keysym & 0xFFFFFF)
    return ""


@dataclass(frozen=True)
class XEvent:
    kind: str  # "key_press", "key_release", "button_press", "button_release", "motion"
    detail: int  # keycode or button
    keysym: int = 0
    shift: bool = False
    x: int = 0
    y: int = 0


class XWindowRecorder:
    """A focused full-screen window on ``display`` recording its input events."""

    def __init__(self, display: str) -> None:
        from Xlib import X
        from Xlib import display as xdisplay

        self.d = xdisplay.Display(display)
        self._query = xdisplay.Display(display)  # the reader thread owns self.d
        screen = self.d.screen()
        self.width, self.height = screen.width_in_pixels, screen.height_in_pixels
        mask = (X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask | X.ButtonReleaseMask
                | X.PointerMotionMask | X.StructureNotifyMask)
        self.window = screen.root.create_window(0, 0, self.width, self.height, 0, screen.root_depth,
                                                event_mask=mask, override_redirect=True)
        self.window.map()
        self.d.sync()
        self.window.set_input_focus(X.RevertToParent, X.CurrentTime)
        self.d.sync()
        self.events: list[XEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="x-recorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from Xlib import X, error

        kinds = {X.KeyPress: "key_press", X.KeyRelease: "key_release", X.ButtonPress: "button_press",
                 X.ButtonRelease: "button_release", X.MotionNotify: "motion"}
        while not self._stop.is_set():
            try:
                select.select([self.d], [], [], 0.05)
                while self.d.pending_events():
                    ev = self.d.next_event()
                    if ev.type == X.MappingNotify:
                        self.d.refresh_keyboard_mapping(ev)  # a spare key got bound: look it up anew
                        continue
                    kind = kinds.get(ev.type)
                    if kind is None:
                        continue
                    shift = bool(ev.state & X.ShiftMask)
                    keysym = self.d.keycode_to_keysym(ev.detail, 1 if shift else 0) if kind.startswith("key") else 0
                    with self._lock:
                        self.events.append(XEvent(kind, ev.detail, keysym, shift, ev.root_x, ev.root_y))
            except (error.ConnectionClosedError, OSError, ValueError):
                return

    def snapshot(self, kind: str | None = None) -> list[XEvent]:
        with self._lock:
            return [e for e in self.events if kind is None or e.kind == kind]

    def wait_for(self, predicate: Callable[[list[XEvent]], bool], timeout: float = 5.0) -> list[XEvent]:
        """The events once ``predicate`` holds for them; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.snapshot()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"the X window did not receive what was expected; it got {events}")
            time.sleep(0.01)

    def typed(self) -> str:
        """The characters of the key presses so far."""
        return "".join(keysym_char(e.keysym) for e in self.snapshot("key_press"))

    def pointer(self) -> tuple[int, int]:
        q = self._query.screen().root.query_pointer()
        return q.root_x, q.root_y

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for d in (self.d, self._query):
            try:
                d.close()
            except Exception:  # noqa: BLE001 - the server may be gone
                pass
