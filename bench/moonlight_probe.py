"""Latency of a GameStream session as Moonlight sees it (moonlight-python's moonlight-common-c).

Host side (`run`): start a real ``punktfunk serve --gamestream`` on private dirs
and ephemeral ports (no mDNS, x264 ultrafast), pair a moonlight-python client
with a PIN entered over IPC (``gamestream.pin``), then launch "Desktop" once per
resolution, H.264, for a fixed time, and quit the app between runs.

Client side (``python bench/moonlight_probe.py OP ...``, its own process because
moonlight-common-c keeps global state): per frame it records the host processing
latency from the NV frame header (``DECODE_UNIT.frameHostProcessingLatency``,
which moonlight-python passes through as ``host_processing_latency_us`` although
moonlight-common-c defines it in units of 0.1 ms), and end-to-end latency read
from the test pattern's stamp right after PyAV decoded the picture:
``(now_us - capture_us) & 0xFFFFFFFF`` on the same monotonic clock.
It prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PIN = "4826"
WARMUP_S = 0.5  # the first 0.5 s after the first frame (IDR, start-up) is left out of the percentiles

HOST_TOML = """
[host]
log_level = "warning"
[native]
port = 0
[gamestream]
enabled = true
port_base = 0
mdns = false
[stream]
encoder = "x264"
encoder_options = { preset = "ultrafast" }
"""


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# ---------------------------------------------------------------------------------
# host side
class _Host:
    def __init__(self, base: Path, config: str = HOST_TOML) -> None:
        from punktfunk_core.ipc import IpcClient
        from punktfunk_core.paths import Paths

        self.base = base
        self.paths = Paths(base / "cfg", base / "run")
        env = dict(os.environ, PUNKTFUNK_CONFIG_DIR=str(self.paths.config),
                   PUNKTFUNK_RUNTIME_DIR=str(self.paths.runtime))
        (base / "host.toml").write_text(config)
        self.log_path = base / "host.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "punktfunk_core.cli", "serve", "--gamestream", "-c",
                                      str(base / "host.toml"), "--no-console"], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.ipc = IpcClient(self.paths.ipc_endpoint, timeout=5.0)

    def call(self, cmd: str, **args: Any) -> Any:
        return self.ipc.call(cmd, **args)

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                return self.call("gamestream.status")
            except Exception:  # noqa: BLE001 - IPC or the GameStream plane still starting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"GameStream did not start in {timeout:.0f} s: {self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self.ipc.close()
            self._log.close()


def _client_cmd(op: str, host: _Host, client_dir: Path, *args: str) -> list[str]:
    ports = host.call("gamestream.status")["ports"]
    return [sys.executable, str(HERE), op, "--dir", str(client_dir), "--http", str(ports["http"]),
            "--https", str(ports["https"]), "--cert", str(host.paths.config / "gamestream" / "host-cert.pem"), *args]


def _finish(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"moonlight client timed out after {timeout:.0f} s: {err[-800:]}") from None
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"moonlight client gave no result (rc {proc.returncode}): {err[-800:]}")
    res = json.loads(lines[-1])
    if not res.get("ok"):
        raise RuntimeError(f"moonlight client failed: {res.get('error')}: {res.get('detail')} {err[-500:]}")
    return res


def _pair(host: _Host, client_dir: Path) -> None:
    proc = subprocess.Popen(_client_cmd("pair", host, client_dir, "--pin", PIN), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not host.call("gamestream.status").get("pairing"):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            host.call("pairing.pin", protocol="gamestream", pin=PIN)
        _finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _stream(host: _Host, client_dir: Path, w: int, h: int, seconds: float) -> dict[str, Any]:
    bitrate = 6000 if h <= 720 else 12000
    proc = subprocess.Popen(_client_cmd("stream", host, client_dir, "--width", str(w), "--height", str(h),
                                        "--fps", "60", "--bitrate", str(bitrate), "--seconds", str(seconds)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res = _finish(proc, seconds + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    frames = [f for f in res["frames"] if f["t"] >= WARMUP_S]
    span = res["frames"][-1]["t"] - res["frames"][0]["t"]
    # 0.1 ms units on the wire (moonlight-common-c's frameHostProcessingLatency)
    host_ms = [f["lat"] / 10.0 for f in frames if f["lat"]]
    e2e_ms = [f["e2e_us"] / 1e3 for f in frames if f["e2e_us"] is not None]
    return {
        "resolution": f"{w}×{h}@60", "bitrate_kbps": bitrate, "seconds": seconds,
        "frames": len(res["frames"]), "frames_measured": len(frames), "frames_stamped": len(e2e_ms),
        "client_fps": round((len(res["frames"]) - 1) / span, 2) if span > 0 else None,
        "host_p50_ms": _pct(host_ms, 0.5), "host_p99_ms": _pct(host_ms, 0.99),
        "e2e_p50_ms": _pct(e2e_ms, 0.5), "e2e_p99_ms": _pct(e2e_ms, 0.99),
        "host_mean_ms": statistics.fmean(host_ms) if host_ms else None,
        "decode_s": res.get("decode_s"), "connect_s": res.get("connect_s"),
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure; a table dict for the latency report, or {"note": reason}."""
    if importlib.util.find_spec("moonlight_python") is None:
        return {"note": "Moonlight latency: moonlight-python is not installed (pip install moonlight-python)"}
    seconds = 3.0 if quick else 10.0
    sizes = [(1280, 720)] if quick else [(1280, 720), (1920, 1080)]
    base = Path(tempfile.mkdtemp(prefix="pf-moon-"))
    os.chmod(base, 0o700)
    host = None
    rows: list[dict[str, Any]] = []
    try:
        host = _Host(base)
        host.wait_ready()
        client_dir = base / "client"
        _pair(host, client_dir)
        for w, h in sizes:
            rows.append(_stream(host, client_dir, w, h, seconds))
    except Exception as exc:  # noqa: BLE001 - the report says why
        return {"note": f"Moonlight latency could not be measured: {type(exc).__name__}: {str(exc)[:600]}"}
    finally:
        if host is not None:
            host.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "title": (f"The same host seen by moonlight-python over GameStream (H.264, x264 ultrafast, loopback, "
                  f"{seconds:.0f} s per resolution, first {WARMUP_S} s left out)"),
        "headers": ["resolution", "host processing p50 ms (Moonlight)", "host processing p99 ms", "e2e p50 ms",
                    "e2e p99 ms", "frames"],
        "rows": [[r["resolution"], r["host_p50_ms"], r["host_p99_ms"], r["e2e_p50_ms"], r["e2e_p99_ms"],
                  r["frames"]] for r in rows],
        "raw": rows,
    }


# ---------------------------------------------------------------------------------
# client side (runs in its own process)
def _client_main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["pair", "stream"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--https", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--pin", default=PIN)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=60)
    ap.add_argument("--bitrate", type=int, default=6000)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args(argv)

    from moonlight_python.http_client import NvHTTP
    from moonlight_python.identity import Identity

    ident = Identity(a.dir)
    http = NvHTTP("127.0.0.1", ident, http_port=a.http, https_port=a.https)
    if a.op == "pair":
        from moonlight_python.pairing import pair as ml_pair

        info = http.parse_server_info(http.get_server_info())
        ml_pair(http, ident, a.pin, info, timeout=60)
        return {"ok": True}
    http.server_cert_pem = Path(a.cert).read_bytes()
    return _client_stream(a, http)


#: Limelight.h's channel masks: stereo FL FR; 5.1 + FC LFE BL BR; 7.1 + SL SR
AUDIO_CHANNEL_MASKS = {2: 0x3, 6: 0x3F, 8: 0x63F}


def start_stream(http: Any, info: Any, *, codec: str, width: int, height: int, fps: int, bitrate: int,
                 packet_size: int, audio: bool = False, resume: bool = False,
                 channels: int = 2, app: str = "Desktop") -> tuple[Any, str, float]:
    """Launch ``app`` (by name) and start moonlight-common-c's stream on it, as a
    Moonlight client does: ``(session, "launch" | "resume", seconds to
    connect)``. An app already running is resumed with ``resume``, else quit
    first. ``channels`` (2, 6, 8) is the audioConfiguration asked for.
    Shared with the test client (tests/gamestream_helpers.py)."""
    import moonlight_python.stream as mstream
    from moonlight_python.config import CODEC_MAP, StreamConfig

    apps = {x.name: x.id for x in http.get_app_list()}
    fmt = CODEC_MAP[codec]
    config = StreamConfig(width=width, height=height, fps=fps, bitrate_kbps=bitrate, packet_size=packet_size,
                          supported_video_formats=fmt, codec=codec,
                          audio_configuration=(AUDIO_CHANNEL_MASKS[channels] << 16) | (channels << 8) | 0xCA)
    key, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    session = mstream.StreamingSession()
    params = session.get_launch_query_params()
    if info.current_game and resume:
        url = http.resume_app(key, iv, config.surroundaudioinfo, params)
        launched = "resume"
    else:
        if info.current_game:
            http.quit_app()
        url = http.launch_app(apps[app], width, height, fps, bitrate, fmt, key, iv,
                              config.surroundaudioinfo, config.sops, config.local_audio, params)
        launched = "launch"
    t0 = time.monotonic()
    session.start(address="127.0.0.1", app_version=info.app_version, gfe_version=info.gfe_version,
                  server_codec_mode_support=info.server_codec_mode_support, rtsp_session_url=url or "",
                  config=config, ri_aes_key=key, ri_aes_iv=iv, capture_audio=audio)
    return session, launched, time.monotonic() - t0


def wake_when_terminated(session: Any) -> Any:
    """LiWaitForNextVideoFrame does not return when the host ends the stream
    while no frame is in flight: wake it then (what a real client's UI does).
    Returns the event that stops the watcher."""
    import threading

    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            if session.is_terminated:
                session.wake()

    threading.Thread(target=watch, daemon=True).start()
    return done


def _client_stream(a: argparse.Namespace, http: Any) -> dict[str, Any]:
    import av

    from punktfunk_core.media.stamp import capture_us_now, latency_us, read_stamp_from_av_frame

    info = http.parse_server_info(http.get_server_info(use_https=True))
    session, _, connect_s = start_stream(http, info, codec="h264", width=a.width, height=a.height, fps=a.fps,
                                         bitrate=a.bitrate, packet_size=1392)
    done = wake_when_terminated(session)
    ctx = av.CodecContext.create("h264", "r")
    frames: list[dict[str, Any]] = []
    decode_s = 0.0
    terminated = None
    deadline = time.monotonic() + a.seconds
    first = None
    try:
        while time.monotonic() < deadline:
            raw = session.pull_frame()
            if raw is None:
                if session.is_terminated:
                    terminated = session.termination_error
                    break
                continue
            t = time.perf_counter()
            if first is None:
                first = time.monotonic()
            e2e = None
            for f in ctx.decode(av.Packet(raw.annex_b_data)):
                now = capture_us_now()
                st = read_stamp_from_av_frame(f)
                if st is not None:
                    e2e = latency_us(st[1], now)
            decode_s += time.perf_counter() - t
            frames.append({"n": raw.frame_number, "type": raw.frame_type, "lat": raw.host_processing_latency_us,
                           "e2e_us": e2e, "t": round(time.monotonic() - first, 4)})
    finally:
        done.set()
        session.stop()
        try:
            http.quit_app()
        except Exception:  # noqa: BLE001 - the host ends the app when it stops anyway
            pass
    if not frames:
        return {"ok": False, "error": "no_frames", "detail": f"no video frame arrived (terminated: {terminated})"}
    return {"ok": True, "connect_s": round(connect_s, 3), "decode_s": round(decode_s, 3), "frames": frames,
            "terminated": terminated}


if __name__ == "__main__":
    try:
        result = _client_main(sys.argv[1:])
    except Exception as exc:  # noqa: BLE001 - reported to the harness as data
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:500]}
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # moonlight-common-c threads must not keep the process alive
