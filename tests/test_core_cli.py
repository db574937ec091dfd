"""The ``punktfunk`` command line as a user runs it: real subprocesses, a real host."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import pf_env

PF = [sys.executable, "-m", "punktfunk_core.cli"]


def pf(host, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PF, *args], env=pf_env(host.dirs), capture_output=True, text=True, timeout=timeout)


def test_readme_loopback_command_runs_its_seconds_and_says_what_it_sent(host_factory):
    host = host_factory(config='[stream]\nwidth = 320\nheight = 180\nfps = 30\nencoder = "x264"\n')
    t0 = time.monotonic()
    r = pf(host, "loopback", "--seconds", "2")  # README: `punktfunk loopback --seconds 10`, no --port needed
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took >= 2.0, took  # it ran for its seconds, it did not return at once
    first, sent, *rest = r.stdout.splitlines()
    assert first.startswith("loopback session ") and "320x180@30 h264 via x264, 2 s" in first, r.stdout
    m = re.match(r"sent (\d+) frames in (\d+) datagrams, [\d.]+ MB in ([\d.]+) s \(([\d.]+) fps, [\d.]+ Mb/s\)", sent)
    assert m, r.stdout
    frames, datagrams, seconds, fps = int(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert 40 <= frames <= 70 and datagrams >= frames and 1.8 <= seconds <= 2.5 and 20 <= fps <= 33, r.stdout
    # nobody listens on the port it picked: the kernel refuses datagrams, and the output says that is expected
    (refused,) = rest
    assert re.match(r"\d+ datagrams refused by the kernel \(expected: nobody listens on that port", refused), r.stdout
    assert host.call("sessions.list") == []


def test_loopback_json_gives_the_final_counters(host_factory):
    host = host_factory(config='[stream]\nencoder = "x264"\n')
    r = pf(host, "loopback", "--seconds", "1", "--width", "160", "--height", "90", "--fps", "30", "--json")
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["state"] == "ended" and final["kind"] == "loopback" and (final["width"], final["height"]) == (160, 90)
    assert final["frames_sent"] > 15 and final["packets_sent"] >= final["frames_sent"] and "send_dropped" in final
    assert 900 <= final["duration_ms"] <= 1600, final
    # the host still answers for the ended session (sessions.get keeps recent ones)
    assert host.call("sessions.get", id=final["id"])["frames_sent"] == final["frames_sent"]


@pytest.mark.parametrize("command", [["loopback"], ["plugins"], ["status"], ["stats", "list"], ["stats", "show"],
                                     ["native", "clients"], ["gamestream", "status"]])
def test_every_option_has_help_text(command):
    r = subprocess.run([*PF, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    options = r.stdout.split("options:", 1)[1]
    # an option line with nothing after its flags: "  --json" alone
    bare = [ln for ln in options.splitlines() if re.fullmatch(r"\s+(-\S+(, )?)+( [A-Z_]+)?", ln)]
    helped = re.findall(r"^\s+(--[\w-]+)", options, re.M)
    assert helped and not bare, (command, bare)


def test_plugins_into_a_pipe_that_closes_early_ends_quietly():
    r = subprocess.run(f"{sys.executable} -m punktfunk_core.cli plugins | head -2", shell=True, capture_output=True,
                       text=True, timeout=60)
    assert len(r.stdout.splitlines()) == 2
    assert r.stderr == "", r.stderr  # no BrokenPipeError traceback


@pytest.mark.parametrize("section", ["nosuch", "stream"])
def test_serve_enable_of_a_section_that_cannot_be_enabled_is_a_config_error(tmp_path, section):
    dirs = {"config": tmp_path / "config", "runtime": tmp_path / "run"}
    r = subprocess.run([*PF, "serve", "--no-console", "--enable", section], env=pf_env(dirs), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"--enable {section}: no plugin has a config section '{section}' that can be enabled" in r.stderr
    assert not (tmp_path / "run").exists()  # it stopped before creating anything


def test_the_stop_flag_takes_every_signal_of_a_storm_without_a_lock():
    """serve and console wait on the flag their signal handlers set. A threading.Event there once
    hung serve on SIGTERM (the handler blocked on the lock the main thread's wait() held; py-spy
    showed it); the flag takes no lock, so a storm of signals neither blocks nor gets lost."""
    code = textwrap.dedent("""
        import os, signal, threading, time
        from punktfunk_core.cli import stop_on_signals
        flag = stop_on_signals((signal.SIGUSR1,))
        sent, done = [0], threading.Event()
        def storm():
            while not done.is_set():
                os.kill(os.getpid(), signal.SIGUSR1)
                sent[0] += 1
        threading.Thread(target=storm, daemon=True).start()
        seen, end = 0, time.monotonic() + 2
        while time.monotonic() < end:
            if flag.wait(0.01):
                flag.clear()
                seen += 1
        done.set()
        flag.clear()
        os.kill(os.getpid(), signal.SIGUSR1)  # one more after the storm: still taken
        print(seen, sent[0], flag.wait(5))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    seen, sent, last = r.stdout.split()
    assert int(sent) > 100 and int(seen) > 10 and last == "True", r.stdout
