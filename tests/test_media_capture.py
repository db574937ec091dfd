"""Capture sources that read real input: ``file`` (PyAV) and ``x11`` (mss)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from x11_helpers import private_xvfb

from punktfunk_core.media.filecap import FileCapture
from punktfunk_core.media.stamp import read_stamp
from punktfunk_core.media.x11 import X11Capture, available
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.stages import ScreenArea, StreamSpec

LEVELS = [40, 60, 80, 100, 120, 140, 160, 180, 200, 220]  # luma of each frame in the file


def write_clip(path: Path, w: int = 320, h: int = 240, n: int = 10) -> Path:
    """A short H.264 MP4 whose frame i is a flat grey of LEVELS[i]."""
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "ultrafast", "qp": "0"}
        for i in range(n):
            buf = np.full((h * 3 // 2, w), 128, np.uint8)
            buf[:h] = LEVELS[i]
            vf = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            vf.pts = i
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def level(frame) -> int:
    return int(round(float(frame.planes[0][frame.height // 2 :].mean())))


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


@pytest.mark.parametrize("fmt", ["i420", "nv12"])
def test_file_capture_scales_converts_stamps_and_loops(clip, fmt):
    w, h = 160, 120
    cap = FileCapture(StreamSpec(w, h), {"path": str(clip), "pixel_format": fmt})
    frames = []
    for i in range(1, 26):
        f = cap.grab(i)
        assert f.format == fmt and not f.is_repeat
        assert f.planes[0].shape == (h, w)
        assert f.planes[1].shape == ((h // 2, w // 2) if fmt == "i420" else (h // 2, w))
        assert read_stamp(f.planes[0]) == (i, (f.capture_ns // 1000) & 0xFFFFFFFF)
        frames.append(level(f))
    # the file's pictures in order, then again from the start
    expected = [LEVELS[i % 10] for i in range(25)]
    assert all(abs(a - b) <= 2 for a, b in zip(frames, expected, strict=True)), frames
    assert cap.loops == 2
    cap.close()


def test_file_capture_without_loop_repeats_the_last_picture(clip):
    cap = FileCapture(StreamSpec(160, 120), {"path": str(clip), "loop": False, "stamp": False})
    got = [cap.grab(i) for i in range(1, 14)]
    assert [f.is_repeat for f in got] == [False] * 10 + [True] * 3
    assert abs(level(got[-1]) - LEVELS[-1]) <= 2
    assert read_stamp(got[-1].planes[0]) is None  # stamp off
    cap.close()


def test_file_capture_rejects_missing_and_garbage_files_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot open"):
        FileCapture(StreamSpec(160, 120), {"path": str(tmp_path / "nope.mp4")})
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(ValueError, match="junk.mp4"):
        FileCapture(StreamSpec(160, 120), {"path": str(junk)})
    with pytest.raises(ValueError, match="path"):
        FileCapture(StreamSpec(160, 120), {})
    with pytest.raises(ValueError, match="known: "):
        FileCapture(StreamSpec(160, 120), {"path": "x", "speed": 3})


def test_file_capture_survives_a_truncated_file(tmp_path):
    # a raw H.264 stream cut mid-picture and with garbage appended: decodable
    # pictures come out, bad data is counted, grab never raises
    src = write_clip(tmp_path / "c.mp4", n=10)
    es = tmp_path / "c.h264"
    with av.open(str(src)) as inp, open(es, "wb") as out:
        inp_stream = inp.streams.video[0]
        bsf = av.BitStreamFilterContext("h264_mp4toannexb", inp_stream)
        for pkt in inp.demux(inp_stream):
            for p in bsf.filter(pkt):
                out.write(bytes(p))
    data = es.read_bytes()
    cut = tmp_path / "cut.h264"
    cut.write_bytes(data[: len(data) * 2 // 3] + b"\x00\x00\x01\x65" + bytes(range(256)) * 20)
    cap = FileCapture(StreamSpec(160, 120), {"path": str(cut)})
    frames = [cap.grab(i) for i in range(1, 31)]
    assert sum(not f.is_repeat for f in frames) == 30
    assert cap.loops >= 2
    assert abs(level(cap.grab(31)) - level(cap.grab(32))) > 5  # still moving on
    cap.close()


def test_file_capture_counts_and_skips_pictures_that_fail_to_decode(tmp_path):
    w, h = 320, 240
    path = tmp_path / "m.mkv"
    with av.open(str(path), "w") as out:
        st = out.add_stream("mjpeg", rate=30)
        st.width, st.height, st.pix_fmt = w, h, "yuvj420p"
        for i in range(10):
            buf = np.full((h * 3 // 2, w), 128, np.uint8)
            buf[:h] = LEVELS[i]
            vf = av.VideoFrame.from_ndarray(buf, format="yuv420p").reformat(format="yuvj420p")
            vf.pts = i
            for pkt in st.encode(vf):
                out.mux(pkt)
    data = bytearray(path.read_bytes())
    soi = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(soi) == 10
    for k in (3, 6):  # pictures 3 and 6: a run of broken SOF markers instead of the JPEG
        data[soi[k] + 2 : soi[k] + 1500] = b"\xff\xc0\x00\x05\x08" * 299 + b"\xff\xc0\x00"
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    cap = FileCapture(StreamSpec(160, 120), {"path": str(bad), "stamp": False})
    frames = [cap.grab(i) for i in range(1, 17)]
    assert cap.decode_errors >= 2 and not any(f.is_repeat for f in frames)
    # (planes are reused buffers: look at each picture right after its grab)
    levels = [level(cap.grab(i)) for i in range(17, 37)]
    assert len(set(levels)) == 8  # the two broken pictures never show
    cap.close()


def write_y4m(path: Path, w: int, h: int, pictures: list[np.ndarray], colour: str = "C420jpeg") -> Path:
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F60:1 Ip A1:1 {colour}\n".encode())
        for p in pictures:
            f.write(b"FRAME\n")
            f.write(p.tobytes())
    return path


def random_pictures(w: int, h: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8) for _ in range(n)]


def test_y4m_of_the_stream_size_is_read_straight_into_the_buffers_and_matches_pyav(tmp_path):
    w, h = 64, 48
    pics = random_pictures(w, h, 4)
    path = write_y4m(tmp_path / "c.y4m", w, h, pics)
    cap = FileCapture(StreamSpec(w, h), {"path": str(path), "stamp": False})
    assert cap._y4m is not None  # the fast path, no decoder
    with av.open(str(path)) as c:  # what the PyAV path would have produced
        ref = [vf.to_ndarray(format="yuv420p") for vf in c.decode(video=0)]
    assert all(np.array_equal(r, p) for r, p in zip(ref, pics, strict=True))
    for i in range(1, 10):  # loops back to the first picture
        f = cap.grab(i)
        got = np.concatenate([f.planes[0].ravel(), f.planes[1].ravel(), f.planes[2].ravel()])
        assert np.array_equal(got, pics[(i - 1) % 4].ravel()), i
        assert not f.is_repeat
    assert cap.loops == 2
    cap.close()


def test_y4m_end_truncation_and_a_damaged_marker(tmp_path):
    w, h = 64, 48
    pics = random_pictures(w, h, 3)
    path = write_y4m(tmp_path / "c.y4m", w, h, pics)
    data = path.read_bytes()
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(data[:-100])  # the last picture is incomplete
    cap = FileCapture(StreamSpec(w, h), {"path": str(cut), "loop": False, "stamp": False})
    got = [cap.grab(i) for i in range(1, 6)]
    assert [f.is_repeat for f in got] == [False, False, True, True, True]
    assert np.array_equal(got[-1].planes[0], pics[1][:h])  # the last whole picture repeats
    cap.close()
    w = 96  # wide enough for the frame stamp
    data = write_y4m(tmp_path / "s.y4m", w, h, random_pictures(w, h, 3)).read_bytes()
    second = data.index(b"FRAME", data.index(b"FRAME") + 5)
    bad = tmp_path / "bad.y4m"
    bad.write_bytes(data[:second] + b"XRAME" + data[second + 5:])
    cap = FileCapture(StreamSpec(w, h), {"path": str(bad), "stamp": True})
    frames = [cap.grab(i) for i in range(1, 8)]  # picture 1, then back to the start each time
    assert cap.decode_errors >= 3 and not any(f.is_repeat for f in frames)
    assert read_stamp(frames[-1].planes[0]) == (7, (frames[-1].capture_ns // 1000) & 0xFFFFFFFF)
    cap.close()


@pytest.mark.parametrize("case", ["other size", "nv12 wanted", "4:4:4"])
def test_y4m_that_needs_scaling_or_conversion_goes_through_pyav(tmp_path, case):
    w, h = 64, 48
    if case == "4:4:4":
        rng = np.random.default_rng(1)
        path = tmp_path / "c444.y4m"
        with open(path, "wb") as f:
            f.write(f"YUV4MPEG2 W{w} H{h} F60:1 Ip C444\n".encode())
            for _ in range(2):
                f.write(b"FRAME\n" + rng.integers(0, 256, w * h * 3, dtype=np.uint8).tobytes())
    else:
        path = write_y4m(tmp_path / "c.y4m", w, h, random_pictures(w, h, 2))
    spec = StreamSpec(32, 24) if case == "other size" else StreamSpec(w, h)
    fmt = "nv12" if case == "nv12 wanted" else "i420"
    cap = FileCapture(spec, {"path": str(path), "stamp": False, "pixel_format": fmt})
    assert cap._y4m is None
    f = cap.grab(1)
    assert f.format == fmt and f.planes[0].shape == (spec.height, spec.width)
    cap.close()


def test_file_capture_is_registered(clip):
    pm = load_plugin_manager()
    cap = pm.stages.create("capture", "file", StreamSpec(160, 120), {"path": str(clip)})
    assert cap.grab(1).width == 160
    cap.close()


def test_x11_availability_is_explained():
    reason = available()
    pm = load_plugin_manager()
    assert pm.stages.get("capture", "x11").available() == reason
    if reason:
        assert "mss" in reason or "DISPLAY" in reason
        with pytest.raises(RuntimeError, match="not available"):
            X11Capture(StreamSpec(320, 180), {})
    with pytest.raises(ValueError, match="known: "):
        X11Capture(StreamSpec(320, 180), {"bogus": 1})


@pytest.fixture
def x_display(monkeypatch):
    """A display to capture: the session's own, or a private Xvfb (Debian's xvfb package)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    # -retro: the classic root weave, so a capture has detail to compare
    with private_xvfb(640, 360, "-retro") as x:
        monkeypatch.setenv("DISPLAY", x.name)
        yield x.name


def test_x11_capture_grabs_the_screen(x_display):
    reason = available()
    if reason:
        pytest.skip(f"x11 capture: {reason}")
    cap = X11Capture(StreamSpec(320, 180), {})
    f1, f2 = cap.grab(1), cap.grab(2)
    assert f1.planes[0].shape == (180, 320) and f1.planes[0].dtype == np.uint8
    assert f2.capture_ns > f1.capture_ns and f2.frame_id == 2
    cap.close()


def test_x11_capture_says_which_part_of_the_desktop_it_shows():
    with private_xvfb(800, 600) as x:
        reason = available(x.name)
        if reason:
            pytest.skip(f"x11 capture: {reason}")
        cap = X11Capture(StreamSpec(320, 180), {"display": x.name})
        assert cap.screen_area == ScreenArea(0, 0, 800, 600)  # where the stream's pointer positions land
        cap.close()


NO_LIBYUV = "libyuv is not installed (Debian/Ubuntu: apt-get install libyuv0): x11 capture uses swscale"


def _gradient(w: int, h: int) -> np.ndarray:
    """BGRA with smooth ramps in every channel (no detail finer than the chroma grid)."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.dstack([x, y, (x + y) / 2, np.full((h, w), 255.0)]).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["i420", "nv12"])
def test_libyuv_converts_bgra_like_swscale(fmt):
    from punktfunk_core.media import libyuv
    from punktfunk_core.media.yuv import AV_FORMAT, alloc_planes, copy_av_frame

    conv = libyuv.converter()
    if conv is None:
        pytest.skip(NO_LIBYUV)
    w, h = 160, 90
    img = _gradient(w, h)
    ours, ref = alloc_planes(w, h, fmt)[1], alloc_planes(w, h, fmt)[1]
    conv.convert(img, fmt, ours)
    copy_av_frame(av.VideoFrame.from_numpy_buffer(img, format="bgra").reformat(format=AV_FORMAT[fmt]), ref)
    for a, b in zip(ours, ref, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # BT.601 limited range, as swscale's default: white, black and pure red
    for bgr, yuv in (((255, 255, 255), (235, 128, 128)), ((0, 0, 0), (16, 128, 128)), ((0, 0, 255), (82, 90, 240))):
        px = np.zeros((2, 2, 4), np.uint8)
        px[..., :3] = bgr
        planes = alloc_planes(2, 2, "i420")[1]
        conv.convert(px, "i420", planes)
        assert all(abs(int(p[0, 0]) - want) <= 1 for p, want in zip(planes, yuv, strict=True)), \
            (bgr, [p[0, 0] for p in planes])
    with pytest.raises(ValueError):
        conv.convert(img, fmt, alloc_planes(w + 2, h, fmt)[1])


def test_x11_capture_converts_with_libyuv_when_it_can(x_display):
    reason = available()
    if reason:
        pytest.skip(f"x11 capture: {reason}")
    from punktfunk_core.media import libyuv

    probe = X11Capture(StreamSpec(320, 180), {"converter": "swscale"})
    w, h = probe.monitor["width"] // 2 * 2, probe.monitor["height"] // 2 * 2  # the display's own size
    probe.close()
    full = StreamSpec(w, h)
    with pytest.raises(ValueError, match="converter"):
        X11Capture(full, {"converter": "opencv"})
    slow = X11Capture(full, {"converter": "swscale"})
    assert slow.converter == "swscale"
    scaled = X11Capture(StreamSpec(w // 2 // 2 * 2, h // 2 // 2 * 2), {})
    assert scaled.converter == "swscale"  # libyuv does not scale
    scaled.close()
    if libyuv.converter() is None:
        with pytest.raises(RuntimeError, match="libyuv0"):
            X11Capture(full, {"converter": "libyuv"})
        slow.close()
        pytest.skip(NO_LIBYUV)
    with pytest.raises(ValueError, match="does not scale"):
        X11Capture(StreamSpec(w // 2 // 2 * 2, h // 2 // 2 * 2), {"converter": "libyuv"})
    fast = X11Capture(full, {})
    assert fast.converter == "libyuv" or (w, h) != (probe.monitor["width"], probe.monitor["height"])
    b0 = slow.grab(1).planes[0].copy()
    a, b = fast.grab(1), slow.grab(2)
    fast.close()
    slow.close()
    assert a.planes[0].shape == (h, w)
    if not np.array_equal(b0, b.planes[0]):
        pytest.skip("the display changed between two grabs, so the converters cannot be compared on it")
    # the same screen: luma is per pixel in both converters, so equal within rounding
    assert np.abs(a.planes[0].astype(int) - b.planes[0].astype(int)).max() <= 1
    if not a.planes[0].std():
        pytest.skip("this display shows a flat picture, so the luma comparison proved little")


def _pointer_to(display: str, x: int, y: int) -> Any:
    """Move the pointer as a device would (XTest) and return the cursor image XFixes reports."""
    from Xlib import X
    from Xlib import display as xdisplay
    from Xlib.ext import xtest

    d = xdisplay.Display(display)
    try:
        d.xfixes_query_version()
        xtest.fake_input(d, X.MotionNotify, x=x, y=y)
        d.sync()
        return d.xfixes_get_cursor_image(d.screen().root)
    finally:
        d.close()


def _cursor_luma(img: Any) -> tuple[np.ndarray, np.ndarray]:
    """The cursor's opaque pixels and the luma BT.601 gives them (premultiplied = straight when opaque)."""
    argb = np.asarray(img.cursor_image, dtype=np.uint32)[:img.width * img.height].reshape(img.height, img.width)
    a, r, g, b = ((argb >> s) & 0xFF for s in (24, 16, 8, 0))
    luma = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    return a == 255, luma


def test_x11_capture_draws_the_pointer_where_it_is_and_not_when_turned_off(x_display):
    reason = available()
    if reason:
        pytest.skip(f"x11 capture: {reason}")
    pytest.importorskip("Xlib", reason="python-xlib is not installed (pip install 'punktfunk[x11]')")
    probe = X11Capture(StreamSpec(320, 180), {"cursor": False})
    w, h = probe.monitor["width"] // 2 * 2, probe.monitor["height"] // 2 * 2
    probe.close()
    with_cursor = X11Capture(StreamSpec(w, h), {})
    without = X11Capture(StreamSpec(w, h), {"cursor": False})
    try:
        assert with_cursor.cursor == "xfixes" and without.cursor == "off"
        for px, py in ((200, 120), (70, 260)):
            img = _pointer_to(x_display, px, py)
            opaque, want = _cursor_luma(img)
            assert opaque.sum() >= 20, "the display's cursor has too few opaque pixels to look for"
            left, top = px - img.xhot, py - img.yhot
            on = with_cursor.grab(1).planes[0][top:top + img.height, left:left + img.width].astype(int)
            off = without.grab(1).planes[0][top:top + img.height, left:left + img.width].astype(int)
            # where the cursor is opaque the picture shows the cursor, not the screen
            assert np.abs(on[opaque] - want[opaque]).max() <= 2
            # the same spot without the option: the screen, which differs wherever the cursor
            # differs from it (Xvfb draws a two-coloured cursor; the root is one colour here)
            differs = np.abs(off[opaque] - want[opaque]) > 8
            assert differs.sum() >= 10
            # beside the cursor's rectangle both pictures are the same screen
            assert np.array_equal(with_cursor.grab(2).planes[0][:, :max(left - 2, 0)],
                                  without.grab(2).planes[0][:, :max(left - 2, 0)])
        assert with_cursor._cursor is not None and with_cursor._cursor.fetches == 1  # one shape, fetched once
    finally:
        with_cursor.close()
        without.close()
