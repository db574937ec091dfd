"""Test-only plugin, loaded into real host processes with
``PUNKTFUNK_PLUGINS=pf_testplugins`` (tests put this folder on PYTHONPATH).

* ``stats_window`` appends every sample as a JSON line to the file named by
  ``PF_TEST_SAMPLES`` (so tests read the samples the real runner produced);
* ``session_started`` / ``session_ended`` append ``{"event", "session"}`` lines
  to the file named by ``PF_TEST_EVENTS``;
* encoder ``sleepy``: takes a known time in its encode step (``receive``):
  sleeps most of ``encode_ms`` and spins the rest, so the time is exact;
* encoder ``explode``: raises after ``after`` frames (a faulty third-party stage);
* capture ``flat``: a grey I420 frame, nearly free.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import numpy as np

from punktfunk_core import hookimpl
from punktfunk_core.stages import AccessUnit, CaptureSource, Encoder, Frame, StreamSpec

_lock = threading.Lock()


class FlatCapture(CaptureSource):
    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        w, h = spec.width, spec.height
        self.planes = (np.full((h, w), 128, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
                       np.full((h // 2, w // 2), 128, np.uint8))
        self.w, self.h = w, h

    def grab(self, frame_id: int) -> Frame:
        return Frame(self.planes, "i420", self.w, self.h, frame_id, time.monotonic_ns())


class SleepyEncoder(Encoder):
    backend = "sleepy"

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.encode_ns = int(float(options.get("encode_ms", 4.0)) * 1e6)
        self.after = int(options.get("after", 0))
        self._kbps = spec.bitrate_kbps
        self._pending: Frame | None = None
        self._key = True
        self.payload = bytes(1000)

    def submit(self, frame: Frame) -> None:
        self._pending = frame

    def receive(self) -> list[AccessUnit]:
        f = self._pending
        assert f is not None
        start = time.perf_counter_ns()
        deadline = start + self.encode_ns
        sleep_ns = self.encode_ns - 600_000  # wake early, then spin the rest
        if sleep_ns > 0:
            time.sleep(sleep_ns / 1e9)
        while time.perf_counter_ns() < deadline:
            pass
        key, self._key = self._key, False
        return [AccessUnit(self.payload, key, f.frame_id, f.capture_ns)]

    def request_keyframe(self) -> None:
        self._key = True

    def set_bitrate(self, kbps: int) -> None:
        self._kbps = kbps

    @property
    def bitrate_kbps(self) -> int:
        return self._kbps


class ExplodingEncoder(SleepyEncoder):
    backend = "explode"

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        super().__init__(spec, {"encode_ms": 0.1})
        self.after = int(options.get("after", 30))
        self.n = 0

    def receive(self) -> list[AccessUnit]:
        self.n += 1
        if self.n > self.after:
            raise RuntimeError(f"explode encoder: failing on purpose after {self.after} frames")
        return super().receive()


@hookimpl
def register_stages(registry):
    registry.add("capture", "flat", FlatCapture, description="grey frames (tests)")
    registry.add("encoder", "sleepy", SleepyEncoder, description="takes encode_ms per frame (tests)")
    registry.add("encoder", "explode", ExplodingEncoder, description="raises after N frames (tests)")


@hookimpl
def stats_window(session, sample):
    path = os.environ.get("PF_TEST_SAMPLES")
    if not path:
        return
    line = json.dumps({"kind": session.kind, "session": session.id, "sample": sample.to_dict()})
    with _lock, open(path, "a") as f:
        f.write(line + "\n")


def _event(event: str, session: Any) -> None:
    path = os.environ.get("PF_TEST_EVENTS")
    if path:
        with _lock, open(path, "a") as f:
            f.write(json.dumps({"event": event, "session": session.id}) + "\n")


@hookimpl
def session_started(session):
    _event("started", session)


@hookimpl
def session_ended(session, error):
    _event("ended", session)
