"""The test pattern's pointer marker and click-to-photon without an X server.

The ``testpattern`` capture draws a white square where the session's pointing
input put the pointer (docs/input.md, "Click-to-photon"); the reference
client's probe finds it in the decoded picture although the pattern moves.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_native_e2e import run_client, start_host, summary_of

from punktfunk_core.inputevents import PointerMove, PointerPosition, ScreenPointer
from punktfunk_core.media.testpattern import MARKER, MARKER_LUMA, TestPattern
from punktfunk_core.stages import StreamSpec


def square(plane: np.ndarray, x: int, y: int, half: int) -> np.ndarray:
    return plane[y - half:y + half, max(0, x - half):x + half]


@pytest.mark.parametrize("pixel_format", ["i420", "nv12"])
def test_the_marker_is_drawn_where_the_pointer_is_and_only_once_there_is_one(pixel_format):
    pattern = TestPattern(StreamSpec(320, 180, pixel_format=pixel_format), {})
    pointer = ScreenPointer(320, 180)
    pattern.follow_pointer(pointer)
    assert not (square(pattern.grab(1).planes[0], 100, 60, 8) == MARKER_LUMA).all()  # no pointer yet: no marker
    pointer.follow(PointerPosition(100, 60, 319, 179))
    frame = pattern.grab(2)
    assert (square(frame.planes[0], 100, 60, MARKER // 2 - 1) == MARKER_LUMA).all()
    if pixel_format == "i420":  # white, not tinted: neutral chroma under it
        assert (square(frame.planes[1], 50, 30, 4) == 128).all() and (square(frame.planes[2], 50, 30, 4) == 128).all()
    else:
        assert (frame.planes[1][26:34, 92:108] == 128).all()
    pointer.follow(PointerMove(-1000, 0))  # to the left edge: clipped, still there
    luma = pattern.grab(3).planes[0]
    assert (square(luma, 0, 60, 8) == MARKER_LUMA).all()
    assert not (square(luma, 100, 60, 8) == MARKER_LUMA).all()  # and gone from where it was


def photon_run(host_factory, tmp_path, input_section: str) -> dict:
    h = start_host(host_factory, tmp_path, extra=input_section)
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    return summary_of(run_client(h, tmp_path, "--pin", "4821", "--seconds", "4", "--json", "--width", "640",
                                 "--height", "360", "--fps", "30", "--bitrate", "4000", "--click-to-photon"))


def test_click_to_photon_on_the_moving_test_pattern_without_x(host_factory, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    s = photon_run(host_factory, tmp_path, '[input]\nbackend = "none"\n')  # no X, nothing injects
    assert s["click_to_photon_samples"] >= 5, s
    assert 0 < s["click_to_photon_p50_ms"] <= s["click_to_photon_p99_ms"] < 1000, s  # far below the 1 s give-up
    assert s["click_to_photon_missed"] <= 1, s


def test_the_moving_pattern_alone_is_never_taken_for_the_pointer(host_factory, tmp_path, monkeypatch):
    """With the mouse switched off the session's pointer never moves and no marker is drawn:
    every move is missed, although the pattern under the probe points changes every frame."""
    monkeypatch.delenv("DISPLAY", raising=False)
    s = photon_run(host_factory, tmp_path, '[input]\nbackend = "none"\nmouse = false\n')
    assert s["click_to_photon_samples"] == 0 and s["click_to_photon_missed"] >= 2, s
