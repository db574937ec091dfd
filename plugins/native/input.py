"""punktfunk/1 input messages: the protocol-neutral event model as binary batches or JSON arrays.

The reference client sends its input as binary batches (:func:`encode_batch`,
:func:`decode_batch`: struct records, framed by ``wire.encode_input_batch``).
The host also takes ``{"type": "input", "events": [[tag, field, …], …]}`` on
the TLS control connection (reliable and ordered, so no key or button event
is lost); each event is one array whose first element names its kind and
whose other elements are the event's fields in the order of
:mod:`punktfunk_core.inputevents` (docs/protocol-native.md, "Input"). The
host and the reference client share this table, so the two sides cannot
drift apart.

The host answers with ``{"type": "feedback", "events": [[tag, field, …], …]}``
on the same connection when the input backend has something for the client
(rumble of a virtual gamepad, …): :data:`FEEDBACK_FIELDS`, decoded by the
reference client with :func:`decode_feedback`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from punktfunk_core.inputevents import (
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
    FeedbackEvent,
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

#: the most events one input message may carry; a larger message is dropped whole
MAX_INPUT_EVENTS = 256
#: the most events one feedback message carries
MAX_FEEDBACK_EVENTS = 64


class MalformedInput(ValueError):
    """An input event the host cannot take: wrong shape, type or range."""


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise MalformedInput(f"{v!r} is not an integer")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise MalformedInput(f"{v!r} is not true or false")
    return v


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MalformedInput(f"{v!r} is not a number")
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise MalformedInput(f"{v!r} is not a string")
    return v


def _opt_int(v: Any) -> int | None:
    return None if v is None else _int(v)


def _enum(cls: Callable[[int], Any]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        try:
            return cls(_int(v))
        except ValueError as exc:
            raise MalformedInput(str(exc)) from None
    return convert


#: tag → (event type, field converters in the event's field order); "s"/"h" are both Scroll
_FIELDS: dict[str, tuple[type, tuple[Callable[[Any], Any], ...]]] = {
    "k": (Key, (_int, _bool, _enum(Modifier))),
    "t": (Text, (_str,)),
    "m": (PointerMove, (_int, _int)),
    "p": (PointerPosition, (_int, _int, _int, _int)),
    "b": (Button, (_enum(MouseButton), _bool)),
    "s": (Scroll, (_int,)),
    "h": (Scroll, (_int,)),
    "ca": (ControllerArrival, (_int, _enum(ControllerType), _enum(ControllerCapability), _enum(ControllerButton))),
    "cs": (ControllerState, (_int, _enum(ControllerButton), _int, _int, _int, _int, _int, _int)),
    "cr": (ControllerRemoval, (_int,)),
    "cm": (ControllerMotion, (_int, _enum(MotionSensor), _num, _num, _num)),
    "cb": (ControllerBattery, (_int, _enum(BatteryState), _int)),
    "ct": (ControllerTouch, (_int, _enum(TouchPhase), _int, _num, _num, _num, _int)),
    "to": (Touch, (_int, _enum(TouchPhase), _num, _num, _num, _num, _num, _opt_int)),
    "pe": (Pen, (_enum(TouchPhase), _enum(PenTool), _enum(PenButton), _num, _num, _num, _num, _num, _opt_int,
                 _opt_int)),
}


#: host → client feedback: tag → (event type, field converters in the event's field order)
FEEDBACK_FIELDS: dict[str, tuple[type, tuple[Callable[[Any], Any], ...]]] = {
    "r": (Rumble, (_int, _int, _int)),
    "tr": (TriggerRumble, (_int, _int, _int)),
    "mr": (MotionEventRate, (_int, _enum(MotionSensor), _int)),
    "led": (ControllerLed, (_int, _int, _int, _int)),
}


def _decode(item: Any, table: dict[str, tuple[type, tuple[Callable[[Any], Any], ...]]], what: str) -> Any:
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise MalformedInput(f"an {what} event is an array starting with its tag")
    entry = table.get(item[0])
    if entry is None:
        raise MalformedInput(f"unknown {what} event {item[0][:8]!r}")
    cls, converters = entry
    args = item[1:]
    if len(args) != len(converters):
        raise MalformedInput(f"{what} event {item[0]!r} has {len(converters)} fields, not {len(args)}")
    try:
        values = [convert(v) for convert, v in zip(converters, args, strict=True)]
        if cls is Scroll:
            return Scroll(values[0], horizontal=item[0] == "h")
        return cls(*values)
    except MalformedInput:
        raise
    except (ValueError, TypeError) as exc:  # the event's own range checks
        raise MalformedInput(str(exc)) from None


def decode_event(item: Any) -> InputEvent:
    """One event array as an event; :class:`MalformedInput` when it is not one."""
    return _decode(item, _FIELDS, "input")  # type: ignore[no-any-return]


def decode_feedback(item: Any) -> FeedbackEvent:
    """One feedback array (host → client) as an event; :class:`MalformedInput` when it is not one."""
    return _decode(item, FEEDBACK_FIELDS, "feedback")  # type: ignore[no-any-return]


def _encode(event: Any, table: dict[str, tuple[type, tuple[Callable[[Any], Any], ...]]]) -> list[Any]:
    for tag, (cls, _) in table.items():
        if type(event) is cls:
            return [tag, *(_plain(getattr(event, f.name)) for f in fields(cls))]
    raise TypeError(f"{type(event).__name__} is not an event of this message")


def encode_event(event: InputEvent) -> list[Any]:
    """The wire array of one event."""
    if isinstance(event, Scroll):
        return ["h" if event.horizontal else "s", event.amount]
    return _encode(event, _FIELDS)


def _plain(v: Any) -> Any:
    """Enum members as the plain numbers JSON carries."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    return int(v) if isinstance(v, int) else float(v)


def input_message(events: Iterable[InputEvent]) -> dict[str, Any]:
    """The control message carrying ``events`` (at most :data:`MAX_INPUT_EVENTS`)."""
    items = [encode_event(e) for e in events]
    if not 1 <= len(items) <= MAX_INPUT_EVENTS:
        raise ValueError(f"an input message carries 1..{MAX_INPUT_EVENTS} events")
    return {"type": "input", "events": items}


def encode_feedback(event: FeedbackEvent) -> list[Any]:
    """The wire array of one feedback event."""
    return _encode(event, FEEDBACK_FIELDS)


def feedback_message(events: Iterable[FeedbackEvent]) -> dict[str, Any]:
    """The control message carrying ``events`` to the client (at most :data:`MAX_FEEDBACK_EVENTS`)."""
    items = [encode_feedback(e) for e in events]
    if not 1 <= len(items) <= MAX_FEEDBACK_EVENTS:
        raise ValueError(f"a feedback message carries 1..{MAX_FEEDBACK_EVENTS} events")
    return {"type": "feedback", "events": items}


# -- binary input batches (client → host) ---------------------------------------------------------
# The client's input goes as binary frames of the control connection (wire.encode_input_batch): a run
# of records, each a one-byte tag and the event's fields packed big-endian, so the host reads a batch
# with struct and builds the events without JSON or per-event dicts. Enum fields come from tables,
# optional integers are 0xFFFF when absent (docs/protocol-native.md, "Input").

_NONE16 = 0xFFFF
_MODIFIERS = tuple(Modifier(i) for i in range(16))
_MOUSE_BUTTONS = {int(b): b for b in MouseButton}
_PHASES = {int(p): p for p in TouchPhase}
_TEXT_LEN = struct.Struct("!H")


def _opt16(v: int) -> int | None:
    return None if v == _NONE16 else v


def _none16(v: int | None) -> int:
    return _NONE16 if v is None else v


#: record tag → (event type, packed fields, the event from the unpacked fields, the fields of an event)
_RECORDS: dict[int, tuple[type, struct.Struct, Callable[..., Any], Callable[[Any], tuple[Any, ...]]]] = {
    1: (Key, struct.Struct("!B?B"), lambda c, d, m: Key(c, d, _MODIFIERS[m]),
        lambda e: (e.code, e.down, int(e.modifiers))),
    3: (PointerMove, struct.Struct("!ii"), PointerMove, lambda e: (e.dx, e.dy)),
    4: (PointerPosition, struct.Struct("!iiII"), PointerPosition, lambda e: (e.x, e.y, e.width, e.height)),
    5: (Button, struct.Struct("!B?"), lambda b, d: Button(_MOUSE_BUTTONS[b], d), lambda e: (int(e.button), e.down)),
    6: (Scroll, struct.Struct("!i"), Scroll, lambda e: (e.amount,)),
    7: (Scroll, struct.Struct("!i"), lambda a: Scroll(a, horizontal=True), lambda e: (e.amount,)),
    8: (ControllerArrival, struct.Struct("!BBHI"),
        lambda n, t, c, b: ControllerArrival(n, ControllerType(t), ControllerCapability(c), ControllerButton(b)),
        lambda e: (e.number, int(e.kind), int(e.capabilities), int(e.buttons))),
    9: (ControllerState, struct.Struct("!BIBBhhhh"), lambda n, b, *axes: ControllerState(n, ControllerButton(b), *axes),
        lambda e: (e.number, int(e.buttons), e.left_trigger, e.right_trigger, e.left_x, e.left_y, e.right_x,
                   e.right_y)),
    10: (ControllerRemoval, struct.Struct("!B"), ControllerRemoval, lambda e: (e.number,)),
    11: (ControllerMotion, struct.Struct("!BBddd"), lambda n, s, x, y, z: ControllerMotion(n, MotionSensor(s), x, y, z),
         lambda e: (e.number, int(e.sensor), e.x, e.y, e.z)),
    12: (ControllerBattery, struct.Struct("!BBB"), lambda n, s, p: ControllerBattery(n, BatteryState(s), p),
         lambda e: (e.number, int(e.state), e.percent)),
    13: (ControllerTouch, struct.Struct("!BBIdddB"),
         lambda n, ph, i, x, y, p, pad: ControllerTouch(n, _PHASES[ph], i, x, y, p, pad),
         lambda e: (e.number, int(e.phase), e.pointer_id, e.x, e.y, e.pressure, e.pad)),
    14: (Touch, struct.Struct("!IBdddddH"),
         lambda i, ph, x, y, p, a, b, r: Touch(i, _PHASES[ph], x, y, p, a, b, _opt16(r)),
         lambda e: (e.pointer_id, int(e.phase), e.x, e.y, e.pressure, e.contact_major, e.contact_minor,
                    _none16(e.rotation))),
    15: (Pen, struct.Struct("!BBBdddddHH"),
         lambda ph, t, b, x, y, p, a, mi, r, tl: Pen(_PHASES[ph], PenTool(t), PenButton(b), x, y, p, a, mi,
                                                   _opt16(r), _opt16(tl)),
         lambda e: (int(e.phase), int(e.tool), int(e.buttons), e.x, e.y, e.pressure, e.contact_major,
                    e.contact_minor, _none16(e.rotation), _none16(e.tilt))),
}
#: the text record: its tag, then the UTF-8 byte length (u16) and the bytes
TEXT_TAG = 2
#: event type → its record tag (horizontal scroll is tag 7)
_TAGS: dict[type, int] = {cls: tag for tag, (cls, *_) in _RECORDS.items() if tag != 7}


def encode_batch(events: Iterable[InputEvent]) -> bytes:
    """The binary batch of ``events`` (1..:data:`MAX_INPUT_EVENTS` of them), in order."""
    out = bytearray()
    n = 0
    for event in events:
        n += 1
        if type(event) is Text:
            text = event.text.encode("utf-8")
            out += bytes((TEXT_TAG,)) + _TEXT_LEN.pack(len(text)) + text
            continue
        tag = _TAGS.get(type(event))
        if tag is None:
            raise TypeError(f"{type(event).__name__} is not an input event")
        if tag == 6 and event.horizontal:  # type: ignore[union-attr]
            tag = 7
        _, packer, _, values = _RECORDS[tag]
        out.append(tag)
        out += packer.pack(*values(event))
    if not 1 <= n <= MAX_INPUT_EVENTS:
        raise ValueError(f"an input batch carries 1..{MAX_INPUT_EVENTS} events")
    return bytes(out)


class BatchTooLarge(MalformedInput):
    """A batch of more than :data:`MAX_INPUT_EVENTS` events (dropped whole)."""


def decode_batch(data: bytes) -> tuple[list[InputEvent], list[str]]:
    """The events of one binary batch, and why each record that is not one was dropped.

    A record out of its event's range is dropped on its own; an unknown tag or a
    truncated record ends the batch there (what follows cannot be framed).
    :class:`BatchTooLarge` when it holds more than :data:`MAX_INPUT_EVENTS` records."""
    events: list[InputEvent] = []
    bad: list[str] = []
    off, end, records = 0, len(data), _RECORDS
    while off < end:
        if len(events) + len(bad) >= MAX_INPUT_EVENTS:
            raise BatchTooLarge(f"an input batch carries at most {MAX_INPUT_EVENTS} events")
        tag = data[off]
        entry = records.get(tag)
        try:
            if entry is not None:
                unpacker, make = entry[1], entry[2]
                values = unpacker.unpack_from(data, off + 1)
                off += 1 + unpacker.size
                events.append(make(*values))
            elif tag == TEXT_TAG:
                (length,) = _TEXT_LEN.unpack_from(data, off + 1)
                off += 3 + length
                if off > end:
                    raise struct.error("text runs past the batch")
                events.append(Text(data[off - length:off].decode("utf-8")))
            else:
                bad.append(f"unknown input record {tag}")
                break
        except struct.error:
            bad.append(f"input record {tag} is cut off")
            break
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # a field out of its range
            bad.append(f"input record {tag}: {exc}")
    return events, bad
