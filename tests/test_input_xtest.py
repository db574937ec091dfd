"""The xtest input stage driven through the input sink into a private Xvfb.

A real X client window (tests/x11_helpers.py) records what the X server
delivers: keys with their keysyms, typed text, pointer position, buttons and
wheel clicks. Killing the Xvfb while input flows must leave the sink quiet
and the calling thread free.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from x11_helpers import XWindowRecorder, keysym_char, private_xvfb

from punktfunk_core import config
from punktfunk_core.inputevents import (
    Button,
    Key,
    Modifier,
    MouseButton,
    PointerMove,
    PointerPosition,
    Scroll,
    Text,
)
from punktfunk_core.inputsink import InputSink, open_input_sink
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.stages import ScreenArea, StreamSpec

pytest.importorskip("Xlib", reason="python-xlib is not installed")

SCREEN = (640, 360)
STREAM = StreamSpec(320, 180)


@pytest.fixture
def xserver(monkeypatch):
    with private_xvfb(*SCREEN) as x:
        monkeypatch.setenv("DISPLAY", x.name)
        yield x


@pytest.fixture
def window(xserver):
    rec = XWindowRecorder(xserver.name)
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def registry():
    return load_plugin_manager().stages


def xtest_sink(registry, screen: ScreenArea | None = None, **section) -> InputSink:
    settings = config.InputSettings.of(config.validate(config.build_schema(),
                                                       {"input": {"backend": "xtest", **section}})["input"])
    sink = open_input_sink(registry, settings, STREAM, screen)
    assert sink.backend is not None and sink.backend.name == "xtest", sink.gone
    return sink


def presses(window: XWindowRecorder) -> list[str]:
    return [keysym_char(e.keysym) for e in window.snapshot("key_press")]


def test_keys_arrive_with_their_keysyms_and_shift_makes_capitals(registry, window):
    sink = xtest_sink(registry)
    for ev in (Key(0x41, True), Key(0x41, False),  # a
               Key(0xA0, True), Key(0x31, True), Key(0x31, False), Key(0xA0, False),  # Shift+1
               Key(0xBF, True, Modifier.SHIFT), Key(0xBF, False),  # "?" from a Shift flag alone
               Key(0x0D, True), Key(0x0D, False)):
        sink.submit(ev)
    events = window.wait_for(lambda evs: sum(e.kind == "key_release" for e in evs) >= 6)
    from Xlib import XK
    typed = [(e.keysym, e.shift) for e in events if e.kind == "key_press"]
    assert typed == [(ord("a"), False), (XK.XK_Shift_L, False), (ord("!"), True),
                     (XK.XK_Shift_L, False), (ord("?"), True), (XK.XK_Return, False)]
    sink.close()


def test_text_types_ascii_shifted_and_non_ascii_characters(registry, xserver, window):
    sink = xtest_sink(registry)
    text = "aZ!~ é€жü😀"
    sink.submit(Text(text))
    window.wait_for(lambda evs: len([e for e in evs if e.kind == "key_release" and keysym_char(e.keysym)]) >= len(text))
    assert "".join(c for c in presses(window) if c) == text
    # keys bound for characters the keymap lacked are unbound at close
    sink.close()
    from Xlib import display
    d = display.Display(xserver.name)
    lo = d.display.info.min_keycode
    mapping = d.get_keyboard_mapping(lo, d.display.info.max_keycode - lo + 1)
    assert not any(0x01000000 | 0x20AC in syms for syms in mapping)
    d.close()


def test_absolute_positions_are_scaled_from_the_stream_to_the_screen(registry, window):
    sink = xtest_sink(registry)
    for pos, expected in (((0, 0), (0, 0)), ((319, 179), (639, 359)), ((160, 90), (321, 181))):
        sink.submit(PointerPosition(*pos, 319, 179))
        window.wait_for(lambda _evs, want=expected: window.pointer() == want)
    sink.submit(PointerPosition(-50, 900, 319, 179))  # off the picture: clamped to its edge
    window.wait_for(lambda _evs: window.pointer() == (0, 359))
    sink.close()


def test_absolute_positions_land_in_the_captured_area_of_a_larger_desktop(registry, window):
    sink = xtest_sink(registry, screen=ScreenArea(100, 50, 200, 100))
    sink.submit(PointerPosition(0, 0, 319, 179))
    window.wait_for(lambda _evs: window.pointer() == (100, 50))
    sink.submit(PointerPosition(319, 179, 319, 179))
    window.wait_for(lambda _evs: window.pointer() == (299, 149))
    sink.close()


def test_relative_moves_add_up(registry, window):
    sink = xtest_sink(registry)
    sink.submit(PointerPosition(160, 90, 319, 179))
    window.wait_for(lambda _evs: window.pointer() == (321, 181))
    for _ in range(5):
        sink.submit(PointerMove(4, -3))
    window.wait_for(lambda _evs: window.pointer() == (341, 166))
    sink.close()


def test_buttons_and_wheel_clicks_reach_the_window(registry, window):
    sink = xtest_sink(registry)
    for b in MouseButton:
        sink.submit(Button(b, True))
        sink.submit(Button(b, False))
    sink.submit(Scroll(120))  # one notch up
    sink.submit(Scroll(-240))  # two down
    sink.submit(Scroll(60))  # half a notch: nothing yet
    sink.submit(Scroll(60))  # ... now a whole one up
    sink.submit(Scroll(120, horizontal=True))  # right
    sink.submit(Scroll(-120, horizontal=True))  # left
    expected = [1, 2, 3, 8, 9, 4, 5, 5, 4, 7, 6]
    events = window.wait_for(lambda evs: len([e for e in evs if e.kind == "button_release"]) >= len(expected))
    assert [e.detail for e in events if e.kind == "button_press"] == expected
    assert [e.detail for e in events if e.kind == "button_release"] == expected
    sink.close()


def test_the_x_server_going_away_is_logged_once_and_stops_nothing_else(registry, xserver, caplog):
    sink = xtest_sink(registry)
    stop = threading.Event()
    raised: list[BaseException] = []

    def protocol_thread():
        i = 0
        try:
            while not stop.is_set():
                sink.submit(PointerMove(1, 1) if i % 3 else Key(0x41, i % 2 == 0))
                i += 1
                time.sleep(0.0005)
        except BaseException as exc:  # noqa: BLE001 - the test fails on any
            raised.append(exc)

    with caplog.at_level(logging.WARNING, logger="punktfunk.input"):
        t = threading.Thread(target=protocol_thread, daemon=True)
        t.start()
        time.sleep(0.3)
        injected_before = sink.counters()["injected"]
        xserver.kill()
        deadline = time.monotonic() + 10
        while sink.gone is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # input keeps arriving after the loss
        stop.set()
        t.join(5)
    assert injected_before > 0
    assert sink.gone and "closed" in sink.gone
    assert not raised and not t.is_alive()
    assert caplog.text.count("is gone") == 1
    assert sink.counters()["dropped_no_backend"] > 0
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 3  # the injector was not stuck
    assert not sink._thread.is_alive()


@pytest.mark.parametrize(("event_type", "detail", "x", "y"), [
    (2, 38, 0, 0),         # KeyPress of keycode 38
    (5, 3, 0, 0),          # ButtonRelease of button 3
    (6, 1, -5, 10),        # relative MotionNotify
    (6, 0, 1279, 719),     # absolute MotionNotify
    (6, 1, -32768, 32767),  # the extremes of a coordinate
])
def test_fake_input_requests_are_the_bytes_python_xlib_makes(event_type, detail, x, y):
    """The stage packs XTest FakeInput itself (python-xlib's generic encoder was the largest
    part of an event's injection); the bytes must be the library's, field for field."""
    from Xlib.ext.xtest import FakeInput

    from punktfunk_input.xtest import FAKE_INPUT

    ours = FAKE_INPUT.pack(140, 2, 9, event_type, detail, 0, 0, x, y)
    assert ours == FakeInput._request.to_binary(opcode=140, event_type=event_type, detail=detail, time=0, root=0,
                                                x=x, y=y)


def test_touch_drags_with_the_first_finger_and_the_sink_injects_it_on_the_calling_thread(registry, window):
    """Touch on XTest is the pointer and button 1 (docs/input.md); with nothing queued the
    sink injects on the submitting thread, so the X server has the press when submit returns."""
    from punktfunk_core.inputevents import Touch, TouchPhase

    sink = xtest_sink(registry)
    try:
        assert sink.submit(Touch(1, TouchPhase.DOWN, 0.5, 0.5))
        assert sink.counters()["injected"] == 1  # injected and flushed before submit returned
        window.wait_for(lambda evs: any(e.kind == "button_press" for e in evs))
        sink.submit(Touch(2, TouchPhase.DOWN, 0.0, 0.0))  # a second finger: nothing
        sink.submit(Touch(1, TouchPhase.MOVE, 0.25, 0.75))
        sink.submit(Touch(2, TouchPhase.UP, 0.0, 0.0))
    finally:
        sink.close()  # finger 1 is still down: closing lifts it
    events = window.wait_for(lambda evs: any(e.kind == "button_release" for e in evs))
    assert [(e.kind, e.detail, e.x, e.y) for e in events if e.kind != "motion"] == [
        ("button_press", 1, 320, 180), ("button_release", 1, 160, 269)]
    assert sink.counters()["injected"] == 4
