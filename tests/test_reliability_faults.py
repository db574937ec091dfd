"""Faults: the host killed while saving, a full disk, the host restarting
under the console. Each test states what must survive."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest
from test_core_host import UdpSink, plugin_env

from punktfunk_core.ipc import HostUnreachable, IpcError

FAST_SESSION = dict(width=320, height=180, fps=60, capture="flat", encoder="sleepy",
                    encoder_options={"encode_ms": 0.3}, seconds=0)


def start_recording(host, sink: UdpSink, min_samples: int = 1, timeout: float = 10.0) -> None:
    host.call("sessions.loopback", port=sink.port, **FAST_SESSION)
    host.call("stats.start")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if host.call("stats.status")["sample_count"] >= min_samples:
            return
        time.sleep(0.05)
    raise AssertionError(f"no samples recorded:\n{host.log()}")


def loaded_captures(host) -> dict[str, int]:
    """id -> number of samples, loading every listed capture fully."""
    out = {}
    for meta in host.call("stats.list"):
        cap = host.call("stats.load", id=meta["id"])
        assert cap["meta"]["id"] == meta["id"]
        assert all("stages" in s for s in cap["samples"])
        out[meta["id"]] = len(cap["samples"])
    return out


@pytest.mark.slow
def test_sigkill_while_saving_never_loses_or_corrupts_a_capture(host_factory, pf_dirs, figures):
    rng = random.Random(int(os.environ.get("PF_SEED", "4711")))
    env = plugin_env(pf_dirs["base"] / "s.jsonl")
    sink = UdpSink()
    known: dict[str, int] = {}  # captures seen complete after a restart: must never change
    kills = 0
    try:
        for i in range(20):
            host = host_factory(env=env)
            now = loaded_captures(host)
            for cid, n in known.items():
                assert now.get(cid) == n, f"round {i}: capture {cid} lost or changed ({n} -> {now.get(cid)})"
            known.update(now)
            start_recording(host, sink)
            # stop (which saves) and SIGKILL the host at a random moment around the save
            t = threading.Thread(target=_quiet, args=(host.call, "stats.stop"), daemon=True)
            t.start()
            time.sleep(rng.uniform(0.0, 0.02))
            host.proc.send_signal(signal.SIGKILL)
            host.proc.wait(5)
            kills += 1
            t.join(3)
        host = host_factory(env=env)
        final = loaded_captures(host)
        for cid, n in known.items():
            assert final.get(cid) == n
        leftovers = [p.name for p in (pf_dirs["config"] / "captures").iterdir() if p.name.endswith(".tmp")]
        assert leftovers == [], leftovers  # interrupted saves were cleaned up at start
    finally:
        sink.close()
    figures("host SIGKILLed while saving a capture", kills)
    figures("captures that survived intact", len(final))
    figures("captures lost or corrupted", 0)


def _quiet(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except (IpcError, HostUnreachable):
        return None


@pytest.fixture
def small_disk(pf_dirs):
    """A tiny tmpfs mounted as the config dir (needs root / CAP_SYS_ADMIN)."""
    mnt = pf_dirs["config"]
    mnt.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}); needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_during_save_keeps_the_capture_and_retry_works(host_factory, pf_dirs, small_disk, figures):
    host = host_factory(env=plugin_env(pf_dirs["base"] / "s.jsonl"))
    sink = UdpSink()
    try:
        start_recording(host, sink, min_samples=2)
        filler = small_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # fill the disk to the last byte
            for chunk in (65536, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        with pytest.raises(IpcError) as err:
            host.call("stats.stop")
        assert err.value.code >= 500
        assert "No space left on device" in err.value.message and "kept in memory" in err.value.message
        assert host.call("stats.list") == []  # nothing half-written is listed
        assert host.proc.poll() is None and host.call("sessions.list")  # the stream goes on
        filler.unlink()
        meta = host.call("stats.save")  # the retry
        assert meta and meta["id"]
        cap = host.call("stats.load", id=meta["id"])
        assert len(cap["samples"]) >= 2
        assert [m["id"] for m in host.call("stats.list")] == [meta["id"]]
    finally:
        sink.close()
    figures("disk-full saves that kept the capture and saved on retry", 1)


def test_console_answers_503_while_the_host_restarts_and_recovers(host_factory, pf_dirs, figures):
    """The console (real gunicorn) outlives a host restart."""
    requests = pytest.importorskip("requests")
    from punktfunk_core.config import build_schema, validate
    from punktfunk_core.paths import Paths
    from punktfunk_core.plugins import load_plugin_manager

    server = pytest.importorskip("punktfunk_webui.server")
    host = host_factory()
    os.environ["PUNKTFUNK_CONFIG_DIR"] = str(pf_dirs["config"])
    os.environ["PUNKTFUNK_RUNTIME_DIR"] = str(pf_dirs["runtime"])
    try:
        paths = Paths.from_env()
        cfg = validate(build_schema(load_plugin_manager()), {"console": {"port": 0, "workers": 2}})
        console = server.start_console(cfg, paths)
    finally:
        os.environ.pop("PUNKTFUNK_CONFIG_DIR")
        os.environ.pop("PUNKTFUNK_RUNTIME_DIR")
    token = paths.mgmt_token.read_text().strip()
    hdr = {"Authorization": f"Bearer {token}"}
    url = console.url.rstrip("/") + "/api/v1/stats/capture/status"
    try:
        assert requests.get(url, headers=hdr, timeout=5).status_code == 200
        host.stop()
        t0 = time.monotonic()
        r = requests.get(url, headers=hdr, timeout=5)
        took = time.monotonic() - t0
        assert r.status_code == 503 and "not reachable" in r.json()["error"], r.text
        assert took < 2.0, took
        host2 = host_factory()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            r = requests.get(url, headers=hdr, timeout=5)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert host2.proc.pid != host.proc.pid
    finally:
        console.stop()
    figures("console 503 during host restart, recovered by itself", 1)
