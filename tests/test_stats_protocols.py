"""One capture over a real punktfunk/1 session (reference client) and a real
GameStream session (moonlight-python) streaming at the same time."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from punktfunk_core.ipc import IpcError

HOST_TOML = """
[native]
bind = "127.0.0.1"
port = 0
[stream]
encoder = "x264"
"""


@pytest.mark.moonlight
@pytest.mark.slow
def test_capture_over_native_and_gamestream_sessions(host_factory, pf_dirs, tmp_path: Path) -> None:
    pytest.importorskip("moonlight_python")
    from gamestream_helpers import gs_config, pair, run_client, wait_ready

    host = host_factory(config=HOST_TOML + gs_config())
    wait_ready(host)
    deadline = time.monotonic() + 15
    while "native" not in host.call("host.status")["protocols"]:
        assert time.monotonic() < deadline, host.log()[-3000:]
        time.sleep(0.05)
    native_port = host.call("host.status")["protocols"]["native"]["port"]
    gs_client = tmp_path / "moonlight"
    assert pair(host, gs_client)["ok"]
    host.call("pairing.pin", protocol="native", pin="4821")

    host.call("stats.start")
    env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(tmp_path / "native-client"))
    env.pop("PUNKTFUNK_IPC", None)
    native = subprocess.Popen(
        [sys.executable, "-m", "punktfunk_core.cli", "client", "127.0.0.1", "--port", str(native_port),
         "--pin", "4821", "--seconds", "6", "--json", "--width", "320", "--height", "180"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        res = run_client("stream", host, gs_client, "--frames", "180", "--cancel")
        assert res.get("ok", True) is not False, res
        out, stderr = native.communicate(timeout=60)
        assert native.returncode == 0, stderr[-3000:]
    finally:
        if native.poll() is None:
            native.kill()
            native.communicate()
    meta = host.call("stats.stop")
    capdir = pf_dirs["config"] / "captures"
    path = capdir / f"{meta['id']}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(capdir.stat().st_mode) == 0o700
    assert meta["kind"] == "native"  # the first session fills the meta
    assert (meta["width"], meta["height"]) == (320, 180) and meta["encoder_backend"]
    cap = host.call("stats.load", id=meta["id"])
    by_sid: dict[int, list[dict]] = {}
    for s in cap["samples"]:
        by_sid.setdefault(s["session_id"], []).append(s)
    assert len(by_sid) == 2, json.dumps(cap["samples"])[:2000]
    nat, gs = (by_sid[k] for k in sorted(by_sid))  # the host's session ids: native started first
    assert gs[0]["session_id"] == host.call("gamestream.status")["last_session"]["id"]
    # a session's last window may hold no frame (only the client's last report): then it has no stages
    for samples, names in ((nat, ["capture", "encode", "queue", "send"]),
                           (gs, ["capture", "encode", "queue", "packetize", "send"])):
        assert all([st["name"] for st in s["stages"]] == names for s in samples[:-1])
        assert [st["name"] for st in samples[-1]["stages"]] in (names, [])
    # window lengths: ≈ 2 s native, ≈ 1 s GameStream (each session's last window is shorter)
    dn = [b["t_ms"] - a["t_ms"] for a, b in pairwise(nat[:-1])]
    dg = [b["t_ms"] - a["t_ms"] for a, b in pairwise(gs[:-1])]
    assert dn and all(1500 <= d <= 2600 for d in dn), dn
    assert dg and all(700 <= d <= 1600 for d in dg), dg
    assert all("rtt_us" in s or "packets_dropped" in s for s in nat[1:])  # client feedback on punktfunk/1
    assert [m["id"] for m in host.call("stats.list")] == [meta["id"]]
    host.call("stats.delete", id=meta["id"])
    assert not path.exists()
    with pytest.raises(IpcError) as err:
        host.call("stats.delete", id=meta["id"])
    assert err.value.code == 404
