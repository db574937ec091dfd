"""The reference punktfunk/1 client: ``punktfunk client HOST``.

Pairs with a PIN when needed (SPAKE2 inside TLS 1.3, then both sides pin the
other's certificate), negotiates a session, receives the encrypted FEC'd UDP
stream, recovers lost shards, decodes with PyAV, reads the test pattern's
frame stamp to measure end-to-end latency (capture → decoded) and reports
loss/recovery/decode time to the host once per window.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from spake2 import SPAKE2_A

from punktfunk_core.paths import Paths, ensure_private_dir
from punktfunk_core.stats import percentile

from punktfunk_native.datapath import NativeReceiver, ReceivedAU, make_probe
from punktfunk_native.identity import Identity, KnownHosts, client_context, load_or_create_identity
from punktfunk_native.wire import (
    MAX_PACKET,
    PROTOCOL_VERSION,
    SPAKE_ID_CLIENT,
    SPAKE_ID_HOST,
    SUPPORTED_VERSIONS,
    MessageReader,
    ProtocolError,
    b64d,
    b64e,
    encode_message,
    fingerprint,
    get_int,
    pairing_confirm_keys,
    pairing_mac,
    session_keys,
)

DEFAULT_PORT = 47992
NO_VIDEO_TIMEOUT_S = 5.0
AV_CODEC = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}

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


class _Ctl:
    """Client end of a control connection (thread-safe send)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.reader = MessageReader()
        self.pending: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        with self.lock:
            try:
                self.sock.settimeout(5.0)  # reads poll with short timeouts; a write may take longer
                self.sock.sendall(encode_message(msg))
            except (ssl.SSLError, OSError) as exc:
                self._explain(exc)

    def _explain(self, exc: BaseException) -> None:
        """Turn a failed write into the host's verdict when it sent one (TLS 1.3: a
        rejected client certificate surfaces on the first write or read)."""
        try:
            self.sock.settimeout(1.0)
            self.sock.recv(1)
        except ssl.SSLError as alert:
            if "unknown ca" in str(alert).lower() or "certificate" in str(alert).lower():
                raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING) from None
        except (OSError, ValueError):
            pass
        raise ClientError(f"control connection failed: {exc}", EXIT_CONNECT) from None

    def recv(self, timeout: float, expect: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError("the host did not answer in time", EXIT_CONNECT)
            self.sock.settimeout(min(left, 0.25))
            try:
                self.pending.extend(self.reader.read(self.sock))
            except EOFError:
                raise ClientError("the host closed the connection", EXIT_CONNECT) from None
            except ssl.SSLError as exc:
                # TLS 1.3: the host checks our certificate after our side of the
                # handshake, so its verdict arrives with the first read
                if "unknown ca" in str(exc).lower() or "certificate" in str(exc).lower():
                    raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING) from None
                raise ClientError(f"TLS error: {exc}", EXIT_CONNECT) from None
            except OSError as exc:
                raise ClientError(f"control connection failed: {exc}", EXIT_CONNECT) from None
        msg = self.pending.pop(0)
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
    save_frames: str | None = None
    json: bool = False
    status: bool = True
    name: str = ""
    config_dir: Path | None = None


@dataclass
class Stats:
    frames_decoded: int = 0
    frames_undecodable: int = 0
    skipped_waiting_keyframe: int = 0
    stamps_unreadable: int = 0
    ids_in_order: bool = True
    last_id: int = -1
    e2e_us: list[int] = field(default_factory=list)
    decode_us: list[int] = field(default_factory=list)
    bytes: int = 0
    injected_loss: int = 0
    datagrams: int = 0
    first_packet: float = 0.0
    last_packet: float = 0.0
    #: monotonic times of the first and the last decoded frame
    first_decoded: float = 0.0
    last_decoded: float = 0.0

    @property
    def decoded_fps(self) -> float:
        """Frames decoded per second between the first and the last decoded frame."""
        span = self.last_decoded - self.first_decoded
        return (self.frames_decoded - 1) / span if self.frames_decoded > 1 and span > 0 else 0.0


class NativeClient:
    def __init__(self, opts: ClientOptions) -> None:
        self.opts = opts
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
        self._stop = threading.Event()
        self._want_keyframe = threading.Event()
        self._rng = random.Random(opts.loss_seed)
        self.fec_on = True
        #: totals as of the last report (reports carry deltas) and when it went out
        self._reported: dict[str, int] = {}
        self._last_report_at = 0.0
        self._status_open = False  # a live status line without its newline yet

    # -- connecting -------------------------------------------------------------------
    def _connect(self, with_identity: bool) -> tuple[_Ctl, bytes]:
        try:
            raw = socket.create_connection((self.opts.host, self.opts.port), timeout=5.0)
        except OSError as exc:
            raise ClientError(f"cannot reach {self.address}: {exc.strerror or exc} "
                              f"(is `punktfunk serve` running there with native enabled?)", EXIT_CONNECT) from None
        ctx = client_context(self.identity if with_identity else None)
        try:
            tls = ctx.wrap_socket(raw)
        except ssl.SSLError as exc:
            raw.close()
            if "unknown ca" in str(exc).lower() or "certificate" in str(exc).lower():
                raise ClientError(UNKNOWN_CLIENT, EXIT_PAIRING) from None
            raise ClientError(f"TLS handshake with {self.address} failed: {exc}", EXIT_CONNECT) from None
        except OSError as exc:
            raw.close()
            raise ClientError(f"connection to {self.address} failed: {exc}", EXIT_CONNECT) from None
        host_der = tls.getpeercert(binary_form=True) or b""
        return _Ctl(tls), host_der

    def _hello(self, ctl: _Ctl) -> dict[str, Any]:
        ctl.send({"type": "hello", "versions": list(SUPPORTED_VERSIONS), "name": self.name,
                  "client_fingerprint": self.identity.fingerprint})
        welcome = ctl.recv(10.0, "welcome")
        if welcome.get("version") != PROTOCOL_VERSION:
            raise ClientError(f"host chose unknown version {welcome.get('version')!r}")
        return welcome

    def _open_stream(self) -> tuple[_Ctl, str, dict[str, Any]]:
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
            host_fp = fingerprint(host_der)
            spake = SPAKE2_A(pin.encode(), idA=SPAKE_ID_CLIENT, idB=SPAKE_ID_HOST)
            msg_a = spake.start()
            ctl.send({"type": "pair_start", "spake": b64e(msg_a), "client_cert": b64e(self.identity.cert_der),
                      "name": self.name})
            reply = ctl.recv(30.0, "pair_reply")
            msg_b = b64d(reply.get("spake"), "spake", 256)
            try:
                key = spake.finish(msg_b)
            except Exception as exc:  # noqa: BLE001 - SPAKEError and friends
                raise PairingFailed(f"bad pairing reply from the host: {exc}") from None
            kc, kh = pairing_confirm_keys(key, host_fp, self.identity.fingerprint, msg_a, msg_b)
            ctl.send({"type": "pair_confirm", "mac": b64e(pairing_mac(kc, b"client"))})
            ok = ctl.recv(30.0, "pair_ok")
            mac = b64d(ok.get("mac"), "mac", 64)
            import hmac

            if not hmac.compare_digest(mac, pairing_mac(kh, b"host")):
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
        self.say(f"paired with {self.address} (host certificate {self.known.fingerprint_of(self.address)[:16]}…, "
                 f"pinned in {self.known.path})")

    def say(self, text: str) -> None:
        """A message for the person at the terminal (stderr under --json: stdout is the summary)."""
        self._end_status_line()
        print(text, file=sys.stderr if self.opts.json else sys.stdout, flush=True)

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

    def _stream(self, ctl: _Ctl, host_fp: str) -> dict[str, Any]:
        o = self.opts
        priv = X25519PrivateKey.generate()
        nonce = os.urandom(16)
        req: dict[str, Any] = {"type": "session_request", "width": o.width, "height": o.height, "fps": o.fps,
                               "codec": o.codec, "bitrate_kbps": o.bitrate_kbps,
                               "client_pub": b64e(priv.public_key().public_bytes_raw()), "client_nonce": b64e(nonce)}
        if o.fec_percent is not None:
            req["fec_percent"] = o.fec_percent
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
        self.fec_on = get_int(acc, "fec_percent", 0, 100, 0) > 0
        self.receiver = NativeReceiver(k_h2c)
        host_ip = ctl.sock.getpeername()[0]
        udp = socket.socket(ctl.sock.family, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        udp.bind(("", 0))
        udp_addr = (host_ip, udp_port)
        try:
            decoder = _Decoder(codec, self, o.save_frames)
        except ClientError:
            udp.close()
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. this PyAV build lacks the decoder
            udp.close()
            raise ClientError(f"cannot decode {codec} here: {exc}") from None
        rx = threading.Thread(target=self._rx_loop, args=(udp, udp_addr, k_c2h, decoder), name="native-rx", daemon=True)
        rx.start()
        try:
            started = ctl.recv(20.0, "session_started")
            self.session_id = started.get("session_id")
            self.say(f"streaming {acc.get('width', o.width)}x{acc.get('height', o.height)}@{fps} {codec} from "
                     f"{self.address} (session {self.session_id}, encoder {started.get('encoder', '?')})")
            try:
                ended_by = self._control(ctl, acc, fps)
            except KeyboardInterrupt:
                ended_by = "interrupted"
            self._stop_receiving(rx)
            if ended_by != "closed":
                self._last_report(ctl, ended_by)
        finally:
            self._stop_receiving(rx)
            udp.close()
            decoder.close()
            self._end_status_line()
        return self.summary()

    def _stop_receiving(self, rx: threading.Thread) -> None:
        self._stop.set()
        rx.join(2.0)

    def _last_report(self, ctl: _Ctl, ended_by: str) -> None:
        """Our counters are final now (nothing is received any more): report them,
        marked last, so the host's last stats window equals our summary."""
        try:  # best effort: the stream itself is over either way
            self._report(ctl, last=True)
            if ended_by != "host":
                ctl.send({"type": "bye", "reason": "done" if ended_by == "done" else ended_by})
        except ClientError:
            pass

    def _control(self, ctl: _Ctl, acc: dict[str, Any], fps: int) -> str:
        """Run the stream until it ends; returns how: "done" (--seconds), "host"
        (the host said bye) or "closed" (the connection went away)."""
        o = self.opts
        t0 = time.monotonic()
        ping_every = get_int(acc, "keepalive_interval_ms", 50, 60_000, 500) / 1000
        report_every = get_int(acc, "report_interval_ms", 200, 60_000, 2000) / 1000
        next_ping = t0
        next_report = t0 + report_every
        next_status = t0 + 0.5
        last_kf = 0.0
        host_timeout = get_int(acc, "keepalive_timeout_ms", 200, 600_000, 3000) / 1000
        last_rx = t0
        pings: dict[int, float] = {}
        pid = 0
        self._last_report_at = t0
        ctl.sock.settimeout(0.05)
        end = t0 + o.seconds if o.seconds > 0 else float("inf")
        while True:
            now = time.monotonic()
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
            if self._want_keyframe.is_set() and now - last_kf > 0.1:
                self._want_keyframe.clear()
                last_kf = now
                ctl.send({"type": "keyframe_request"})
            if o.status and not o.json and now >= next_status:
                self._print_status()
                next_status = now + 0.5
            try:
                ctl.sock.settimeout(0.05)
                msgs = ctl.reader.read(ctl.sock)
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
                    sent = pings.pop(m.get("id"), None) if isinstance(m.get("id"), int) else None
                    if sent is not None:
                        s = (time.monotonic() - sent) * 1e6
                        self.rtt_us = s if self.rtt_us is None else 0.875 * self.rtt_us + 0.125 * s
                elif t == "bye":
                    self.host_bye = str(m.get("reason", ""))
                    done = True
                elif t == "error":
                    raise ClientError(f"host error ({m.get('code')}): {m.get('message')}")
            if done:
                return "host"

    def _report(self, ctl: _Ctl, *, last: bool = False) -> None:
        """Counts since the previous report (deltas), and the span they cover."""
        r = self.receiver
        assert r is not None
        now = time.monotonic()
        total = {"packets_lost": r.packets_lost, "frames_unrecoverable": r.reasm.frames_unrecoverable,
                 "frames_decoded": self.stats.frames_decoded}
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

    # -- receive + decode (one thread) -----------------------------------------------
    def _rx_loop(self, udp: socket.socket, host: tuple[str, int], k_c2h: bytes, decoder: _Decoder) -> None:
        r = self.receiver
        assert r is not None
        st = self.stats
        loss = self.opts.loss
        rnd = self._rng.random
        buf = bytearray(MAX_PACKET + 64)
        probe_seq = 0
        got_data = False
        next_probe = 0.0
        udp.settimeout(0.05)
        unrec = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if not got_data and now >= next_probe:
                try:
                    udp.sendto(make_probe(k_c2h, probe_seq), host)
                except OSError:
                    pass
                probe_seq += 1
                next_probe = now + 0.05
            try:
                n = udp.recv_into(buf)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            got_data = True
            st.datagrams += 1
            if loss and rnd() < loss:
                st.injected_loss += 1
                continue
            t = time.monotonic()
            if not st.first_packet:
                st.first_packet = t
            st.last_packet = t
            st.bytes += n
            au = r.push(bytes(buf[:n]))
            if r.reasm.frames_unrecoverable != unrec:
                unrec = r.reasm.frames_unrecoverable
                decoder.need_keyframe = True
                self._want_keyframe.set()
            if au is not None:
                decoder.decode(au)

    # -- output ----------------------------------------------------------------------------
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
        }

    def details(self) -> dict[str, Any]:
        """Everything beyond the summary (for --details and tests)."""
        r = self.receiver
        return {"rejected": dict(r.rejected) if r else {}, "frames_undecodable": self.stats.frames_undecodable,
                "stamps_unreadable": self.stats.stamps_unreadable, "injected_loss": self.stats.injected_loss,
                "datagrams_received": self.stats.datagrams,
                "skipped_waiting_keyframe": self.stats.skipped_waiting_keyframe, "host_bye": self.host_bye,
                "session_id": self.session_id,
                "rtt_us": round(self.rtt_us, 1) if self.rtt_us is not None else None}

    def _print_status(self) -> None:
        s = self.summary()
        line = (f"{s['fps']:6.1f} fps  {s['mbps']:7.2f} Mb/s  lost {s['packets_lost']:5d}  recovered "
                f"{s['shards_recovered']:5d}  unrecoverable {s['frames_unrecoverable']:3d}  e2e p50 "
                f"{s['e2e_p50_ms'] if s['e2e_p50_ms'] is not None else '-':>6} ms  p99 "
                f"{s['e2e_p99_ms'] if s['e2e_p99_ms'] is not None else '-':>6} ms")
        sys.stdout.write("\r" + line)
        sys.stdout.flush()
        self._status_open = True

    def _end_status_line(self) -> None:
        """Move off the live status line (it is redrawn in place with \\r)."""
        if self._status_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._status_open = False

    def summary_text(self) -> str:
        """The closing summary, in words."""
        s = self.summary()
        how = {None: "", "connection closed": " (the host closed the connection)"}.get(
            self.host_bye, f" (the host ended it: {self.host_bye})")
        e2e = (f", end to end p50 {s['e2e_p50_ms']:.1f} ms / p99 {s['e2e_p99_ms']:.1f} ms"
               if s["e2e_p50_ms"] is not None else "")
        rtt = f", round trip {self.rtt_us / 1000:.1f} ms" if self.rtt_us is not None else ""
        return (f"session {self.session_id if self.session_id is not None else '?'} ended{how}: "
                f"{s['frames_decoded']} of {s['frames_expected']} frames decoded ({s['fps']:.1f} fps), "
                f"{s['mbps']:.2f} Mb/s; packets lost {s['packets_lost']}, recovered by FEC {s['shards_recovered']}, "
                f"frames unrecoverable {s['frames_unrecoverable']}{e2e}{rtt}")


class _Decoder:
    """PyAV decoder + stamp reader; runs on the receive thread."""

    def __init__(self, codec: str, client: NativeClient, save_dir: str | None) -> None:
        import av

        self.av = av
        self.ctx = av.CodecContext.create(AV_CODEC.get(codec, codec), "r")
        try:
            self.ctx.thread_count = 1  # frame threading would add a frame of delay per thread
        except Exception:  # noqa: BLE001
            pass
        self.client = client
        self.stats = client.stats
        self.need_keyframe = True
        self.save_dir = Path(save_dir) if save_dir else None
        self._saveq: queue.SimpleQueue | None = None
        self._saver: threading.Thread | None = None
        if self.save_dir is not None:
            try:
                import PIL.Image  # noqa: F401 - PyAV's to_image() needs Pillow
            except ImportError:
                raise ClientError("--save-frames needs Pillow (pip install pillow)") from None
            ensure_private_dir(self.save_dir)
            # PNG writing happens on its own thread so it never delays receiving
            self._saveq = queue.SimpleQueue()
            self._saver = threading.Thread(target=self._save_loop, name="native-save", daemon=True)
            self._saver.start()
        from punktfunk_core.media.stamp import latency_us, read_stamp_from_av_frame

        self._read_stamp = read_stamp_from_av_frame
        self._latency = latency_us

    def decode(self, au: ReceivedAU) -> None:
        st = self.stats
        if self.need_keyframe and not au.keyframe:
            st.skipped_waiting_keyframe += 1
            self.client._want_keyframe.set()
            return
        t0 = time.perf_counter_ns()
        try:
            frames = self.ctx.decode(self.av.Packet(au.data))
        except Exception:  # noqa: BLE001 - InvalidDataError and friends: count, resync on a keyframe
            st.frames_undecodable += 1
            self.need_keyframe = True
            self.client._want_keyframe.set()
            return
        if au.keyframe:
            self.need_keyframe = False
        dt = (time.perf_counter_ns() - t0) // 1000
        for frame in frames:
            st.frames_decoded += 1
            st.last_decoded = time.monotonic()
            if st.frames_decoded == 1:
                st.first_decoded = st.last_decoded
            st.decode_us.append(dt)
            stamp = self._read_stamp(frame)
            if stamp is None:
                st.stamps_unreadable += 1
                st.ids_in_order = False
            else:
                fid, cap_us = stamp
                st.e2e_us.append(self._latency(cap_us))
                if fid != au.frame_id or fid <= st.last_id:
                    st.ids_in_order = False
                st.last_id = fid
            if self._saveq is not None:
                self._saveq.put((au.frame_id, frame))

    def _save_loop(self) -> None:
        assert self._saveq is not None and self.save_dir is not None
        while True:
            item = self._saveq.get()
            if item is None:
                return
            fid, frame = item
            try:
                frame.to_image().save(self.save_dir / f"frame-{fid:08d}.png", compress_level=1)
            except Exception:  # noqa: BLE001 - saving is best effort
                pass

    def close(self) -> None:
        if self._saveq is not None and self._saver is not None:
            self._saveq.put(None)
            self._saver.join(30.0)
        try:
            self.ctx.close()
        except Exception:  # noqa: BLE001
            pass


# -- command line -------------------------------------------------------------------------
def add_client_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", metavar="HOST", help="host name or address (HOST or HOST:PORT)")
    p.add_argument("--port", type=int, default=None, help=f"control port (default {DEFAULT_PORT})")
    p.add_argument("--pin", help="pair with this PIN first if not paired yet")
    p.add_argument("--seconds", type=float, default=0.0, help="stream this long, then print a summary (0 = until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object at the end, no live status")
    p.add_argument("--save-frames", metavar="DIR", help="save every decoded frame as PNG into DIR")
    p.add_argument("--loss", type=float, default=0.0, help="drop this fraction of received datagrams (testing FEC)")
    p.add_argument("--loss-seed", type=int, default=None, help="seed of the loss injection")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=60)
    p.add_argument("--codec", choices=["h264", "hevc", "av1"], default="h264")
    p.add_argument("--bitrate", type=int, default=10_000, metavar="KBPS", help="bitrate in kbit/s (default 10000)")
    p.add_argument("--fec", type=int, default=None, metavar="PERCENT", help="FEC parity percent (default: the host's)")
    p.add_argument("--name", default="", help="name the host shows for this client (default: hostname)")
    p.add_argument("--config-dir", default=None, help="where the client keeps its identity (default: punktfunk config dir)")
    p.add_argument("--details", action="store_true", help="with --json: add a 'details' object (rejections, rtt)")


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    host, port = args.host, args.port
    if port is None and host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p)
    if host.startswith("[") and "]" in host:
        host, _, rest = host[1:].partition("]")
        if rest.startswith(":") and port is None:
            port = int(rest[1:])
    if not 0.0 <= args.loss < 1.0:
        raise ClientError("--loss must be in 0..1 (e.g. 0.05)")
    if args.pin is not None and not (args.pin.isdigit() and 4 <= len(args.pin) <= 8):
        raise ClientError("--pin must be 4 to 8 digits")
    return ClientOptions(
        host=host, port=port or DEFAULT_PORT, pin=args.pin, seconds=args.seconds, width=args.width,
        height=args.height, fps=args.fps, codec=args.codec, bitrate_kbps=args.bitrate, fec_percent=args.fec,
        loss=args.loss, loss_seed=args.loss_seed, save_frames=args.save_frames, json=args.json,
        name=args.name, config_dir=Path(args.config_dir) if args.config_dir else None,
    )


def main_from_args(args: argparse.Namespace) -> int:
    client: NativeClient | None = None
    try:
        opts = options_from_args(args)
        client = NativeClient(opts)
        try:
            summary = client.run()
        except KeyboardInterrupt:  # before the stream started (while pairing or connecting)
            client._stop.set()
            summary = client.summary()
    except PairingFailed as exc:
        _fail(client, f"pairing failed: {exc}")
        return exc.exit_code
    except ClientError as exc:
        _fail(client, str(exc))
        return exc.exit_code
    if opts.json:
        out = dict(summary)
        if getattr(args, "details", False):
            out["details"] = client.details()
        print(json.dumps(out))
    elif client.session_id is not None:
        print(client.summary_text())
    return EXIT_OK


def _fail(client: NativeClient | None, message: str) -> None:
    if client is not None:
        client._end_status_line()
    print(f"punktfunk client: {message}", file=sys.stderr)
