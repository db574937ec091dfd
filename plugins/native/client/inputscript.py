"""Scripted input for the reference client (``--input-script FILE``).

The file has one JSON object per line, ``{"at": SECONDS, "event": [tag, …]}``:
``at`` is the time since the stream started (``session_started``), ``event``
one event array of the punktfunk/1 input message (docs/protocol-native.md,
"Input"). Blank lines and lines starting with ``#`` are skipped. Events go
out in file order, each at its time (never before the one above it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from punktfunk_core.inputevents import InputEvent

from punktfunk_native.input import MalformedInput, decode_event

#: a script may hold at most this many events (it is read whole into memory)
MAX_SCRIPT_EVENTS = 100_000


class InputScriptError(ValueError):
    """The script cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    at: float
    event: InputEvent


def load_input_script(path: str | Path) -> list[ScriptedEvent]:
    """The events of an input script, checked as the host will check them."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputScriptError(f"cannot read input script {path}: {exc}") from None
    out: list[ScriptedEvent] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or set(entry) != {"at", "event"}:
                raise MalformedInput('a line is {"at": SECONDS, "event": [tag, ...]}')
            at = entry["at"]
            if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at < 86400:
                raise MalformedInput(f"at {at!r} is not a number of seconds (0 or more)")
            out.append(ScriptedEvent(float(at), decode_event(entry["event"])))
        except (json.JSONDecodeError, MalformedInput) as exc:
            raise InputScriptError(f"{path}, line {n}: {exc}") from None
        if len(out) > MAX_SCRIPT_EVENTS:
            raise InputScriptError(f"{path}: more than {MAX_SCRIPT_EVENTS} events")
    return out


class ScriptPlayer:
    """Sends a script's events at their times, on a thread of its own."""

    def __init__(self, events: list[ScriptedEvent], send: Callable[[InputEvent], None]) -> None:
        self.events = events
        self.send = send
        #: events handed to ``send`` so far
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="native-input-script", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)

    @property
    def done(self) -> bool:
        return self.sent == len(self.events)

    def _run(self) -> None:
        t0 = time.monotonic()
        for item in self.events:
            if self._stop.wait(max(0.0, t0 + item.at - time.monotonic())):
                return
            self.send(item.event)
            self.sent += 1
