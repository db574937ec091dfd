"""The ``desktop`` audio source: what the desktop plays, from PulseAudio or PipeWire.

It records the monitor of the default output (``@DEFAULT_MONITOR@``) or a
configured source with ``parec`` (PulseAudio's recording client; PipeWire's
pulse server speaks the same protocol), as s16 at 48 kHz in the channel order
of :data:`punktfunk_core.media.audio.CHANNEL_ORDER`, with 5 ms fragments.

``read()`` reads the pipe itself, straight into a bounded ring
(:class:`PcmRing`), and waits on the pipe (``poll``) for a frame that is not
there yet, until it is due at the latest (``LATE_NS`` of jitter past one frame
after the newest data; a frame when none came): the sound server's own clock wakes
the audio runner once per frame (``self_paced``), and nothing else does. When
the sound server stalls or goes away, ``read()`` returns silence and counts it
(``gap_samples``); a supervisor thread, which only waits on ``parec``, starts
it again; the caller (and with it the video) is never blocked. The ring keeps
at most ``max_delay_ms`` of backlog: older samples are dropped
(``dropped_samples``), so a burst after a stall does not become latency.

``auto`` (:func:`make_auto`) picks this source when a sound server answers,
else the ``tone``, and says which in one log line. docs/audio.md says why
``parec`` and not an in-process binding.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import threading
import time
from typing import Any

import numpy as np

from punktfunk_core.media.audio import CHANNEL_ORDER, SAMPLE_RATE, ToneSource
from punktfunk_core.media.options import DESKTOP_RING_MS, AutoAudioOptions, DesktopAudioOptions
from punktfunk_core.stages import AudioSource, StreamSpec

log = logging.getLogger("punktfunk.media.desktop_audio")

#: how long ``available()`` / ``auto`` wait for a sound server to answer
PROBE_TIMEOUT_S = 2.0
#: the fragment the server is asked for: one 5 ms frame
FRAGMENT_MS = 5
#: seconds between attempts to start parec again after it exited (doubling up to the max)
RETRY_S, RETRY_MAX_S = 0.5, 5.0
#: how late a fragment may be (past one frame after the last) before its frame gets silence
LATE_NS = 2 * FRAGMENT_MS * 1_000_000
#: reads over which a backlog that never drained counts as standing latency (1 s of 5 ms frames)
TRIM_READS = 200


def _parec() -> str | None:
    return shutil.which("parec")


def server_answers(timeout: float = PROBE_TIMEOUT_S) -> str:
    """"" when a PulseAudio-protocol sound server answers ``pactl info`` within
    ``timeout``, else why not (bounded: a hung server is a reason, not a hang)."""
    pactl = shutil.which("pactl")
    if pactl is None or _parec() is None:
        return "parec/pactl are not installed (Debian/Ubuntu: apt-get install pulseaudio-utils)"
    try:
        done = subprocess.run([pactl, "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the sound server did not answer within {timeout:g} s"
    except OSError as exc:
        return f"pactl failed: {exc.strerror}"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return f"no sound server answers ({why[-1] if why else f'pactl exit {done.returncode}'})"
    return ""


def available() -> str:
    """The stage's availability probe: "" when parec is installed and a server answers."""
    return server_answers()


class PcmRing:
    """Interleaved int16 frames between the pipe and the frames a reader takes.

    The pipe is read into the ring in place (``writable()`` → ``wrote(n)``);
    frames are copied out (``take``) or skipped. Writing never waits: a reader
    that falls more than the ring behind skips ahead.
    """

    def __init__(self, frames: int, channels: int) -> None:
        self.channels = channels
        self.frame_bytes = 2 * channels
        self.capacity = frames
        self._buf = np.zeros((frames, channels), np.int16)
        self._bytes = self._buf.data.cast("B")
        #: bytes written in all; whole frames = written_bytes // frame_bytes
        self.written_bytes = 0
        #: frames taken or skipped
        self.read_frames = 0
        #: (frame count, monotonic ns) when the newest data arrived
        self.mark: tuple[int, int] = (0, 0)

    def writable(self) -> memoryview:
        """The free bytes up to the ring's end, for one ``readv``."""
        at = self.written_bytes % len(self._bytes)
        return self._bytes[at:]

    def wrote(self, nbytes: int, arrival_ns: int) -> None:
        total = self.written_bytes + nbytes
        self.mark = (total // self.frame_bytes, arrival_ns)
        self.written_bytes = total

    def realign(self) -> None:
        """Start the next write on a frame boundary (a parec that died mid-frame left a part)."""
        self.written_bytes = -(-self.written_bytes // self.frame_bytes) * self.frame_bytes

    def backlog(self) -> int:
        return self.written_bytes // self.frame_bytes - self.read_frames

    def skip(self, frames: int) -> None:
        self.read_frames += frames

    def take(self, frames: int, total: int) -> np.ndarray:
        """The next ``frames`` frames (``frames`` ≤ ``total``), copied once into a new
        ``(total, channels)`` array whose rest is silence."""
        at = self.read_frames % self.capacity
        self.read_frames += frames
        if frames == total and at + frames <= self.capacity:  # the common case: one slice of the ring
            return self._buf[at:at + frames].copy()
        out = np.zeros((total, self.channels), np.int16)
        first = min(frames, self.capacity - at)
        out[:first] = self._buf[at:at + first]
        if first < frames:
            out[first:frames] = self._buf[:frames - first]
        return out

    def capture_ns(self, frame_index: int) -> int:
        """When frame ``frame_index`` was captured: the newest arrival, less the frames after it."""
        end, arrival_ns = self.mark
        return arrival_ns - (end - frame_index) * 1_000_000_000 // SAMPLE_RATE


class DesktopAudioSource(AudioSource):
    """The desktop's sound. Options: :class:`punktfunk_core.media.options.DesktopAudioOptions`
    (``source``: the monitor of the default output unless named, ``channels``,
    ``max_delay_ms``: backlog kept before the oldest samples are dropped). Counters: ``gap_samples``
    (silence inserted), ``gaps`` (reads that inserted some), ``dropped_samples``
    (backlog trimmed), ``restarts`` (times parec was started again)."""

    sample_rate = SAMPLE_RATE
    #: read() waits for the sound server's next fragment (until it is due): the runner needs no clock
    self_paced = True

    def __init__(self, spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> None:
        opts = DesktopAudioOptions.take("desktop", options)
        parec = _parec()
        if parec is None:
            raise RuntimeError("desktop audio is not available: parec is not installed (Debian/Ubuntu: "
                               "apt-get install pulseaudio-utils)")
        self.source = opts.source
        self.channels = opts.channels
        self.max_delay = opts.max_delay_ms * SAMPLE_RATE // 1000
        self._ring = PcmRing(DESKTOP_RING_MS * SAMPLE_RATE // 1000, self.channels)
        self._cmd = [parec, "--raw", "--format=s16le", f"--rate={SAMPLE_RATE}", f"--channels={self.channels}",
                     f"--channel-map={','.join(CHANNEL_ORDER[self.channels])}", f"--latency-msec={FRAGMENT_MS}",
                     f"--device={self.source}", "--client-name=punktfunk", "--stream-name=desktop audio"]
        self.gap_samples = 0
        self.gaps = 0
        self._reads = 0  # reads since the standing backlog was last looked at
        self._least_left = DESKTOP_RING_MS * SAMPLE_RATE  # the least backlog any of them left behind
        self.dropped_samples = 0
        self.restarts = 0
        #: the last reason parec stopped ("" while it runs)
        self.last_error = ""
        #: bytes read from parec in all (the reader's; the supervisor looks whether a run delivered any)
        self.bytes_read = 0
        self._stop = threading.Event()
        #: the running parec, published by the supervisor (replaced whole; None before the first)
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()  # start/stop of the child only, never on the read path
        # the reader's side: the parec whose pipe it reads, that pipe, and a poll object on it
        self._reading: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._poll = select.poll()
        #: when the next frame's data is due at the latest (the reader's schedule; 0 = not yet)
        self._due_ns = 0
        self._thread = threading.Thread(target=self._supervise, name="desktop-audio", daemon=True)
        self._thread.start()

    # -- the supervisor thread: starts parec, waits for it to end, starts it again ----------

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._proc_lock:
            if self._stop.is_set():
                return None
            proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)  # the reader drains what is there and polls
            self._proc = proc
            return proc

    def _supervise(self) -> None:
        retry = RETRY_S
        while not self._stop.is_set():
            try:
                proc = self._spawn()
            except OSError as exc:
                proc, self.last_error = None, f"cannot start parec: {exc.strerror}"
            if proc is None:
                if self._stop.is_set():
                    return
            else:
                before = self.bytes_read
                code = proc.wait()  # the reader sees its pipe close; terminate() in close() ends this
                if self._stop.is_set():
                    return
                if self.bytes_read != before:
                    retry = RETRY_S  # it ran: the next failure starts the backoff again
                err = ""
                if proc.stderr:
                    err = proc.stderr.read(4096).decode(errors="replace").strip()
                    proc.stderr.close()
                self.last_error = f"parec exited ({code}): {err.splitlines()[-1] if err else 'no message'}"
            if self.restarts == 0 or retry == RETRY_S:
                log.warning("desktop audio: %s; sending silence, starting it again in %g s", self.last_error, retry)
            self.restarts += 1
            if self._stop.wait(retry):
                return
            retry = min(retry * 2, RETRY_MAX_S)

    # -- the reader ------------------------------------------------------------------------

    def _pipe(self) -> int:
        """The pipe to read: the published parec's, once the reader has let go of the last one."""
        proc = self._proc
        if proc is not self._reading and proc is not None and proc.stdout is not None:
            self._let_go()
            self._reading, self._fd = proc, proc.stdout.fileno()
            self._poll.register(self._fd, select.POLLIN)
            self._ring.realign()
        return self._fd

    def _let_go(self) -> None:
        """Close the pipe being read (parec ended, or the source is closing)."""
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            self._fd = -1
            if self._reading is not None and self._reading.stdout is not None:
                self._reading.stdout.close()

    def _drain(self) -> None:
        """Whatever the pipe holds now, into the ring (never waits)."""
        fd = self._fd if self._reading is self._proc else self._pipe()
        if fd < 0:
            return
        ring = self._ring
        while True:
            room = ring.writable()
            try:
                n = os.readv(fd, [room])
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n <= 0:  # parec ended: the supervisor starts the next one
                self._let_go()
                return
            ring.wrote(n, time.monotonic_ns())
            self.bytes_read += n
            if self.last_error:
                self.last_error = ""
            if n < len(room):
                return

    def read(self, samples: int) -> np.ndarray:
        if samples <= 0:
            raise ValueError("desktop: samples must be positive")
        ring = self._ring
        if self._reading is not self._proc:
            self._pipe()  # a new parec: read its pipe from now on
        backlog = ring.backlog()
        if backlog < samples:  # not all here yet: poll (at once when the pipe holds data) until due at the latest
            backlog = self._wait(samples, backlog)
        else:  # a backlog (rare): take what the pipe holds too, to keep the newest and count the excess
            self._drain()
            backlog = ring.backlog()
        if backlog >= samples:  # the next frame is due a frame after the newest data, give or take
            self._due_ns = ring.mark[1] + samples * 1_000_000_000 // SAMPLE_RATE + LATE_NS
        excess = backlog - max(self.max_delay, samples)
        if excess > 0:  # a burst (after a stall, or a reader that paused): keep the newest
            self._drop(excess)
            backlog -= excess
        self._reads += 1
        self._least_left = min(self._least_left, backlog - samples)
        if self._reads >= TRIM_READS:  # a second in which the backlog never ran dry: that much is delay
            if self._least_left > 0:
                self._drop(self._least_left)
                backlog -= self._least_left
            self._reads, self._least_left = 0, DESKTOP_RING_MS * SAMPLE_RATE
        have = min(backlog, samples)
        self.capture_ns = ring.capture_ns(ring.read_frames) if have else time.monotonic_ns()
        if have < samples:
            self.gap_samples += samples - have
            self.gaps += 1
        return ring.take(have, samples)

    def _wait(self, samples: int, backlog: int) -> int:
        """Wait on the pipe until ``samples`` are there or the frame is due at the latest: one
        frame after the newest data plus ``LATE_NS`` of jitter, or, with none, one frame after
        the last deadline, so a hung server costs each read a frame's duration and the runner
        keeps its pace (no pipe: sleep until then). Returns the backlog then."""
        now = time.monotonic_ns()
        frame_ns = samples * 1_000_000_000 // SAMPLE_RATE
        deadline = self._due_ns if self._due_ns > now else now + frame_ns
        while backlog < samples and now < deadline:
            if self._fd < 0:
                time.sleep((deadline - now) / 1e9)
                self._drain()  # picks up a parec started meanwhile
            elif self._poll.poll((deadline - now) / 1e6):  # data, or the pipe closed
                self._drain()
            backlog = self._ring.backlog()
            now = time.monotonic_ns()
        if backlog < samples:
            self._due_ns = deadline + frame_ns
        return backlog

    def _drop(self, frames: int) -> None:
        self._ring.skip(frames)
        self.dropped_samples += frames

    def stats(self) -> dict[str, Any]:
        return {"gap_samples": self.gap_samples, "gaps": self.gaps, "dropped_samples": self.dropped_samples,
                "restarts": self.restarts, "last_error": self.last_error}

    def close(self) -> None:
        self._stop.set()
        with self._proc_lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        self._thread.join(3)
        if proc is not None and proc.poll() is None:  # did not go on SIGTERM
            proc.kill()
            self._thread.join(2)
        self._let_go()
        if proc is not None and proc is not self._reading and proc.stdout is not None:
            proc.stdout.close()  # started, never read


def make_auto(spec: StreamSpec | None = None, options: dict[str, Any] | None = None) -> AudioSource:
    """The ``auto`` audio source: ``desktop`` when a sound server answers, else ``tone``.
    Options: :class:`punktfunk_core.media.options.AutoAudioOptions` (``channels``, ``source``
    for ``desktop``)."""
    opts = AutoAudioOptions.take("auto", options)
    reason = server_answers()
    if reason:
        log.info("audio source auto: tone (%s)", reason)
        return ToneSource(spec, {"channels": opts.channels})
    log.info("audio source auto: desktop (%s)", opts.source)
    return DesktopAudioSource(spec, {"channels": opts.channels, "source": opts.source})
