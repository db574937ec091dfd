"""Measurement truth, checked from the outside.

A third-party probe plugin (``tests/punktfunk-probe-plugin``, pip-installed
into a private site directory and found through its own entry point, like any
plugin) puts known delays into known stages of a real punktfunk/1 session; the
real reference client injects known loss. The host's stats capture must show
the delay in the stage that holds it and nowhere else, the client's loss totals
exactly, and nothing it did not measure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
PROBE = TESTS / "punktfunk-probe-plugin"
CLIENT_FIELDS = {"packets_dropped", "fec_recovered", "frames_unrecoverable", "delivered_fps", "rtt_us"}
# pace_percent = 0: the send step is the socket only, so its time does not wander with sleep precision;
# one x264 thread: its time does not wander with what else the machine runs
HOST_TOML = """
[native]
bind = "127.0.0.1"
port = 0
pace_percent = 0
[stream]
capture = "probe"
encoder = "probe"
encoder_options = { inner = "x264", threads = 1 }
"""


@pytest.fixture(scope="module")
def probe_site(tmp_path_factory) -> Path:
    """pip-install the probe (its own pyproject and entry point) into a private site dir."""
    target = tmp_path_factory.mktemp("probe-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PROBE)], check=True, capture_output=True, timeout=240)
    assert list(target.glob("punktfunk_probe_plugin-*.dist-info"))
    return target


@pytest.fixture
def probe_host(host_factory, probe_site) -> Any:
    h = host_factory(config=HOST_TOML, env={"PYTHONPATH": os.pathsep.join(
        p for p in (str(probe_site), os.environ.get("PYTHONPATH", "")) if p)})
    plugins = {p["name"]: p for p in h.call("plugins.list")}
    assert plugins["probe"]["distribution"] == "punktfunk-probe-plugin" and not plugins["probe"]["error"]
    deadline = time.monotonic() + 15
    while "native" not in h.call("host.status")["protocols"]:
        assert time.monotonic() < deadline, h.log()
        time.sleep(0.05)
    h.native_port = h.call("host.status")["protocols"]["native"]["port"]
    h.call("pairing.pin", protocol="native", pin="4821")
    return h


def stream(h: Any, tmp_path: Path, *args: str, seconds: float = 5.0, size: tuple[int, int] = (320, 180)
           ) -> tuple[dict, dict]:
    """One real client session inside one capture: (client summary, capture)."""
    h.call("stats.start")
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "client-cfg"))
    env.pop("PUNKTFUNK_IPC", None)
    proc = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port",
                           str(h.native_port), "--pin", "4821", "--seconds", str(seconds), "--json", "--details",
                           "--width", str(size[0]), "--height", str(size[1]), "--fps", "30", *args],
                          env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    meta = h.call("stats.stop")  # the session ended with the client: its last window is in
    return json.loads(proc.stdout.strip().splitlines()[-1]), h.call("stats.load", id=meta["id"])


def p50s(h: Any, capture: dict) -> dict[str, float]:
    """Median of the window p50s per stage and detail entry (the summary's p50)."""
    summary = h.call("stats.summary", id=capture["meta"]["id"])
    return {st["name"]: st["p50_us"] / 1000 for st in summary["stages"] + summary["detail"]}


def test_a_known_delay_shows_in_its_own_stage_and_nowhere_else(probe_host, tmp_path):
    h = probe_host
    runs, held = {}, {}
    for name, delay in (("none", None), ("grab_ms", 5), ("submit_ms", 5), ("receive_ms", 5)):
        h.call("probe.delays", **{"grab_ms": 0, "submit_ms": 0, "receive_ms": 0, **({name: delay} if delay else {})})
        _, cap = stream(h, tmp_path, size=(160, 90))
        assert cap["meta"]["encoder_backend"] == "probe+x264"
        runs[name] = p50s(h, cap)
        if delay:
            # what the probe really held per frame (a sleep wakes a little late): 5 ms and a bit
            held[name] = h.call("probe.held")[name]
            assert 5.0 <= held[name] < 7.0, held
    base = runs["none"]
    # where each delay must land: the stage, and its part in the finer split
    expect = {"grab_ms": {"capture"}, "submit_ms": {"encode", "encode.submit"},
              "receive_ms": {"encode", "encode.receive"}}
    for run, moved in expect.items():
        for name, p50 in runs[run].items():
            shift = p50 - base[name]
            if name in moved:
                assert abs(shift - held[run]) <= 0.5, (run, name, shift, held[run], runs[run], base)
            else:
                assert abs(shift) <= 0.5, (run, name, shift, runs[run], base)


def test_the_capture_holds_exactly_the_loss_the_client_counted(probe_host, tmp_path):
    # 12 % loss against 20 % FEC: most blocks are repaired, some are lost for good
    client, cap = stream(probe_host, tmp_path, "--fec", "20", "--loss", "0.12", "--loss-seed", "7")
    details = client["details"]
    samples = cap["samples"]
    assert details["injected_loss"] > 200 and client["shards_recovered"] > 0, client
    assert client["frames_unrecoverable"] > 0, client
    # (a window in which no report arrived has none of the client's fields)
    total = {k: sum(s.get(k, 0) for s in samples) for k in ("packets_dropped", "fec_recovered", "frames_unrecoverable")}
    assert total == {"packets_dropped": client["packets_lost"], "fec_recovered": client["shards_recovered"],
                     "frames_unrecoverable": client["frames_unrecoverable"]}, (total, client)
    # the client's own rate is there, next to the host's: it decoded fewer frames than were sent
    summary = probe_host.call("stats.summary", id=cap["meta"]["id"])
    assert abs(summary["delivered_fps"]["mean"] - client["fps"]) <= 0.15 * client["fps"], (summary, client)
    assert summary["delivered_fps"]["mean"] < summary["fps"]["mean"], summary
    # the session id in the capture is the one the host gave the session (and `punktfunk status` shows)
    assert {s["session_id"] for s in samples} == {details["session_id"]}


def test_what_a_path_cannot_measure_is_absent(probe_host, tmp_path):
    h = probe_host
    client, cap = stream(h, tmp_path, "--fec", "0", seconds=3.0)
    assert client["frames_unrecoverable"] == 0
    for s in cap["samples"]:
        # no FEC: nothing recovered, no FEC time; but what the client did count is there, as 0
        assert "fec_recovered" not in s and "fec_us" not in s, s
    reported = [s for s in cap["samples"] if "delivered_fps" in s]
    assert reported and all(s["packets_dropped"] == 0 and s["frames_unrecoverable"] == 0 for s in reported)
    # a capture in which no session ran: no placeholders for what a session would have said
    h.call("stats.start")
    meta = h.call("stats.stop")
    assert meta is not None and set(meta) == {"id", "started_unix_ms", "duration_ms", "sample_count", "truncated"}
    saved = json.loads((h.dirs["config"] / "captures" / f"{meta['id']}.json").read_text())
    assert saved["meta"] == meta
    # a path without a client (loopback): no client field at all
    h.call("stats.start")
    info = h.call("sessions.loopback", port=9, seconds=1.5, width=160, height=90, fps=30)
    deadline = time.monotonic() + 15
    while h.call("sessions.list"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    loop = h.call("stats.load", id=h.call("stats.stop")["id"])
    assert loop["samples"] and all(s["session_id"] == info["id"] for s in loop["samples"])
    assert not any(CLIENT_FIELDS & s.keys() for s in loop["samples"]), loop["samples"]


@pytest.mark.parametrize("how", ["operator ends it", "client Ctrl-C", "host stops"])
def test_every_way_a_session_ends_keeps_its_last_window(probe_host, tmp_path, how):
    h = probe_host
    h.call("stats.start")
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "client-cfg"))
    env.pop("PUNKTFUNK_IPC", None)
    client = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port",
                               str(h.native_port), "--pin", "4821", "--seconds", "60", "--json", "--width", "320",
                               "--height", "180", "--fps", "30", "--loss", "0.05", "--loss-seed", "11"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not h.call("sessions.list"):
            assert time.monotonic() < deadline and client.poll() is None, client.stderr.read() if client.poll() else ""
            time.sleep(0.1)
        time.sleep(3.1)  # one whole 2 s window and a part of the next
        (session,) = h.call("sessions.list")
        if how == "operator ends it":
            h.call("sessions.stop", id=session["id"])
        elif how == "client Ctrl-C":
            client.send_signal(signal.SIGINT)
        else:
            h.stop()
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    if how == "host stops":  # the host saved the armed capture on its way out
        (path,) = (h.dirs["config"] / "captures").glob("*.json")
        samples = json.loads(path.read_text())["samples"]
    else:
        samples = h.call("stats.load", id=h.call("stats.stop")["id"])["samples"]
    assert len(samples) == 2 and samples[1]["window_ms"] < 2000, samples  # the cut-short last window is there
    assert summary["packets_lost"] > 0, summary
    total = {k: sum(s.get(k, 0) for s in samples) for k in ("packets_dropped", "fec_recovered", "frames_unrecoverable")}
    assert total == {"packets_dropped": summary["packets_lost"], "fec_recovered": summary["shards_recovered"],
                     "frames_unrecoverable": summary["frames_unrecoverable"]}, (how, total, summary)
