"""Random loss on the punktfunk/1 path: 10 % and 20 %, injected by the kernel
(tc netem on a veth into a network namespace where we can create one,
otherwise inside the client), reported as frames delivered / frames sent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from test_native_e2e import client_env, summary_of
from test_security import _run

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def lossy_ns():
    """Namespace 'client side' behind a veth whose host side has a netem qdisc."""
    if not (IS_ROOT and shutil.which("ip") and shutil.which("tc")):
        yield None
        return
    tag = os.getpid() % 100000
    name, hif, nif = f"pfloss{tag}", f"pflh{tag}", f"pfln{tag}"
    steps = [("ip", "netns", "add", name), ("ip", "link", "add", hif, "type", "veth", "peer", "name", nif),
             ("ip", "link", "set", nif, "netns", name), ("ip", "addr", "add", "10.231.78.1/30", "dev", hif),
             ("ip", "link", "set", hif, "up"),
             ("ip", "netns", "exec", name, "ip", "addr", "add", "10.231.78.2/30", "dev", nif),
             ("ip", "netns", "exec", name, "ip", "link", "set", nif, "up"),
             ("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"),
             ("tc", "qdisc", "add", "dev", hif, "root", "netem", "loss", "0%")]
    ok = True
    for cmd in steps:
        if _run(*cmd).returncode != 0:
            ok = False
            break
    try:
        yield {"ns": name, "dev": hif, "host_ip": "10.231.78.1"} if ok else None
    finally:
        _run("ip", "link", "del", hif)
        _run("ip", "netns", "del", name)


@pytest.mark.slow
def test_native_under_10_and_20_percent_loss(host_factory, tmp_path, lossy_ns, figures):
    bind = lossy_ns["host_ip"] if lossy_ns else "127.0.0.1"
    h = host_factory(config=f'[native]\nbind = "{bind}"\nport = 0\nkeepalive_timeout_s = 5\n'
                            '[stream]\nencoder = "x264"\n')
    deadline = time.monotonic() + 15
    while "native" not in (st := h.call("host.status"))["protocols"] and time.monotonic() < deadline:
        time.sleep(0.05)
    port = st["protocols"]["native"]["port"]
    results = {}
    for i, loss in enumerate((0.10, 0.20)):
        args = [sys.executable, "-m", "punktfunk_core.cli", "client", bind, "--port", str(port), "--seconds", "6",
                "--json", "--details", "--width", "640", "--height", "360", "--bitrate", "3000", "--fec", "20"]
        if i == 0:
            h.call("pairing.pin", protocol="native", pin="5150")
            args += ["--pin", "5150"]
        if lossy_ns:
            r = _run("tc", "qdisc", "change", "dev", lossy_ns["dev"], "root", "netem", "loss", f"{loss * 100:.0f}%")
            assert r.returncode == 0, r.stderr
            args = ["ip", "netns", "exec", lossy_ns["ns"], *args]
            how = "tc netem on a veth into a network namespace"
        else:
            args += ["--loss", str(loss), "--loss-seed", "7"]
            how = "in-process receive loss in the client"
        proc = subprocess.run(args, env=client_env(tmp_path), capture_output=True, text=True, timeout=90)
        s = summary_of(proc)
        s.pop("details", None)
        results[loss] = s
        delivered = s["frames_decoded"] / max(1, s["frames_expected"])
        figures(f"punktfunk/1 frames delivered / sent at {loss:.0%} loss, FEC 20 % ({how})",
                f"{s['frames_decoded']} / {s['frames_expected']} ({delivered:.1%})")
        figures(f"shards recovered by FEC at {loss:.0%} loss", s["shards_recovered"])
        assert s["packets_lost"] > 0, s  # the loss was real
        assert s["shards_recovered"] > 0, s
    # 10 % random loss stays inside a 20 % parity budget nearly always
    ten = results[0.10]
    assert ten["frames_decoded"] >= 0.9 * ten["frames_expected"], ten
    # at 20 % a 20 % parity budget is exceeded for about half of the blocks: the
    # stream degrades (and is reported as such) but the session and host survive
    twenty = results[0.20]
    assert twenty["frames_decoded"] > 0, twenty
    print(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    assert h.proc.poll() is None
