"""GameStream wire formats shared by its protocols: untrusted-input errors,
field parsers, the codec bits, and the RTP video and audio layouts.

The protocols have their own modules: ``wire_nvhttp`` (HTTP/HTTPS queries and
XML answers), ``wire_rtsp`` (RTSP requests, SDP, the ANNOUNCE, UDP pings) and
``wire_control`` (the encrypted control stream). Every parser takes untrusted
bytes and either returns a value or raises :class:`BadInput`; the servers
count and drop on BadInput, and no module here touches a socket. Layouts
follow docs/gamestream.md (facts from the public Sunshine /
moonlight-common-c sources).
"""

from __future__ import annotations

import re

#: ServerCodecModeSupport bits (serverinfo) and the SDP's codec lines
SCM_H264 = 0x00001
SCM_HEVC = 0x00100
SCM_AV1_MAIN8 = 0x10000

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


def parse_hex(value: str | None, *, name: str, min_len: int = 0, max_len: int = 65536,
              exact: int | None = None) -> bytes:
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
