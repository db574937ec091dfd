"""The GameStream protocol plane: nvhttp, RTSP, control (ENet), pings, sessions.

One app ("Desktop") runs at a time. ``/launch`` (HTTPS, paired client)
records the client's AES key and mode; the RTSP handshake from the same
address negotiates the stream (ANNOUNCE); PLAY arms the session, which
starts when the client's first video ping reveals where to send. The control
stream (ENet, AES-GCM both ways) carries IDR requests and FEC reports in and
the termination message out. Audio (tone → Opus, RTP + RS(4,2) FEC,
optional AES-CBC) is the session's audio pipeline, started once the session
runs and an audio ping has shown where to send.
"""

from __future__ import annotations

import logging
import secrets
import socket
import string
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_core.admission import ConnectionGate
from punktfunk_core.protocol import ProtocolPlane
from punktfunk_core.window import GAMESTREAM_LAYOUT

from punktfunk_gamestream import wire
from punktfunk_gamestream.audio import AudioContext
from punktfunk_gamestream.pairing import Identity, PairedClient, Pairing
from punktfunk_gamestream.video import VideoContext
from punktfunk_gamestream.wire import AnnouncedStream, BadInput

if TYPE_CHECKING:
    from punktfunk_core.host import Host
    from punktfunk_core.session import Session

log = logging.getLogger("punktfunk.gamestream")

#: running planes (the session_ended hook tells them about their sessions)
PLANES: weakref.WeakSet = weakref.WeakSet()

# port offsets from the base (47989) that Moonlight clients assume
PORT_OFFSETS = {"http": 0, "https": -5, "rtsp": 21, "video": 9, "control": 10, "audio": 11}


def _ping_payload() -> bytes:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16)).encode()


@dataclass
class Launch:
    """A launched app: what /launch negotiated plus the live stream state."""

    client: PairedClient
    client_ip: str
    width: int
    height: int
    fps: int
    rikey: bytes
    rikeyid: int
    video_ping: bytes = field(default_factory=_ping_payload)
    audio_ping: bytes = field(default_factory=_ping_payload)
    connect_data: int = field(default_factory=lambda: secrets.randbits(32))
    announce: AnnouncedStream | None = None
    playing: bool = False
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
    play_time: float = 0.0
    generation: int = 0
    #: the last frame Moonlight reported unrecoverable (a frame counts once)
    last_lost_frame: int = -1


class GameStreamPlane(ProtocolPlane):
    name = "gamestream"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.counters: dict[str, int] = {}
        self._lock = threading.RLock()
        self.launch: Launch | None = None
        self.ports: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.identity: Identity
        self.pairing: Pairing
        self.nvhttp: Any = None
        self.control: Any = None
        self._rtsp_sock: socket.socket | None = None
        self.video_sock: socket.socket | None = None
        self.audio_sock: socket.socket | None = None
        self._zeroconf: Any = None
        self.sessions_started = 0
        self.last_session: dict[str, Any] | None = None
        self._rtsp_gate: ConnectionGate | None = None

    # -- bookkeeping ---------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def codec_support(self) -> int:
        stages = self.host.pm.stages
        scm = wire.SCM_H264
        if ("encoder", "hevc") in stages or ("encoder", "nvenc") in stages:
            scm |= wire.SCM_HEVC
        if ("encoder", "av1") in stages:
            scm |= wire.SCM_AV1_MAIN8
        return scm

    def status(self) -> dict[str, Any]:
        launch = self.launch
        return {
            "ports": dict(self.ports),
            "paired_clients": [{"name": c.name, "fingerprint": c.fingerprint} for c in self.identity.clients.values()],
            "pairing": self.pairing.pending(),
            "pairing_failures": self.pairing.failures,
            "app_running": launch is not None,
            "streaming": bool(launch and launch.session and not launch.session.ended),
            "session_id": launch.session.id if launch and launch.session else None,
            "frames_sent": (launch.session.pipeline.frames_sent
                            if launch and launch.session and launch.session.pipeline else 0),
            "sessions_started": self.sessions_started,
            "last_session": self.last_session,
            "counters": dict(self.counters),
        }

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        from punktfunk_gamestream.control import ControlServer

        PLANES.add(self)
        from punktfunk_gamestream.nvhttp import NvHttp

        cfg = self.config
        bind = cfg.get("bind", "0.0.0.0")
        base = int(cfg.get("port_base", 47989))

        def port(name: str) -> int:
            return 0 if base == 0 else base + PORT_OFFSETS[name]

        self.identity = Identity(self.host.paths.config / "gamestream")
        self.pairing = Pairing(self.identity, float(cfg.get("pin_timeout_s", 60)))
        log.warning("GameStream is enabled: pairing runs over plain HTTP (as every GameStream host does); "
                    "only pair on a network you trust, and only with a PIN shown by your own client")
        try:
            self.nvhttp = NvHttp(self, bind, port("http"), port("https"))
            self.ports["http"], self.ports["https"] = self.nvhttp.ports
            self._rtsp_sock = socket.create_server((bind, port("rtsp")), reuse_port=False)
            self._rtsp_sock.settimeout(0.5)
            self.ports["rtsp"] = self._rtsp_sock.getsockname()[1]
            # one request per connection: pending until it has arrived, then answered within the same time
            self._rtsp_gate = ConnectionGate("rtsp", max_pending=16,
                                             max_pending_per_source=int(cfg.get("connections_per_source", 8)),
                                             pending_timeout_s=float(cfg.get("request_timeout_s", 5.0)),
                                             max_established=16, count=self.count)
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
        for name, target in (("rtsp", self._rtsp_loop), ("video-ping", self._video_ping_loop),
                             ("audio-ping", self._audio_ping_loop)):
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
        PLANES.discard(self)
        self.cancel_launch("host stopping")
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
        for t in self._threads:
            t.join(1.0)
        if self._rtsp_gate is not None:
            self._rtsp_gate.close()
        for s in (self._rtsp_sock, self.video_sock, self.audio_sock):
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
                     rikeyid: int, resume: bool) -> tuple[bool, str]:
        with self._lock:
            cur = self.launch
            if resume:
                if cur is None:
                    return False, "no app is running"
                if cur.client.fingerprint != client.fingerprint:
                    return False, "another client runs the app"
                self._end_stream(cur, "resumed by the client")
                cur.rikey, cur.rikeyid, cur.client_ip = rikey, rikeyid, ip
                self._reset_stream_state(cur)
                return True, ""
            if cur is not None:
                if cur.client.fingerprint != client.fingerprint:
                    return False, "another client runs the app"
                self._end_stream(cur, "relaunched by the client")
            w, h, fps = mode  # type: ignore[misc]
            self.launch = Launch(client, ip, w, h, fps, rikey, rikeyid)
            log.info("GameStream launch by %r from %s: %dx%d@%d", client.name, ip, w, h, fps)
            return True, ""

    def _reset_stream_state(self, launch: Launch) -> None:
        launch.generation += 1
        launch.video_ping = _ping_payload()
        launch.audio_ping = _ping_payload()
        launch.connect_data = secrets.randbits(32)
        launch.announce = None
        launch.playing = False
        launch.video_peer = launch.audio_peer = None
        launch.session = None
        launch.video = None
        launch.audio = None
        launch.audio_failed = False
        launch.client_gone = False
        launch.starting = False

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

    def cancel_launch(self, reason: str) -> None:
        with self._lock:
            launch = self.launch
            self.launch = None
        self._end_launch(launch, reason)

    def _end_launch(self, launch: Launch | None, reason: str) -> None:
        if launch is not None:
            if self.control is not None:
                self.control.terminate(launch, reason)
            self._end_stream(launch, reason)
            log.info("GameStream app ended: %s", reason)

    def _end_stream(self, launch: Launch, reason: str) -> None:
        launch.audio = None  # the session's audio ends with it
        s = launch.session
        if s is not None and not s.ended:
            s.stop(reason)
        launch.playing = False

    def stream_ended(self, launch: Launch, reason: str) -> None:
        """The client left (control disconnect / timeout): stop streaming, keep the app."""
        with self._lock:
            launch.client_gone = True
            if self.launch is launch:
                self._end_stream(launch, reason)

    def on_session_ended(self, session: Session, error: BaseException | None) -> None:
        """A session ended on the host side (operator, failure): tell its client."""
        launch = self.launch
        if launch is None or launch.session is not session or launch.client_gone:
            return
        reason = f"stream failed: {error}" if error else (session.pipeline.stop_reason if session.pipeline else "")
        self._end_stream(launch, reason or "ended on the host")
        if self.control is not None:
            self.control.terminate(launch, reason or "ended on the host")

    # -- RTSP ---------------------------------------------------------------------------------
    def _rtsp_loop(self) -> None:
        assert self._rtsp_sock is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._rtsp_sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            assert self._rtsp_gate is not None
            if not self._rtsp_gate.admit(conn, addr):
                conn.close()
                continue
            threading.Thread(target=self._rtsp_conn, args=(conn, addr), name="gamestream-rtsp-conn",
                             daemon=True).start()

    def _rtsp_conn(self, conn: socket.socket, addr: tuple) -> None:
        conn.settimeout(10.0)
        buf = b""
        try:
            while True:
                try:
                    parsed = wire.parse_rtsp(buf)
                except BadInput as exc:
                    self.count("rtsp_bad")
                    log.info("bad RTSP request from %s: %s", addr[0], exc)
                    conn.sendall(wire.rtsp_response("0", 400, "Bad Request"))
                    return
                if parsed is not None:
                    break
                chunk = conn.recv(8192)
                if not chunk:
                    if buf:
                        self.count("rtsp_bad")
                    return
                buf += chunk
            req, _used = parsed
            assert self._rtsp_gate is not None
            if not self._rtsp_gate.establish(addr, float(self.config.get("request_timeout_s", 5.0))):
                self.count("rtsp_refused_busy")
                return
            reply = self._rtsp_handle(req, addr[0], conn.getsockname()[0])
            conn.sendall(reply)
        except OSError:
            self.count("rtsp_io_errors")
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
            self._rtsp_gate.release(addr)  # type: ignore[union-attr]

    def _rtsp_handle(self, req: wire.RtspRequest, ip: str, local_ip: str) -> bytes:
        launch = self.launch
        cseq = req.cseq if req.cseq.isdigit() else "0"
        if launch is None or launch.client_ip != ip:
            self.count("rtsp_unexpected")
            return wire.rtsp_response(cseq, 454, "Session Not Found")
        m = req.method
        if m == "OPTIONS":
            return wire.rtsp_response(cseq, headers={"Public": "OPTIONS, DESCRIBE, SETUP, ANNOUNCE, PLAY"})
        if m == "DESCRIBE":
            return wire.rtsp_response(cseq, headers={"Content-Type": "application/sdp"}, body=self._describe_sdp())
        session_hdr = {"Session": "DEADBEEFCAFE;timeout = 90"}
        if m == "SETUP":
            t = req.target
            if "streamid=audio" in t:
                return wire.rtsp_response(cseq, headers={**session_hdr, "Transport": f"server_port={self.ports['audio']}",
                                                         "X-SS-Ping-Payload": launch.audio_ping.decode()})
            if "streamid=video" in t:
                return wire.rtsp_response(cseq, headers={**session_hdr, "Transport": f"server_port={self.ports['video']}",
                                                         "X-SS-Ping-Payload": launch.video_ping.decode()})
            if "streamid=control" in t:
                return wire.rtsp_response(cseq, headers={**session_hdr, "Transport": f"server_port={self.ports['control']}",
                                                         "X-SS-Connect-Data": str(launch.connect_data)})
            self.count("rtsp_bad")
            return wire.rtsp_response(cseq, 404, "Stream Not Found")
        if m == "ANNOUNCE":
            try:
                ann = wire.parse_announce(req.body)
            except BadInput as exc:
                self.count("rtsp_bad")
                log.info("bad ANNOUNCE from %s: %s", ip, exc)
                return wire.rtsp_response(cseq, 400, "Bad Request")
            if ann.codec != "h264" and not (self.codec_support() & (wire.SCM_HEVC if ann.codec == "hevc" else wire.SCM_AV1_MAIN8)):
                return wire.rtsp_response(cseq, 415, "Unsupported Media Type")
            launch.announce = ann
            log.info("GameStream ANNOUNCE: %dx%d@%d %s %d kbit/s packet %d, encryption %#x, features %#x",
                     ann.width, ann.height, ann.fps, ann.codec, ann.bitrate_kbps, ann.packet_size,
                     ann.encryption_enabled, ann.feature_flags)
            return wire.rtsp_response(cseq, headers=session_hdr)
        if m == "PLAY":
            if launch.announce is None:
                return wire.rtsp_response(cseq, 455, "Method Not Valid In This State")
            launch.playing = True
            launch.play_time = time.monotonic()
            if launch.video_peer is not None:
                self._start_session_async(launch)
            return wire.rtsp_response(cseq, headers=session_hdr)
        self.count("rtsp_bad")
        return wire.rtsp_response(cseq, 501, "Not Implemented")

    def _describe_sdp(self) -> bytes:
        supported = wire.SS_ENC_CONTROL_V2 | wire.SS_ENC_VIDEO | wire.SS_ENC_AUDIO
        requested = supported if self.config.get("require_encryption", False) else 0
        lines = [
            "v=0", "o=- 0 0 IN IP4 0.0.0.0", "s=punktfunk", "t=0 0",
            "a=x-ss-general.featureFlags:0",
            f"a=x-ss-general.encryptionSupported:{supported}",
            f"a=x-ss-general.encryptionRequested:{requested}",
        ]
        scm = self.codec_support()
        if scm & wire.SCM_HEVC:
            lines.append("a=fmtp:96 sprop-parameter-sets=AAAAAU")
        if scm & wire.SCM_AV1_MAIN8:
            lines.append("a=rtpmap:98 AV1/90000")
        lines.append("m=video 0 RTP/AVP 96")
        lines.append("m=audio 0 RTP/AVP 97")
        return ("\r\n".join(lines) + "\r\n").encode()

    # -- pings ---------------------------------------------------------------------------------
    def _ping_loop(self, sock: socket.socket, kind: str) -> None:
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                payload, _seq = wire.parse_ping(data)
            except BadInput:
                self.count("ping_bad")
                continue
            launch = self.launch
            if launch is None:
                self.count("ping_unexpected")
                continue
            expected = launch.video_ping if kind == "video" else launch.audio_ping
            if payload != expected and not (payload == b"PING" and addr[0] == launch.client_ip):
                self.count("ping_unexpected")
                continue
            if kind == "video":
                self._on_video_ping(launch, addr)
            else:
                self._on_audio_ping(launch, addr)

    def _video_ping_loop(self) -> None:
        assert self.video_sock is not None
        self._ping_loop(self.video_sock, "video")

    def _audio_ping_loop(self) -> None:
        assert self.audio_sock is not None
        self._ping_loop(self.audio_sock, "audio")

    def _on_video_ping(self, launch: Launch, addr: tuple[str, int]) -> None:
        peer = (addr[0], addr[1])
        if launch.video_peer != peer:
            launch.video_peer = peer
            if launch.video is not None:
                launch.video.peer = peer
        if launch.playing and launch.session is None and not launch.starting:
            self._start_session_async(launch)

    def _on_audio_ping(self, launch: Launch, addr: tuple[str, int]) -> None:
        peer = (addr[0], addr[1])
        launch.audio_peer = peer
        if launch.audio is not None:
            launch.audio.peer = peer
        elif (launch.playing and not launch.audio_failed and self.config.get("audio", True)
              and launch.announce is not None):
            self._start_audio(launch)

    # -- sessions ------------------------------------------------------------------------------
    def _start_session_async(self, launch: Launch) -> None:
        with self._lock:
            if launch.starting or launch.session is not None:
                return
            launch.starting = True
        threading.Thread(target=self._start_session, args=(launch, launch.generation), name="gamestream-start",
                         daemon=True).start()

    def _start_session(self, launch: Launch, generation: int) -> None:
        ann = launch.announce
        assert ann is not None and launch.video_peer is not None
        host = self.host
        try:
            spec = host.stream_spec(width=ann.width, height=ann.height, fps=ann.fps, codec=ann.codec,
                                    bitrate_kbps=ann.bitrate_kbps)
            cfg = self.config
            ctx = VideoContext(
                packet_size=ann.packet_size,
                fec_percent=int(cfg.get("fec_percent", 20)),
                min_fec_packets=ann.min_fec_packets,
                key=launch.rikey if ann.video_encrypted else None,
                sock=self.video_sock,
                peer=launch.video_peer,
                pacing=float(cfg.get("pacing", 0.5)),
                gso=bool(cfg.get("gso", True)),
            )
            # the stages the config names (a plugin's stage may replace or wrap the builtin)
            packetizer = host.pm.stages.create(
                "packetizer", cfg.get("video_packetizer", "gamestream"), spec,
                {**cfg.get("video_packetizer_options", {}), "context": ctx,
                 "fec_threads": int(cfg.get("fec_threads", 1))})
            try:
                sender = host.pm.stages.create("sender", cfg.get("video_sender", "gamestream"), spec,
                                               {**cfg.get("video_sender_options", {}), "context": ctx})
            except BaseException:
                packetizer.close()
                raise
            client = f"{launch.video_peer[0]}:{launch.video_peer[1]}"
            with self._lock:
                if self.launch is not launch or launch.generation != generation:
                    packetizer.close()
                    sender.close()
                    return
            session = host.start_session("gamestream", client, spec, packetizer, sender, GAMESTREAM_LAYOUT)
        except Exception as exc:  # noqa: BLE001 - report to the client, keep the host
            log.error("GameStream session could not start: %s", exc, exc_info=exc)
            self.count("session_start_failed")
            launch.starting = False
            if self.control is not None:
                self.control.terminate(launch, f"session failed: {exc}")
            return
        session.details.update({
            "client_name": launch.client.name,
            "packet_size": ann.packet_size,
            "video_encryption": ann.video_encrypted,
            "audio_encryption": ann.audio_encrypted,
            "control_encryption": "aes-gcm",
            "fec_percent": ctx.fec_percent,
            "min_fec_packets": ann.min_fec_packets,
        })
        # what Moonlight reports is measured from the start: no report is no loss (0, not absent)
        session.feedback.report(packets_dropped=0, frames_unrecoverable=0,
                                fec_recovered=0 if ctx.fec_percent > 0 else None)
        self.last_session = {"id": session.id, "client": session.client, **session.details,
                             "codec": spec.codec, "width": spec.width, "height": spec.height, "fps": spec.fps}
        with self._lock:
            launch.video = ctx
            launch.session = session
            launch.starting = False
            self.sessions_started += 1
            stale = self.launch is not launch or launch.generation != generation
        if stale:
            session.stop("the app ended while the session started")
            return
        if (launch.audio is None and not launch.audio_failed and launch.audio_peer is not None
                and self.config.get("audio", True)):
            self._start_audio(launch)

    def _start_audio(self, launch: Launch) -> None:
        """The session's audio pipeline, once the session runs and the client's audio ping is in."""
        from punktfunk_gamestream.audio import audio_stages

        with self._lock:
            ann, session = launch.announce, launch.session
            if (launch.audio is not None or launch.audio_failed or launch.audio_peer is None or ann is None
                    or session is None):
                return
            ctx = launch.audio = AudioContext(packet_ms=ann.audio_packet_ms,
                                              key=launch.rikey if ann.audio_encrypted else None,
                                              rikeyid=launch.rikeyid, sock=self.audio_sock, peer=launch.audio_peer)
        try:
            stages = audio_stages(self.host.pm.stages, self.config, session.spec, ctx)
            self.host.start_audio(session, *stages, on_end=self._audio_ended)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - video goes on without audio
            launch.audio_failed = True
            log.error("GameStream audio could not start (video continues without it): %s", exc)
            self.count("audio_start_failed")

    def _audio_ended(self, session: Session, error: BaseException | None) -> None:
        if error is not None:
            self.count("audio_failed")

    # -- control events ---------------------------------------------------------------------------
    def on_idr_request(self, launch: Launch) -> None:
        self.count("idr_requests")
        s = launch.session
        if s is not None and s.pipeline is not None:
            s.pipeline.request_keyframe()

    def on_fec_status(self, launch: Launch, st: wire.FecStatus) -> None:
        """Moonlight's per-block FEC report (0x5502) into the session's stats.

        Moonlight sends one for each FEC block it had to repair and for each it
        gave up on (docs/gamestream.md, "What Moonlight reports"): repaired, the
        packets missing before the repair point are lost and the missing data
        packets recovered; given up, every packet of the block that did not
        arrive is lost and the frame is unrecoverable.
        """
        s = launch.session
        if s is None:
            return
        if st.recovered:
            s.feedback.report(packets_dropped=st.missing_before_highest, fec_recovered=st.data_missing)
            return
        lost = st.total_data + st.total_parity - st.received_data - st.received_parity
        first = st.frame != launch.last_lost_frame
        launch.last_lost_frame = st.frame
        s.feedback.report(packets_dropped=max(0, lost), frames_unrecoverable=int(first))

    def aead_for(self, launch: Launch) -> AESGCM:
        return AESGCM(launch.rikey)


def _local_ipv4s() -> list[str]:
    out = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            out.add(info[4][0])
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

