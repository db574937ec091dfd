"""Desktop audio vs GStreamer: sound server monitor → Opus (stereo, 96 kbps CBR, 5 ms) → UDP.

A private PulseAudio (bench/soundserver.py) plays a 997 Hz tone into its null
sink; both sides record the sink's monitor, encode 5 ms Opus frames at
GameStream's stereo bitrate and send each packet with a 12-byte RTP header
to a UDP socket on 127.0.0.1:

- punktfunk: the ``desktop`` audio source (parec into the ring) → the
  ``opus`` stage → ``sendto``, one frame every 5 ms on the monotonic clock
  (as the GameStream audio loop paces it);
- GStreamer: ``pulsesrc latency-time=5000 ! opusenc frame-size=5
  bitrate-type=cbr audio-type=restricted-lowdelay ! rtpopuspay ! udpsink``.

CPU is the whole process tree's (punktfunk's parec child included), per
second of audio, with start-up taken out by a long and a short run of each
side (the difference). Added latency is punktfunk's own, per packet: the
time it was sent less the time the frame's last sample reached the host
(the source's ``capture_ns`` plus the frame's 5 ms); frames into which
silence was inserted (start-up, stalls) are left out and counted.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

from bench.bench_pipeline import gstreamer_missing

FRAME = 240  # 5 ms at 48 kHz
BITRATE_KBPS = 96  # GameStream's stereo (Sunshine's table), the opus stage's stereo default


def gst_cmd(frames: int, port: int) -> list[str]:
    return ["gst-launch-1.0", "-q", "pulsesrc", "device=@DEFAULT_MONITOR@", "buffer-time=20000", "latency-time=5000",
            f"num-buffers={frames}", "!", "audio/x-raw,format=S16LE,rate=48000,channels=2", "!", "opusenc",
            f"bitrate={BITRATE_KBPS * 1000}", "bitrate-type=cbr", "frame-size=5", "audio-type=restricted-lowdelay",
            "!", "rtpopuspay", "!", "udpsink", "host=127.0.0.1", f"port={port}", "sync=false"]


def pf_cmd(frames: int, port: int) -> list[str]:
    return [sys.executable, "-m", "bench.bench_audio", "child", str(frames), str(port)]


def cpu_of(cmd: list[str]) -> tuple[float, str]:
    """Run to completion: (CPU seconds of the process and of every child it waited for, stdout).
    Reaping it adds its tree's usage to ours (parec is waited for by the punktfunk child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.decode()[-400:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), done.stdout.decode()


def run(quick: bool) -> dict[str, Any]:
    from bench.soundserver import SoundServer, missing

    reason = missing() or gstreamer_missing(("pulsesrc", "gstreamer1.0-pulseaudio"),
                                            ("opusenc", "gstreamer1.0-plugins-base"),
                                            ("rtpopuspay", "gstreamer1.0-plugins-good"))
    if reason:
        return {"not_run": reason}
    if shutil.which("parec") is None:
        return {"not_run": "parec is missing: apt-get install pulseaudio-utils"}
    seconds, short = (3.0, 1.0) if quick else (20.0, 5.0)
    reps = 1 if quick else 3
    frames, warm = int(seconds * 200), int(short * 200)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    load = os.getloadavg()
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_COOKIE")}
    cpu: dict[str, list[float]] = {"gst": [], "pf": []}
    ratios: list[float] = []
    latency: list[dict[str, Any]] = []
    try:
        with SoundServer() as server:
            os.environ.update(server.env)
            server.play_tone(997, seconds=(seconds + short) * 2 * reps + 30, amplitude=0.5)
            for rep in range(reps):
                out: dict[str, float] = {}
                for side in (("gst", "pf") if rep % 2 == 0 else ("pf", "gst")):
                    cmd_for = gst_cmd if side == "gst" else pf_cmd
                    c_full, text = cpu_of(cmd_for(frames, port))
                    c_warm, _ = cpu_of(cmd_for(warm, port))
                    out[side] = (c_full - c_warm) / ((frames - warm) * FRAME / 48_000)
                    if side == "pf":
                        latency.append(json.loads(text))
                for side in out:
                    cpu[side].append(out[side])
                ratios.append(out["pf"] / out["gst"])
    finally:
        sink.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    med = {k: statistics.median(v) for k, v in cpu.items()}
    lat50 = statistics.median(r["p50_ms"] for r in latency)
    lat99 = statistics.median(r["p99_ms"] for r in latency)
    spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if len(ratios) > 1 else "one run"
    return {
        "title": "Desktop audio vs GStreamer (PulseAudio monitor → Opus 5 ms → UDP)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "commands": [" ".join(gst_cmd(frames, port)), " ".join(["python", *pf_cmd(frames, port)[1:]])],
        "tables": [{"title": f"{seconds:g} s of audio a run ({short:g} s runs subtracted), median of {reps}",
                    "headers": ["pipeline", "% of one core", "added latency p50 ms", "p99 ms"],
                    "rows": [["GStreamer", med["gst"] * 100, "", ""],
                             ["punktfunk desktop → opus", med["pf"] * 100, lat50, lat99]]}],
        "notes": [f"load average when the run started: {load[0]:.2f} on {os.cpu_count()} CPUs",
                  f"frames with inserted silence (left out of the latency): "
                  f"{', '.join(str(r['gap_frames']) for r in latency)} of {frames} a run"],
        "raw": {"cpu_fraction": cpu, "latency": latency, "load_average": load},
        "ratios": [
            {"name": f"stereo CPU per second of audio, punktfunk / GStreamer (median of paired runs; {spread})",
             "value": statistics.median(ratios), "target": None, "ok": None},
            {"name": "stereo CPU, punktfunk, % of one core", "value": med["pf"] * 100, "target": "<= 2",
             "ok": med["pf"] * 100 <= 2},
            {"name": "added latency p99 ms (frame complete → packet sent), punktfunk", "value": lat99,
             "target": "<= 10", "ok": lat99 <= 10},
        ],
    }


def _child(frames: int, port: int) -> None:
    """``python -m bench.bench_audio child FRAMES PORT``: one punktfunk run; prints its latencies as JSON."""
    from punktfunk_core.media.desktop_audio import DesktopAudioSource
    from punktfunk_core.plugins import load_plugin_manager
    from punktfunk_core.stages import AudioEncoder, StreamSpec

    pm = load_plugin_manager()
    src = pm.stages.create("audio_source", "desktop", StreamSpec(), {})
    enc = pm.stages.create("audio_encoder", "opus", StreamSpec(), {"bitrate_kbps": BITRATE_KBPS})
    assert isinstance(src, DesktopAudioSource) and isinstance(enc, AudioEncoder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    frame_ns = FRAME * 1_000_000_000 // 48_000
    added: list[float] = []
    gap_frames = 0
    due = time.monotonic()
    try:
        for seq in range(frames):
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.2:
                due = now  # fell far behind: do not burst
            due += FRAME / 48_000
            gaps = src.gap_samples
            pcm = src.read(FRAME)
            for packet in enc.encode(pcm):
                sock.send(struct.pack(">BBHII", 0x80, 97, seq & 0xFFFF, seq * 5, 0) + packet)
            if src.gap_samples != gaps:
                gap_frames += 1
            else:
                added.append((time.monotonic_ns() - src.capture_ns - frame_ns) / 1e6)
    finally:
        enc.close()
        src.close()
        sock.close()
    added.sort()
    pick = (lambda q: added[min(len(added) - 1, int(q * len(added)))]) if added else (lambda q: float("nan"))
    print(json.dumps({"p50_ms": pick(0.5), "p99_ms": pick(0.99), "frames": frames, "gap_frames": gap_frames}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        _child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: python -m bench.bench_audio child FRAMES PORT")
