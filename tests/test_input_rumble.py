"""Rumble on punktfunk/1: the host's input backend → a ``feedback`` control message → the
reference client, which keeps and reports it (docs/protocol-native.md, "Input").

No builtin backend makes rumble here (uinput needs /dev/uinput, see
tests/test_input_uinput.py), so the host runs the test plugin's ``recording``
backend (tests/plugins/pf_input_recorder.py) with ``rumble_echo``: it answers a
controller state with ``Rumble(number, left trigger × 257, right trigger × 257)``
from the injecting thread, as a game rumbling with the triggers would.
"""

from __future__ import annotations

import os
from pathlib import Path

from test_native_e2e import run_client, start_host, summary_of
from test_native_input import native_counters, write_script

PLUGINS = Path(__file__).parent / "plugins"
RECORDER_ENV = {"PUNKTFUNK_PLUGINS": "pf_input_recorder",
                "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
RUMBLE_INPUT = '[input]\nbackend = "recording"\nbackend_options = { rumble_echo = true }\n'


def test_rumble_from_the_backend_reaches_the_reference_client(host_factory, tmp_path):
    h = start_host(host_factory, tmp_path, extra=RUMBLE_INPUT, env=RECORDER_ENV)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    # a pad arrives, the game is told both triggers are pressed, then let go
    script = write_script(tmp_path, [
        (0.3, ["ca", 0, 1, 0, 0]),
        (0.4, ["cs", 0, 0, 128, 255, 0, 0, 0, 0]),
        (0.6, ["cs", 0, 0, 0, 0, 0, 0, 0, 0]),
    ])
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "2", "--json", "--width", "320",
                              "--height", "180", "--bitrate", "2000", "--input-script", script))
    assert s["input_sent"] == 3, s
    assert s["feedback"] == [["r", 0, 128 * 257, 255 * 257], ["r", 0, 0, 0]], s
    assert s["feedback_received"] == 2
    assert native_counters(h)["feedback_sent"] == 2


def test_a_client_without_input_gets_no_feedback_fields(host_factory, tmp_path):
    h = start_host(host_factory, tmp_path, extra=RUMBLE_INPUT, env=RECORDER_ENV)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "1", "--json", "--width", "320",
                              "--height", "180", "--bitrate", "2000"))
    assert s["frames_decoded"] > 0 and "feedback" not in s and "feedback_received" not in s, s
    assert native_counters(h).get("feedback_sent", 0) == 0
