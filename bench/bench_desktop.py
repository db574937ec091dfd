"""Desktop capture vs GStreamer: the x11 source on a private Xvfb desktop with moving content.

For each resolution a private Xvfb display of exactly that size is started,
and a GStreamer window (``videotestsrc pattern=smpte horizontal-speed=8 !
ximagesink``, 60 fps) fills it with bars sliding sideways, so every captured
frame differs from the one before. Both sides capture that display at 30 fps
(paced, so each capture sees new content and neither sees more repeated
frames than the other), convert BGRx to I420, encode with x264 ultrafast +
zerolatency with the settings of the pipeline benchmark (1 thread, CBR at the
same bitrate, one-frame VBV, keyframe interval 120, no B-frames) and send
~1200-byte payloads to a UDP socket on 127.0.0.1:

- punktfunk: ``x11`` capture (mss, MIT-SHM) → RGB→I420 → x264 → chunk
  packetizer → native sender (GSO).
- GStreamer: ``ximagesrc use-damage=false show-pointer=false ! videoconvert !
  x264enc ! rtph264pay ! udpsink``.

CPU is the capturing process's CPU time (all threads); the X server's share
of the copy (both sides use MIT-SHM) and the content window are outside both.
GStreamer's start-up is taken out by running it twice (full and short) and
using the difference; runs of both sides alternate (bench_pipeline's
pairing), and the full run adds callgrind instruction counts.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from typing import Any

from bench import instructions
from bench.bench_pipeline import BITRATE, KEYINT, Comparison, gst_x264_udp, gstreamer_missing, pipeline_run
from bench.xvfb import start_xvfb

FPS = 30
#: frame counts of the long and the short callgrind run (the difference is measured)
INSTR_FRAMES = (40, 15)
CONTENT = "videotestsrc pattern=smpte horizontal-speed=8 is-live=true"


class Desktop:
    """A private Xvfb display of ``w``×``h`` with a window of moving content on it (unless not ``content``)."""

    def __init__(self, w: int, h: int, content: bool = True) -> None:
        self.w, self.h = w, h
        self.content = content  # False: a still desktop (the input benchmark watches the pointer on it)
        self.display = ""
        self.xvfb_pid = 0
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> Desktop:
        xvfb, self.display = start_xvfb(self.w, self.h, "-noreset", timeout=15)
        self._procs.append(xvfb)
        self.xvfb_pid = xvfb.pid
        if not self.content:
            return self
        content = subprocess.Popen(
            ["gst-launch-1.0", "-q", *CONTENT.split(),
             "!", f"video/x-raw,width={self.w},height={self.h},framerate=60/1",
             "!", "videoconvert", "!", "ximagesink", f"display={self.display}", "sync=true"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._procs.append(content)
        time.sleep(1.5)  # the window is mapped and drawing
        if content.poll() is not None:
            err = content.stderr.read().decode()[-300:] if content.stderr else ""
            self.__exit__()
            raise RuntimeError(f"the content window did not start: {err}")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()


def gst_cmd(display: str, h: int, frames: int, port: int) -> list[str]:
    return ["gst-launch-1.0", "-q", "ximagesrc", f"display-name={display}", "use-damage=false", "show-pointer=false",
            f"num-buffers={frames}", "!", f"video/x-raw,framerate={FPS}/1", "!", "videoconvert", "!",
            "video/x-raw,format=I420", "!", *gst_x264_udp(h, port)]


def punktfunk_run(display: str, w: int, h: int, frames: int, port: int, converter: str = "auto") -> tuple[float, float]:
    from punktfunk_core.plugins import load_plugin_manager
    from punktfunk_core.stages import StreamSpec

    pm = load_plugin_manager()
    spec = StreamSpec(width=w, height=h, fps=FPS, bitrate_kbps=BITRATE[h], keyframe_interval=KEYINT)
    capture = pm.stages.create("capture", "x11", spec, {"display": display, "converter": converter})
    return pipeline_run(pm, spec, capture, frames, port, protected=False, paced=True)


def run(quick: bool) -> dict[str, Any]:
    missing = gstreamer_missing(("ximagesrc", "gstreamer1.0-plugins-good"), ("ximagesink", "gstreamer1.0-x"))
    if missing:
        return {"not_run": missing}
    if shutil.which("Xvfb") is None:
        return {"not_run": "Xvfb is missing: apt-get install xvfb"}
    from punktfunk_core.media.x11 import available

    reason = available(":0")  # any display name: the check is then only that mss is installed
    if reason:
        return {"not_run": f"x11 capture: {reason}"}
    sizes = [(1280, 720)] if quick else [(1280, 720), (1920, 1080)]
    frames = 60 if quick else 240
    warm = 20
    reps = 1 if quick else 5
    load = os.getloadavg()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    port = sink.getsockname()[1]
    from punktfunk_core.media import libyuv

    # the default converter (libyuv where installed) against GStreamer, and swscale beside it
    converters = {"pf": "auto", "sws": "swscale"} if libyuv.converter() is not None else {"pf": "swscale"}
    names = {"pf": f"punktfunk x11, {'libyuv' if 'sws' in converters else 'swscale'}",
             "sws": "punktfunk x11, swscale"}
    cmp = Comparison({k: names[k] for k in converters}, {"pf": 1.0})

    def measure_size(w: int, h: int) -> str:
        """Times one size (then counts its instructions); returns the GStreamer command measured."""
        label = f"{w}×{h}"
        with Desktop(w, h) as desk:
            cmp.measure(label, reps, frames, warm, lambda k: gst_cmd(desk.display, h, k, port),
                        {key: functools.partial(punktfunk_run, desk.display, w, h, frames, port, conv)
                         for key, conv in converters.items()})
            if not quick and instructions.available():
                n, wn = INSTR_FRAMES
                # the default converter only: callgrind runs ~50x slower, and a third count would
                # not fit the benchmark's time on 2 cores
                cmp.count(label, n, wn, {
                    "gst": lambda k: gst_cmd(desk.display, h, k, port),
                    "pf": lambda k: instructions.python_cmd("bench.bench_desktop", "child", desk.display, w, h,
                                                            k, port, converters["pf"]),
                })
            return cmp.command.replace(desk.display, "$DISPLAY")

    command = ""
    try:
        for w, h in sizes:
            command = measure_size(w, h)
    finally:
        sink.close()
    notes = [f"load average when the run started: {load[0]:.2f} on {os.cpu_count()} CPUs (the content window "
             "draws 60 fps on the same cores during every run, for both sides)", *cmp.notes(quick)]
    return {
        "title": "Desktop capture vs GStreamer (x11, x264 ultrafast, loopback UDP)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "commands": [f"gst-launch-1.0 {CONTENT} ! video/x-raw,width=W,height=H,framerate=60/1 ! videoconvert ! "
                     "ximagesink display=$DISPLAY sync=true   # the moving content", command],
        "tables": cmp.tables(frames, reps, INSTR_FRAMES),
        "notes": notes,
        "raw": {"instructions_per_frame": cmp.raw_instr, "load_average": load},
        "ratios": cmp.ratios,
        "plot": {"kind": "bar", "title": "desktop capture → x264 → UDP, CPU per frame (lower is better)",
                 "ylabel": "ms CPU / frame", "labels": [f"{w}×{h}" for w, h in sizes],
                 "series": {"GStreamer": cmp.plot["gst"], **{names[k]: cmp.plot[k] for k in converters}}},
    }


def _child(argv: list[str]) -> None:
    """``python -m bench.bench_desktop child DISPLAY W H FRAMES PORT CONVERTER``: one punktfunk run
    (what the callgrind counts run)."""
    display, w, h, frames, port, converter = argv
    punktfunk_run(display, int(w), int(h), int(frames), int(port), converter)


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 8 and sys.argv[1] == "child":
        _child(sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.bench_desktop child DISPLAY W H FRAMES PORT auto|swscale")
