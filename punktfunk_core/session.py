"""A streaming session: what the protocol negotiated plus its running pipeline."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from punktfunk_core.stages import StreamSpec

if TYPE_CHECKING:
    from punktfunk_core.pipeline import Pipeline
    from punktfunk_core.stats import StatsSample

_ids = itertools.count(1)


class ClientFeedback:
    """Receiver-side counters a protocol learns from its client.

    The protocol's control thread calls :meth:`report`; the runner drains the
    totals into each window's sample. A field stays absent from samples until
    the client has reported it at least once (a path that cannot measure it
    never reports it). A small lock guards the handful of reports per window;
    it is never taken per frame.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packets_dropped: int | None = None
        self._fec_recovered: int | None = None
        self._rtt_us: float | None = None
        self.frames_undecodable: int | None = None
        self.decode_us: float | None = None

    def report(
        self,
        *,
        packets_dropped: int | None = None,
        fec_recovered: int | None = None,
        rtt_us: float | None = None,
        frames_undecodable: int | None = None,
        decode_us: float | None = None,
    ) -> None:
        """Add counts (deltas) and set the latest smoothed values."""
        with self._lock:
            if packets_dropped is not None:
                self._packets_dropped = (self._packets_dropped or 0) + int(packets_dropped)
            if fec_recovered is not None:
                self._fec_recovered = (self._fec_recovered or 0) + int(fec_recovered)
            if rtt_us is not None:
                self._rtt_us = float(rtt_us)
            if frames_undecodable is not None:
                self.frames_undecodable = (self.frames_undecodable or 0) + int(frames_undecodable)
            if decode_us is not None:
                self.decode_us = float(decode_us)

    def drain_into(self, sample: StatsSample) -> None:
        with self._lock:
            if self._packets_dropped is not None:
                sample.packets_dropped = self._packets_dropped
                self._packets_dropped = 0
            if self._fec_recovered is not None:
                sample.fec_recovered = self._fec_recovered
                self._fec_recovered = 0
            if self._rtt_us is not None:
                sample.rtt_us = round(self._rtt_us, 1)


@dataclass(slots=True)
class SessionInfo:
    id: int
    kind: str
    client: str
    width: int
    height: int
    fps: int
    codec: str
    encoder_backend: str
    gpu: str
    bitrate_kbps: int
    started_unix_ms: int
    state: str
    fps_measured: float | None
    mbps_measured: float | None


class Session:
    """One client's stream. Created by :meth:`punktfunk_core.host.Host.start_session`."""

    def __init__(self, kind: str, client: str, spec: StreamSpec) -> None:
        self.id: int = next(_ids)
        self.kind = kind
        self.client = client
        self.spec = spec
        self.encoder_backend = ""
        self.gpu = ""
        self.started_unix_ms = int(time.time() * 1000)
        self.started_ns = time.monotonic_ns()
        self.feedback = ClientFeedback()
        self.last_sample: StatsSample | None = None
        self.error: BaseException | None = None
        self.state = "starting"
        self.pipeline: Pipeline | None = None
        #: free-form protocol data shown in the console (e.g. encryption on/off)
        self.details: dict[str, Any] = {}
        self._ended = threading.Event()
        #: (monotonic_ns, frames_sent, bytes_sent) seen by info() calls, for rates
        #: that need no per-frame clock (kept short; guarded by a lock taken per call)
        self._rate_snaps: list[tuple[int, int, int]] = []
        self._rate_lock = threading.Lock()

    # control, called from protocol threads ------------------------------
    def stop(self, reason: str = "") -> None:
        if self.pipeline is not None:
            self.pipeline.stop(reason)

    def request_keyframe(self) -> None:
        if self.pipeline is not None:
            self.pipeline.request_keyframe()

    def set_bitrate(self, kbps: int) -> None:
        if self.pipeline is not None:
            self.pipeline.set_bitrate(kbps)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the session has ended; True if it did."""
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def info(self) -> dict[str, Any]:
        s = self.last_sample
        bitrate = self.pipeline.bitrate_kbps if self.pipeline is not None else self.spec.bitrate_kbps
        info = SessionInfo(
            self.id, self.kind, self.client, self.spec.width, self.spec.height, self.spec.fps,
            self.spec.codec, self.encoder_backend, self.gpu, bitrate, self.started_unix_ms,
            self.state, s.fps if s else None, s.mbps if s else None,
        )
        out = {f: getattr(info, f) for f in SessionInfo.__slots__}
        out["details"] = dict(self.details)
        p = self.pipeline
        if p is not None:
            out["frames_sent"], out["bytes_sent"], out["frames_dropped"] = p.frames_sent, p.bytes_sent, p.frames_dropped
            out["fps_recent"], out["mbps_recent"] = self._recent_rates(p.frames_sent, p.bytes_sent)
        if s is not None:
            out["last_sample"] = s.to_dict()
        return out

    def _recent_rates(self, frames: int, nbytes: int) -> tuple[float | None, float | None]:
        """fps and wire Mb/s over the last few seconds, from the counters seen by
        earlier info() calls (the console polls them); the session average until
        a second has passed between two calls."""
        now = time.monotonic_ns()
        with self._rate_lock:
            snaps = self._rate_snaps
            snaps.append((now, frames, nbytes))
            while len(snaps) > 2 and now - snaps[1][0] >= 1_000_000_000 and now - snaps[0][0] > 10_000_000_000:
                snaps.pop(0)
            older = [s for s in snaps if now - s[0] >= 1_000_000_000]
            t0, f0, b0 = older[-1] if older else (self.started_ns, 0, 0)
        dt = (now - t0) / 1e9
        if dt <= 0:
            return None, None
        return round((frames - f0) / dt, 2), round((nbytes - b0) * 8 / dt / 1e6, 3)
