"""GameStream loss sweep: adaptive vs fixed FEC/bitrate, measured with a real Moonlight core.

``sweep_point(mode, pattern, seconds)`` starts a real ``punktfunk serve
--gamestream`` (x264 ultrafast, ``fec`` and ``rate_control`` = ``mode``) whose
video sender drops datagrams the way ``pattern`` says (the ``drop-packets``
stage of tests/plugins/pf_faults.py: ``uniform:0.05`` is a seeded 5 % random
loss, ``ge:p,r,loss_bad`` a Gilbert-Elliott channel), pairs moonlight-python
with it and streams 1280×720@60 at 8 Mbit/s for ``seconds``. It returns what
the host sent and what Moonlight lost: frames_sent, frames_unrecoverable
(frames Moonlight reported it could not rebuild), keyframes (sent),
wire_bytes and payload_bytes (before the drop), and more for the table.

``python -m bench.adaptive_gamestream [--seconds S] [--quick]`` runs the sweep
and prints a table; the shared table/plot of both protocols is bench/bench_adaptive.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.moonlight_probe import HOST_TOML, _client_cmd, _finish, _Host, _pair

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = ("uniform:0", "uniform:0.01", "uniform:0.02", "uniform:0.05", "uniform:0.1", "uniform:0.2",
            "ge:0.01,0.3,0.5")
SEED = 7
#: the frames of the first 0.5 s report window at 60 fps
FIRST_WINDOW_FRAMES = 30

#: the latency probe's host (x264 ultrafast, GameStream on ephemeral ports) with these [gamestream] keys
GAMESTREAM_KEYS = """client_timeout_s = 5
fec = "{mode}"
rate_control = "{mode}"
fec_percent = {share}
video_sender = "drop-packets"
video_sender_options = {options}
"""


def loss_options(pattern: str, seed: int = SEED) -> dict[str, Any]:
    """``uniform:RATE`` or ``ge:p,r,loss_bad`` → the drop-packets stage's options."""
    kind, _, args = pattern.partition(":")
    if kind == "uniform":
        return {"rate": float(args), "seed": seed}
    if kind == "ge":
        p, r, loss_bad = (float(x) for x in args.split(","))
        return {"ge": [p, r, loss_bad], "seed": seed}
    raise ValueError(f"unknown loss pattern {pattern!r} (uniform:RATE or ge:p,r,loss_bad)")


def _toml_table(d: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def sweep_point(mode: str, pattern: str, seconds: float) -> dict[str, Any]:
    """One host, one Moonlight stream under ``pattern`` loss with ``fec``/``rate_control`` = ``mode``
    ("adaptive", "fixed" at 20 %, or "fixed:PERCENT")."""
    mode, _, share = mode.partition(":")
    if mode not in ("adaptive", "fixed") or (share and mode != "fixed"):
        raise ValueError(f"mode is adaptive, fixed or fixed:PERCENT, not {mode!r}")
    base = Path(tempfile.mkdtemp(prefix="pf-adapt-gs-"))
    os.chmod(base, 0o700)
    path = [str(ROOT / "tests" / "plugins"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {"PUNKTFUNK_PLUGINS": "pf_faults", "PYTHONPATH": os.pathsep.join(path)}
    keys = GAMESTREAM_KEYS.format(mode=mode, share=int(share or 20), options=_toml_table(loss_options(pattern)))
    host = _Host(base, HOST_TOML.replace("mdns = false\n", "mdns = false\n" + keys), env)
    try:
        host.wait_ready()
        client_dir = base / "client"
        _pair(host, client_dir)
        proc = subprocess.Popen(_client_cmd("stream", host, client_dir, "--width", "1280", "--height", "720",
                                            "--fps", "60", "--bitrate", "8000", "--seconds", str(seconds)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        adaptive: dict[str, Any] | None = None  # the stream's last adaptive state
        kbps: list[tuple[int, str]] = []  # the bitrate targets it went through, and why
        trace: list[dict[str, Any]] = []  # per loss window: share, estimate, what it measured, frames lost
        first_window_lost: int | None = None  # frames unrecoverable before the first window closed
        try:
            while proc.poll() is None:
                status = host.call("gamestream.status")
                state = status.get("adaptive")
                if first_window_lost is None and status["frames_sent"] >= FIRST_WINDOW_FRAMES:
                    first_window_lost = status["counters"].get("frames_unrecoverable", 0)
                if state is not None:
                    adaptive = state
                    target = state["bitrate_target_kbps"]
                    if target and (not kbps or kbps[-1][0] != target):
                        kbps.append((target, state["bitrate_reason"]))
                    last = state["last_report"]
                    if last is not None and (not trace or trace[-1]["window"] != state["windows"]):
                        trace.append({"window": state["windows"], "parity_pct": state["fec_parity_pct"],
                                      "estimate_pct": state["loss_estimate_pct"],
                                      "measured_pct": round(100 * last["packets_lost"]
                                                            / max(1, last["packets_expected"]), 2),
                                      "packets": last["packets_expected"],
                                      "frames_lost": last["frames_unrecoverable"], "kbps": target})
                time.sleep(0.1)
            res = _finish(proc, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        deadline = time.monotonic() + 5  # the client's last reports reach the host after it stops
        while host.call("gamestream.status")["streaming"] and time.monotonic() < deadline:
            time.sleep(0.1)
        st = host.call("gamestream.status")
        faults = host.call("faults.status")
    finally:
        host.stop()
        shutil.rmtree(base, ignore_errors=True)
    label = "drop-packets"
    numbers = [f["n"] for f in res["frames"]]
    counters = st["counters"]
    return {
        "mode": f"{mode}:{share}" if share else mode, "pattern": pattern, "seconds": seconds,
        "frames_sent": faults["frames"].get(label, 0),
        "frames_unrecoverable": counters.get("frames_unrecoverable", 0),
        # the tests count after the first report window (before it nothing is known of the link)
        "frames_unrecoverable_after_first_window": counters.get("frames_unrecoverable", 0) - (first_window_lost or 0),
        "keyframes": faults["keyframes"].get(label, 0),
        "wire_bytes": faults["wire_bytes"].get(label, 0),
        "payload_bytes": faults["payload_bytes"].get(label, 0),
        "datagrams_dropped": faults["dropped"].get(label, 0),
        "idr_requests": counters.get("idr_requests", 0),
        "idr_coalesced": counters.get("idr_coalesced", 0),
        "frames_delivered": len(numbers),
        # frames Moonlight never handed to its decoder: lost, or dropped while it waited for an IDR
        "frames_missing": (max(numbers) - min(numbers) + 1 - len(numbers)) if numbers else None,
        "final": adaptive,
        "bitrate_targets_kbps": kbps,
        "trace": trace,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("mode", "pattern", "frames", "unrecov %", "missing %", "IDR req", "keyframes/min", "overhead %",
            "final parity %", "final kbps")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        frames = max(1, r["frames_sent"])
        minutes = r["seconds"] / 60
        final = r.get("final") or {}
        lines.append(" | ".join(str(x) for x in (
            r["mode"], r["pattern"], r["frames_sent"], f"{100 * r['frames_unrecoverable'] / frames:.2f}",
            f"{100 * (r['frames_missing'] or 0) / frames:.2f}", r["idr_requests"],
            f"{r['keyframes'] / minutes:.0f}",
            f"{100 * (r['wire_bytes'] / max(1, r['payload_bytes']) - 1):.1f}",
            final.get("fec_parity_pct", "—"), final.get("bitrate_target_kbps", "—"))))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="0, 5 % uniform and the bursty pattern only")
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args()
    patterns = ("uniform:0", "uniform:0.05", "ge:0.01,0.3,0.5") if a.quick else PATTERNS
    rows = []
    for pattern in patterns:
        for mode in ("fixed", "adaptive"):
            rows.append(sweep_point(mode, pattern, a.seconds))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
