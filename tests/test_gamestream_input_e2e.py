"""GameStream input end to end: a real Moonlight core → a real host → a real X server.

The client is moonlight-python's moonlight-common-c in its own process
(tests/gamestream_helpers.py, op ``input``): it streams and calls the
library's own ``LiSend*`` functions through ctypes. The host runs
``capture = "x11"`` and input ``backend = "xtest"`` on a private Xvfb whose
screen is twice the stream size, and a real X client window on that display
(tests/x11_helpers.py) records what arrives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gamestream_helpers import FAULTS_ENV, gs_config, pair, run_client, wait_ready
from x11_helpers import XWindowRecorder, keysym_char, private_xvfb

pytest.importorskip("moonlight_python")
pytest.importorskip("Xlib", reason="python-xlib is not installed")
pytestmark = pytest.mark.moonlight

SCREEN = (1280, 720)
STREAM = (640, 360)
#: Limelight.h constants
PRESS, RELEASE = 0x07, 0x08
KEY_DOWN, KEY_UP = 0x03, 0x04
LEFT, RIGHT = 1, 3

#: what a user does: point, nudge, click, scroll both ways, type keys and a character
SCRIPT = [
    ["LiSendMousePositionEvent", 100, 50, *STREAM], ["sleep", 0.2],
    ["LiSendMousePositionEvent", 639, 359, *STREAM], ["sleep", 0.2],
    ["LiSendMousePositionEvent", 100, 50, *STREAM], ["sleep", 0.2],
    ["LiSendMouseMoveEvent", 10, -5], ["sleep", 0.2],
    ["LiSendMouseButtonEvent", PRESS, LEFT], ["LiSendMouseButtonEvent", RELEASE, LEFT],
    ["LiSendMouseButtonEvent", PRESS, RIGHT], ["LiSendMouseButtonEvent", RELEASE, RIGHT], ["sleep", 0.1],
    ["LiSendScrollEvent", 1], ["sleep", 0.1], ["LiSendScrollEvent", -1], ["sleep", 0.1],
    ["LiSendHScrollEvent", 1], ["sleep", 0.1],
    ["LiSendKeyboardEvent", 0x41, KEY_DOWN, 0], ["LiSendKeyboardEvent", 0x41, KEY_UP, 0],  # a
    ["LiSendKeyboardEvent", 0xA0, KEY_DOWN, 0], ["LiSendKeyboardEvent", 0x31, KEY_DOWN, 1],  # Shift+1
    ["LiSendKeyboardEvent", 0x31, KEY_UP, 1], ["LiSendKeyboardEvent", 0xA0, KEY_UP, 0],
    ["LiSendKeyboardEvent", 0x0D, KEY_DOWN, 0], ["LiSendKeyboardEvent", 0x0D, KEY_UP, 0],  # Return
    ["LiSendUtf8TextEvent", "é"], ["sleep", 0.5],
]


def _packet(magic: int, body: bytes) -> str:
    return ((len(body) + 4).to_bytes(4, "big") + magic.to_bytes(4, "little") + body).hex()


#: input packets no client should send: each is counted and dropped
GARBAGE = [
    _packet(0x99, b""),  # an unknown type
    _packet(0x03, bytes(6)),  # a key down with virtual-key code 0
    _packet(0x08, b"\x07"),  # mouse button 7
    _packet(0x05, bytes(8) + b"\x00\x00"),  # an absolute position with a zero reference size
    "0000ffff03000000",  # a length that disagrees with the bytes
    _packet(0x17, b"\xff\xfe"),  # text that is not UTF-8
    _packet(0x07, bytes(200)),  # far larger than any input packet
]


@pytest.fixture
def display(monkeypatch):
    with private_xvfb(*SCREEN) as x:
        monkeypatch.setenv("DISPLAY", x.name)  # the host inherits it: x11 capture and xtest
        yield x


@pytest.fixture
def window(display):
    rec = XWindowRecorder(display.name)
    yield rec
    rec.close()


@pytest.fixture
def x11_host(host_factory, display, tmp_path: Path):
    """A host capturing the private display and injecting into it, with a paired client."""
    def make(backend: str = "xtest", env: dict | None = None, options: str = "{}"):
        config = gs_config(client_timeout_s=5) + (
            '[stream]\ncapture = "x11"\nencoder = "x264"\nencoder_options = { preset = "ultrafast" }\n'
            f'[input]\nbackend = "{backend}"\nbackend_options = {options}\n')
        host = host_factory(config=config, env=env)
        wait_ready(host)
        client = tmp_path / "client"
        assert pair(host, client)["ok"]
        return host, client

    return make


def _send(host, client: Path, tmp_path: Path, steps: list, **opts) -> dict:
    script = tmp_path / "input.json"
    script.write_text(json.dumps(steps))
    args = ["--width", str(STREAM[0]), "--height", str(STREAM[1]), "--fps", "30", "--frames", "15",
            "--input-script", str(script), "--hold", str(opts.get("hold", 0.5))]
    res = run_client("input", host, client, *args)
    assert res["ok"] and res["terminated"] is None, res
    return res


def _counters(host) -> dict:
    return host.call("gamestream.status")["counters"]


def test_moonlight_input_reaches_the_x_server_scaled_to_the_screen(x11_host, window, tmp_path: Path) -> None:
    host, client = x11_host()
    host.call("stats.start")
    res = _send(host, client, tmp_path, SCRIPT)
    assert all(r == 0 for r in res["results"]), res["results"]  # moonlight-common-c took every call
    # the pointer: stream (639, 359) is the screen's far corner; (100, 50) → (200, 100), then +10, -5
    events = window.wait_for(lambda evs: any(e.kind == "key_release" and keysym_char(e.keysym) == "é" for e in evs))
    motion = [(e.x, e.y) for e in events if e.kind == "motion"]
    assert (200, 100) in motion and (1279, 719) in motion, motion
    assert window.pointer() == (210, 95)
    # buttons and wheel: left, right, one notch up (4), one down (5), one right (7)
    assert [e.detail for e in events if e.kind == "button_press"] == [1, 3, 4, 5, 7]
    assert [e.detail for e in events if e.kind == "button_release"] == [1, 3, 4, 5, 7]
    from Xlib import XK
    keys = [(e.keysym, e.shift) for e in events if e.kind == "key_press"]
    assert keys[:4] == [(ord("a"), False), (XK.XK_Shift_L, False), (ord("!"), True), (XK.XK_Return, False)], keys
    assert window.typed().endswith("a!é")
    # the stats capture holds the input: events per window and receive → injected latency
    meta = host.call("stats.stop")
    samples = host.call("stats.load", id=meta["id"])["samples"]
    with_input = [s for s in samples if "input_events" in s]
    assert with_input, samples
    assert sum(s["input_events"] for s in with_input) >= 20
    assert all(s["input_p99_us"] >= s["input_p50_us"] > 0 for s in with_input if "input_p50_us" in s)
    assert any("input_p50_us" in s for s in with_input)
    # windows in which no input arrived say nothing about input (absent, not 0)
    assert all("input_p50_us" not in s and "input_dropped" not in s for s in samples if "input_events" not in s)
    assert len(with_input) < len(samples)
    summary = host.call("stats.summary", id=meta["id"])
    assert summary["input"]["max_p99_us"] >= summary["input"]["p50_us"] > 0
    assert summary["counters"]["input_events"] == sum(s["input_events"] for s in with_input)
    c = _counters(host)
    assert c.get("input_packets", 0) >= 20 and not c.get("input_malformed") and not c.get("input_view_only")


def test_a_view_only_client_moves_nothing(x11_host, window, tmp_path: Path) -> None:
    host, client = x11_host()
    fingerprint = host.call("gamestream.status")["paired_clients"][0]["fingerprint"]
    assert host.call("pairing.permissions", protocol="gamestream", fingerprint=fingerprint,
                     view_only=True)["view_only"] is True
    start = window.pointer()
    res = _send(host, client, tmp_path, SCRIPT)
    assert all(r == 0 for r in res["results"]), res["results"]
    c = _counters(host)
    assert c.get("input_view_only", 0) >= 20, c
    assert window.pointer() == start
    assert [e for e in window.snapshot() if e.kind != "motion"] == []
    assert "is view-only: its input is dropped" in host.log()
    # the operator gives it control back: the next stream's input arrives
    host.call("pairing.permissions", protocol="gamestream", fingerprint=fingerprint, view_only=False)
    _send(host, client, tmp_path, [["LiSendKeyboardEvent", 0x41, KEY_DOWN, 0],
                                   ["LiSendKeyboardEvent", 0x41, KEY_UP, 0], ["sleep", 0.3]])
    window.wait_for(lambda evs: any(e.kind == "key_release" for e in evs))
    assert window.typed() == "a"


def test_garbage_input_packets_are_counted_and_the_stream_keeps_its_frame_rate(x11_host, window,
                                                                             tmp_path: Path) -> None:
    host, client = x11_host()
    steps: list = []
    for _ in range(20):  # two seconds of garbage at 70 packets per second
        steps += [["garbage", g] for g in GARBAGE] + [["sleep", 0.1]]
    steps += [["LiSendKeyboardEvent", 0x41, KEY_DOWN, 0], ["LiSendKeyboardEvent", 0x41, KEY_UP, 0], ["sleep", 0.3]]
    res = _send(host, client, tmp_path, steps)
    assert all(r == 0 for r in res["results"]), res["results"]
    c = _counters(host)
    assert c.get("input_malformed", 0) == 20 * (len(GARBAGE) - 1), c
    assert c.get("input_oversized", 0) == 20, c
    # frames kept coming while the garbage did (30 fps asked; a loaded machine may deliver fewer)
    assert res["frames_during"] >= 0.5 * 30 * res["seconds_during"], res
    # the real key after the garbage still arrives, and nothing else did
    window.wait_for(lambda evs: any(e.kind == "key_release" for e in evs))
    assert window.typed() == "a"
    assert [e.kind for e in window.snapshot() if e.kind != "motion"] == ["key_press", "key_release"]


def test_controller_state_reaches_the_backend_and_rumble_comes_back(x11_host, tmp_path: Path) -> None:
    """XTest has no gamepads; the test plugin's ``recording`` backend (tests/plugins/pf_input_recorder.py)
    answers a controller state with rumble, which the host sends to Moonlight on the control stream."""
    env = {**FAULTS_ENV, "PUNKTFUNK_PLUGINS": "pf_input_recorder"}
    host, client = x11_host(backend="recording", env=env, options="{ rumble_echo = true }")
    # controller 0 (mask 1): A pressed, triggers 128 and 255, left stick right
    steps = [["LiSendMultiControllerEvent", 0, 1, 0x1000, 128, 255, 20000, 0, 0, 0], ["sleep", 1.0]]
    res = _send(host, client, tmp_path, steps)
    assert all(r == 0 for r in res["results"]), res["results"]
    assert [0, 128 * 257, 255 * 257] in res["rumble"], res
    assert _counters(host).get("feedback_sent", 0) >= 1
