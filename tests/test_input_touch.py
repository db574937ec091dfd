"""Touch and pen through real clients to a real X server.

XTest has no touch screen, so the ``xtest`` backend drives the pointer with a
touch (docs/input.md, "Backends"): the first finger down moves the pointer
there and holds button 1, its moves drag, lifting it lets go; other fingers
change nothing; a pen is one contact, its hover moves the pointer. A real X
client window (tests/x11_helpers.py) records what arrives.

- GameStream: moonlight-common-c sends touch and pen packets only to a host
  whose RTSP DESCRIBE announces ``LI_FF_PEN_TOUCH_EVENTS``
  (``x-ss-general.featureFlags``); the host announces it while ``[input]``
  takes touch input, and the library's ``LiSendTouchEvent`` /
  ``LiSendPenEvent`` (called through ctypes during a stream) reach the X server.
- punktfunk/1: the reference client's ``--input-script`` sends ``to`` and
  ``pe`` events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_native_input import SCREEN, input_host, write_script
from x11_helpers import XWindowRecorder, private_xvfb

pytest.importorskip("Xlib", reason="python-xlib is not installed")

#: Limelight.h
TOUCH_HOVER, TOUCH_DOWN, TOUCH_UP, TOUCH_MOVE = 0x00, 0x01, 0x02, 0x03
TOOL_PEN = 0x01
ROT_UNKNOWN, TILT_UNKNOWN = 0xFFFF, 0xFF
LI_ERR_UNSUPPORTED = -5501

def on_screen(fx: float, fy: float, screen: tuple[int, int] = SCREEN) -> tuple[int, int]:
    """Where a touch at (fx, fy) of the picture lands on a capture showing the whole screen."""
    return round(fx * (screen[0] - 1)), round(fy * (screen[1] - 1))


def touch(phase: int, pointer_id: int, x: float = 0.0, y: float = 0.0) -> list:
    return ["LiSendTouchEvent", phase, pointer_id, x, y, 1.0, 0.0, 0.0, ROT_UNKNOWN]


def pen(phase: int, x: float, y: float) -> list:
    return ["LiSendPenEvent", phase, TOOL_PEN, 0, x, y, 0.5, 0.0, 0.0, ROT_UNKNOWN, TILT_UNKNOWN]


#: a finger drags from a quarter to the middle while a second finger taps; then a pen hovers,
#: draws a stroke and lifts
MOONLIGHT_SCRIPT = [
    touch(TOUCH_DOWN, 7, 0.25, 0.5), ["sleep", 0.1],
    touch(TOUCH_MOVE, 7, 0.5, 0.25), ["sleep", 0.1],
    touch(TOUCH_DOWN, 8, 0.875, 0.875), ["sleep", 0.1], touch(TOUCH_UP, 8, 0.875, 0.875), ["sleep", 0.1],
    touch(TOUCH_UP, 7, 0.5, 0.25), ["sleep", 0.2],
    pen(TOUCH_HOVER, 0.75, 0.75), ["sleep", 0.1],
    pen(TOUCH_DOWN, 0.75, 0.75), ["sleep", 0.1],
    pen(TOUCH_MOVE, 0.625, 0.375), ["sleep", 0.1],
    pen(TOUCH_UP, 0.625, 0.375), ["sleep", 0.5],
]


def contact_story(events) -> list[tuple[str, tuple[int, int]]]:
    """Button 1 presses and releases with where they happened, and the motions between."""
    out = []
    for e in events:
        if e.kind in ("button_press", "button_release") and e.detail == 1:
            out.append((e.kind, (e.x, e.y)))
        elif e.kind == "motion" and (not out or out[-1] != ("motion", (e.x, e.y))):
            out.append(("motion", (e.x, e.y)))
    return out


@pytest.fixture
def desktop():
    """A private Xvfb and a real X client window on it that records what arrives."""
    with private_xvfb(*SCREEN) as x:
        recorder = XWindowRecorder(x.name)
        yield x.name, recorder
        recorder.close()


def _moonlight_host(host_factory, tmp_path: Path, display: str, touch_on: bool = True):
    from gamestream_helpers import gs_config, pair, wait_ready

    config = gs_config(client_timeout_s=5) + (
        f'[stream]\ncapture = "x11"\ncapture_options = {{ display = "{display}" }}\nencoder = "x264"\n'
        'encoder_options = { preset = "ultrafast" }\n'
        f'[input]\nbackend = "xtest"\nbackend_options = {{ display = "{display}" }}\n'
        f'touch = {"true" if touch_on else "false"}\n')
    host = host_factory(config=config)
    wait_ready(host)
    client = tmp_path / "client"
    assert pair(host, client)["ok"]
    return host, client


def _moonlight_send(host, client: Path, tmp_path: Path, steps: list) -> dict:
    from gamestream_helpers import run_client

    script = tmp_path / "input.json"
    script.write_text(json.dumps(steps))
    res = run_client("input", host, client, "--width", "640", "--height", "360", "--fps", "30", "--frames", "15",
                     "--input-script", str(script), "--hold", "0.5")
    assert res["ok"] and res["terminated"] is None, res
    return res


@pytest.mark.moonlight
def test_moonlight_touch_and_pen_drive_the_x_pointer(host_factory, desktop, tmp_path: Path) -> None:
    pytest.importorskip("moonlight_python")
    display, window = desktop
    host, client = _moonlight_host(host_factory, tmp_path, display)
    res = _moonlight_send(host, client, tmp_path, MOONLIGHT_SCRIPT)
    assert res["results"] == [0] * 9, res["results"]  # the host announced touch: the library sent each
    events = window.wait_for(lambda evs: sum(e.kind == "button_release" for e in evs) >= 2)
    story = contact_story(events)
    assert story == [
        ("motion", on_screen(0.25, 0.5)), ("button_press", on_screen(0.25, 0.5)),  # finger 7 down
        ("motion", on_screen(0.5, 0.25)),                                          # drags; finger 8 changes nothing
        ("button_release", on_screen(0.5, 0.25)),                                  # finger 7 up
        ("motion", on_screen(0.75, 0.75)), ("button_press", on_screen(0.75, 0.75)),  # pen hovers, touches
        ("motion", on_screen(0.625, 0.375)), ("button_release", on_screen(0.625, 0.375)),  # strokes, lifts
    ], story
    counters = host.call("gamestream.status")["counters"]
    assert not counters.get("input_malformed"), counters


@pytest.mark.moonlight
def test_without_touch_input_the_host_does_not_ask_moonlight_for_touch(host_factory, desktop,
                                                                       tmp_path: Path) -> None:
    pytest.importorskip("moonlight_python")
    display, window = desktop
    host, client = _moonlight_host(host_factory, tmp_path, display, touch_on=False)
    res = _moonlight_send(host, client, tmp_path, [touch(TOUCH_DOWN, 1, 0.5, 0.5), ["sleep", 0.3]])
    # moonlight-common-c refuses, so a client falls back to mouse input of its own
    assert res["results"] == [LI_ERR_UNSUPPORTED], res["results"]
    assert window.snapshot("button_press") == []


def test_reference_client_touch_and_pen_drive_the_x_pointer(host_factory, tmp_path, desktop) -> None:
    from test_native_e2e import run_client, summary_of

    display, window = desktop
    h = input_host(host_factory, tmp_path, display)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    # ["to", pointer id, phase, x, y, pressure, major, minor, rotation] and
    # ["pe", phase, tool, buttons, x, y, pressure, major, minor, rotation, tilt]
    script = write_script(tmp_path, [
        (0.3, ["to", 3, TOUCH_DOWN, 0.25, 0.5, 1.0, 0.0, 0.0, None]),
        (0.4, ["to", 4, TOUCH_DOWN, 0.875, 0.875, 1.0, 0.0, 0.0, None]),  # a second finger: nothing
        (0.5, ["to", 3, TOUCH_MOVE, 0.5, 0.25, 1.0, 0.0, 0.0, None]),
        (0.6, ["to", 4, TOUCH_UP, 0.875, 0.875, 1.0, 0.0, 0.0, None]),
        (0.7, ["to", 3, TOUCH_UP, 0.5, 0.25, 1.0, 0.0, 0.0, None]),
        (0.8, ["pe", TOUCH_DOWN, TOOL_PEN, 0, 0.75, 0.75, 0.5, 0.0, 0.0, None, 30]),
        (0.9, ["pe", TOUCH_UP, TOOL_PEN, 0, 0.75, 0.75, 0.0, 0.0, 0.0, None, 30]),
    ])
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "2.5", "--json", "--width", "320",
                              "--height", "180", "--fps", "30", "--bitrate", "2000", "--input-script", script))
    assert s["input_sent"] == 7 and s["frames_decoded"] > 0, s
    events = window.wait_for(lambda evs: sum(e.kind == "button_release" for e in evs) >= 2)
    assert contact_story(events) == [
        ("motion", on_screen(0.25, 0.5)), ("button_press", on_screen(0.25, 0.5)), ("motion", on_screen(0.5, 0.25)),
        ("button_release", on_screen(0.5, 0.25)),
        ("motion", on_screen(0.75, 0.75)), ("button_press", on_screen(0.75, 0.75)),
        ("button_release", on_screen(0.75, 0.75)),
    ]
