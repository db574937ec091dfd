"""GameStream input: the packets Moonlight sends on the control stream, and the
feedback messages the host sends back. Pure functions, no sockets.

:func:`parse_input` decodes one input packet (the payload of control message
0x0206 on the encrypted control stream) into the protocol-neutral event
model (``punktfunk_core.inputevents``). Every packet is bounds-checked:
anything short, long, out of range or unknown raises :class:`MalformedInput`,
the one exception the control stream counts and drops.

:func:`encode_input` is the inverse (what moonlight-common-c builds), used by
tests and by anything that speaks GameStream to a host. The ``encode_*``
feedback functions build the host → client messages moonlight-common-c
understands: rumble, trigger rumble, motion-sensor requests and the RGB LED.
:class:`LegacyInputCipher` opens the per-packet AES-GCM framing that clients
use when the control stream itself is not encrypted (hosts that announce a
version below 7.1.431).

Layouts (docs/input.md, "GameStream input packets"): an 8-byte header, the
payload length as u32 big-endian (counting the magic that follows) and the
packet type ("magic") as u32 little-endian, then a fixed body per type.
Mouse coordinates and scroll amounts are big-endian; everything else is
little-endian; floats are IEEE-754 single precision, little-endian.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_core.inputevents import (
    BATTERY_PERCENT_UNKNOWN,
    BatteryState,
    Button,
    ControllerArrival,
    ControllerBattery,
    ControllerButton,
    ControllerCapability,
    ControllerLed,
    ControllerMotion,
    ControllerRemoval,
    ControllerState,
    ControllerTouch,
    ControllerType,
    InputEvent,
    Key,
    Modifier,
    MotionEventRate,
    MotionSensor,
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
    TriggerRumble,
)

# packet types (u32 little-endian after the length); generation 5 and later (every
# Moonlight talking to a host that announces 7.x) shifted some of them by one
KEY_DOWN = 0x03
KEY_UP = 0x04
MOUSE_MOVE_ABS = 0x05
MOUSE_MOVE_REL = 0x07
MOUSE_BUTTON_DOWN = 0x08
MOUSE_BUTTON_UP = 0x09
SCROLL = 0x0A
MULTI_CONTROLLER = 0x0C
HAPTICS_ENABLE = 0x0D
UTF8_TEXT = 0x17
HSCROLL = 0x55000001
TOUCH = 0x55000002
PEN = 0x55000003
CONTROLLER_ARRIVAL = 0x55000004
CONTROLLER_TOUCH = 0x55000005
CONTROLLER_MOTION = 0x55000006
CONTROLLER_BATTERY = 0x55000007
# before generation 5 (GFE 2.x): the same packets under older numbers
OLD_MOUSE_MOVE_REL = 0x06
OLD_MOUSE_BUTTON_DOWN = 0x07
OLD_MOUSE_BUTTON_UP = 0x08
OLD_SCROLL = 0x09
OLD_CONTROLLER = 0x0A  # generation 3: one controller, no number
OLD_MULTI_CONTROLLER = 0x0D

#: host → client control message types (encrypted control stream)
CTRL_RUMBLE = 0x010B
CTRL_TRIGGER_RUMBLE = 0x5500
CTRL_MOTION_EVENT = 0x5501
CTRL_RGB_LED = 0x5502

#: a UTF-8 text packet carries at most this many bytes
MAX_TEXT_BYTES = 32
#: "unknown" markers of the touch and pen fields
ROTATION_UNKNOWN = 0xFFFF
TILT_UNKNOWN = 0xFF

_HEADER = struct.Struct(">II")  # length (big-endian); the magic is re-read little-endian
_MC = struct.Struct("<HhHHHBBhhhhHHH")
_MC_HEADER_B, _MC_MID_B, _MC_TAIL_A, _MC_TAIL_B = 0x001A, 0x0014, 0x009C, 0x0055
_OLD_C = struct.Struct("<HHBBhhhhIH")
_TOUCH = struct.Struct("<BBHIfffff")
_PEN = struct.Struct("<BBBBfffHBBff")
_ARRIVAL = struct.Struct("<BBHI")
_CTOUCH = struct.Struct("<BBBBIfff")
_MOTION = struct.Struct("<BBxxfff")
_BATTERY = struct.Struct("<BBBx")


_E = TypeVar("_E", bound=IntEnum)


class MalformedInput(ValueError):
    """An input packet that does not parse: counted and dropped by the caller."""


@dataclass(frozen=True, slots=True)
class HapticsEnable:
    """The client can rumble and wants rumble messages (not an input event:
    the control stream keeps it as a session setting)."""

    enabled: bool


def _body(data: bytes, size: int, what: str) -> bytes:
    if len(data) != size:
        raise MalformedInput(f"{what} packet body is {len(data)} bytes, not {size}")
    return data


def _float(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise MalformedInput(f"{what} is not a finite number")
    return value


def _unit(value: float, what: str) -> float:
    # clients send positions just outside the picture while a finger slides off it
    return min(max(_float(value, what), 0.0), 1.0)


def _enum(cls: type[_E], value: int, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise MalformedInput(f"{what} {value} is not one of {[m.value for m in cls]}") from None


def _rotation(value: int) -> int | None:
    if value == ROTATION_UNKNOWN:
        return None
    if value > 359:
        raise MalformedInput(f"rotation {value} is not 0..359 degrees")
    return value


def _controller(number: int) -> int:
    if not 0 <= number < 16:
        raise MalformedInput(f"controller number {number} is not 0..15")
    return number


def _key(body: bytes, down: bool) -> InputEvent:
    _flags, code, modifiers, _zero = struct.unpack("<BhBh", _body(body, 6, "keyboard"))
    code &= 0xFF  # the high byte is not part of the virtual-key code (Sunshine masks it too)
    if not 1 <= code <= 254:
        raise MalformedInput(f"virtual-key code {code} is not 1..254")
    return Key(code, down, Modifier(modifiers & 0x0F))


def _abs(body: bytes) -> InputEvent:
    x, y, _unused, width, height = struct.unpack(">hhhhh", _body(body, 10, "absolute mouse"))
    if width <= 0 or height <= 0:
        raise MalformedInput(f"absolute mouse reference size {width}x{height} is not positive")
    return PointerPosition(x, y, width, height)


def _rel(body: bytes) -> InputEvent:
    return PointerMove(*struct.unpack(">hh", _body(body, 4, "relative mouse")))


def _button(body: bytes, down: bool) -> InputEvent:
    (button,) = _body(body, 1, "mouse button")
    return Button(_enum(MouseButton, button, "mouse button"), down)


def _scroll(body: bytes) -> InputEvent:
    amount, _repeat, _zero = struct.unpack(">hhh", _body(body, 6, "scroll"))
    return Scroll(amount)


def _hscroll(body: bytes) -> InputEvent:
    (amount,) = struct.unpack(">h", _body(body, 2, "horizontal scroll"))
    return Scroll(amount, horizontal=True)


def _multi_controller(body: bytes) -> InputEvent:
    (_hb, number, mask, _mid, flags, lt, rt, lx, ly, rx, ry, _ta, flags2, _tb) = _MC.unpack(
        _body(body, _MC.size, "controller"))
    _controller(number)
    if not mask & (1 << number):  # the controller's bit cleared: it is gone
        return ControllerRemoval(number)
    return ControllerState(number, ControllerButton(flags | flags2 << 16), lt, rt, lx, ly, rx, ry)


def _old_controller(body: bytes) -> InputEvent:
    (_hb, flags, lt, rt, lx, ly, rx, ry, _ta, _tb) = _OLD_C.unpack(_body(body, _OLD_C.size, "controller"))
    return ControllerState(0, ControllerButton(flags), lt, rt, lx, ly, rx, ry)


def _text(body: bytes) -> InputEvent:
    if not 1 <= len(body) <= MAX_TEXT_BYTES:
        raise MalformedInput(f"text packet of {len(body)} bytes (1..{MAX_TEXT_BYTES})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"text is not UTF-8 ({exc.reason})") from None
    if any((ord(c) < 0x20 and c not in "\t\n\r") or 0x7F <= ord(c) < 0xA0 for c in text):
        raise MalformedInput("text contains control characters")
    return Text(text)


def _haptics(body: bytes) -> HapticsEnable:
    (enable,) = struct.unpack("<H", _body(body, 2, "haptics"))
    return HapticsEnable(bool(enable))


def _touch(body: bytes) -> InputEvent:
    phase, _zero, rotation, pointer, x, y, pressure, major, minor = _TOUCH.unpack(_body(body, _TOUCH.size, "touch"))
    return Touch(pointer, _enum(TouchPhase, phase, "touch event"), _unit(x, "x"), _unit(y, "y"),
                 _unit(pressure, "pressure"), _unit(major, "contact area"), _unit(minor, "contact area"),
                 _rotation(rotation))


def _pen(body: bytes) -> InputEvent:
    (phase, tool, buttons, _z, x, y, pressure, rotation, tilt, _z2, major, minor) = _PEN.unpack(
        _body(body, _PEN.size, "pen"))
    if buttons > 7:
        raise MalformedInput(f"pen buttons {buttons:#x} name unknown buttons")
    if tilt != TILT_UNKNOWN and tilt > 90:
        raise MalformedInput(f"pen tilt {tilt} is not 0..90 degrees")
    return Pen(_enum(TouchPhase, phase, "pen event"), _enum(PenTool, tool, "pen tool"), PenButton(buttons),
               _unit(x, "x"), _unit(y, "y"), _unit(pressure, "pressure"), _unit(major, "contact area"),
               _unit(minor, "contact area"), _rotation(rotation), None if tilt == TILT_UNKNOWN else tilt)


def _arrival(body: bytes) -> InputEvent:
    number, kind, caps, buttons = _ARRIVAL.unpack(_body(body, _ARRIVAL.size, "controller arrival"))
    known = kind if kind in ControllerType._value2member_map_ else ControllerType.UNKNOWN
    return ControllerArrival(_controller(number), ControllerType(known), ControllerCapability(caps),
                             ControllerButton(buttons))


def _controller_touch(body: bytes) -> InputEvent:
    number, phase, _zero, pad, pointer, x, y, pressure = _CTOUCH.unpack(_body(body, _CTOUCH.size, "controller touch"))
    if pad > 1:
        raise MalformedInput(f"touchpad {pad} is not 0 or 1")
    return ControllerTouch(_controller(number), _enum(TouchPhase, phase, "touch event"), pointer,
                           _unit(x, "x"), _unit(y, "y"), _unit(pressure, "pressure"), pad)


def _motion(body: bytes) -> InputEvent:
    number, sensor, x, y, z = _MOTION.unpack(_body(body, _MOTION.size, "controller motion"))
    return ControllerMotion(_controller(number), _enum(MotionSensor, sensor, "motion sensor"),
                            _float(x, "x"), _float(y, "y"), _float(z, "z"))


def _battery(body: bytes) -> InputEvent:
    number, state, percent = _BATTERY.unpack(_body(body, _BATTERY.size, "controller battery"))
    if percent > 100 and percent != BATTERY_PERCENT_UNKNOWN:
        raise MalformedInput(f"battery percentage {percent} is not 0..100")
    return ControllerBattery(_controller(number), _enum(BatteryState, state, "battery state"), percent)


_Parser = Callable[[bytes], "InputEvent | HapticsEnable"]

_COMMON: dict[int, _Parser] = {
    KEY_DOWN: lambda b: _key(b, True),
    KEY_UP: lambda b: _key(b, False),
    MOUSE_MOVE_ABS: _abs,
    UTF8_TEXT: _text,
    HSCROLL: _hscroll,
    TOUCH: _touch,
    PEN: _pen,
    CONTROLLER_ARRIVAL: _arrival,
    CONTROLLER_TOUCH: _controller_touch,
    CONTROLLER_MOTION: _motion,
    CONTROLLER_BATTERY: _battery,
}
_GEN5: dict[int, _Parser] = {
    **_COMMON,
    MOUSE_MOVE_REL: _rel,
    MOUSE_BUTTON_DOWN: lambda b: _button(b, True),
    MOUSE_BUTTON_UP: lambda b: _button(b, False),
    SCROLL: _scroll,
    MULTI_CONTROLLER: _multi_controller,
    HAPTICS_ENABLE: _haptics,
}
_OLD: dict[int, _Parser] = {
    **_COMMON,
    OLD_MOUSE_MOVE_REL: _rel,
    OLD_MOUSE_BUTTON_DOWN: lambda b: _button(b, True),
    OLD_MOUSE_BUTTON_UP: lambda b: _button(b, False),
    OLD_SCROLL: _scroll,
    OLD_CONTROLLER: _old_controller,
    OLD_MULTI_CONTROLLER: _multi_controller,
}


def parse_input(packet: bytes, generation: int = 7) -> InputEvent | HapticsEnable:
    """Decode one input packet sent by a client of a host that announced
    major version ``generation`` (this host announces 7). Raises
    :class:`MalformedInput` for anything that is not exactly a known packet."""
    if len(packet) < _HEADER.size:
        raise MalformedInput(f"input packet of {len(packet)} bytes is shorter than its header")
    length = _HEADER.unpack_from(packet)[0]
    if length != len(packet) - 4:
        raise MalformedInput(f"input packet says {length} bytes follow its length, {len(packet) - 4} do")
    (magic,) = struct.unpack_from("<I", packet, 4)
    parser = (_GEN5 if generation >= 5 else _OLD).get(magic)
    if parser is None:
        raise MalformedInput(f"unknown input packet type {magic:#x}")
    try:
        return parser(bytes(packet[8:]))
    except MalformedInput:
        raise
    except (ValueError, struct.error) as exc:  # an event's own range check
        raise MalformedInput(str(exc)) from None


# ---- encoders (what a client sends) -----------------------------------------------------------


def _packet(magic: int, body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 4) + struct.pack("<I", magic) + body


def _f(value: float) -> float:
    return float(value)


def encode_input(event: InputEvent | HapticsEnable, generation: int = 7, active_mask: int | None = None) -> bytes:
    """The packet moonlight-common-c sends for ``event`` to a host of major
    version ``generation``. ``active_mask`` is the controller mask sent with
    a controller state (default: only that controller)."""
    gen5 = generation >= 5
    if isinstance(event, Key):
        return _packet(KEY_DOWN if event.down else KEY_UP, struct.pack("<BhBh", 0, event.code, int(event.modifiers), 0))
    if isinstance(event, PointerPosition):
        return _packet(MOUSE_MOVE_ABS, struct.pack(">hhhhh", event.x, event.y, 0, event.width, event.height))
    if isinstance(event, PointerMove):
        return _packet(MOUSE_MOVE_REL if gen5 else OLD_MOUSE_MOVE_REL, struct.pack(">hh", event.dx, event.dy))
    if isinstance(event, Button):
        magic = (MOUSE_BUTTON_DOWN if event.down else MOUSE_BUTTON_UP) if gen5 else (
            OLD_MOUSE_BUTTON_DOWN if event.down else OLD_MOUSE_BUTTON_UP)
        return _packet(magic, bytes([int(event.button)]))
    if isinstance(event, Scroll):
        if event.horizontal:
            return _packet(HSCROLL, struct.pack(">h", event.amount))
        return _packet(SCROLL if gen5 else OLD_SCROLL, struct.pack(">hhh", event.amount, event.amount, 0))
    if isinstance(event, (ControllerState, ControllerRemoval)):
        state = event if isinstance(event, ControllerState) else ControllerState(event.number)
        mask = (1 << event.number) if active_mask is None else active_mask
        if isinstance(event, ControllerRemoval):
            mask &= ~(1 << event.number)
        b = int(state.buttons)
        return _packet(MULTI_CONTROLLER if gen5 else OLD_MULTI_CONTROLLER, _MC.pack(
            _MC_HEADER_B, state.number, mask, _MC_MID_B, b & 0xFFFF, state.left_trigger, state.right_trigger,
            state.left_x, state.left_y, state.right_x, state.right_y, _MC_TAIL_A, b >> 16, _MC_TAIL_B))
    if isinstance(event, Text):
        return _packet(UTF8_TEXT, event.text.encode("utf-8"))
    if isinstance(event, HapticsEnable):
        return _packet(HAPTICS_ENABLE, struct.pack("<H", int(event.enabled)))
    if isinstance(event, Touch):
        rot = ROTATION_UNKNOWN if event.rotation is None else event.rotation
        return _packet(TOUCH, _TOUCH.pack(int(event.phase), 0, rot, event.pointer_id, _f(event.x), _f(event.y),
                                          _f(event.pressure), _f(event.contact_major), _f(event.contact_minor)))
    if isinstance(event, Pen):
        rot = ROTATION_UNKNOWN if event.rotation is None else event.rotation
        tilt = TILT_UNKNOWN if event.tilt is None else event.tilt
        return _packet(PEN, _PEN.pack(int(event.phase), int(event.tool), int(event.buttons), 0, _f(event.x),
                                      _f(event.y), _f(event.pressure), rot, tilt, 0, _f(event.contact_major),
                                      _f(event.contact_minor)))
    if isinstance(event, ControllerArrival):
        return _packet(CONTROLLER_ARRIVAL, _ARRIVAL.pack(event.number, int(event.kind), int(event.capabilities),
                                                         int(event.buttons)))
    if isinstance(event, ControllerTouch):
        return _packet(CONTROLLER_TOUCH, _CTOUCH.pack(event.number, int(event.phase), 0, event.pad, event.pointer_id,
                                                      _f(event.x), _f(event.y), _f(event.pressure)))
    if isinstance(event, ControllerMotion):
        return _packet(CONTROLLER_MOTION, _MOTION.pack(event.number, int(event.sensor), event.x, event.y, event.z))
    if isinstance(event, ControllerBattery):
        return _packet(CONTROLLER_BATTERY, _BATTERY.pack(event.number, int(event.state), event.percent))
    raise TypeError(f"no GameStream input packet for {type(event).__name__}")


# ---- feedback: host → client ------------------------------------------------------------------


def encode_rumble(event: Rumble) -> tuple[int, bytes]:
    """Control message (type, payload) setting a controller's motors; the
    first four payload bytes are unused."""
    return CTRL_RUMBLE, struct.pack("<IHHH", 0, event.number, event.low, event.high)


def encode_trigger_rumble(event: TriggerRumble) -> tuple[int, bytes]:
    return CTRL_TRIGGER_RUMBLE, struct.pack("<HHH", event.number, event.left, event.right)


def encode_motion_event(event: MotionEventRate) -> tuple[int, bytes]:
    return CTRL_MOTION_EVENT, struct.pack("<HHB", event.number, event.rate_hz, int(event.sensor))


def encode_rgb_led(event: ControllerLed) -> tuple[int, bytes]:
    return CTRL_RGB_LED, struct.pack("<HBBB", event.number, event.r, event.g, event.b)


def encode_feedback(event: Rumble | TriggerRumble | MotionEventRate | ControllerLed) -> tuple[int, bytes]:
    """The control message for any feedback event."""
    if isinstance(event, Rumble):
        return encode_rumble(event)
    if isinstance(event, TriggerRumble):
        return encode_trigger_rumble(event)
    if isinstance(event, MotionEventRate):
        return encode_motion_event(event)
    if isinstance(event, ControllerLed):
        return encode_rgb_led(event)
    raise TypeError(f"no GameStream feedback message for {type(event).__name__}")


# ---- the framing of clients without an encrypted control stream ------------------------------


class LegacyInputCipher:
    """Per-packet AES-GCM of input on an unencrypted control stream.

    Each message is ``u32 BE length ‖ 16-byte tag ‖ ciphertext`` (length =
    tag + ciphertext) under the launch's remote-input key. The 16-byte IV
    starts as ``rikeyid`` (u32 big-endian) followed by zeros; after every
    message whose tag and ciphertext are at least 32 bytes, the next IV is
    the message's last 16 bytes (moonlight-common-c mirrors GFE there).
    One object per direction and session: the IV chain is its state.
    """

    TAG = 16

    def __init__(self, key: bytes, rikeyid: int) -> None:
        if len(key) != 16:
            raise ValueError("the remote-input key is 16 bytes")
        self._aead = AESGCM(key)
        self.iv = struct.pack(">I", rikeyid & 0xFFFFFFFF) + bytes(12)

    def open(self, message: bytes) -> bytes:
        """The input packet inside ``message``; MalformedInput when the
        framing or the tag is wrong (the IV then stays as it was)."""
        if len(message) < 4 + self.TAG + 8:
            raise MalformedInput(f"encrypted input of {len(message)} bytes is too short")
        (length,) = struct.unpack_from(">I", message)
        if length != len(message) - 4:
            raise MalformedInput(f"encrypted input says {length} bytes, {len(message) - 4} follow")
        tag, ciphertext = message[4:4 + self.TAG], message[4 + self.TAG:]
        try:
            packet = self._aead.decrypt(self.iv, bytes(ciphertext) + bytes(tag), None)
        except InvalidTag:
            raise MalformedInput("encrypted input does not authenticate") from None
        self._advance(message)
        return packet

    def seal(self, packet: bytes) -> bytes:
        """What a client sends for ``packet`` (the other end of :meth:`open`)."""
        sealed = self._aead.encrypt(self.iv, packet, None)
        message = struct.pack(">I", len(sealed)) + sealed[-self.TAG:] + sealed[:-self.TAG]
        self._advance(message)
        return message

    def _advance(self, message: bytes) -> None:
        if len(message) - 4 >= self.TAG + 16:
            self.iv = bytes(message[-16:])
