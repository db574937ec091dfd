"""The uinput input stage: virtual devices a real evdev reader reads back.

These tests need a writable /dev/uinput and skip with that reason where there
is none (a container, a CI runner without the module) — as the NVENC tests
skip without a GPU. What runs everywhere: the error that names the device and
the fix when /dev/uinput is missing or not writable.
"""

from __future__ import annotations

import os
import select
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest

from punktfunk_core import config
from punktfunk_core.inputevents import (
    Button,
    ControllerArrival,
    ControllerButton,
    ControllerRemoval,
    ControllerState,
    Key,
    MouseButton,
    PointerMove,
    PointerPosition,
    Rumble,
    Scroll,
    Touch,
    TouchPhase,
)
from punktfunk_core.inputsink import open_input_sink
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.stages import ScreenArea, StreamSpec

from punktfunk_input.uinput import UInputBackend, available, permission_problem

STREAM = StreamSpec(640, 360)
UINPUT_REASON = available()
needs_uinput = pytest.mark.skipif(bool(UINPUT_REASON), reason=f"uinput: {UINPUT_REASON}")


def test_a_missing_uinput_device_is_named_with_the_module_to_load(tmp_path):
    backend = UInputBackend(STREAM, {"device": str(tmp_path / "uinput")})
    with pytest.raises(RuntimeError) as err:
        backend.open((640, 360), None, lambda _e: None)
    assert str(tmp_path / "uinput") in str(err.value) and "modprobe uinput" in str(err.value)


def test_a_uinput_device_the_user_cannot_write_is_named_with_the_udev_rule_and_group(tmp_path):
    # a character device owned by another user, looked at from a user namespace where root's
    # privileges do not reach it: exactly what a host user without the udev rule sees
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    device = tmp_path / "uinput"
    try:
        os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(10, 223))
        os.chown(device, 54321, 54321)
    except PermissionError as exc:
        pytest.skip(f"cannot create a character device here: {exc}")
    os.chmod(tmp_path, 0o755)
    code = f"from punktfunk_input.uinput import permission_problem; print(permission_problem({str(device)!r}))"
    run = subprocess.run(["unshare", "-r", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if run.returncode != 0 and "unshare" in run.stderr:
        pytest.skip(f"no user namespaces here: {run.stderr.strip()}")
    message = run.stdout
    assert f"{device} is not writable" in message
    assert 'KERNEL=="uinput"' in message and 'GROUP="input"' in message and "usermod -aG input" in message
    assert permission_problem(str(device)) == ""  # root itself may write it


def test_no_uinput_leaves_the_session_without_input_and_says_why(tmp_path, caplog):
    registry = load_plugin_manager().stages
    settings = config.InputSettings.of(config.validate(config.build_schema(), {"input": {
        "backend": "uinput", "backend_options": {"device": str(tmp_path / "none")}}})["input"])
    with caplog.at_level("WARNING", logger="punktfunk.input"):
        sink = open_input_sink(registry, settings, STREAM)
    assert sink.backend is None and "modprobe uinput" in caplog.text
    sink.close()


# ---- with a writable /dev/uinput ----------------------------------------------------------------


def read_events(device, want, timeout: float = 5.0) -> list[tuple[int, int, int]]:
    """(type, code, value) of an evdev device's non-SYN events, read until there
    are ``want`` of them (or ``want(events)`` holds). The kernel passes on only
    absolute values that changed, so a test names what it waits for."""
    from evdev import ecodes

    done = want if callable(want) else (lambda events: len(events) >= want)
    got: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        left = deadline - time.monotonic()
        assert left > 0, f"only read {got}"
        select.select([device.fd], [], [], left)
        try:
            for ev in device.read():
                if ev.type != ecodes.EV_SYN:
                    got.append((ev.type, ev.code, ev.value))
        except BlockingIOError:
            pass
    return got


@pytest.fixture
def uinput():
    if UINPUT_REASON:
        pytest.skip(f"uinput: {UINPUT_REASON}")
    rumbles: list[Rumble] = []
    backend = UInputBackend(STREAM, {"name": f"pf-test-{os.getpid()}"})
    backend.open((640, 360), ScreenArea(0, 0, 1280, 720), rumbles.append)
    backend.rumbles = rumbles
    yield backend
    backend.close()


def reader(backend, which: str):
    dev = backend._devices[which].device
    if dev is None:
        pytest.skip("the created device cannot be opened for reading (/dev/input permissions)")
    return dev


@needs_uinput
def test_keys_come_out_of_the_virtual_keyboard_as_linux_key_codes(uinput):
    from evdev import ecodes as e

    kb = reader(uinput, "keyboard")
    for ev in (Key(0x41, True), Key(0x41, False), Key(0xA1, True), Key(0x31, True), Key(0x31, False),
               Key(0xA1, False), Key(0xBF, True, 1), Key(0xBF, False)):
        uinput.inject(ev)
    assert read_events(kb, 10) == [
        (e.EV_KEY, e.KEY_A, 1), (e.EV_KEY, e.KEY_A, 0),
        (e.EV_KEY, e.KEY_RIGHTSHIFT, 1), (e.EV_KEY, e.KEY_1, 1), (e.EV_KEY, e.KEY_1, 0),
        (e.EV_KEY, e.KEY_RIGHTSHIFT, 0),
        # a Shift flag with no Shift held: pressed around the key
        (e.EV_KEY, e.KEY_LEFTSHIFT, 1), (e.EV_KEY, e.KEY_SLASH, 1), (e.EV_KEY, e.KEY_LEFTSHIFT, 0),
        (e.EV_KEY, e.KEY_SLASH, 0)]


@needs_uinput
def test_the_mouse_moves_clicks_and_scrolls_in_high_resolution(uinput):
    from evdev import ecodes as e

    mouse = reader(uinput, "mouse")
    uinput.inject(PointerMove(5, -7))
    uinput.inject(Button(MouseButton.X1, True))
    uinput.inject(Button(MouseButton.X1, False))
    uinput.inject(Scroll(60))
    uinput.inject(Scroll(60))
    uinput.inject(Scroll(-120, horizontal=True))
    assert read_events(mouse, 9) == [
        (e.EV_REL, e.REL_X, 5), (e.EV_REL, e.REL_Y, -7),
        (e.EV_KEY, e.BTN_SIDE, 1), (e.EV_KEY, e.BTN_SIDE, 0),
        (e.EV_REL, e.REL_WHEEL_HI_RES, 60),
        (e.EV_REL, e.REL_WHEEL_HI_RES, 60), (e.EV_REL, e.REL_WHEEL, 1),
        (e.EV_REL, e.REL_HWHEEL_HI_RES, -120), (e.EV_REL, e.REL_HWHEEL, -1)]


@needs_uinput
def test_absolute_positions_are_scaled_to_the_screen_area(uinput):
    from evdev import ecodes as e

    pointer = reader(uinput, "pointer")
    uinput.inject(PointerPosition(639, 359, 639, 359))
    uinput.inject(PointerPosition(320, 180, 639, 359))
    assert read_events(pointer, 4) == [(e.EV_ABS, e.ABS_X, 1279), (e.EV_ABS, e.ABS_Y, 719),
                                       (e.EV_ABS, e.ABS_X, 641), (e.EV_ABS, e.ABS_Y, 361)]


@needs_uinput
def test_touches_use_multitouch_slots_with_tracking_ids(uinput):
    from evdev import ecodes as e

    touch = reader(uinput, "touch")
    uinput.inject(Touch(11, TouchPhase.DOWN, 0.5, 0.5, 0.5))
    uinput.inject(Touch(12, TouchPhase.DOWN, 0.25, 0.75))
    uinput.inject(Touch(11, TouchPhase.UP))
    events = read_events(touch, lambda evs: (e.EV_ABS, e.ABS_MT_TRACKING_ID, -1) in evs)
    slots = [v for t, c, v in events if c == e.ABS_MT_SLOT]  # the kernel reports slot changes only
    ids = [v for t, c, v in events if c == e.ABS_MT_TRACKING_ID]
    assert ids == [11, 12, -1] and slots == [1, 0]
    assert (e.EV_ABS, e.ABS_MT_POSITION_X, 32768) in events
    assert (e.EV_KEY, e.BTN_TOUCH, 1) in events


@needs_uinput
def test_a_controller_becomes_an_xbox_360_pad_until_it_is_removed(uinput):
    from evdev import ecodes as e
    from evdev import list_devices

    uinput.inject(ControllerArrival(2))
    pad = uinput._pads[2].device.device
    if pad is None:
        pytest.skip("the created pad cannot be opened for reading (/dev/input permissions)")
    assert (pad.info.vendor, pad.info.product) == (0x045E, 0x028E)
    assert pad.name == "Microsoft X-Box 360 pad"
    absinfo = dict(pad.capabilities(absinfo=True)[e.EV_ABS])
    assert (absinfo[e.ABS_X].min, absinfo[e.ABS_X].max, absinfo[e.ABS_X].fuzz, absinfo[e.ABS_X].flat) == (
        -32768, 32767, 16, 128)
    assert (absinfo[e.ABS_RZ].min, absinfo[e.ABS_RZ].max) == (0, 255)
    uinput.inject(ControllerState(2, ControllerButton.A | ControllerButton.DPAD_LEFT, 200, 0, 1000, 32767, 0, -32768))
    events = read_events(pad, lambda evs: (e.EV_ABS, e.ABS_Z, 200) in evs)
    assert (e.EV_KEY, e.BTN_SOUTH, 1) in events and (e.EV_ABS, e.ABS_HAT0X, -1) in events
    assert (e.EV_ABS, e.ABS_X, 1000) in events and (e.EV_ABS, e.ABS_Y, -32768) in events  # up is negative
    assert (e.EV_ABS, e.ABS_Z, 200) in events and (e.EV_ABS, e.ABS_RY, 32767) in events
    path = pad.path
    uinput.inject(ControllerRemoval(2))
    deadline = time.monotonic() + 5
    while path in list_devices() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path not in list_devices()


@needs_uinput
def test_a_game_rumbling_the_pad_is_fed_back_with_both_motors(uinput):
    from evdev import InputDevice, ff
    from evdev import ecodes as e

    uinput.inject(ControllerState(0))  # a pad never announced is created on its first state
    path = uinput._pads[0].device.device
    if path is None:
        pytest.skip("the created pad cannot be opened for reading (/dev/input permissions)")
    game = InputDevice(path.path)
    effect = ff.Effect(e.FF_RUMBLE, -1, 0, ff.Trigger(0, 0), ff.Replay(200, 0),
                       ff.EffectType(ff_rumble_effect=ff.Rumble(strong_magnitude=0xC000, weak_magnitude=0x4000)))
    done = threading.Event()
    ids: list[int] = []
    threading.Thread(target=lambda: (ids.append(game.upload_effect(effect)), done.set()), daemon=True).start()
    assert done.wait(5), "the effect upload was not answered"
    game.write(e.EV_FF, ids[0], 1)
    deadline = time.monotonic() + 5
    while len(uinput.rumbles) < 2 and time.monotonic() < deadline:  # the play, then the end of its 200 ms
        time.sleep(0.02)
    assert uinput.rumbles[:2] == [Rumble(0, 0xC000, 0x4000), Rumble(0, 0, 0)]
    game.close()
