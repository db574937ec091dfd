"""The core against real host processes: sessions, timing truth, faults, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

from punktfunk_core.window import LOOPBACK_LAYOUT

PLUGIN_DIR = str(Path(__file__).parent / "plugins")
#: what the loopback path measures (the core's UDP sender times its socket calls: sock_us)
MEASURED_OPTIONAL = {"window_ms", "frames_dropped", "send_dropped", "host_p50_us", "host_p99_us", "sock_us"}
CLIENT_ONLY = {"packets_dropped", "fec_recovered", "frames_unrecoverable", "delivered_fps", "rtt_us", "fec_us",
               "seal_us"}


def plugin_env(samples: Path, **extra: str) -> dict[str, str]:
    env = {
        "PUNKTFUNK_PLUGINS": "pf_testplugins",
        "PYTHONPATH": os.pathsep.join([PLUGIN_DIR, os.environ.get("PYTHONPATH", "")]),
        "PF_TEST_SAMPLES": str(samples),
    }
    env.update(extra)
    return env


class UdpSink:
    """The loopback session's receiver: counts datagrams and bytes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]

    def drain(self, seconds: float) -> tuple[int, int]:
        packets = nbytes = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            packets += 1
            nbytes += len(data)
        return packets, nbytes

    def close(self) -> None:
        self.sock.close()


def read_samples(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_no_sessions(host, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not host.call("sessions.list"):
            return
        time.sleep(0.1)
    raise AssertionError(f"sessions still running: {host.call('sessions.list')}")


def test_loopback_session_testpattern_x264_samples(host_factory, pf_dirs):
    samples = pf_dirs["base"] / "samples.jsonl"
    host = host_factory(env=plugin_env(samples, PUNKTFUNK_PERF="1"))
    sink = UdpSink()
    try:
        info = host.call("sessions.loopback", port=sink.port, seconds=3.4, width=640, height=360, fps=60,
                         capture="testpattern", encoder="x264")
        assert info["kind"] == "loopback" and info["encoder_backend"] == "x264"
        packets, nbytes = sink.drain(3.8)
        wait_no_sessions(host)
    finally:
        sink.close()
    assert packets > 100 and nbytes > 50_000, (packets, nbytes)
    got = [s["sample"] for s in read_samples(samples) if s["kind"] == "loopback"]
    assert len(got) >= 3, host.log()
    want = [name for name, _ in LOOPBACK_LAYOUT.stages]
    assert want == ["capture", "encode", "queue", "packetize", "send"]
    for i, s in enumerate(got):
        assert [st["name"] for st in s["stages"]] == want
        assert [st["name"] for st in s["detail"]] == ["encode.submit", "encode.receive"]
        if i < len(got) - 1:  # the session's last window is shorter: its rate is noisy
            assert abs(s["fps"] - 60) <= 3.0, s["fps"]  # within 5 %
            assert abs(s["window_ms"] - 1000) < 100, s["window_ms"]
            assert s["sock_us"] > 0  # the sender's own split: time inside socket calls
        for st in s["stages"]:
            assert 0 <= st["p50_us"] <= st["p99_us"], st
        assert s["mbps"] > 0 and s["bitrate_kbps"] > 0
        assert not (CLIENT_ONLY & s.keys()), f"unmeasured counters present: {CLIENT_ONLY & s.keys()}"
        assert set(s) - {"t_ms", "session_id", "stages", "detail", "fps", "repeat_fps", "mbps",
                         "bitrate_kbps"} <= MEASURED_OPTIONAL


def test_encode_timing_tells_the_truth(host_factory, pf_dirs):
    """An encoder that takes exactly 4 ms shows encode p50 of 4 ms ± 0.5 ms."""
    samples = pf_dirs["base"] / "samples.jsonl"
    host = host_factory(env=plugin_env(samples, PUNKTFUNK_PERF="1"))
    sink = UdpSink()
    try:
        host.call("sessions.loopback", port=sink.port, seconds=3.2, width=320, height=180, fps=60,
                  capture="flat", encoder="sleepy", encoder_options={"encode_ms": 4.0})
        sink.drain(3.5)
        wait_no_sessions(host)
    finally:
        sink.close()
    got = [s["sample"] for s in read_samples(samples)]
    assert len(got) >= 2, host.log()
    for s in got:
        enc = next(st for st in s["stages"] if st["name"] == "encode")
        assert 3500 <= enc["p50_us"] <= 4500, enc
        cap = next(st for st in s["stages"] if st["name"] == "capture")
        assert cap["p50_us"] < 1000, cap  # the flat source is nearly free


def test_measurement_off_takes_no_samples(host_factory, pf_dirs):
    samples = pf_dirs["base"] / "samples.jsonl"
    host = host_factory(env=plugin_env(samples, PUNKTFUNK_PERF="0"))
    sink = UdpSink()
    try:
        host.call("sessions.loopback", port=sink.port, seconds=3.5, width=320, height=180, fps=60,
                  capture="flat", encoder="sleepy", encoder_options={"encode_ms": 1.0})
        packets, _ = sink.drain(1.3)
        host.call("sessions.list")
        packets += sink.drain(1.2)[0]
        (info,) = host.call("sessions.list")  # rates from counters, no per-frame clock needed
        packets += sink.drain(1.3)[0]
        wait_no_sessions(host)
    finally:
        sink.close()
    assert packets > 100  # it streamed ...
    assert read_samples(samples) == []  # ... and nothing was measured
    assert info["fps_measured"] is None and "last_sample" not in info
    assert abs(info["fps_recent"] - 60) <= 4, info
    assert info["frames_sent"] >= 100 and info["bytes_sent"] >= 100 * 1000 and info["mbps_recent"] > 0.3


def test_failing_stage_ends_only_its_session(host_factory, pf_dirs):
    samples = pf_dirs["base"] / "samples.jsonl"
    host = host_factory(env=plugin_env(samples))
    sink = UdpSink()
    try:
        host.call("sessions.loopback", port=sink.port, seconds=0, width=320, height=180, fps=60,
                  capture="flat", encoder="explode", encoder_options={"after": 20})
        wait_no_sessions(host, timeout=5)
        assert "failing on purpose after 20 frames" in host.log()
        assert "ending the session" in host.log()
        # the host keeps running and serves a new session
        assert host.call("host.status")["sessions"] == 0
        info = host.call("sessions.loopback", port=sink.port, seconds=1, width=320, height=180, fps=30,
                         capture="flat", encoder="sleepy", encoder_options={"encode_ms": 0.5})
        assert info["state"] in ("starting", "running")
        packets, _ = sink.drain(1.0)
        assert packets > 0
        wait_no_sessions(host)
    finally:
        sink.close()
    assert host.proc.poll() is None


def test_a_plugin_whose_hooks_raise_keeps_no_other_plugin_from_its_hooks(host_factory, pf_dirs):
    """Each plugin's hook is called on its own: one that raises is logged by name,
    and the plugins after it still see the session start, its windows and its end."""
    samples, events = pf_dirs["base"] / "samples.jsonl", pf_dirs["base"] / "events.jsonl"
    env = plugin_env(samples, PUNKTFUNK_PERF="1", PF_TEST_EVENTS=str(events),
                     PUNKTFUNK_PLUGINS="pf_testplugins,pf_testplugins_faulty")
    host = host_factory(env=env)
    sink = UdpSink()
    try:
        info = host.call("sessions.loopback", port=sink.port, seconds=2.5, width=320, height=180, fps=30,
                         capture="flat", encoder="sleepy", encoder_options={"encode_ms": 0.5})
        sink.drain(2.8)
        wait_no_sessions(host)
    finally:
        sink.close()
    seen = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    assert seen == [{"event": "started", "session": info["id"]}, {"event": "ended", "session": info["id"]}], seen
    assert len(read_samples(samples)) >= 2, host.log()
    log = host.log()
    for hook in ("session_started", "stats_window", "session_ended"):
        assert f"plugin pf_testplugins_faulty: hook {hook} failed" in log, hook
    assert host.call("host.status")["sessions"] == 0


def test_sigterm_stops_within_two_seconds(host_factory, pf_dirs):
    host = host_factory(env=plugin_env(pf_dirs["base"] / "s.jsonl"))
    sink = UdpSink()
    try:
        host.call("sessions.loopback", port=sink.port, seconds=0, width=640, height=360, fps=60,
                  capture="testpattern", encoder="x264")
        sink.drain(0.5)
        t0 = time.monotonic()
        host.proc.send_signal(signal.SIGTERM)
        rc = host.proc.wait(5)
        took = time.monotonic() - t0
    finally:
        sink.close()
    assert rc == 0, host.log()
    assert took < 2.0, f"stopping took {took:.2f}s"
    assert not (pf_dirs["runtime"] / "host.sock").exists()


def test_ipc_socket_and_dirs_are_owner_only(host_factory, pf_dirs):
    host_factory()
    run = pf_dirs["runtime"]
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE(pf_dirs["config"].stat().st_mode) == 0o700
    sock = run / "host.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0


def test_bad_ipc_requests_get_errors_not_crashes(host_factory):
    host = host_factory()
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.RCVTIMEO, 2000)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(host.ipc.endpoint)
    for raw in (b"", b"not json", b"[1,2]", b'{"cmd": 5}', b'{"cmd": "nope"}',
                b'{"cmd": "sessions.stop", "args": {"id": "x"}}',
                b'{"cmd": "sessions.loopback", "args": {"port": 99999}}', b"\xff" * 1000):
        s.send(raw)
        reply = json.loads(s.recv())
        assert reply["ok"] is False and reply["error"], (raw, reply)
    s.close()
    assert host.call("host.status")["pid"] == host.proc.pid


def test_status_command_names_protocols_and_sessions_in_words(host_factory):
    import subprocess
    import sys

    from conftest import pf_env

    host = host_factory()
    sink = UdpSink()
    try:
        info = host.call("sessions.loopback", port=sink.port, seconds=30, width=320, height=180, fps=30)

        def status(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "status", *extra],
                                  capture_output=True, text=True, env=pf_env(host.dirs), timeout=60)

        # the session's rates come from its counters (no capture armed): wait until a second has passed
        wait_for_rates = time.monotonic() + 10
        while host.call("sessions.get", id=info["id"]).get("fps_recent") is None and time.monotonic() < wait_for_rates:
            time.sleep(0.2)
        time.sleep(1.2)
        r = status()
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("host ") and f"pid {host.proc.pid}" in lines[0]
        assert max(len(ln) for ln in lines) <= 120, r.stdout  # lines a terminal shows, not one long line
        protocols = host.call("host.status")["protocols"]
        assert protocols, "the default host runs at least one protocol"
        assert lines[1] == "protocols:"
        for name in protocols:
            (line,) = [ln for ln in lines if ln.startswith(f"  {name} ")]
            assert "{" not in line and "=" in line, line  # words, not a JSON dump
        (row,) = [ln for ln in lines if ln.split()[:2] == [str(info["id"]), "loopback"]]
        assert "320x180@30" in row and " fps " in row and " Mb/s " in row and "running" in row, row
        fps = float(row.split(" fps")[0].split()[-1])
        assert 20 <= fps <= 35, row  # the session's fps, next to its Mb/s
        full = json.loads(status("--json").stdout)
        assert set(full["host"]["protocols"]) == set(protocols)
        assert [s["id"] for s in full["sessions"]] == [info["id"]]
    finally:
        host.call("sessions.stop", id=info["id"])
        sink.close()
