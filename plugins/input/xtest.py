"""The ``xtest`` input stage: X11 through the XTest extension (python-xlib).

Keys: a virtual-key code becomes a keysym (keymap.VK_KEYS), the X server's
keymap gives the key that makes it. A keysym no key makes (a character of
another script typed as text, a media key Xvfb's keymap lacks) is bound for
a while to a spare keycode — one the keymap leaves empty — as xdotool does;
up to :data:`SPARE_KEYS` such bindings rotate, and they are undone at close.
Text is typed character by character the same way (with Shift when the
character sits on a key's shifted level).

Pointer: relative moves go to XTest as relative motion; absolute positions
are scaled from the stream picture to the captured screen area. Buttons 1–3
are left/middle/right, 8/9 back/forward; scrolling is buttons 4/5 (up/down)
and 6/7 (left/right), one click per 120 units, high-resolution remainders
kept per axis. Everything is sent with one flush per batch.

Touch and pen (XTest has neither) drive the pointer, as a touch screen does
on a desktop without touch support: the first contact down moves the pointer
there and presses button 1; that contact's moves move the pointer (a drag);
lifting or cancelling it releases the button where the last move left it.
While no contact is down a hover moves the pointer; other contacts change
nothing. The pen is one contact (its tip); its barrel buttons are not mapped.
A contact still down at close is lifted.

A closed connection (the X server went away) raises
:class:`~punktfunk_core.stages.InputBackendGone`.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from punktfunk_core.inputevents import (
    WHEEL_DELTA,
    Button,
    FeedbackEvent,
    InputClass,
    InputEvent,
    Key,
    MouseButton,
    Pen,
    PointerMove,
    PointerPosition,
    Scroll,
    Text,
    Touch,
    TouchPhase,
)
from punktfunk_core.stages import InputBackend, InputBackendGone, ScreenArea, StreamSpec

from punktfunk_input.keymap import VK_KEYS, VK_LSHIFT, ModifierTracker
from punktfunk_input.options import XTestOptions

log = logging.getLogger("punktfunk.input.xtest")

#: how many spare keycodes rotate for keysyms the keymap lacks
SPARE_KEYS = 8
#: X button numbers of the mouse buttons
X_BUTTONS = {MouseButton.LEFT: 1, MouseButton.MIDDLE: 2, MouseButton.RIGHT: 3, MouseButton.X1: 8, MouseButton.X2: 9}
#: X buttons for one notch: (positive, negative) per axis
WHEEL_BUTTONS = {False: (4, 5), True: (7, 6)}
#: the X button a touch contact presses
TOUCH_BUTTON = 1
#: the pen's pointer id among touch contacts
PEN_POINTER = -1
#: XTest FakeInput (minor opcode 2, 9 words): major opcode, minor, length, type, detail, time,
#: root, x, y; python-xlib's generic request encoder takes ~20 µs for it, struct well under 1
FAKE_INPUT = struct.Struct("=BBHBBxxII8xhh8x")
#: at most this often a flush also reads what the X server sent (MappingNotify): each look is a
#: system call that gives up the GIL, which a busy thread may keep for a switch interval (5 ms)
EVENT_CHECK_S = 0.1


def available(display: str | None = None) -> str:
    """"" when xtest can work here, else why not (cheap: no connection)."""
    try:
        import Xlib.display  # noqa: F401
    except ImportError:
        return "the python package 'python-xlib' is not installed"
    if not (display or os.environ.get("DISPLAY")):
        return "no X11 display (DISPLAY is not set)"
    return ""


class _Request:
    """An encoded request as python-xlib's send queue takes it: its bytes (and the serial
    the display gives it), so the connection keeps counting requests for its replies."""

    __slots__ = ("_binary", "_serial")

    def __init__(self, binary: bytes) -> None:
        self._binary = binary


def char_keysym(ch: str) -> int:
    """The keysym of one character: Latin-1 keysyms equal their code point,
    every other character is 0x01000000 + its code point (X11 convention)."""
    cp = ord(ch)
    if ch == "\n" or ch == "\r":
        return 0xFF0D  # Return
    if ch == "\t":
        return 0xFF09  # Tab
    if 0x20 <= cp <= 0x7E or 0xA0 <= cp <= 0xFF:
        return cp
    return 0x01000000 | cp


class XTestInput(InputBackend):
    """Keyboard and mouse on an X display (options:
    :class:`punktfunk_input.options.XTestOptions`)."""

    name = "xtest"
    classes = frozenset({InputClass.KEYBOARD, InputClass.MOUSE, InputClass.TOUCH})
    #: XTest requests go into the X connection's buffer and one write: nothing to wait for
    inline_classes = classes

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        opts = XTestOptions.take("xtest", options)
        self.display_name = opts.display or os.environ.get("DISPLAY", "")
        self.stream_size = (spec.width, spec.height)
        self._d: Any = None
        self._area = ScreenArea(0, 0, spec.width, spec.height)
        self._modifiers = ModifierTracker()
        self._scroll = {False: 0, True: 0}
        self._spares: list[int] = []
        self._bound: dict[int, int] = {}  # keysym → spare keycode it is bound to
        #: keysym → (keycode, needs Shift) as the keymap has it: looked up once, forgotten when the keymap changes
        self._codes: dict[int, tuple[int, bool]] = {}
        self._next_spare = 0
        self._keysyms: dict[int, int] = {}  # VK → keysym
        self._touch: int | None = None  # the contact that holds TOUCH_BUTTON down
        self._checked = 0.0
        self._x: Any = None  # Xlib.X and Xlib.error, imported at open
        self._xerror: Any = None
        self._opcode = 0  # the XTEST extension's major opcode
        self.x_errors = 0

    # ---- setup ----------------------------------------------------------------------------------

    def open(self, stream_size: tuple[int, int], screen: ScreenArea | None,
             feedback: Callable[[FeedbackEvent], None]) -> None:
        reason = available(self.display_name)
        if reason:
            raise RuntimeError(f"xtest: {reason}")
        from Xlib import XK, X, display, error
        from Xlib.ext import xtest

        self._x, self._xerror = X, error  # not looked up per event
        try:
            self._d = display.Display(self.display_name)
        except (error.DisplayError, error.ConnectionClosedError, OSError) as exc:
            raise RuntimeError(f"xtest: cannot open display {self.display_name!r}: {exc}") from None
        if not self._d.has_extension("XTEST"):
            self._d.close()
            raise RuntimeError(f"xtest: display {self.display_name!r} has no XTEST extension")
        self._d.set_error_handler(self._on_x_error)
        self._opcode = self._d.display.get_extension_major(xtest.extname)
        root = self._d.screen()
        self.stream_size = stream_size
        self._area = screen or ScreenArea(0, 0, root.width_in_pixels, root.height_in_pixels)
        XK.load_keysym_group("xf86")
        XK.load_keysym_group("xkb")
        for vk, (names, _evdev) in VK_KEYS.items():
            syms = [XK.string_to_keysym(n) for n in names]
            present = [s for s in syms if s and self._d.keysym_to_keycode(s)]
            chosen = present[0] if present else next((s for s in syms if s), 0)
            if chosen:
                self._keysyms[vk] = chosen
        first = self._d.display.info.min_keycode
        count = self._d.display.info.max_keycode - first + 1
        mapping = self._d.get_keyboard_mapping(first, count)
        # the highest empty keycodes, as xdotool picks its scratch key
        self._spares = [first + i for i, syms in enumerate(mapping) if not any(syms)][-SPARE_KEYS:]
        log.info("xtest input on display %s: screen area %dx%d+%d+%d, %d spare keycodes", self.display_name,
                 self._area.width, self._area.height, self._area.x, self._area.y, len(self._spares))

    def _on_x_error(self, err: Any, request: Any = None) -> None:
        self.x_errors += 1  # asynchronous X errors: counted, never printed to stderr
        if self.x_errors <= 3:
            log.warning("xtest: X error %s", err)

    # ---- injection ------------------------------------------------------------------------------

    def inject(self, event: InputEvent) -> None:
        try:
            self._inject(event)
        except (self._xerror.ConnectionClosedError, BrokenPipeError, ConnectionError) as exc:
            raise InputBackendGone(f"X display {self.display_name} closed: {exc}") from exc

    def _inject(self, event: InputEvent) -> None:
        X = self._x
        if isinstance(event, PointerMove):
            self._fake(X.MotionNotify, detail=1, x=event.dx, y=event.dy)  # detail 1: relative
        elif isinstance(event, PointerPosition):
            self._move_to(*event.fraction())
        elif isinstance(event, Button):
            self._fake(X.ButtonPress if event.down else X.ButtonRelease, X_BUTTONS[MouseButton(event.button)])
        elif isinstance(event, (Touch, Pen)):
            self._contact(PEN_POINTER if isinstance(event, Pen) else event.pointer_id, event)
        elif isinstance(event, Scroll):
            self._wheel(event)
        elif isinstance(event, Key):
            self._key(event)
        elif isinstance(event, Text):
            for ch in event.text:
                self._type(char_keysym(ch))
        else:
            raise ValueError(f"xtest cannot inject {type(event).__name__}")

    def _fake(self, event_type: int, detail: int = 0, x: int = 0, y: int = 0) -> None:
        """Queue one XTest FakeInput on the connection (sent at flush)."""
        self._d.display.send_request(_Request(FAKE_INPUT.pack(self._opcode, 2, 9, event_type, detail, 0, 0, x, y)),
                                     False)

    def _move_to(self, fx: float, fy: float) -> None:
        """The pointer to a point of the picture (0.0..1.0 each way) on the captured screen area."""
        a = self._area
        self._fake(self._x.MotionNotify, x=a.x + round(fx * (a.width - 1)),
                               y=a.y + round(fy * (a.height - 1)))

    def _contact(self, pointer: int, event: Touch | Pen) -> None:
        """A touch contact or the pen as the pointer and button 1 (see the module's doc)."""
        X, phase = self._x, event.phase
        if phase == TouchPhase.CANCEL_ALL or (phase in (TouchPhase.UP, TouchPhase.CANCEL)
                                              and pointer == self._touch):
            if self._touch is not None:
                self._fake(X.ButtonRelease, TOUCH_BUTTON)
                self._touch = None
        elif phase == TouchPhase.DOWN and self._touch is None:
            self._move_to(event.x, event.y)
            self._fake(X.ButtonPress, TOUCH_BUTTON)
            self._touch = pointer
        elif (phase == TouchPhase.MOVE and pointer == self._touch) or (phase == TouchPhase.HOVER
                                                                       and self._touch is None):
            self._move_to(event.x, event.y)
        # other contacts, hover leave and button-only changes have no pointer equivalent

    def _wheel(self, event: Scroll) -> None:
        X = self._x
        total = self._scroll[event.horizontal] + event.amount
        notches = int(total / WHEEL_DELTA)  # toward zero: the remainder keeps its sign
        self._scroll[event.horizontal] = total - notches * WHEEL_DELTA
        button = WHEEL_BUTTONS[event.horizontal][0 if notches > 0 else 1]
        for _ in range(abs(notches)):
            self._fake(X.ButtonPress, button)
            self._fake(X.ButtonRelease, button)

    def _key(self, event: Key) -> None:
        keysym = self._keysyms.get(event.code)
        if keysym is None:
            raise ValueError(f"virtual-key code {event.code:#04x} has no X keysym")
        extra = self._modifiers.synthetic(event)
        for vk in extra:
            self._press(self._keycode(self._keysyms[vk])[0], True)
        self._press(self._keycode(keysym)[0], event.down)
        for vk in reversed(extra):
            self._press(self._keycode(self._keysyms[vk])[0], False)

    def _type(self, keysym: int) -> None:
        code, shifted = self._keycode(keysym)
        shift = self._keycode(self._keysyms[VK_LSHIFT])[0] if shifted else 0
        if shift:
            self._press(shift, True)
        self._press(code, True)
        self._press(code, False)
        if shift:
            self._press(shift, False)

    def _press(self, keycode: int, down: bool) -> None:
        self._fake(self._x.KeyPress if down else self._x.KeyRelease, keycode)

    def _keycode(self, keysym: int) -> tuple[int, bool]:
        """The key that makes ``keysym`` and whether it needs Shift; a spare
        key is bound to it when no key does."""
        if keysym in self._bound:
            return self._bound[keysym], False
        known = self._codes.get(keysym)
        if known is not None:
            return known
        for code, index in self._d.keysym_to_keycodes(keysym):
            if index in (0, 1):
                self._codes[keysym] = (code, index == 1)
                return code, index == 1
        if not self._spares:
            raise ValueError(f"keysym {keysym:#x} is on no key and the keymap has no spare keycode")
        code = self._spares[self._next_spare % len(self._spares)]
        self._next_spare += 1
        for old, bound in list(self._bound.items()):
            if bound == code:
                del self._bound[old]
        # both levels, so a held Shift does not change what the key types
        self._d.change_keyboard_mapping(code, [(keysym, keysym)])
        self._codes.clear()
        self._bound[keysym] = code
        return code, False

    def flush(self) -> None:
        try:
            self._d.flush()
            now = time.monotonic()
            if now - self._checked < EVENT_CHECK_S:
                return
            self._checked = now
            # take in MappingNotify (someone ran setxkbmap, or our own bindings) so lookups stay true
            while self._d.pending_events():
                ev = self._d.next_event()
                if ev.type == self._x.MappingNotify:
                    self._d.refresh_keyboard_mapping(ev)
                    self._codes.clear()
        except (self._xerror.ConnectionClosedError, OSError) as exc:
            raise InputBackendGone(f"X display {self.display_name} closed: {exc}") from exc

    def close(self) -> None:
        if self._d is None:
            return
        try:
            if self._touch is not None:  # a finger still down: lift it, as the sink releases buttons
                self._fake(self._x.ButtonRelease, TOUCH_BUTTON)
        except Exception as exc:  # noqa: BLE001 - the server may be gone already
            log.debug("xtest: lifting the touch on %s: %s", self.display_name, exc)
        d, self._d = self._d, None
        try:
            for code in set(self._bound.values()):
                d.change_keyboard_mapping(code, [(0, 0)])  # leave the keymap as we found it
            d.sync()  # done before anyone else looks
            d.close()
        except Exception as exc:  # noqa: BLE001 - the server may be gone already
            log.debug("xtest: closing display %s: %s", self.display_name, exc)
