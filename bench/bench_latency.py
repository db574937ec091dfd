"""Latency: host latency from the stats samples and end-to-end latency at the reference client.

A real host streams testpattern → x264 (ultrafast, zerolatency) over punktfunk/1
on loopback to the reference client (`punktfunk client --json`), which decodes
with PyAV and reads the capture time stamped into each picture: end-to-end is
capture → decoded on the same clock. A stats capture armed on the host at the
same time gives host latency (capture → last packet sent) per 2 s window; we
report the median of the window p50s and the max of the window p99s.
The same host seen by moonlight-python over GameStream (x264 ultrafast, H.264) gives
the host processing latency Moonlight reports and e2e from the stamp it decodes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from punktfunk_core.ipc import IpcClient
from punktfunk_core.paths import Paths

HOST_TOML = """
[host]
log_level = "warning"
[native]
port = 0
[stream]
encoder = "x264"
encoder_options = { preset = "ultrafast" }
"""


def _start_host(base: Path, config: str = HOST_TOML,
                **env_extra: str) -> tuple[subprocess.Popen, IpcClient, int, dict[str, str]]:
    """A ``punktfunk serve`` in ``base`` with ``config``; its IPC client and punktfunk/1 port."""
    paths = Paths(base / "cfg", base / "run")
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(paths.config), PUNKTFUNK_RUNTIME_DIR=str(paths.runtime),
               **env_extra)
    (base / "host.toml").write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "-c", str(base / "host.toml"),
                             "--no-console"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ipc = IpcClient(paths.ipc_endpoint, timeout=3.0)
    deadline = time.monotonic() + 30
    while True:
        try:
            st = ipc.call("host.status")
            if "native" in st["protocols"]:
                return proc, ipc, st["protocols"]["native"]["port"], env
        except Exception:  # noqa: BLE001 - starting
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("host did not start")
        time.sleep(0.1)


def native_case(base: Path, ipc: IpcClient, port: int, w: int, h: int, seconds: float, first: bool) -> dict[str, Any]:
    client_env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(base / "client"))
    ipc.call("stats.start")
    args = [sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(port),
            "--seconds", str(seconds), "--json", "--width", str(w), "--height", str(h), "--fps", "60",
            "--bitrate", str(6000 if h <= 720 else 12000)]
    if first:
        ipc.call("pairing.pin", protocol="native", pin="2468", seconds=60)
        args += ["--pin", "2468"]
    out = subprocess.run(args, env=client_env, capture_output=True, text=True, timeout=seconds + 60)
    cap = ipc.call("stats.stop")
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-500:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    samples = ipc.call("stats.load", id=cap["id"])["samples"] if cap else []
    samples = [s for s in samples if s.get("host_p50_us") is not None][1:] or samples
    return {
        "resolution": f"{w}×{h}@60",
        "e2e_p50_ms": summary["e2e_p50_ms"], "e2e_p99_ms": summary["e2e_p99_ms"],
        "host_p50_ms": statistics.median(s["host_p50_us"] for s in samples) / 1e3 if samples else None,
        "host_p99_ms": max(s["host_p99_us"] for s in samples) / 1e3 if samples else None,
        "fps": statistics.mean(s["fps"] for s in samples) if samples else None,
        "frames_decoded": summary["frames_decoded"], "frames_expected": summary["frames_expected"],
    }


def run(quick: bool) -> dict[str, Any]:
    seconds = 3.0 if quick else 12.0
    sizes = [(1280, 720)] if quick else [(1280, 720), (1920, 1080)]
    base = Path(tempfile.mkdtemp(prefix="pf-lat-"))
    proc, ipc, port, _env = _start_host(base)
    rows = []
    try:
        for i, (w, h) in enumerate(sizes):
            rows.append(native_case(base, ipc, port, w, h, seconds, first=(i == 0)))
    finally:
        proc.terminate()
        proc.wait(10)
        ipc.close()
        shutil.rmtree(base, ignore_errors=True)
    moon = moonlight_case(quick)
    tables = [{
        "title": f"punktfunk/1 on loopback, {seconds:.0f} s per resolution, x264 ultrafast",
        "headers": ["resolution", "host p50 ms", "host p99 ms", "e2e p50 ms", "e2e p99 ms", "fps (host)",
                    "frames decoded / expected"],
        "rows": [[r["resolution"], r["host_p50_ms"], r["host_p99_ms"], r["e2e_p50_ms"], r["e2e_p99_ms"], r["fps"],
                  f"{r['frames_decoded']} / {r['frames_expected']}"] for r in rows],
    }]
    notes = ["e2e includes the client's Python receive path and PyAV decode on the same 2-core machine as the host"]
    if moon.get("rows"):
        tables.append(moon)
    elif moon.get("note"):
        notes.append(moon["note"])
    return {
        "title": "Latency: host and end-to-end",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "tables": tables,
        "ratios": [{"name": f"e2e p50 / host p50 ({r['resolution']})", "value": r["e2e_p50_ms"] / r["host_p50_ms"],
                    "target": None, "ok": None} for r in rows if r["host_p50_ms"]],
        "plot": {"kind": "bar", "title": "Latency (ms)", "ylabel": "ms", "labels": [r["resolution"] for r in rows],
                 "series": {"host p50": [r["host_p50_ms"] for r in rows], "host p99": [r["host_p99_ms"] for r in rows],
                            "e2e p50": [r["e2e_p50_ms"] for r in rows], "e2e p99": [r["e2e_p99_ms"] for r in rows]}},
        "notes": notes,
        "raw": {"native": rows, "moonlight": moon},
    }


def moonlight_case(quick: bool) -> dict[str, Any]:
    """The same kind of session observed through moonlight-python over GameStream (bench/moonlight_probe.py):
    host processing latency from the NV frame header, e2e from the stamp in the decoded picture."""
    from bench import moonlight_probe

    return moonlight_probe.run(quick)
