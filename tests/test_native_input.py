"""punktfunk/1 input end to end: the reference client → a real host (``x11``
capture of a private Xvfb, ``xtest`` input) → the X server, where a real X
client window (tests/x11_helpers.py) records what arrives."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from test_native_e2e import run_client, start_host, summary_of
from x11_helpers import XWindowRecorder, keysym_char, private_xvfb

from punktfunk_core.inputevents import Key, PointerPosition

pytest.importorskip("Xlib", reason="python-xlib is not installed")
pytest.importorskip("mss", reason="mss is not installed (x11 capture)")

SCREEN = (640, 360)

INPUT_TOML = """
[input]
backend = "xtest"
backend_options = {{ display = "{display}" }}
"""
X11_STREAM = """
capture = "x11"
capture_options = {{ display = "{display}" }}
"""


@pytest.fixture
def xserver():
    with private_xvfb(*SCREEN) as x:
        yield x


@pytest.fixture
def window(xserver):
    rec = XWindowRecorder(xserver.name)
    yield rec
    rec.close()


def input_host(host_factory, tmp_path, display: str):
    return start_host(host_factory, tmp_path, extra=INPUT_TOML.format(display=display),
                      stream=X11_STREAM.format(display=display))


def write_script(tmp_path, lines: list[tuple[float, list]]) -> str:
    path = tmp_path / "input.jsonl"
    path.write_text("# scripted input\n" + "".join(json.dumps({"at": at, "event": ev}) + "\n" for at, ev in lines))
    return str(path)


def pointer(window: XWindowRecorder) -> tuple[int, int]:
    p = window._query.screen().root.query_pointer()
    return p.root_x, p.root_y


def native_counters(h) -> dict:
    return h.call("host.status")["protocols"]["native"]["counters"]


def test_scripted_input_reaches_the_x_server_with_positions_scaled_keys_buttons_scroll_and_text(
        host_factory, tmp_path, xserver, window):
    h = input_host(host_factory, tmp_path, xserver.name)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    # a 320x180 stream of a 640x360 screen: stream pixel (80, 45) is screen pixel (160, 90)
    script = write_script(tmp_path, [
        (0.3, ["p", 80, 45, 319, 179]),
        (0.4, ["k", 0x41, True, 0]), (0.45, ["k", 0x41, False, 0]),                     # a
        (0.5, ["k", 0xA0, True, 0]), (0.55, ["k", 0x31, True, 0]),                      # Shift+1: !
        (0.6, ["k", 0x31, False, 0]), (0.65, ["k", 0xA0, False, 0]),
        (0.7, ["b", 1, True]), (0.75, ["b", 1, False]),                                 # left click
        (0.8, ["b", 3, True]), (0.85, ["b", 3, False]),                                 # right click
        (0.9, ["s", 120]), (1.0, ["s", -120]), (1.1, ["h", 120]),                       # wheel up, down, right
        (1.2, ["t", "hé"]),
        (1.4, ["m", 10, -5]),
    ])
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "3", "--json", "--width", "320",
                              "--height", "180", "--fps", "30", "--bitrate", "2000", "--input-script", script))
    assert s["input_sent"] == 16, s
    assert s["frames_decoded"] > 0, s
    events = window.wait_for(lambda evs: sum(e.kind == "key_release" for e in evs) >= 5
                             and sum(e.kind == "motion" for e in evs) >= 2)
    chars = [keysym_char(e.keysym) for e in events if e.kind == "key_press" and keysym_char(e.keysym)]
    assert chars == ["a", "!", "h", "é"], chars
    buttons = [(e.kind, e.detail) for e in events if e.kind.startswith("button")]
    assert buttons == [("button_press", 1), ("button_release", 1), ("button_press", 3), ("button_release", 3),
                       ("button_press", 4), ("button_release", 4), ("button_press", 5), ("button_release", 5),
                       ("button_press", 7), ("button_release", 7)], buttons
    # the click landed where the client put the pointer, scaled to the screen
    click = next(e for e in events if e.kind == "button_press")
    assert abs(click.x - 160) <= 1 and abs(click.y - 90) <= 1, click
    # the relative move afterwards moved it by host pixels
    assert pointer(window) == (click.x + 10, click.y - 5)
    c = native_counters(h)
    assert c["input_messages"] >= 1 and c["input_malformed"] == 0 and c["input_view_only"] == 0, c


def test_a_view_only_clients_input_changes_nothing(host_factory, tmp_path, xserver, window):
    h = input_host(host_factory, tmp_path, xserver.name)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "0.5", "--json", "--width", "320",
                          "--height", "180", "--bitrate", "2000"))  # pair, stream briefly
    fp = h.call("pairing.clients", protocol="native")[0]["fingerprint"]
    h.call("pairing.permissions", protocol="native", fingerprint=fp, view_only=True)
    before = pointer(window)
    script = write_script(tmp_path, [(0.3, ["p", 10, 10, 319, 179]), (0.4, ["k", 0x41, True, 0]),
                                     (0.45, ["k", 0x41, False, 0]), (0.5, ["b", 1, True]), (0.55, ["b", 1, False]),
                                     (0.6, ["t", "x"])])
    s = summary_of(run_client(h, tmp_path, "--seconds", "2", "--json", "--width", "320", "--height", "180",
                              "--bitrate", "2000", "--input-script", script))
    assert s["input_sent"] == 6 and s["frames_decoded"] > 0, s  # it watched, and it sent
    time.sleep(0.3)
    assert window.snapshot() == [] and pointer(window) == before  # and nothing happened
    assert native_counters(h)["input_view_only"] >= 1
    # control again: the same client's input arrives
    h.call("pairing.permissions", protocol="native", fingerprint=fp, view_only=False)
    summary_of(run_client(h, tmp_path, "--seconds", "2", "--json", "--width", "320", "--height", "180",
                          "--bitrate", "2000", "--input-script", script))
    window.wait_for(lambda evs: any(e.kind == "key_press" for e in evs))


GARBAGE = [
    {"type": "input"},                                           # no events
    {"type": "input", "events": "k 65"},                         # not a list
    {"type": "input", "events": [["k", 0, True, 0]]},            # VK code 0
    {"type": "input", "events": [["k", 65, 1, 0]]},              # down must be a boolean
    {"type": "input", "events": [["zz", 1]]},                    # unknown event
    {"type": "input", "events": [["p", 1, 2, 0, 0]]},            # zero reference size
    {"type": "input", "events": [["b", 9, True]]},               # no button 9
    {"type": "input", "events": [["t", ""]]},                    # empty text
    {"type": "input", "events": [["cm", 0, 3, 0.0, 0.0, 0.0]]},  # no motion sensor 3
    {"type": "input", "events": [[]]},
    {"type": "input", "events": [["m", 1, 1]] * 300},            # more than 256 events
    # binary batches (how the reference client sends input): one record each, bad in its own way
    bytes([99, 0, 0]),                                           # unknown record tag
    bytes([1, 65]),                                              # a key record cut off
    bytes([1, 0, 1, 0]),                                         # VK code 0
    bytes([5, 9, 1]),                                            # no button 9
    bytes([2, 0, 2, 0xC3]),                                      # text: not UTF-8 / cut off
    bytes([3, 0, 0, 0, 1, 0, 0, 0, 1]) * 300,                    # more than 256 events
]


def _streaming_client(h, tmp_path, seconds: float):
    """A paired reference client streaming from ``h`` on its own thread, once it has decoded a few
    frames: (client, thread, the dict its summary goes into)."""
    from punktfunk_native.client import ClientOptions, NativeClient

    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    client = NativeClient(ClientOptions(host="127.0.0.1", port=h.native_port, pin="4821", seconds=seconds,
                                        width=320, height=180, fps=30, bitrate_kbps=2000, json=True, status=False,
                                        config_dir=tmp_path / "cli"))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(client.run()))
    runner.start()
    deadline = time.monotonic() + 20
    while client.stats.frames_decoded < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    return client, runner, result


def test_garbage_input_is_counted_and_the_stream_keeps_its_frame_rate(host_factory, tmp_path, xserver, window):
    h = input_host(host_factory, tmp_path, xserver.name)
    client, runner, result = _streaming_client(h, tmp_path, seconds=4)
    sent = 0
    for _ in range(20):  # 340 bad messages over ~2 s, a good key in between
        for msg in GARBAGE:
            client.send_message(msg)
            sent += 1
        client.send_input(Key(0x42, True), Key(0x42, False))
        time.sleep(0.1)
    runner.join(30)
    assert not runner.is_alive()
    c = native_counters(h)
    assert c["input_oversized"] == 20 * 2, c
    assert c["input_malformed"] == 20 * (len(GARBAGE) - 2), c
    assert c["protocol_errors"] == 0, c  # bad input never ended the connection
    # the stream kept its frame rate (30 fps; a busy shared machine may lose a few)
    assert result["frames_decoded"] >= 0.95 * result["frames_expected"] and result["fps"] >= 20, result
    # and good input still went through: 20 taps of "b"
    events = window.wait_for(lambda evs: sum(e.kind == "key_release" for e in evs) >= 20)
    assert [keysym_char(e.keysym) for e in events if e.kind == "key_press"] == ["b"] * 20


def test_a_burst_of_keys_goes_out_in_a_few_batches_and_arrives_whole_and_in_order(host_factory, tmp_path, xserver,
                                                                                  window):
    h = input_host(host_factory, tmp_path, xserver.name)
    client, runner, result = _streaming_client(h, tmp_path, seconds=3)
    keys = [0x41 + i % 26 for i in range(60)]  # a..z, a..z, a..h
    for vk in keys:  # one call per event, as a keyboard driver would make them
        client.send_input(Key(vk, True))
        client.send_input(Key(vk, False))
    runner.join(30)
    assert not runner.is_alive() and result["frames_decoded"] > 0, result
    events = window.wait_for(lambda evs: sum(e.kind == "key_release" for e in evs) >= len(keys))
    # none lost, none reordered: each key went down and up before the next
    assert [(e.kind, keysym_char(e.keysym)) for e in events if e.kind.startswith("key")] == [
        (kind, chr(vk).lower()) for vk in keys for kind in ("key_press", "key_release")]
    # binary batches of the client's 2 ms tick, not a message per event
    messages = native_counters(h)["input_messages"]
    assert 1 <= messages < len(keys), messages


def test_click_to_photon_is_reported_on_xvfb(host_factory, tmp_path, xserver, window):
    h = input_host(host_factory, tmp_path, xserver.name)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "4", "--json", "--width", "640",
                              "--height", "360", "--fps", "30", "--bitrate", "4000", "--click-to-photon"))
    assert s["click_to_photon_samples"] >= 5, s
    # a move shows within a few frames; far below the probe's 1 s give-up
    assert 0 < s["click_to_photon_p50_ms"] <= s["click_to_photon_p99_ms"] < 1000, s
    assert s["click_to_photon_missed"] <= 1, s
    # the moves really went to the two probe points (quarter and three quarters of the screen)
    moves = {(e.x, e.y) for e in window.snapshot("motion")}
    assert {(160, 90), (480, 270)} <= moves, moves


def test_every_event_of_the_model_crosses_the_wire_unchanged_and_bad_arrays_are_refused():
    from punktfunk_core.inputevents import (
        INPUT_EVENT_TYPES,
        BatteryState,
        Button,
        ControllerArrival,
        ControllerBattery,
        ControllerButton,
        ControllerCapability,
        ControllerMotion,
        ControllerRemoval,
        ControllerState,
        ControllerTouch,
        ControllerType,
        Modifier,
        MotionSensor,
        MouseButton,
        Pen,
        PenButton,
        PenTool,
        PointerMove,
        Scroll,
        Text,
        Touch,
        TouchPhase,
    )

    from punktfunk_native.input import (
        BatchTooLarge,
        MalformedInput,
        decode_batch,
        decode_event,
        encode_batch,
        input_message,
    )

    events = [Key(0x41, True, Modifier.SHIFT), Text("hé 🙂"), PointerMove(1, -2), PointerPosition(3, 4, 639, 359),
              Button(MouseButton.X2, False), Scroll(-120), Scroll(60, horizontal=True),
              ControllerArrival(0, ControllerType.PLAYSTATION, ControllerCapability.RUMBLE, ControllerButton.A),
              ControllerState(1, ControllerButton.A | ControllerButton.PADDLE1, 1, 2, 3, -4, 5, -32768),
              ControllerRemoval(2), ControllerMotion(0, MotionSensor.GYROSCOPE, 1.5, -2.0, 9.81),
              ControllerBattery(0, BatteryState.FULL, 100), ControllerTouch(0, TouchPhase.DOWN, 7, 0.5, 0.25, 0.1, 1),
              Touch(1, TouchPhase.MOVE, 0.1, 0.2, 0.3, 0.1, 0.1, None),
              Pen(TouchPhase.DOWN, PenTool.ERASER, PenButton.PRIMARY, 0.1, 0.2, 0.3, 0.0, 0.0, 90, 45)]
    assert {type(e) for e in events} == set(INPUT_EVENT_TYPES)
    wire = json.loads(json.dumps(input_message(events)))  # as the host reads it
    assert [decode_event(item) for item in wire["events"]] == events
    # the binary batch the reference client sends carries the same, enum fields as their members
    batch = decode_batch(encode_batch(events))
    assert batch == (events, []) and [type(e.modifiers) for e in batch[0] if isinstance(e, Key)] == [Modifier]
    # a record out of range is dropped on its own, the records around it stay, in order
    bad_key = bytes([1, 0, 1, 0])
    got, bad = decode_batch(encode_batch(events[:2]) + bad_key + encode_batch(events[2:3]))
    assert got == events[:3] and len(bad) == 1 and "virtual-key code 0" in bad[0]
    # what cannot be framed ends the batch there
    assert decode_batch(encode_batch(events[:1]) + bytes([99]) + encode_batch(events[:1]))[0] == events[:1]
    assert decode_batch(encode_batch(events[:1])[:-1])[0] == []
    with pytest.raises(BatchTooLarge):
        decode_batch(encode_batch([PointerMove(1, 1)] * 256) + encode_batch([PointerMove(1, 1)]))
    for bad in ([], ["k"], ["k", 0, True, 0], ["k", 65, 1, 0], ["zz"], "k", ["p", 1, 2, 0, 0], ["t", ""],
                ["b", 6, True], ["cs", 16, 0, 0, 0, 0, 0, 0, 0], ["to", 1, 3, 1.5, 0, 0, 0, 0, None], [7]):
        with pytest.raises(MalformedInput):
            decode_event(bad)


def test_an_input_script_with_a_bad_line_is_refused_before_connecting(tmp_path):
    from punktfunk_native.client.inputscript import InputScriptError, load_input_script

    good = write_script(tmp_path, [(0.5, ["k", 13, True, 0]), (0.6, ["k", 13, False, 0])])
    assert [e.at for e in load_input_script(good)] == [0.5, 0.6]
    path = tmp_path / "bad.jsonl"
    path.write_text('{"at": 0.1, "event": ["m", 1, 1]}\n\n{"at": 0.2, "event": ["k", 300, true, 0]}\n')
    with pytest.raises(InputScriptError, match="line 3: virtual-key code 300"):
        load_input_script(path)
    proc = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", "9",
                           "--input-script", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "line 3" in proc.stderr, proc.stderr
