"""Run inside `unshare -rn` (a private network namespace with only loopback): start real hosts
that advertise over mDNS, run `punktfunk discover`, print what it printed as one JSON line.

Usage: python -m tests.fleet_netns WORKDIR NAME:CONSOLE_PORT:ADVERTISE ...

With PF_PROMETHEUS_CONFIG (the shipped deploy/prometheus.yml) set, it then gives every host the same
scrape token (plugin-tokens/prometheus), starts Debian's prometheus with that config pointed at the
file discover wrote, and adds what its HTTP API answers for ``punktfunk_host_up`` once both hosts are up.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from punktfunk_core.ipc import HostUnreachable, IpcClient


def main() -> int:
    work = Path(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up", "multicast", "on"], check=True)
    hosts = []
    try:
        for spec in sys.argv[2:]:
            name, port, advertise = spec.split(":")
            d = work / name
            (d / "cfg").mkdir(parents=True)
            (d / "host.toml").write_text(f'[host]\nname = "{name}"\n[console]\nport = {port}\n'
                                         f"[native]\nport = 0\n[discovery]\nadvertise = {advertise}\n")
            env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(d / "cfg"), PUNKTFUNK_RUNTIME_DIR=str(d / "run"))
            log = open(d / "host.log", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "-c", str(d / "host.toml")],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            hosts.append((name, proc, d, advertise == "true"))
        for name, proc, d, advertised in hosts:
            ipc = IpcClient(f"ipc://{d / 'run' / 'host.sock'}", timeout=1.0)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited:\n{(d / 'host.log').read_text()}")
                try:
                    ipc.call("host.status")
                    if not advertised or "mDNS: advertising" in (d / "host.log").read_text():
                        break
                except HostUnreachable:
                    pass
                time.sleep(0.2)
            ipc.close()
        done = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "discover", "--json", "--seconds", "3",
                               "--prometheus-sd", str(work / "targets.json")], capture_output=True, text=True,
                              timeout=60)
        result = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        if os.environ.get("PF_PROMETHEUS_CONFIG"):
            result["prometheus"] = scrape(work, [d for _, _, d, _ in hosts], Path(os.environ["PF_PROMETHEUS_CONFIG"]))
        result["logs"] = {n: (d / "host.log").read_text() for n, _, d, _ in hosts}
        print(json.dumps(result))
        return 0
    finally:
        for _, proc, _, _ in hosts:
            proc.send_signal(signal.SIGTERM)
        for _, proc, _, _ in hosts:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def scrape(work: Path, host_dirs: list[Path], shipped: Path, expect: int = 2) -> dict:
    token = secrets.token_urlsafe(32)
    for d in host_dirs:
        tokens = d / "cfg" / "plugin-tokens"
        tokens.mkdir(mode=0o700, exist_ok=True)
        (tokens / "prometheus").write_text(token + "\n")
        (tokens / "prometheus").chmod(0o600)
    (work / "scrape-token").write_text(token + "\n")
    config = shipped.read_text().replace("/etc/prometheus/punktfunk-token", str(work / "scrape-token")).replace(
        "/etc/prometheus/punktfunk-targets.json", str(work / "targets.json"))
    (work / "prometheus.yml").write_text(config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(work / "prometheus.log", "wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    query = urllib.parse.urlencode({"query": "punktfunk_host_up"})
    answer: dict = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5) as r:
                    answer = json.load(r)
                if len(answer.get("data", {}).get("result", [])) >= expect:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as r:
            targets = json.load(r)
    finally:
        prom.terminate()
        prom.wait(20)
    return {"query": answer, "targets": targets, "log": (work / "prometheus.log").read_text()[-3000:]}


if __name__ == "__main__":
    sys.exit(main())
