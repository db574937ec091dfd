"""Unit tests of the stats recorder, summary and CSV (pure Python, no host)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from punktfunk_core.stats import StageTiming, StatsSample

from punktfunk_stats.recorder import MAX_SAMPLES, NotRecording, Recorder, SaveFailed
from punktfunk_stats.store import META_DEFAULTS, CaptureStore, NotFound, valid_id
from punktfunk_stats.summary import summarize, to_csv

SPEC_META = ["id", "started_unix_ms", "duration_ms", "kind", "width", "height", "fps", "codec", "client",
             "sample_count", "encoder_backend", "gpu", "truncated"]
SPEC_STATUS = {"armed", "sample_count", "started_unix_ms", "elapsed_ms", "kind"}
SPEC_SAMPLE = ["t_ms", "session_id", "stages", "fps", "repeat_fps", "mbps", "bitrate_kbps"]
NATIVE_INFO = {"kind": "native", "client": "ab12cd34", "width": 1920, "height": 1080, "fps": 60,
               "codec": "hevc", "encoder_backend": "nvenc", "gpu": "NVIDIA H100"}
GS_INFO = {"kind": "gamestream", "client": "192.0.2.7:47998", "width": 1280, "height": 720, "fps": 120,
           "codec": "h264", "encoder_backend": "x264", "gpu": ""}
TRAVERSAL_IDS = ["..", ".", ".index", "..a", "a/b", "a\\b", "", "/etc/passwd", "../x", "..%2F..%2Fetc%2Fpasswd",
                 "%2e%2e", "x" * 300, "a:b", "a b", "\x00", None, 12]


class Clock:
    """A settable monotonic clock (ns) for deterministic t_ms."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_ms(self, ms: int) -> None:
        self.ns += ms * 1_000_000


def sample(capture_us: float = 100.0, encode_us: float = 2000.0, fps: float = 60.0, **kw) -> StatsSample:
    return StatsSample(
        stages=[StageTiming("capture", capture_us, capture_us * 2), StageTiming("encode", encode_us, encode_us * 1.5)],
        fps=fps, repeat_fps=0.0, mbps=12.5, bitrate_kbps=20000, **kw,
    )


def saved(rec: Recorder) -> dict[str, Any]:
    """``rec.stop()`` where it must have saved a capture: that capture's meta."""
    meta = rec.stop()
    assert meta is not None, "stop() saved nothing"
    return meta


@pytest.fixture
def capdir(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "captures"


def test_spec_field_names_and_absent_optionals(capdir: Path) -> None:
    clock = Clock()
    rec = Recorder(CaptureStore(capdir), clock_ns=clock)
    idle = rec.status()
    assert SPEC_STATUS <= set(idle)
    assert (idle["armed"], idle["sample_count"], idle["started_unix_ms"], idle["elapsed_ms"], idle["kind"]) \
        == (False, 0, 0, 0, "")
    st = rec.start()
    assert st["armed"] is True and st["started_unix_ms"] > 1_600_000_000_000
    rec.register_session(1, NATIVE_INFO)
    rec.push_sample(sample(), 1)  # counters unknown: absent
    clock.advance_ms(2000)
    rec.push_sample(sample(packets_dropped=0, rtt_us=850.0), 1)
    st = rec.status()
    assert st["sample_count"] == 2 and st["kind"] == "native" and st["elapsed_ms"] == 2000
    meta = saved(rec)
    assert list(meta) == SPEC_META
    doc = json.loads((capdir / f"{meta['id']}.json").read_text())
    assert list(doc) == ["meta", "samples"]
    assert list(doc["meta"]) == SPEC_META
    s0, s1 = doc["samples"]
    assert list(s0) == SPEC_SAMPLE  # nothing optional present, not even as 0
    assert list(s0["stages"][0]) == ["name", "p50_us", "p99_us"]
    assert s1["packets_dropped"] == 0 and s1["rtt_us"] == 850.0 and "frames_dropped" not in s1
    assert doc["meta"]["kind"] == "native" and doc["meta"]["client"] == "ab12cd34"
    assert doc["meta"]["gpu"] == "NVIDIA H100" and doc["meta"]["encoder_backend"] == "nvenc"
    assert doc["meta"]["duration_ms"] == 2000 and doc["meta"]["sample_count"] == 2


def test_start_is_idempotent_and_push_ignored_when_idle(capdir: Path) -> None:
    armed: list[str] = []
    rec = Recorder(CaptureStore(capdir), on_arm=lambda: armed.append("arm"), on_disarm=lambda: armed.append("disarm"))
    assert rec.is_armed is False
    assert rec.push_sample(sample(), 1) is False
    first = rec.start()
    rec.push_sample(sample(), 1)
    second = rec.start()
    assert second["id"] == first["id"] and second["started_unix_ms"] == first["started_unix_ms"]
    assert second["sample_count"] == 1
    assert armed == ["arm"]
    rec.stop()
    assert armed == ["arm", "disarm"] and rec.is_armed is False
    assert rec.push_sample(sample(), 1) is False
    assert rec.stop() is None  # nothing recorded
    with pytest.raises(NotRecording):
        rec.live()


def test_push_restamps_and_never_touches_callers_sample(capdir: Path) -> None:
    clock = Clock()
    rec = Recorder(CaptureStore(capdir), clock_ns=clock)
    rec.start()
    s = sample()
    s.t_ms, s.session_id = 99999, 77
    clock.advance_ms(1500)
    rec.push_sample(s, "session-a", NATIVE_INFO)
    clock.advance_ms(500)
    rec.push_sample(s, "session-b", GS_INFO)
    assert (s.t_ms, s.session_id) == (99999, 77)
    live = rec.live()
    assert [(x["t_ms"], x["session_id"]) for x in live["samples"]] == [(1500, 1), (2000, 2)]


def test_first_session_fills_meta_second_capture_gets_its_own(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    # the host's session ids are the capture's session ids (what `punktfunk status` shows)
    assert rec.register_session(10, NATIVE_INFO) == 10
    assert rec.register_session(11, GS_INFO) == 11
    assert rec.register_session(10, GS_INFO) == 10
    rec.push_sample(sample(), 11, GS_INFO)
    m1 = saved(rec)
    assert (m1["kind"], m1["width"], m1["codec"], m1["client"]) == ("native", 1920, "hevc", "ab12cd34")
    assert rec.store.load(m1["id"])["samples"][0]["session_id"] == 11
    rec.start()
    # before any session the session fields are absent, not placeholders ("" / 0)
    assert not {"kind", "width", "height", "fps", "codec", "client", "encoder_backend", "gpu"} & set(rec.live()["meta"])
    rec.push_sample(sample(), 11, GS_INFO)  # seen first in this capture: fills its meta
    m2 = saved(rec)
    assert m2["id"] != m1["id"]
    assert (m2["kind"], m2["width"], m2["fps"], m2["codec"], m2["client"]) \
        == ("gamestream", 1280, 120, "h264", "192.0.2.7:47998")
    assert rec.store.load(m2["id"])["samples"][0]["session_id"] == 11
    assert rec.register_session(12, NATIVE_INFO) == 0  # idle


def test_a_capture_without_a_session_saves_no_placeholders(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    meta = saved(rec)
    assert list(meta) == ["id", "started_unix_ms", "duration_ms", "sample_count", "truncated"]
    raw = json.loads((capdir / f"{meta['id']}.json").read_text())
    assert raw["meta"] == meta and raw["samples"] == []
    assert rec.store.list()[0] == meta and rec.store.load(meta["id"])["meta"] == meta


def test_cap_keeps_oldest_sets_truncated_and_warns_once(capdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rec = Recorder(CaptureStore(capdir), clock_ns=clock)
    rec.start()
    caplog.set_level(logging.WARNING, logger="punktfunk.stats")
    for i in range(MAX_SAMPLES + 50):
        clock.advance_ms(2000)
        rec.push_sample(sample(fps=float(i)), 1)
    assert rec.status()["sample_count"] == MAX_SAMPLES == 5400
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "full" in r.getMessage()]
    assert len(warnings) == 1
    meta = saved(rec)
    assert meta["truncated"] is True and meta["sample_count"] == 5400
    cap = rec.store.load(meta["id"])
    assert len(cap["samples"]) == 5400
    assert cap["samples"][0]["fps"] == 0.0 and cap["samples"][-1]["fps"] == 5399.0  # the oldest are kept
    assert rec.store.list()[0]["truncated"] is True


def test_save_is_owner_only_and_loads_lists_deletes(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    assert stat.S_IMODE(capdir.stat().st_mode) == 0o700
    rec.start()
    rec.push_sample(sample(), 1, NATIVE_INFO)
    meta = saved(rec)
    path = capdir / f"{meta['id']}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(capdir.stat().st_mode) == 0o700
    assert sorted(os.listdir(capdir)) == [path.name]  # no temp file left behind
    assert rec.store.load(meta["id"])["meta"] == meta
    assert [m["id"] for m in rec.store.list()] == [meta["id"]]
    rec.store.delete(meta["id"])
    assert not path.exists() and rec.store.list() == []
    with pytest.raises(NotFound):
        rec.store.delete(meta["id"])
    with pytest.raises(NotFound):
        rec.store.load(meta["id"])


def test_dir_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "captures"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    CaptureStore(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


@pytest.mark.parametrize("bad", TRAVERSAL_IDS)
def test_invalid_ids_are_not_found(tmp_path: Path, bad: object) -> None:
    capdir = tmp_path / "cfg" / "captures"
    rec = Recorder(CaptureStore(capdir))
    # things a traversal could reach
    (tmp_path / "cfg" / "secret.json").write_text('{"meta": {}, "samples": []}')
    (capdir / "a").mkdir()
    (capdir / "a" / "b.json").write_text('{"meta": {}, "samples": []}')
    assert not valid_id(bad)
    with pytest.raises(NotFound):
        rec.store.load(bad)
    with pytest.raises(NotFound):
        rec.store.delete(bad)
    assert (tmp_path / "cfg" / "secret.json").exists() and (capdir / "a" / "b.json").exists()


def test_valid_ids() -> None:
    for good in ["20261127-054707-269", "a", "A.b_c-1", "a..", "a..b"]:
        assert valid_id(good)


def test_stale_temp_files_are_removed_and_never_listed(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    rec.push_sample(sample(), 1)
    meta = saved(rec)
    (capdir / f".{meta['id']}.abc123.tmp").write_text('{"meta": {"id": "x", "started')
    assert [m["id"] for m in rec.store.list()] == [meta["id"]]
    CaptureStore(capdir)  # a restarted host cleans up after an interrupted save
    assert sorted(os.listdir(capdir)) == [".index.json", f"{meta['id']}.json"]


def _break_dir(capdir: Path) -> Path:
    """Make the captures dir unwritable. As root permissions do not stop
    writes, so the dir is moved away and a plain file takes its place."""
    if os.geteuid() != 0:
        os.chmod(capdir, 0o500)
        return capdir
    aside = capdir.with_name("captures.aside")
    capdir.rename(aside)
    capdir.write_text("not a directory")
    return aside


def _repair_dir(capdir: Path, aside: Path) -> None:
    if aside == capdir:
        os.chmod(capdir, 0o700)
    else:
        capdir.unlink()
        aside.rename(capdir)


def test_failed_save_keeps_capture_and_retry_saves_it_intact(capdir: Path) -> None:
    clock = Clock()
    rec = Recorder(CaptureStore(capdir), clock_ns=clock)
    rec.start()
    rec.push_sample(sample(), 1)
    older = saved(rec)
    rec.start()
    for i in range(100):
        clock.advance_ms(1000)
        rec.push_sample(sample(fps=float(i)), 1, GS_INFO)
    expected = rec.live()["samples"]
    aside = _break_dir(capdir)
    try:
        with pytest.raises(SaveFailed) as err:
            rec.stop()
        assert "kept in memory" in err.value.message
        assert rec.is_armed is False and rec.status()["unsaved"] == 1
        with pytest.raises(SaveFailed):
            rec.stop()  # still broken: still kept
        assert rec.status()["unsaved"] == 1
    finally:
        _repair_dir(capdir, aside)
    meta = saved(rec)  # the retry
    assert meta is not None and meta["sample_count"] == 100 and meta["kind"] == "gamestream"
    assert rec.status()["unsaved"] == 0
    assert rec.store.load(meta["id"])["samples"] == expected
    assert {m["id"] for m in rec.store.list()} == {older["id"], meta["id"]}
    assert rec.stop() is None


def test_failed_save_is_retried_by_the_next_capture_stop(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    rec.push_sample(sample(), 1)
    aside = _break_dir(capdir)
    try:
        with pytest.raises(SaveFailed):
            rec.stop()
    finally:
        _repair_dir(capdir, aside)
    rec.start()  # a new capture while the old one is unsaved
    assert rec.status()["unsaved"] == 1
    rec.push_sample(sample(), 1)
    newest = saved(rec)
    assert rec.status()["unsaved"] == 0
    assert len(rec.store.list()) == 2 and rec.store.list()[0]["id"] == newest["id"]


def test_ids_never_collide_or_overwrite(capdir: Path) -> None:
    frozen = 1_795_758_427_269
    rec = Recorder(CaptureStore(capdir), wall_ms=lambda: frozen)  # every capture "in the same millisecond"
    metas = []
    for n in range(3):
        rec.start()
        rec.push_sample(sample(fps=float(n)), 1)
        metas.append(saved(rec))
    ids = [m["id"] for m in metas]
    assert len(set(ids)) == 3
    assert [rec.store.load(i)["samples"][0]["fps"] for i in ids] == [0.0, 1.0, 2.0]
    # a file that appears under the armed capture's id before it is saved is not replaced
    st = rec.start()
    squatter = capdir / f"{st['id']}.json"
    squatter.write_text('{"meta":{"id":"squatter","started_unix_ms":1},"samples":[]}')
    rec.push_sample(sample(fps=9.0), 1)
    meta = saved(rec)
    assert meta["id"] != st["id"]
    assert json.loads(squatter.read_text())["meta"]["id"] == "squatter"
    assert rec.store.load(meta["id"])["meta"]["id"] == meta["id"]
    assert rec.store.load(meta["id"])["samples"][0]["fps"] == 9.0
    assert len(rec.store.list()) == 5


def test_two_recorders_same_second_both_survive(capdir: Path) -> None:
    a = Recorder(CaptureStore(capdir), wall_ms=lambda: 1_795_758_427_000)
    b = Recorder(CaptureStore(capdir), wall_ms=lambda: 1_795_758_427_000)
    a.start()
    b.start()  # same id chosen: nothing on disk yet
    a.push_sample(sample(fps=1.0), 1)
    b.push_sample(sample(fps=2.0), 1)
    ma, mb = saved(a), saved(b)
    assert ma["id"] != mb["id"]
    assert sorted(s["samples"][0]["fps"] for s in (a.store.load(ma["id"]), a.store.load(mb["id"]))) == [1.0, 2.0]


def test_live_since_returns_only_newer_samples(capdir: Path) -> None:
    clock = Clock()
    rec = Recorder(CaptureStore(capdir), clock_ns=clock)
    rec.start()
    for _ in range(10):
        clock.advance_ms(1000)
        rec.push_sample(sample(), 1)
    everything = rec.live()
    assert [s["t_ms"] for s in everything["samples"]] == [1000 * i for i in range(1, 11)]
    assert everything["meta"]["sample_count"] == 10
    newer = rec.live(since=7000)
    assert [s["t_ms"] for s in newer["samples"]] == [8000, 9000, 10000]
    assert newer["meta"]["sample_count"] == 10
    assert rec.live(since=10000)["samples"] == []
    assert len(rec.live(since=-1)["samples"]) == 10
    assert [s["t_ms"] for s in rec.live(since=6500)["samples"]] == [7000, 8000, 9000, 10000]


def _write_capture(path: Path, meta: dict, samples: list) -> None:
    path.write_text(json.dumps({"meta": meta, "samples": samples}))


def test_corrupt_and_odd_files_are_skipped(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    rec.push_sample(sample(), 1)
    good = saved(rec)
    whole = (capdir / f"{good['id']}.json").read_bytes()
    (capdir / "cut.json").write_bytes(whole[: len(whole) // 2])
    (capdir / "headonly.json").write_bytes(whole[:40])
    (capdir / "empty.json").write_bytes(b"")
    (capdir / "garbage.json").write_bytes(os.urandom(3000))
    (capdir / "array.json").write_text("[1, 2, 3]")
    (capdir / "metalist.json").write_text('{"meta": [1], "samples": []}')
    (capdir / "dir.json").mkdir()
    (capdir / "notes.txt").write_text("hello")
    (capdir / "bad id!.json").write_text(whole.decode())
    assert [m["id"] for m in rec.store.list()] == [good["id"]]
    for cid in ("cut", "headonly", "empty", "garbage", "array", "dir"):
        with pytest.raises(NotFound):
            rec.store.load(cid)
    with pytest.raises(NotFound):
        rec.store.delete("dir")
    assert (capdir / "dir.json").is_dir()


def test_old_files_with_zeros_and_other_key_order_load(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    old_sample = {"t_ms": 0, "session_id": 1, "stages": [{"name": "capture", "p50_us": 1.0, "p99_us": 2.0}],
                  "fps": 60.0, "repeat_fps": 0.0, "mbps": 5.0, "bitrate_kbps": 8000,
                  "frames_dropped": 0, "packets_dropped": 0, "send_dropped": 0, "fec_recovered": 0,
                  "host_p50_us": 0.0, "host_p99_us": 0.0, "rtt_us": 0.0, "fec_us": 0.0, "seal_us": 0.0, "sock_us": 0.0}
    meta = dict(META_DEFAULTS, id="old", started_unix_ms=1_700_000_000_000, kind="native", sample_count=1,
                width=0, height=0, fps=0, codec="", client="", encoder_backend="", gpu="")
    _write_capture(capdir / "old.json", meta, [old_sample])
    # samples before meta (another writer's key order): still listed, via a full parse
    (capdir / "reordered.json").write_text(json.dumps({"samples": [old_sample, old_sample],
                                                       "meta": {"started_unix_ms": 1_600_000_000_000}}))
    listed = rec.store.list()
    assert [m["id"] for m in listed] == ["old", "reordered"]
    # an old file's placeholders ("", 0) are read as absent
    assert listed[1]["sample_count"] == 2 and list(listed[1]) == [k for k in SPEC_META if k in META_DEFAULTS]
    assert listed[0]["kind"] == "native" and "width" not in listed[0]
    cap = rec.store.load("old")
    assert cap["samples"][0]["packets_dropped"] == 0 and cap["samples"][0]["rtt_us"] == 0.0
    assert summarize(cap)["counters"]["packets_dropped"] == 0


def test_list_newest_first_and_fast_with_2000_files(capdir: Path) -> None:
    """2000 captures of 5400 samples (hard links of 20 real files, 100 each):
    list must not parse the samples."""
    clock = Clock()
    rec = Recorder(CaptureStore(capdir), clock_ns=clock)
    for _ in range(20):
        rec.start()
        for i in range(5400):
            rec.push_sample(sample(fps=float(i)), 1, NATIVE_INFO)
        rec.stop()
    originals = sorted(capdir.iterdir())
    size = originals[0].stat().st_size
    assert size > 500_000
    for src in originals:
        for k in range(99):
            os.link(src, capdir / f"{src.stem}-link{k:02d}.json")
    fresh = CaptureStore(capdir)  # cold: nothing cached
    t0 = time.perf_counter()
    metas = fresh.list()
    cold = time.perf_counter() - t0
    assert len(metas) == 2000
    started = [m["started_unix_ms"] for m in metas]
    assert started == sorted(started, reverse=True)
    t0 = time.perf_counter()
    again = fresh.list()
    warm = time.perf_counter() - t0
    assert again == metas
    # parsing 2000 × 5400 samples takes minutes; reading the heads takes well under a second
    assert cold < 3.0, f"cold list of 2000 captures took {cold:.2f} s"
    assert warm < 0.5, f"warm list of 2000 captures took {warm:.3f} s"
    print(f"list 2000 captures: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms")


def test_list_index_is_persisted_owner_only_and_rebuilt_when_corrupt(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    rec.push_sample(sample(), 1, NATIVE_INFO)
    meta = saved(rec)
    assert rec.store.list()[0]["kind"] == "native"
    index = capdir / ".index.json"
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    # change the file's kind behind the recorder's back, keeping size and mtime:
    # a new recorder answers from the persisted index, without reading the head
    path = capdir / f"{meta['id']}.json"
    st = path.stat()
    raw = path.read_bytes()
    with open(path, "r+b") as f:  # same inode
        f.write(raw.replace(b'"kind":"native"', b'"kind":"nativX"'))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert CaptureStore(capdir).list()[0]["kind"] == "native"
    index.write_text("{not json")
    assert CaptureStore(capdir).list()[0]["kind"] == "nativX"  # rebuilt from the heads
    assert json.loads(index.read_text())["version"] == 1
    rec.store.delete(meta["id"])
    assert CaptureStore(capdir).list() == []


def test_list_sees_files_changed_behind_its_back(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    m = saved(rec)
    assert len(rec.store.list()) == 1
    (capdir / f"{m['id']}.json").write_text("{broken")
    assert rec.store.list() == []
    shutil.copy(capdir / f"{m['id']}.json", capdir / "copy.json")
    os.unlink(capdir / f"{m['id']}.json")
    assert rec.store.list() == []


def test_threads_pushing_while_captures_start_and_stop(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    stop = threading.Event()
    errors: list[BaseException] = []
    pushed = [0] * 6

    def pusher(k: int) -> None:
        try:
            while not stop.is_set():
                if rec.push_sample(sample(fps=float(k)), k, NATIVE_INFO):
                    pushed[k] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    metas = []
    try:
        for _ in range(15):
            rec.start()
            time.sleep(0.01)
            rec.live(since=0)
            rec.status()
            metas.append(saved(rec))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert len({m["id"] for m in metas}) == 15
    total = 0
    for m in metas:
        cap = rec.store.load(m["id"])
        assert len(cap["samples"]) == m["sample_count"]
        times = [s["t_ms"] for s in cap["samples"]]
        assert times == sorted(times)
        assert {s["session_id"] for s in cap["samples"]} <= set(range(1, 7))
        total += m["sample_count"]
    assert total == sum(pushed) and total > 0


def _capture(samples: list[dict]) -> dict:
    return {"meta": dict(META_DEFAULTS, id="x", sample_count=len(samples)), "samples": samples}


def _s(t: int, sid: int, stages: dict[str, tuple[float, float]], fps: float, **kw) -> dict:
    d = {"t_ms": t, "session_id": sid,
         "stages": [{"name": n, "p50_us": a, "p99_us": b} for n, (a, b) in stages.items()],
         "fps": fps, "repeat_fps": 0.0, "mbps": 10.0, "bitrate_kbps": 8000}
    d.update(kw)
    return d


def test_summary_math() -> None:
    samples = [_s(i * 1000, 1, {"capture": (float(i + 1), float(10 * (i + 1))), "encode": (1000.0, 2000.0)},
                  fps=60.0 - (i % 3), frames_dropped=i % 2) for i in range(100)]
    samples.append(_s(100_000, 2, {"capture": (500.0, 9999.0), "send": (50.0, 70.0)}, fps=30.0, packets_dropped=7))
    summ = summarize(_capture(samples))
    by = {s["name"]: s for s in summ["stages"]}
    assert [s["name"] for s in summ["stages"]] == ["capture", "encode", "send"]
    cap = by["capture"]
    # window p50s: 1..100 and 500; sorted index floor(n*q) of 101 values
    assert cap["windows"] == 101
    assert cap["p50_us"] == 51.0  # index 50
    assert cap["p95_us"] == 96.0  # index 95
    assert cap["p99_us"] == 100.0  # index 99
    assert cap["max_p99_us"] == 9999.0
    # window p99s: 10..1000 and 9999: the median is index 50
    assert cap["median_p99_us"] == 510.0
    assert by["encode"] == {"name": "encode", "windows": 100, "p50_us": 1000.0, "p95_us": 1000.0,
                            "p99_us": 1000.0, "median_p99_us": 2000.0, "max_p99_us": 2000.0}
    assert by["send"]["windows"] == 1 and by["send"]["max_p99_us"] == 70.0
    assert summ["fps"]["min"] == 30.0
    expected_mean = (sum(60.0 - (i % 3) for i in range(100)) + 30.0) / 101
    assert summ["fps"]["mean"] == round(expected_mean, 2)
    assert summ["counters"] == {"frames_dropped": 50, "packets_dropped": 7}
    assert "total_drops" not in summ  # lost, recovered and unrecoverable are never added up
    assert summ["sessions"] == 2 and summ["sample_count"] == 101


def test_summary_fps_weighs_windows_by_length_and_ignores_a_short_last_window() -> None:
    samples = [_s(i * 2000, 1, {"capture": (1.0, 2.0)}, fps=60.0, window_ms=2000) for i in range(9)]
    samples.append(_s(18_100, 1, {"capture": (1.0, 2.0)}, fps=10.0, window_ms=100, delivered_fps=5.0))
    summ = summarize(_capture(samples))
    assert summ["fps"]["min"] == 60.0 and summ["fps"]["max"] == 60.0  # the 100 ms last window is partial
    assert summ["fps"]["mean"] == round((9 * 2000 * 60 + 100 * 10) / 18_100, 2)
    assert summ["delivered_fps"] == {"min": 5.0, "mean": 5.0, "max": 5.0}


def test_summary_of_empty_capture() -> None:
    summ = summarize(_capture([]))
    assert summ["stages"] == [] and summ["fps"] == {"min": 0.0, "mean": 0.0, "max": 0.0} and summ["counters"] == {}


def test_csv_columns_one_per_stage_and_counter() -> None:
    samples = [
        _s(0, 1, {"capture": (1.0, 2.0), "encode": (3.0, 4.0)}, fps=60.0),
        _s(1000, 1, {"capture": (5.0, 6.0), "encode": (7.0, 8.0)}, fps=59.5, frames_dropped=2, rtt_us=900.5),
        _s(2000, 2, {"capture": (9.0, 10.0), "packetize": (11.0, 12.0)}, fps=30.0, send_dropped=1),
    ]
    rows = list(csv.reader(io.StringIO(to_csv(_capture(samples)))))
    assert rows[0] == ["t_ms", "session_id", "fps", "repeat_fps", "mbps", "bitrate_kbps",
                       "capture_frame_p50_us", "capture_frame_p99_us", "encode_frame_p50_us", "encode_frame_p99_us",
                       "packetize_frame_p50_us", "packetize_frame_p99_us", "frames_dropped", "send_dropped", "rtt_us"]
    assert len(rows) == 4
    assert rows[1] == ["0", "1", "60.0", "0.0", "10.0", "8000", "1.0", "2.0", "3.0", "4.0", "", "", "", "", ""]
    assert rows[2][-3:] == ["2", "", "900.5"]
    assert rows[3][8:12] == ["", "", "11.0", "12.0"] and rows[3][-2] == "1"


def test_non_finite_and_odd_values_are_made_json_safe(capdir: Path) -> None:
    rec = Recorder(CaptureStore(capdir))
    rec.start()
    nan, inf = float("nan"), float("inf")
    rec.push_sample(sample(fps=nan, rtt_us=inf, packets_dropped=3), 1)
    rec.push_sample({"stages": [{"name": "x", "p50_us": "fast", "p99_us": -inf}, "junk"], "fps": "60",
                     "repeat_fps": None, "mbps": 1.5, "bitrate_kbps": 100, "seal_us": nan}, 2)
    rec.push_sample(sample(), 1)
    json.dumps(rec.live(), allow_nan=False)
    meta = saved(rec)
    a, b, c = rec.store.load(meta["id"])["samples"]
    assert a["fps"] == 0.0 and "rtt_us" not in a and a["packets_dropped"] == 3
    assert b["stages"] == [{"name": "x", "p50_us": 0.0, "p99_us": 0.0}] and b["fps"] == 60.0 and "seal_us" not in b
    assert c["fps"] == 60.0 and c["stages"][1]["p50_us"] == 2000.0
