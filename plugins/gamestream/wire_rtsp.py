"""RTSP/SDP wire format: requests and answers, the client's ANNOUNCE, and the
UDP pings that tell the host where the client receives (no sockets here)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from punktfunk_gamestream.wire import BadInput, parse_int

#: x-ss-general.encryption* bits
SS_ENC_CONTROL_V2 = 0x01
SS_ENC_VIDEO = 0x02
SS_ENC_AUDIO = 0x04
#: x-nv-general.featureFlags bit: the client wants AES-CBC audio
NVFF_AUDIO_ENCRYPTION = 0x20
#: x-ss-general.featureFlags bits the host announces in DESCRIBE (moonlight-common-c
#: LI_FF_*): with PEN_TOUCH the client sends touch and pen packets instead of making mouse input
SS_FF_PEN_TOUCH_EVENTS = 0x01
SS_FF_CONTROLLER_TOUCH_EVENTS = 0x02

MAX_RTSP = 65536
_RTSP_LINE = re.compile(r"^([A-Z_]{3,16}) (\S{1,512}) RTSP/1\.0$")


@dataclass(slots=True)
class RtspRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def cseq(self) -> str:
        return self.headers.get("cseq", "0")


def parse_rtsp(buf: bytes) -> tuple[RtspRequest, int] | None:
    """Parse one request from ``buf``: (request, bytes used), None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_RTSP:
            raise BadInput("RTSP header too long")
        return None
    try:
        head = buf[:end].decode("ascii")
    except UnicodeDecodeError:
        raise BadInput("RTSP header is not ASCII") from None
    lines = head.split("\r\n")
    m = _RTSP_LINE.match(lines[0])
    if not m:
        raise BadInput(f"bad RTSP request line {lines[0][:64]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or len(name) > 64 or not name.replace("-", "").isalnum():
            raise BadInput(f"bad RTSP header line {line[:64]!r}")
        headers[name.strip().lower()] = value.strip()
    length = 0
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise BadInput("bad Content-length") from None
        if not 0 <= length <= MAX_RTSP:
            raise BadInput("Content-length out of range")
    total = end + 4 + length
    if len(buf) < total:
        return None
    return RtspRequest(m.group(1), m.group(2), headers, bytes(buf[end + 4:total])), total


def rtsp_response(cseq: str, status: int = 200, reason: str = "OK", headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    lines = [f"RTSP/1.0 {status} {reason}", f"CSeq: {cseq}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_sdp_attributes(body: bytes) -> dict[str, str]:
    """``a=name:value`` lines of an SDP body (moonlight adds a trailing space)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("SDP is not UTF-8") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("a="):
            continue
        name, sep, value = line[2:].partition(":")
        if sep and name and len(name) <= 128:
            out[name] = value.strip()
    return out


@dataclass(slots=True)
class AnnouncedStream:
    """What the client's ANNOUNCE asks for."""

    width: int
    height: int
    fps: int
    packet_size: int
    bitrate_kbps: int
    codec: str
    min_fec_packets: int
    encryption_enabled: int
    feature_flags: int
    audio_packet_ms: int
    #: x-nv-audio.surround.numChannels: 2, 6 (5.1) or 8 (7.1)
    audio_channels: int = 2
    #: x-nv-audio.surround.AudioQuality = 1: the high-quality layout the DESCRIBE offered
    audio_high_quality: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def video_encrypted(self) -> bool:
        return bool(self.encryption_enabled & SS_ENC_VIDEO)

    @property
    def audio_encrypted(self) -> bool:
        return bool(self.feature_flags & NVFF_AUDIO_ENCRYPTION) or bool(self.encryption_enabled & SS_ENC_AUDIO)


def _attr_int(attrs: dict[str, str], name: str, default: int | None, lo: int, hi: int) -> int:
    raw = attrs.get(name)
    if raw is None:
        if default is None:
            raise BadInput(f"ANNOUNCE lacks {name}")
        return default
    return parse_int(raw, name=name, lo=lo, hi=hi, base=0)  # SDP values may be hex (0x...)


def parse_announce(body: bytes) -> AnnouncedStream:
    a = parse_sdp_attributes(body)
    fmt = _attr_int(a, "x-nv-vqos[0].bitStreamFormat", 0, 0, 2)
    packet = _attr_int(a, "x-nv-video[0].packetSize", 1024, 256, 9000)
    if packet % 16:
        raise BadInput(f"packetSize {packet} is not a multiple of 16")
    channels = _attr_int(a, "x-nv-audio.surround.numChannels", 2, 1, 8)
    if channels not in AUDIO_CHANNELS:
        raise BadInput(f"numChannels {channels}: only 2 (stereo), 6 (5.1) and 8 (7.1) are offered")
    return AnnouncedStream(
        width=_attr_int(a, "x-nv-video[0].clientViewportWd", None, 16, 8192),
        height=_attr_int(a, "x-nv-video[0].clientViewportHt", None, 16, 8192),
        fps=_attr_int(a, "x-nv-video[0].maxFPS", 60, 1, 480),
        packet_size=packet,
        bitrate_kbps=_attr_int(a, "x-nv-vqos[0].bw.maximumBitrateKbps", 10000, 100, 1_000_000),
        codec=("h264", "hevc", "av1")[fmt],
        min_fec_packets=_attr_int(a, "x-nv-vqos[0].fec.minRequiredFecPackets", 0, 0, 64),
        encryption_enabled=_attr_int(a, "x-ss-general.encryptionEnabled", 0, 0, 0xFFFFFFFF),
        feature_flags=_attr_int(a, "x-nv-general.featureFlags", 0, 0, 0xFFFFFFFF),
        audio_packet_ms=_attr_int(a, "x-nv-aqos.packetDuration", 5, 5, 20),
        audio_channels=channels,
        audio_high_quality=_attr_int(a, "x-nv-audio.surround.AudioQuality", 0, 0, 1) == 1,
        extra=a,
    )


# -- surround (DESCRIBE) ---------------------------------------------------------
#: the channel counts a client may ask for (Limelight.h's AUDIO_CONFIGURATION_*)
AUDIO_CHANNELS = (2, 6, 8)


class OpusLayoutLike(Protocol):
    # read-only: punktfunk_core.media.audio.OpusLayout is a frozen dataclass
    @property
    def channels(self) -> int: ...
    @property
    def streams(self) -> int: ...
    @property
    def coupled(self) -> int: ...
    @property
    def mapping(self) -> tuple[int, ...]: ...
    @property
    def high_quality(self) -> bool: ...


def surround_params(layouts: Iterable[OpusLayoutLike]) -> list[str]:
    """The DESCRIBE's ``a=fmtp:97 surround-params=`` lines: for each channel count above 2,
    the normal-quality layout, then the high-quality one (stereo has none; the client knows it).

    moonlight-common-c (``parseOpusConfigurations``) takes the first line for its channel count as
    normal quality and a second one as the offer of high quality. The value is channels, streams,
    coupled streams, then one digit per channel of the Opus mapping. A normal-quality mapping
    is read in GFE's order (FL FR FC RL RR SL SR LFE) and the client moves the last entry to
    index 3 (its order, ours: FL FR FC LFE RL RR SL SR); so LFE's entry is sent last here and
    the client gets our mapping back. High-quality mappings are taken as they are."""
    lines = []
    ordered = sorted((lay for lay in layouts if lay.channels > 2), key=lambda lay: (lay.channels, lay.high_quality))
    for lay in ordered:
        m = list(lay.mapping)
        if not lay.high_quality:
            m = m[:3] + m[4:] + [m[3]]
        if max(m, default=0) > 9 or lay.streams > 9:
            raise ValueError(f"surround-params has one digit per value: {lay}")
        lines.append(f"a=fmtp:97 surround-params={lay.channels}{lay.streams}{lay.coupled}{''.join(map(str, m))}")
    return lines


# -- UDP pings -------------------------------------------------------------------
def parse_ping(data: bytes) -> tuple[bytes, int]:
    """A client ping on the video/audio port: (16-byte payload, BE sequence).

    Legacy clients send the 4 bytes ``PING``; they are returned with seq 0."""
    if len(data) == 20:
        return bytes(data[:16]), struct.unpack_from(">I", data, 16)[0]
    if data == b"PING":
        return b"PING", 0
    raise BadInput(f"ping of {len(data)} bytes")
