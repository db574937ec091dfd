"""The host process: plugins, protocol planes, sessions and the IPC channel."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from punktfunk_core import __version__
from punktfunk_core.apps import AppLauncher
from punktfunk_core.config import CoreSettings, protocol_enabled
from punktfunk_core.counters import Counters
from punktfunk_core.gate import MeasurementGate
from punktfunk_core.inputevents import FeedbackEvent
from punktfunk_core.inputsink import InputSink, open_input_sink
from punktfunk_core.ipc import IpcError, IpcServer
from punktfunk_core.pairing import pairing_commands
from punktfunk_core.paths import Paths
from punktfunk_core.pipeline import AudioPipeline, Pipeline, close_quietly
from punktfunk_core.plugins import PluginManager
from punktfunk_core.protocol import ProtocolPlane
from punktfunk_core.registry import UnknownStageError
from punktfunk_core.session import Session
from punktfunk_core.stages import AudioEncoder, AudioSource, CaptureSource, Encoder, Packetizer, Sender, StreamSpec
from punktfunk_core.window import LOOPBACK_LAYOUT, StageLayout

log = logging.getLogger("punktfunk.host")

#: how long stop() waits for sessions to end (a session's last window waits up to
#: pipeline.LAST_REPORT_WAIT_S for its client's last report)
SESSION_STOP_WAIT_S = 3.0


class HostBusy(IpcError):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class Host:
    def __init__(self, config: dict[str, Any], pm: PluginManager, paths: Paths | None = None,
                 gate: MeasurementGate | None = None) -> None:
        self.config = config
        #: the core's sections, typed (plugins read their own sections from ``config``)
        self.settings = CoreSettings.of(config)
        #: what a reload re-reads: ``-c FILE`` (None: the default host.toml, else the
        #: built-in defaults), what was loaded, and command-line options kept over it
        self.config_request: str | None = None
        self.config_source: str | None = None
        self.config_overrides: dict[tuple[str, str], Any] = {}
        self.reload_lock = threading.Lock()
        #: the ``[[apps]]`` clients can launch (a reload replaces the list)
        self.apps = AppLauncher(self.settings.apps)
        self.pm = pm
        self.paths = paths or Paths.from_env()
        self.gate = gate or MeasurementGate()
        #: event counters for dropped bad input etc.; exported by /metrics
        self.counters = Counters()
        self.sessions: dict[int, Session] = {}
        #: the final info of recently ended sessions (``sessions.get`` answers from here)
        self.ended_sessions: collections.deque[dict[str, Any]] = collections.deque(maxlen=32)
        self.planes: dict[str, ProtocolPlane] = {}
        #: protocol -> why it failed to start (enabled, but not in ``planes``)
        self.protocol_errors: dict[str, str] = {}
        self.ipc: IpcServer | None = None
        self.started_ns = time.monotonic_ns()
        self.hostname = self.settings.host.name or socket.gethostname()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        #: session id -> the on_end callback its plane passed to start_session
        self._on_end: dict[int, Callable[[Session, BaseException | None], Any]] = {}

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self.paths.ensure()
        handlers = {name: fn for name, (fn, _plugin) in self._core_commands().items()}
        for name, (fn, _plugin) in self.pm.collect_named("ipc_commands", host=self).items():
            if name in handlers:
                raise ValueError(f"IPC command {name!r} is reserved by the core")
            handlers[name] = fn
        self.ipc = IpcServer(self.paths.ipc_endpoint, handlers)
        for name in self.pm.protocols.names():
            if not protocol_enabled(self.config, name):
                log.info("protocol %s is disabled (set %s.enabled = true to turn it on)", name, name)
                continue
            try:
                plane = self.pm.protocols.factory(name)(self)
                plane.start()
            except Exception as exc:  # noqa: BLE001 - one protocol failing must not stop the host
                log.error("protocol %s failed to start: %s", name, exc)
                self.protocol_errors[name] = str(exc)
                log.debug("protocol %s start failure", name, exc_info=exc)
                continue
            self.planes[name] = plane
            log.info("protocol %s started %s", name, plane.status())
        # IPC last: a host that answers has its protocols up (scripts and tests rely on it)
        self.ipc.start()
        self.pm.call_each("host_started", {"host": self})

    def stop(self) -> None:
        """Stop the sessions, wait for them (their last stats windows), then tell
        the plugins (``host_stopping``) and close the planes and IPC."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for s in list(self.sessions.values()):
            s.stop("host stopping")
        deadline = time.monotonic() + SESSION_STOP_WAIT_S
        for s in list(self.sessions.values()):
            s.wait(max(0.0, deadline - time.monotonic()))
        self.pm.call_each("host_stopping", {"host": self})
        for plane in self.planes.values():
            try:
                plane.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping protocol %s failed", plane.name)
        if self.ipc is not None:
            self.ipc.stop()

    def take_config(self, config: dict[str, Any]) -> None:
        """Run with a reloaded config from now on (``punktfunk_core.reload``): each
        attribute is replaced in one assignment, never changed in place."""
        settings = CoreSettings.of(config)
        self.config = config
        self.settings = settings

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # -- stage selection ---------------------------------------------------------------
    def stream_spec(self, **overrides: Any) -> StreamSpec:
        s = self.settings.stream
        kw: dict[str, Any] = {"width": s.width, "height": s.height, "fps": s.fps, "codec": s.codec,
                              "bitrate_kbps": s.bitrate_kbps, "keyframe_interval": s.keyframe_interval}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return StreamSpec(**kw)

    def encoder_name(self, spec: StreamSpec) -> str:
        """Resolve ``stream.encoder``; ``auto`` takes the encoder of the highest
        priority that encodes the session's codec here (see ``StageRegistry.choose``)."""
        name = self.settings.stream.encoder
        return self.pm.stages.choose("encoder", spec.codec).name if name == "auto" else name

    def create_capture(self, spec: StreamSpec, name: str | None = None, options: dict | None = None) -> CaptureSource:
        s = self.settings.stream
        stage = self.pm.stages.create("capture", name or s.capture, spec,
                                      options if options is not None else s.capture_options)
        assert isinstance(stage, CaptureSource)
        return stage

    def create_encoder(self, spec: StreamSpec, name: str | None = None, options: dict | None = None) -> Encoder:
        s = self.settings.stream
        stage = self.pm.stages.create("encoder", name or self.encoder_name(spec), spec,
                                      options if options is not None else s.encoder_options)
        assert isinstance(stage, Encoder)
        return stage

    # -- sessions ---------------------------------------------------------------------
    def start_session(
        self,
        kind: str,
        client: str,
        spec: StreamSpec,
        packetizer: Packetizer,
        sender: Sender,
        layout: StageLayout,
        *,
        capture: CaptureSource | None = None,
        encoder: Encoder | None = None,
        paced: bool = True,
        on_end: Callable[[Session, BaseException | None], Any] | None = None,
    ) -> Session:
        """Build and start a session's pipeline. Stages passed in are owned by
        the session from here on (closed when it ends, also on failure here).

        ``on_end(session, error)`` is called once when the session has ended
        (``error`` is what ended it, or None), before the ``session_ended``
        hook and on the same thread: the last of the session's pipeline threads
        (see that hook). The plane that started the session learns of its end
        this way, whoever ended it.
        """
        owned: list[Any] = [packetizer, sender, capture, encoder]
        try:
            with self._lock:
                limit = self.settings.host.max_sessions
                if len(self.sessions) >= limit:
                    raise HostBusy(f"the host already runs {len(self.sessions)} sessions (host.max_sessions = {limit})")
            session = Session(kind, client, spec)
            if encoder is None:
                encoder = self.create_encoder(spec)
                owned[3] = encoder
            if capture is None:  # captured straight in the encoder's input format: no conversion per frame
                capture = self.create_capture(dataclasses.replace(spec, pixel_format=encoder.input_format))
                owned[2] = capture
            pipeline = Pipeline(
                session, capture, encoder, packetizer, sender, layout, self.gate,
                emit_window=self._emit_window, on_end=self._session_ended, paced=paced,
            )
        except BaseException:
            for stage in owned:
                close_quietly(stage)
            raise
        with self._lock:
            self.sessions[session.id] = session
            if on_end is not None:
                self._on_end[session.id] = on_end
        log.info("session %s started: %s client=%s %dx%d@%d %s via %s", session.id, kind, client,
                 spec.width, spec.height, spec.fps, spec.codec, session.encoder_backend)
        self.pm.call_each("session_started", {"session": session})
        pipeline.start()
        return session

    def start_audio(
        self,
        session: Session,
        source: AudioSource,
        encoder: AudioEncoder,
        packetizer: Packetizer,
        sender: Sender,
        *,
        on_end: Callable[[Session, BaseException | None], Any] | None = None,
    ) -> AudioPipeline:
        """Give a running session its audio pipeline and start it. The stages
        are owned by the audio from here on (closed when it ends, also when it
        cannot start: the session is ending or has audio already, RuntimeError).
        ``on_end(session, error)`` is called once when the audio has ended, on
        its thread; a failing audio stage ends the audio, not the session."""
        stages: list[Any] = [source, encoder, packetizer, sender]
        try:
            audio = AudioPipeline(session, source, encoder, packetizer, sender, self.gate, on_end=on_end)
            if not session.attach_audio(audio):
                raise RuntimeError(f"session {session.id} is ending or has audio already")
        except BaseException:
            for stage in stages:
                close_quietly(stage)
            raise
        log.info("session %s: audio started (%s, %d samples per frame)", session.id, audio.codec, audio.samples)
        audio.start()
        return audio

    def start_input(self, session: Session,
                    feedback: Callable[[FeedbackEvent], None] | None = None) -> InputSink | None:
        """Open the input sink of a running session as ``[input]`` says and attach it:
        absolute positions land on the part of the desktop its capture shows, the
        capture gets the session's pointer (the test pattern draws it), and
        ``feedback`` (rumble …, on the backend's thread, must not block) goes back to
        its client. The session closes it when it ends, after its last window. None
        when the session is already ending (nothing is left open). A backend that
        cannot start leaves a sink without one: the stream never fails for input."""
        capture = session.pipeline.capture if session.pipeline is not None else None
        screen = capture.screen_area if capture is not None else None
        sink = open_input_sink(self.pm.stages, self.settings.input, session.spec, screen, feedback,
                               name=f"session {session.id} input")
        if not session.attach_input(sink):
            sink.close()
            return None
        if capture is not None:
            capture.follow_pointer(sink.pointer)  # the test pattern draws it
        log.info("session %s: input to %s", session.id, sink.backend.name if sink.backend is not None
                 else f"nowhere ({sink.gone})")
        return sink

    def start_loopback(self, args: dict[str, Any]) -> dict[str, Any]:
        """Start a diagnostic session that streams to a local UDP port.

        Lets operators and stage authors run any capture/encoder pair through
        the real runner with no client: the packetizer and sender of the
        highest priority (the media plugin's ``chunk`` and ``udp``), the sender
        aimed at 127.0.0.1:``port``, stopped after ``seconds`` (0 = until stopped).
        """
        try:
            port = int(args["port"])
            if not 1 <= port <= 65535:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise IpcError(400, "port must be an integer 1..65535") from None
        try:
            spec = self.stream_spec(
                width=args.get("width"), height=args.get("height"), fps=args.get("fps"),
                codec=args.get("codec"), bitrate_kbps=args.get("bitrate_kbps"),
            )
        except (TypeError, ValueError) as exc:
            raise IpcError(400, f"bad stream parameters: {exc}") from None
        seconds = float(args.get("seconds", 0) or 0)
        made: list[Any] = []
        try:
            stages = self.pm.stages
            chunk = {"payload_size": args["payload_size"]} if "payload_size" in args else {}
            made.append(stages.create("packetizer", stages.choose("packetizer").name, spec, chunk))
            made.append(stages.create("sender", stages.choose("sender").name, spec,
                                      {"host": "127.0.0.1", "port": port}))
            made.append(self.create_encoder(spec, args.get("encoder"), args.get("encoder_options")))
            made.append(self.create_capture(dataclasses.replace(spec, pixel_format=made[-1].input_format),
                                            args.get("capture"), args.get("capture_options")))
        except (LookupError, ValueError, TypeError, RuntimeError) as exc:
            for stage in made:
                close_quietly(stage)
            raise IpcError(400, str(exc)) from None
        packetizer, sender, encoder, capture = made
        session = self.start_session("loopback", f"udp://127.0.0.1:{port}", spec, packetizer, sender,  # type: ignore[arg-type]
                                     LOOPBACK_LAYOUT, capture=capture, encoder=encoder)
        if seconds > 0:
            timer = threading.Timer(seconds, session.stop, args=("loopback time is up",))
            timer.daemon = True
            timer.start()
        return session.info()

    def _emit_window(self, session: Session, sample: Any) -> None:
        self.pm.call_each("stats_window", {"session": session, "sample": sample})

    def _session_ended(self, session: Session, error: BaseException | None) -> None:
        final = session.info()
        with self._lock:
            self.sessions.pop(session.id, None)
            self.ended_sessions.append(final)
            on_end = self._on_end.pop(session.id, None)
        reason = session.pipeline.stop_reason if session.pipeline else ""
        if error is None:
            log.info("session %s ended%s", session.id, f" ({reason})" if reason else "")
        if on_end is not None:
            try:
                on_end(session, error)
            except Exception:  # noqa: BLE001 - the plane's bug must not keep the plugins from the end
                log.exception("session %s (%s): its plane's on_end failed", session.id, session.kind)
        self.pm.call_each("session_ended", {"session": session, "error": error})

    # -- core IPC commands ---------------------------------------------------------------
    def _core_commands(self) -> dict[str, tuple[Any, str]]:
        def status(_args: dict) -> dict:
            return {
                "version": __version__,
                "pid": os.getpid(),
                "hostname": self.hostname,
                "uptime_ms": (time.monotonic_ns() - self.started_ns) // 1_000_000,
                "measuring": self.gate.measuring,
                "protocols": {n: p.status() for n, p in self.planes.items()},
                "sessions": len(self.sessions),
                "config": self.config_source or "built-in defaults",
            }

        def sessions_list(_args: dict) -> list:
            return [s.info() for s in list(self.sessions.values())]

        def session_id(args: dict) -> int:
            try:
                return int(args["id"])
            except (KeyError, TypeError, ValueError):
                raise IpcError(400, "session id must be an integer") from None

        def sessions_get(args: dict) -> dict:
            """One session, running or recently ended (its final counters)."""
            sid = session_id(args)
            s = self.sessions.get(sid)
            if s is not None:
                return s.info()
            with self._lock:
                for info in reversed(self.ended_sessions):
                    if info["id"] == sid:
                        return dict(info)
            raise IpcError(404, f"no session {sid}")

        def sessions_stop(args: dict) -> dict:
            sid = session_id(args)
            s = self.sessions.get(sid)
            if s is None:
                raise IpcError(404, f"no session {sid}")
            s.stop("ended by operator")
            return {"id": sid, "stopping": True}

        def plugins_list(_args: dict) -> list:
            return [
                {"name": i.name, "distribution": i.distribution, "version": i.version,
                 "hooks": i.hooks, "error": i.error}
                for i in self.pm.plugin_table()
            ]

        def metrics(_args: dict) -> dict:
            # the planes count into self.counters, each under its own name
            counters = {**self.counters.snapshot(), "ipc.bad_request": self.ipc.bad_requests if self.ipc else 0}
            return {
                "counters": counters,
                "sessions": len(self.sessions),
                "measuring": self.gate.measuring,
                "uptime_ms": (time.monotonic_ns() - self.started_ns) // 1_000_000,
            }

        def loopback(args: dict) -> dict:
            return self.start_loopback(args)

        def config_reload(_args: dict) -> dict:
            from punktfunk_core.reload import reload_config

            return reload_config(self)

        def apps_quit(_args: dict) -> dict:
            # answered at once: the launching protocol ends its stream, the app ends on a thread
            running = self.apps.quit_from_operator("quit by the operator")
            return {"quitting": None if running is None else
                    {**running.describe(), "ends_within_s": self.apps.ending_bound(running)}}

        return {
            **{name: (fn, "core") for name, fn in pairing_commands(self).items()},
            "sessions.loopback": (loopback, "core"),
            "host.status": (status, "core"),
            "sessions.list": (sessions_list, "core"),
            "sessions.get": (sessions_get, "core"),
            "sessions.stop": (sessions_stop, "core"),
            "plugins.list": (plugins_list, "core"),
            "host.metrics": (metrics, "core"),
            "config.reload": (config_reload, "core"),
            "apps.list": (lambda _args: self.apps.status(), "core"),
            "apps.quit": (apps_quit, "core"),
        }


__all__ = ["Host", "HostBusy", "UnknownStageError"]
