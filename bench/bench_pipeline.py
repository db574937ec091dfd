"""Pipeline vs GStreamer: the same raw clip, the same x264 settings, the same packet size, to a loopback UDP sink.

One raw I420 clip with motion (the test pattern, 60 fps) is written once per
resolution, as `.yuv` for GStreamer's rawvideoparse and as `.y4m` (the same
bytes with frame headers) for punktfunk's `file` capture. Both sides encode
with x264 ultrafast + zerolatency, 1 thread, CBR at the same bitrate, a
one-frame VBV, keyframe interval 120, no B-frames, and send ~1200-byte
payloads to a UDP socket on 127.0.0.1, with no rate limit.

- punktfunk, FEC + encryption on: file → x264 → native packetizer (20 % Reed–
  Solomon parity over GF(2^16), AES-128-GCM per datagram) → native sender (GSO).
- punktfunk, both off: file → x264 → chunk packetizer → native sender (GSO).
- GStreamer: `filesrc ! rawvideoparse ! x264enc ! rtph264pay ! udpsink`.

CPU is process CPU time (all threads). GStreamer's start-up is taken out by
running it twice (full clip and 30 frames) and using the difference, so both
sides are compared per frame in steady state.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import instructions

BITRATE = {720: 6000, 1080: 12000}
#: frame counts of the long and the short callgrind run (the difference is measured)
INSTR_FRAMES = (90, 30)
KEYINT = 120
PAYLOAD = 1200


def write_clip(dirpath: Path, w: int, h: int, frames: int) -> tuple[Path, Path]:
    from punktfunk_core.media.testpattern import TestPattern
    from punktfunk_core.stages import StreamSpec

    tp = TestPattern(StreamSpec(width=w, height=h, fps=60), {})
    yuv, y4m = dirpath / f"clip-{h}p.yuv", dirpath / f"clip-{h}p.y4m"
    with open(yuv, "wb") as fy, open(y4m, "wb") as f4:
        f4.write(f"YUV4MPEG2 W{w} H{h} F60:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(1, frames + 1):
            fr = tp.grab(i)
            data = b"".join(p.tobytes() for p in fr.planes)
            fy.write(data)
            f4.write(b"FRAME\n")
            f4.write(data)
    tp.close()
    return yuv, y4m


def _sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def gst_cmd(yuv: Path, w: int, h: int, frames: int, port: int) -> list[str]:
    frame_bytes = w * h * 3 // 2
    return ["gst-launch-1.0", "-q", "filesrc", f"location={yuv}", f"blocksize={frame_bytes}", f"num-buffers={frames}",
           "!",
           "rawvideoparse", f"width={w}", f"height={h}", "format=i420", "framerate=60/1", "!",
           *gst_x264_udp(h, port)]


def gst_x264_udp(h: int, port: int) -> list[str]:
    """The encode → packetize → send tail both GStreamer peers share (the settings punktfunk uses)."""
    return ["x264enc", "speed-preset=ultrafast", "tune=zerolatency", f"bitrate={BITRATE[h]}", "threads=1",
            f"key-int-max={KEYINT}", "bframes=0", "vbv-buf-capacity=17", "!",
            "rtph264pay", f"mtu={PAYLOAD + 12}", "config-interval=-1", "!",
            "udpsink", "host=127.0.0.1", f"port={port}", "sync=false", "async=false"]


def gst_run(yuv: Path, w: int, h: int, frames: int, port: int) -> tuple[float, float, str]:
    return run_command(gst_cmd(yuv, w, h, frames, port))


def run_command(cmd: list[str]) -> tuple[float, float, str]:
    """Run a peer to completion: (CPU seconds of the child, wall seconds, the command line)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-400:]}")
    return ru.ru_utime + ru.ru_stime, wall, " ".join(cmd)


def punktfunk_run(y4m: Path, w: int, h: int, frames: int, port: int, protected: bool) -> tuple[float, float]:
    from punktfunk_core.plugins import load_plugin_manager
    from punktfunk_core.stages import StreamSpec

    pm = load_plugin_manager()
    spec = StreamSpec(width=w, height=h, fps=60, bitrate_kbps=BITRATE[h], keyframe_interval=KEYINT)
    capture = pm.stages.create("capture", "file", spec, {"path": str(y4m), "stamp": False, "loop": False})
    return pipeline_run(pm, spec, capture, frames, port, protected, paced=False)


def pipeline_run(pm: Any, spec: Any, capture: Any, frames: int, port: int, protected: bool,
                 paced: bool) -> tuple[float, float]:
    """capture → x264 (the GStreamer peer's settings) → packetizer → native sender to ``port``:
    (process CPU seconds, wall seconds) of ``frames`` frames."""
    from punktfunk_core.gate import MeasurementGate
    from punktfunk_core.pipeline import Pipeline
    from punktfunk_core.session import Session

    from punktfunk_native.datapath import FecParams, NativePacketizer, NativeSender
    from punktfunk_native.layout import NATIVE_LAYOUT

    encoder = pm.stages.create("encoder", "x264", spec, {"preset": "ultrafast", "threads": 1, "vbv_frames": 1.0})
    if protected:
        packetizer = NativePacketizer(os.urandom(16), FecParams(fec_percent=20, max_shard=PAYLOAD))
    else:
        packetizer = pm.stages.create("packetizer", "chunk", spec, {"payload_size": PAYLOAD})
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = NativeSender(tx, ("127.0.0.1", port), spec.fps, gso=True, pace_percent=0)
    p = Pipeline(Session("bench", "-", spec), capture, encoder, packetizer, sender, NATIVE_LAYOUT,
                 MeasurementGate(perf=False), paced=paced, max_frames=frames, queue_depth=frames + 1)
    c0, t0 = time.process_time(), time.perf_counter()
    p.run()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if p.frames_sent != frames or p.session.error:
        raise RuntimeError(f"punktfunk sent {p.frames_sent}/{frames} frames: {p.session.error}")
    return cpu, wall


def gstreamer_missing(*elements: tuple[str, str]) -> str:
    """Why the GStreamer peer cannot run here ("" when it can)."""
    if not shutil.which("gst-launch-1.0"):
        return ("GStreamer is missing: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")
    for element, package in (("x264enc", "gstreamer1.0-plugins-ugly"), *elements):
        if subprocess.run(["gst-inspect-1.0", element], capture_output=True).returncode != 0:
            return f"GStreamer's {element} is missing: apt-get install {package}"
    return ""


class Comparison:
    """punktfunk variants against a GStreamer peer on the same input, paired.

    Each rep runs GStreamer (a full and a short run: the difference is its
    steady state per frame) and every punktfunk variant next to each other in
    time, alternating who goes first; ratios are medians of the per-rep
    ratios. ``names`` maps the variant keys to row names, ``targets`` gives
    punktfunk keys their ratio target (at most this much; keys without one are shown without)."""

    def __init__(self, names: dict[str, str], targets: dict[str, float]) -> None:
        self.names = {"gst": "GStreamer", **names}
        self.targets = targets
        self.rows: list[list[Any]] = []
        self.ratios: list[dict[str, Any]] = []
        self.instr_rows: list[list[Any]] = []
        self.raw_instr: dict[str, Any] = {}
        self.plot: dict[str, list[float]] = {k: [] for k in self.names}
        self.command = ""

    def measure(self, label: str, reps: int, frames: int, warm: int, gst_cmd_for: Callable[[int], list[str]],
                variants: dict[str, Callable[[], tuple[float, float]]]) -> None:
        per: dict[str, list[tuple[float, float]]] = {k: [] for k in self.names}
        ratios: dict[str, list[float]] = {k: [] for k in variants}

        def gst_side(out: dict[str, tuple[float, float]]) -> None:
            c_full, w_full, self.command = run_command(gst_cmd_for(frames))
            c_warm, w_warm, _ = run_command(gst_cmd_for(warm))
            out["gst"] = ((c_full - c_warm) / (frames - warm), (w_full - w_warm) / (frames - warm))

        def pf_side(out: dict[str, tuple[float, float]]) -> None:
            for key, fn in variants.items():
                cpu, wall = fn()
                out[key] = (cpu / frames, wall / frames)

        for rep in range(reps):  # interleaved: each rep compares runs made next to each other in time
            out: dict[str, tuple[float, float]] = {}
            # who goes first alternates, so a drift within a rep favours neither side
            for side in ((gst_side, pf_side) if rep % 2 == 0 else (pf_side, gst_side)):
                side(out)
            for key in per:
                per[key].append(out[key])
            for key in variants:
                ratios[key].append(out[key][0] / out["gst"][0])
        best = {k: (statistics.median(c for c, _ in v), statistics.median(x for _, x in v)) for k, v in per.items()}
        for key, name in self.names.items():
            cpu_f, wall_f = best[key]
            self.rows.append([label, name, cpu_f * 1e3, 1 / wall_f])
            self.plot[key].append(cpu_f * 1e3)
        spread = lambda rs: f"{min(rs):.2f}–{max(rs):.2f}" if len(rs) > 1 else "one run"  # noqa: E731
        for key, rs in ratios.items():
            self.ratios.append(self._ratio(f"{label} CPU/frame, {self.names[key]} / GStreamer (median of paired "
                                           f"runs; {spread(rs)})", statistics.median(rs), key))
        first = next(iter(variants))
        self.ratios.append({"name": f"{label} fps, {self.names[first]} / GStreamer",
                            "value": best["gst"][1] / best[first][1], "target": None, "ok": None})

    def count(self, label: str, frames: int, warm: int, cmds: dict[str, Callable[[int], list[str]]]) -> None:
        """Instructions per frame under callgrind for GStreamer and each variant (``cmds`` by key)."""
        ins = {key: instructions.per_frame(cmd_for, frames, warm) for key, cmd_for in cmds.items()}
        self.instr_rows += [[label, self.names[key], ins[key] / 1e6] for key in ins]
        self.raw_instr[label] = ins
        for key in ins:
            if key != "gst":
                self.ratios.append(self._ratio(f"{label} instructions/frame, {self.names[key]} / GStreamer "
                                               "(callgrind)", ins[key] / ins["gst"], key))

    def _ratio(self, name: str, value: float, key: str) -> dict[str, Any]:
        target = self.targets.get(key)
        return {"name": name, "value": value, "target": None if target is None else f"<= {target}",
                "ok": None if target is None else value <= target}

    def tables(self, frames: int, reps: int, instr_frames: tuple[int, int]) -> list[dict[str, Any]]:
        tables = [{"title": f"{frames} frames per run, median of {reps} interleaved runs (ratios: median of per-run "
                            "ratios)", "headers": ["resolution", "pipeline", "CPU ms / frame", "frames / s"],
                   "rows": self.rows}]
        if self.instr_rows:
            tables.append({"title": f"instructions per frame (callgrind, frames {instr_frames[1] + 1}–"
                                    f"{instr_frames[0]}; start-up subtracted)",
                           "headers": ["resolution", "pipeline", "M instructions / frame"], "rows": self.instr_rows})
        return tables

    def notes(self, quick: bool) -> list[str]:
        if self.instr_rows:
            return ["instruction counts repeat exactly for the same input, CPU seconds on this VM do not (see the "
                    "min–max of the paired runs); an interpreted instruction is slower than one of x264's, so the "
                    "time ratio can sit above the instruction ratio"]
        if not quick:
            return [f"valgrind is missing, so there are no instruction counts: {instructions.INSTALL}"]
        return ["--quick: one run per side and no instruction counts (the full run adds callgrind counts)"]


def run(quick: bool) -> dict[str, Any]:
    missing = gstreamer_missing()
    if missing:
        return {"not_run": missing}
    sizes = [(1280, 720)] if quick else [(1280, 720), (1920, 1080)]
    frames = 120 if quick else 600
    warm = 30
    reps = 1 if quick else 7
    tmp = Path(tempfile.mkdtemp(prefix="pf-clip-"))
    sink = _sink()
    port = sink.getsockname()[1]
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    cmp = Comparison({"off": "punktfunk, FEC+AEAD off", "on": "punktfunk, FEC+AEAD on"}, {"off": 1.0, "on": 1.15})

    def measure_size(w: int, h: int) -> None:
        """Times one size (then counts its instructions) on a clip written for it."""
        yuv, y4m = write_clip(tmp, w, h, frames)
        label = f"{w}×{h}"
        cmp.measure(label, reps, frames, warm, lambda k: gst_cmd(yuv, w, h, k, port), {
            "off": lambda: punktfunk_run(y4m, w, h, frames, port, False),
            "on": lambda: punktfunk_run(y4m, w, h, frames, port, True),
        })
        if not quick and instructions.available():
            n, wn = INSTR_FRAMES

            def child_cmd(mode: str) -> Callable[[int], list[str]]:
                return lambda k: instructions.python_cmd("bench.bench_pipeline", "child", y4m, w, h, k, mode)

            cmp.count(label, n, wn, {"gst": lambda k: gst_cmd(yuv, w, h, k, port),
                                     "off": child_cmd("off"), "on": child_cmd("on")})
        yuv.unlink()
        y4m.unlink()

    try:
        for w, h in sizes:
            measure_size(w, h)
    finally:
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "title": "Pipeline vs GStreamer (x264 ultrafast, loopback UDP)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "commands": [cmp.command.replace(str(tmp), "$CLIP_DIR")],
        "tables": cmp.tables(frames, reps, INSTR_FRAMES),
        "notes": cmp.notes(quick),
        "raw": {"instructions_per_frame": cmp.raw_instr},
        "ratios": cmp.ratios,
        "plot": {"kind": "bar", "title": "CPU per frame (lower is better)", "ylabel": "ms CPU / frame",
                 "labels": [f"{w}×{h}" for w, h in sizes],
                 "series": {"GStreamer": cmp.plot["gst"], "punktfunk off": cmp.plot["off"],
                            "punktfunk on": cmp.plot["on"]}},
    }


def _child(argv: list[str]) -> None:
    """``python -m bench.bench_pipeline child Y4M W H FRAMES on|off``: one punktfunk run
    to a local sink (what the callgrind counts run)."""
    y4m, w, h, frames, mode = argv
    sink = _sink()
    try:
        punktfunk_run(Path(y4m), int(w), int(h), int(frames), sink.getsockname()[1], mode == "on")
    finally:
        sink.close()


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 7 and sys.argv[1] == "child":
        _child(sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.bench_pipeline child Y4M W H FRAMES on|off")
