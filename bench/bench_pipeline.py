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
import statistics
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import instructions

BITRATE = {720: 6000, 1080: 12000}
#: frame counts of the long and the short callgrind run (the difference is measured)
INSTR_FRAMES = (90, 30)
NAMES = (("gst", "GStreamer"), ("off", "punktfunk, FEC+AEAD off"), ("on", "punktfunk, FEC+AEAD on"))
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
    return ["gst-launch-1.0", "-q", "filesrc", f"location={yuv}", f"blocksize={frame_bytes}", f"num-buffers={frames}", "!",
           "rawvideoparse", f"width={w}", f"height={h}", "format=i420", "framerate=60/1", "!",
           "x264enc", "speed-preset=ultrafast", "tune=zerolatency", f"bitrate={BITRATE[h]}", "threads=1",
           f"key-int-max={KEYINT}", "bframes=0", "vbv-buf-capacity=17", "!",
           "rtph264pay", f"mtu={PAYLOAD + 12}", "config-interval=-1", "!",
           "udpsink", "host=127.0.0.1", f"port={port}", "sync=false", "async=false"]


def gst_run(yuv: Path, w: int, h: int, frames: int, port: int) -> tuple[float, float, str]:
    cmd = gst_cmd(yuv, w, h, frames, port)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"gst-launch failed: {proc.stderr.read().decode()[-400:]}")
    return ru.ru_utime + ru.ru_stime, wall, " ".join(cmd)


def punktfunk_run(y4m: Path, w: int, h: int, frames: int, port: int, protected: bool) -> tuple[float, float]:
    from punktfunk_core.gate import MeasurementGate
    from punktfunk_core.pipeline import Pipeline
    from punktfunk_core.plugins import load_plugin_manager
    from punktfunk_core.session import Session
    from punktfunk_core.stages import StreamSpec
    from punktfunk_core.window import NATIVE_LAYOUT
    from punktfunk_native.datapath import FecParams, NativePacketizer, NativeSender

    pm = load_plugin_manager()
    spec = StreamSpec(width=w, height=h, fps=60, bitrate_kbps=BITRATE[h], keyframe_interval=KEYINT)
    capture = pm.stages.create("capture", "file", spec, {"path": str(y4m), "stamp": False, "loop": False})
    encoder = pm.stages.create("encoder", "x264", spec, {"preset": "ultrafast", "threads": 1, "vbv_frames": 1.0})
    if protected:
        packetizer = NativePacketizer(os.urandom(16), FecParams(fec_percent=20, max_shard=PAYLOAD))
    else:
        packetizer = pm.stages.create("packetizer", "chunk", spec, {"payload_size": PAYLOAD})
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = NativeSender(tx, ("127.0.0.1", port), 60, gso=True, pace_percent=0)
    p = Pipeline(Session("bench", "-", spec), capture, encoder, packetizer, sender, NATIVE_LAYOUT,
                 MeasurementGate(perf=False), paced=False, max_frames=frames, queue_depth=frames + 1)
    c0, t0 = time.process_time(), time.perf_counter()
    p.run()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if p.frames_sent != frames or p.session.error:
        raise RuntimeError(f"punktfunk sent {p.frames_sent}/{frames} frames: {p.session.error}")
    return cpu, wall


def run(quick: bool) -> dict[str, Any]:
    if not shutil.which("gst-launch-1.0"):
        return {"not_run": "GStreamer is missing: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base "
                           "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"}
    check = subprocess.run(["gst-inspect-1.0", "x264enc"], capture_output=True)
    if check.returncode != 0:
        return {"not_run": "GStreamer's x264enc is missing: apt-get install gstreamer1.0-plugins-ugly"}
    sizes = [(1280, 720)] if quick else [(1280, 720), (1920, 1080)]
    frames = 120 if quick else 600
    warm = 30
    reps = 1 if quick else 7
    tmp = Path(tempfile.mkdtemp(prefix="pf-clip-"))
    sink = _sink()
    port = sink.getsockname()[1]
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    rows, ratios, plot = [], [], {"gst": [], "off": [], "on": []}
    instr_rows: list[list[Any]] = []
    raw_instr: dict[str, Any] = {}
    use_callgrind = not quick and instructions.available()
    command = ""
    try:
        for w, h in sizes:
            yuv, y4m = write_clip(tmp, w, h, frames)
            per: dict[str, list[tuple[float, float]]] = {"gst": [], "off": [], "on": []}
            r_offs: list[float] = []
            r_ons: list[float] = []
            for rep in range(reps):  # interleaved: each rep compares runs made next to each other in time
                out: dict[str, Any] = {}

                def gst_side() -> None:
                    c_full, w_full, out["command"] = gst_run(yuv, w, h, frames, port)
                    c_warm, w_warm, _ = gst_run(yuv, w, h, warm, port)
                    out["gst"] = ((c_full - c_warm) / (frames - warm), (w_full - w_warm) / (frames - warm))

                def pf_side() -> None:
                    out["off"] = punktfunk_run(y4m, w, h, frames, port, False)
                    out["on"] = punktfunk_run(y4m, w, h, frames, port, True)

                # who goes first alternates, so a drift within a rep favours neither side
                for side in ((gst_side, pf_side) if rep % 2 == 0 else (pf_side, gst_side)):
                    side()
                g, off, on, command = out["gst"], out["off"], out["on"], out["command"]
                per["gst"].append(g)
                per["off"].append((off[0] / frames, off[1] / frames))
                per["on"].append((on[0] / frames, on[1] / frames))
                r_offs.append(per["off"][-1][0] / g[0])
                r_ons.append(per["on"][-1][0] / g[0])
            best = {k: (statistics.median(c for c, _ in v), statistics.median(x for _, x in v)) for k, v in per.items()}
            label = f"{w}×{h}"
            for key, name in NAMES:
                cpu_f, wall_f = best[key]
                rows.append([label, name, cpu_f * 1e3, 1 / wall_f])
                plot[key].append(cpu_f * 1e3)
            r_off = statistics.median(r_offs)
            r_on = statistics.median(r_ons)
            spread = lambda rs: f"{min(rs):.2f}–{max(rs):.2f}" if len(rs) > 1 else "one run"  # noqa: E731
            ratios += [
                {"name": f"{label} CPU/frame, punktfunk off / GStreamer (median of paired runs; {spread(r_offs)})",
                 "value": r_off, "target": "<= 1.0", "ok": r_off <= 1.0},
                {"name": f"{label} CPU/frame, punktfunk on / GStreamer (median of paired runs; {spread(r_ons)})",
                 "value": r_on, "target": "<= 1.15", "ok": r_on <= 1.15},
                {"name": f"{label} fps, punktfunk off / GStreamer", "value": best["gst"][1] / best["off"][1], "target": None, "ok": None},
            ]
            if use_callgrind:
                n, wn = INSTR_FRAMES
                ins = {
                    "gst": instructions.per_frame(lambda k: gst_cmd(yuv, w, h, k, port), n, wn),
                    "off": instructions.per_frame(lambda k: instructions.python_cmd(
                        "bench.bench_pipeline", "child", y4m, w, h, k, "off"), n, wn),
                    "on": instructions.per_frame(lambda k: instructions.python_cmd(
                        "bench.bench_pipeline", "child", y4m, w, h, k, "on"), n, wn),
                }
                instr_rows += [[label, name, ins[key] / 1e6] for key, name in NAMES]
                raw_instr[label] = ins
                ratios += [
                    {"name": f"{label} instructions/frame, punktfunk off / GStreamer (callgrind)",
                     "value": ins["off"] / ins["gst"], "target": "<= 1.0", "ok": ins["off"] / ins["gst"] <= 1.0},
                    {"name": f"{label} instructions/frame, punktfunk on / GStreamer (callgrind)",
                     "value": ins["on"] / ins["gst"], "target": "<= 1.15", "ok": ins["on"] / ins["gst"] <= 1.15},
                ]
            yuv.unlink()
            y4m.unlink()
    finally:
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
    tables = [{"title": f"{frames} frames per run, median of {reps} interleaved runs (ratios: median of per-run ratios)",
               "headers": ["resolution", "pipeline", "CPU ms / frame", "frames / s (unpaced)"], "rows": rows}]
    notes = []
    if instr_rows:
        tables.append({"title": f"instructions per frame (callgrind, frames {INSTR_FRAMES[1] + 1}–{INSTR_FRAMES[0]} "
                                "of the same clip; start-up subtracted)",
                       "headers": ["resolution", "pipeline", "M instructions / frame"], "rows": instr_rows})
        notes.append("instruction counts repeat exactly for the same input, CPU seconds on this VM do not (see the "
                     "min–max of the paired runs); an interpreted instruction is slower than one of x264's, so the "
                     "time ratio can sit above the instruction ratio")
    elif not quick:
        notes.append(f"valgrind is missing, so there are no instruction counts: {instructions.INSTALL}")
    else:
        notes.append("--quick: one run per side and no instruction counts (the full run adds callgrind counts)")
    return {
        "title": "Pipeline vs GStreamer (x264 ultrafast, loopback UDP)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "commands": [command.replace(str(tmp), "$CLIP_DIR")],
        "tables": tables,
        "notes": notes,
        "raw": {"instructions_per_frame": raw_instr},
        "ratios": ratios,
        "plot": {"kind": "bar", "title": "CPU per frame (lower is better)", "ylabel": "ms CPU / frame",
                 "labels": [f"{w}×{h}" for w, h in sizes],
                 "series": {"GStreamer": plot["gst"], "punktfunk off": plot["off"], "punktfunk on": plot["on"]}},
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
