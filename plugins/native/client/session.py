"""The client's session: connect, pair, negotiate, run the control loop, report.

Pairs with a PIN when needed (:class:`punktfunk_native.pairing.ClientPairing`:
SPAKE2 inside TLS 1.3, then both sides pin the other's certificate),
negotiates a session (X25519 keys, the UDP port), runs the receive thread
(:mod:`punktfunk_native.client.receive`) and the control loop: keepalive
pings, keyframe requests, one report per window of what it lost, recovered
and decoded, and a last report when the session ends.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from punktfunk_core.inputevents import FeedbackEvent, InputEvent
from punktfunk_core.inputsink import merged
from punktfunk_core.paths import Paths, ensure_private_dir
from punktfunk_core.stats import percentile

from punktfunk_native.client.audio import AudioReceiver
from punktfunk_native.client.impair import LinkImpairment, LossPattern
from punktfunk_native.client.inputscript import ScriptedEvent, ScriptPlayer
from punktfunk_native.client.photon import ClickToPhoton
from punktfunk_native.client.receive import AV_CODEC, Decoder, DecoderUnavailable, Stats, StreamReceiver
from punktfunk_native.client.terminal import Terminal
from punktfunk_native.control import ControlChannel
from punktfunk_native.datapath import NativeReceiver
from punktfunk_native.identity import Identity, KnownHosts, client_context, load_or_create_identity
from punktfunk_native.input import MAX_INPUT_EVENTS, MalformedInput, decode_feedback, encode_batch, encode_feedback
from punktfunk_native.pairing import BadSpakeMessage, ClientPairing
from punktfunk_native.wire import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ProtocolError,
    b64d,
    b64e,
    fingerprint,
    get_int,
    session_keys,
)

DEFAULT_PORT = 47992
NO_VIDEO_TIMEOUT_S = 5.0
#: feedback events (rumble …) the summary keeps; later ones are only counted
MAX_FEEDBACK_KEPT = 100
#: queued input goes out at most once per tick, as one batch: at 1000 events/s a few per message
#: instead of one, and a lone event (nothing sent within a tick) still leaves at once
INPUT_TICK_S = 0.002
#: the first report goes out this soon: the host's adaptive FEC learns the link from it
FIRST_REPORT_S = 0.5

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PAIRING = 3
EXIT_CONNECT = 4

UNKNOWN_CLIENT = ("the host does not recognise this client (it was unpaired?); pair again with --pin NNNN "
                  "after `punktfunk native pin NNNN` on the host")


class ClientError(Exception):
    """A failure the user can act on; ``exit_code`` is what the CLI returns."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PairingFailed(ClientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_PAIRING)


def _refused_certificate(exc: BaseException) -> bool:
    """TLS 1.3: the host checks our certificate after our side of the handshake,
    so its verdict arrives as an alert on the first read or write."""
    text = str(exc).lower()
    return "unknown ca" in text or "certificate" in text


class HostControl(ControlChannel):
    """The client's end of the control connection: sends are thread-safe, and
    failures and the host's error messages become :class:`ClientError`."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        super().__init__(sock)
        self.lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        with self.lock:
            try:
                super().send(msg)
            except (ssl.SSLError, OSError) as exc:
                self._explain(exc)

    def _explain(self, exc: BaseException) -> None:
        """Turn a failed write into the host's verdict when it sent one."""
        try:
            self.sock.settimeout(1.0)
            self.sock.recv(1)
        except ssl.SSLError as alert:
            if _refused_certificate(alert):
                raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING) from None
        except (OSError, ValueError):
            pass
        raise ClientError(f"control connection failed: {exc}", EXIT_CONNECT) from None

    def recv(self, timeout: float, expect: str | None = None) -> dict[str, Any]:  # type: ignore[override]
        try:
            msg = super().recv(timeout)
        except TimeoutError:
            raise ClientError("the host did not answer in time", EXIT_CONNECT) from None
        except EOFError:
            raise ClientError("the host closed the connection", EXIT_CONNECT) from None
        except ssl.SSLError as exc:
            if _refused_certificate(exc):
                raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING) from None
            raise ClientError(f"TLS error: {exc}", EXIT_CONNECT) from None
        except OSError as exc:
            raise ClientError(f"control connection failed: {exc}", EXIT_CONNECT) from None
        if msg["type"] == "error":
            code = str(msg.get("code", "error"))
            text = str(msg.get("message", "the host refused"))
            if code in ("wrong_pin", "pairing_closed"):
                raise PairingFailed(text)
            raise ClientError(f"host refused ({code}): {text}")
        if expect is not None and msg["type"] != expect:
            raise ClientError(f"protocol error: expected {expect}, got {msg['type']}")
        return msg

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class ClientOptions:
    host: str
    port: int = DEFAULT_PORT
    pin: str | None = None
    seconds: float = 0.0
    width: int = 1280
    height: int = 720
    fps: int = 60
    codec: str = "h264"
    bitrate_kbps: int = 10_000
    fec_percent: int | None = None
    loss: float = 0.0
    loss_seed: int | None = None
    #: bursty or uniform loss (``--loss-pattern``; ``loss`` is uniform:loss), and when it stops
    loss_pattern: LossPattern | None = None
    loss_until_s: float = 0.0
    #: a token bucket on what arrives (``--cap-mbps``), and when it is lifted
    cap_mbps: float = 0.0
    cap_until_s: float = 0.0
    save_frames: str | None = None
    json: bool = False
    status: bool = True
    name: str = ""
    config_dir: Path | None = None
    #: events to send during the stream (``--input-script``)
    input_script: list[ScriptedEvent] | None = None
    #: measure click-to-photon with pointer moves (``--click-to-photon``)
    click_to_photon: bool = False
    #: ask for audio in this many channels (2, 6, 8; 0 = none: ``--audio``)
    audio_channels: int = 0
    #: write the decoded audio to this WAV file (``--audio-out``)
    audio_out: str | None = None
    #: the host's app to launch and stream (``--app``; its ``[[apps]]`` name)
    app: str = "Desktop"
    #: bitrates to ask the host for during the stream, as (seconds into it, kbit/s) (``--ask-bitrate``)
    bitrate_asks: list[tuple[float, int]] | None = None


class NativeClient:
    def __init__(self, opts: ClientOptions, terminal: Terminal | None = None) -> None:
        self.opts = opts
        self.terminal = terminal or Terminal(json=opts.json, live=opts.status)
        cfg = Path(opts.config_dir or Paths.from_env().config)
        ensure_private_dir(cfg)
        self.dir = cfg / "native"
        self.address = f"{opts.host}:{opts.port}"
        self.name = opts.name or socket.gethostname()
        self.identity: Identity = load_or_create_identity(self.dir, "client", self.name)
        self.known = KnownHosts(self.dir / "known-hosts.json")
        self.stats = Stats()
        self.receiver: NativeReceiver | None = None
        self.session_id: int | None = None
        self.host_bye: str | None = None
        self.rtt_us: float | None = None
        self.want_keyframe = threading.Event()
        self.fec_on = True
        #: totals as of the last report (reports carry deltas) and when it went out
        self._reported: dict[str, int] = {}
        #: the first unit (au_seq) whose parity the host chose knowing one of our reports (its first
        #: ``report_applied``), and the loss counts when that arrived: what comes after is the host's doing
        self._informed_from: int | None = None
        self._at_first_report: dict[str, int] | None = None
        self.keyframe_requests = 0
        #: the host's answers to our bitrate asks: (seconds into the stream, kbit/s it set)
        self.bitrates_granted: list[tuple[float, int]] = []
        self._last_report_at = 0.0
        #: input waiting for the control thread, which alone writes to the connection
        self._outbox: list[InputEvent | dict[str, Any] | bytes] = []
        self._outbox_lock = threading.Lock()
        #: wakes the control thread for queued input (a pipe, open while a stream runs)
        self._wake_r = self._wake_w = -1
        #: queued input is sent no sooner than this (monotonic s): one batch per INPUT_TICK_S
        self._input_due = 0.0
        #: input events handed to the connection
        self.input_sent = 0
        self.script: ScriptPlayer | None = None
        self.photon: ClickToPhoton | None = None
        #: what the host's input backend sent back (rumble …), the first MAX_FEEDBACK_KEPT
        self.feedback: list[FeedbackEvent] = []
        self.feedback_received = 0
        self.feedback_malformed = 0
        #: the session's audio (when asked for and the host streams it), and why there is none
        self.audio: AudioReceiver | None = None
        self.audio_error: str | None = None

    def say(self, text: str) -> None:
        """A message for the person at the terminal."""
        self.terminal.say(text)

    # -- input -------------------------------------------------------------------------
    def send_input(self, *events: InputEvent) -> None:
        """Send input events to the host during the stream (any thread; never blocks).

        They go out in order on the control connection, which loses none;
        consecutive moves still waiting are merged into one."""
        with self._outbox_lock:
            for event in events:
                tail = self._outbox[-1] if self._outbox else None
                folded = merged(tail, event) if tail is not None and not isinstance(tail, (dict, bytes)) else None
                if folded is not None:
                    self._outbox[-1] = folded
                else:
                    self._outbox.append(event)
        self._wake()

    def ask_bitrate(self, kbps: int) -> None:
        """Ask the host for this video bitrate (any thread): its answer, the rate it set (clamped), is
        in ``details()["bitrates_granted"]``. With adaptive rate control it is also the ceiling the host
        probes up to: ask for less when this side's link or decoder cannot take more."""
        self.send_message({"type": "set_bitrate", "bitrate_kbps": int(kbps)})

    def send_message(self, msg: dict[str, Any] | bytes) -> None:
        """Send one control message as it is, in order with the input (any thread): for messages
        this client does not know, and for tests of the host's checks (bytes: a binary input batch)."""
        with self._outbox_lock:
            self._outbox.append(msg)
        self._wake()

    def _wake(self) -> None:
        with self._outbox_lock:  # the pipe closes under this lock when the stream ends
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"!")
            except BlockingIOError:  # the control thread has wake-ups pending already
                pass

    def _send_queued_input(self, ctl: HostControl) -> None:
        now = time.monotonic()
        if now < self._input_due:  # a batch went out less than a tick ago: this one gathers more
            return
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._outbox_lock:
            items, self._outbox = self._outbox, []
        if items:
            self._input_due = now + INPUT_TICK_S
        events: list[InputEvent] = []
        for item in [*items, None]:  # events between raw messages go out in messages of their own
            if item is None or isinstance(item, (dict, bytes)):
                for i in range(0, len(events), MAX_INPUT_EVENTS):
                    ctl.send_input_batch(encode_batch(events[i:i + MAX_INPUT_EVENTS]))
                self.input_sent += len(events)
                events = []
                if isinstance(item, bytes):
                    ctl.send_input_batch(item)
                elif item is not None:
                    ctl.send(item)
            else:
                events.append(item)

    def _wait_for_host(self, ctl: HostControl, timeout: float) -> bool:
        """Wait until the host sent something (True) or input is queued (False)."""
        if ctl.pending or ctl.sock.pending():  # TLS may hold a decrypted record already
            return True
        hold = self._input_due - time.monotonic()  # queued input waits for its tick, the host does not
        watch = [ctl.sock] if hold > 0 else [ctl.sock, self._wake_r]
        readable, _, _ = select.select(watch, [], [], min(timeout, hold) if hold > 0 else timeout)
        return ctl.sock in readable

    # -- connecting -------------------------------------------------------------------
    def _connect(self, with_identity: bool) -> tuple[HostControl, bytes]:
        try:
            raw = socket.create_connection((self.opts.host, self.opts.port), timeout=5.0)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # pongs and input: never held back by Nagle
        except OSError as exc:
            raise ClientError(f"cannot reach {self.address}: {exc.strerror or exc} "
                              f"(is `punktfunk serve` running there with native enabled?)", EXIT_CONNECT) from None
        ctx = client_context(self.identity if with_identity else None)
        try:
            tls = ctx.wrap_socket(raw)
        except ssl.SSLError as exc:
            raw.close()
            if _refused_certificate(exc):
                raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING) from None
            raise ClientError(f"TLS handshake with {self.address} failed: {exc}", EXIT_CONNECT) from None
        except OSError as exc:
            raw.close()
            raise ClientError(f"connection to {self.address} failed: {exc}", EXIT_CONNECT) from None
        host_der = tls.getpeercert(binary_form=True) or b""
        return HostControl(tls), host_der

    def _hello(self, ctl: HostControl) -> dict[str, Any]:
        ctl.send({"type": "hello", "versions": list(SUPPORTED_VERSIONS), "name": self.name,
                  "client_fingerprint": self.identity.fingerprint})
        welcome = ctl.recv(10.0, "welcome")
        if welcome.get("version") != PROTOCOL_VERSION:
            raise ClientError(f"host chose unknown version {welcome.get('version')!r}")
        return welcome

    def _open_stream(self) -> tuple[HostControl, str, dict[str, Any]]:
        """Connect with our certificate, check the pinned host certificate before
        sending anything, then hello/welcome."""
        ctl, host_der = self._connect(with_identity=True)
        try:
            pinned = self.known.fingerprint_of(self.address) or ""
            if fingerprint(host_der) != pinned:
                raise ClientError(f"the certificate of {self.address} changed (pinned {pinned[:16]}…, got "
                                  f"{fingerprint(host_der)[:16]}…): refusing to connect. If the host was reinstalled, "
                                  f"remove it from {self.known.path} and pair again.", EXIT_PAIRING)
            welcome = self._hello(ctl)
            if not welcome.get("paired"):
                raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING)
        except BaseException:
            ctl.close()
            raise
        return ctl, pinned, welcome

    def pair(self, pin: str) -> None:
        ctl, host_der = self._connect(with_identity=False)
        try:
            welcome = self._hello(ctl)
            exchange = ClientPairing(pin)
            ctl.send(exchange.start(self.identity.cert_der, self.name))
            try:
                ctl.send(exchange.confirm(ctl.recv(30.0, "pair_reply"), fingerprint(host_der),
                                          self.identity.fingerprint))
            except BadSpakeMessage as exc:
                raise PairingFailed(str(exc)) from None
            ok = ctl.recv(30.0, "pair_ok")
            if not exchange.host_knows_pin(ok):
                raise PairingFailed("the host could not prove it knows the PIN (man in the middle?); not pairing")
            self.known.pin(self.address, host_der, str(ok.get("host_name", welcome.get("host_name", ""))))
        except ProtocolError as exc:
            raise ClientError(f"protocol error while pairing: {exc}") from None
        finally:
            ctl.close()

    def ensure_paired(self) -> None:
        if self.known.fingerprint_of(self.address) is None:
            if not self.opts.pin:
                # connect first: an unreachable host is "cannot reach", not "not paired"
                ctl, _host_der = self._connect(with_identity=False)
                try:
                    welcome = self._hello(ctl)
                    ctl.send({"type": "bye", "reason": "not paired"})
                finally:
                    ctl.close()
                how = ("pairing is open on the host: pass the PIN given to `punktfunk native pin` there as --pin NNNN"
                       if welcome.get("pairing_open")
                       else "run `punktfunk native pin NNNN` on the host, then pass --pin NNNN")
                raise PairingFailed(f"not paired with {self.address}: {how}")
            self._pair_and_say(self.opts.pin)

    def _pair_and_say(self, pin: str) -> None:
        self.pair(pin)
        pinned = self.known.fingerprint_of(self.address) or "?"
        self.say(f"paired with {self.address} (host certificate {pinned[:16]}…, "
                 f"pinned in {self.known.path})")

    # -- apps ----------------------------------------------------------------------------
    def list_apps(self) -> dict[str, Any]:
        """The host's apps (``apps``: id, name, desktop) and the one running (or None)."""
        self.ensure_paired()
        ctl, _pinned, _welcome = self._open_stream()
        try:
            ctl.send({"type": "app_list"})
            listed = ctl.recv(15.0, "apps")
            ctl.send({"type": "bye", "reason": "listed apps"})
        except ProtocolError as exc:
            raise ClientError(f"protocol error: {exc}") from None
        finally:
            ctl.close()
        apps = listed.get("apps")
        if not isinstance(apps, list) or not all(isinstance(a, dict) and isinstance(a.get("name"), str)
                                                 for a in apps):
            raise ClientError("protocol error: the host's app list is not a list of apps")
        return {"apps": apps, "running": listed.get("running")}

    # -- streaming -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.ensure_paired()
        try:
            ctl, pinned, _welcome = self._open_stream()
        except ClientError as exc:
            if exc.exit_code == EXIT_PAIRING and str(exc) == UNKNOWN_CLIENT and self.opts.pin:
                self.known.remove(self.address)  # the host forgot us: pair again with the PIN we were given
                self._pair_and_say(self.opts.pin)
                ctl, pinned, _welcome = self._open_stream()
            else:
                raise
        try:
            return self._stream(ctl, pinned)
        except ProtocolError as exc:
            raise ClientError(f"protocol error: {exc}") from None
        finally:
            ctl.close()

    def _stream(self, ctl: HostControl, host_fp: str) -> dict[str, Any]:
        o = self.opts
        priv = X25519PrivateKey.generate()
        nonce = os.urandom(16)
        req: dict[str, Any] = {"type": "session_request", "width": o.width, "height": o.height, "fps": o.fps,
                               "codec": o.codec, "bitrate_kbps": o.bitrate_kbps,
                               "client_pub": b64e(priv.public_key().public_bytes_raw()), "client_nonce": b64e(nonce)}
        if o.fec_percent is not None:
            req["fec_percent"] = o.fec_percent
        if o.audio_channels:
            req["audio_channels"] = o.audio_channels
        req["app"] = o.app
        ctl.send(req)
        acc = ctl.recv(15.0, "session_accept")
        host_pub = b64d(acc.get("host_pub"), "host_pub", 64)
        host_nonce = b64d(acc.get("host_nonce"), "host_nonce", 64)
        udp_port = get_int(acc, "udp_port", 1, 65535)
        fps = get_int(acc, "fps", 1, 1000, o.fps)
        codec = acc.get("codec", o.codec)
        if codec not in AV_CODEC:
            raise ProtocolError(f"host chose unknown codec {codec!r}")
        try:
            shared = priv.exchange(X25519PublicKey.from_public_bytes(host_pub))
        except ValueError as exc:
            raise ProtocolError(f"bad host_pub: {exc}") from None
        k_h2c, k_c2h = session_keys(shared, nonce, host_nonce, host_fp, self.identity.fingerprint)
        self.accept = acc
        self.fec_on = get_int(acc, "fec_percent", 0, 100, 0) > 0 or acc.get("fec") == "adaptive"
        self.receiver = NativeReceiver(k_h2c)
        host_ip = ctl.sock.getpeername()[0]
        udp = socket.socket(ctl.sock.family, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        udp.bind(("", 0))
        try:
            decoder = Decoder(codec, self.stats, self.want_keyframe, o.save_frames)
        except DecoderUnavailable as exc:
            udp.close()
            raise ClientError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - e.g. this PyAV build lacks the decoder
            udp.close()
            raise ClientError(f"cannot decode {codec} here: {exc}") from None
        if o.audio_channels:
            self._open_audio(acc.get("audio"), k_h2c, udp, decoder)
        if o.click_to_photon:
            self.photon = ClickToPhoton(get_int(acc, "width", 16, 8192, o.width),
                                        get_int(acc, "height", 16, 8192, o.height), self.send_input)
            decoder.on_frame = self.photon.on_frame
        pattern = o.loss_pattern or (LossPattern("uniform", rate=o.loss) if o.loss else None)
        impair = LinkImpairment(pattern, loss_until_s=o.loss_until_s, cap_mbps=o.cap_mbps,
                                cap_until_s=o.cap_until_s, seed=o.loss_seed)
        rx = StreamReceiver(udp, (host_ip, udp_port), k_c2h, self.receiver, decoder, self.stats, impair=impair,
                            audio=self.audio)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        rx.start()
        try:
            started = ctl.recv(20.0, "session_started")
            if o.input_script:
                self.script = ScriptPlayer(o.input_script, self.send_input)
                self.script.start()
            self.session_id = started.get("session_id")
            if isinstance(started.get("audio_error"), str):
                self.audio_error = started["audio_error"]
                self.say(f"no audio: {self.audio_error}")
            self.say(f"streaming {acc.get('width', o.width)}x{acc.get('height', o.height)}@{fps} {codec} from "
                     f"{self.address} (session {self.session_id}, encoder {started.get('encoder', '?')})")
            try:
                ended_by = self._control(ctl, acc)
            except KeyboardInterrupt:
                ended_by = "interrupted"
            rx.stop()
            if ended_by != "closed":
                self._last_report(ctl, ended_by)
        finally:
            if self.script is not None:
                self.script.stop()
            rx.stop()
            with self._outbox_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            udp.close()
            decoder.close()
            if self.audio is not None:
                self.audio.close()
            self.terminal.end_status_line()
        return self.summary()

    def _open_audio(self, layout: Any, k_h2c: bytes, udp: socket.socket, decoder: Decoder) -> None:
        """The audio receiver for the layout the host announced (none: the host streams no audio)."""
        if not isinstance(layout, dict):
            self.audio_error = "the host streams no audio (native.audio is off there)"
            self.say(f"no audio: {self.audio_error}")
            return
        try:
            self.audio = AudioReceiver(k_h2c, layout, self.opts.audio_out)
        except ProtocolError:
            udp.close()
            decoder.close()
            raise
        except Exception as exc:  # noqa: BLE001 - no libopus in this PyAV, an unwritable --audio-out
            udp.close()
            decoder.close()
            raise ClientError(f"cannot play the host's audio here: {exc}") from None

    def _last_report(self, ctl: HostControl, ended_by: str) -> None:
        """Our counters are final now (nothing is received any more): report them,
        marked last, so the host's last stats window equals our summary."""
        try:  # best effort: the stream itself is over either way
            self._report(ctl, last=True)
            if ended_by != "host":
                ctl.send({"type": "bye", "reason": "done" if ended_by == "done" else ended_by})
        except ClientError:
            pass

    def _control(self, ctl: HostControl, acc: dict[str, Any]) -> str:
        """Run the stream until it ends; returns how: "done" (--seconds), "host"
        (the host said bye) or "closed" (the connection went away)."""
        o = self.opts
        t0 = time.monotonic()
        ping_every = get_int(acc, "keepalive_interval_ms", 50, 60_000, 500) / 1000
        report_every = get_int(acc, "report_interval_ms", 200, 60_000, 2000) / 1000
        next_ping = t0
        next_report = t0 + min(report_every, FIRST_REPORT_S)
        next_status = t0 + 0.5
        last_kf = 0.0
        host_timeout = get_int(acc, "keepalive_timeout_ms", 200, 600_000, 3000) / 1000
        last_rx = t0
        pings: dict[int, float] = {}
        pid = 0
        self._last_report_at = t0
        end = t0 + o.seconds if o.seconds > 0 else float("inf")
        asks = sorted(o.bitrate_asks or [])
        while True:
            now = time.monotonic()
            while asks and now - t0 >= asks[0][0]:
                self.ask_bitrate(asks.pop(0)[1])
            if not self.stats.datagrams and now - t0 > NO_VIDEO_TIMEOUT_S:
                try:
                    ctl.send({"type": "bye", "reason": "no video arrived"})
                except ClientError:
                    pass
                raise ClientError(f"no video arrived within {NO_VIDEO_TIMEOUT_S:.0f} s of the session start "
                                  f"(is UDP from the host blocked on the way here?)", EXIT_CONNECT)
            if now >= end:
                return "done"
            if now >= next_ping:
                pid += 1
                pings[pid] = now
                ctl.send({"type": "ping", "id": pid, "t_us": int(now * 1e6)})
                next_ping = now + ping_every
                if len(pings) > 32:
                    pings.pop(min(pings))
            if now >= next_report:
                self._report(ctl)
                next_report = now + report_every
            if self.want_keyframe.is_set() and now - last_kf > 0.1:
                self.want_keyframe.clear()
                last_kf = now
                ctl.send({"type": "keyframe_request"})
                self.keyframe_requests += 1
            if now >= next_status:
                self.terminal.status(self.summary())
                next_status = now + 0.5
            try:
                readable = self._wait_for_host(ctl, 0.05)
                self._send_queued_input(ctl)
                msgs = ctl.poll(0.05) if readable else []
            except (EOFError, ssl.SSLError, ConnectionError):
                self.host_bye = self.host_bye or "connection closed"
                return "closed"
            done = False
            if msgs:
                last_rx = time.monotonic()
            elif time.monotonic() - last_rx > host_timeout:
                raise ClientError(f"the host went silent for {host_timeout:g} s (keepalive timeout)", EXIT_CONNECT)
            for m in msgs:
                t = m["type"]
                if t == "ping":
                    ctl.send({"type": "pong", "id": m.get("id"), "t_us": m.get("t_us")})
                elif t == "pong":
                    pong_id = m.get("id")
                    sent = pings.pop(pong_id, None) if isinstance(pong_id, int) else None
                    if sent is not None:
                        s = (time.monotonic() - sent) * 1e6
                        self.rtt_us = s if self.rtt_us is None else 0.875 * self.rtt_us + 0.125 * s
                elif t == "feedback":
                    self._on_feedback(m)
                elif t == "report_applied":
                    self._report_applied(m)
                elif t == "bitrate_changed":
                    kbps = m.get("bitrate_kbps")
                    if isinstance(kbps, int) and not isinstance(kbps, bool):
                        self.bitrates_granted.append((round(time.monotonic() - t0, 3), kbps))
                elif t == "bye":
                    self.host_bye = str(m.get("reason", ""))
                    done = True
                elif t == "error":
                    raise ClientError(f"host error ({m.get('code')}): {m.get('message')}")
            if done:
                return "host"

    def _report_applied(self, msg: dict[str, Any]) -> None:
        """The host took a report in: the units from ``from_unit`` on carry parity it chose knowing
        the link. The first one is where "after the first report" starts (docs/adaptive.md)."""
        unit = msg.get("from_unit")
        if self._informed_from is None and isinstance(unit, int) and not isinstance(unit, bool) and unit >= 0:
            self._informed_from = unit
            self._at_first_report = self._loss_counts()

    def _on_feedback(self, msg: dict[str, Any]) -> None:
        """Rumble and other feedback from the host's input backend: kept and shown (this client
        has no gamepad to play it on); what it cannot read is counted."""
        events = msg.get("events")
        for item in events if isinstance(events, list) else [None]:
            try:
                event = decode_feedback(item)
            except MalformedInput:
                self.feedback_malformed += 1
                continue
            self.feedback_received += 1
            if len(self.feedback) < MAX_FEEDBACK_KEPT:
                self.feedback.append(event)
                self.say(f"feedback from the host: {event}")

    def _report(self, ctl: HostControl, *, last: bool = False) -> None:
        """Counts since the previous report (deltas), and the span they cover."""
        r = self.receiver
        assert r is not None
        now = time.monotonic()
        total = {"packets_lost": r.packets_lost, "packets_expected": r.packets_expected, "loss_runs": r.loss_runs,
                 "frames_unrecoverable": r.reasm.frames_unrecoverable, "frames_decoded": self.stats.frames_decoded}
        if self.fec_on:  # without FEC nothing can be recovered: the count stays absent, not 0
            total["shards_recovered"] = r.reasm.shards_recovered
        dec = self.stats.decode_us[self._reported.get("decode_samples", 0):]
        # what the reports summed so far: a count that went down (a late datagram) is never reported twice
        deltas = {k: max(0, v - self._reported.get(k, 0)) for k, v in total.items()}
        msg: dict[str, Any] = {"type": "report", **deltas, "span_us": round((now - self._last_report_at) * 1e6)}
        if dec:
            msg["decode_us"] = round(sum(dec) / len(dec), 1)
        if last:
            msg["last"] = True
        for k, d in deltas.items():
            self._reported[k] = self._reported.get(k, 0) + d
        self._reported["decode_samples"] = len(self.stats.decode_us)
        self._last_report_at = now
        ctl.send(msg)

    def _loss_counts(self) -> dict[str, int]:
        r = self.receiver
        reasm = r.reasm if r else None
        return {"frames_expected": (reasm.last_delivered - reasm.first_au + 1) if reasm and reasm.first_au >= 0 else 0,
                "frames_unrecoverable": reasm.frames_unrecoverable if reasm else 0,
                "packets_lost": r.packets_lost if r else 0, "packets_expected": r.packets_expected if r else 0,
                "keyframe_requests": self.keyframe_requests, "keyframes": self.stats.keyframes}

    # -- results -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        st = self.stats
        r = self.receiver
        reasm = r.reasm if r else None
        expected = (reasm.last_delivered - reasm.first_au + 1) if reasm and reasm.first_au >= 0 else 0
        e2e = sorted(st.e2e_us)
        span = st.last_packet - st.first_packet
        return {
            "frames_decoded": st.frames_decoded,
            "frames_expected": expected,
            "fps": round(st.decoded_fps, 2),
            "ids_in_order": bool(st.ids_in_order and st.frames_decoded > 0),
            "packets_lost": r.packets_lost if r else 0,
            "shards_recovered": reasm.shards_recovered if reasm else 0,
            "frames_unrecoverable": reasm.frames_unrecoverable if reasm else 0,
            "e2e_p50_ms": round(percentile(e2e, 0.5) / 1000, 2) if e2e else None,
            "e2e_p99_ms": round(percentile(e2e, 0.99) / 1000, 2) if e2e else None,
            "mbps": round(st.bytes * 8 / span / 1e6, 3) if span > 0 else 0.0,
            **({"input_sent": self.input_sent} if self.opts.input_script or self.photon else {}),
            **(self.photon.summary() if self.photon is not None else {}),
            **({"feedback": [encode_feedback(e) for e in self.feedback], "feedback_received": self.feedback_received}
               if self.feedback_received else {}),
            **(self._audio_summary() if self.opts.audio_channels else {}),
        }

    def _audio_summary(self) -> dict[str, Any]:
        out = self.audio.summary() if self.audio is not None else {"audio_channels": 0, "audio_packets": 0}
        return {**out, "audio_error": self.audio_error} if self.audio_error else out

    def details(self) -> dict[str, Any]:
        """Everything beyond the summary (for --details and tests)."""
        r = self.receiver
        return {"rejected": dict(r.rejected) if r else {}, "frames_undecodable": self.stats.frames_undecodable,
                "stamps_unreadable": self.stats.stamps_unreadable, "injected_loss": self.stats.injected_loss,
                "datagrams_received": self.stats.datagrams,
                "skipped_waiting_keyframe": self.stats.skipped_waiting_keyframe, "host_bye": self.host_bye,
                "session_id": self.session_id,
                "rtt_us": round(self.rtt_us, 1) if self.rtt_us is not None else None,
                "keyframe_requests": self.keyframe_requests, "keyframes_received": self.stats.keyframes,
                "injected_cap": self.stats.injected_cap, "unrecoverable_at_s": self.stats.unrecoverable_at[:100],
                "packets_expected": self.receiver.packets_expected if self.receiver else 0,
                "after_first_report": self._since_first_report(), "bitrates_granted": self.bitrates_granted}

    def _since_first_report(self) -> dict[str, int] | None:
        """Frames from the first unit whose parity the host chose knowing our reports (None before
        the host said which): expected and given up among them; the other counts since its word came."""
        r = self.receiver
        if self._informed_from is None or self._at_first_report is None or r is None:
            return None
        now = self._loss_counts()
        out = {k: v - self._at_first_report[k] for k, v in now.items()}
        first, last = self._informed_from, r.reasm.last_delivered
        out["frames_expected"] = max(0, last - first + 1)
        out["frames_unrecoverable"] = sum(max(0, min(unit + n, last + 1) - max(unit, first))
                                          for unit, n in self.stats.unrecoverable_units)
        out["from_unit"] = first
        return out
