"""The GameStream protocol plane: nvhttp, RTSP, control (ENet), pings, sessions.

One app runs at a time (the host's ``[[apps]]``, "Desktop" built in,
started through ``host.apps``): a :class:`Launch`, from ``/launch`` (HTTPS,
paired client) until ``/cancel``, the operator or the app's own exit ends it;
ending it ends the stream and then the app's process group. Each
``/launch`` and ``/resume`` gives it a new :class:`Stream`: the client's
address and AES key, then what the RTSP handshake from that address
negotiates (ANNOUNCE, :mod:`punktfunk_gamestream.rtsp`); PLAY arms the
stream, whose host session starts when the client's first video ping reveals
where to send. The control stream (ENet, AES-GCM both ways) carries IDR
requests, FEC reports and input in (input goes to the session's input sink,
opened with the session; a view-only client's is dropped) and the termination
message and rumble out. Audio (tone →
Opus, RTP + RS(4,2) FEC, optional AES-CBC) is the session's audio pipeline,
started once the session runs and an audio ping has shown where to send.
"""

from __future__ import annotations

import logging
import secrets
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_core.apps import LaunchError, RunningApp
from punktfunk_core.identity import PairedClient
from punktfunk_core.ipc import IpcError
from punktfunk_core.protocol import PIN_FROM_CLIENT, ProtocolPlane
from punktfunk_core.stages import Packetizer, Sender

from punktfunk_gamestream import wire, wire_control, wire_rtsp
from punktfunk_gamestream.adaptive import adaptation_for
from punktfunk_gamestream.audio import AudioContext
from punktfunk_gamestream.input import HapticsEnable, MalformedInput, parse_input
from punktfunk_gamestream.layout import GAMESTREAM_LAYOUT
from punktfunk_gamestream.pairing import Identity, Pairing
from punktfunk_gamestream.video import VideoContext
from punktfunk_gamestream.wire import BadInput
from punktfunk_gamestream.wire_rtsp import AnnouncedStream

if TYPE_CHECKING:
    from punktfunk_core.host import Host
    from punktfunk_core.inputevents import InputEvent
    from punktfunk_core.inputsink import InputSink
    from punktfunk_core.session import Session

log = logging.getLogger("punktfunk.gamestream")

#: the largest input packet moonlight-common-c builds (MAX_INPUT_PACKET_SIZE); the largest
#: we parse is 8 + 32 bytes (pen, text), so anything longer is counted as oversized
MAX_INPUT_PACKET = 128

# port offsets from the base (47989) that Moonlight clients assume
PORT_OFFSETS = {"http": 0, "https": -5, "rtsp": 21, "video": 9, "control": 10, "audio": 11}


def _ping_payload() -> bytes:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16)).encode()


@dataclass(eq=False)
class Stream:
    """One stream of the running app, from a ``/launch`` or ``/resume`` to its end:
    what that request and the RTSP handshake negotiated, and the live state.
    A resume makes a new one, so nothing of an old stream leaks into the next."""

    client_ip: str
    rikey: bytes
    rikeyid: int
    video_ping: bytes = field(default_factory=_ping_payload)
    audio_ping: bytes = field(default_factory=_ping_payload)
    connect_data: int = field(default_factory=lambda: secrets.randbits(32))
    announce: AnnouncedStream | None = None
    playing: bool = False
    play_time: float = 0.0
    video_peer: tuple[str, int] | None = None
    audio_peer: tuple[str, int] | None = None
    session: Session | None = None
    video: VideoContext | None = None
    #: the session's audio (started: its context; the audio pipeline belongs to the session)
    audio: AudioContext | None = None
    starting: bool = False
    audio_failed: bool = False
    #: the client left (disconnect/timeout): nobody to tell that the stream ended
    client_gone: bool = False
    #: the last frame Moonlight reported unrecoverable (a frame counts once)
    last_lost_frame: int = -1
    #: the session's input sink (opened with the session, closed by it when it ends)
    input: InputSink | None = None
    #: the client said it rumbles (haptics-enable packet); feedback goes to it either way
    haptics: bool = False
    #: a view-only client's input was dropped (logged once per stream)
    view_only_logged: bool = False


@dataclass(eq=False)
class Launch:
    """The running app: who launched it, in which mode, and its current stream."""

    client: PairedClient
    width: int
    height: int
    fps: int
    stream: Stream
    #: the app it runs (host.apps); its id is the ``currentgame`` clients see
    app: RunningApp | None = None

    @property
    def app_id(self) -> int:
        return self.app.app.id if self.app is not None else 0


class GameStreamPlane(ProtocolPlane):
    name = "gamestream"
    pin_from = PIN_FROM_CLIENT

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._lock = threading.RLock()
        self.launch: Launch | None = None
        self.ports: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.identity: Identity
        self.pairing: Pairing
        self.nvhttp: Any = None
        self.control: Any = None
        self.rtsp: Any = None
        self.video_sock: socket.socket | None = None
        self.audio_sock: socket.socket | None = None
        self._zeroconf: Any = None
        self.sessions_started = 0
        self.last_session: dict[str, Any] | None = None

    # -- bookkeeping ---------------------------------------------------------------
    def codec_support(self) -> int:
        """The codecs some registered encoder declares (whether it runs here is known at session start)."""
        codecs = self.host.pm.stages.codecs("encoder")
        scm = wire.SCM_H264
        if "hevc" in codecs:
            scm |= wire.SCM_HEVC
        if "av1" in codecs:
            scm |= wire.SCM_AV1_MAIN8
        return scm

    def current_stream(self) -> Stream | None:
        launch = self.launch
        return launch.stream if launch is not None else None

    def status(self) -> dict[str, Any]:
        launch = self.launch
        stream = launch.stream if launch is not None else None
        session = stream.session if stream is not None else None
        return {
            "ports": dict(self.ports),
            "paired_clients": [{"name": c.name, "fingerprint": c.fingerprint} for c in self.identity.paired.list()],
            "pairing": self.pairing.pending(),
            "pairing_failures": self.pairing.failures,
            "app_running": launch is not None,
            "streaming": bool(session and not session.ended),
            "session_id": session.id if session else None,
            "frames_sent": session.pipeline.frames_sent if session and session.pipeline else 0,
            "adaptive": stream.video.adaptive.status() if stream and stream.video and stream.video.adaptive else None,
            "sessions_started": self.sessions_started,
            "last_session": self.last_session,
            "counters": self.counters.snapshot(),
        }

    # -- pairing (the core's contract) ------------------------------------------------------
    def pairing_status(self) -> dict[str, Any]:
        return {"waiting": self.pairing.pending()}

    def submit_pin(self, pin: str) -> dict[str, Any]:
        """The PIN the waiting Moonlight client shows, typed by the operator."""
        try:
            device = self.pairing.submit_pin(pin)
        except ValueError as exc:
            raise IpcError(400, str(exc)) from None
        except LookupError as exc:
            raise IpcError(409, str(exc)) from None
        return {"ok": True, "device": device}

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        from punktfunk_gamestream.control import ControlServer
        from punktfunk_gamestream.nvhttp import NvHttp
        from punktfunk_gamestream.rtsp import RtspServer

        cfg = self.config
        bind = cfg.get("bind", "0.0.0.0")
        base = int(cfg.get("port_base", 47989))

        def port(name: str) -> int:
            return 0 if base == 0 else base + PORT_OFFSETS[name]

        self.identity = Identity(self.host.paths.config / "gamestream")
        self.paired = self.identity.paired
        self.pairing = Pairing(self.identity, float(cfg.get("pin_timeout_s", 60)))
        log.warning("GameStream is enabled: pairing runs over plain HTTP (as every GameStream host does); "
                    "only pair on a network you trust, and only with a PIN shown by your own client")
        try:
            self.nvhttp = NvHttp(self, bind, port("http"), port("https"))
            self.ports["http"], self.ports["https"] = self.nvhttp.ports
            self.rtsp = RtspServer(self, bind, port("rtsp"))
            self.ports["rtsp"] = self.rtsp.port
            self.video_sock = self._udp(bind, port("video"))
            self.ports["video"] = self.video_sock.getsockname()[1]
            self.audio_sock = self._udp(bind, port("audio"))
            self.ports["audio"] = self.audio_sock.getsockname()[1]
            self.control = ControlServer(self, bind, port("control"))
            self.ports["control"] = self.control.port
        except Exception:
            self.stop()
            raise
        self.nvhttp.start()
        self.control.start()
        self.rtsp.start()
        for name, target in (("video-ping", self._video_ping_loop), ("audio-ping", self._audio_ping_loop)):
            t = threading.Thread(target=target, name=f"gamestream-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if cfg.get("mdns", True):
            self._start_mdns()
        log.info("GameStream listening: %s", self.ports)

    def _udp(self, bind: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((bind, port))
        s.settimeout(0.5)
        return s

    def stop(self) -> None:
        self._stop.set()
        self.cancel_launch("host stopping", wait=True)
        pairing = getattr(self, "pairing", None)
        if pairing is not None:
            pairing.cancel()
        if self._zeroconf is not None:
            try:
                self._zeroconf.unregister_all_services()
                self._zeroconf.close()
            except Exception:  # noqa: BLE001
                log.debug("zeroconf close failed", exc_info=True)
            self._zeroconf = None
        if self.nvhttp is not None:
            self.nvhttp.stop()
        if self.control is not None:
            self.control.stop()
        if self.rtsp is not None:
            self.rtsp.stop()
        for t in self._threads:
            t.join(1.0)
        for s in (self.video_sock, self.audio_sock):
            if s is not None:
                s.close()

    def _start_mdns(self) -> None:
        try:
            from zeroconf import ServiceInfo, Zeroconf

            ips = sorted({a for a in _local_ipv4s() if not a.startswith("127.")}) or ["127.0.0.1"]
            name = self.host.hostname.replace(".", "-")[:60] or "punktfunk"
            info = ServiceInfo("_nvstream._tcp.local.", f"{name}._nvstream._tcp.local.",
                               addresses=[socket.inet_aton(a) for a in ips], port=self.ports["http"],
                               properties={}, server=f"{name}.local.")
            self._zeroconf = Zeroconf()
            self._zeroconf.register_service(info)
            log.info("mDNS: advertising %s on %s", info.name, ips)
        except Exception as exc:  # noqa: BLE001 - discovery is optional
            log.warning("mDNS advertisement failed (clients can still add the host by address): %s", exc)

    # -- launch / cancel (nvhttp) ----------------------------------------------------------
    def start_launch(self, client: PairedClient, ip: str, mode: tuple[int, int, int] | None, rikey: bytes,
                     rikeyid: int, resume: bool, appid: int = 0) -> tuple[bool, str]:
        """``/launch`` (``appid``, ``mode``) or ``/resume``: (ok, why not). A new launch runs the
        app's prep steps and command (``host.apps``) before the stream is set up; the same app
        launched again by its client keeps running and gets a new stream."""
        with self._lock:
            cur = self.launch
            if resume:
                if cur is None:
                    return False, "no app is running"
                if cur.client.fingerprint != client.fingerprint:
                    return False, "another client runs the app"
                self._end_stream(cur.stream, "resumed by the client")
                cur.stream = Stream(ip, rikey, rikeyid)
                return True, ""
            if cur is not None:
                if cur.client.fingerprint != client.fingerprint:
                    return False, "another client runs the app"
                if cur.app_id != appid:
                    return False, f"{cur.app.app.name if cur.app else 'an app'} is running; quit it first"
        # the prep steps and the command run outside the plane's lock (they may take seconds)
        try:
            running = self.host.apps.launch(appid, on_exit=self._app_exited, on_quit=self._app_quit,
                                            protocol=self.name, client=client.name)
        except LaunchError as exc:  # the launcher logged it; the client is told
            self.count("launch_failed")
            return False, str(exc)
        with self._lock:
            cur = self.launch
            if cur is not None:
                self._end_stream(cur.stream, "relaunched by the client")
            w, h, fps = mode  # type: ignore[misc]
            self.launch = Launch(client, w, h, fps, Stream(ip, rikey, rikeyid), running)
            log.info("GameStream launch of %r by %r from %s: %dx%d@%d", running.app.name, client.name, ip, w, h,
                     fps)
            return True, ""

    def _app_exited(self, running: RunningApp, code: int | None) -> None:
        """The app ended by itself (the launcher already ended its group and ran its undo):
        the stream ends and the client is told."""
        self._app_quit(running, f"the app {running.app.name!r} exited ({code})")

    def _app_quit(self, running: RunningApp, reason: str) -> None:
        """The app ends outside this plane (its own exit, ``apps.quit``): end its stream and
        tell the client; the launcher ends the app itself."""
        with self._lock:
            launch = self.launch
            if launch is None or launch.app is not running:
                return
            self.launch = None
        self._end_launch(launch, reason, quit_app=False)

    def cancel_launch_of(self, client: PairedClient) -> bool:
        """``/cancel`` from a paired client: it may end the app it launched, not
        another client's (the operator can end any: ``cancel_launch``)."""
        with self._lock:
            launch = self.launch
            if launch is not None and launch.client.fingerprint != client.fingerprint:
                self.count("cancel_refused")
                log.warning("GameStream client %r asked to end the app %r launched; refused (only the launching "
                            "client or the operator may end it)", client.name, launch.client.name)
                return False
            self.launch = None
        self._end_launch(launch, "cancelled by the client")
        return True

    def cancel_launch(self, reason: str, wait: bool = False) -> None:
        """The operator (or the host stopping, with ``wait``) ends the app: the stream at once,
        the app's group and undo steps on a thread of their own unless ``wait``."""
        with self._lock:
            launch = self.launch
            self.launch = None
        if wait or launch is None:
            self._end_launch(launch, reason)
            return
        threading.Thread(target=self._end_launch, args=(launch, reason), name="gamestream-app-end",
                         daemon=True).start()

    def _end_launch(self, launch: Launch | None, reason: str, quit_app: bool = True) -> None:
        """End the stream, then the app (its process group, then its undo steps); bounded by
        the app's ``exit_timeout`` and its undo steps (docs/apps.md)."""
        if launch is not None:
            if self.control is not None:
                self.control.terminate(launch.stream, reason)
            self._end_stream(launch.stream, reason)
            if quit_app and launch.app is not None and self.host.apps.running is launch.app:
                self.host.apps.quit()
            log.info("GameStream app ended: %s", reason)

    def _end_stream(self, stream: Stream, reason: str) -> None:
        stream.audio = None  # the session's audio ends with it
        s = stream.session
        if s is not None and not s.ended:
            s.stop(reason)
        stream.playing = False

    def stream_ended(self, stream: Stream, reason: str) -> None:
        """The client left (control disconnect / timeout): stop streaming, keep the app."""
        with self._lock:
            stream.client_gone = True
            if self.current_stream() is stream:
                self._end_stream(stream, reason)

    def on_session_ended(self, session: Session, error: BaseException | None) -> None:
        """A session ended on the host side (operator, failure): tell its client.
        The ``on_end`` of the sessions this plane starts; runs on the session's thread."""
        stream = self.current_stream()
        if stream is None or stream.session is not session or stream.client_gone:
            return
        reason = f"stream failed: {error}" if error else (session.pipeline.stop_reason if session.pipeline else "")
        self._end_stream(stream, reason or "ended on the host")
        if self.control is not None:
            self.control.terminate(stream, reason or "ended on the host")

    def play(self, stream: Stream) -> None:
        """RTSP PLAY: the stream may start once the client's video ping says where to send."""
        stream.playing = True
        stream.play_time = time.monotonic()
        if stream.video_peer is not None:
            self._start_session_async(stream)

    # -- pings ---------------------------------------------------------------------------------
    def _ping_loop(self, sock: socket.socket, kind: str) -> None:
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                payload, _seq = wire_rtsp.parse_ping(data)
            except BadInput:
                self.count("ping_bad")
                continue
            stream = self.current_stream()
            if stream is None:
                self.count("ping_unexpected")
                continue
            expected = stream.video_ping if kind == "video" else stream.audio_ping
            if payload != expected and not (payload == b"PING" and addr[0] == stream.client_ip):
                self.count("ping_unexpected")
                continue
            if kind == "video":
                self._on_video_ping(stream, addr)
            else:
                self._on_audio_ping(stream, addr)

    def _video_ping_loop(self) -> None:
        assert self.video_sock is not None
        self._ping_loop(self.video_sock, "video")

    def _audio_ping_loop(self) -> None:
        assert self.audio_sock is not None
        self._ping_loop(self.audio_sock, "audio")

    def _on_video_ping(self, stream: Stream, addr: tuple[str, int]) -> None:
        peer = (addr[0], addr[1])
        if stream.video_peer != peer:
            stream.video_peer = peer
            if stream.video is not None:
                stream.video.peer = peer
        if stream.playing and stream.session is None and not stream.starting:
            self._start_session_async(stream)

    def _on_audio_ping(self, stream: Stream, addr: tuple[str, int]) -> None:
        peer = (addr[0], addr[1])
        stream.audio_peer = peer
        if stream.audio is not None:
            stream.audio.peer = peer
        elif (stream.playing and not stream.audio_failed and self.config.get("audio", True)
              and stream.announce is not None):
            self._start_audio(stream)

    # -- sessions ------------------------------------------------------------------------------
    def _start_session_async(self, stream: Stream) -> None:
        with self._lock:
            if stream.starting or stream.session is not None:
                return
            stream.starting = True
        threading.Thread(target=self._start_session, args=(stream,), name="gamestream-start",
                         daemon=True).start()

    def _start_session(self, stream: Stream) -> None:
        ann = stream.announce
        assert ann is not None and stream.video_peer is not None
        launch = self.launch
        host = self.host
        try:
            spec = host.stream_spec(width=ann.width, height=ann.height, fps=ann.fps, codec=ann.codec,
                                    bitrate_kbps=ann.bitrate_kbps)
            cfg = self.config
            ctx = VideoContext(
                packet_size=ann.packet_size,
                fec_percent=int(cfg.get("fec_percent", 20)),
                min_fec_packets=ann.min_fec_packets,
                key=stream.rikey if ann.video_encrypted else None,
                sock=self.video_sock,
                peer=stream.video_peer,
                pacing=float(cfg.get("pacing", 0.5)),
                gso=bool(cfg.get("gso", True)),
                adaptive=adaptation_for(cfg, spec, ann.min_fec_packets,
                                        lambda kbps: stream.session.set_bitrate(kbps) if stream.session else None),
            )
            # the stages the config names (a plugin's stage may replace or wrap the builtin)
            packetizer = host.pm.stages.create(
                "packetizer", cfg.get("video_packetizer", "gamestream"), spec,
                {**cfg.get("video_packetizer_options", {}), "context": ctx,
                 "fec_threads": int(cfg.get("fec_threads", 1))})
            try:
                assert isinstance(packetizer, Packetizer)
                sender = host.pm.stages.create("sender", cfg.get("video_sender", "gamestream"), spec,
                                               {**cfg.get("video_sender_options", {}), "context": ctx})
                assert isinstance(sender, Sender)
            except BaseException:
                packetizer.close()
                raise
            client = f"{stream.video_peer[0]}:{stream.video_peer[1]}"
            with self._lock:
                if self.current_stream() is not stream:
                    packetizer.close()
                    sender.close()
                    return
            session = host.start_session("gamestream", client, spec, packetizer, sender, GAMESTREAM_LAYOUT,
                                         on_end=self.on_session_ended)
        except Exception as exc:  # noqa: BLE001 - report to the client, keep the host
            log.error("GameStream session could not start: %s", exc, exc_info=exc)
            self.count("session_start_failed")
            stream.starting = False
            if self.control is not None:
                self.control.terminate(stream, f"session failed: {exc}")
            return
        if ctx.adaptive is not None:  # the runner has it fill each window's adaptive fields
            session.adaptive = ctx.adaptive.control
        session.details.update({
            "client_name": launch.client.name if launch is not None else "",
            "packet_size": ann.packet_size,
            "video_encryption": ann.video_encrypted,
            "audio_encryption": ann.audio_encrypted,
            "control_encryption": "aes-gcm",
            "fec": "adaptive" if ctx.adaptive is not None and ctx.adaptive.fec is not None else "fixed",
            "fec_percent": ctx.fec_percent,
            "min_fec_packets": ann.min_fec_packets,
        })
        # what Moonlight reports is measured from the start: no report is no loss (0, not absent)
        session.feedback.report(packets_dropped=0, frames_unrecoverable=0,
                                fec_recovered=0 if ctx.fec_percent > 0 or ctx.adaptive is not None else None)
        self.last_session = {"id": session.id, "client": session.client, **session.details,
                             "codec": spec.codec, "width": spec.width, "height": spec.height, "fps": spec.fps}
        with self._lock:
            stream.video = ctx
            stream.session = session
            stream.starting = False
            self.sessions_started += 1
            stale = self.current_stream() is not stream
        if stale:
            session.stop("the app ended while the session started")
            return
        control = self.control
        try:
            stream.input = host.start_input(session, feedback=(lambda ev: control.feedback(stream, ev))
                                            if control is not None else None)
        except Exception as exc:  # noqa: BLE001 - the stream goes on without input
            self.count("input_start_failed")
            log.error("GameStream input could not start (the stream continues without it): %s", exc)
        if (stream.audio is None and not stream.audio_failed and stream.audio_peer is not None
                and self.config.get("audio", True)):
            self._start_audio(stream)

    def _start_audio(self, stream: Stream) -> None:
        """The session's audio pipeline, once the session runs and the client's audio ping is in."""
        from punktfunk_gamestream.audio import audio_stages

        with self._lock:
            ann, session = stream.announce, stream.session
            if (stream.audio is not None or stream.audio_failed or stream.audio_peer is None or ann is None
                    or session is None):
                return
            ctx = stream.audio = AudioContext(packet_ms=ann.audio_packet_ms, channels=ann.audio_channels,
                                              high_quality=ann.audio_high_quality,
                                              key=stream.rikey if ann.audio_encrypted else None,
                                              rikeyid=stream.rikeyid, sock=self.audio_sock, peer=stream.audio_peer)
        try:
            stages = audio_stages(self.host.pm.stages, self.config, session.spec, ctx)
            self.host.start_audio(session, *stages, on_end=self._audio_ended)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - video goes on without audio
            stream.audio_failed = True
            log.error("GameStream audio could not start (video continues without it): %s", exc)
            self.count("audio_start_failed")

    def _audio_ended(self, session: Session, error: BaseException | None) -> None:
        if error is not None:
            self.count("audio_failed")

    # -- control events ---------------------------------------------------------------------------
    def on_idr_request(self, stream: Stream, rtt_us: float | None = None) -> None:
        """The client asked for an IDR; with adaptation, one per loss burst (the rest are counted)."""
        self.count("idr_requests")
        s = stream.session
        if s is None or s.pipeline is None:
            return
        ctx = stream.video
        adaptive = ctx.adaptive if ctx is not None else None
        if adaptive is not None and not adaptive.idr_request(time.monotonic(), rtt_us):
            self.count("idr_coalesced")
            return
        s.pipeline.request_keyframe()

    def on_control_message(self, stream: Stream, rtt_us: float | None) -> None:
        """Any message from the client (control thread): close the loss window when it is due."""
        ctx = stream.video
        if ctx is not None and ctx.adaptive is not None:
            ctx.adaptive.tick(time.monotonic(), rtt_us)

    def on_fec_status(self, stream: Stream, st: wire_control.FecStatus) -> None:
        """Moonlight's per-block FEC report (0x5502) into the session's stats.

        Moonlight sends one for each FEC block it had to repair and for each it
        gave up on (docs/gamestream.md, "What Moonlight reports"): repaired, the
        packets missing before the repair point are lost and the missing data
        packets recovered; given up, every packet of the block that did not
        arrive is lost and the frame is unrecoverable.
        """
        s = stream.session
        if s is None:
            return
        ctx = stream.video
        if ctx is not None and ctx.adaptive is not None:
            ctx.adaptive.fec_status(st)
        if st.recovered:
            s.feedback.report(packets_dropped=st.missing_before_highest, fec_recovered=st.data_missing)
            return
        lost = st.total_data + st.total_parity - st.received_data - st.received_parity
        first = st.frame != stream.last_lost_frame
        stream.last_lost_frame = st.frame
        if first:
            self.count("frames_unrecoverable")
        s.feedback.report(packets_dropped=max(0, lost), frames_unrecoverable=int(first))

    def on_input(self, stream: Stream, packet: bytes) -> InputEvent | None:
        """One input packet (the payload of control message 0x0206) from the
        authenticated control connection of ``stream``: the event for the session's
        input sink (:meth:`submit_input`), or None. Dropped and counted: input for a
        stream that is not the current one, from a client the operator made view-only
        (or unpaired since), oversized, or malformed."""
        self.count("input_packets")
        launch = self.launch
        if launch is None or launch.stream is not stream:
            self.count("input_not_current")
            return None
        # read per packet: a change applies at once
        client = self.paired.get(launch.client.fingerprint) if self.paired is not None else None
        if client is None or client.view_only:
            self.count("input_view_only")
            if not stream.view_only_logged:
                stream.view_only_logged = True
                log.info("GameStream client %r is %s: its input is dropped", launch.client.name,
                         "no longer paired" if client is None else "view-only")
            return None
        if len(packet) > MAX_INPUT_PACKET:
            self.count("input_oversized")
            return None
        try:
            event = parse_input(packet)
        except MalformedInput as exc:
            self.count("input_malformed")
            log.debug("input packet dropped: %s", exc)
            return None
        if isinstance(event, HapticsEnable):
            stream.haptics = event.enabled
            return None
        return event

    def submit_input(self, stream: Stream, events: list[InputEvent], received_ns: int) -> None:
        """The input events of the packets the control stream took in one go (in order), into
        the session's sink together: one lock and one flush of the backend for all of them."""
        sink = stream.input
        if sink is None:
            self.count("input_no_session", len(events))
            return
        sink.submit_many(events, received_ns)

    def aead_for(self, stream: Stream) -> AESGCM:
        return AESGCM(stream.rikey)


def _local_ipv4s() -> list[str]:
    out: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            out.add(str(info[4][0]))  # an AF_INET address: already a str
    except OSError:
        pass
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.255.255.255", 1))
        out.add(s.getsockname()[0])
        s.close()
    except OSError:
        pass
    return sorted(out)

