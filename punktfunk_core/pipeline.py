"""The pipeline runners: a session's video and, when it has one, its audio.

Video: capture → encode on one thread, packetize → send on another.

Per frame there is no pluggy call and no lock of ours: the encode thread hands
access units to the send thread through a ``SimpleQueue`` whose bound is
enforced with two single-writer counters. A sender that never waits
(``Sender.waits`` false: no pacing, non-blocking writes) gets no thread of
its own: the encode thread packetizes and sends each unit itself, which saves
the hand-off (a wake-up, a GIL exchange and a second core busy per frame).

Measurement is one attribute read (``gate.measuring``) per frame; when it is
false no timestamp is taken. While measuring, each step is timed with
``perf_counter_ns`` and the sending thread aggregates windows
(:mod:`punktfunk_core.window`); at the end of each window it calls the
``stats_window`` hook once. When the session ends, the window still open is
closed and emitted too (after the client's last report is in, see
:class:`punktfunk_core.session.ClientFeedback`), so a capture's totals are the
session's totals.

A stage that raises ends the session: the error is logged, the threads stop,
every stage is closed exactly once and ``session_ended`` is called.

Audio (:class:`AudioPipeline`): audio source → audio encoder → packetizer →
sender on one thread of its own, paced by the audio frame clock. It is
attached to a running session (:meth:`punktfunk_core.host.Host.start_audio`)
and ends with it; a failing audio stage ends the audio only. While
measuring, each audio frame's time (read to sent) and wire bytes go into a
bounded deque (appends and pops are atomic: no lock of ours), which the video
side drains into its window: the sample's ``audio_*`` fields, absent when the
session has no audio.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from punktfunk_core.gate import MeasurementGate
from punktfunk_core.session import Session
from punktfunk_core.stages import (
    AccessUnit,
    AudioEncoder,
    AudioSource,
    CaptureSource,
    Encoder,
    Packetizer,
    Sender,
    Stage,
)
from punktfunk_core.stats import StatsSample, percentile
from punktfunk_core.window import StageLayout, WindowAggregator

log = logging.getLogger("punktfunk.pipeline")

perf_counter_ns = time.perf_counter_ns
_STOP = object()
#: how long a session's last window waits for the client's last report
LAST_REPORT_WAIT_S = 2.0
#: how long the end of a session waits for its audio thread to close the audio stages
AUDIO_STOP_WAIT_S = 1.0
#: an audio loop this far behind its clock starts afresh; less is caught up (no gap for the client)
AUDIO_MAX_LAG_NS = 200_000_000


class FrameClock:
    """The pace of a runner loop: :meth:`wait` returns once per ``interval_ns``
    on the monotonic clock. A loop more than ``max_lag_ns`` behind starts
    afresh from now instead of running back to back to catch up."""

    __slots__ = ("interval_ns", "max_lag_ns", "next_due")

    def __init__(self, interval_ns: int, max_lag_ns: int) -> None:
        self.interval_ns = interval_ns
        self.max_lag_ns = max_lag_ns
        self.next_due = time.monotonic_ns()

    def wait(self) -> None:
        now = time.monotonic_ns()
        if now < self.next_due:
            time.sleep((self.next_due - now) / 1e9)
            self.next_due += self.interval_ns
        elif now - self.next_due > self.max_lag_ns:
            self.next_due = now + self.interval_ns  # fell behind: don't burst to catch up
        else:
            self.next_due += self.interval_ns


class Pipeline:
    """Runs one session's stages.

    ``emit_window(session, sample)`` is called once per closed window (the host
    passes the ``stats_window`` hook caller); ``on_end(session, error)`` once
    when the pipeline has stopped and closed its stages.
    """

    def __init__(
        self,
        session: Session,
        capture: CaptureSource,
        encoder: Encoder,
        packetizer: Packetizer,
        sender: Sender,
        layout: StageLayout,
        gate: MeasurementGate,
        *,
        emit_window: Callable[[Session, StatsSample], Any] | None = None,
        on_end: Callable[[Session, BaseException | None], Any] | None = None,
        paced: bool = True,
        max_frames: int = 0,
        queue_depth: int = 4,
    ) -> None:
        self.session = session
        self.capture = capture
        self.encoder = encoder
        self.packetizer = packetizer
        self.sender = sender
        self.layout = layout
        self.gate = gate
        self.emit_window = emit_window
        self.on_end = on_end
        self.paced = paced
        self.max_frames = max_frames
        self.queue_depth = max(1, queue_depth)
        self.running = False
        self.stop_reason = ""
        self.frames_captured = 0
        self.frames_sent = 0
        #: wire bytes handed to the sender (written by the send thread only)
        self.bytes_sent = 0
        #: written by the encode thread only
        self.frames_dropped = 0
        self._queued = 0  # written by the encode thread only
        self._dequeued = 0  # written by the send thread only
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._end_lock = threading.Lock()
        self._finished = 0
        #: packetize + send on the encode thread (the sender never waits)
        self.inline_send = not getattr(sender, "waits", True)
        # send-side state: touched only by whichever thread sends
        self._agg = WindowAggregator(layout)
        session.pipeline = self
        session.encoder_backend = encoder.backend or encoder.name
        session.gpu = encoder.gpu

    # -- control (any thread) -----------------------------------------------
    @property
    def bitrate_kbps(self) -> int:
        try:
            return int(self.encoder.bitrate_kbps)
        except Exception:  # noqa: BLE001 - informational only
            return self.session.spec.bitrate_kbps

    def request_keyframe(self) -> None:
        self.encoder.request_keyframe()

    def set_bitrate(self, kbps: int) -> None:
        self.encoder.set_bitrate(int(kbps))

    def start(self) -> None:
        self.running = True
        self.session.state = "running"
        self.session.started_ns = time.monotonic_ns()  # streaming starts now (the stages are built)
        name = f"{self.session.kind}-{self.session.id}"
        self._threads = [threading.Thread(target=self._encode_loop, name=f"{name}-encode", daemon=True)]
        if not self.inline_send:
            self._threads.append(threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, reason: str = "") -> None:
        if self.running:
            self.stop_reason = reason or self.stop_reason
            self.running = False

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def run(self) -> None:
        """Start and block until the pipeline ends (benchmarks, tests)."""
        self.start()
        self.join()

    # -- threads ---------------------------------------------------------------
    def _fail(self, where: str, exc: BaseException) -> None:
        if self.session.error is None:
            self.session.error = exc
            log.error("session %s (%s): %s stage failed, ending the session: %s: %s",
                      self.session.id, self.session.kind, where, type(exc).__name__, exc,
                      exc_info=exc)
        self.running = False

    def _encode_loop(self) -> None:
        capture, encoder, gate = self.capture, self.encoder, self.gate
        inline = self.inline_send
        put = self._q.put
        deliver = self._deliver
        interval = self.session.spec.frame_interval_ns
        tick = FrameClock(interval, interval).wait if self.paced else None
        max_frames = self.max_frames
        depth = self.queue_depth
        frame_id = 0
        try:
            while self.running:
                if tick is not None:
                    tick()
                frame_id += 1
                if gate.measuring:
                    t0 = perf_counter_ns()
                    frame = capture.grab(frame_id)
                    t1 = perf_counter_ns()
                    encoder.submit(frame)
                    t2 = perf_counter_ns()
                    aus = encoder.receive()
                    t3 = perf_counter_ns()
                    timing: tuple[int, int, int, int] | None = (t0, t1, t2, t3)
                else:
                    frame = capture.grab(frame_id)
                    encoder.submit(frame)
                    aus = encoder.receive()
                    timing = None
                self.frames_captured = frame_id
                if inline:
                    try:
                        for au in aus:
                            deliver(au, frame.is_repeat, timing)
                            timing = None  # a frame's timing goes with its first unit
                    except BaseException as exc:  # noqa: BLE001
                        self._fail("packetize/send", exc)
                        break
                else:
                    for au in aus:
                        if self._queued - self._dequeued >= depth:
                            # the sender is behind: drop this unit, resync with a keyframe
                            self.frames_dropped += 1
                            encoder.request_keyframe()
                            continue
                        self._queued += 1
                        put((au, frame.is_repeat, timing))
                        timing = None
                if max_frames and frame_id >= max_frames:
                    break
        except BaseException as exc:  # noqa: BLE001 - a failing stage ends the session only
            self._fail("capture/encode", exc)
        finally:
            self.running = False
            if not inline:
                put(_STOP)
            self._thread_done()

    def _send_loop(self) -> None:
        get, deliver = self._q.get, self._deliver
        try:
            while True:
                item = get()
                if item is _STOP:
                    break
                self._dequeued += 1
                deliver(*item)
        except BaseException as exc:  # noqa: BLE001
            self._fail("packetize/send", exc)
        finally:
            self.running = False
            self._thread_done()

    def _deliver(self, au: Any, is_repeat: bool, timing: tuple[int, int, int, int] | None) -> None:
        """Packetize and send one access unit; with ``timing`` (measuring) also
        time both steps and add the frame to the window. Runs on the send
        thread, or on the encode thread when ``inline_send``."""
        agg = self._agg
        if timing is None:
            batch = self.packetizer.packetize(au)
            self.sender.send(batch)
            self.frames_sent += 1
            self.bytes_sent += batch.wire_bytes
            if agg.open and not self.gate.measuring:
                agg.discard()
            return
        t0, t1, t2, t3 = timing
        if not agg.open:  # before this unit is sent: what its send drops belongs to the new window
            self._window_opens()
            agg.begin(t0, self.frames_dropped, self.sender.send_dropped)
        tq = perf_counter_ns()
        batch = self.packetizer.packetize(au)
        tp = perf_counter_ns()
        self.sender.send(batch)
        ts = perf_counter_ns()
        self.frames_sent += 1
        self.bytes_sent += batch.wire_bytes
        # the runner steps (window.STEP_NAMES): capture, submit, receive, queue, packetize, send
        agg.add((t1 - t0, t2 - t1, t3 - t2, tq - t3, tp - tq, ts - tp), ts - t0, is_repeat,
                batch.wire_bytes, batch.extra_ns)
        if agg.due(ts):
            self._close_window(agg.close(ts, self.bitrate_kbps, self.frames_dropped, self.sender.send_dropped,
                                         self.session.feedback))

    def _window_opens(self) -> None:
        """What happened before measuring belongs to no window: client reports, audio frames, input."""
        self.session.feedback.forget()
        audio = self.session.audio
        if audio is not None:
            audio.forget()
        sink = self.session.input
        if sink is not None:
            sink.take_window()

    def _close_window(self, sample: StatsSample) -> None:
        audio = self.session.audio
        if audio is not None:
            audio.drain_into(sample)
        sink = self.session.input
        window = sink.take_window() if sink is not None else None  # once per window, not per frame
        if window is not None:  # None: no input arrived, and the sample has no input fields
            window.drain_into(sample)
        self.session.last_sample = sample
        if self.emit_window is not None:
            try:
                self.emit_window(self.session, sample)
            except Exception:  # noqa: BLE001 - stats consumers never stop a stream
                log.exception("stats_window consumer failed (session %s continues)", self.session.id)

    def _thread_done(self) -> None:
        with self._end_lock:
            self._finished += 1
            last = self._finished == len(self._threads)
        if last:
            self._finish()

    def _finish(self) -> None:
        self.session.stopped_ns = time.monotonic_ns()
        audio = self.session.close_audio()
        if audio is not None:  # its frames so far go into the last window; it closes its own stages
            audio.stop("the session ended")
            if not audio.join(AUDIO_STOP_WAIT_S):
                log.warning("session %s: the audio thread did not stop within %.0f s", self.session.id,
                            AUDIO_STOP_WAIT_S)
        agg = self._agg
        # the counters of the session's last window, read before the stages close
        last = ((perf_counter_ns(), self.bitrate_kbps, self.frames_dropped, self.sender.send_dropped)
                if agg.open and self.gate.measuring else None)
        for stage in (self.capture, self.encoder, self.packetizer, self.sender):
            close_quietly(stage)
        self.session.state = "stopping"
        if last is not None:
            feedback = self.session.feedback
            if not feedback.wait_last_report(LAST_REPORT_WAIT_S):
                log.info("session %s: the client's last report did not come within %.0f s",
                         self.session.id, LAST_REPORT_WAIT_S)
            self._close_window(agg.close(*last, feedback, last=True))
        sink = self.session.close_input()
        if sink is not None:  # after the last window took its input; injects what is queued, lets go of held keys
            sink.close()
        self.session.state = "ended"
        if self.on_end is not None:
            try:
                self.on_end(self.session, self.session.error)
            except Exception:  # noqa: BLE001
                log.exception("session_ended handler failed")
        self.session._ended.set()


class AudioPipeline:
    """Runs one session's audio: source → encoder → packetizer → sender, one thread.

    Each encoder call takes ``encoder.frame_samples`` samples: the loop runs
    once per audio frame, woken by the source when it is ``self_paced`` (its
    ``read`` waits for the device, about a frame at most), else on a :class:`FrameClock`
    (a loop less than 200 ms behind catches up, so the client hears no gap). Each packet the encoder
    returns goes to the packetizer as an :class:`AccessUnit` (``codec`` the
    encoder's; ``capture_ns`` the source's, or the read time when the source
    cannot tell). The sender should not wait (the loop's pace is the audio
    clock). ``on_end(session, error)`` is called once, on the audio thread,
    after the stages are closed; a failing stage ends the audio, never the
    session's video.
    """

    def __init__(self, session: Session, source: AudioSource, encoder: AudioEncoder, packetizer: Packetizer,
                 sender: Sender, gate: MeasurementGate, *,
                 on_end: Callable[[Session, BaseException | None], Any] | None = None) -> None:
        self.session = session
        self.source = source
        self.encoder = encoder
        self.packetizer = packetizer
        self.sender = sender
        self.gate = gate
        self.on_end = on_end
        self.samples = int(encoder.frame_samples)
        if self.samples <= 0:
            raise ValueError(f"audio encoder {encoder.name!r} takes no samples per frame")
        self.interval_ns = self.samples * 1_000_000_000 // int(source.sample_rate)
        self.codec = encoder.codec
        self.running = False
        self.state = "starting"
        self.stop_reason = ""
        self.error: BaseException | None = None
        #: written by the audio thread only: encoder calls, encoded packets, wire bytes
        self.frames_sent = 0
        self.units_sent = 0
        self.bytes_sent = 0
        #: (ns from read to sent, wire bytes) per frame while measuring, drained per window
        self._measured: collections.deque[tuple[int, int]] = collections.deque(maxlen=8192)
        self._send_dropped_base = 0
        self._thread = threading.Thread(target=self._run, name=f"{session.kind}-{session.id}-audio", daemon=True)

    def start(self) -> None:
        self.running = True
        self.state = "running"
        self._thread.start()

    def stop(self, reason: str = "") -> None:
        if self.running:
            self.stop_reason = reason or self.stop_reason
            self.running = False

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "codec": self.codec, "frames_sent": self.frames_sent,
                               "bytes_sent": self.bytes_sent}
        for counter in ("packets_sent", "send_dropped"):  # datagrams, where the sender counts them
            value = getattr(self.sender, counter, None)
            if isinstance(value, int):
                out[counter] = value
        if self.error is not None:
            out["error"] = f"{type(self.error).__name__}: {self.error}"
        return out

    # -- the window (called on the video side's sending thread) ------------------------
    def forget(self) -> None:
        """Frames from before the window opened belong to none."""
        self._measured.clear()
        self._send_dropped_base = self.sender.send_dropped or 0

    def drain_into(self, sample: StatsSample) -> None:
        """The audio frames sent since the last drain, as the sample's ``audio_*`` fields."""
        measured = self._measured
        times: list[int] = []
        wire = 0
        for _ in range(len(measured)):  # popleft is atomic; the audio thread may append meanwhile
            took, nbytes = measured.popleft()
            times.append(took)
            wire += nbytes
        seconds = max(sample.window_s, 1e-9)
        sample.audio_fps = round(len(times) / seconds, 2)
        sample.audio_kbps = round(wire * 8 / seconds / 1e3, 1)
        dropped = self.sender.send_dropped
        if isinstance(dropped, int):
            sample.audio_send_dropped = dropped - self._send_dropped_base
            self._send_dropped_base = dropped
        if times:
            times.sort()
            sample.audio_p50_us = round(percentile(times, 0.5) / 1e3, 1)
            sample.audio_p99_us = round(percentile(times, 0.99) / 1e3, 1)

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        gate, measured = self.gate, self._measured
        # a source that waits for its device is the clock; any other gets one of the runner's
        clock = None if self.source.self_paced else FrameClock(self.interval_ns, AUDIO_MAX_LAG_NS)
        # the per-frame work, bound once: 200 frames a second, each run with cold caches
        source, samples, codec = self.source, self.samples, self.codec
        read, encode = source.read, self.encoder.encode
        packetize, send = self.packetizer.packetize, self.sender.send
        try:
            while self.running:
                if clock is not None:
                    clock.wait()
                t0 = perf_counter_ns() if gate.measuring else 0
                # read, encode, packetize and send one audio frame
                pcm = read(samples)
                captured = source.capture_ns or time.monotonic_ns()  # a source that cannot tell: read time
                wire = 0
                for packet in encode(pcm):
                    self.units_sent += 1
                    batch = packetize(AccessUnit(packet, True, self.units_sent, captured, codec))
                    send(batch)
                    wire += batch.wire_bytes
                self.frames_sent += 1
                self.bytes_sent += wire
                if t0:
                    measured.append((perf_counter_ns() - t0, wire))
        except BaseException as exc:  # noqa: BLE001 - a failing audio stage ends the audio only
            self.error = exc
            log.error("session %s (%s): audio stopped, the video goes on: %s: %s", self.session.id,
                      self.session.kind, type(exc).__name__, exc, exc_info=exc)
        finally:
            self.running = False
            for stage in (self.source, self.encoder, self.packetizer, self.sender):
                close_quietly(stage)
            self.state = "failed" if self.error is not None else "ended"
            if self.on_end is not None:
                try:
                    self.on_end(self.session, self.error)
                except Exception:  # noqa: BLE001
                    log.exception("audio end handler failed")


def close_quietly(stage: Stage | None) -> None:
    if stage is None:
        return
    try:
        stage.close()
    except Exception:  # noqa: BLE001 - closing must not mask the real outcome
        log.exception("closing %s stage %r failed", type(stage).__name__, getattr(stage, "name", "?"))
