"""Input: host receive → injected latency and click-to-photon through the reference client.

A real host (`punktfunk serve`) captures a private, still Xvfb desktop of
1280×720 (`x11` capture, the pointer composed into the picture), encodes it
with x264 ultrafast at 60 fps and takes input with the `xtest` backend; the
reference client (`punktfunk_native.client.NativeClient`, in this process)
streams it over punktfunk/1 on loopback.

- **receive → injected**: the client sends 1000 key events per second (Shift
  down and up in turn: never merged, harmless on the desktop) through
  `NativeClient.send_input` while it streams; the host's input sink stamps
  each event when the control message arrived and again when XTest took it
  and the X connection was flushed. p50/p99 are the sink's over its latest
  4096 events (`details.input` of the session in `punktfunk status`).
- **click-to-photon**: `punktfunk client --click-to-photon` moves the pointer
  to alternating points every 250 ms and times each move until a decoded frame
  shows the pointer there (docs/input.md, "Click-to-photon").

Both run while the video streams, so the input path competes with capture
and encoding for the same CPU, as in use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from punktfunk_core.ipc import IpcClient

W, H, FPS = 1280, 720, 60
RATE = 1000  # input events per second
GOAL_P50_MS = 0.5

HOST_TOML = """
[host]
log_level = "warning"
[native]
bind = "127.0.0.1"
port = 0
[input]
backend = "xtest"
backend_options = {{ display = "{display}" }}
[stream]
encoder = "x264"
encoder_options = {{ preset = "ultrafast" }}
capture = "x11"
capture_options = {{ display = "{display}" }}
"""


def _injected_latency(ipc: IpcClient, base: Path, port: int, seconds: float) -> dict[str, Any]:
    from punktfunk_core.inputevents import Key

    from punktfunk_native.client import ClientOptions, NativeClient

    ipc.call("pairing.pin", protocol="native", pin="2468", seconds=60)
    client = NativeClient(ClientOptions(host="127.0.0.1", port=port, pin="2468", seconds=seconds + 2, width=W,
                                        height=H, fps=FPS, bitrate_kbps=6000, json=True, status=False,
                                        config_dir=base / "client"))
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(client.run()), daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while client.stats.frames_decoded < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    counters: dict[str, Any] = {}
    t0 = time.perf_counter()
    n = int(RATE * seconds)
    for i in range(n):  # paced on the clock, so a late step catches up instead of drifting
        wait = t0 + i / RATE - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        client.send_input(Key(0xA0, i % 2 == 0))
    time.sleep(0.7)  # the plane refreshes details.input every keepalive interval
    for s in ipc.call("sessions.list"):
        counters = s.get("details", {}).get("input") or counters
    runner.join(seconds + 30)
    return {"events": n, "sent_s": time.perf_counter() - t0, "counters": counters, "client": result}


def _click_to_photon(base: Path, port: int, seconds: float) -> dict[str, Any]:
    import json

    out = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(port),
                          "--seconds", str(seconds), "--json", "--width", str(W), "--height", str(H), "--fps",
                          str(FPS), "--bitrate", "6000", "--click-to-photon"],
                         env=dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(base / "client")), capture_output=True,
                         text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict[str, Any]:
    from bench.bench_desktop import Desktop
    from bench.bench_latency import _start_host

    if shutil.which("Xvfb") is None:
        return {"not_run": "needs Xvfb (apt-get install xvfb)"}
    seconds = 3.0 if quick else 10.0
    base = Path(tempfile.mkdtemp(prefix="pf-input-"))
    try:
        with Desktop(W, H, content=False) as desk:
            proc, ipc, port, _env = _start_host(base, HOST_TOML.format(display=desk.display),
                                                DISPLAY=desk.display)
            try:
                inj = _injected_latency(ipc, base, port, seconds)
                ctp = _click_to_photon(base, port, seconds)
            finally:
                proc.terminate()
                proc.wait(10)
                ipc.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    c = inj["counters"]
    p50 = c.get("latency_p50_us")
    p99 = c.get("latency_p99_us")
    p50_ms = p50 / 1000 if p50 is not None else None
    return {
        "title": "Input: receive → injected and click-to-photon (punktfunk/1, xtest, x11 capture)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "tables": [
            {"title": f"receive → injected at {RATE} events/s while streaming {W}×{H}@{FPS} x264",
             "headers": ["events sent", "received", "injected", "merged", "dropped (throttled)", "p50 ms", "p99 ms",
                         "video fps (client)"],
             "rows": [[inj["events"], c.get("received"), c.get("injected"), c.get("merged"),
                       c.get("dropped_throttled"), p50_ms, p99 / 1000 if p99 is not None else None,
                       inj["client"].get("fps")]]},
            {"title": f"click-to-photon, {W}×{H}@{FPS} x264 ultrafast, {seconds:.0f} s",
             "headers": ["moves measured", "missed", "p50 ms", "p99 ms", "video e2e p50 ms (stamps)", "fps"],
             "rows": [[ctp.get("click_to_photon_samples"), ctp.get("click_to_photon_missed"),
                       ctp.get("click_to_photon_p50_ms"), ctp.get("click_to_photon_p99_ms"),
                       ctp.get("e2e_p50_ms"), ctp.get("fps")]]},
        ],
        "ratios": [{"name": "receive → injected p50 / 0.5 ms goal", "value": p50_ms / GOAL_P50_MS if p50_ms else None,
                    "target": "<= 1.0", "ok": p50_ms is not None and p50_ms <= GOAL_P50_MS}],
        "notes": ["client and host share the machine's cores; click-to-photon includes the next capture after the "
                  "injection (up to one frame interval), encoding, loopback, and PyAV decoding in Python"],
        "raw": {"injected": inj, "click_to_photon": ctp},
    }
