"""Console under load: wrk against the real console (gunicorn) with 1 and 4 workers.

A host streams a loopback session (testpattern → x264, 640×360@60) with a
stats capture armed, so ``/live?since=`` returns real samples. wrk (Debian's
package) keeps 32 connections busy on one endpoint for a fixed time; we read
requests/s, p99 latency and every non-2xx or socket error from its report.
Each request crosses gunicorn → Flask → auth → pyzmq IPC → the host's
recorder and back, so this measures the whole console path.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _free_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _wrk(url: str, token: str, seconds: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
                          "-H", f"Authorization: Bearer {token}", url], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    rps_line = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps_line is None:
        raise RuntimeError(f"wrk printed no Requests/sec line: {out[-400:]!r}")
    rps = float(rps_line.group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else None
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    sock_err = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rps, "p99_ms": p99_ms, "errors": non2xx + sock_err, "raw": out}


def run(quick: bool) -> dict[str, Any]:
    if not shutil.which("wrk"):
        return {"not_run": "wrk is missing: apt-get install wrk"}
    from punktfunk_core.config import build_schema, validate
    from punktfunk_core.ipc import IpcClient
    from punktfunk_core.paths import Paths
    from punktfunk_core.plugins import load_plugin_manager

    from punktfunk_webui.server import start_console

    seconds = 3 if quick else 15
    base = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    paths = Paths(base / "cfg", base / "run")
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(paths.config), PUNKTFUNK_RUNTIME_DIR=str(paths.runtime),
               PUNKTFUNK_LOG_LEVEL="warning")
    cfgfile = base / "host.toml"
    cfgfile.write_text("[host]\nlog_level = \"warning\"\n[native]\nenabled = false\n")
    host = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "-c", str(cfgfile), "--no-console"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = _free_udp()
    ipc = IpcClient(paths.ipc_endpoint, timeout=2.0)
    rows = []
    results: dict[str, Any] = {}
    try:
        for _ in range(100):
            try:
                ipc.call("host.status")
                break
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.1)
        ipc.call("sessions.loopback", port=sink.getsockname()[1], seconds=0, width=640, height=360, fps=60,
                 capture="testpattern", encoder="x264")
        ipc.call("stats.start")
        time.sleep(2.5)  # a couple of samples for /live
        cfg = validate(build_schema(load_plugin_manager()), {})
        token = ""
        for workers in (1, 4):
            cfg["console"].update(port=0, workers=workers)
            console = start_console(cfg, paths)
            token = paths.mgmt_token.read_text().strip()
            try:
                for label, path in (("status", "/api/v1/stats/capture/status"),
                                    ("live?since=", "/api/v1/stats/capture/live?since=1000000000")):
                    r = _wrk(console.url.rstrip("/") + path, token, seconds, 32)
                    results[f"{label}/{workers}"] = r
                    rows.append([label, workers, r["rps"], r["p99_ms"], r["errors"]])
            finally:
                console.stop()
        ipc.call("stats.stop")
    finally:
        host.terminate()
        host.wait(10)
        sink.close()
        ipc.close()
        shutil.rmtree(base, ignore_errors=True)
    by = {(r[0], r[1]): r for r in rows}
    ratio_status = by[("status", 4)][2] / by[("status", 1)][2]
    errors = sum(r[4] for r in rows)
    return {
        "title": "Console under load (wrk, gunicorn 1 vs 4 workers)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "commands": [f"wrk -t2 -c32 -d{seconds}s --latency --timeout 5s -H 'Authorization: Bearer …' <url>"],
        "tables": [{"title": f"{seconds} s per run, 32 connections, {os.cpu_count()} cores shared with the host",
                    "headers": ["endpoint", "workers", "requests/s", "p99 ms", "errors"], "rows": rows}],
        "ratios": [
            {"name": "status requests/s, 4 workers / 1 worker", "value": ratio_status, "target": None, "ok": None},
            {"name": "errors (all runs)", "value": float(errors), "target": "= 0", "ok": errors == 0},
        ],
        "plot": {"kind": "bar", "title": "Console requests/s under wrk", "ylabel": "requests / s",
                 "labels": ["status", "live?since="],
                 "series": {f"{w} worker{'s' if w > 1 else ''}": [by[("status", w)][2], by[("live?since=", w)][2]]
                            for w in (1, 4)}},
        "raw": {k: {kk: vv for kk, vv in v.items() if kk != "raw"} for k, v in results.items()},
    }
