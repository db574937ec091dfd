"""Saved stats captures: the file format, the captures directory and its list index.

Specification: ``docs/stats.md``. A capture is ``<directory>/<id>.json``
(0600 in a 0700 directory): compact JSON ``{"meta": {...}, "samples": [...]}``
with ``meta`` written first, so :meth:`CaptureStore.list` reads only the first
few kilobytes of each file (and caches the result by mtime/size/inode, in
memory and in ``.index.json``), never the samples.

A capture is written with :func:`punktfunk_core.paths.atomic_write` without
replacing: a saved file never overwrites another, and an id that is taken on
disk gets a suffix. Files are read with ``read_regular_file`` (a FIFO or
device in their place is refused, never waited on) and parsed through
``boundedjson``.

Threads: the IPC thread lists, loads and deletes; the recorder saves (one
save at a time, outside its own lock). The list index has its own lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from punktfunk_core import boundedjson
from punktfunk_core.paths import FileRefused, atomic_write, read_regular_file
from punktfunk_core.stats import INT_FIELDS, OPTIONAL_FIELDS, StatsSample

log = logging.getLogger("punktfunk.stats")

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


def ordered_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in META_ORDER if k in meta}


class CaptureError(Exception):
    """An error the caller should see; ``code`` is HTTP-like."""

    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CaptureError):
    code = 404


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
        meta[key] = meta_value(raw.get(key, default), _META_TYPES[key])
    for key, t in SESSION_META.items():
        v = raw.get(key)
        if v is not None:
            v = meta_value(v, t)
            if v:
                meta[key] = v
    if capture_id is not None:
        meta["id"] = capture_id
    return ordered_meta(meta)


def meta_value(v: Any, t: type) -> Any:
    """``v`` as a meta field of type ``t`` (old files wrote some fields with other types)."""
    if type(v) is t:
        return v
    if t is bool:
        return bool(v)
    if t is int:
        return int(v) if v is not None else 0
    return "" if v is None else str(v)


class CaptureStore:
    """The saved captures in one directory: save, list, load, delete."""

    def __init__(self, directory: str | os.PathLike[str], *, prepare: bool = True) -> None:
        """``prepare=False``: only read (the CLI without a host): the directory is
        neither created nor cleaned of the temp files of interrupted saves."""
        self.directory = Path(directory)
        #: file name → ((mtime_ns, size, ino), meta or None when unreadable)
        self._index: dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]] = {}
        self._index_lock = threading.Lock()
        self._index_dirty = False
        self._index_loaded = False
        self.read_only = not prepare
        if prepare:
            self._prepare_dir()

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

    def path_of(self, capture_id: Any) -> Path:
        if not valid_id(capture_id):
            raise NotFound("recording not found")
        return self.directory / f"{capture_id}{SUFFIX}"

    def new_id(self, wall_ms: int, taken: set[str]) -> str:
        """A free id for a capture started at ``wall_ms``: its UTC time to the
        millisecond, with ``-2``, ``-3`` … when that is in ``taken`` or on disk."""
        base = time.strftime("%Y%m%d-%H%M%S", time.gmtime(wall_ms / 1000)) + f"-{wall_ms % 1000:03d}"
        n = 1
        while True:
            cid = base if n == 1 else f"{base}-{n}"
            if cid not in taken and not (self.directory / f"{cid}{SUFFIX}").exists():
                return cid
            n += 1

    def save(self, meta: dict[str, Any], samples: list[dict[str, Any]], taken: Callable[[], set[str]]) -> Path:
        """Write a capture atomically, never replacing a file. When ``meta["id"]``
        is taken on disk (another host, a copied file) the capture gets the next
        free id, avoiding the ids ``taken()`` reserves, and ``meta["id"]`` says which."""
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=0o700)
        for _ in range(1000):
            final = self.directory / f"{meta['id']}{SUFFIX}"
            try:
                atomic_write(final, _serialized(meta, samples), 0o600, replace=False)
                break
            except FileExistsError:
                old = meta["id"]
                meta["id"] = self.new_id(meta["started_unix_ms"], taken() | {old})
                log.warning("capture id %s is taken on disk; saving as %s", old, meta["id"])
        else:
            raise FileExistsError(f"no free capture id in {self.directory}")
        try:
            st = final.stat()
            with self._index_lock:
                self._index[final.name] = ((st.st_mtime_ns, st.st_size, st.st_ino), dict(meta))
                self._index_dirty = True
        except OSError:
            pass
        log.info("stats capture %s saved (%d samples) to %s", meta["id"], len(samples), final)
        return final

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


def finite_sample(d: dict[str, Any]) -> dict[str, Any]:
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


def _serialized(meta: dict[str, Any], samples: list[dict[str, Any]], chunk: int = 256) -> Iterator[bytes]:
    """Compact JSON ``{"meta":…,"samples":[…]}``, meta first, in pieces
    (no second copy of a 5400-sample capture in memory)."""
    yield b'{"meta":' + _dumps(meta).encode() + b',"samples":['
    for i in range(0, len(samples), chunk):
        part = ",".join(_dumps(s) for s in samples[i:i + chunk])
        yield (("," if i else "") + part).encode()
    yield b"]}"


def _load_sample(s: Any) -> dict[str, Any]:
    """A sample from a file: ours are taken as they are (after a cheap check),
    anything else goes through the core's model (which raises on garbage)."""
    if (isinstance(s, dict) and type(s.get("t_ms")) is int and type(s.get("session_id")) is int
            and isinstance(s.get("stages"), list) and "bitrate_kbps" in s):
        return finite_sample(s)
    return finite_sample(StatsSample.from_dict(s).to_dict())


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
