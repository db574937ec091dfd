"""Test-only plugin: an ``input`` stage ``recording`` that keeps what it is given.

It is a third-party input backend written against the stage contract, loaded
the way any plugin is (``load_plugin_manager(extra=[(module, name)])`` in
process, ``PUNKTFUNK_PLUGINS=pf_input_recorder`` with this folder on
PYTHONPATH in a host). Options:

* ``classes``: the input classes it claims (default all);
* ``inline``: the classes it may be given on the submitting thread
  (``inline_classes``; default none: always the injector thread);
* ``paused``: start with the gate closed: ``inject`` waits until the test
  calls ``resume()``, so events pile up in the sink's queue;
* ``fail_on``: an event type name whose events raise ValueError (a bad event);
* ``gone_after``: raise InputBackendGone from the event after this many;
* ``rumble_echo``: answer each controller state with feedback
  ``Rumble(number, left trigger × 257, right trigger × 257)``, as a game that
  rumbles with the triggers would (tests the way back to the client).

Every instance is appended to ``RecordingInput.instances``.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from punktfunk_core import hookimpl
from punktfunk_core.inputevents import ControllerState, InputClass, InputEvent, Rumble
from punktfunk_core.stages import InputBackend, InputBackendGone, ScreenArea, StreamSpec


class RecordingInput(InputBackend):
    name = "recording"
    instances: ClassVar[list[RecordingInput]] = []

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.classes = frozenset(InputClass(c) for c in options.get("classes", list(InputClass)))
        self.inline_classes = frozenset(InputClass(c) for c in options.get("inline", []))
        #: the thread each event was injected on
        self.threads: list[str] = []
        self.events: list[InputEvent] = []
        self.batches: list[int] = []
        self.opened: tuple[tuple[int, int], ScreenArea | None] | None = None
        self.closed = False
        self._gate = threading.Event()
        if not options.get("paused"):
            self._gate.set()
        self.waiting = threading.Event()
        self.fail_on = options.get("fail_on", "")
        self.gone_after = options.get("gone_after")
        self.rumble_echo = bool(options.get("rumble_echo"))
        self._in_batch = 0
        RecordingInput.instances.append(self)

    def open(self, stream_size, screen, feedback) -> None:  # noqa: ANN001 - the base class types them
        self.opened = (stream_size, screen)
        self.feedback = feedback

    def resume(self) -> None:
        self._gate.set()

    def inject(self, event: InputEvent) -> None:
        if not self._gate.is_set():
            self.waiting.set()
            self._gate.wait(10)
        if self.gone_after is not None and len(self.events) >= self.gone_after:
            raise InputBackendGone("the recorder was told to go away")
        if type(event).__name__ == self.fail_on:
            raise ValueError(f"the recorder refuses {event!r}")
        self.events.append(event)
        self.threads.append(threading.current_thread().name)
        self._in_batch += 1
        if self.rumble_echo and isinstance(event, ControllerState):
            self.feedback(Rumble(event.number, event.left_trigger * 257, event.right_trigger * 257))

    def flush(self) -> None:
        self.batches.append(self._in_batch)
        self._in_batch = 0

    def close(self) -> None:
        self.closed = True


@hookimpl
def register_stages(registry: Any) -> None:
    registry.add("input", "recording", RecordingInput, description="records injected events (tests)")
