"""The punktfunk/1 protocol plane on the host: TLS control server, pairing,
session negotiation, keepalive and client feedback.

One thread accepts TCP connections; each connection gets its own thread that
does the TLS handshake, the hello/welcome exchange and then either pairing or
one streaming session. The streaming session's pipeline runs on the core's
threads; the connection thread only handles control messages, keepalive and
feedback (a handful of messages per second).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from punktfunk_core.adaptive import MIN_REPORT_PACKETS, AdaptiveControl, LossReport, policies
from punktfunk_core.admission import ConnectionGate
from punktfunk_core.apps import DESKTOP_ID, DESKTOP_NAME, LaunchError, RunningApp
from punktfunk_core.host import HostBusy
from punktfunk_core.identity import PairedClients
from punktfunk_core.inputevents import FeedbackEvent, InputEvent
from punktfunk_core.inputsink import InputSink
from punktfunk_core.ipc import IpcError
from punktfunk_core.protocol import PIN_FROM_HOST, ProtocolPlane
from punktfunk_core.stages import CODECS
from punktfunk_core.tls import HandshakeFailed, TlsConnection, TlsServer

from punktfunk_native.audio import AUDIO_CHANNELS, audio_layout, audio_stages, layout_message
from punktfunk_native.control import ControlChannel
from punktfunk_native.datapath import FecParams, NativePacketizer, NativeSender, PacketOpener
from punktfunk_native.identity import Identity, control_tls, load_or_create_identity
from punktfunk_native.input import (
    MAX_FEEDBACK_EVENTS,
    MAX_INPUT_EVENTS,
    BatchTooLarge,
    MalformedInput,
    decode_batch,
    decode_event,
    feedback_message,
)
from punktfunk_native.layout import NATIVE_LAYOUT
from punktfunk_native.pairing import HostPairing
from punktfunk_native.wire import (
    DIR_CLIENT_TO_HOST,
    MAX_PACKET,
    PKT_PROBE,
    PROTOCOL_VERSION,
    PacketRejected,
    ProtocolError,
    b64d,
    b64e,
    get_int,
    session_keys,
)

log = logging.getLogger("punktfunk.native")

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0  # before a session starts
PROBE_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 5.0
#: feedback events waiting for the control thread; beyond it the oldest go (a newer rumble supersedes)
FEEDBACK_QUEUE = 256
#: the one answer to every failed pairing confirmation: which failure it was would tell a guesser about the PIN
PAIRING_FAILED = ("wrong PIN, or the pairing window closed before pairing finished "
                  "(check the PIN given to `punktfunk native pin` on the host)")

@dataclass(eq=False, slots=True)
class PairingWindow:
    """One `punktfunk native pin` window: its PIN, when it ends, the attempts started in it."""

    pin: str
    expires: float
    attempts: int = 0


@dataclass(eq=False, slots=True)
class _SessionApp:
    """The app a session asked for: what runs (None: the plain Desktop, nothing to launch),
    whether this session started it (it ends only its own), and the session to end when the
    app exits by itself."""

    name: str
    running: RunningApp | None
    owned: bool
    session: Any = None
    exited: str = ""


@dataclass(eq=False, slots=True)
class _SessionInput:
    """A session's input path: its sink and the client whose input it takes."""

    sink: InputSink | None  # None: the session ended before its input could open
    client_fp: str
    #: rumble … from the backend (its thread appends), sent by the control thread
    feedback: deque[FeedbackEvent]
    malformed_logged: int = 0


class Control(ControlChannel):
    """The host's end of a TLS control connection."""

    def __init__(self, sock: TlsConnection) -> None:
        super().__init__(sock, SEND_TIMEOUT_S)

    def error(self, code: str, message: str) -> None:
        try:
            self.send({"type": "error", "code": code, "message": message})
        except OSError:
            pass


class NativePlane(ProtocolPlane):
    name = "native"
    pin_from = PIN_FROM_HOST
    counter_names = ("connections", "tls_failed", "tls_unpaired", "protocol_errors", "pairing_ok", "pairing_failed",
                     "sessions", "sessions_timed_out", "probes_rejected", "refused_busy", "unauthenticated_evicted",
                     "unauthenticated_timed_out", "input_messages", "input_malformed", "input_oversized",
                     "input_view_only", "feedback_sent", "audio_sessions", "audio_start_failed",
                     "apps_launched", "launch_failed")

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.dir = host.paths.config / "native"
        self.port = 0
        self.identity: Identity | None = None
        self._tls: TlsServer | None = None
        self._lsock: socket.socket | None = None
        self._stop = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._gate: ConnectionGate | None = None
        self._pair_lock = threading.Lock()
        self._window: PairingWindow | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        self.identity = load_or_create_identity(self.dir, "host", self.host.hostname)
        self.paired = PairedClients(self.dir / "paired-clients.json")
        self._tls = control_tls(self.identity)
        bind = cfg.get("bind", "0.0.0.0")
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, int(cfg.get("port", 47992))))
        except OSError as exc:
            s.close()
            raise RuntimeError(f"cannot listen on {bind}:{cfg.get('port')} ({exc.strerror}); "
                               f"set native.port to a free port") from None
        s.listen(16)
        s.settimeout(0.2)
        self._lsock = s
        self._gate = ConnectionGate(
            "unauthenticated", max_pending=int(cfg.get("max_unauthenticated", 16)),
            max_pending_per_source=int(cfg.get("unauthenticated_per_source", 4)),
            pending_timeout_s=float(cfg.get("unauthenticated_timeout_s", 10.0)),
            max_established=int(cfg.get("max_connections", 16)), count=self.count)
        self.port = s.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="native-accept", daemon=True)
        self._accept_thread.start()
        log.info("native protocol listening on %s:%d (certificate %s…)", bind, self.port,
                 self.identity.fingerprint[:16])

    def stop(self) -> None:
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(0.5)
        if self._gate is not None:
            self._gate.close()
        if self._lsock is not None:
            try:
                self._lsock.close()
            except OSError:
                pass

    def status(self) -> dict[str, Any]:
        pairing = self.pairing_status()
        return {
            "version": PROTOCOL_VERSION,
            "port": self.port,
            "bind": self.config.get("bind", "0.0.0.0"),
            "fingerprint": self.identity.fingerprint if self.identity else "",
            "pairing_open": pairing["open"],
            "pairing_expires_in_s": pairing["expires_in_s"],
            "paired_clients": len(self.paired) if self.paired else 0,
            "connections": self._gate.snapshot() if self._gate else {},
            "counters": self.counters.snapshot(),
        }

    # -- pairing window ------------------------------------------------------------
    def _pairing_open_locked(self) -> bool:
        """A window is open while it lasts and has attempts left (attempts still in flight may finish)."""
        w = self._window
        if w is not None and time.monotonic() >= w.expires:
            self._window = w = None
        return w is not None and w.attempts < int(self.config.get("pairing_attempts", 5))

    def open_pairing(self, pin: Any, seconds: Any = 120) -> dict[str, Any]:
        pin = str(pin).strip() if isinstance(pin, (str, int)) and not isinstance(pin, bool) else ""
        if not (pin.isdigit() and pin.isascii() and 4 <= len(pin) <= 8):
            raise IpcError(400, "the PIN must be 4 to 8 digits, e.g. `punktfunk native pin 4821`")
        try:
            secs = float(seconds)
        except (TypeError, ValueError):
            raise IpcError(400, "seconds must be a number") from None
        if not 5 <= secs <= 3600:
            raise IpcError(400, "seconds must be between 5 and 3600")
        with self._pair_lock:
            self._window = PairingWindow(pin, time.monotonic() + secs)
        log.info("pairing open for %.0f s", secs)
        return {"pairing_open": True, "expires_in_s": secs, "port": self.port,
                "host_fingerprint": self.identity.fingerprint if self.identity else ""}

    def pairing_status(self) -> dict[str, Any]:
        with self._pair_lock:
            open_ = self._pairing_open_locked()
            left = max(0.0, self._window.expires - time.monotonic()) if open_ and self._window else 0.0
        return {"open": open_, "expires_in_s": round(left, 1)}

    # -- connections ---------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._lsock is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._lsock.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            # control messages are small and latency-bound (pongs, input): never held back by Nagle
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self._gate is not None
            if not self._gate.admit(conn, addr):  # pending until a paired certificate shows (see _converse)
                conn.close()
                continue
            self.count("connections")
            threading.Thread(target=self._serve, args=(conn, addr), name=f"native-conn-{addr[0]}:{addr[1]}",
                             daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple) -> None:
        try:
            assert self._tls is not None
            try:
                tls = self._tls.accept(conn, HANDSHAKE_TIMEOUT_S)
            except HandshakeFailed as exc:
                self.count("tls_failed")
                log.info("native: TLS handshake with %s failed: %s", addr[0], exc)
                conn.close()
                return
            try:
                self._converse(Control(tls), addr)
            except (ProtocolError, ValueError) as exc:
                self.count("protocol_errors")
                log.info("native: client %s sent bad data: %s", addr[0], exc)
                Control(tls).error("protocol_error", str(exc)[:200])
            except (TimeoutError, EOFError, OSError) as exc:
                log.debug("native: connection %s closed: %s", addr[0], exc)
            except Exception:  # noqa: BLE001 - a client must never take the plane down
                log.exception("native: connection %s failed", addr[0])
            finally:
                try:
                    tls.close()
                except OSError:
                    pass
        finally:
            self._gate.release(addr)  # type: ignore[union-attr]

    def _converse(self, ctl: Control, addr: tuple) -> None:
        client_fp = ctl.sock.peer_fingerprint
        hello = ctl.recv(IDLE_TIMEOUT_S)
        if hello["type"] != "hello":
            raise ProtocolError(f"expected hello, got {hello['type']!r}")
        versions = hello.get("versions")
        if not isinstance(versions, list) or PROTOCOL_VERSION not in versions:
            ctl.error("unsupported_version",
                      f"this host speaks {PROTOCOL_VERSION} only; the client offered {versions!r}")
            return
        assert self.paired is not None and self.identity is not None
        paired = client_fp is not None and self.paired.is_paired(client_fp)
        if client_fp is not None and not paired:  # unknown or unpaired: treated like no certificate
            self.count("tls_unpaired")
        if paired and not self._gate.establish(addr):  # type: ignore[union-attr]  # leaves the unauthenticated limits
            self.count("refused_busy")
            ctl.error("busy", f"the host already serves {self.config.get('max_connections', 16)} paired connections "
                              "(native.max_connections)")
            return
        with self._pair_lock:
            pairing_open = self._pairing_open_locked()
        ctl.send({"type": "welcome", "version": PROTOCOL_VERSION, "host_name": self.host.hostname,
                  "host_fingerprint": self.identity.fingerprint, "paired": paired, "pairing_open": pairing_open})
        while not self._stop.is_set():
            msg = ctl.recv(IDLE_TIMEOUT_S)
            t = msg["type"]
            if t == "ping":
                ctl.send({"type": "pong", "id": msg.get("id"), "t_us": msg.get("t_us")})
            elif t == "pair_start":
                self._pair(ctl, msg)
                return
            elif t == "app_list":
                if not paired:
                    ctl.error("not_paired", "only a paired client may list the host's apps")
                    return
                ctl.send({"type": "apps", **self.host.apps.status()})
            elif t == "session_request":
                if not paired:
                    ctl.error("not_paired", "this client is not paired with the host: run `punktfunk native pin NNNN` "
                                            "on the host and connect with --pin NNNN")
                    return
                self._session(ctl, msg, client_fp or "", addr)
                return
            elif t == "bye":
                return
            else:
                raise ProtocolError(f"unexpected message {t!r} before a session")

    # -- pairing ----------------------------------------------------------------------
    def _pair(self, ctl: Control, msg: dict[str, Any]) -> None:
        limit = int(self.config.get("pairing_attempts", 5))
        with self._pair_lock:
            window = self._window if self._pairing_open_locked() else None
            if window is not None:
                window.attempts += 1  # counted as it starts, so parallel attempts share the limit
        if window is None:
            self.count("pairing_failed")
            ctl.error("pairing_closed", "pairing is not open on the host: run `punktfunk native pin NNNN` there first")
            return
        if window.attempts == limit:
            log.warning("native: %d pairing attempts started; the pairing window takes no more", limit)
        exchange = HostPairing(window.pin, msg)
        ctl.send(exchange.reply())
        assert self.identity is not None and self.paired is not None
        pin_ok = exchange.client_knows_pin(ctl.recv(IDLE_TIMEOUT_S), self.identity.fingerprint)
        name, client_fp = exchange.name, exchange.client_fp
        with self._pair_lock:
            current = self._window is window and time.monotonic() < window.expires
            if pin_ok and current:
                self._window = None  # one device per PIN
        if not (pin_ok and current):
            # the same answer whatever failed: "window gone" for a right PIN would confirm the guess
            self.count("pairing_failed")
            log.warning("native: pairing attempt failed: %s",
                        "wrong PIN" if not pin_ok else "its pairing window closed or was replaced meanwhile")
            ctl.error("wrong_pin", PAIRING_FAILED)
            return
        self.paired.add(exchange.cert_der, name)
        self.count("pairing_ok")
        log.info("native: paired client %r (%s…)", name, client_fp[:16])
        ctl.send(exchange.ok(self.host.hostname))

    # -- sessions ---------------------------------------------------------------------
    def _session(self, ctl: Control, req: dict[str, Any], client_fp: str, addr: tuple) -> None:
        cfg = self.config
        limit = int(self.host.config.get("host", {}).get("max_sessions", 4))
        if len(self.host.sessions) >= limit:  # refuse before any key exchange or UDP port
            self.count("refused_busy")
            ctl.error("busy", f"the host already runs {len(self.host.sessions)} sessions (host.max_sessions = {limit})")
            return
        codec = req.get("codec", "h264")
        if codec not in CODECS:
            ctl.error("bad_request", f"codec must be one of {', '.join(CODECS)}")
            return
        try:
            width = get_int(req, "width", 16, 8192, 1280)
            height = get_int(req, "height", 16, 8192, 720)
            fps = get_int(req, "fps", 1, 480, 60)
            bitrate = min(get_int(req, "bitrate_kbps", 100, 2_000_000, 10_000),
                          int(cfg.get("max_bitrate_kbps", 200_000)))
            fec_percent = get_int(req, "fec_percent", 0, 100, int(cfg.get("fec_percent", 20)))
            audio_channels = get_int(req, "audio_channels", 0, 8, 0)
            if audio_channels and audio_channels not in AUDIO_CHANNELS:
                raise ProtocolError(f"field 'audio_channels' must be 0 (no audio) or one of {AUDIO_CHANNELS}")
            if not cfg.get("audio", True):
                audio_channels = 0  # the host streams no audio: session_accept has no "audio"
            spec = self.host.stream_spec(width=width, height=height, fps=fps, codec=codec, bitrate_kbps=bitrate)
        except (ProtocolError, ValueError) as exc:
            ctl.error("bad_request", f"cannot stream that: {exc}")
            return
        app_name = req.get("app", DESKTOP_NAME)
        if not isinstance(app_name, str) or not app_name:
            raise ProtocolError("field 'app' must be an app name (see app_list)")
        app = self._launch(ctl, app_name, client_fp)
        if app is None:
            return
        try:
            self._keyed_session(ctl, req, client_fp, addr, spec, fec_percent, audio_channels, app)
        finally:
            self._end_app(app)

    def _launch(self, ctl: Control, name: str, client_fp: str) -> _SessionApp | None:
        """Start the app the client asked for through host.apps (prep steps, its own process
        group); None after telling the client why not (the launcher logged it)."""
        apps = self.host.apps
        try:
            app = apps.find(name)
        except LookupError:
            ctl.error("unknown_app", f"the host has no app {name!r}; its apps: "
                                     + ", ".join(repr(a.name) for a in apps.apps))
            return None
        if app.id == DESKTOP_ID and not app.cmd and not app.prep:
            # the screen as it is: nothing to start, and the launcher's one app slot stays free
            return _SessionApp(app.name, None, False)
        before = apps.running
        holder: list[_SessionApp] = []

        def exited(running: RunningApp, code: int | None) -> None:
            why = f"the app {running.app.name!r} exited ({code})"
            if holder and holder[0].session is not None:
                holder[0].session.stop(why)
            elif holder:
                holder[0].exited = why

        def quit_by_operator(running: RunningApp, reason: str) -> None:
            # `punktfunk apps quit` / the console: the stream that runs the app ends with it
            if holder and holder[0].session is not None:
                holder[0].session.stop(reason or f"the operator quit {running.app.name!r}")
        try:
            running = apps.launch(name, on_exit=exited, on_quit=quit_by_operator, protocol=self.name,
                                  client=self._client_label(client_fp))
        except LaunchError as exc:
            self.count("launch_failed")
            ctl.error("launch_failed", str(exc))
            return None
        owned = running is not before
        if owned:
            self.count("apps_launched")
        holder.append(_SessionApp(running.app.name, running, owned))
        return holder[0]

    def _client_label(self, client_fp: str) -> str:
        """How the operator sees who launched an app: the paired client's name, else its fingerprint."""
        client = self.paired.get(client_fp) if self.paired is not None else None
        return client.name if client is not None and client.name else client_fp[:16]

    def _end_app(self, app: _SessionApp) -> None:
        """The session is over: end the app it started (group, undo), unless it ended already."""
        if app.owned and app.running is not None and self.host.apps.running is app.running:
            self.host.apps.quit()

    def _keyed_session(self, ctl: Control, req: dict[str, Any], client_fp: str, addr: tuple, spec: Any,
                       fec_percent: int, audio_channels: int, app: _SessionApp) -> None:
        cfg = self.config
        client_pub = b64d(req.get("client_pub"), "client_pub", 64)
        client_nonce = b64d(req.get("client_nonce"), "client_nonce", 64)
        if len(client_pub) != 32 or len(client_nonce) != 16:
            raise ProtocolError("client_pub must be 32 bytes and client_nonce 16 bytes")
        priv = X25519PrivateKey.generate()
        try:
            shared = priv.exchange(X25519PublicKey.from_public_bytes(client_pub))
        except ValueError as exc:
            raise ProtocolError(f"bad client_pub: {exc}") from None
        host_nonce = os.urandom(16)
        assert self.identity is not None
        k_h2c, k_c2h = session_keys(shared, client_nonce, host_nonce, self.identity.fingerprint, client_fp)
        # until the client's first report (0.5 s in) the link is unknown: today's fixed share
        fec_policy, rate_policy = policies(cfg, fixed_percent=fec_percent, start_fixed=True)
        if "fec_percent" in req:  # the client asked for a share: it gets that share, fixed
            fec_policy = replace(fec_policy, mode="fixed")
        control = AdaptiveControl(fec_policy, rate_policy, spec.bitrate_kbps)
        fec = FecParams(fec_percent, int(cfg.get("fec_min_parity", 2)), int(cfg.get("shard_bytes", 1200)),
                        int(cfg.get("target_shards", 64)),
                        min(int(cfg.get("min_shard_bytes", 64)), int(cfg.get("shard_bytes", 1200))))
        family = ctl.sock.family
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((ctl.sock.getsockname()[0], int(cfg.get("data_port", 0))))
        except OSError as exc:
            udp.close()
            ctl.error("busy", f"no UDP port for the session: {exc.strerror}")
            return
        handed_over = False
        try:
            interval = float(cfg.get("keepalive_interval_s", 0.5))
            timeout = float(cfg.get("keepalive_timeout_s", 3.0))
            ctl.send({
                "type": "session_accept", "udp_port": udp.getsockname()[1],
                "host_pub": b64e(priv.public_key().public_bytes_raw()), "host_nonce": b64e(host_nonce),
                "width": spec.width, "height": spec.height, "fps": spec.fps, "codec": spec.codec,
                "bitrate_kbps": spec.bitrate_kbps, "fec_percent": fec.fec_percent, "fec_min_parity": fec.min_parity,
                "fec": fec_policy.mode, "rate_control": rate_policy.mode,
                "shard_bytes": fec.max_shard, "cipher": "AES-128-GCM",
                "keepalive_interval_ms": int(interval * 1000), "keepalive_timeout_ms": int(timeout * 1000),
                "report_interval_ms": int(NATIVE_LAYOUT.window_s * 1000),
                **({"audio": layout_message(audio_layout(audio_channels))} if audio_channels else {}),
            })
            client_udp = self._await_probe(udp, k_c2h)
            if client_udp is None:
                ctl.error("probe_timeout", f"no valid UDP probe from the client within {PROBE_TIMEOUT_S:.0f} s "
                                           "(is UDP blocked between client and host?)")
                return
            packetizer = NativePacketizer(k_h2c, fec, parity_for=control.fec.parity_for)
            sender = NativeSender(udp, client_udp, spec.fps, gso=bool(cfg.get("gso", True)),
                                  pace_percent=int(cfg.get("pace_percent", 50)))
            handed_over = True  # the session owns packetizer and sender (and the socket) now
            try:
                session = self.host.start_session("native", f"{client_udp[0]}:{client_udp[1]}", spec, packetizer,
                                                  sender, NATIVE_LAYOUT)
            except HostBusy as exc:
                self.count("refused_busy")
                ctl.error("busy", exc.message)
                return
            except Exception as exc:  # noqa: BLE001 - a stage failing to build refuses this session only
                log.error("native: session for %s failed to start: %s", addr[0], exc)
                ctl.error("session_failed", f"the host could not start the stream: {exc}")
                return
        finally:
            if not handed_over:
                udp.close()
        self.count("sessions")
        control.set_bitrate = session.set_bitrate
        session.adaptive = control
        app.session = session
        if app.exited:  # it exited while the session started
            session.stop(app.exited)
        session.details["app"] = app.name
        session.details.update({"cipher": "AES-128-GCM", "fec_percent": fec.fec_percent, "fec": fec_policy.mode,
                                "rate_control": rate_policy.mode, "gso": sender.gso,
                                "client_fingerprint": client_fp[:16], "control": f"{addr[0]}:{addr[1]}"})
        started: dict[str, Any] = {"type": "session_started", "session_id": session.id,
                                   "encoder": session.encoder_backend, "gso": sender.gso,
                                   "app": app.name}
        if audio_channels:
            audio_error = self._start_audio(session, audio_channels, k_h2c, fec, udp, client_udp)
            if audio_error:
                started["audio_error"] = audio_error
        ctl.send(started)
        # the session's sink (absolute positions land on the desktop part the capture shows);
        # the session closes it after its last stats window, which carries its input figures
        feedback: deque[FeedbackEvent] = deque(maxlen=FEEDBACK_QUEUE)  # append: never blocks the backend
        sink = self.host.start_input(session, feedback.append)
        try:
            self._control_loop(ctl, session, interval, timeout, _SessionInput(sink, client_fp, feedback))
        finally:
            if sink is not None:
                session.details["input"] = sink.counters()

    def _start_audio(self, session: Any, channels: int, key: bytes, fec: FecParams, udp: socket.socket,
                     peer: tuple) -> str:
        """The session's audio pipeline on its datapath; "" when it runs, else why not
        (one log line; the video streams on without sound)."""
        try:
            stages = audio_stages(self.host.pm.stages, self.config, session.spec, channels, key, fec, udp, peer)
            self.host.start_audio(session, *stages)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - audio never takes the video down
            self.count("audio_start_failed")
            log.warning("native: session %s: no audio: %s", session.id, exc)
            return f"the host could not start audio: {exc}"
        self.count("audio_sessions")
        session.details["audio_channels"] = channels
        return ""

    def _input(self, inp: _SessionInput, msg: dict[str, Any], received_ns: int) -> None:
        """One input message of the session's own client into its sink; what cannot be
        taken is counted and dropped (never raised: input never ends a stream)."""
        self.count("input_messages")
        assert self.paired is not None
        client = self.paired.get(inp.client_fp)
        if client is None or client.view_only:  # looked up per message: a change applies at once
            self.count("input_view_only")
            return
        batch = msg.get("batch")
        if isinstance(batch, bytes):  # a binary batch (the reference client's way)
            if inp.sink is None:
                self.count("input_no_session")
                return
            try:
                decoded, bad = decode_batch(batch)
            except BatchTooLarge:
                self.count("input_oversized")
                return
            for reason in bad:
                self._malformed_input(inp, reason)
        else:
            decoded = self._json_input(inp, msg.get("events"))
        if decoded and inp.sink is not None:
            inp.sink.submit_many(decoded, received_ns)  # one batch, one flush of the backend

    def _json_input(self, inp: _SessionInput, events: Any) -> list[InputEvent]:
        """The events of a JSON ``input`` message ([] when it is dropped whole, counted)."""
        if not isinstance(events, list) or not events:
            self.count("input_malformed")
            return []
        if len(events) > MAX_INPUT_EVENTS:
            self.count("input_oversized")
            return []
        if inp.sink is None:
            self.count("input_no_session")
            return []
        decoded = []
        for item in events:
            try:
                decoded.append(decode_event(item))
            except MalformedInput as exc:
                self._malformed_input(inp, str(exc))
        return decoded

    def _malformed_input(self, inp: _SessionInput, reason: str) -> None:
        self.count("input_malformed")
        if inp.malformed_logged < 3:
            inp.malformed_logged += 1
            log.info("native: session input: dropped a malformed event: %s", reason)

    def _send_feedback(self, ctl: Control, queue: deque[FeedbackEvent]) -> None:
        """What the input backend has for the client, on the control connection."""
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_FEEDBACK_EVENTS))]
            ctl.send(feedback_message(batch))
            self.count("feedback_sent", len(batch))

    def _await_probe(self, udp: socket.socket, key: bytes) -> tuple | None:
        opener = PacketOpener(key, DIR_CLIENT_TO_HOST)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            udp.settimeout(min(left, 0.2))
            try:
                pkt, src = udp.recvfrom(MAX_PACKET + 64)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                continue
            try:
                hdr, _ = opener.open(pkt)
            except PacketRejected:
                self.count("probes_rejected")
                continue
            if hdr.type == PKT_PROBE:
                return src
        return None

    def _control_loop(self, ctl: Control, session: Any, interval: float, timeout: float,
                      inp: _SessionInput) -> None:
        last_rx = time.monotonic()
        next_ping = last_rx
        pings: dict[int, float] = {}
        ping_id = 0
        rtt_us: float | None = None
        reason = ""
        session.feedback.expect_last_report()  # our client reports once more when the session ends
        try:
            while True:
                now = time.monotonic()
                if self._stop.is_set():
                    reason = "host stopping"
                    break
                if session.ending:
                    reason = session.pipeline.stop_reason if session.pipeline else "ended"
                    if session.error is not None:
                        reason = f"stream failed: {session.error}"
                    reason = reason or "ended"
                    break
                if now - last_rx > timeout:
                    reason = f"client silent for {timeout:g} s (keepalive timeout)"
                    self.count("sessions_timed_out")
                    log.warning("native: session %s: %s", session.id, reason)
                    break
                if now >= next_ping:
                    ping_id += 1
                    pings[ping_id] = now
                    if len(pings) > 64:
                        pings.pop(min(pings))
                    ctl.send({"type": "ping", "id": ping_id, "t_us": int(now * 1e6)})
                    next_ping = now + interval
                    if inp.sink is not None:
                        session.details["input"] = inp.sink.counters()  # live in `punktfunk status`
                if inp.feedback:
                    self._send_feedback(ctl, inp.feedback)
                try:
                    msgs = ctl.poll(0.05)
                except EOFError:
                    reason = "client disconnected"
                    break
                received_ns = time.perf_counter_ns()
                for msg in msgs:
                    last_rx = time.monotonic()
                    t = msg["type"]
                    if t == "input":
                        self._input(inp, msg, received_ns)
                    elif t == "pong":
                        pong_id = msg.get("id")
                        sent = pings.pop(pong_id, None) if isinstance(pong_id, int) else None
                        if sent is not None:
                            sample = (last_rx - sent) * 1e6
                            rtt_us = sample if rtt_us is None else 0.875 * rtt_us + 0.125 * sample
                            session.feedback.report(rtt_us=rtt_us)
                            if session.adaptive is not None:
                                session.adaptive.rtt_us = rtt_us
                    elif t == "ping":
                        ctl.send({"type": "pong", "id": msg.get("id"), "t_us": msg.get("t_us")})
                    elif t == "report":
                        unit = self._feedback(session, msg)
                        if unit is not None:  # from this unit on the parity was chosen knowing the report
                            ctl.send({"type": "report_applied", "from_unit": unit})
                    elif t == "keyframe_request":
                        # one IDR per loss burst: the client asks after every frame it lost
                        control = session.adaptive
                        if control is None or control.keyframe():
                            session.request_keyframe()
                        if control is not None:  # live in `punktfunk status`
                            session.details["keyframe_requests"] = {"forced": control.keyframes.forced,
                                                                    "coalesced": control.keyframes.coalesced}
                    elif t == "set_bitrate":
                        kbps = min(get_int(msg, "bitrate_kbps", 100, 2_000_000),
                                   int(self.config.get("max_bitrate_kbps", 200_000)))
                        if session.adaptive is not None:  # it is the ceiling adaptive control probes up to
                            kbps = session.adaptive.client_asks(kbps)
                        session.set_bitrate(kbps)
                        ctl.send({"type": "bitrate_changed", "bitrate_kbps": kbps})
                    elif t == "bye":
                        r = msg.get("reason")
                        reason = f"client said bye ({r})" if isinstance(r, str) and r else "client said bye"
                        return
                    else:
                        self.count("protocol_errors")  # unknown messages are ignored (newer clients)
        finally:
            session.stop(reason or "control connection closed")
            if reason and not reason.startswith("client"):
                # the host ends it: tell the client, which answers with its last report
                try:
                    ctl.sock.settimeout(0.5)
                    ctl.send({"type": "bye", "reason": reason})
                    self._await_last_report(ctl, session)
                except (OSError, EOFError, ProtocolError, ValueError):
                    pass
            session.feedback.last_report_in()  # in, or never coming
            session.wait(1.0)

    #: after the host's bye, how long it waits for the client's last report
    LAST_REPORT_GRACE_S = 1.0

    def _await_last_report(self, ctl: Control, session: Any) -> None:
        """After the host's bye: take the client's reports until its last one
        (or its bye, or LAST_REPORT_GRACE_S)."""
        deadline = time.monotonic() + self.LAST_REPORT_GRACE_S
        while time.monotonic() < deadline:
            for msg in ctl.poll(0.05):
                if msg["type"] == "report":
                    self._feedback(session, msg)
                    if msg.get("last") is True:
                        return
                elif msg["type"] == "bye":
                    return

    @staticmethod
    def _feedback(session: Any, msg: dict[str, Any]) -> int | None:
        """A client report into the session's feedback (see docs/protocol-native.md); the first
        video unit (``au_seq``) whose parity was chosen knowing it, when FEC took it in."""
        big = 1 << 40
        kw: dict[str, Any] = {}
        for src, dst in (("packets_lost", "packets_dropped"), ("shards_recovered", "fec_recovered"),
                         ("frames_unrecoverable", "frames_unrecoverable"), ("frames_decoded", "frames_delivered")):
            if src in msg:
                kw[dst] = get_int(msg, src, 0, big)
        for src, dst, top in (("decode_us", "decode_us", 1e9), ("span_us", "span_us", 3.6e9)):
            if src in msg:
                v = msg[src]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < top:
                    raise ProtocolError(f"{src} must be a number of microseconds")
                kw[dst] = float(v)
        if kw:
            session.feedback.report(**kw)
        control = session.adaptive
        unit = None
        if control is not None and "packets_expected" in msg and not msg.get("last"):
            runs = get_int(msg, "loss_runs", 0, big) if "loss_runs" in msg else None
            report = LossReport(kw.get("span_us", 0.0) / 1e6, get_int(msg, "packets_expected", 0, big),
                                kw.get("packets_dropped", 0), runs, kw.get("frames_unrecoverable", 0))
            before = control.rate.target_kbps
            control.observe(report)
            if report.packets_expected >= MIN_REPORT_PACKETS and control.fec.informed_from is not None:
                unit = control.fec.informed_from & 0xFFFFFFFF  # one FEC block per unit: the block count is au_seq
            if control.rate.target_kbps != before:
                log.info("native: session %s: bitrate %d → %d kbps (%s; loss %.2f %%, parity %.1f %%)", session.id,
                         before, control.rate.target_kbps, control.rate.last_reason,
                         100 * control.fec.loss_estimate, control.fec.percent)
        if msg.get("last") is True:
            session.feedback.last_report_in()
        return unit
