"""GameStream wire formats: constants, parsers and builders (no sockets here).

Every parser takes untrusted bytes and either returns a value or raises
:class:`BadInput`; the servers count and drop on BadInput. Layouts follow
docs/gamestream.md (facts from the public Sunshine / moonlight-common-c
sources).
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape as _sax_escape
import struct
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: a negative 4th field marks a Sunshine-style host (encryption negotiation,
#: multi-block FEC, 8-byte frame header, extended control types)
APP_VERSION = "7.1.431.-1"
GFE_VERSION = "3.23.0.74"

SCM_H264 = 0x00001
SCM_HEVC = 0x00100
SCM_AV1_MAIN8 = 0x10000

#: x-ss-general.encryption* bits
SS_ENC_CONTROL_V2 = 0x01
SS_ENC_VIDEO = 0x02
SS_ENC_AUDIO = 0x04
#: x-nv-general.featureFlags bit: the client wants AES-CBC audio
NVFF_AUDIO_ENCRYPTION = 0x20

# control stream message types (host <-> client, encrypted control stream)
CTRL_PING = 0x0200
CTRL_LOSS_STATS = 0x0201
CTRL_FRAME_STATS = 0x0204
CTRL_INPUT = 0x0206
CTRL_INVALIDATE_REF = 0x0301
CTRL_REQUEST_IDR = 0x0302
CTRL_START_A = 0x0305
CTRL_START_B = 0x0307
CTRL_TERMINATION = 0x0109
CTRL_FEC_STATUS = 0x5502
#: NVST_DISCONN_SERVER_TERMINATED_CLOSED: the client reports a graceful end
TERMINATION_GRACEFUL = 0x80030023

# video
VIDEO_FLAG_PIC_DATA = 0x1
VIDEO_FLAG_EOF = 0x2
VIDEO_FLAG_SOF = 0x4
RTP_HEADER = 16  # 12-byte RTP header + 4 reserved (extension bit set)
NV_HEADER = 16
ENC_VIDEO_HEADER = 32  # iv 12, frame u32, tag 16
FRAME_HEADER = 8
MAX_FEC_BLOCKS = 4

# audio
AUDIO_PT = 97
AUDIO_FEC_PT = 127
AUDIO_DATA_SHARDS = 4
AUDIO_FEC_SHARDS = 2
#: the fixed parity rows moonlight-common-c uses for audio RS(4,2)
AUDIO_FEC_MATRIX = ((0x77, 0x40, 0x38, 0x0E), (0xC7, 0xA7, 0x0D, 0x6C))


class BadInput(ValueError):
    """Untrusted input that does not parse; counted and dropped by the caller."""


# -- nvhttp ----------------------------------------------------------------------
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,64}$")
MAX_QUERY = 16384


def parse_query(qs: str) -> dict[str, str]:
    """Parse an nvhttp query string strictly (bounded, no duplicate keys)."""
    if len(qs) > MAX_QUERY:
        raise BadInput(f"query of {len(qs)} characters is too long")
    out: dict[str, str] = {}
    if not qs:
        return out
    for part in qs.split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        try:
            key = unquote_plus(key, errors="strict")
            value = unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            raise BadInput("query is not valid UTF-8") from None
        if not _KEY_RE.match(key):
            raise BadInput(f"bad query key {key[:32]!r}")
        if key in out:
            raise BadInput(f"duplicate query key {key!r}")
        if any(ord(c) < 32 for c in value):
            raise BadInput(f"control character in {key!r}")
        out[key] = value
    return out


def parse_hex(value: str | None, *, name: str, min_len: int = 0, max_len: int = 65536, exact: int | None = None) -> bytes:
    if value is None:
        raise BadInput(f"{name} is missing")
    if len(value) % 2 or len(value) > 2 * max_len or not re.fullmatch(r"[0-9a-fA-F]*", value):
        raise BadInput(f"{name} is not hex")
    raw = bytes.fromhex(value)
    if exact is not None and len(raw) != exact:
        raise BadInput(f"{name} must be {exact} bytes, got {len(raw)}")
    if len(raw) < min_len:
        raise BadInput(f"{name} must be at least {min_len} bytes")
    return raw


def parse_mode(mode: str | None) -> tuple[int, int, int]:
    """``WxHxFPS`` (fps may be fractional in some clients: rounded)."""
    if not mode:
        raise BadInput("mode is missing")
    m = re.fullmatch(r"(\d{2,5})x(\d{2,5})x(\d{1,3}(?:\.\d{1,3})?)", mode)
    if not m:
        raise BadInput(f"bad mode {mode[:32]!r}")
    w, h, fps = int(m.group(1)), int(m.group(2)), round(float(m.group(3)))
    if not (16 <= w <= 8192 and 16 <= h <= 8192 and 1 <= fps <= 480):
        raise BadInput(f"mode {mode!r} out of range")
    return w, h, fps


def parse_int(value: str | None, *, name: str, lo: int = -(2**31), hi: int = 2**32 - 1, base: int = 10) -> int:
    if value is None:
        raise BadInput(f"{name} is missing")
    try:
        n = int(value, base)
    except ValueError:
        raise BadInput(f"{name} is not an integer") from None
    if not lo <= n <= hi:
        raise BadInput(f"{name} {n} out of range")
    return n


def xml_escape(s: str) -> str:
    return _sax_escape(s, {'"': "&quot;"})


def xml_response(fields: dict[str, object] | list[tuple[str, object]], status: int = 200, message: str = "OK",
                 inner: str = "") -> bytes:
    items = fields.items() if isinstance(fields, dict) else fields
    body = "".join(f"<{k}>{xml_escape(str(v))}</{k}>" for k, v in items)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<root status_code="{status}" '
            f'status_message="{xml_escape(message)}">{body}{inner}</root>').encode()


# -- RTSP --------------------------------------------------------------------------
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
        extra=a,
    )


# -- UDP pings -------------------------------------------------------------------
def parse_ping(data: bytes) -> tuple[bytes, int]:
    """A client ping on the video/audio port: (16-byte payload, BE sequence).

    Legacy clients send the 4 bytes ``PING``; they are returned with seq 0."""
    if len(data) == 20:
        return bytes(data[:16]), struct.unpack_from(">I", data, 16)[0]
    if data == b"PING":
        return b"PING", 0
    raise BadInput(f"ping of {len(data)} bytes")


# -- control stream ------------------------------------------------------------------
def _control_iv(seq: int, origin: bytes) -> bytes:
    iv = bytearray(12)
    struct.pack_into("<I", iv, 0, seq & 0xFFFFFFFF)
    iv[10] = origin[0]
    iv[11] = ord("C")
    return bytes(iv)


def seal_control(aead: AESGCM, seq: int, msg_type: int, payload: bytes, origin: bytes = b"H") -> bytes:
    """Encrypted control message (V2 IV): 0x0001, len, seq, tag, ciphertext."""
    plain = struct.pack("<HH", msg_type, len(payload)) + payload
    ct = aead.encrypt(_control_iv(seq, origin), plain, None)
    body, tag = ct[:-16], ct[-16:]
    return struct.pack("<HHI", 0x0001, 4 + 16 + len(body), seq & 0xFFFFFFFF) + tag + body


def open_control(aead: AESGCM, data: bytes, origin: bytes = b"C") -> tuple[int, int, bytes]:
    """Decrypt one client control message: (seq, type, payload)."""
    if len(data) < 8 + 16 + 4:
        raise BadInput(f"control message of {len(data)} bytes is too short")
    kind, length, seq = struct.unpack_from("<HHI", data, 0)
    if kind != 0x0001:
        raise BadInput(f"unencrypted control message type {kind:#06x}")
    if length != len(data) - 4:
        raise BadInput(f"control length {length} does not match {len(data) - 4}")
    tag, body = data[8:24], data[24:]
    try:
        plain = aead.decrypt(_control_iv(seq, origin), bytes(body) + bytes(tag), None)
    except InvalidTag:
        raise BadInput("control message fails authentication") from None
    if len(plain) < 4:
        raise BadInput("control plaintext too short")
    msg_type, plen = struct.unpack_from("<HH", plain, 0)
    if plen != len(plain) - 4:
        raise BadInput(f"control payload length {plen} does not match {len(plain) - 4}")
    return seq, msg_type, plain[4:]


@dataclass(slots=True)
class FecStatus:
    frame: int
    highest_seq: int
    next_contiguous_seq: int
    missing_before_highest: int
    total_data: int
    total_parity: int
    received_data: int
    received_parity: int
    fec_percent: int
    block_index: int
    block_count: int

    @property
    def data_missing(self) -> int:
        return max(0, self.total_data - self.received_data)

    @property
    def recovered(self) -> bool:
        return self.received_data + self.received_parity >= self.total_data


def parse_fec_status(payload: bytes) -> FecStatus:
    if len(payload) < 21:
        raise BadInput(f"FEC status of {len(payload)} bytes")
    v = struct.unpack_from(">IHHHHHHHBBB", payload, 0)
    st = FecStatus(*v)
    if st.total_data > 1023 or st.received_data > st.total_data or st.received_parity > st.total_parity + 255:
        raise BadInput("FEC status counters inconsistent")
    return st
