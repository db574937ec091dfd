"""`punktfunk doctor` against real parts: a private Xvfb, a private PulseAudio, sockets the test holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pf_env
from x11_helpers import private_xvfb


def doctor(dirs: dict[str, Path], config: str = "", env: dict[str, str] | None = None,
           drop: tuple[str, ...] = ("DISPLAY",), json_out: bool = True) -> tuple[int, Any, str]:
    """Run the real command; (exit status, parsed JSON or text, stderr)."""
    path = dirs["base"] / "host.toml"
    # no test takes the default ports a real host beside the suite may hold
    native = "" if "[native]" in config else "[native]\nport = 0\n"
    path.write_text("[console]\nenabled = false\n" + native + config)
    e = pf_env(dirs, **(env or {}))
    for key in drop:
        if key not in (env or {}):
            e.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "punktfunk_core.cli", "doctor", "-c", str(path),
                           *(["--json"] if json_out else [])], env=e, capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout) if json_out else done.stdout, done.stderr


def finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["check"] == check]
    assert found, f"no {check} finding in {report}"
    return found[0]


def test_a_private_xvfb_is_reachable_with_xtest_and_cursor_support(pf_dirs):
    with private_xvfb(320, 240) as xvfb:
        rc, report, _ = doctor(pf_dirs, env={"DISPLAY": xvfb.name})
    assert rc == 0
    assert finding(report, "x11-display")["status"] == "ok"
    assert xvfb.name in finding(report, "x11-display")["message"]
    assert finding(report, "xtest")["status"] == "ok"
    assert finding(report, "cursor")["status"] == "ok"


def test_without_a_display_the_finding_says_how_to_get_one(pf_dirs):
    rc, report, _ = doctor(pf_dirs)
    display = finding(report, "x11-display")
    assert display["status"] == "warn"
    assert "DISPLAY is not set" in display["message"] and "DISPLAY=" in display["fix"]
    assert rc == 0, "the default capture (testpattern) needs no display"


def test_x11_capture_without_a_display_means_the_host_cannot_stream(pf_dirs):
    rc, text, err = doctor(pf_dirs, "[stream]\ncapture = \"x11\"\n", json_out=False)
    assert rc == 1
    line = next(line for line in text.splitlines() if line.startswith("fail  capture"))
    assert "no X11 display" in line and "—" in line, line
    assert "cannot stream" in err


def test_an_x_server_that_never_answers_is_a_finding_not_a_hang(pf_dirs):
    """A socket that accepts X connections and never sends the setup reply (a frozen server)."""
    num = next(n for n in range(600 + os.getpid() % 500, 2000) if not Path(f"/tmp/.X11-unix/X{n}").exists()
               and not Path(f"/tmp/.X{n}-lock").exists())
    Path("/tmp/.X11-unix").mkdir(mode=0o1777, exist_ok=True)
    frozen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    frozen.bind(f"/tmp/.X11-unix/X{num}")
    frozen.listen(4)
    try:
        t0 = time.monotonic()
        rc, report, _ = doctor(pf_dirs, env={"DISPLAY": f":{num}"})
        took = time.monotonic() - t0
    finally:
        frozen.close()
        os.unlink(f"/tmp/.X11-unix/X{num}")
    display = finding(report, "x11-display")
    assert display["status"] == "fail" and "no answer within" in display["message"], display
    assert took < 60
    assert rc == 0


def test_a_private_sound_server_and_its_monitor_source_are_found(pf_dirs, sound_server):
    rc, report, _ = doctor(pf_dirs, env=sound_server.env)
    sound = finding(report, "sound")
    assert sound["status"] == "ok", sound
    assert f"{sound_server.sink}.monitor" in sound["message"]
    assert rc == 0


def test_a_sound_server_that_never_answers_is_a_finding_not_a_hang(pf_dirs):
    if not (os.path.exists("/usr/bin/pactl") or os.path.exists("/usr/local/bin/pactl")):
        pytest.skip("pactl is not installed (apt-get install pulseaudio-utils)")
    with tempfile.TemporaryDirectory(prefix="pf-pulse-") as d:
        frozen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        frozen.bind(f"{d}/native")
        frozen.listen(4)
        try:
            rc, report, _ = doctor(pf_dirs, env={"PULSE_SERVER": f"unix:{d}/native"})
        finally:
            frozen.close()
    sound = finding(report, "sound")
    assert sound["status"] == "warn" and "did not answer within" in sound["message"], sound
    assert rc == 0


def test_a_port_held_by_another_socket_is_reported_busy_and_the_host_cannot_stream(pf_dirs):
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        rc, report, _ = doctor(pf_dirs, f"[native]\nbind = \"127.0.0.1\"\nport = {port}\n")
    finally:
        holder.close()
    busy = [f for f in report["findings"] if f["check"] == "port" and f["status"] == "fail"]
    assert len(busy) == 1, report
    assert f"127.0.0.1:{port}" in busy[0]["message"] and "busy" in busy[0]["message"]
    assert "punktfunk status" in busy[0]["fix"]
    assert finding(report, "protocols")["status"] == "fail"
    assert report["can_stream"] is False and rc == 1


def test_the_same_port_free_again_lets_the_host_stream(pf_dirs):
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    rc, report, _ = doctor(pf_dirs, f"[native]\nbind = \"127.0.0.1\"\nport = {port}\n")
    port_ok = next(f for f in report["findings"] if f["check"] == "port" and f["status"] == "ok")
    assert f"tcp/{port}" in port_ok["message"]
    assert report["can_stream"] is True and rc == 0


def test_json_lists_every_check_with_a_status(pf_dirs):
    rc, report, _ = doctor(pf_dirs)
    checks = {f["check"] for f in report["findings"]}
    assert {"x11-display", "sound", "uinput", "nvenc", "isa-l", "sealer", "capture", "encoder", "gamestream",
            "firewall"} <= checks
    assert all(f["status"] in ("ok", "warn", "fail", "info") for f in report["findings"])
    assert finding(report, "gamestream")["message"].startswith("GameStream is off")
    assert rc == (0 if report["can_stream"] else 1)


def test_an_invalid_config_exits_2_with_its_problem(pf_dirs):
    rc, text, err = doctor(pf_dirs, "[stream]\nfps = 0\n", json_out=False)
    assert rc == 2 and "stream.fps" in err


def _plugin_site(base: Path, name: str, code: str) -> str:
    """A third-party plugin as pip would leave it: a module and a dist-info with its entry point."""
    site = base / f"site-{name}"
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[punktfunk.plugins]\n{name} = {name}\n")
    (site / f"{name}.py").write_text(code)
    return str(site)


def test_a_third_party_plugin_reports_its_findings_and_its_busy_port_stops_its_protocol(pf_dirs):
    """Doctor asks every plugin (doctor_findings, listening_ports); the core knows none of them."""
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    site = _plugin_site(pf_dirs["base"], "pf_thirdparty", f'''
from punktfunk_core import hookimpl
from punktfunk_core.doctor import Finding, Port

@hookimpl
def doctor_findings(config, register):
    register(Finding("thirdparty-lib", "warn", "libthirdparty is missing", "apt-get install libthirdparty"))

@hookimpl
def listening_ports(config, register):
    register(Port("native", "thirdparty relay", "tcp", "127.0.0.1", {port}))
''')
    try:
        rc, report, _ = doctor(pf_dirs, env={"PYTHONPATH": site})
    finally:
        holder.close()
    lib = finding(report, "thirdparty-lib")
    assert (lib["status"], lib["message"], lib["fix"]) == ("warn", "libthirdparty is missing",
                                                           "apt-get install libthirdparty")
    busy = [f for f in report["findings"] if f["check"] == "port" and f["status"] == "fail"]
    assert len(busy) == 1 and f"127.0.0.1:{port} (thirdparty relay) is busy" in busy[0]["message"], report
    assert finding(report, "protocols")["status"] == "fail"  # native was the only protocol on
    assert report["can_stream"] is False and rc == 1


def test_a_plugin_whose_doctor_hook_raises_is_a_finding_and_the_rest_still_report(pf_dirs):
    site = _plugin_site(pf_dirs["base"], "pf_brokendoctor", '''
from punktfunk_core import hookimpl

@hookimpl
def doctor_findings(config, register):
    raise RuntimeError("probe exploded")

@hookimpl
def listening_ports(config, register):
    register(("tcp", 1))  # not a Port
''')
    rc, report, _ = doctor(pf_dirs, env={"PYTHONPATH": site})
    failed = [f["message"] for f in report["findings"] if "pf_brokendoctor" in f["message"]]
    assert any("doctor_findings failed" in m and "probe exploded" in m for m in failed), report
    assert any("listening_ports failed" in m and "takes a Port" in m for m in failed), report
    assert {"x11-display", "sound", "sealer", "isa-l", "capture", "encoder"} <= {f["check"] for f in report["findings"]}
    assert rc == 0 and report["can_stream"] is True
