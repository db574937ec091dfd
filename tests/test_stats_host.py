"""End-to-end tests of the stats plugin in real host processes (IPC)."""

from __future__ import annotations

import os
import random
import stat
import threading
import time
from pathlib import Path

import pytest
from stats_helpers import STAGES_A, STAGES_B, plugin_env, wait_for

from punktfunk_core.ipc import HostUnreachable, IpcClient, IpcError

from punktfunk_stats.store import CaptureStore

TRAVERSAL = ["..", ".", "a/b", "a\\b", "", "/etc/passwd", "../mgmt-token", "..%2Fmgmt-token", "%2e%2e", "x" * 300]


def captures_dir(pf_dirs: dict[str, Path]) -> Path:
    return pf_dirs["config"] / "captures"


def ended(host, sid: int) -> bool:
    return all(s["id"] != sid for s in host.call("sessions.list"))


def test_capture_of_two_protocol_kinds(host_factory, pf_dirs) -> None:
    host = host_factory(env=plugin_env())
    assert host.call("host.status")["measuring"] is False
    st = host.call("stats.start")
    assert st["armed"] is True and st["kind"] == "" and st["sample_count"] == 0
    assert host.call("host.status")["measuring"] is True  # the gate is armed through the core API
    a = host.call("statstest.session", proto="a", seconds=1.6, fps=120)
    b = host.call("statstest.session", proto="b", seconds=1.6, fps=120)
    wait_for(lambda: ended(host, a["id"]) and ended(host, b["id"]), what="both sessions to end")
    assert host.call("stats.start")["id"] == st["id"]  # idempotent
    meta = host.call("stats.stop")
    assert host.call("host.status")["measuring"] is False
    assert meta["kind"] == "statsproto_a" and meta["codec"] == "hevc" and meta["client"] == "test-client-a"
    assert meta["encoder_backend"] == "statstest" and meta["width"] == 64 and meta["fps"] == 120
    path = captures_dir(pf_dirs) / f"{meta['id']}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(captures_dir(pf_dirs).stat().st_mode) == 0o700
    cap = host.call("stats.load", id=meta["id"])
    assert cap["meta"] == meta and len(cap["samples"]) == meta["sample_count"]
    by_sid: dict[int, list[dict]] = {}
    for s in cap["samples"]:
        by_sid.setdefault(s["session_id"], []).append(s)
    assert set(by_sid) == {1, 2}
    sa, sb = by_sid[1], by_sid[2]
    assert all([x["name"] for x in s["stages"]] == STAGES_A for s in sa)
    assert all([x["name"] for x in s["stages"]] == STAGES_B for s in sb)
    # different window lengths: 0.2 s vs 0.1 s over the same 1.6 s
    assert 4 <= len(sa) <= 9 and 10 <= len(sb) <= 17 and len(sb) > len(sa)
    assert all("send_dropped" not in s for s in sa) and all(s["send_dropped"] == 0 for s in sb)
    assert all("fec_us" in s for s in sb) and all("fec_us" not in s for s in sa)
    assert all(s["fps"] > 60 for s in sa[1:-1])
    t = [s["t_ms"] for s in cap["samples"]]
    assert t == sorted(t) and t[-1] < meta["duration_ms"] + 1
    assert [m["id"] for m in host.call("stats.list")] == [meta["id"]]
    assert host.call("stats.delete", id=meta["id"]) == {"deleted": meta["id"]}
    assert not path.exists()
    with pytest.raises(IpcError) as err:
        host.call("stats.delete", id=meta["id"])
    assert err.value.code == 404 and "not found" in err.value.message
    assert host.call("stats.stop") is None  # nothing recorded


def test_reading_never_arms_and_idle_answers(host_factory) -> None:
    host = host_factory(env=plugin_env())
    a = host.call("statstest.session", proto="a", seconds=0, fps=60)
    try:
        assert host.call("stats.status") == {"armed": False, "sample_count": 0, "started_unix_ms": 0,
                                             "elapsed_ms": 0, "kind": "", "id": "", "unsaved": 0,
                                             "max_samples": 5400}
        assert host.call("stats.list") == []
        with pytest.raises(IpcError) as err:
            host.call("stats.live")
        assert err.value.code == 404
        time.sleep(0.5)
        assert host.call("host.status")["measuring"] is False
        info = [s for s in host.call("sessions.list") if s["id"] == a["id"]][0]
        assert "last_sample" not in info  # nothing measured, no window
        # a session that was already running is picked up when a capture is armed
        host.call("stats.start")
        wait_for(lambda: host.call("stats.status")["sample_count"] >= 2, what="windows")
        st = host.call("stats.status")
        assert st["kind"] == "statsproto_a"
        meta = host.call("stats.stop")
        assert meta["client"] == "test-client-a"
    finally:
        host.call("sessions.stop", id=a["id"])


@pytest.mark.parametrize("bad", TRAVERSAL)
def test_traversal_ids_not_found_over_ipc(host_factory, pf_dirs, bad: str) -> None:
    host = host_factory(env=plugin_env())
    token = pf_dirs["config"] / "mgmt-token"
    token.write_text("secret-token-value\n")
    for cmd in ("stats.load", "stats.delete", "stats.summary", "stats.csv"):
        with pytest.raises(IpcError) as err:
            host.call(cmd, id=bad)
        assert err.value.code == 404, cmd
    assert token.exists()


def test_live_since_and_summary_and_csv(host_factory) -> None:
    host = host_factory(env=plugin_env())
    host.call("stats.start")
    b = host.call("statstest.session", proto="b", seconds=1.2, fps=120)
    wait_for(lambda: host.call("stats.status")["sample_count"] >= 4, what="4 windows")
    first = host.call("stats.live")
    n = len(first["samples"])
    cut = first["samples"][1]["t_ms"]
    newer = host.call("stats.live", since=cut)
    assert newer["samples"] and all(s["t_ms"] > cut for s in newer["samples"])
    assert newer["samples"][: n - 2] == first["samples"][2:]
    with pytest.raises(IpcError) as err:
        host.call("stats.live", since="soon")
    assert err.value.code == 400
    wait_for(lambda: ended(host, b["id"]), what="session end")
    meta = host.call("stats.stop")
    summ = host.call("stats.summary", id=meta["id"])
    assert [s["name"] for s in summ["stages"]] == STAGES_B
    for s in summ["stages"]:
        assert 0 <= s["p50_us"] <= s["p95_us"] <= s["p99_us"] and s["max_p99_us"] >= s["p50_us"]
    assert summ["counters"] == {"frames_dropped": 0, "send_dropped": 0}
    assert 0 < summ["fps"]["min"] <= summ["fps"]["mean"]
    out = host.call("stats.csv", id=meta["id"])
    lines = out["csv"].splitlines()
    assert lines[0].startswith("t_ms,session_id,fps,repeat_fps,mbps,bitrate_kbps,capture_frame_p50_us,"
                               "capture_frame_p99_us,")
    assert "send_spread_frame_p99_us" in lines[0] and "send_dropped" in lines[0]
    assert len(lines) == meta["sample_count"] + 1


def test_perf_log_lines_without_a_capture(host_factory) -> None:
    # shown even when the host logs only warnings
    host = host_factory(config='[host]\nlog_level = "warning"\n', env=plugin_env(PUNKTFUNK_PERF="1"))
    assert host.call("host.status")["measuring"] is True
    a = host.call("statstest.session", proto="a", seconds=1.0, fps=60)
    b = host.call("statstest.session", proto="b", seconds=1.0, fps=60)
    wait_for(lambda: ended(host, a["id"]) and ended(host, b["id"]), what="sessions to end")
    assert host.call("stats.status")["armed"] is False
    log = host.log()
    lines_a = [ln for ln in log.splitlines() if f"perf[statsproto_a] session={a['id']} " in ln]
    lines_b = [ln for ln in log.splitlines() if f"perf[statsproto_b] session={b['id']} " in ln]
    assert 3 <= len(lines_a) <= 6, log[-3000:]
    assert 7 <= len(lines_b) <= 12, log[-3000:]
    assert "capture=" in lines_a[0] and "(p50/p99/max µs)" in lines_a[0] and "fps=" in lines_a[0]
    assert "mbps=" in lines_a[0] and "send_spread=" in lines_b[0]
    assert host.call("stats.list") == []


def test_captures_survive_a_host_restart(host_factory) -> None:
    env = plugin_env()
    host = host_factory(env=env)
    ids = []
    for _ in range(2):
        host.call("stats.start")
        host.call("statstest.session", proto="a", seconds=0.5, fps=60)
        wait_for(lambda: host.call("stats.status")["sample_count"] >= 1, what="a window")
        ids.append(host.call("stats.stop")["id"])
    assert len(set(ids)) == 2  # two captures in about the same second both survive
    # an armed capture is saved when the host stops
    host.call("stats.start")
    assert host.stop() == 0
    again = host_factory(env=env)
    listed = [m["id"] for m in again.call("stats.list")]
    assert len(listed) == 3 and set(ids) < set(listed)
    assert listed[1:] == ids[::-1] or listed[0] in ids  # newest first
    for cid in listed:
        again.call("stats.load", id=cid)


def _break(capdir: Path) -> Path:
    aside = capdir.with_name("captures.aside")
    capdir.rename(aside)
    capdir.write_text("in the way")  # works as root too, where permissions do not stop writes
    return aside


def test_failed_save_over_ipc_is_kept_and_retried(host_factory, pf_dirs) -> None:
    host = host_factory(env=plugin_env())
    host.call("stats.start")
    b = host.call("statstest.session", proto="b", seconds=0.6, fps=60)
    wait_for(lambda: ended(host, b["id"]), what="session end")
    expected = host.call("stats.live")["samples"]
    capdir = captures_dir(pf_dirs)
    aside = _break(capdir)
    try:
        with pytest.raises(IpcError) as err:
            host.call("stats.stop")
        assert err.value.code == 500 and "kept in memory" in err.value.message
        st = host.call("stats.status")
        assert st["armed"] is False and st["unsaved"] == 1
        assert host.call("host.status")["measuring"] is False
    finally:
        capdir.unlink()
        aside.rename(capdir)
    meta = host.call("stats.stop")
    assert host.call("stats.status")["unsaved"] == 0
    assert host.call("stats.load", id=meta["id"])["samples"] == expected


def _stop_into(client: IpcClient, result: list) -> None:
    """stats.stop from a thread: its answer, or the HostUnreachable of a host killed meanwhile."""
    try:
        result.append(client.call("stats.stop"))
    except HostUnreachable as exc:
        result.append(exc)


def test_sigkill_while_saving_never_leaves_a_partial_file(host_factory, pf_dirs) -> None:
    env = plugin_env()
    capdir = captures_dir(pf_dirs)
    rng = random.Random(1234)
    saved_before: set[str] = set()
    outcomes: list[str] = []
    for round_no in range(5):
        host = host_factory(env=env)
        if round_no == 0:
            host.call("stats.start")
            s = host.call("statstest.session", proto="a", seconds=0, fps=30)
            host.call("statstest.burst", session_id=s["id"], n=100)
            saved_before.add(host.call("stats.stop")["id"])
        listed = {m["id"] for m in host.call("stats.list")}
        assert saved_before <= listed
        saved_before = listed
        host.call("stats.start")
        s = host.call("statstest.session", proto="a", seconds=0, fps=30)
        host.call("statstest.burst", session_id=s["id"], n=5400)
        assert host.call("stats.status")["sample_count"] == 5400
        client = IpcClient(host.ipc.endpoint, timeout=5.0)
        result: list = []
        t = threading.Thread(target=_stop_into, args=(client, result))
        t.start()
        time.sleep(rng.uniform(0.0, 0.12))
        host.kill()
        t.join(10)
        client.close()
        # whatever the moment: only complete files, and list works
        tmp_left = [n for n in os.listdir(capdir) if n.endswith(".tmp")]
        names = [n for n in os.listdir(capdir) if not n.startswith(".")]
        outcomes.append(("tmp" if tmp_left else "") + f"{len(names) - len(saved_before)}")
        store = CaptureStore(capdir)
        assert len(store.list()) == len(names)
        for n in names:
            cap = store.load(n[: -len(".json")])
            if n[: -len(".json")] not in saved_before:
                assert len(cap["samples"]) == 5400
        assert len(names) in (len(saved_before), len(saved_before) + 1)
        assert not [n for n in os.listdir(capdir) if n.endswith(".tmp")]  # cleaned by CaptureStore()
    final = host_factory(env=env)
    assert len(final.call("stats.list")) >= 1
    print("rounds (tmp = killed mid-write; 1 = new file saved):", outcomes)


def test_stats_window_faults_never_stop_a_stream(host_factory) -> None:
    """A window the recorder cannot take is logged and dropped; the session streams on."""
    host = host_factory(env=plugin_env())
    host.call("stats.start")
    a = host.call("statstest.session", proto="a", seconds=0, fps=60)
    try:
        wait_for(lambda: host.call("stats.status")["sample_count"] >= 1, what="a window")
        assert host.call("statstest.burst", session_id=a["id"], n=3, bad=True) == {"emitted": 3}
        before = host.call("stats.status")["sample_count"]
        wait_for(lambda: host.call("stats.status")["sample_count"] >= before + 2, what="more windows")
        info = [s for s in host.call("sessions.list") if s["id"] == a["id"]][0]
        assert info["state"] == "running"
    finally:
        host.call("sessions.stop", id=a["id"])
    assert host.log().count(f"stats: window of session {a['id']} dropped") == 3
    meta = host.call("stats.stop")
    assert host.call("stats.load", id=meta["id"])["meta"]["sample_count"] >= 3


def test_capture_of_a_real_loopback_session(host_factory, pf_dirs) -> None:
    """The core's diagnostic session (testpattern → x264 → chunk → udp) through the real runner."""
    import socket

    host = host_factory()
    plugins = {p["name"] for p in host.call("plugins.list") if not p["error"]}
    if "media" not in plugins:
        pytest.skip("media stages are not available")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    try:
        host.call("stats.start")
        info = host.call("sessions.loopback", port=rx.getsockname()[1], seconds=3.2, width=320, height=240, fps=30)
        got = len(rx.recv(65536))
        wait_for(lambda: ended(host, info["id"]), what="loopback session end")
    finally:
        rx.close()
    assert got > 0
    meta = host.call("stats.stop")
    assert meta["kind"] == "loopback" and meta["codec"] == "h264" and meta["encoder_backend"] == "x264"
    assert (meta["width"], meta["height"], meta["fps"]) == (320, 240, 30)
    cap = host.call("stats.load", id=meta["id"])
    assert 3 <= len(cap["samples"]) <= 5  # 1 s windows and the session's last, shorter one
    for s in cap["samples"]:
        assert [st["name"] for st in s["stages"]] == ["capture", "encode", "queue", "packetize", "send"]
        assert s["session_id"] == info["id"] and s["mbps"] > 0 and s["bitrate_kbps"] > 0  # the host's session id
        assert s["stages"][1]["p50_us"] > 0  # x264 takes time
    assert cap["samples"][1]["fps"] > 20
