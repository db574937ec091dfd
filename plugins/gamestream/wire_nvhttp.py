"""nvhttp wire format: strict query strings and the XML answers (no sockets here)."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape as _sax_escape

from punktfunk_gamestream.wire import BadInput

#: a negative 4th field marks a Sunshine-style host (encryption negotiation,
#: multi-block FEC, 8-byte frame header, extended control types)
APP_VERSION = "7.1.431.-1"
GFE_VERSION = "3.23.0.74"

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


def xml_escape(s: str) -> str:
    return _sax_escape(s, {'"': "&quot;"})


def xml_response(fields: dict[str, object] | list[tuple[str, object]], status: int = 200, message: str = "OK",
                 inner: str = "") -> bytes:
    items = fields.items() if isinstance(fields, dict) else fields
    body = "".join(f"<{k}>{xml_escape(str(v))}</{k}>" for k, v in items)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<root status_code="{status}" '
            f'status_message="{xml_escape(message)}">{body}{inner}</root>').encode()
