"""Helpers for the GameStream tests: host config, and a Moonlight client process.

The client runs in its own process (``python tests/gamestream_helpers.py OP
...``): moonlight-common-c keeps global state and a crash in it must not take
pytest down. It prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app_helpers import group_alive, marker_app  # noqa: F401 - the GameStream apps tests import them from here too

HERE = Path(__file__).resolve()


def _toml(value: Any) -> str:
    """A TOML value: JSON for scalars and arrays, an inline table for a dict."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def gs_config(apps: tuple[dict[str, Any], ...] = (), **gamestream: Any) -> str:
    """TOML for a test host: GameStream on ephemeral ports, no mDNS; ``apps`` are ``[[apps]]`` tables."""
    values = {"enabled": True, "port_base": 0, "mdns": False}
    values.update(gamestream)
    lines = ["[gamestream]"]
    for k, v in values.items():
        lines.append(f"{k} = {_toml(v)}")
    lines += ["[host]", 'log_level = "info"']
    for app in apps:
        lines.append("[[apps]]")
        lines += [f"{k} = {_toml(v)}" for k, v in app.items()]
    return "\n".join(lines) + "\n"


def launch_marker_app(host: Any, d: Path) -> int:
    """Pair a Moonlight client with ``host`` (GameStream on, ``marker_app(d)`` configured) and
    launch the app through it, without streaming; the app's process group id."""
    wait_ready(host)
    assert pair(host, d / "client")["ok"]
    res = run_client("launch", host, d / "client", "--app", "Marker")
    assert res["ok"], res
    deadline = time.monotonic() + 30
    while not (d / "marker").exists():
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    return int((d / "pgid").read_text())


#: environment of a host that loads the fault-injection stages (tests/plugins/pf_faults.py)
FAULTS_ENV = {
    "PUNKTFUNK_PLUGINS": "pf_faults",
    "PYTHONPATH": os.pathsep.join([str(HERE.parent / "plugins"), os.environ.get("PYTHONPATH", "")]),
}


def wait_ready(host: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until the host's GameStream plane answers (IPC is up before planes start)."""
    from punktfunk_core.ipc import IpcError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return host.call("gamestream.status")
        except IpcError:
            if time.monotonic() > deadline:
                raise AssertionError(f"GameStream did not start:\n{host.log()[-3000:]}") from None
            time.sleep(0.1)


def run_client(op: str, host: Any, client_dir: Path, *args: str, timeout: float = 90.0,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one client operation to completion and return its JSON result."""
    proc = start_client(op, host, client_dir, *args, env=env)
    return finish_client(proc, timeout)


def start_client(op: str, host: Any, client_dir: Path, *args: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    ports = host.call("gamestream.status")["ports"]
    cmd = [sys.executable, str(HERE), op, "--dir", str(client_dir), "--http", str(ports["http"]),
           "--https", str(ports["https"]), "--cert", str(host.dirs["config"] / "gamestream" / "host-cert.pem"), *args]
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def finish_client(proc: subprocess.Popen, timeout: float = 90.0) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"moonlight client timed out\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}") from None
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"moonlight client gave no result (rc {proc.returncode})\nstdout:\n{out[-3000:]}\n"
                             f"stderr:\n{err[-3000:]}")
    res = json.loads(lines[-1])
    res["_stderr"] = err[-4000:]
    return res


def pair(host: Any, client_dir: Path, client_pin: str = "1234", operator_pin: str | None = "1234",
         timeout: float = 60.0) -> dict[str, Any]:
    """Pair a client: it shows ``client_pin``; the operator enters ``operator_pin``."""
    proc = start_client("pair", host, client_dir, "--pin", client_pin)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = host.call("gamestream.status")
        if st["pairing"]:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("the client never started pairing")
    if operator_pin is not None and proc.poll() is None:
        res = host.call("pairing.pin", protocol="gamestream", pin=operator_pin)
        assert res["ok"] is True
    return finish_client(proc, timeout)


# ---------------------------------------------------------------------------------
# a hand-driven client for the HTTP side (in the test process)
MOONLIGHT_UID = "0123456789ABCDEF"  # every Moonlight client sends this uniqueid


def http_get(port: int, path: str, source: str = "127.0.0.1", timeout: float = 10.0, tls: Any = None) -> str:
    """One request from ``source`` (any 127.0.0.0/8 address is this machine);
    HTTPS when ``tls`` (an ``ssl.SSLContext``) is given."""
    import http.client

    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0),
                                           context=tls)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def xml_field(xml: str, tag: str) -> str | None:
    import xml.etree.ElementTree as ET

    node = ET.fromstring(xml).find(tag)
    return node.text if node is not None else None


def client_cert(common_name: str = "NVIDIA GameStream Client") -> tuple[Any, Any]:
    """A Moonlight-like client key and self-signed certificate (RSA 2048); every
    Moonlight client uses the default common name."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return key, cert


def ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


class HandPairing:
    """The client side of GameStream PIN pairing over real HTTP, one step per
    call, so a test can put an attacker's requests between the steps. Its
    certificate's common name is ``name``: two paired certificates with one
    subject do not both pass the host's TLS trust store (OpenSSL 3.0 finds only
    the first), so tests that need two paired clients on HTTPS name them apart."""

    def __init__(self, port: int, pin: str, source: str = "127.0.0.1", uid: str = MOONLIGHT_UID,
                 name: str = "hand") -> None:
        from cryptography.hazmat.primitives import serialization

        self.port, self.source, self.uid, self.name = port, source, uid, name
        self.key, self.cert = client_cert(name)
        self.salt = os.urandom(16)
        self.aes = hashlib.sha256(self.salt + pin.encode()).digest()[:16]
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _pair(self, query: str, timeout: float = 10.0) -> str:
        from urllib.parse import quote

        return http_get(self.port, f"/pair?uniqueid={self.uid}&devicename={quote(self.name)}&updateState=1&{query}",
                        self.source, timeout)

    def get_server_cert(self, timeout: float = 90.0) -> str:
        return self._pair(f"phrase=getservercert&salt={self.salt.hex()}&clientcert={self.pem.hex()}", timeout)

    def finish(self) -> bool:
        """Steps 2–4 after the host sent its certificate; True when the host says paired."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self.challenge = os.urandom(16)
        xml = self._pair(f"clientchallenge={ecb(self.aes, self.challenge).hex()}")
        if xml_field(xml, "paired") != "1":
            return False
        resp = ecb(self.aes, bytes.fromhex(xml_field(xml, "challengeresponse") or ""), decrypt=True)
        secret = os.urandom(16)
        digest = hashlib.sha256(resp[32:48] + self.cert.signature + secret).digest()
        xml = self._pair(f"serverchallengeresp={ecb(self.aes, digest).hex()}")
        if xml_field(xml, "paired") != "1":
            return False
        signed = self.key.sign(secret, padding.PKCS1v15(), hashes.SHA256())
        xml = self._pair(f"clientpairingsecret={(secret + signed).hex()}")
        return xml_field(xml, "paired") == "1"

    def tls_context(self, directory: Path) -> Any:
        """A TLS client context that presents this client's certificate (for HTTPS once paired)."""
        import ssl

        from cryptography.hazmat.primitives import serialization

        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cert.pem").write_bytes(self.pem)
        (directory / "key.pem").write_bytes(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        return ctx


# ---------------------------------------------------------------------------------
# client side (runs in its own process)
def _client_main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("op")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--https", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--pin", default="1234")
    ap.add_argument("--codec", default="h264")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=60)
    ap.add_argument("--bitrate", type=int, default=8000)
    ap.add_argument("--packet-size", type=int, default=1392)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--encryption", choices=["all", "none"], default="all")
    ap.add_argument("--idr-at", type=int, default=0)
    ap.add_argument("--audio", action="store_true")
    ap.add_argument("--channels", type=int, choices=[2, 6, 8], default=2, help="the audioConfiguration asked for")
    ap.add_argument("--cancel", action="store_true")
    ap.add_argument("--hold", type=float, default=0.0, help="keep streaming this long after the frames")
    ap.add_argument("--no-cert", action="store_true")
    ap.add_argument("--input-script", help="JSON list of input steps to send during the stream (see _send_input)")
    ap.add_argument("--app", default="Desktop", help="the app to launch, by name")
    a = ap.parse_args(argv)

    from moonlight_python.exceptions import PairingError, WrongPinError
    from moonlight_python.http_client import NvHTTP
    from moonlight_python.identity import Identity
    from moonlight_python.pairing import pair as ml_pair

    ident = Identity(a.dir)
    server_pem = Path(a.cert).read_bytes()
    http = NvHTTP("127.0.0.1", ident, http_port=a.http, https_port=a.https)

    if a.op == "pair":
        info = http.parse_server_info(http.get_server_info())
        try:
            pem = ml_pair(http, ident, a.pin, info, timeout=60)
        except WrongPinError as exc:
            return {"ok": False, "error": "wrong_pin", "detail": str(exc)}
        except PairingError as exc:
            return {"ok": False, "error": "pairing_failed", "detail": str(exc)}
        return {"ok": True, "server_cert_matches": pem == server_pem}

    http.server_cert_pem = server_pem
    if a.op == "applist":
        try:
            apps = http.get_app_list()
        except Exception as exc:  # noqa: BLE001 - the test looks at the error
            return {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:300]}
        return {"ok": True, "apps": [x.name for x in apps], "ids": [x.id for x in apps]}
    if a.op == "serverinfo":
        xml = http.get_server_info(use_https=True)
        info = http.parse_server_info(xml)
        return {"ok": True, "paired": info.paired, "appversion": info.app_version, "state": info.state,
                "codecs": info.server_codec_mode_support, "current_game": info.current_game, "xml": xml}
    if a.op == "launch":  # launch "Desktop" without streaming it
        import secrets

        from moonlight_python.config import CODEC_MAP, StreamConfig

        cfg = StreamConfig(width=a.width, height=a.height, fps=a.fps, bitrate_kbps=a.bitrate,
                           packet_size=a.packet_size, supported_video_formats=CODEC_MAP[a.codec], codec=a.codec)
        try:
            appid = {x.name: x.id for x in http.get_app_list()}[a.app]
            http.launch_app(appid, a.width, a.height, a.fps, a.bitrate, CODEC_MAP[a.codec], secrets.token_bytes(16),
                            secrets.token_bytes(16), cfg.surroundaudioinfo)
        except Exception as exc:  # noqa: BLE001 - the test looks at the error
            return {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:300]}
        return {"ok": True}
    if a.op == "quit":  # what Moonlight's "quit app" sends; the test reads the answer
        return {"ok": True, "xml": http.open_https("cancel", timeout=30)}
    if a.op == "stream":
        return _stream(a, http)
    if a.op == "input":
        return _input(a, http)
    raise SystemExit(f"unknown op {a.op}")


def _stream(a: argparse.Namespace, http: Any) -> dict[str, Any]:
    import av
    import moonlight_python.stream as mstream

    from punktfunk_core.media.stamp import read_stamp_from_av_frame

    from bench.moonlight_probe import start_stream, wake_when_terminated

    if os.environ.get("PF_MOONLIGHT_LOG"):
        _install_c_log(mstream)
    if a.encryption == "none":
        mstream.ENCFLG_ALL = 0  # the module constant session.start() writes into encryptionFlags
    info = http.parse_server_info(http.get_server_info(use_https=True))
    session, launched, connect_s = start_stream(
        http, info, codec=a.codec, width=a.width, height=a.height, fps=a.fps, bitrate=a.bitrate,
        packet_size=a.packet_size, audio=a.audio, resume=True, channels=a.channels, app=a.app)
    done = wake_when_terminated(session)
    ctx = av.CodecContext.create({"hevc": "hevc", "av1": "libdav1d"}.get(a.codec, "h264"), "r")
    assert isinstance(ctx, av.VideoCodecContext)
    frames: list[dict[str, Any]] = []
    audio_packets = 0
    audio_decoded = 0
    pcm: list[Any] = []
    decoder: Any = None

    def take_audio(timeout: float = 0.0) -> bool:
        """Decode every audio packet as the client delivers it, with the layout it negotiated."""
        nonlocal audio_packets, audio_decoded, decoder
        pkt = session.pull_audio_packet(timeout=timeout)
        if pkt is None:
            return False
        audio_packets += 1
        if decoder is None:
            decoder = _OpusDecoder(session.opus_config)
        out = decoder.decode(pkt.opus_data)
        if out:
            audio_decoded += 1
            if len(pcm) < 400:
                pcm.extend(out)
        return True
    idr_requested_at = None
    deadline = time.monotonic() + a.seconds
    shape = None
    terminated = None
    while len(frames) < a.frames and time.monotonic() < deadline:
        raw = session.pull_frame()
        if a.audio:
            while take_audio():
                pass
        if raw is None:
            if session.is_terminated:
                terminated = session.termination_error
                break
            continue
        ids = []
        for f in ctx.decode(av.Packet(raw.annex_b_data)):
            shape = (f.width, f.height)
            st = read_stamp_from_av_frame(f)
            ids.append(st[0] if st else None)
        frames.append({"n": raw.frame_number, "type": raw.frame_type, "lat": raw.host_processing_latency_us,
                       "ids": ids, "bytes": len(raw.annex_b_data),
                       # FEC padding trails the last packet; NAL units never end in 0x00
                       "sha": hashlib.sha1(raw.annex_b_data.rstrip(b"\0")).hexdigest()[:16]})
        if a.idr_at and len(frames) == a.idr_at and idr_requested_at is None:
            session.request_idr()
            idr_requested_at = len(frames)
    hold_until = time.monotonic() + a.hold
    while time.monotonic() < hold_until and not session.is_terminated:
        raw = session.pull_frame()
        if a.audio:
            while take_audio():
                pass
    if a.audio:
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            take_audio(0.05)
    terminated_before_stop = session.is_terminated
    done.set()
    session.stop()
    if a.cancel:
        http.quit_app()
    tone_hz, rms, purity = _analyse_pcm(pcm) if pcm else (None, None, None)
    oc = session.opus_config if a.audio else None
    return {
        "ok": True, "launched": launched, "tone_hz": tone_hz, "audio_rms": rms, "tone_purity": purity,
        "connect_s": round(connect_s, 3), "frames": frames,
        "decoded_ids": [i for fr in frames for i in fr["ids"]], "shape": shape, "audio_packets": audio_packets,
        "audio_lost": session.audio_loss_stats["lost"] if a.audio else None,
        "audio_decoded": audio_decoded, "audio_decode_errors": decoder.decode_errors if decoder else None,
        "opus_config": None if oc is None else {"channels": oc.channel_count, "streams": oc.streams,
                                                "coupled": oc.coupled_streams, "mapping": list(oc.mapping)},
        "channel_rms": [round(float(v), 4) for v in _channel_rms(pcm)] if pcm else None,
        "idr_requested_at": idr_requested_at, "terminated": terminated,
        "terminated_before_stop": terminated_before_stop,
    }


def _input(a: argparse.Namespace, http: Any) -> dict[str, Any]:
    """Stream, and once frames flow send the input steps of ``--input-script``
    through moonlight-common-c's own API (ctypes on the library moonlight-python
    loaded, so the calls reach the running connection), pulling frames meanwhile.

    A step is ``[name, *args]``: an ``Li*`` function of :func:`_input_api` with its
    arguments (text as a string; a C ``char`` is a number), ``["garbage", hex]`` (raw bytes handed to the
    library's control-stream input sender: encrypted like any input packet, but
    not one), or ``["sleep", seconds]``. The result has the frames decoded before
    and while the steps ran, each call's return code, and the rumble the host sent."""
    import ctypes
    import threading

    import moonlight_python.stream as mstream

    from bench.moonlight_probe import start_stream, wake_when_terminated

    rumble: list[list[int]] = []
    orig = mstream.StreamingSession._make_connection_callbacks

    def with_rumble(self: Any) -> Any:
        cl = orig(self)

        @self._ffi.callback("void(unsigned short, unsigned short, unsigned short)")
        def on_rumble(number: int, low: int, high: int) -> None:
            rumble.append([number, low, high])

        self._callbacks.append(on_rumble)
        cl.rumble = on_rumble
        return cl

    mstream.StreamingSession._make_connection_callbacks = with_rumble
    steps = json.loads(Path(a.input_script).read_text())
    info = http.parse_server_info(http.get_server_info(use_https=True))
    session, _launched, _connect_s = start_stream(
        http, info, codec=a.codec, width=a.width, height=a.height, fps=a.fps, bitrate=a.bitrate,
        packet_size=a.packet_size, audio=False, resume=True)
    done = wake_when_terminated(session)
    lib = ctypes.CDLL(mstream._find_shared_lib())  # the library already loaded: the same connection
    for name, argtypes in _input_api().items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = ctypes.c_int
    results: list[Any] = []
    finished = threading.Event()

    def send() -> None:
        try:
            for name, *args in steps:
                if name == "sleep":
                    time.sleep(float(args[0]))
                elif name == "garbage":
                    raw = bytes.fromhex(args[0])
                    results.append(lib.sendInputPacketOnControlStream(raw, len(raw), 0, 1, False))
                elif name == "LiSendUtf8TextEvent":
                    text = args[0].encode()
                    results.append(lib.LiSendUtf8TextEvent(text, len(text)))
                else:
                    results.append(getattr(lib, name)(*args))
        finally:
            finished.set()

    sender = threading.Thread(target=send, daemon=True)
    before = during = 0
    t_start = t_end = 0.0
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline and not session.is_terminated:
        raw = session.pull_frame()
        if t_end and time.monotonic() >= t_end + a.hold:
            break
        if raw is None:
            continue
        if not t_start:
            before += 1
            if before >= a.frames:  # frames flow: the stream is live, send the script
                t_start = time.monotonic()
                sender.start()
        elif not finished.is_set():
            during += 1
        elif not t_end:
            t_end = time.monotonic()
    terminated = session.termination_error if session.is_terminated else None
    done.set()
    session.stop()
    span = (t_end or time.monotonic()) - t_start if t_start else 0.0
    return {"ok": finished.is_set(), "frames_before": before, "frames_during": during,
            "seconds_during": round(span, 3), "results": results, "rumble": rumble, "terminated": terminated}


def _input_api() -> dict[str, list[Any]]:
    """moonlight-common-c's input functions (Limelight.h) and their C argument types."""
    import ctypes

    c = ctypes
    return {
        "LiSendMousePositionEvent": [c.c_short, c.c_short, c.c_short, c.c_short],
        "LiSendMouseMoveEvent": [c.c_short, c.c_short],
        "LiSendMouseButtonEvent": [c.c_byte, c.c_int],
        "LiSendKeyboardEvent": [c.c_short, c.c_byte, c.c_byte],
        "LiSendScrollEvent": [c.c_byte],
        "LiSendHScrollEvent": [c.c_byte],
        "LiSendUtf8TextEvent": [c.c_char_p, c.c_uint],
        "LiSendMultiControllerEvent": [c.c_short, c.c_short, c.c_int, c.c_ubyte, c.c_ubyte,
                                       c.c_short, c.c_short, c.c_short, c.c_short],
        "LiSendTouchEvent": [c.c_uint8, c.c_uint32, c.c_float, c.c_float, c.c_float, c.c_float, c.c_float,
                             c.c_uint16],
        "LiSendPenEvent": [c.c_uint8, c.c_uint8, c.c_uint8, c.c_float, c.c_float, c.c_float, c.c_float, c.c_float,
                           c.c_uint16, c.c_uint8],
        "sendInputPacketOnControlStream": [c.c_char_p, c.c_int, c.c_uint8, c.c_uint32, c.c_bool],
    }


class _OpusDecoder:
    """libopus (through PyAV) set up from the layout moonlight-common-c negotiated, as a
    Moonlight client's ``opus_multistream_decoder_create`` is. moonlight-python's own
    ``AudioDecoder`` uses FFmpeg's native Opus decoder, which crashes on 7.1 multistream."""

    def __init__(self, oc: Any) -> None:
        import av
        from moonlight_python.audio_decoder import build_opus_head

        self.channels = oc.channel_count
        self.ctx = av.CodecContext.create("libopus", "r")
        self.ctx.extradata = build_opus_head(oc.sample_rate, oc.channel_count, oc.streams, oc.coupled_streams,
                                             list(oc.mapping))
        self.decode_errors = 0

    def decode(self, data: bytes) -> list[Any]:
        import av
        import numpy as np

        try:
            frames = self.ctx.decode(av.Packet(data))
        except av.error.InvalidDataError:
            self.decode_errors += 1
            return []
        out = []
        for f in frames:
            arr = f.to_ndarray()
            if arr.dtype == np.int16:
                out.append(arr.reshape(-1, self.channels).astype(np.float32) / 32768.0)
            else:  # planar float
                out.append(np.ascontiguousarray(arr.reshape(self.channels, -1).T))
        return out


def _channel_rms(pcm: list[Any]) -> Any:
    import numpy as np

    x = np.concatenate(pcm)  # (samples, channels) float32
    x = x[len(x) // 4:]
    return np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=0))


def _analyse_pcm(pcm: list[Any]) -> tuple[float | None, float | None, float | None]:
    """The dominant frequency, RMS (full scale = 1) and purity of the first channel of decoded PCM."""
    import numpy as np

    x = np.concatenate(pcm)[:, 0].astype(np.float64)
    x = x[len(x) // 4:]  # skip the codec's start-up
    if len(x) < 480:
        return None, None, None
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak = int(np.argmax(spec[1:]) + 1)
    hz = peak * 48000 / len(x)
    power = spec ** 2
    width = max(2, int(20 * len(x) / 48000))  # ±20 Hz around the peak
    purity = float(power[max(0, peak - width):peak + width + 1].sum() / power.sum())
    return round(hz, 1), round(float(np.sqrt(np.mean(x ** 2))), 4), round(purity, 4)


_LIBC: Any = None
_FFI: Any = None


def _install_c_log(mstream: Any) -> None:
    """Debug aid (PF_MOONLIGHT_LOG=1): moonlight-common-c's log lines to C stdout."""
    global _LIBC, _FFI
    import cffi

    ffi = _FFI = cffi.FFI()
    ffi.cdef("int printf(const char *fmt, ...); int fflush(void *stream);")
    _LIBC = ffi.dlopen(None)
    orig = mstream.StreamingSession._make_connection_callbacks

    def patched(self: Any) -> Any:
        cl = orig(self)
        printf = ffi.cast("uintptr_t", ffi.addressof(_LIBC, "printf"))
        cl.logMessage = self._ffi.cast("void(*)(const char*, ...)", printf)
        return cl

    mstream.StreamingSession._make_connection_callbacks = patched


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))  # the repository root: bench.moonlight_probe
    try:
        result = _client_main(sys.argv[1:])
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:500]}
    if _LIBC is not None:
        _LIBC.fflush(_FFI.NULL)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # moonlight-common-c threads must not keep the process alive
