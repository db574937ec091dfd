"""The ``uinput`` input stage: virtual Linux input devices through python-evdev.

At open it creates a keyboard, a relative mouse (with high-resolution
wheels), an absolute pointer, a multitouch screen (protocol B) and a pen
tablet; gamepads are created per controller number on arrival (or on the
first state of a number never announced) and destroyed on removal and at
close. Gamepads look like a wired Xbox 360 pad as the kernel's xpad driver
presents one: vendor 0x045e, product 0x028e, sticks -32768..32767 (fuzz 16,
flat 128, Y pointing down), triggers 0..255 on ABS_Z/ABS_RZ, the d-pad on
ABS_HAT0X/Y, rumble through FF_RUMBLE.

Rumble: a game uploads FF_RUMBLE effects to the virtual pad and plays them;
a feedback thread answers the uploads, and each play or stop (or the end of
an effect's duration) becomes a :class:`~punktfunk_core.inputevents.Rumble`
for the ``feedback`` callback, which the protocol sends to the client.

/dev/uinput must be writable by the host's user; when it is not, the error
says what to change (docs/input.md, "Permissions").
"""

from __future__ import annotations

import getpass
import heapq
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from punktfunk_core.inputevents import (
    WHEEL_DELTA,
    Button,
    ControllerArrival,
    ControllerBattery,
    ControllerButton,
    ControllerMotion,
    ControllerRemoval,
    ControllerState,
    ControllerTouch,
    FeedbackEvent,
    InputClass,
    InputEvent,
    Key,
    MouseButton,
    Pen,
    PenButton,
    PenTool,
    PointerMove,
    PointerPosition,
    Rumble,
    Scroll,
    Text,
    Touch,
    TouchPhase,
)
from punktfunk_core.stages import InputBackend, InputBackendGone, ScreenArea, StreamSpec

from punktfunk_input.keymap import VK_KEYS, ModifierTracker
from punktfunk_input.options import DEVICE, UInputOptions

log = logging.getLogger("punktfunk.input.uinput")

#: the identity of a wired Xbox 360 pad
XBOX360_VENDOR, XBOX360_PRODUCT, XBOX360_VERSION = 0x045E, 0x028E, 0x0110
XBOX360_NAME = "Microsoft X-Box 360 pad"
#: touch slots of the virtual touch screen
TOUCH_SLOTS = 10
#: resolution of the normalised touch and pen axes
TOUCH_MAX = 65535
#: how long the feedback thread sleeps between looks at its stop flag
FEEDBACK_POLL_S = 0.2

#: controller button bits → xpad's key codes (the d-pad is a hat, not buttons)
PAD_BUTTONS = {
    ControllerButton.A: "BTN_SOUTH", ControllerButton.B: "BTN_EAST",
    ControllerButton.X: "BTN_NORTH", ControllerButton.Y: "BTN_WEST",
    ControllerButton.LEFT_SHOULDER: "BTN_TL", ControllerButton.RIGHT_SHOULDER: "BTN_TR",
    ControllerButton.BACK: "BTN_SELECT", ControllerButton.START: "BTN_START", ControllerButton.GUIDE: "BTN_MODE",
    ControllerButton.LEFT_STICK: "BTN_THUMBL", ControllerButton.RIGHT_STICK: "BTN_THUMBR",
}
MOUSE_BUTTONS = {MouseButton.LEFT: "BTN_LEFT", MouseButton.MIDDLE: "BTN_MIDDLE", MouseButton.RIGHT: "BTN_RIGHT",
                 MouseButton.X1: "BTN_SIDE", MouseButton.X2: "BTN_EXTRA"}


def permission_problem(device: str = DEVICE) -> str:
    """"" when ``device`` can be opened for writing, else what to do about it."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return (f"{device} does not exist: load the uinput kernel module (sudo modprobe uinput; to load it at "
                "boot: echo uinput | sudo tee /etc/modules-load.d/uinput.conf)")
    except OSError as exc:
        return f"{device} cannot be examined: {exc.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{device} is not a character device"
    if not os.access(device, os.W_OK):
        return (f"{device} is not writable by user {getpass.getuser()!r}: add a udev rule "
                f"(/etc/udev/rules.d/60-punktfunk-uinput.rules: KERNEL==\"uinput\", SUBSYSTEM==\"misc\", "
                f"MODE=\"0660\", GROUP=\"input\", OPTIONS+=\"static_node=uinput\"), add the user to that group "
                f"(sudo usermod -aG input {getpass.getuser()}), then reload the rules (sudo udevadm control "
                f"--reload && sudo udevadm trigger) and log in again")
    return ""


def available(device: str = DEVICE) -> str:
    """"" when uinput can work here, else why not."""
    try:
        import evdev  # noqa: F401
    except ImportError:
        return "the python package 'evdev' is not installed"
    return permission_problem(device)


def _codes(*names: str) -> list[int]:
    from evdev import ecodes

    return [ecodes.ecodes[n] for n in names]


class _Gamepad:
    """One virtual Xbox 360 pad and the rumble effects a game uploaded to it."""

    def __init__(self, number: int, device: Any) -> None:
        self.number = number
        self.device = device
        self.buttons = ControllerButton.NONE
        self.effects: dict[int, tuple[int, int, int]] = {}  # id → (strong, weak, length ms)
        self.playing: int | None = None


class UInputBackend(InputBackend):
    """Keyboard, mouse, absolute pointer, touch, pen and gamepads through
    uinput (options: :class:`punktfunk_input.options.UInputOptions`)."""

    name = "uinput"
    classes = frozenset(InputClass)
    #: writes to devices made at open; a gamepad may have to be created (udev: up to 100s of ms)
    inline_classes = frozenset({InputClass.KEYBOARD, InputClass.MOUSE, InputClass.TOUCH})

    def __init__(self, spec: StreamSpec, options: dict[str, Any] | None = None) -> None:
        opts = UInputOptions.take("uinput", options)
        self.device = opts.device
        self.prefix = opts.name
        self._area = ScreenArea(0, 0, spec.width, spec.height)
        self._feedback: Callable[[FeedbackEvent], None] = lambda _e: None
        self._devices: dict[str, Any] = {}
        self._pads: dict[int, _Gamepad] = {}
        self._pads_lock = threading.Lock()  # the injector adds and removes pads, the feedback thread reads them
        self._modifiers = ModifierTracker()
        self._scroll = {False: 0, True: 0}
        self._slots: dict[int, int] = {}  # touch pointer id → slot
        self._stop = threading.Event()
        self._feedback_thread: threading.Thread | None = None
        self._keys: dict[int, int] = {}

    # ---- setup ----------------------------------------------------------------------------------

    def open(self, stream_size: tuple[int, int], screen: ScreenArea | None,
             feedback: Callable[[FeedbackEvent], None]) -> None:
        problem = available(self.device)
        if problem:
            raise RuntimeError(f"uinput: {problem}")
        from evdev import AbsInfo, ecodes

        self._feedback = feedback
        self._area = screen or ScreenArea(0, 0, *stream_size)
        self._keys = {vk: ecodes.ecodes[name] for vk, (_x, name) in VK_KEYS.items() if name}
        w, h = self._area.width, self._area.height
        try:
            self._devices["keyboard"] = self._create("keyboard", {ecodes.EV_KEY: sorted(set(self._keys.values()))})
            self._devices["mouse"] = self._create("mouse", {
                ecodes.EV_KEY: _codes(*MOUSE_BUTTONS.values()),
                ecodes.EV_REL: _codes("REL_X", "REL_Y", "REL_WHEEL", "REL_HWHEEL", "REL_WHEEL_HI_RES",
                                      "REL_HWHEEL_HI_RES")})
            self._devices["pointer"] = self._create("absolute pointer", {
                ecodes.EV_KEY: _codes(*MOUSE_BUTTONS.values()),
                ecodes.EV_ABS: [(ecodes.ABS_X, AbsInfo(0, 0, w - 1, 0, 0, 0)),
                                (ecodes.ABS_Y, AbsInfo(0, 0, h - 1, 0, 0, 0))]})
            self._devices["touch"] = self._create("touch screen", {
                ecodes.EV_KEY: _codes("BTN_TOUCH"),
                ecodes.EV_ABS: [(ecodes.ABS_X, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_Y, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_MT_SLOT, AbsInfo(0, 0, TOUCH_SLOTS - 1, 0, 0, 0)),
                                (ecodes.ABS_MT_TRACKING_ID, AbsInfo(0, -1, 0xFFFF, 0, 0, 0)),
                                (ecodes.ABS_MT_POSITION_X, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_MT_POSITION_Y, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_MT_PRESSURE, AbsInfo(0, 0, 1024, 0, 0, 0)),
                                (ecodes.ABS_MT_TOUCH_MAJOR, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_MT_TOUCH_MINOR, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_MT_ORIENTATION, AbsInfo(0, -90, 90, 0, 0, 0))]},
                input_props=[ecodes.INPUT_PROP_DIRECT])
            self._devices["pen"] = self._create("pen", {
                ecodes.EV_KEY: _codes("BTN_TOUCH", "BTN_TOOL_PEN", "BTN_TOOL_RUBBER", "BTN_STYLUS", "BTN_STYLUS2",
                                      "BTN_STYLUS3"),
                ecodes.EV_ABS: [(ecodes.ABS_X, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_Y, AbsInfo(0, 0, TOUCH_MAX, 0, 0, 0)),
                                (ecodes.ABS_PRESSURE, AbsInfo(0, 0, 1024, 0, 0, 0)),
                                (ecodes.ABS_DISTANCE, AbsInfo(0, 0, 1024, 0, 0, 0)),
                                (ecodes.ABS_TILT_X, AbsInfo(0, -90, 90, 0, 0, 0)),
                                (ecodes.ABS_TILT_Y, AbsInfo(0, -90, 90, 0, 0, 0))]},
                input_props=[ecodes.INPUT_PROP_DIRECT])  # a pen on the picture, like a pen display
        except Exception:
            self.close()
            raise
        self._feedback_thread = threading.Thread(target=self._feedback_loop, name="uinput-feedback", daemon=True)
        self._feedback_thread.start()
        log.info("uinput input: %s (absolute pointer %dx%d)", ", ".join(self._devices), w, h)

    def _create(self, what: str, events: dict[int, Any], name: str = "", **kwargs: Any) -> Any:
        from evdev import UInput, UInputError

        try:
            return UInput(events, name=name or f"{self.prefix} {what}", devnode=self.device, **kwargs)
        except (UInputError, OSError) as exc:
            raise RuntimeError(f"uinput: cannot create the {what} device on {self.device}: {exc}") from None

    # ---- injection ------------------------------------------------------------------------------

    def inject(self, event: InputEvent) -> None:
        try:
            self._inject(event)
        except OSError as exc:
            raise InputBackendGone(f"uinput device write failed: {exc}") from exc

    def _inject(self, event: InputEvent) -> None:  # noqa: C901 - one branch per event type
        from evdev import ecodes as e

        if isinstance(event, Key):
            extra = self._modifiers.synthetic(event)
            kb = self._devices["keyboard"]
            code = self._keys.get(event.code)
            if code is None:
                raise ValueError(f"virtual-key code {event.code:#04x} has no Linux key")
            for vk in extra:
                kb.write(e.EV_KEY, self._keys[vk], 1)
            kb.write(e.EV_KEY, code, 1 if event.down else 0)
            for vk in reversed(extra):
                kb.write(e.EV_KEY, self._keys[vk], 0)
            kb.syn()
        elif isinstance(event, Text):
            raise ValueError("uinput cannot type text: a kernel keyboard has keys, not characters")
        elif isinstance(event, PointerMove):
            m = self._devices["mouse"]
            m.write(e.EV_REL, e.REL_X, event.dx)
            m.write(e.EV_REL, e.REL_Y, event.dy)
            m.syn()
        elif isinstance(event, PointerPosition):
            fx, fy = event.fraction()
            p = self._devices["pointer"]
            p.write(e.EV_ABS, e.ABS_X, round(fx * (self._area.width - 1)))
            p.write(e.EV_ABS, e.ABS_Y, round(fy * (self._area.height - 1)))
            p.syn()
        elif isinstance(event, Button):
            m = self._devices["mouse"]
            m.write(e.EV_KEY, e.ecodes[MOUSE_BUTTONS[MouseButton(event.button)]], 1 if event.down else 0)
            m.syn()
        elif isinstance(event, Scroll):
            self._wheel(event)
        elif isinstance(event, Touch):
            self._touch(event)
        elif isinstance(event, Pen):
            self._pen(event)
        elif isinstance(event, ControllerArrival):
            self._pad(event.number)
        elif isinstance(event, ControllerState):
            self._pad_state(event)
        elif isinstance(event, ControllerRemoval):
            self._remove_pad(event.number)
        elif isinstance(event, (ControllerMotion, ControllerBattery, ControllerTouch)):
            pass  # an Xbox 360 pad has no motion sensors, battery report or touchpad
        else:
            raise ValueError(f"uinput cannot inject {type(event).__name__}")

    def _wheel(self, event: Scroll) -> None:
        from evdev import ecodes as e

        m = self._devices["mouse"]
        hi, lo = (e.REL_HWHEEL_HI_RES, e.REL_HWHEEL) if event.horizontal else (e.REL_WHEEL_HI_RES, e.REL_WHEEL)
        # the kernel's high-resolution wheel counts 120 per notch, like the event; a whole notch
        # is also sent on the classic axis for programs that read only that one
        total = self._scroll[event.horizontal] + event.amount
        notches = int(total / WHEEL_DELTA)
        self._scroll[event.horizontal] = total - notches * WHEEL_DELTA
        m.write(e.EV_REL, hi, event.amount)
        if notches:
            m.write(e.EV_REL, lo, notches)
        m.syn()

    def _touch(self, event: Touch) -> None:
        from evdev import ecodes as e

        t = self._devices["touch"]
        if event.phase == TouchPhase.CANCEL_ALL:
            for held in self._slots.values():
                t.write(e.EV_ABS, e.ABS_MT_SLOT, held)
                t.write(e.EV_ABS, e.ABS_MT_TRACKING_ID, -1)
            self._slots.clear()
        elif event.phase in (TouchPhase.UP, TouchPhase.CANCEL, TouchPhase.HOVER_LEAVE):
            ended = self._slots.pop(event.pointer_id, None)
            if ended is None:
                return
            t.write(e.EV_ABS, e.ABS_MT_SLOT, ended)
            t.write(e.EV_ABS, e.ABS_MT_TRACKING_ID, -1)
        elif event.phase in (TouchPhase.DOWN, TouchPhase.MOVE):
            slot = self._slots.get(event.pointer_id)
            if slot is None:
                free = sorted(set(range(TOUCH_SLOTS)) - set(self._slots.values()))
                if not free:
                    return  # more fingers than slots: the extra one is not shown
                slot = self._slots[event.pointer_id] = free[0]
                t.write(e.EV_ABS, e.ABS_MT_SLOT, slot)
                t.write(e.EV_ABS, e.ABS_MT_TRACKING_ID, event.pointer_id & 0xFFFF)
            else:
                t.write(e.EV_ABS, e.ABS_MT_SLOT, slot)
            x, y = round(event.x * TOUCH_MAX), round(event.y * TOUCH_MAX)
            t.write(e.EV_ABS, e.ABS_MT_POSITION_X, x)
            t.write(e.EV_ABS, e.ABS_MT_POSITION_Y, y)
            t.write(e.EV_ABS, e.ABS_MT_PRESSURE, round(event.pressure * 1024))
            t.write(e.EV_ABS, e.ABS_MT_TOUCH_MAJOR, round(event.contact_major * TOUCH_MAX))
            t.write(e.EV_ABS, e.ABS_MT_TOUCH_MINOR, round(event.contact_minor * TOUCH_MAX))
            if event.rotation is not None:
                t.write(e.EV_ABS, e.ABS_MT_ORIENTATION, ((event.rotation + 90) % 180) - 90)
            t.write(e.EV_ABS, e.ABS_X, x)  # single-touch emulation: the first contact
            t.write(e.EV_ABS, e.ABS_Y, y)
        else:
            return  # hover and button-only phases have no meaning on a touch screen
        t.write(e.EV_KEY, e.BTN_TOUCH, 1 if self._slots else 0)
        t.syn()

    def _pen(self, event: Pen) -> None:
        from evdev import ecodes as e

        p = self._devices["pen"]
        tool = e.BTN_TOOL_RUBBER if event.tool == PenTool.ERASER else e.BTN_TOOL_PEN
        near = event.phase not in (TouchPhase.HOVER_LEAVE, TouchPhase.CANCEL, TouchPhase.CANCEL_ALL)
        touching = event.phase in (TouchPhase.DOWN, TouchPhase.MOVE) or (
            event.phase == TouchPhase.BUTTON_ONLY and event.pressure > 0)
        if event.phase != TouchPhase.BUTTON_ONLY:
            p.write(e.EV_ABS, e.ABS_X, round(event.x * TOUCH_MAX))
            p.write(e.EV_ABS, e.ABS_Y, round(event.y * TOUCH_MAX))
            if event.phase == TouchPhase.HOVER:
                p.write(e.EV_ABS, e.ABS_DISTANCE, round(event.pressure * 1024))
                p.write(e.EV_ABS, e.ABS_PRESSURE, 0)
            else:
                p.write(e.EV_ABS, e.ABS_PRESSURE, round(event.pressure * 1024) if touching else 0)
            if event.tilt is not None:
                p.write(e.EV_ABS, e.ABS_TILT_X, event.tilt)
        p.write(e.EV_KEY, tool, 1 if near else 0)
        p.write(e.EV_KEY, e.BTN_TOUCH, 1 if touching and near else 0)
        p.write(e.EV_KEY, e.BTN_STYLUS, 1 if event.buttons & PenButton.PRIMARY else 0)
        p.write(e.EV_KEY, e.BTN_STYLUS2, 1 if event.buttons & PenButton.SECONDARY else 0)
        p.write(e.EV_KEY, e.BTN_STYLUS3, 1 if event.buttons & PenButton.TERTIARY else 0)
        p.syn()

    # ---- gamepads -------------------------------------------------------------------------------

    def _pad(self, number: int) -> _Gamepad:
        pad = self._pads.get(number)
        if pad is not None:
            return pad
        from evdev import AbsInfo
        from evdev import ecodes as e

        stick = AbsInfo(0, -32768, 32767, 16, 128, 0)
        trigger = AbsInfo(0, 0, 255, 0, 0, 0)
        hat = AbsInfo(0, -1, 1, 0, 0, 0)
        device = self._create(f"gamepad {number}", {
            e.EV_KEY: _codes(*PAD_BUTTONS.values()),
            e.EV_ABS: [(e.ABS_X, stick), (e.ABS_Y, stick), (e.ABS_RX, stick), (e.ABS_RY, stick),
                       (e.ABS_Z, trigger), (e.ABS_RZ, trigger), (e.ABS_HAT0X, hat), (e.ABS_HAT0Y, hat)],
            e.EV_FF: [e.FF_RUMBLE]}, name=XBOX360_NAME, vendor=XBOX360_VENDOR, product=XBOX360_PRODUCT,
            version=XBOX360_VERSION, bustype=e.BUS_USB, max_effects=16)
        pad = _Gamepad(number, device)
        with self._pads_lock:
            self._pads[number] = pad
        log.info("uinput: gamepad %d created", number)
        return pad

    def _pad_state(self, s: ControllerState) -> None:
        from evdev import ecodes as e

        pad = self._pad(s.number)
        dev = pad.device
        changed = pad.buttons ^ s.buttons
        for bit, name in PAD_BUTTONS.items():
            if changed & bit:
                dev.write(e.EV_KEY, e.ecodes[name], 1 if s.buttons & bit else 0)
        pad.buttons = ControllerButton(s.buttons)
        b = s.buttons
        dev.write(e.EV_ABS, e.ABS_HAT0X, (1 if b & ControllerButton.DPAD_RIGHT else 0)
                  - (1 if b & ControllerButton.DPAD_LEFT else 0))
        dev.write(e.EV_ABS, e.ABS_HAT0Y, (1 if b & ControllerButton.DPAD_DOWN else 0)
                  - (1 if b & ControllerButton.DPAD_UP else 0))
        dev.write(e.EV_ABS, e.ABS_X, s.left_x)
        dev.write(e.EV_ABS, e.ABS_Y, -1 - s.left_y)  # evdev's Y points down; ~y keeps the range
        dev.write(e.EV_ABS, e.ABS_RX, s.right_x)
        dev.write(e.EV_ABS, e.ABS_RY, -1 - s.right_y)
        dev.write(e.EV_ABS, e.ABS_Z, s.left_trigger)
        dev.write(e.EV_ABS, e.ABS_RZ, s.right_trigger)
        dev.syn()

    def _remove_pad(self, number: int) -> None:
        with self._pads_lock:
            pad = self._pads.pop(number, None)
        if pad is not None:
            if pad.playing is not None:
                self._feedback(Rumble(number, 0, 0))
            pad.device.close()
            log.info("uinput: gamepad %d removed", number)

    # ---- rumble ---------------------------------------------------------------------------------

    def _feedback_loop(self) -> None:
        """Answer effect uploads and turn plays and stops into Rumble feedback."""
        deadlines: list[tuple[float, int, int]] = []  # (when, pad number, effect id) an effect ends
        while not self._stop.is_set():
            with self._pads_lock:
                pads = {p.device.fd: p for p in self._pads.values()}
            now = time.monotonic()
            while deadlines and deadlines[0][0] <= now:
                _, number, effect = heapq.heappop(deadlines)
                pad = self._pads.get(number)
                if pad is not None and pad.playing == effect:
                    pad.playing = None
                    self._send(Rumble(number, 0, 0))
            timeout = min(FEEDBACK_POLL_S, max(0.0, deadlines[0][0] - now)) if deadlines else FEEDBACK_POLL_S
            if not pads:
                self._stop.wait(timeout)
                continue
            try:
                ready, _, _ = select.select(list(pads), [], [], timeout)
            except (OSError, ValueError):
                continue  # a pad was closed while we waited: look again
            for fd in ready:
                pad = pads[fd]
                try:
                    for ev in pad.device.read():
                        self._on_pad_event(pad, ev, deadlines)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    log.debug("uinput: gamepad %d feedback read failed: %s", pad.number, exc)

    def _on_pad_event(self, pad: _Gamepad, ev: Any, deadlines: list[tuple[float, int, int]]) -> None:
        from evdev import ecodes as e

        if ev.type == e.EV_UINPUT and ev.code == e.UI_FF_UPLOAD:
            upload = pad.device.begin_upload(ev.value)
            effect = upload.effect
            if effect.type == e.FF_RUMBLE:
                rumble = effect.u.ff_rumble_effect
                pad.effects[effect.id] = (rumble.strong_magnitude, rumble.weak_magnitude, effect.ff_replay.length)
                upload.retval = 0
            else:
                upload.retval = -22  # EINVAL: the pad only rumbles
            pad.device.end_upload(upload)
        elif ev.type == e.EV_UINPUT and ev.code == e.UI_FF_ERASE:
            erase = pad.device.begin_erase(ev.value)
            pad.effects.pop(erase.effect_id, None)
            erase.retval = 0
            pad.device.end_erase(erase)
        elif ev.type == e.EV_FF and ev.code in pad.effects:
            strong, weak, length_ms = pad.effects[ev.code]
            if ev.value > 0:
                pad.playing = ev.code
                self._send(Rumble(pad.number, strong, weak))
                if length_ms:
                    heapq.heappush(deadlines, (time.monotonic() + length_ms / 1000.0, pad.number, ev.code))
            elif pad.playing == ev.code:
                pad.playing = None
                self._send(Rumble(pad.number, 0, 0))

    def _send(self, event: FeedbackEvent) -> None:
        try:
            self._feedback(event)
        except Exception as exc:  # noqa: BLE001 - feedback must not stop rumble handling
            log.debug("uinput: feedback callback failed: %s", exc)

    # ---- close ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        if self._feedback_thread is not None:
            self._feedback_thread.join(FEEDBACK_POLL_S * 5)
        for number in list(self._pads):
            self._remove_pad(number)
        for dev in self._devices.values():
            try:
                dev.close()
            except OSError:
                pass
        self._devices.clear()
