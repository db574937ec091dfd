"""The stats recorder: the live capture in memory, saved into a :class:`CaptureStore`.

Specification: ``docs/stats.md``. The recorder knows nothing about hosts,
sessions or plugins; the plugin module wires it to the ``stats_window`` hook,
the measurement gate, IPC and the console.

Threads: session send threads call :meth:`Recorder.push_sample` once per
window; the IPC thread calls everything else. ``is_armed`` is a plain
attribute (read without a lock on the fast path); state changes take a short
lock. Saving happens outside that lock so a slow disk never stalls a stream.

Differences from the original, on purpose:

1. a failed save keeps the capture in memory; the next ``stop`` (or
   :meth:`Recorder.save_pending`) retries it;
2. ids carry milliseconds and a collision suffix, and the store never
   replaces an existing file — a capture never overwrites another;
3. :meth:`Recorder.live` takes ``since`` (t_ms) and returns only newer samples;
4. listing saved captures does not parse samples (see the store).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from punktfunk_core.stats import StatsSample

from punktfunk_stats.store import (
    META_DEFAULTS,
    SESSION_META,
    CaptureError,
    CaptureStore,
    finite_sample,
    meta_value,
    ordered_meta,
)

log = logging.getLogger("punktfunk.stats")

#: ≈ 3 h at 2 s windows; on overflow the oldest samples are kept
MAX_SAMPLES = 5400


class NotRecording(CaptureError):
    code = 404


class SaveFailed(CaptureError):
    code = 500


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
        return ordered_meta(meta)


class Recorder:
    """Records StatsSamples while armed and saves each capture into ``store``."""

    def __init__(
        self,
        store: CaptureStore,
        *,
        max_samples: int = MAX_SAMPLES,
        on_arm: Callable[[], None] | None = None,
        on_disarm: Callable[[], None] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.store = store
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
        #: samples refused because the capture was full (across captures)
        self.samples_refused = 0

    # -- recording -------------------------------------------------------------
    def _reserved_ids(self) -> set[str]:
        ids = {c.meta["id"] for c in self._pending}
        if self._cur is not None:
            ids.add(self._cur.meta["id"])
        return ids

    def start(self) -> dict[str, Any]:
        """Arm a new capture; while armed this changes nothing. Returns the status."""
        with self._lock:
            if self._cur is None:
                wall = self._wall_ms()
                meta = dict(META_DEFAULTS)
                meta["id"] = self.store.new_id(wall, self._reserved_ids())
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
                if v is not None and meta_value(v, t):
                    cap.meta[k] = meta_value(v, t)
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
        d = finite_sample(d)
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
        plus ``id`` of the armed capture, ``unsaved`` (captures whose save failed) and
        ``max_samples`` (windows a capture keeps)."""
        with self._lock:
            cap = self._cur
            unsaved = len(self._pending)
            if cap is None:
                return {"armed": False, "sample_count": 0, "started_unix_ms": 0, "elapsed_ms": 0,
                        "kind": "", "id": "", "unsaved": unsaved, "max_samples": self.max_samples}
            return {
                "armed": True,
                "sample_count": len(cap.samples),
                "started_unix_ms": cap.meta["started_unix_ms"],
                "elapsed_ms": max(0, (self._clock_ns() - cap.start_ns) // 1_000_000),
                "kind": cap.meta.get("kind", ""),
                "id": cap.meta["id"],
                "unsaved": unsaved,
                "max_samples": self.max_samples,
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
        self.store.save(cap.meta, cap.samples, self._reserved_ids_now)  # may give cap.meta a free id

    def _reserved_ids_now(self) -> set[str]:
        with self._lock:
            return self._reserved_ids()
