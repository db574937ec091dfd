"""The GameStream RTSP server: how a launched app's stream is negotiated.

Moonlight sends one request per TCP connection: OPTIONS, DESCRIBE (our SDP:
codecs, encryption offered), SETUP for audio, video and control (the ports,
the ping payloads and the control connect data of the current stream),
ANNOUNCE (what the client wants: mode, codec, packet size, encryption) and
PLAY. Only the address that launched the current stream is answered. Each
connection is admitted through a ``ConnectionGate``: pending until its request
has arrived, then answered within the same time. Bad requests are counted
(``rtsp_bad``) and answered 400.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

from punktfunk_core.admission import ConnectionGate

from punktfunk_gamestream import wire, wire_rtsp
from punktfunk_gamestream.wire import BadInput

if TYPE_CHECKING:
    from punktfunk_gamestream.plane import GameStreamPlane

log = logging.getLogger("punktfunk.gamestream.rtsp")

#: RTSP answers carry one fixed session id: one stream at a time
SESSION_HEADER = {"Session": "DEADBEEFCAFE;timeout = 90"}


class RtspServer:
    def __init__(self, plane: GameStreamPlane, bind: str, port: int) -> None:
        self.plane = plane
        cfg = plane.config
        self.request_timeout_s = float(cfg.get("request_timeout_s", 5.0))
        self._sock = socket.create_server((bind, port), reuse_port=False)
        self._sock.settimeout(0.5)
        self.port: int = self._sock.getsockname()[1]
        self.gate = ConnectionGate("rtsp", max_pending=16,
                                   max_pending_per_source=int(cfg.get("connections_per_source", 8)),
                                   pending_timeout_s=self.request_timeout_s, max_established=16, count=plane.count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="gamestream-rtsp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        self.gate.close()
        self._sock.close()

    # -- connections -------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self.gate.admit(conn, addr):
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, addr), name="gamestream-rtsp-conn", daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple) -> None:
        plane = self.plane
        conn.settimeout(10.0)
        buf = b""
        try:
            while True:
                try:
                    parsed = wire_rtsp.parse_rtsp(buf)
                except BadInput as exc:
                    plane.count("rtsp_bad")
                    log.info("bad RTSP request from %s: %s", addr[0], exc)
                    conn.sendall(wire_rtsp.rtsp_response("0", 400, "Bad Request"))
                    return
                if parsed is not None:
                    break
                chunk = conn.recv(8192)
                if not chunk:
                    if buf:
                        plane.count("rtsp_bad")
                    return
                buf += chunk
            req, _used = parsed
            if not self.gate.establish(addr, self.request_timeout_s):
                plane.count("rtsp_refused_busy")
                return
            conn.sendall(self.handle(req, addr[0]))
        except OSError:
            plane.count("rtsp_io_errors")
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
            self.gate.release(addr)

    # -- requests -------------------------------------------------------------------------------
    def handle(self, req: wire_rtsp.RtspRequest, ip: str) -> bytes:
        """The answer to one request from ``ip``."""
        plane = self.plane
        stream = plane.current_stream()
        cseq = req.cseq if req.cseq.isdigit() else "0"
        reply = wire_rtsp.rtsp_response
        if stream is None or stream.client_ip != ip:
            plane.count("rtsp_unexpected")
            return reply(cseq, 454, "Session Not Found")
        m = req.method
        if m == "OPTIONS":
            return reply(cseq, headers={"Public": "OPTIONS, DESCRIBE, SETUP, ANNOUNCE, PLAY"})
        if m == "DESCRIBE":
            return reply(cseq, headers={"Content-Type": "application/sdp"}, body=self.describe_sdp())
        if m == "SETUP":
            ports, t = plane.ports, req.target
            if "streamid=audio" in t:
                return reply(cseq, headers={**SESSION_HEADER, "Transport": f"server_port={ports['audio']}",
                                            "X-SS-Ping-Payload": stream.audio_ping.decode()})
            if "streamid=video" in t:
                return reply(cseq, headers={**SESSION_HEADER, "Transport": f"server_port={ports['video']}",
                                            "X-SS-Ping-Payload": stream.video_ping.decode()})
            if "streamid=control" in t:
                return reply(cseq, headers={**SESSION_HEADER, "Transport": f"server_port={ports['control']}",
                                            "X-SS-Connect-Data": str(stream.connect_data)})
            plane.count("rtsp_bad")
            return reply(cseq, 404, "Stream Not Found")
        if m == "ANNOUNCE":
            try:
                ann = wire_rtsp.parse_announce(req.body)
            except BadInput as exc:
                plane.count("rtsp_bad")
                log.info("bad ANNOUNCE from %s: %s", ip, exc)
                return reply(cseq, 400, "Bad Request")
            scm = plane.codec_support()
            if ann.codec != "h264" and not (scm & (wire.SCM_HEVC if ann.codec == "hevc" else wire.SCM_AV1_MAIN8)):
                return reply(cseq, 415, "Unsupported Media Type")
            stream.announce = ann
            log.info("GameStream ANNOUNCE: %dx%d@%d %s %d kbit/s packet %d, encryption %#x, features %#x, "
                     "audio %d channels%s", ann.width, ann.height, ann.fps, ann.codec, ann.bitrate_kbps,
                     ann.packet_size, ann.encryption_enabled, ann.feature_flags, ann.audio_channels,
                     " high quality" if ann.audio_high_quality else "")
            return reply(cseq, headers=SESSION_HEADER)
        if m == "PLAY":
            if stream.announce is None:
                return reply(cseq, 455, "Method Not Valid In This State")
            plane.play(stream)
            return reply(cseq, headers=SESSION_HEADER)
        plane.count("rtsp_bad")
        return reply(cseq, 501, "Not Implemented")

    def feature_flags(self) -> int:
        """Touch and pen packets are asked for when ``[input]`` takes touch input; else a
        client turns touches into mouse input itself. Controller touchpads stay off: no
        builtin backend gives a pad one."""
        inp = self.plane.host.settings.input
        return wire_rtsp.SS_FF_PEN_TOUCH_EVENTS if inp.touch and inp.backend != "none" else 0

    def describe_sdp(self) -> bytes:
        supported = wire_rtsp.SS_ENC_CONTROL_V2 | wire_rtsp.SS_ENC_VIDEO | wire_rtsp.SS_ENC_AUDIO
        requested = supported if self.plane.config.get("require_encryption", False) else 0
        lines = [
            "v=0", "o=- 0 0 IN IP4 0.0.0.0", "s=punktfunk", "t=0 0",
            f"a=x-ss-general.featureFlags:{self.feature_flags()}",
            f"a=x-ss-general.encryptionSupported:{supported}",
            f"a=x-ss-general.encryptionRequested:{requested}",
        ]
        scm = self.plane.codec_support()
        if scm & wire.SCM_HEVC:
            lines.append("a=fmtp:96 sprop-parameter-sets=AAAAAU")
        if scm & wire.SCM_AV1_MAIN8:
            lines.append("a=rtpmap:98 AV1/90000")
        lines.append("m=video 0 RTP/AVP 96")
        lines.append("m=audio 0 RTP/AVP 97")
        lines.extend(wire_rtsp.surround_params(_opus_layouts()))
        return ("\r\n".join(lines) + "\r\n").encode()


def _opus_layouts() -> list:
    """The Opus layouts the audio pipeline encodes in (what the DESCRIBE offers)."""
    from punktfunk_core.media.audio import OPUS_LAYOUTS

    return list(OPUS_LAYOUTS.values())
