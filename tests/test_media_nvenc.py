"""NVENC encoder through PyNvVideoCodec. The GPU tests skip with the reason
``available()`` gives when PyNvVideoCodec or an NVENC-capable GPU is missing."""

from __future__ import annotations

import av
import pytest

from punktfunk_core.media.bitstream import is_keyframe
from punktfunk_core.media.nvenc import NvencEncoder, available
from punktfunk_core.media.stamp import read_stamp_from_av_frame
from punktfunk_core.media.testpattern import TestPattern
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.stages import StreamSpec

REASON = available()
needs_nvenc = pytest.mark.skipif(bool(REASON), reason=f"nvenc: {REASON}")


def test_availability_is_a_reason_or_empty_and_matches_the_registry():
    assert isinstance(REASON, str)
    pm = load_plugin_manager()
    assert pm.stages.get("encoder", "nvenc").available() == REASON
    if REASON:
        assert "PyNvVideoCodec" in REASON or "GPU" in REASON or "NVENC" in REASON
        with pytest.raises(RuntimeError, match="not available"):
            NvencEncoder(StreamSpec(1280, 720), {})


def test_options_are_checked_before_the_hardware():
    with pytest.raises(ValueError, match=r"unknown option.*known: "):
        NvencEncoder(StreamSpec(1280, 720), {"bogus": 1})
    with pytest.raises(ValueError, match="preset"):
        NvencEncoder(StreamSpec(1280, 720), {"preset": "P9"})


def _decoder(codec):
    return av.CodecContext.create({"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}[codec], "r")


@pytest.mark.gpu
@needs_nvenc
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_nvenc_1080p_testpattern_keyframe_on_request_and_exact_stamps(codec):
    if available(codec):
        pytest.skip(f"nvenc {codec}: {available(codec)}")
    spec = StreamSpec(1920, 1080, 60, codec, 8000, pixel_format="nv12")
    cap, enc = TestPattern(spec, {}), NvencEncoder(spec, {})
    assert enc.input_format == "nv12" and enc.backend == "nvenc" and enc.gpu
    expected = {}
    aus = []
    for i in range(1, 121):
        if i == 60:
            enc.request_keyframe()
        f = cap.grab(i)
        expected[i] = (f.frame_id, (f.capture_ns // 1000) & 0xFFFFFFFF)
        enc.submit(f)
        aus.extend(enc.receive())
    # one unit per frame, in order; the library may still hold its output delay
    n = len(aus)
    assert n >= 120 - max(enc.output_delay, 0) and n >= 100, (n, enc.output_delay)
    assert [au.frame_id for au in aus] == list(range(1, n + 1))
    keys = [au.frame_id for au in aus if au.keyframe]
    assert keys == [1, 60], keys
    assert all(is_keyframe(codec, au.data) == au.keyframe for au in aus)
    dec = _decoder(codec)
    decoded = []
    for au in aus:
        decoded.extend(dec.decode(av.Packet(au.data)))
    decoded.extend(dec.decode(None))
    assert [read_stamp_from_av_frame(fr) for fr in decoded] == [expected[i] for i in range(1, n + 1)]
    # a decoder joining at the requested IDR decodes from there on (SPS/PPS repeated)
    dec2 = _decoder(codec)
    late = []
    for au in aus[59:]:
        late.extend(dec2.decode(av.Packet(au.data)))
    late.extend(dec2.decode(None))
    assert [read_stamp_from_av_frame(fr)[0] for fr in late] == list(range(60, n + 1))
    print(f"nvenc {codec} on {enc.gpu}: output delay {enc.output_delay} frames")
    enc.close()


@pytest.mark.gpu
@needs_nvenc
def test_nvenc_bitrate_change_through_reconfigure():
    spec = StreamSpec(1920, 1080, 60, "h264", 20000, pixel_format="nv12")
    cap, enc = TestPattern(spec, {}), NvencEncoder(spec, {})
    sizes = {}
    fid = 0
    for kbps in (20000, 2000):
        enc.set_bitrate(kbps)
        got = []
        for _ in range(60):
            fid += 1
            enc.submit(cap.grab(fid))
            got.extend(enc.receive())
        sizes[kbps] = sum(len(au.data) for au in got[20:]) * 8 * 60 / max(1, len(got[20:])) / 1000
    assert enc.bitrate_kbps == 2000 and enc.reopened == 0  # Reconfigure, no new session
    assert sizes[2000] < 0.5 * sizes[20000], sizes
    enc.close()
