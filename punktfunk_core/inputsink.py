"""A session's input sink: decouples protocol threads from the input backend.

Protocol threads call :meth:`InputSink.submit` with decoded events; it never
blocks and never raises for an event. One injector thread per session takes
everything queued as a batch, injects it and flushes the backend once. On the
way in the sink

- drops events of a class switched off in ``[input]`` or that the backend
  cannot inject (counted);
- merges an event into the newest queued one where only the latest matters
  (relative moves and same-direction scrolls add up; absolute positions, controller states of unchanged
  buttons, motion readings and touch/pen moves replace) — merged events are
  free;
- throttles what is left with a token bucket (``max_events_per_s``,
  ``burst``); a release of a key or button the client holds is never
  throttled, so nothing stays stuck;
- bounds the queue: when it is full, a new key, button or text event pushes
  out the oldest move-like event; only a queue full of key and button events
  drops one (counted);
- stamps ``perf_counter_ns`` at receive and after the batch's flush, so each
  window reports receive → injected latency.

A backend that raises :class:`punktfunk_core.stages.InputBackendGone` (or
fails to flush) is logged once and no longer called; the stream goes on and
later events are counted as dropped. At close the sink releases the keys and
buttons it pressed and closes the backend on the injector thread.

The sink takes its lock once per batch (and once more after injecting it); it is not on the
per-frame path.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from punktfunk_core.inputevents import (
    Button,
    ControllerArrival,
    ControllerMotion,
    ControllerRemoval,
    ControllerState,
    ControllerTouch,
    FeedbackEvent,
    InputClass,
    InputEvent,
    Key,
    Pen,
    PointerMove,
    PointerPosition,
    ScreenPointer,
    Scroll,
    Text,
    Touch,
    TouchPhase,
)
from punktfunk_core.stages import InputBackend, InputBackendGone, ScreenArea, StreamSpec
from punktfunk_core.stats import percentile

if TYPE_CHECKING:  # pragma: no cover
    from punktfunk_core.config import InputSettings
    from punktfunk_core.registry import StageRegistry
    from punktfunk_core.stats import StatsSample

log = logging.getLogger("punktfunk.input")

#: latency samples kept per window (enough for 30 kHz over a 2 s window)
MAX_SAMPLES = 65536
#: receive → injected latencies of this many latest events back the totals' percentiles
RECENT_SAMPLES = 4096
#: how long close() waits for the injector thread
CLOSE_WAIT_S = 2.0
#: consecutive failed events after which the backend counts as gone
MAX_CONSECUTIVE_ERRORS = 100

#: the reasons an event was dropped, as counted
DROP_REASONS = ("disabled", "unsupported", "throttled", "queue_full", "no_backend")

_MOVING = (TouchPhase.MOVE, TouchPhase.HOVER)
#: the classes whose events move the session's pointer
_POINTING = (InputClass.MOUSE, InputClass.TOUCH)


def essential(event: InputEvent) -> bool:
    """An event whose loss changes what the host ends up in: key, button and
    text events, controller arrival/removal, touch and pen contacts beginning
    or ending. Everything else is superseded by the next event of its kind."""
    if isinstance(event, (Key, Button, Text, ControllerArrival, ControllerRemoval)):
        return True
    if isinstance(event, (Touch, Pen, ControllerTouch)):
        return event.phase not in _MOVING
    return False


def merged(older: InputEvent, newer: InputEvent) -> InputEvent | None:
    """``newer`` folded into ``older`` when only their sum or the latest
    matters, else None."""
    if isinstance(newer, PointerMove) and isinstance(older, PointerMove):
        return PointerMove(older.dx + newer.dx, older.dy + newer.dy)
    if isinstance(newer, PointerPosition) and isinstance(older, PointerPosition):
        return newer
    if (isinstance(newer, Scroll) and isinstance(older, Scroll) and newer.horizontal == older.horizontal
            and (newer.amount > 0) == (older.amount > 0)):  # a turn back is a turn of its own
        total = older.amount + newer.amount
        return Scroll(total, newer.horizontal) if abs(total) <= 1 << 20 else None
    if isinstance(newer, ControllerState) and isinstance(older, ControllerState):
        # a change of buttons ends the merge: the host sees the axes as they were at the press
        return newer if (newer.number, newer.buttons) == (older.number, older.buttons) else None
    if isinstance(newer, ControllerMotion) and isinstance(older, ControllerMotion):
        return newer if (newer.number, newer.sensor) == (older.number, older.sensor) else None
    if isinstance(newer, Touch) and isinstance(older, Touch):
        same = newer.pointer_id == older.pointer_id and newer.phase == older.phase
        return newer if same and newer.phase in _MOVING else None
    if isinstance(newer, Pen) and isinstance(older, Pen):
        same = (newer.phase, newer.buttons, newer.tool) == (older.phase, older.buttons, older.tool)
        return newer if same and newer.phase in _MOVING else None
    if isinstance(newer, ControllerTouch) and isinstance(older, ControllerTouch):
        same = (newer.number, newer.pad, newer.pointer_id, newer.phase) == (
            older.number, older.pad, older.pointer_id, older.phase)
        return newer if same and newer.phase in _MOVING else None
    return None


class _Queued:
    """A queued event and when its first part was received."""

    __slots__ = ("event", "received_ns")

    def __init__(self, event: InputEvent, received_ns: int) -> None:
        self.event = event
        self.received_ns = received_ns


@dataclass(slots=True)
class InputWindow:
    """What a session's input did in one aggregation window.

    ``latency_us`` holds receive → injected times of the events injected in
    the window (a merged event counts from its first part's arrival)."""

    seconds: float
    received: int = 0
    injected: int = 0
    merged: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    latency_us: list[float] = field(default_factory=list)

    def percentile_us(self, q: float) -> float | None:
        """The ``q`` (0..1) quantile of the latencies, None without samples."""
        if not self.latency_us:
            return None
        ordered = sorted(self.latency_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def events_per_s(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    def drain_into(self, sample: StatsSample) -> None:
        """This window's input fields of a stats sample: events received, events
        dropped, receive → injected p50/p99 (absent when nothing was injected)."""
        sample.input_events = self.received
        sample.input_dropped = sum(self.dropped.values())
        if self.latency_us:
            ordered = sorted(self.latency_us)
            sample.input_p50_us = round(percentile(ordered, 0.5), 1)
            sample.input_p99_us = round(percentile(ordered, 0.99), 1)


class InputSink:
    """A bounded queue and one injector thread in front of an input backend.

    ``backend`` may be None (no backend could be opened): events are then
    counted as ``no_backend`` and dropped. ``enabled`` are the input classes
    ``[input]`` allows.
    """

    def __init__(self, backend: InputBackend | None, *, enabled: Iterable[InputClass] = tuple(InputClass),
                 max_events_per_s: float = 5000, burst: int = 1000, queue_size: int = 256,
                 inject_on_receive: bool = True, stream_size: tuple[int, int] = (0, 0),
                 name: str = "input") -> None:
        if max_events_per_s <= 0 or burst < 1 or queue_size < 1:
            raise ValueError("max_events_per_s, burst and queue_size must be positive")
        self.backend = backend
        self.name = name
        self._supported = backend.classes if backend is not None else frozenset(InputClass)
        self._enabled = frozenset(enabled)
        self._accepted = self._enabled & self._supported
        self._rate = float(max_events_per_s)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._limit = queue_size
        self._queue: deque[_Queued] = deque()
        self._cond = threading.Condition()
        self._closing = False
        #: a batch is being injected (by the injector thread or inline by a protocol thread)
        self._injecting = False
        #: classes injected on the submitting thread when nothing is queued (see submit_many)
        self._inline = backend.inline_classes if inject_on_receive and backend is not None else frozenset()
        #: events that failed in a row (a hundred: the backend is gone)
        self._failures = 0
        #: where the session's pointer is, as its input moved it (the test pattern draws it)
        self.pointer = ScreenPointer(*stream_size)
        #: keys and buttons the client holds (as submitted): their release bypasses the throttle
        self._held: set[tuple[str, int]] = set()
        #: keys and buttons injected down and not yet up: released at close
        self._down: dict[tuple[str, int], InputEvent] = {}
        #: why the backend stopped, once it has
        self.gone: str | None = None if backend is not None else "no input backend"
        self._totals = {"received": 0, "injected": 0, "merged": 0, "inject_errors": 0,
                        **{f"dropped_{r}": 0 for r in DROP_REASONS}}
        self._window = InputWindow(0.0)
        self._window_start = time.monotonic()
        #: latencies of the latest injected events (µs), for counters() whoever takes the windows
        self._recent_us: deque[float] = deque(maxlen=RECENT_SAMPLES)
        self._errors_logged = 0
        self._thread: threading.Thread | None = None
        if backend is not None:
            self._thread = threading.Thread(target=self._run, name=f"{name}-inject", daemon=True)
            self._thread.start()

    # ---- protocol side ------------------------------------------------------------------------

    def submit(self, event: InputEvent, received_ns: int | None = None) -> bool:
        """Take one event; False when it was dropped (counted).

        ``received_ns`` is ``time.perf_counter_ns()`` when the protocol
        received it (now, when not given). Never blocks on the backend's
        target, never raises for an event."""
        return self.submit_many((event,), received_ns) == 1

    def submit_many(self, events: Iterable[InputEvent], received_ns: int | None = None) -> int:
        """Take several events received together (one packet); returns how many were kept.

        When all are of the backend's :attr:`~punktfunk_core.stages.InputBackend.inline_classes`
        and nothing is queued or being injected, they are injected here, on the caller's
        thread, with one flush: no hand-off to the injector thread, whose wake-up
        (and wait for the GIL) would be most of the latency. Else they are queued."""
        if received_ns is None:
            received_ns = time.perf_counter_ns()
        with self._cond:
            inline = bool(self._inline) and not self._queue and not self._injecting and not self._closing \
                and self.gone is None
            target: deque[_Queued] = deque() if inline else self._queue
            kept = sum(self._admit(event, received_ns, target) for event in events)
            if inline and any(q.event.input_class not in self._inline for q in target):
                self._queue.extend(target)  # one may wait (a device to create): the injector's job
                inline = False
            if not inline:
                self._cond.notify()
                return kept
            if not target:
                return kept
            self._injecting = True
        self._inject_batch(target)
        return kept

    def _admit(self, event: InputEvent, received_ns: int, target: deque[_Queued]) -> bool:
        """Switches, merging, throttle and bound for one event into ``target``
        (the queue, or a batch injected at once); the caller holds the lock."""
        self._count("received")
        if self._closing:
            return self._drop("no_backend")
        cls = getattr(event, "input_class", None)  # not an input event: nothing injects it
        if cls in self._enabled and cls in _POINTING:
            self.pointer.follow(event)  # what the session's pointer did, whatever injects it
        if cls not in self._accepted and not (cls in self._supported and self._releases_held(event)):
            # (a class switched off by a reload still lets go of what it holds: no stuck keys)
            return self._drop("disabled" if cls is not None and cls not in self._enabled else "unsupported")
        if self.gone is not None:
            return self._drop("no_backend")
        if target:
            tail = target[-1]
            folded = merged(tail.event, event)
            if folded is not None:
                tail.event = folded
                self._count("merged")
                return True
        release = self._held_key(event)
        if release is not None and not getattr(event, "down", True) and release in self._held:
            self._held.discard(release)  # a release of something held: never throttled
        elif not self._take_token():
            return self._drop("throttled")
        elif release is not None:
            if event.down:  # type: ignore[union-attr]
                self._held.add(release)
            else:
                self._held.discard(release)
        if len(target) >= self._limit and not self._make_room(event, target):
            return self._drop("queue_full")
        target.append(_Queued(event, received_ns))
        return True

    def set_enabled(self, enabled: Iterable[InputClass]) -> None:
        """Switch input classes on or off for the running session (a config reload)."""
        with self._cond:
            self._enabled = frozenset(enabled)
            self._accepted = self._enabled & self._supported

    def _releases_held(self, event: InputEvent) -> bool:
        return not getattr(event, "down", True) and self._held_key(event) in self._held

    @staticmethod
    def _held_key(event: InputEvent) -> tuple[str, int] | None:
        if isinstance(event, Key):
            return ("key", event.code)
        if isinstance(event, Button):
            return ("button", int(event.button))
        return None

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _make_room(self, event: InputEvent, target: deque[_Queued]) -> bool:
        """Push out the oldest superseded event for an essential one."""
        if not essential(event):
            return False
        for i, queued in enumerate(target):
            if not essential(queued.event):
                del target[i]
                self._count("dropped_queue_full")
                return True
        return False

    def _count(self, key: str, n: int = 1) -> None:
        self._totals[key] += n
        w = self._window
        if key == "received":
            w.received += n
        elif key == "injected":
            w.injected += n
        elif key == "merged":
            w.merged += n
        elif key.startswith("dropped_"):
            reason = key.removeprefix("dropped_")
            w.dropped[reason] = w.dropped.get(reason, 0) + n

    def _drop(self, reason: str) -> bool:
        self._count(f"dropped_{reason}")
        return False

    # ---- measurement --------------------------------------------------------------------------

    def take_window(self) -> InputWindow | None:
        """The window since the last call, or None when no input arrived in
        it (so a capture shows input as absent, not as 0)."""
        now = time.monotonic()
        with self._cond:
            window, self._window = self._window, InputWindow(0.0)
            window.seconds = now - self._window_start
            self._window_start = now
        return window if window.received else None

    def counters(self) -> dict[str, Any]:
        """Totals since the session started, and the backend's state."""
        with self._cond:
            out: dict[str, Any] = dict(self._totals)
            out["queued"] = len(self._queue)
            recent = sorted(self._recent_us)  # of the latest RECENT_SAMPLES events; None before any
        out["latency_p50_us"] = recent[min(len(recent) - 1, int(0.5 * len(recent)))] if recent else None
        out["latency_p99_us"] = recent[min(len(recent) - 1, int(0.99 * len(recent)))] if recent else None
        out["backend"] = self.backend.name if self.backend is not None else None
        out["gone"] = self.gone
        return out

    # ---- injector thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backend = self.backend
        assert backend is not None
        while True:
            with self._cond:
                while self._injecting or (not self._queue and not self._closing):
                    self._cond.wait()
                if not self._queue:
                    break
                batch, self._queue = self._queue, deque()
                self._injecting = True
            self._inject_batch(batch)
        self._release_and_close(backend)

    def _inject_batch(self, batch: deque[_Queued]) -> None:
        """Inject one batch, flush once, count it and clear ``_injecting``, which the caller
        set (so no two batches overlap, whichever thread runs them): one lock for all of that."""
        injected: list[_Queued] = []
        errors = dropped = 0
        try:
            injected, errors, dropped = self._inject(batch)
        finally:
            done = time.perf_counter_ns()
            with self._cond:
                if injected:
                    self._count("injected", len(injected))
                    latencies = [(done - q.received_ns) / 1000.0 for q in injected]
                    samples = self._window.latency_us
                    samples.extend(latencies[:max(MAX_SAMPLES - len(samples), 0)])
                    self._recent_us.extend(latencies)
                if errors:
                    self._count("inject_errors", errors)
                if dropped:
                    self._count("dropped_no_backend", dropped)
                self._injecting = False
                if self._queue or self._closing:  # queued meanwhile, or a close: the injector's turn
                    self._cond.notify()  # (not otherwise: waking it for nothing costs the GIL twice)

    def _inject(self, batch: deque[_Queued]) -> tuple[list[_Queued], int, int]:
        """(events injected, events that failed, events dropped because the backend is gone)."""
        backend = self.backend
        assert backend is not None
        if self.gone is not None:
            return [], 0, len(batch)
        injected: list[_Queued] = []
        errors = 0
        try:
            for queued in batch:
                try:
                    backend.inject(queued.event)
                except InputBackendGone:
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad event must not stop input
                    errors += 1
                    self._failures += 1
                    self._log_error(queued.event, exc)
                    if self._failures >= MAX_CONSECUTIVE_ERRORS:
                        raise InputBackendGone(f"{self._failures} events in a row failed, the last with {exc}") \
                            from exc
                    continue
                self._failures = 0
                injected.append(queued)
                self._track_down(queued.event)
            backend.flush()
        except Exception as exc:  # noqa: BLE001 - InputBackendGone, or a flush that failed
            self._went(exc)
            return [], errors, len(batch) - errors
        return injected, errors, 0

    def _track_down(self, event: InputEvent) -> None:
        key = self._held_key(event)
        if key is not None:
            if event.down:  # type: ignore[union-attr]
                self._down[key] = event
            else:
                self._down.pop(key, None)

    def _log_error(self, event: InputEvent, exc: Exception) -> None:
        if self._errors_logged < 3:
            self._errors_logged += 1
            log.warning("%s: input backend %s failed on %r: %s", self.name, self.backend and self.backend.name,
                        event, exc)

    def _went(self, exc: BaseException) -> None:
        if self.gone is None:
            self.gone = str(exc) or type(exc).__name__
            log.warning("%s: input backend %s is gone (%s); the stream goes on without input", self.name,
                        self.backend and self.backend.name, self.gone)

    def _release_and_close(self, backend: InputBackend) -> None:
        if self.gone is None and self._down:
            try:
                for key, ev in list(self._down.items()):
                    backend.inject(Key(ev.code, False) if key[0] == "key" else Button(ev.button, False))  # type: ignore[union-attr]
                backend.flush()
            except Exception as exc:  # noqa: BLE001 - closing anyway
                log.debug("%s: releasing held keys failed: %s", self.name, exc)
        self._down.clear()
        try:
            backend.close()
        except Exception as exc:  # noqa: BLE001 - a gone backend may fail to close
            log.debug("%s: closing input backend %s: %s", self.name, backend.name, exc)

    def close(self) -> None:
        """Stop taking events, inject what is queued, release held keys and
        buttons, close the backend. Waits at most ``CLOSE_WAIT_S``."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(CLOSE_WAIT_S)
            if self._thread.is_alive():
                log.warning("%s: input backend %s did not finish within %.0f s; leaving it", self.name,
                            self.backend and self.backend.name, CLOSE_WAIT_S)


def _no_feedback(event: FeedbackEvent) -> None:
    log.debug("input feedback with no one to take it: %r", event)


def open_input_sink(registry: StageRegistry, settings: InputSettings, spec: StreamSpec,
                    screen: ScreenArea | None = None,
                    feedback: Callable[[FeedbackEvent], None] | None = None,
                    name: str = "input") -> InputSink:
    """The input sink of one session, as the ``[input]`` section says.

    ``settings`` is the ``[input]`` section (``host.settings.input``); ``screen`` the capture
    stage's :attr:`~punktfunk_core.stages.CaptureSource.screen_area`;
    ``feedback`` takes rumble and other host → client events (on the
    backend's thread; it must not block). A backend that cannot start is
    logged and the sink runs without one: the stream never fails for input.
    """
    backend: InputBackend | None = None
    try:
        stage = registry.create("input", settings.backend, spec, dict(settings.backend_options))
        if not isinstance(stage, InputBackend):
            raise TypeError(f"input stage {settings.backend!r} made a {type(stage).__name__}, not an InputBackend")
        backend = stage
        backend.open((spec.width, spec.height), screen, feedback or _no_feedback)
    except Exception as exc:  # noqa: BLE001 - no input is better than no stream
        log.warning("%s: input backend %r cannot start (%s); the stream runs without input", name,
                    settings.backend, exc)
        if backend is not None:
            try:
                backend.close()
            except Exception:  # noqa: BLE001
                pass
        backend = None
    sink = InputSink(backend, enabled=allowed_classes(settings),
                     max_events_per_s=settings.max_events_per_s, burst=settings.burst, queue_size=settings.queue,
                     inject_on_receive=settings.inject_on_receive, stream_size=(spec.width, spec.height), name=name)
    _session_sinks.add(sink)
    return sink


def allowed_classes(settings: InputSettings) -> list[InputClass]:
    """The input classes the ``[input]`` section switches on."""
    allowed = {InputClass.KEYBOARD: settings.keyboard, InputClass.MOUSE: settings.mouse,
               InputClass.GAMEPAD: settings.gamepad, InputClass.TOUCH: settings.touch}
    return [c for c, on in allowed.items() if on]


#: the sinks :func:`open_input_sink` made for sessions (one host per process), so a reload of
#: ``[input]`` reaches running sessions; a sink leaves with its session
_session_sinks: weakref.WeakSet[InputSink] = weakref.WeakSet()


def apply_class_switches(settings: InputSettings) -> int:
    """Give every running session's sink the class switches of a reloaded ``[input]``;
    returns how many sinks took them."""
    sinks = list(_session_sinks)
    for sink in sinks:
        sink.set_enabled(allowed_classes(settings))
    return len(sinks)
