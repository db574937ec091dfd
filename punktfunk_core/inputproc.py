"""A session's input in a process of its own: the injector process.

Input handled in the host process holds the GIL that capture and encode wait
for: reading the client's messages, decoding them, the sink, the backend's
X or uinput writes — at 1000 events/s several percent of every frame
(docs/input.md, "Latency and cost"). The injector process takes all of it:

- it runs the session's :class:`~punktfunk_core.inputsink.InputSink` with its
  own backend (its own X connection, its own uinput devices; it inherits the
  host's environment, so ``DISPLAY``/``XAUTHORITY`` and the user's groups);
- it reads the protocol's input socket itself when the protocol hands one
  over (an :class:`InputChannel`: the socket's fd and a factory named by
  import path, so the core names no plugin), decrypts, checks and decodes the
  datagrams there and answers them (acks) there;
- it tells the host what happened a few times a second while input flows
  (counters, receive → injected latencies for the stats windows, the
  protocol's counters) and sends the backend's feedback (rumble …) as it
  comes; the session's pointer (the test pattern draws it) is in a shared
  16-byte memory the capture reads per frame without a system call.

The host side, :class:`InputProcess`, has the surface of an ``InputSink``
(``submit_many`` for input that still arrives on a protocol thread,
``take_window``, ``counters``, ``pointer``, ``set_enabled``, ``close``), so a
session treats both alike. Host and child speak length-prefixed pickles over
a Unix socket pair (the first frame hands over the channel's socket and the
shared pointer with ``SCM_RIGHTS``): the child is this package, started by the
host. Starting Python and loading the plugins takes a second or more, so the
host starts one child ahead (:func:`prepare_spare`: when a client that may
ask for a session comes and none waits, and when a session's process closed),
which the next session takes and gives its settings. A child ends when its socket closes (the host
went away).
"""

from __future__ import annotations

import importlib
import logging
import math
import mmap
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from punktfunk_core.inputevents import FeedbackEvent, InputClass, InputEvent, ScreenPointer
from punktfunk_core.inputsink import InputWindow
from punktfunk_core.stages import ScreenArea, StreamSpec

log = logging.getLogger("punktfunk.input")

#: how often the child reports while input flows (the stats window is 2 s)
REPORT_INTERVAL_S = 0.1
#: how long close() waits for the child's last report and exit before it kills it
CLOSE_WAIT_S = 3.0
#: bytes of frames for the child that may wait in the host before new ones are dropped
MAX_PENDING_TO_CHILD = 1 << 20
_FRAME = struct.Struct("!I")
#: the shared pointer: x, y as doubles (NaN: no pointing event yet)
_POINTER = struct.Struct("dd")


@dataclass(frozen=True)
class InputChannel:
    """A protocol's input socket for the injector process: ``fd`` is handed to the child,
    which calls ``factory`` (``"module:callable"``) with the socket and ``args``. The
    callable returns an object with ``fileno()``, ``receive()`` (every datagram waiting:
    ``[(events, received_ns), …]``, answering the client as the protocol does) and
    ``take_counts()`` (the protocol's counters since the last call)."""

    factory: str
    fd: int
    args: dict[str, Any] = field(default_factory=dict)


class ChannelReader(Protocol):
    def fileno(self) -> int: ...
    def receive(self) -> list[tuple[list[InputEvent], int]]: ...
    def take_counts(self) -> dict[str, int]: ...


class SharedPointer(ScreenPointer):
    """The session's pointer as the injector process moves it: read from shared memory."""

    __slots__ = ("_mem",)

    def __init__(self, mem: mmap.mmap, width: int, height: int) -> None:
        self._mem = mem
        super().__init__(width, height)

    @property  # type: ignore[override]
    def position(self) -> tuple[float, float] | None:  # one 16-byte read per frame, no lock
        x, y = _POINTER.unpack_from(self._mem, 0)
        return None if math.isnan(x) else (x, y)

    @position.setter
    def position(self, value: tuple[float, float] | None) -> None:
        _POINTER.pack_into(self._mem, 0, *(value if value is not None else (math.nan, math.nan)))


def _frame(obj: Any) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(body)) + body


class _FrameReader:
    """Frames from a stream socket as they complete; None once it ended."""

    def __init__(self, sock: socket.socket, buf: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(buf)

    def frames(self) -> list[Any]:
        out: list[Any] = []
        while len(self.buf) >= _FRAME.size:
            (n,) = _FRAME.unpack_from(self.buf, 0)
            if len(self.buf) < _FRAME.size + n:
                break
            out.append(pickle.loads(bytes(self.buf[_FRAME.size:_FRAME.size + n])))  # noqa: S301 - our own peer
            del self.buf[:_FRAME.size + n]
        return out

    def read(self) -> list[Any]:
        """What one read completes (it waits for data when the socket blocks)."""
        try:
            chunk = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            chunk = b""
        if not chunk:
            return [*self.frames(), None]
        self.buf += chunk
        return self.frames()


class _Spawned:
    """A started injector process that waits for its session (its imports and plugins loaded)."""

    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.inputproc", str(child.fileno())],
                                         stdin=subprocess.DEVNULL, pass_fds=(child.fileno(),), close_fds=True)
        finally:
            child.close()
        self.sock = parent


_spare_lock = threading.Lock()
_spare: _Spawned | None = None


def prepare_spare() -> None:
    """Start an injector process ahead of the next session, unless one waits already."""
    global _spare
    with _spare_lock:
        if _spare is None or _spare.proc.poll() is not None:
            _spare = _Spawned()


def discard_spare() -> None:
    """End the process started ahead (the host stops)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        spare.sock.close()  # it reads the end and exits
        try:
            spare.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            spare.proc.kill()


def _take_spawned() -> _Spawned:
    """The process started ahead when there is one, else a new one. (The next one starts when
    this session's closes: one started here would load its plugins while this session's
    stream starts, on the same cores.)"""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is None or spare.proc.poll() is not None:
        spare = _Spawned()
    return spare


class InputProcess:
    """The host side of a session's injector process, with an ``InputSink``'s surface.

    ``on_counts`` takes the protocol's counters the child's channel reports
    (``{"input_datagrams": 3, …}``; called on the reader thread); ``feedback``
    the backend's feedback events (must not block)."""

    def __init__(self, input_section: dict[str, Any], spec: StreamSpec, screen: ScreenArea | None, *,
                 name: str = "input", channel: InputChannel | None = None,
                 feedback: Callable[[FeedbackEvent], None] | None = None,
                 on_counts: Callable[[dict[str, int]], None] | None = None,
                 allowed: bool = True) -> None:
        self.name = name
        self._feedback = feedback
        self._on_counts = on_counts
        self._lock = threading.Lock()  # the window and the counters: per report and per window, never per frame
        self._window = InputWindow(0.0)
        self._window_start = time.monotonic()
        self._counters: dict[str, Any] = {"backend": None, "gone": None}
        self._closing = False
        self._allowed = allowed
        self.gone: str | None = None
        self.backend_name: str | None = None
        self._ready = threading.Event()
        memfd = os.memfd_create("punktfunk-pointer")
        try:
            os.ftruncate(memfd, _POINTER.size)
            self._mem = mmap.mmap(memfd, _POINTER.size)
            self.pointer = SharedPointer(self._mem, spec.width, spec.height)
            self.pointer.position = None
            spawned = _take_spawned()
            self._proc, self._sock = spawned.proc, spawned.sock
            self._pending = bytearray()
            self._write_lock = threading.Lock()  # protocol threads and the session's thread may both write
            start = _frame({"input": dict(input_section), "spec": spec, "screen": screen, "name": name,
                            "channel": channel, "allowed": allowed,
                            "log_level": logging.getLogger().getEffectiveLevel()})
            fds = [memfd] + ([channel.fd] if channel is not None else [])
            socket.send_fds(self._sock, [start], fds)
        finally:
            os.close(memfd)  # the child has its own; the mapping stays
        self._reader = threading.Thread(target=self._read_child, name=f"{name}-process", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def backend(self) -> Any:
        """What ``Host.start_input`` logs: an object with the backend's ``name``, or None."""
        return _Named(self.backend_name) if self.backend_name else None

    # ---- host → child ---------------------------------------------------------------------------

    def _send(self, obj: Any) -> bool:
        """Queue one frame for the child and write what the pipe takes; False when too much waits."""
        with self._write_lock:
            if len(self._pending) > MAX_PENDING_TO_CHILD:
                return False
            self._pending += _frame(obj)
            try:
                while self._pending:
                    n = self._sock.send(self._pending, socket.MSG_DONTWAIT)  # a full buffer never stalls
                    del self._pending[:n]
            except (BlockingIOError, InterruptedError):
                pass  # the rest goes with the next frame or at close
            except OSError:  # the child is gone: its reader says so
                self._pending.clear()
                return False
            return True

    def submit_many(self, events: Iterable[InputEvent], received_ns: int | None = None) -> int:
        """Hand events a protocol thread received to the child (the sink there counts them)."""
        batch = list(events)
        if not batch or self._closing:
            return 0
        ok = self._send(("events", batch, received_ns if received_ns is not None else time.perf_counter_ns()))
        return len(batch) if ok else 0

    def submit(self, event: InputEvent, received_ns: int | None = None) -> bool:
        return self.submit_many((event,), received_ns) == 1

    def set_enabled(self, enabled: Iterable[InputClass]) -> None:
        self._send(("classes", list(enabled)))

    def set_allowed(self, allowed: bool) -> None:
        """Whether the client may control the host now (view-only: False); sent on a change only."""
        if allowed != self._allowed:
            self._allowed = allowed
            self._send(("allowed", allowed))

    # ---- child → host ---------------------------------------------------------------------------

    def _read_child(self) -> None:
        reader = _FrameReader(self._sock)
        ended = False
        while not ended:
            try:
                msgs = reader.read()
            except (pickle.UnpicklingError, EOFError, ValueError) as exc:
                log.warning("%s: reading the input process failed: %s", self.name, exc)
                msgs = [None]
            for msg in msgs:
                if msg is None:
                    ended = True
                    break
                kind = msg[0]
                if kind == "report":
                    self._take_report(msg[1])
                elif kind == "feedback" and self._feedback is not None:
                    try:
                        self._feedback(msg[1])
                    except Exception:  # noqa: BLE001 - feedback is best effort
                        log.debug("%s: feedback consumer failed", self.name, exc_info=True)
                elif kind == "ready":
                    self.backend_name, self.gone = msg[1], msg[2]
                    self._ready.set()
        self._ready.set()
        code = self._proc.wait()
        if not self._closing and self.gone is None:
            self.gone = f"the input process ended (exit status {code})"
            log.warning("%s: %s; the stream goes on without input", self.name, self.gone)

    def _take_report(self, report: dict[str, Any]) -> None:
        counts = report.get("counts")
        if counts and self._on_counts is not None:
            self._on_counts(counts)
        with self._lock:
            w = self._window
            w.received += report["received"]
            w.injected += report["injected"]
            w.merged += report["merged"]
            for reason, n in report["dropped"].items():
                w.dropped[reason] = w.dropped.get(reason, 0) + n
            w.latency_us.extend(report["latency_us"])
            self._counters = report["counters"]
        self.gone = report["counters"].get("gone")

    def wait_ready(self, timeout: float) -> bool:
        """Whether the child opened its backend (or gave up on it) within ``timeout``."""
        return self._ready.wait(timeout)

    # ---- the session's side -------------------------------------------------------------------

    def take_window(self) -> InputWindow | None:
        """What the child reported since the last call (up to REPORT_INTERVAL_S behind), or None."""
        now = time.monotonic()
        with self._lock:
            window, self._window = self._window, InputWindow(0.0)
            window.seconds = now - self._window_start
            self._window_start = now
        return window if window.received else None

    def counters(self) -> dict[str, Any]:
        """The sink's totals as the child last reported them, and that it runs in a process."""
        with self._lock:
            out = dict(self._counters)
        out["process"] = self._proc.pid
        out["gone"] = self.gone
        return out

    def close(self) -> None:
        """Let the child inject what it has, release held keys, close its backend, report
        once more and exit; killed when it takes longer than CLOSE_WAIT_S."""
        if self._closing:
            return
        self._closing = True
        self._send(("close",))
        deadline = time.monotonic() + CLOSE_WAIT_S
        with self._write_lock:  # what is still waiting for the socket, then its end
            try:
                self._sock.settimeout(CLOSE_WAIT_S)
                if self._pending:
                    self._sock.sendall(self._pending)
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._pending.clear()
        self._reader.join(max(0.0, deadline - time.monotonic()))
        if self._proc.poll() is None:
            log.warning("%s: the input process did not finish within %.0f s; killing it", self.name, CLOSE_WAIT_S)
            self._proc.kill()
            self._proc.wait(1.0)
        self._reader.join(1.0)
        self._sock.close()
        prepare_spare()  # the next session's, loaded now that this stream is over


class _Named:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


# ---- the child ----------------------------------------------------------------------------------


def _load_channel(channel: InputChannel, fd: int) -> ChannelReader:
    module, _, attr = channel.factory.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return factory(sock, **channel.args)  # type: ignore[no-any-return]


class _Child:
    """The injector process: the session's sink, the protocol's channel, reports to the host."""

    def __init__(self, sock: socket.socket, reader: _FrameReader, start: dict[str, Any], fds: list[int],
                 pm: Any) -> None:
        from punktfunk_core.config import InputSettings
        from punktfunk_core.inputsink import open_input_sink

        self.sock = sock
        self.reader = reader
        self._out_lock = threading.Lock()  # the main loop reports, the backend's thread sends feedback
        self.name: str = start["name"]
        self.allowed: bool = start["allowed"]
        self._mem = mmap.mmap(fds[0], _POINTER.size)
        os.close(fds[0])
        channel: InputChannel | None = start["channel"]
        self.channel = _load_channel(channel, fds[1]) if channel is not None else None
        settings = InputSettings.of(start["input"])
        spec: StreamSpec = start["spec"]
        self.sink = open_input_sink(pm.stages, settings, spec, start["screen"], self._feedback, name=self.name)
        self._written: tuple[float, float] | None = None
        #: the channel's counts the child adds (datagrams of a view-only client)
        self._extra_counts: dict[str, int] = {}
        self._send(("ready", self.sink.backend.name if self.sink.backend is not None else None, self.sink.gone))

    def _send(self, obj: Any) -> None:
        data = _frame(obj)
        with self._out_lock:
            try:
                self.sock.sendall(data)
            except OSError:  # the host is gone; the socket's end says so
                pass

    def _feedback(self, event: FeedbackEvent) -> None:
        self._send(("feedback", event))

    def run(self) -> None:
        watch: list[Any] = [self.sock] + ([self.channel] if self.channel is not None else [])
        next_report = 0.0
        dirty = False
        running = True
        pending = self.reader.frames()  # what came with the start frame
        while running:
            readable, _, _ = select.select(watch, [], [], REPORT_INTERVAL_S)
            if self.channel is not None and self.channel in readable:
                for events, received_ns in self.channel.receive():
                    if not self.allowed:
                        self.channel_count("input_view_only")
                    elif events:
                        self.sink.submit_many(events, received_ns)
                dirty = True
            if self.sock in readable or pending:
                msgs, pending = pending + (self.reader.read() if self.sock in readable else []), []
                for msg in msgs:
                    if msg is None:  # the host closed its end: it is gone, or it is closing us
                        running = False
                        break
                    running = self._command(msg)
                    dirty = True
                    if not running:
                        break
            position = self.sink.pointer.position
            if position != self._written:
                self._written = position
                _POINTER.pack_into(self._mem, 0, *(position if position is not None else (math.nan, math.nan)))
            now = time.monotonic()
            if dirty and now >= next_report:
                self._report()
                dirty = False
                next_report = now + REPORT_INTERVAL_S
        self.sink.close()
        self._report()

    def channel_count(self, name: str) -> None:
        self._extra_counts[name] = self._extra_counts.get(name, 0) + 1

    def _command(self, msg: Any) -> bool:
        kind = msg[0]
        if kind == "events":
            if self.allowed:
                self.sink.submit_many(msg[1], msg[2])
        elif kind == "classes":
            self.sink.set_enabled(msg[1])
        elif kind == "allowed":
            self.allowed = bool(msg[1])
        elif kind == "close":
            return False
        return True

    def _report(self) -> None:
        window = self.sink.take_window()
        counts = self.channel.take_counts() if self.channel is not None else {}
        if self._extra_counts:
            for k, n in self._extra_counts.items():
                counts[k] = counts.get(k, 0) + n
            self._extra_counts = {}
        report = {
            "received": window.received if window else 0, "injected": window.injected if window else 0,
            "merged": window.merged if window else 0, "dropped": dict(window.dropped) if window else {},
            "latency_us": window.latency_us if window else [], "counters": self.sink.counters(),
            "counts": counts,
        }
        self._send(("report", report))


def main(argv: list[str]) -> int:
    """The injector process: load the plugins, wait for a session, run its input."""
    sock = socket.socket(fileno=int(argv[0]))
    from punktfunk_core.plugins import load_plugin_manager

    pm = load_plugin_manager()  # the slow part, done before a session waits for it
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
    except OSError:
        return 0
    reader = _FrameReader(sock, data)
    first = reader.frames()
    while not first:
        more = reader.read()
        if more and more[-1] is None:
            return 0  # the host went away before it gave us a session
        first = more
    start = first[0]
    reader.buf[:0] = b"".join(_frame(m) for m in first[1:])  # (never more than the start frame, in practice)
    from punktfunk_core import logfmt

    logging.basicConfig(level=start.get("log_level", logging.INFO), handlers=[logfmt.stderr_handler()])
    try:
        child = _Child(sock, reader, start, fds, pm)
    except Exception:  # noqa: BLE001 - said once; the host logs that input is gone
        log.exception("%s: the input process could not start", start.get("name", "input"))
        return 1
    child.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
