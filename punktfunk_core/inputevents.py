"""The protocol-neutral input event model: what a client does, in one vocabulary.

A protocol plane decodes its client's messages into these events and hands
them to the session's :class:`punktfunk_core.inputsink.InputSink`; an
``input`` stage (:class:`punktfunk_core.stages.InputBackend`) injects them
into the host. Neither side knows the other: GameStream and ``punktfunk/1``
produce the same events, and xtest, uinput or a third-party backend consume
them. Events are small frozen value objects; every constructor checks its
ranges, so a backend can trust what it is given.

Units and conventions (docs/input.md, "The event model"):

- Keys are Windows virtual-key codes (``VK_*``, 1..254) interpreted on a US
  English layout: what Moonlight sends, what Sunshine uses as its neutral
  space, and what ``punktfunk/1`` sends too.
- Absolute pointer positions are in stream picture coordinates with their
  reference size: (0, 0) is the top-left pixel, (width, height) the
  bottom-right one.
- Scroll amounts are in 1/120 of a wheel notch (Windows' ``WHEEL_DELTA``);
  positive scrolls up (away from the user) or right.
- Touch and pen positions are normalised to the picture, 0.0..1.0.
- Controller sticks are -32768..32767 with up and right positive (XInput),
  triggers 0..255; button bits follow :class:`ControllerButton`.

Host → client feedback (rumble, LEDs, motion-sensor requests) uses the
:data:`FeedbackEvent` types at the end of this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum
from typing import ClassVar

#: one wheel notch in scroll units (Windows' WHEEL_DELTA)
WHEEL_DELTA = 120
#: the most controllers a session can have (GameStream's 16-bit active mask)
MAX_CONTROLLERS = 16


class InputClass(StrEnum):
    """The per-class switches of ``[input]``: each event belongs to one."""

    KEYBOARD = "keyboard"
    MOUSE = "mouse"
    GAMEPAD = "gamepad"
    TOUCH = "touch"


class Modifier(IntFlag):
    """Modifier keys held on the client when a key event was sent."""

    NONE = 0
    SHIFT = 0x01
    CTRL = 0x02
    ALT = 0x04
    META = 0x08


class MouseButton(IntEnum):
    LEFT = 1
    MIDDLE = 2
    RIGHT = 3
    X1 = 4  # "back"
    X2 = 5  # "forward"


class ControllerType(IntEnum):
    UNKNOWN = 0
    XBOX = 1
    PLAYSTATION = 2
    NINTENDO = 3
    STEAM = 4


class ControllerCapability(IntFlag):
    NONE = 0
    ANALOG_TRIGGERS = 0x01
    RUMBLE = 0x02
    TRIGGER_RUMBLE = 0x04
    TOUCHPAD = 0x08
    ACCELEROMETER = 0x10
    GYROSCOPE = 0x20
    BATTERY_STATE = 0x40
    RGB_LED = 0x80
    DUAL_TOUCHPAD = 0x100


class ControllerButton(IntFlag):
    """Controller button bits: XInput's ``wButtons`` layout, extended above
    bit 15 the way Sunshine extends it (paddles, touchpad click, misc)."""

    NONE = 0
    DPAD_UP = 0x0001
    DPAD_DOWN = 0x0002
    DPAD_LEFT = 0x0004
    DPAD_RIGHT = 0x0008
    START = 0x0010
    BACK = 0x0020
    LEFT_STICK = 0x0040
    RIGHT_STICK = 0x0080
    LEFT_SHOULDER = 0x0100
    RIGHT_SHOULDER = 0x0200
    GUIDE = 0x0400
    A = 0x1000
    B = 0x2000
    X = 0x4000
    Y = 0x8000
    PADDLE1 = 0x010000
    PADDLE2 = 0x020000
    PADDLE3 = 0x040000
    PADDLE4 = 0x080000
    TOUCHPAD = 0x100000
    MISC = 0x200000


#: every button bit a controller can report
ALL_CONTROLLER_BUTTONS = 0x3FF7FF


class TouchPhase(IntEnum):
    """What happened to a touch contact (or a pen)."""

    HOVER = 0
    DOWN = 1
    UP = 2
    MOVE = 3
    CANCEL = 4
    BUTTON_ONLY = 5  # pen: only the barrel buttons changed
    HOVER_LEAVE = 6
    CANCEL_ALL = 7


class PenTool(IntEnum):
    UNKNOWN = 0
    PEN = 1
    ERASER = 2


class PenButton(IntFlag):
    NONE = 0
    PRIMARY = 0x01
    SECONDARY = 0x02
    TERTIARY = 0x04


class MotionSensor(IntEnum):
    ACCELEROMETER = 1  # m/s², gravity included
    GYROSCOPE = 2  # degrees per second


class BatteryState(IntEnum):
    UNKNOWN = 0
    NOT_PRESENT = 1
    DISCHARGING = 2
    CHARGING = 3
    NOT_CHARGING = 4
    FULL = 5


#: battery percentage when the client does not know it
BATTERY_PERCENT_UNKNOWN = 0xFF
#: rotation of a touch or pen when the client does not know it
ROTATION_UNKNOWN = None


def _int_in(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} {value!r} is not an integer in {lo}..{hi}")


def _unit(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} {value!r} is not a number in 0.0..1.0")


def _finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} {value!r} is not a finite number")


def _controller(number: int) -> None:
    _int_in("controller number", number, 0, MAX_CONTROLLERS - 1)


def _rotation(value: int | None) -> None:
    if value is not None:
        _int_in("rotation", value, 0, 359)


# ---- keyboard ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """A key went down or up. ``code`` is a Windows virtual-key code;
    ``modifiers`` the modifier keys the client held at that moment."""

    input_class: ClassVar[InputClass] = InputClass.KEYBOARD
    code: int
    down: bool
    modifiers: Modifier = Modifier.NONE

    def __post_init__(self) -> None:
        _int_in("virtual-key code", self.code, 1, 254)
        _int_in("modifiers", int(self.modifiers), 0, 0x0F)


@dataclass(frozen=True, slots=True)
class Text:
    """Text typed through an input method or an on-screen keyboard."""

    input_class: ClassVar[InputClass] = InputClass.KEYBOARD
    text: str

    #: a text event carries at most this many characters
    MAX_CHARS: ClassVar[int] = 256

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not 1 <= len(self.text) <= self.MAX_CHARS:
            raise ValueError(f"text must be 1..{self.MAX_CHARS} characters")


# ---- mouse ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointerMove:
    """A relative pointer motion in host pixels (mouse counts)."""

    input_class: ClassVar[InputClass] = InputClass.MOUSE
    dx: int
    dy: int

    def __post_init__(self) -> None:
        _int_in("dx", self.dx, -(1 << 20), 1 << 20)
        _int_in("dy", self.dy, -(1 << 20), 1 << 20)


@dataclass(frozen=True, slots=True)
class PointerPosition:
    """An absolute pointer position in stream coordinates: ``(0, 0)`` is the
    picture's top-left pixel and ``(width, height)`` its bottom-right one."""

    input_class: ClassVar[InputClass] = InputClass.MOUSE
    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        _int_in("reference width", self.width, 1, 1 << 16)
        _int_in("reference height", self.height, 1, 1 << 16)
        _int_in("x", self.x, -(1 << 16), 1 << 16)
        _int_in("y", self.y, -(1 << 16), 1 << 16)

    def fraction(self) -> tuple[float, float]:
        """The position as fractions of the picture, clamped to 0.0..1.0."""
        return (min(max(self.x / self.width, 0.0), 1.0), min(max(self.y / self.height, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class Button:
    """A mouse button went down or up."""

    input_class: ClassVar[InputClass] = InputClass.MOUSE
    button: MouseButton
    down: bool

    def __post_init__(self) -> None:
        _int_in("mouse button", int(self.button), 1, 5)


@dataclass(frozen=True, slots=True)
class Scroll:
    """A wheel turn in 1/120 notch: positive is up, or right when
    ``horizontal``. High-resolution wheels and touchpads send less than 120."""

    input_class: ClassVar[InputClass] = InputClass.MOUSE
    amount: int
    horizontal: bool = False

    def __post_init__(self) -> None:
        _int_in("scroll amount", self.amount, -(1 << 20), 1 << 20)


# ---- controllers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControllerArrival:
    """A controller was plugged in on the client: its kind, what it can do
    (``capabilities``) and which :class:`ControllerButton` bits it has."""

    input_class: ClassVar[InputClass] = InputClass.GAMEPAD
    number: int
    kind: ControllerType = ControllerType.XBOX
    capabilities: ControllerCapability = ControllerCapability.NONE
    buttons: ControllerButton = ControllerButton.NONE

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("controller type", int(self.kind), 0, 255)
        _int_in("controller capabilities", int(self.capabilities), 0, 0xFFFF)
        _int_in("controller buttons", int(self.buttons), 0, 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class ControllerState:
    """The whole state of one controller: pressed buttons, triggers
    (0..255), sticks (-32768..32767, up and right positive)."""

    input_class: ClassVar[InputClass] = InputClass.GAMEPAD
    number: int
    buttons: ControllerButton = ControllerButton.NONE
    left_trigger: int = 0
    right_trigger: int = 0
    left_x: int = 0
    left_y: int = 0
    right_x: int = 0
    right_y: int = 0

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("controller buttons", int(self.buttons), 0, 0xFFFFFFFF)
        _int_in("left trigger", self.left_trigger, 0, 255)
        _int_in("right trigger", self.right_trigger, 0, 255)
        for name in ("left_x", "left_y", "right_x", "right_y"):
            _int_in(name, getattr(self, name), -32768, 32767)


@dataclass(frozen=True, slots=True)
class ControllerRemoval:
    """A controller was unplugged on the client."""

    input_class: ClassVar[InputClass] = InputClass.GAMEPAD
    number: int

    def __post_init__(self) -> None:
        _controller(self.number)


@dataclass(frozen=True, slots=True)
class ControllerMotion:
    """One motion-sensor reading of a controller (accelerometer in m/s²,
    gyroscope in deg/s; axes as SDL defines them)."""

    input_class: ClassVar[InputClass] = InputClass.GAMEPAD
    number: int
    sensor: MotionSensor
    x: float
    y: float
    z: float

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("motion sensor", int(self.sensor), 1, 2)
        for name in ("x", "y", "z"):
            _finite(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class ControllerBattery:
    """A controller's battery: state and percent (255 = unknown)."""

    input_class: ClassVar[InputClass] = InputClass.GAMEPAD
    number: int
    state: BatteryState
    percent: int = BATTERY_PERCENT_UNKNOWN

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("battery state", int(self.state), 0, 5)
        if self.percent != BATTERY_PERCENT_UNKNOWN:
            _int_in("battery percent", self.percent, 0, 100)


@dataclass(frozen=True, slots=True)
class ControllerTouch:
    """A touch on a controller's touchpad (``pad`` 0 or 1), normalised."""

    input_class: ClassVar[InputClass] = InputClass.GAMEPAD
    number: int
    phase: TouchPhase
    pointer_id: int
    x: float
    y: float
    pressure: float = 0.0
    pad: int = 0

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("touch phase", int(self.phase), 0, 7)
        _int_in("pointer id", self.pointer_id, 0, 0xFFFFFFFF)
        _unit("x", self.x)
        _unit("y", self.y)
        _unit("pressure", self.pressure)
        _int_in("touchpad", self.pad, 0, 1)


# ---- touch screen and pen ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touch:
    """A finger on the picture. ``x``/``y`` are 0.0..1.0 of the picture;
    ``pressure`` 0.0..1.0 (0 = unknown; for HOVER it is the distance);
    contact area axes are normalised too; ``rotation`` in degrees or None."""

    input_class: ClassVar[InputClass] = InputClass.TOUCH
    pointer_id: int
    phase: TouchPhase
    x: float = 0.0
    y: float = 0.0
    pressure: float = 0.0
    contact_major: float = 0.0
    contact_minor: float = 0.0
    rotation: int | None = None

    def __post_init__(self) -> None:
        _int_in("pointer id", self.pointer_id, 0, 0xFFFFFFFF)
        _int_in("touch phase", int(self.phase), 0, 7)
        for name in ("x", "y", "pressure", "contact_major", "contact_minor"):
            _unit(name, getattr(self, name))
        _rotation(self.rotation)


@dataclass(frozen=True, slots=True)
class Pen:
    """A stylus on the picture: like :class:`Touch` plus the tool, barrel
    buttons and ``tilt`` (degrees from vertical, 0..90, or None)."""

    input_class: ClassVar[InputClass] = InputClass.TOUCH
    phase: TouchPhase
    tool: PenTool = PenTool.PEN
    buttons: PenButton = PenButton.NONE
    x: float = 0.0
    y: float = 0.0
    pressure: float = 0.0
    contact_major: float = 0.0
    contact_minor: float = 0.0
    rotation: int | None = None
    tilt: int | None = None

    def __post_init__(self) -> None:
        _int_in("pen phase", int(self.phase), 0, 7)
        _int_in("pen tool", int(self.tool), 0, 2)
        _int_in("pen buttons", int(self.buttons), 0, 7)
        for name in ("x", "y", "pressure", "contact_major", "contact_minor"):
            _unit(name, getattr(self, name))
        _rotation(self.rotation)
        if self.tilt is not None:
            _int_in("tilt", self.tilt, 0, 90)


InputEvent = (
    Key | Text | PointerMove | PointerPosition | Button | Scroll
    | ControllerArrival | ControllerState | ControllerRemoval | ControllerMotion | ControllerBattery | ControllerTouch
    | Touch | Pen
)

#: every input event type (for plugin authors and tests)
INPUT_EVENT_TYPES: tuple[type, ...] = InputEvent.__args__


#: touch and pen phases whose coordinates say where the contact is
_PLACED = frozenset({TouchPhase.HOVER, TouchPhase.DOWN, TouchPhase.MOVE, TouchPhase.UP})


class ScreenPointer:
    """Where a session's pointer is on the picture, as its client's input moved it:
    absolute positions, relative moves from there (in stream pixels, clamped to the
    picture), touch and pen contacts. The session's sink writes it; a capture that
    draws the pointer itself (the test pattern) reads it per frame without a lock:
    :attr:`position` is replaced whole, one store."""

    __slots__ = ("width", "height", "position")

    def __init__(self, width: int = 0, height: int = 0) -> None:
        self.width, self.height = width, height
        #: (x, y), each 0.0..1.0 of the picture; None before the first pointing event
        self.position: tuple[float, float] | None = None

    def follow(self, event: InputEvent) -> None:
        """Move as ``event`` moves the pointer (other events leave it)."""
        if isinstance(event, PointerPosition):
            self.position = event.fraction()
        elif isinstance(event, (Touch, Pen)):
            if event.phase in _PLACED:
                self.position = (event.x, event.y)
        elif isinstance(event, PointerMove) and self.width > 1 and self.height > 1:
            x, y = self.position or (0.5, 0.5)
            self.position = (min(1.0, max(0.0, x + event.dx / (self.width - 1))),
                             min(1.0, max(0.0, y + event.dy / (self.height - 1))))

    def pixel(self, width: int, height: int) -> tuple[int, int] | None:
        """The position in a ``width``×``height`` picture, None before any."""
        pos = self.position
        if pos is None:
            return None
        return round(pos[0] * (width - 1)), round(pos[1] * (height - 1))


# ---- feedback: host → client ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rumble:
    """Set a controller's rumble motors (0..65535; 0, 0 stops them).
    ``low`` is the heavy low-frequency motor, ``high`` the light one."""

    number: int
    low: int
    high: int

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("low-frequency motor", self.low, 0, 0xFFFF)
        _int_in("high-frequency motor", self.high, 0, 0xFFFF)


@dataclass(frozen=True, slots=True)
class TriggerRumble:
    """Set the motors in a controller's triggers (0..65535)."""

    number: int
    left: int
    right: int

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("left trigger motor", self.left, 0, 0xFFFF)
        _int_in("right trigger motor", self.right, 0, 0xFFFF)


@dataclass(frozen=True, slots=True)
class MotionEventRate:
    """Ask the client for motion-sensor reports at ``rate_hz`` (0 = stop)."""

    number: int
    sensor: MotionSensor
    rate_hz: int

    def __post_init__(self) -> None:
        _controller(self.number)
        _int_in("motion sensor", int(self.sensor), 1, 2)
        _int_in("report rate", self.rate_hz, 0, 0xFFFF)


@dataclass(frozen=True, slots=True)
class ControllerLed:
    """Set a controller's RGB light."""

    number: int
    r: int
    g: int
    b: int

    def __post_init__(self) -> None:
        _controller(self.number)
        for name in ("r", "g", "b"):
            _int_in(name, getattr(self, name), 0, 255)


FeedbackEvent = Rumble | TriggerRumble | MotionEventRate | ControllerLed
