"""Fleet: mDNS advertising and `punktfunk discover` between real hosts in a private network namespace,
Prometheus (Debian's) scraping them through the file_sd output, promtool on /metrics, and the shipped
Grafana dashboard asking only for metrics /metrics exports."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import HostProcess

from punktfunk_fleet import advertise

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def _netns_problem() -> str:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip are not installed (util-linux, iproute2)"
    done = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up", "multicast", "on"],
                          capture_output=True, text=True)
    return "" if done.returncode == 0 else f"no private network namespace here ({done.stderr.strip()})"


@pytest.fixture(scope="module")
def fleet_run() -> Any:
    """Three hosts in a network namespace of their own (gamma opted out of advertising), `punktfunk
    discover --json --prometheus-sd`, then Prometheus with the shipped config scraping what it found."""
    problem = _netns_problem()
    if problem:
        pytest.skip(problem)
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    work = Path(tempfile.mkdtemp(prefix="pf-fleet-"))
    try:
        done = subprocess.run(["unshare", "-rn", sys.executable, "-m", "tests.fleet_netns", str(work),
                               "alpha:47990:true", "beta:47991:true", "gamma:47993:false"],
                              env={**_clean_env(), "PF_PROMETHEUS_CONFIG": str(DEPLOY / "prometheus.yml")},
                              cwd=REPO, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["targets_file"] = json.loads((work / "targets.json").read_text())
        yield result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PUNKTFUNK_")}


def test_discover_lists_the_advertising_hosts_and_not_the_one_that_opted_out(fleet_run):
    assert fleet_run["rc"] == 0, fleet_run["stderr"]
    hosts = {h["name"]: h for h in json.loads(fleet_run["stdout"])}
    assert set(hosts) == {"alpha", "beta"}, (hosts, fleet_run["logs"])
    assert hosts["alpha"]["port"] == 47990 and hosts["beta"]["port"] == 47991
    # a loopback console is advertised on loopback only
    assert hosts["alpha"]["addresses"] == ["127.0.0.1"]
    assert hosts["alpha"]["metrics_url"] == "http://127.0.0.1:47990/metrics"
    assert hosts["beta"]["properties"]["native"].isdigit()
    assert "discovery.advertise = false" in fleet_run["logs"]["gamma"]


def test_prometheus_sd_file_names_each_hosts_metrics_endpoint(fleet_run):
    groups = sorted(fleet_run["targets_file"], key=lambda g: g["targets"])
    assert [g["targets"] for g in groups] == [["127.0.0.1:47990"], ["127.0.0.1:47991"]]
    assert [g["labels"]["punktfunk_host"] for g in groups] == ["alpha", "beta"]
    assert all(g["labels"]["__metrics_path__"] == "/metrics" for g in groups)


def test_prometheus_scrapes_both_hosts_through_the_file_sd_output_with_their_token(fleet_run):
    prom = fleet_run["prometheus"]
    targets = prom["targets"]["data"]["activeTargets"]
    assert sorted((t["labels"]["punktfunk_host"], t["health"]) for t in targets) == [("alpha", "up"), ("beta", "up")], \
        [(t["labels"], t["lastError"]) for t in targets]
    series = prom["query"]["data"]["result"]
    assert sorted((s["metric"]["punktfunk_host"], s["metric"]["instance"], s["value"][1]) for s in series) == [
        ("alpha", "127.0.0.1:47990", "1"), ("beta", "127.0.0.1:47991", "1")], prom["log"]


def test_shipped_prometheus_config_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    (tmp_path / "token").write_text("x" * 43 + "\n")
    (tmp_path / "targets.json").write_text("[]\n")
    config = (DEPLOY / "prometheus.yml").read_text().replace("/etc/prometheus/punktfunk-token", str(tmp_path / "token"))
    config = config.replace("/etc/prometheus/punktfunk-targets.json", str(tmp_path / "targets.json"))
    (tmp_path / "prometheus.yml").write_text(config)
    done = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def metrics_text(pf_dirs) -> str:
    """/metrics of a real host with a console and a running loopback session, read with the admin token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = HostProcess(pf_dirs, f"[console]\nport = {port}\n[discovery]\nadvertise = false\n", console=True)
    try:
        host.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.bind(("127.0.0.1", 0))
            host.call("stats.start")  # session windows (fps, Mb/s, latency) exist while measuring
            host.call("sessions.loopback", port=sink.getsockname()[1], seconds=30, width=320, height=180)
            token = (pf_dirs["config"] / "mgmt-token").read_text().strip()
            text = ""
            deadline = time.monotonic() + 30
            while "punktfunk_stage_latency_p99_seconds{" not in text and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                                 headers={"Authorization": f"Bearer {token}"})
                    text = urllib.request.urlopen(req, timeout=5).read().decode()
                except OSError:
                    continue
        assert "punktfunk_session_fps{" in text, host.log()[-3000:]
        return text
    finally:
        host.stop()
        host.ipc.close()


def test_promtool_check_metrics_passes_on_metrics_with_a_live_session(metrics_text):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "metrics"], input=metrics_text, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_dashboard_asks_only_for_metrics_the_console_exports(metrics_text):
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["definition"])
    used = {m for e in exprs for m in re.findall(r"\bpunktfunk_[a-z0-9_]+\b", e)} - {"punktfunk_host"}
    exported = set(re.findall(r"^# TYPE (punktfunk_[a-z0-9_]+) ", metrics_text, re.M))
    assert used and used <= exported, sorted(used - exported)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for what in ("frames per second", "wire rate", "latency", "loss", "sessions per host"):
        assert what in titles


def test_a_console_is_advertised_where_it_listens():
    assert advertise.advertised_addresses("127.0.0.1") == ["127.0.0.1"]
    assert advertise.advertised_addresses("192.0.2.7") == ["192.0.2.7"]
    assert all(not a.startswith("127.") for a in advertise.advertised_addresses("0.0.0.0")) or \
        advertise.advertised_addresses("0.0.0.0") == ["127.0.0.1"]
    assert advertise.advertisement({"discovery": {"advertise": False}, "console": {"enabled": True, "port": 1}},
                               "h", 2) is None
    assert advertise.advertisement({"console": {"enabled": False, "port": 1}}, "h", 2) is None  # no /metrics to offer
    port, addrs, props = advertise.advertisement({"console": {"enabled": True, "port": 47990, "bind": "127.0.0.1"}},
                                             "h", 47992)
    assert (port, addrs, props["metrics"], props["native"]) == (47990, ["127.0.0.1"], "/metrics", "47992")
