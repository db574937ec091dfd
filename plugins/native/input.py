"""punktfunk/1 input messages: the protocol-neutral event model as compact JSON arrays.

The client sends ``{"type": "input", "events": [[tag, field, …], …]}`` on
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
