"""The stats recorder: one capture in memory, saved captures as files.

Specification: ``docs/stats.md``. The recorder knows nothing
about hosts, sessions or plugins; the plugin module wires it to the
``stats_window`` hook, the measurement gate, IPC and the console.

Threads: session send threads call :meth:`Recorder.push_sample` once per
window; the IPC thread calls everything else. ``is_armed`` is a plain
attribute (read without a lock on the fast path); state changes take a short
lock. Saving happens outside that lock so a slow disk never stalls a stream.

File format (``<captures>/<id>.json``, 0600 in a 0700 directory): compact
JSON ``{"meta": {...}, "samples": [...]}`` with ``meta`` written first, so
:meth:`Recorder.list` reads only the first few kilobytes of each file (and
caches the result by mtime/size), never the samples.

Differences from the original, on purpose:

1. a failed save keeps the capture in memory; the next ``stop`` (or
   :meth:`Recorder.save_pending`) retries it;
2. ids carry milliseconds and a collision suffix, and a saved file is linked
   into place with ``link(2)``, which fails instead of replacing an existing
   file — a capture never overwrites another;
3. :meth:`Recorder.live` takes ``since`` (t_ms) and returns only newer samples;
4. ``list`` does not parse samples.
"""

from __future__ import annotations

import bisect
import errno
import json
import logging
import math
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from punktfunk_core import boundedjson
from punktfunk_core.paths import FileRefused, atomic_write, read_regular_file
from punktfunk_core.stats import INT_FIELDS, OPTIONAL_FIELDS, StatsSample

log = logging.getLogger("punktfunk.stats")

#: ≈ 3 h at 2 s windows; on overflow the oldest samples are kept
MAX_SAMPLES = 5400
#: ids are file names: letters, digits, dot, underscore, dash; never starting with a dot
#: (".", "..", and ".index" — the list cache — are not captures)
ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
SUFFIX = ".json"
#: bytes read from the head of a file by ``list`` (grown when a meta is larger)
HEADER_PROBE = 1024
HEADER_MAX = 256 * 1024
_HEAD_RE = re.compile(r'\s*\{\s*"meta"\s*:\s*')
#: a capture of MAX_SAMPLES windows is a few MB; a file far larger is not one of ours
MAX_CAPTURE_BYTES = 256 * 1024 * 1024
MAX_INDEX_BYTES = 64 * 1024 * 1024
#: the list cache persisted next to the captures (never listed: starts with ".")
INDEX_NAME = ".index.json"
INDEX_VERSION = 1

#: CaptureMeta fields every capture has, in file order, with the value used when absent
META_DEFAULTS: dict[str, Any] = {
    "id": "",
    "started_unix_ms": 0,
    "duration_ms": 0,
    "sample_count": 0,
    "truncated": False,
}
#: CaptureMeta fields the first session of a capture fills, with their types: absent
#: while no session ran (never a placeholder such as ``"kind": ""`` or ``"width": 0``)
SESSION_META: dict[str, type] = {
    "kind": str,
    "width": int,
    "height": int,
    "fps": int,
    "codec": str,
    "client": str,
    "encoder_backend": str,
    "gpu": str,
}
_META_TYPES = {**{k: type(v) for k, v in META_DEFAULTS.items()}, **SESSION_META}
#: the order of CaptureMeta fields in files and answers
META_ORDER = ("id", "started_unix_ms", "duration_ms", "kind", "width", "height", "fps", "codec", "client",
              "sample_count", "encoder_backend", "gpu", "truncated")


def _ordered(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in META_ORDER if k in meta}


class RecorderError(Exception):
    """An error the caller should see; ``code`` is HTTP-like."""

    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(RecorderError):
    code = 404


class NotRecording(RecorderError):
    code = 404


class SaveFailed(RecorderError):
    code = 500


def valid_id(capture_id: Any) -> bool:
    """True for ids that name a file inside the captures directory."""
    return isinstance(capture_id, str) and ID_RE.fullmatch(capture_id) is not None


def normalize_meta(raw: Any, capture_id: str | None = None) -> dict[str, Any]:
    """A CaptureMeta: every always-present field, of the right type, and the
    session fields that carry a value (older files stored ``""`` / ``0`` as
    placeholders: those are left out).

    Raises ValueError/TypeError when ``raw`` is not an object.
    """
    if not isinstance(raw, dict):
        raise TypeError("meta must be an object")
    meta: dict[str, Any] = {}
    for key, default in META_DEFAULTS.items():
        meta[key] = _typed(raw.get(key, default), _META_TYPES[key])
    for key, t in SESSION_META.items():
        v = raw.get(key)
        if v is not None:
            v = _typed(v, t)
            if v:
                meta[key] = v
    if capture_id is not None:
        meta["id"] = capture_id
    return _ordered(meta)


def _typed(v: Any, t: type) -> Any:
    if type(v) is t:
        return v
    if t is bool:
        return bool(v)
    if t is int:
        return int(v) if v is not None else 0
    return "" if v is None else str(v)


@dataclass(slots=True, eq=False)
class _Capture:
    meta: dict[str, Any]
    start_ns: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    t_index: list[int] = field(default_factory=list)
    #: caller's session key → session_id in this capture (the host's session id)
    sessions: dict[Any, int] = field(default_factory=dict)
    warned: bool = False

    def finished_meta(self, now_ns: int | None) -> dict[str, Any]:
        meta = dict(self.meta)
        if now_ns is not None:
            meta["duration_ms"] = max(0, (now_ns - self.start_ns) // 1_000_000)
        meta["sample_count"] = len(self.samples)
        return _ordered(meta)


class Recorder:
    """Records StatsSamples while armed; saves, lists, loads and deletes captures."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_samples: int = MAX_SAMPLES,
        on_arm: Callable[[], None] | None = None,
        on_disarm: Callable[[], None] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        prepare: bool = True,
    ) -> None:
        """``prepare=False``: only read (the CLI without a host): the directory is
        neither created nor cleaned of the temp files of interrupted saves."""
        self.directory = Path(directory)
        self.max_samples = int(max_samples)
        self.on_arm = on_arm
        self.on_disarm = on_disarm
        self._clock_ns = clock_ns
        self._wall_ms = wall_ms
        #: read by stream threads without a lock
        self.is_armed: bool = False
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._cur: _Capture | None = None
        self._pending: list[_Capture] = []
        #: file name → ((mtime_ns, size, ino), meta or None when unreadable)
        self._index: dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]] = {}
        self._index_lock = threading.Lock()
        self._index_dirty = False
        self._index_loaded = False
        #: samples refused because the capture was full (across captures)
        self.samples_refused = 0
        self.read_only = not prepare
        if prepare:
            self._prepare_dir()

    # -- directory -------------------------------------------------------------
    def _prepare_dir(self) -> None:
        """Create the directory 0700 (best effort) and remove temp files of saves
        that a crash interrupted."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if (self.directory.stat().st_mode & 0o777) != 0o700:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            log.warning("captures directory %s is not usable yet: %s", self.directory, exc)
            return
        try:
            for entry in os.scandir(self.directory):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    try:
                        os.unlink(entry.path)
                        log.info("removed %s left by an interrupted save", entry.name)
                    except OSError:
                        pass
        except OSError:
            pass

    def path_of(self, capture_id: str) -> Path:
        if not valid_id(capture_id):
            raise NotFound("recording not found")
        return self.directory / f"{capture_id}{SUFFIX}"

    # -- recording -------------------------------------------------------------
    def _reserved_ids(self) -> set[str]:
        ids = {c.meta["id"] for c in self._pending}
        if self._cur is not None:
            ids.add(self._cur.meta["id"])
        return ids

    def _new_id(self, wall_ms: int, taken: set[str]) -> str:
        base = time.strftime("%Y%m%d-%H%M%S", time.gmtime(wall_ms / 1000)) + f"-{wall_ms % 1000:03d}"
        n = 1
        while True:
            cid = base if n == 1 else f"{base}-{n}"
            if cid not in taken and not (self.directory / f"{cid}{SUFFIX}").exists():
                return cid
            n += 1

    def start(self) -> dict[str, Any]:
        """Arm a new capture; while armed this changes nothing. Returns the status."""
        with self._lock:
            if self._cur is None:
                wall = self._wall_ms()
                meta = dict(META_DEFAULTS)
                meta["id"] = self._new_id(wall, self._reserved_ids())
                meta["started_unix_ms"] = wall
                self._cur = _Capture(meta=meta, start_ns=self._clock_ns())
                self.is_armed = True
                # under the lock, so a racing stop cannot disarm the gate after this arms it
                if self.on_arm is not None:
                    self.on_arm()
                log.info("stats capture %s armed", meta["id"])
        return self.status()

    def register_session(self, key: Any, info: dict[str, Any] | None = None) -> int:
        """Give a session its session_id in the current capture (0 when idle).

        ``key`` is the host's session id (what ``punktfunk status`` shows) and
        becomes the session_id as it is; any other key gets the next free
        number. The first session of a capture fills the meta from ``info``
        (kind, width, height, fps, codec, client, encoder_backend, gpu).
        """
        if not self.is_armed:
            return 0
        with self._lock:
            cap = self._cur
            if cap is None:
                return 0
            return self._register_locked(cap, key, info)

    def _register_locked(self, cap: _Capture, key: Any, info: dict[str, Any] | None) -> int:
        sid = cap.sessions.get(key)
        if sid is not None:
            return sid
        taken = set(cap.sessions.values())
        if isinstance(key, int) and not isinstance(key, bool) and key > 0 and key not in taken:
            sid = key
        else:
            sid = max(taken, default=0) + 1
        first = not cap.sessions
        cap.sessions[key] = sid
        if first and info:
            for k, t in SESSION_META.items():
                v = info.get(k)
                if v is not None and _typed(v, t):
                    cap.meta[k] = _typed(v, t)
        return sid

    def push_sample(self, sample: StatsSample | dict[str, Any], key: Any = None,
                    info: dict[str, Any] | None = None) -> bool:
        """Append one window to the armed capture; False when idle or full.

        ``t_ms`` and ``session_id`` are stamped here; ``key`` identifies the
        session (registered on first sight with ``info``). The caller's
        sample is never modified or kept.
        """
        if not self.is_armed:
            return False
        d = sample.to_dict() if isinstance(sample, StatsSample) else dict(sample)
        d = _finite(d)
        now = self._clock_ns()
        with self._lock:
            cap = self._cur
            if cap is None:
                return False
            if len(cap.samples) >= self.max_samples:
                self.samples_refused += 1
                if not cap.meta["truncated"]:
                    cap.meta["truncated"] = True
                    warn = True
                else:
                    warn = False
                if warn:
                    log.warning("stats capture %s is full (%d samples); later windows are not recorded",
                                cap.meta["id"], self.max_samples)
                return False
            sid = self._register_locked(cap, key, info)
            t_ms = max(0, (now - cap.start_ns) // 1_000_000)
            if cap.t_index and t_ms < cap.t_index[-1]:
                t_ms = cap.t_index[-1]
            d["t_ms"] = t_ms
            d["session_id"] = sid
            cap.samples.append(d)
            cap.t_index.append(t_ms)
        return True

    def status(self) -> dict[str, Any]:
        """StatsStatus: ``{armed, sample_count, started_unix_ms, elapsed_ms, kind}``
        plus ``id`` of the armed capture and ``unsaved`` (captures whose save failed)."""
        with self._lock:
            cap = self._cur
            unsaved = len(self._pending)
            if cap is None:
                return {"armed": False, "sample_count": 0, "started_unix_ms": 0, "elapsed_ms": 0,
                        "kind": "", "id": "", "unsaved": unsaved}
            return {
                "armed": True,
                "sample_count": len(cap.samples),
                "started_unix_ms": cap.meta["started_unix_ms"],
                "elapsed_ms": max(0, (self._clock_ns() - cap.start_ns) // 1_000_000),
                "kind": cap.meta.get("kind", ""),
                "id": cap.meta["id"],
                "unsaved": unsaved,
            }

    def live(self, since: int | float | None = None) -> dict[str, Any]:
        """The capture so far (``{meta, samples}``); with ``since`` only samples
        whose ``t_ms`` is greater. Raises NotRecording when idle."""
        with self._lock:
            cap = self._cur
            if cap is None:
                raise NotRecording("not recording")
            meta = cap.finished_meta(self._clock_ns())
            start = 0 if since is None else bisect.bisect_right(cap.t_index, since)
            samples = cap.samples[start:]
        return {"meta": meta, "samples": samples}

    def stop(self) -> dict[str, Any] | None:
        """Disarm, then save. Returns the saved capture's meta, or None when
        nothing was armed and nothing is waiting to be saved.

        Raises SaveFailed when the save fails; the capture stays in memory and
        the next ``stop`` (or :meth:`save_pending`) retries it.
        """
        stopped: _Capture | None = None
        with self._lock:
            if self._cur is not None:
                cap = self._cur
                self.is_armed = False
                self._cur = None
                cap.meta = cap.finished_meta(self._clock_ns())
                self._pending.append(cap)
                stopped = cap
                if self.on_disarm is not None:
                    self.on_disarm()
        return self._save_all(stopped)

    def save_pending(self) -> dict[str, Any] | None:
        """Retry saving captures whose save failed (None when there are none)."""
        return self._save_all(None)

    @property
    def unsaved(self) -> int:
        return len(self._pending)

    def _save_all(self, stopped: _Capture | None) -> dict[str, Any] | None:
        with self._save_lock:
            with self._lock:
                todo = list(self._pending)
            if not todo:
                return None
            saved: list[_Capture] = []
            errors: dict[int, str] = {}
            for cap in todo:
                try:
                    self._write(cap)
                    saved.append(cap)
                except Exception as exc:  # noqa: BLE001 - whatever it is, the capture is kept
                    if isinstance(exc, OSError):
                        errors[id(cap)] = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
                    else:
                        errors[id(cap)] = f"{type(exc).__name__}: {exc}"
                    log.error("saving stats capture %s failed (kept in memory; stop again to retry): %s",
                              cap.meta["id"], errors[id(cap)])
            with self._lock:
                self._pending = [c for c in self._pending if not any(c is s for s in saved)]
        target = stopped if stopped is not None else (saved[-1] if saved else todo[-1])
        if id(target) in errors:
            raise SaveFailed(f"saving capture {target.meta['id']} failed: {errors[id(target)]}; "
                             "the capture is kept in memory, stop again to retry")
        if errors:
            log.warning("%d older capture(s) are still unsaved", len(errors))
        return dict(target.meta)

    def _write(self, cap: _Capture) -> None:
        """Write a capture atomically and without replacing any existing file."""
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{cap.meta['id']}.", suffix=".tmp", dir=self.directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb", closefd=True) as f:
                fd = -1
                _serialize(f, cap)
                f.flush()
                os.fsync(f.fileno())
            final = self._link_new(cap, tmp)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        try:
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        try:
            st = final.stat()
            with self._index_lock:
                self._index[final.name] = ((st.st_mtime_ns, st.st_size, st.st_ino), dict(cap.meta))
                self._index_dirty = True
        except OSError:
            pass
        log.info("stats capture %s saved (%d samples) to %s", cap.meta["id"], len(cap.samples), final)

    def _link_new(self, cap: _Capture, tmp: str) -> Path:
        """Move ``tmp`` to ``<id>.json`` without ever replacing a file; a taken
        id gets a suffix (and the file is rewritten with the new id)."""
        for _ in range(1000):
            final = self.directory / f"{cap.meta['id']}{SUFFIX}"
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # no hard links on this filesystem: rename after an existence check
                if not final.exists():
                    os.replace(tmp, final)
                    return final
            with self._lock:
                taken = self._reserved_ids()
            taken.discard(cap.meta["id"])
            old = cap.meta["id"]
            cap.meta["id"] = self._new_id(cap.meta["started_unix_ms"], taken | {old})
            log.warning("capture id %s is taken on disk; saving as %s", old, cap.meta["id"])
            with open(tmp, "r+b") as f:
                f.truncate(0)
                _serialize(f, cap)
                f.flush()
                os.fsync(f.fileno())
        raise OSError(errno.EEXIST, "no free capture id")

    # -- saved captures --------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Metas of the saved captures, newest first; unreadable files are skipped.

        A file's meta is read from its head once and then remembered by
        (mtime, size, inode), in memory and in ``.index.json`` next to the
        captures (so a restarted host does not re-read thousands of heads).
        """
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        with self._index_lock:
            if not self._index_loaded:
                self._load_index()
            index = self._index
            out: list[dict[str, Any]] = []
            seen: set[str] = set()
            for entry in entries:
                name = entry.name
                if not name.endswith(SUFFIX) or name.startswith("."):
                    continue
                if not valid_id(name[: -len(SUFFIX)]):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                seen.add(name)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                cached = index.get(name)
                if cached is not None and cached[0] == stamp:
                    meta = cached[1]
                else:
                    meta = read_meta(entry.path, name[: -len(SUFFIX)])
                    index[name] = (stamp, meta)
                    self._index_dirty = True
                if meta is not None:
                    out.append(meta)
            for name in [n for n in index if n not in seen]:
                del index[name]
                self._index_dirty = True
            if self._index_dirty and not self.read_only:
                self._store_index()
        out = [dict(m) for m in out]
        out.sort(key=lambda m: (m["started_unix_ms"], m["id"]), reverse=True)
        return out

    def _load_index(self) -> None:
        self._index_loaded = True
        try:
            doc = boundedjson.load_file(self.directory / INDEX_NAME, max_bytes=MAX_INDEX_BYTES)
            if doc.get("version") != INDEX_VERSION:
                return
            for name, (mtime, size, ino, meta) in doc["entries"].items():
                if meta is not None:
                    meta = normalize_meta(meta, name[: -len(SUFFIX)])
                self._index.setdefault(name, ((int(mtime), int(size), int(ino)), meta))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.info("captures index is unreadable (%s); rebuilding it", exc)

    def _store_index(self) -> None:
        doc = {"version": INDEX_VERSION,
               "entries": {n: [*stamp, meta] for n, (stamp, meta) in self._index.items()}}
        try:
            atomic_write(self.directory / INDEX_NAME, _dumps(doc).encode(), 0o600)
            self._index_dirty = False
        except OSError as exc:
            log.debug("captures index not written: %s", exc)

    def load(self, capture_id: Any) -> dict[str, Any]:
        """The saved capture ``{meta, samples}``; NotFound for unknown, invalid or unreadable ids."""
        path = self.path_of(capture_id)
        try:
            raw = read_regular_file(path, MAX_CAPTURE_BYTES)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("recording not found") from None
        except OSError as exc:
            raise NotFound(f"recording {capture_id} cannot be read: {exc.strerror}") from None
        except FileRefused as exc:  # a FIFO, device or giant in its place
            log.warning("recording %s is not loaded: %s", capture_id, exc)
            raise NotFound(f"recording {capture_id} is unreadable") from None
        try:
            return parse_capture(raw, capture_id)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("recording %s is unreadable: %s", capture_id, exc)
            raise NotFound(f"recording {capture_id} is unreadable") from None

    def delete(self, capture_id: Any) -> None:
        path = self.path_of(capture_id)
        try:
            if not path.is_file():
                raise FileNotFoundError
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound("recording not found") from None
        with self._index_lock:
            if self._index.pop(path.name, None) is not None:
                self._index_dirty = True
        log.info("stats capture %s deleted", capture_id)


_REQUIRED_FLOATS = ("fps", "repeat_fps", "mbps")
#: per-window timing lists of a sample: the stacked stages and the finer split
_TIMING_LISTS = ("stages", "detail")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """Make a sample JSON-safe: a value that is not a finite number becomes 0
    (required fields, stage timings) or absent (optional fields). The common
    case costs one float sum."""
    try:
        total = d["fps"] + d["repeat_fps"] + d["mbps"] + d.get("bitrate_kbps", 0)
        for key in _TIMING_LISTS:
            for st in d.get(key, ()):
                total += st["p50_us"] + st["p99_us"]
        for k in OPTIONAL_FIELDS:
            v = d.get(k)
            if v is not None:
                total += v
        if math.isfinite(total) and all(isinstance(d.get(key, []), list) for key in _TIMING_LISTS):
            return d
    except (TypeError, KeyError, AttributeError):
        pass
    out = dict(d)
    for k in _REQUIRED_FLOATS:
        out[k] = _num(out.get(k)) or 0.0
    out["bitrate_kbps"] = int(_num(out.get("bitrate_kbps")) or 0)
    for key in _TIMING_LISTS:
        timings = out.get(key)
        clean = []
        for st in timings if isinstance(timings, list) else ():
            if isinstance(st, dict) and "name" in st:
                clean.append({"name": str(st["name"]), "p50_us": _num(st.get("p50_us")) or 0.0,
                              "p99_us": _num(st.get("p99_us")) or 0.0})
        if key == "stages" or clean:
            out[key] = clean
        else:
            out.pop(key, None)
    for k in OPTIONAL_FIELDS:
        if k in out:
            v = _num(out[k])
            if v is None:
                del out[k]
            else:
                out[k] = int(v) if k in INT_FIELDS else v
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _serialize(f: Any, cap: _Capture, chunk: int = 256) -> None:
    """Compact JSON ``{"meta":…,"samples":[…]}``, meta first, written in chunks
    (no second copy of a 5400-sample capture in memory)."""
    f.write(b'{"meta":' + _dumps(cap.meta).encode() + b',"samples":[')
    samples = cap.samples
    for i in range(0, len(samples), chunk):
        part = ",".join(_dumps(s) for s in samples[i:i + chunk])
        f.write((("," if i else "") + part).encode())
    f.write(b"]}")


def _load_sample(s: Any) -> dict[str, Any]:
    """A sample from a file: ours are taken as they are (after a cheap check),
    anything else goes through the core's model (which raises on garbage)."""
    if (isinstance(s, dict) and type(s.get("t_ms")) is int and type(s.get("session_id")) is int
            and isinstance(s.get("stages"), list) and "bitrate_kbps" in s):
        return _finite(s)
    return _finite(StatsSample.from_dict(s).to_dict())


def parse_capture(raw: bytes | str, capture_id: str | None = None) -> dict[str, Any]:
    """Parse a capture file; samples are normalised (optional fields that are
    absent stay absent, old files with zeros load as they are)."""
    doc = boundedjson.loads(raw, max_bytes=MAX_CAPTURE_BYTES)
    if not isinstance(doc, dict):
        raise TypeError("capture must be an object")
    samples_raw = doc.get("samples", [])
    if not isinstance(samples_raw, list):
        raise TypeError("samples must be a list")
    samples = [_load_sample(s) for s in samples_raw]
    meta = normalize_meta(doc.get("meta", {}), capture_id)
    if "sample_count" not in doc.get("meta", {}):
        meta["sample_count"] = len(samples)
    return {"meta": meta, "samples": samples}


def read_meta(path: str | os.PathLike[str], capture_id: str) -> dict[str, Any] | None:
    """The meta at the head of a capture file, or None when the file is unreadable.

    Reads a few KiB from the head and a few bytes from the tail (a file cut
    short does not end in ``}``); only files whose meta is not first are
    parsed in full.
    """
    try:  # non-blocking: a FIFO that appeared after the directory scan is not waited on
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) or size < 2 or size > MAX_CAPTURE_BYTES:
            return None
        if not os.pread(fd, 16, max(0, size - 16)).rstrip().endswith(b"}"):
            return None
        n = HEADER_PROBE
        while True:
            head = os.pread(fd, n, 0)
            text = head.decode("utf-8", "replace")
            m = _HEAD_RE.match(text)
            if m is None:
                break  # meta not first: parse in full below
            try:
                raw_meta, _end = boundedjson.decode_prefix(text, m.end())
                return normalize_meta(raw_meta, capture_id)
            except boundedjson.JsonRefused:  # cut off by the probe (read more), or bad
                if len(head) >= size or n >= HEADER_MAX:
                    break
                n = min(n * 4, HEADER_MAX)
        doc = boundedjson.loads(os.pread(fd, size, 0), max_bytes=MAX_CAPTURE_BYTES)
        if not isinstance(doc, dict) or not isinstance(doc.get("samples", []), list):
            return None
        meta = normalize_meta(doc.get("meta"), capture_id)
        if "sample_count" not in doc["meta"]:
            meta["sample_count"] = len(doc.get("samples", []))
        return meta
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    finally:
        os.close(fd)
