"""A streaming session: what the protocol negotiated plus its running pipeline."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from punktfunk_core.stages import StreamSpec

if TYPE_CHECKING:
    from punktfunk_core.adaptive import AdaptiveControl
    from punktfunk_core.inputsink import InputSink
    from punktfunk_core.pipeline import AudioPipeline, Pipeline
    from punktfunk_core.stats import StatsSample

_ids = itertools.count(1)


class ClientFeedback:
    """Receiver-side counters a protocol learns from its client.

    The protocol's control thread calls :meth:`report`; the runner drains the
    totals into each window's sample. A field stays absent from samples until
    the client has reported it at least once (a path that cannot measure it
    never reports it). A small lock guards the handful of reports per window;
    it is never taken per frame.

    The last window of a session must hold the client's last report too. A
    protocol whose client sends one when the session ends calls
    :meth:`expect_last_report` and, when it has arrived (or never will),
    :meth:`last_report_in`; the runner waits for that (bounded) before it
    closes the session's last window.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packets_dropped: int | None = None
        self._fec_recovered: int | None = None
        self._frames_unrecoverable: int | None = None
        #: frames the client decoded and the span (µs) its reports covered, since the last drain
        self._frames_delivered = 0
        self._delivered_span_us = 0.0
        self._rtt_us: float | None = None
        self.decode_us: float | None = None
        self._expects_last = False
        self._last_in = threading.Event()
        #: what the protocol's controllers decided from these reports (docs/adaptive.md); its
        #: capture fields go into each window with the counts
        self.adaptive: AdaptiveControl | None = None

    def report(
        self,
        *,
        packets_dropped: int | None = None,
        fec_recovered: int | None = None,
        frames_unrecoverable: int | None = None,
        frames_delivered: int | None = None,
        span_us: float | None = None,
        rtt_us: float | None = None,
        decode_us: float | None = None,
    ) -> None:
        """Add counts (deltas) and set the latest smoothed values. ``frames_delivered``
        counts only together with ``span_us``, the client time its report covers."""
        with self._lock:
            if packets_dropped is not None:
                self._packets_dropped = (self._packets_dropped or 0) + int(packets_dropped)
            if fec_recovered is not None:
                self._fec_recovered = (self._fec_recovered or 0) + int(fec_recovered)
            if frames_unrecoverable is not None:
                self._frames_unrecoverable = (self._frames_unrecoverable or 0) + int(frames_unrecoverable)
            if frames_delivered is not None and span_us is not None and span_us > 0:
                self._frames_delivered += int(frames_delivered)
                self._delivered_span_us += float(span_us)
            if rtt_us is not None:
                self._rtt_us = float(rtt_us)
            if decode_us is not None:
                self.decode_us = float(decode_us)

    def drain_into(self, sample: StatsSample) -> None:
        with self._lock:
            if self._packets_dropped is not None:
                sample.packets_dropped = self._packets_dropped
            if self._fec_recovered is not None:
                sample.fec_recovered = self._fec_recovered
            if self._frames_unrecoverable is not None:
                sample.frames_unrecoverable = self._frames_unrecoverable
            if self._delivered_span_us > 0:
                sample.delivered_fps = round(self._frames_delivered / (self._delivered_span_us / 1e6), 2)
            if self._rtt_us is not None:
                sample.rtt_us = round(self._rtt_us, 1)
            self._zero_locked()
        if self.adaptive is not None:
            self.adaptive.fill(sample)

    def forget(self) -> None:
        """Drop counts of a stretch no window covers (measurement was off)."""
        with self._lock:
            self._zero_locked()

    def _zero_locked(self) -> None:
        # a field once reported stays present (0 = measured, nothing happened)
        for name in ("_packets_dropped", "_fec_recovered", "_frames_unrecoverable"):
            if getattr(self, name) is not None:
                setattr(self, name, 0)
        self._frames_delivered = 0
        self._delivered_span_us = 0.0

    # -- the client's last report ---------------------------------------------------
    def expect_last_report(self) -> None:
        """This session's client reports once more when the session ends."""
        self._expects_last = True

    def last_report_in(self) -> None:
        """The client's last report has arrived, or none will (it left)."""
        self._last_in.set()

    def wait_last_report(self, timeout: float) -> bool:
        """Wait until the last report is in (at once when none is expected)."""
        return not self._expects_last or self._last_in.wait(timeout)


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
    """One client's stream. Created by :meth:`punktfunk_core.host.Host.start_session`.

    ``pipeline`` runs its video; ``audio``, when the protocol attached one
    (:meth:`punktfunk_core.host.Host.start_audio`), its audio; ``input``, when
    the protocol opened one (:meth:`punktfunk_core.host.Host.start_input`), the
    sink its client's input goes to. The session ends when its video pipeline
    ends, and takes its audio and its input with it.
    """

    def __init__(self, kind: str, client: str, spec: StreamSpec) -> None:
        self.id: int = next(_ids)
        self.kind = kind
        self.client = client
        self.spec = spec
        self.encoder_backend = ""
        self.gpu = ""
        self.started_unix_ms = int(time.time() * 1000)
        self.started_ns = time.monotonic_ns()
        #: when its pipeline stopped streaming (0 while it runs)
        self.stopped_ns = 0
        self.feedback = ClientFeedback()
        self.last_sample: StatsSample | None = None
        self.error: BaseException | None = None
        self.state = "starting"
        self.pipeline: Pipeline | None = None
        self.audio: AudioPipeline | None = None
        self._attach_lock = threading.Lock()  # audio and input attach vs. the end: never per frame
        self._audio_closed = False
        self.input: InputSink | None = None
        self._input_closed = False
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

    @property
    def adaptive(self) -> AdaptiveControl | None:
        """The session's adaptive FEC/bitrate/keyframe control, when its protocol runs one."""
        return self.feedback.adaptive

    @adaptive.setter
    def adaptive(self, control: AdaptiveControl | None) -> None:
        self.feedback.adaptive = control

    def attach_audio(self, audio: AudioPipeline) -> bool:
        """Make ``audio`` this session's audio; False when the session is ending
        or already has audio (the caller then owns it still)."""
        with self._attach_lock:
            if self._audio_closed or self.audio is not None or self.ending:
                return False
            self.audio = audio
            return True

    def close_audio(self) -> AudioPipeline | None:
        """The session is ending: no audio may attach from now on; returns the audio it has."""
        with self._attach_lock:
            self._audio_closed = True
            return self.audio

    def attach_input(self, sink: InputSink) -> bool:
        """Make ``sink`` this session's input; False when the session is ending
        or has an input sink already (the caller then owns it still)."""
        with self._attach_lock:
            if self._input_closed or self.input is not None or self.ending:
                return False
            self.input = sink
            return True

    def close_input(self) -> InputSink | None:
        """The session is ending: no input sink may attach from now on; returns the one it has."""
        with self._attach_lock:
            self._input_closed = True
            return self.input

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the session has ended; True if it did."""
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def ending(self) -> bool:
        """The stream stopped or is stopping: its pipeline no longer runs (the
        last stats window may still wait for the client's last report)."""
        p = self.pipeline
        return self.ended or (p is not None and self.state != "starting" and not p.running)

    def info(self) -> dict[str, Any]:
        s = self.last_sample
        bitrate = self.pipeline.bitrate_kbps if self.pipeline is not None else self.spec.bitrate_kbps
        info = SessionInfo(
            self.id, self.kind, self.client, self.spec.width, self.spec.height, self.spec.fps,
            self.spec.codec, self.encoder_backend, self.gpu, bitrate, self.started_unix_ms,
            self.state, s.fps if s else None, s.mbps if s else None,
        )
        out = {f: getattr(info, f) for f in SessionInfo.__slots__}
        out["duration_ms"] = ((self.stopped_ns or time.monotonic_ns()) - self.started_ns) // 1_000_000
        out["details"] = dict(self.details)
        p = self.pipeline
        if p is not None:
            out["frames_sent"], out["bytes_sent"], out["frames_dropped"] = p.frames_sent, p.bytes_sent, p.frames_dropped
            for counter in ("packets_sent", "send_dropped"):  # where the sender counts them
                value = getattr(p.sender, counter, None)
                if isinstance(value, int):
                    out[counter] = value
            out["fps_recent"], out["mbps_recent"] = self._recent_rates(p.frames_sent, p.bytes_sent)
        if self.audio is not None:
            out["audio"] = self.audio.info()
        if self.input is not None:
            out["input"] = self.input.counters()
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
