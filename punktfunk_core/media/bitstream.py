"""Tiny bitstream inspection: is this access unit a keyframe?

Used where an encoder library returns bare bytes without a picture type
(PyNvVideoCodec) and by tests as an independent check of the flag the
encoder reports. Looks only at NAL/OBU headers; never raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_START = re.compile(b"\x00\x00\x01")


def _nal_payloads(data: bytes) -> Iterator[int]:
    for m in _START.finditer(data):
        if m.end() < len(data):
            yield m.end()


def h264_is_idr(data: bytes) -> bool:
    """True when the Annex-B access unit holds an IDR slice (NAL type 5)."""
    return any(data[i] & 0x1F == 5 for i in _nal_payloads(data))


def hevc_is_irap(data: bytes) -> bool:
    """True when the Annex-B access unit holds an IRAP picture (NAL types 16-23)."""
    return any(16 <= (data[i] >> 1) & 0x3F <= 23 for i in _nal_payloads(data))


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise ValueError("truncated leb128")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("leb128 too long")


def av1_is_key(data: bytes) -> bool:
    """True when the AV1 temporal unit (low-overhead OBU format) starts a
    key frame: a frame / frame-header OBU with frame_type KEY_FRAME that is
    shown (or a sequence header followed by one)."""
    pos = 0
    try:
        while pos < len(data):
            header = data[pos]
            obu_type = (header >> 3) & 0xF
            has_ext = header & 0x04
            has_size = header & 0x02
            pos += 2 if has_ext else 1
            if has_size:
                size, pos = _leb128(data, pos)
            else:
                size = len(data) - pos
            if obu_type in (3, 6) and pos < len(data):  # FRAME_HEADER, FRAME
                first = data[pos]
                show_existing = first >> 7
                frame_type = (first >> 5) & 0x3
                return not show_existing and frame_type == 0
            pos += size
    except ValueError:
        return False
    return False


def is_keyframe(codec: str, data: bytes) -> bool:
    """Keyframe test for ``codec`` in ("h264", "hevc", "av1")."""
    if codec == "h264":
        return h264_is_idr(data)
    if codec == "hevc":
        return hevc_is_irap(data)
    if codec == "av1":
        return av1_is_key(data)
    raise ValueError(f"unknown codec {codec!r}")
