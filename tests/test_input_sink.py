"""The per-session input sink: merging, throttling, class switches, a bounded
queue, measurement, and a backend that fails or goes away.

The backend is ``recording`` from tests/plugins/pf_input_recorder.py, a
third-party input stage loaded through the plugin manager like any other;
the xtest tests (test_input_xtest.py) drive the same sink into a real X server.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from punktfunk_core import config
from punktfunk_core.inputevents import (
    Button,
    ControllerArrival,
    ControllerState,
    ControllerType,
    InputClass,
    Key,
    MouseButton,
    PointerMove,
    PointerPosition,
    Scroll,
    Text,
    Touch,
    TouchPhase,
)
from punktfunk_core.inputsink import InputSink, open_input_sink
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.stages import ScreenArea, StreamSpec

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins"))
import pf_input_recorder  # noqa: E402
from pf_input_recorder import RecordingInput  # noqa: E402

SPEC = StreamSpec(640, 360)


@pytest.fixture(scope="module")
def registry():
    return load_plugin_manager(extra=[(pf_input_recorder, "pf_input_recorder")]).stages


def settings(**input_section) -> config.InputSettings:
    """The [input] section as the host has it: validated, defaults filled, typed."""
    input_section.setdefault("backend", "recording")
    return config.InputSettings.of(config.validate(config.build_schema(), {"input": input_section})["input"])


def open_sink(registry, options=None, screen=None, **section) -> tuple[InputSink, RecordingInput]:
    RecordingInput.instances.clear()
    sink = open_input_sink(registry, settings(backend_options=options or {}, **section), SPEC, screen)
    return sink, RecordingInput.instances[-1]


def drain(sink: InputSink, backend: RecordingInput, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(backend.events) < count:
        assert time.monotonic() < deadline, f"only {len(backend.events)} of {count} events were injected"
        time.sleep(0.005)


def test_a_third_party_backend_is_opened_with_the_stream_and_screen_and_gets_the_events(registry):
    area = ScreenArea(100, 50, 1280, 720)
    sink, backend = open_sink(registry, screen=area)
    assert backend.opened == ((640, 360), area)
    events = [PointerPosition(10, 20, 639, 359), Button(MouseButton.LEFT, True), Button(MouseButton.LEFT, False),
              Key(0x41, True), Key(0x41, False), Text("hé"), Scroll(-120)]
    for ev in events:
        assert sink.submit(ev)
    drain(sink, backend, len(events))
    assert backend.events == events
    sink.close()
    assert backend.closed


def test_consecutive_moves_merge_while_the_backend_is_busy(registry):
    sink, backend = open_sink(registry, {"paused": True})
    sink.submit(Button(MouseButton.LEFT, True))
    assert backend.waiting.wait(5)  # the injector holds the click; what follows queues up
    for _ in range(10):
        sink.submit(PointerMove(3, -1))
    sink.submit(Key(0x20, True))
    sink.submit(PointerMove(1, 1))
    sink.submit(PointerMove(1, 1))
    for x in (5, 6, 7):
        sink.submit(PointerPosition(x, 9, 639, 359))
    sink.submit(Scroll(30))
    sink.submit(Scroll(30))
    sink.submit(Scroll(30, horizontal=True))
    backend.resume()
    drain(sink, backend, 7)
    assert backend.events == [Button(MouseButton.LEFT, True), PointerMove(30, -10), Key(0x20, True),
                              PointerMove(2, 2), PointerPosition(7, 9, 639, 359), Scroll(60),
                              Scroll(30, horizontal=True)]
    assert sink.counters()["merged"] == 9 + 1 + 2 + 1
    sink.close()


def test_controller_states_merge_only_while_the_buttons_stay_the_same(registry):
    sink, backend = open_sink(registry, {"paused": True})
    sink.submit(Key(0x41, True))
    assert backend.waiting.wait(5)
    for x in range(0, 500, 100):
        sink.submit(ControllerState(0, left_x=x))
    sink.submit(ControllerState(0, buttons=0x1000, left_x=450))  # A pressed: a state of its own
    sink.submit(ControllerState(1, left_x=7))  # another pad: its own too
    backend.resume()
    drain(sink, backend, 4)
    assert backend.events[1:] == [ControllerState(0, left_x=400), ControllerState(0, buttons=0x1000, left_x=450),
                                  ControllerState(1, left_x=7)]
    sink.close()


def test_an_absurd_event_rate_is_throttled_and_counted(registry):
    sink, backend = open_sink(registry, max_events_per_s=100, burst=20)
    kept = sum(sink.submit(Text("x")) for _ in range(2000))
    assert 20 <= kept < 100  # the burst, plus what 100/s refills while the loop runs
    drain(sink, backend, kept)
    counters = sink.counters()
    assert counters["dropped_throttled"] == 2000 - kept
    assert counters["received"] == 2000 and counters["injected"] == kept
    window = sink.take_window()
    assert window is not None and window.dropped["throttled"] == 2000 - kept
    sink.close()


def test_the_release_of_a_held_key_or_button_is_never_throttled(registry):
    sink, backend = open_sink(registry, max_events_per_s=10, burst=3)
    assert sink.submit(Key(0x10, True))
    assert sink.submit(Button(MouseButton.RIGHT, True))
    assert sink.submit(Text("a"))
    assert not sink.submit(Text("b"))  # the bucket is empty now
    assert not sink.submit(Key(0x42, False))  # a release of a key never pressed is not free
    assert sink.submit(Key(0x10, False))
    assert sink.submit(Button(MouseButton.RIGHT, False))
    drain(sink, backend, 5)
    assert backend.events[-2:] == [Key(0x10, False), Button(MouseButton.RIGHT, False)]
    sink.close()


def test_a_full_queue_drops_moves_before_keys_and_counts_what_it_drops(registry):
    sink, backend = open_sink(registry, {"paused": True}, queue=8)
    sink.submit(Key(0x30, True))
    assert backend.waiting.wait(5)
    for i in range(4):  # fill the queue with superseded-by-the-next events that do not merge
        sink.submit(PointerMove(i + 1, 0))
        sink.submit(Scroll(10 * (i + 1), horizontal=True))
    assert not sink.submit(PointerMove(9, 9))  # full: a move is dropped
    for code in range(0x41, 0x41 + 8):  # each key pushes out the oldest move or scroll
        assert sink.submit(Key(code, True))
    assert not sink.submit(Key(0x50, True))  # a queue full of keys: this one is lost, and counted
    assert sink.counters()["dropped_queue_full"] == 1 + 8 + 1
    backend.resume()
    drain(sink, backend, 9)
    assert backend.events == [Key(0x30, True)] + [Key(c, True) for c in range(0x41, 0x49)]
    sink.close()


def test_class_switches_and_backend_abilities_decide_what_is_injected(registry):
    sink, backend = open_sink(registry, {"classes": ["keyboard", "mouse"]}, keyboard=False)
    assert not sink.submit(Key(0x41, True))  # [input] keyboard = false
    assert not sink.submit(Text("a"))
    assert not sink.submit(ControllerState(0))  # the backend has no gamepads
    assert not sink.submit(Touch(1, TouchPhase.DOWN, 0.5, 0.5))
    assert not sink.submit("not an event")  # type: ignore[arg-type]  # a plane's mistake is dropped too
    assert sink.submit(Button(MouseButton.LEFT, True))
    drain(sink, backend, 1)
    counters = sink.counters()
    assert counters["dropped_disabled"] == 2 and counters["dropped_unsupported"] == 3
    assert backend.events == [Button(MouseButton.LEFT, True)]
    sink.close()


def test_a_window_reports_receive_to_injected_latency_and_is_absent_without_input(registry):
    sink, backend = open_sink(registry)
    assert sink.take_window() is None  # no input: absent, not zero
    received = time.perf_counter_ns()
    for i in range(50):
        sink.submit(Key(0x41, i % 2 == 0), received)
    drain(sink, backend, 50)
    time.sleep(0.05)
    done = time.perf_counter_ns()
    window = sink.take_window()
    assert window is not None and window.received == 50 and window.injected == 50
    assert len(window.latency_us) == 50
    p50, p99 = window.percentile_us(0.5), window.percentile_us(0.99)
    assert 0 < p50 <= p99 <= (done - received) / 1000
    assert window.events_per_s > 0
    assert sink.take_window() is None
    sink.close()


def test_one_bad_event_is_counted_and_the_next_ones_are_injected(registry, caplog):
    sink, backend = open_sink(registry, {"fail_on": "Scroll"})
    with caplog.at_level(logging.WARNING, logger="punktfunk.input"):
        sink.submit(Scroll(120))
        sink.submit(Key(0x41, True))
        drain(sink, backend, 1)
    assert backend.events == [Key(0x41, True)]
    assert sink.counters()["inject_errors"] == 1 and sink.gone is None
    assert "the recorder refuses" in caplog.text
    sink.close()


def test_a_backend_that_goes_away_is_logged_once_and_the_sink_keeps_accepting_calls(registry, caplog):
    sink, backend = open_sink(registry, {"gone_after": 3})
    with caplog.at_level(logging.WARNING, logger="punktfunk.input"):
        for i in range(3):
            sink.submit(Key(0x41 + i, True))
        drain(sink, backend, 3)
        deadline = time.monotonic() + 5
        while sink.gone is None:
            sink.submit(Text("z"))
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(100):
            assert sink.submit(Text("z")) is False
    assert caplog.text.count("is gone") == 1
    assert sink.counters()["dropped_no_backend"] >= 100
    sink.close()
    assert backend.closed


def test_keys_and_buttons_still_down_are_released_when_the_session_ends(registry):
    sink, backend = open_sink(registry)
    sink.submit(Key(0xA0, True))
    sink.submit(Key(0x41, True))
    sink.submit(Key(0x41, False))
    sink.submit(Button(MouseButton.MIDDLE, True))
    drain(sink, backend, 4)
    sink.close()
    assert set(backend.events[4:]) == {Key(0xA0, False), Button(MouseButton.MIDDLE, False)}
    assert backend.closed


def test_a_backend_that_cannot_start_leaves_a_sink_without_input(registry, caplog, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with caplog.at_level(logging.WARNING, logger="punktfunk.input"):
        sink = open_input_sink(registry, settings(backend="xtest"), SPEC)
        unknown = open_input_sink(registry, settings(backend="nosuch"), SPEC)
    assert "xtest" in caplog.text and "DISPLAY is not set" in caplog.text
    assert "no input stage named 'nosuch'" in caplog.text and "recording" in caplog.text
    for s in (sink, unknown):
        assert s.backend is None and s.gone
        assert not s.submit(Key(0x41, True))
        assert s.counters()["dropped_no_backend"] == 1
        s.close()


def test_submit_never_blocks_a_protocol_thread_while_the_backend_hangs(registry):
    sink, backend = open_sink(registry, {"paused": True}, queue=16)
    done = threading.Event()

    def protocol_thread():
        for i in range(5000):
            sink.submit(Key(0x41 + i % 20, i % 2 == 0))
        done.set()

    threading.Thread(target=protocol_thread, daemon=True).start()
    assert done.wait(10), "submit blocked behind a hanging backend"
    backend.resume()
    sink.close()


def test_auto_picks_xtest_with_a_display_and_says_once_when_nothing_can_inject(registry, caplog, monkeypatch):
    from punktfunk_input.plugin import choose
    from punktfunk_input.uinput import available as uinput_available

    monkeypatch.setenv("DISPLAY", ":12345")
    assert choose() == ("xtest", "")
    monkeypatch.delenv("DISPLAY")
    if not uinput_available():
        assert choose()[0] == "uinput"
        return
    with caplog.at_level(logging.WARNING, logger="punktfunk.input"):
        sink = open_input_sink(registry, settings(backend="auto"), SPEC)
    line = [r.getMessage() for r in caplog.records]
    assert len(line) == 1 and "DISPLAY is not set" in line[0] and "/dev/uinput" in line[0], line
    assert sink.backend is not None and sink.backend.classes == frozenset()
    assert not sink.submit(Key(0x41, True)) and sink.counters()["dropped_unsupported"] == 1
    sink.close()


def test_the_input_section_has_defaults_and_refuses_nonsense():
    schema = config.build_schema()
    defaults = config.validate(schema, {})["input"]
    assert defaults["backend"] == "auto" and all(defaults[c.value] for c in InputClass)
    with pytest.raises(config.ConfigError) as err:
        config.validate(schema, {"input": {"max_events_per_s": 0, "queue": "big", "joystick": True}})
    text = str(err.value)
    assert "input.max_events_per_s" in text and "input.queue" in text and "input.joystick: unknown key" in text


def test_with_nothing_queued_a_packet_is_injected_on_the_receiving_thread_with_one_flush(registry):
    sink, backend = open_sink(registry, {"inline": ["keyboard", "mouse"]})
    kept = sink.submit_many([Key(0x41, True), Key(0x41, False), PointerMove(1, 2)])
    assert kept == 3 and backend.events == [Key(0x41, True), Key(0x41, False), PointerMove(1, 2)]  # done on return
    assert backend.threads == [threading.current_thread().name] * 3 and backend.batches == [3]
    # a controller may need a device made (it may wait): the injector thread takes it
    sink.submit(ControllerArrival(0, ControllerType.XBOX))
    drain(sink, backend, 4)
    assert backend.threads[-1].endswith("-inject")
    c = sink.counters()
    assert c["injected"] == 4 and c["latency_p50_us"] is not None
    sink.close()


def test_inline_off_hands_every_event_to_the_injector_thread(registry):
    sink, backend = open_sink(registry, {"inline": ["keyboard"]}, inject_on_receive=False)
    sink.submit(Key(0x41, True))
    drain(sink, backend, 1)
    assert backend.threads == [f"{sink.name}-inject"]
    sink.close()


def test_events_arriving_while_a_batch_is_injected_follow_it_in_order(registry):
    """Another thread's batch is being injected (the backend is slow): what arrives meanwhile
    is queued for the injector thread, which starts only when that batch is done."""
    sink, backend = open_sink(registry, {"inline": ["keyboard"], "paused": True})
    first = threading.Thread(target=sink.submit, args=(Key(0x41, True),))
    first.start()
    assert backend.waiting.wait(5)  # the first key is inside inject, on the thread that received it
    assert sink.submit(Key(0x41, False)) and sink.submit(Key(0x42, True))  # they do not wait for it
    backend.resume()
    first.join(5)
    drain(sink, backend, 3)
    assert backend.events == [Key(0x41, True), Key(0x41, False), Key(0x42, True)]
    assert backend.threads[0] == first.name and set(backend.threads[1:]) == {f"{sink.name}-inject"}
    sink.close()
    assert backend.closed and backend.events[-1] == Key(0x42, False)  # the held key is released at close


def test_the_sink_follows_the_session_pointer_for_a_capture_that_draws_it(registry):
    """Where the client's pointing input put the pointer, whatever the backend does with it:
    absolute positions, relative moves (stream pixels, clamped), touches and pens."""
    from punktfunk_core.inputevents import Pen

    sink, _backend = open_sink(registry, {"classes": ["keyboard"]})  # a backend without a mouse
    assert sink.pointer.position is None and sink.pointer.pixel(640, 360) is None
    sink.submit(PointerPosition(160, 90, 639, 359))
    assert sink.pointer.pixel(640, 360) == (160, 90)
    sink.submit(PointerMove(-1000, 9))
    assert sink.pointer.pixel(640, 360) == (0, 99)
    sink.submit(Touch(1, TouchPhase.DOWN, 0.5, 1.0))
    assert sink.pointer.pixel(640, 360) == (320, 359)
    sink.submit(Pen(TouchPhase.CANCEL))  # a cancel says nothing about where
    assert sink.pointer.pixel(640, 360) == (320, 359)
    sink.submit(Pen(TouchPhase.HOVER, x=0.0, y=0.0))
    assert sink.pointer.position == (0.0, 0.0)
    sink.set_enabled(["keyboard"])  # the mouse switched off: its moves are not the session's any more
    sink.submit(PointerPosition(1, 1, 639, 359))
    assert sink.pointer.position == (0.0, 0.0)
    sink.close()
