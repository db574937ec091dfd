"""punktfunk/1 wire format: control-message framing, data-packet header,
shard layout, nonces, key derivation and the replay window.

Everything a second implementation needs is specified in
``docs/protocol-native.md``; this module is the reference for it. Nothing here
does I/O except :class:`MessageReader` (which reads from a socket it is given)
and nothing here raises anything but :class:`ProtocolError` (and its
subclasses) on bad input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from punktfunk_core.adaptive import fixed_parity
from punktfunk_core.tls import cert_fingerprint

PROTOCOL_VERSION = "punktfunk/1"
#: versions this implementation speaks, best first
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)

# -- control plane -------------------------------------------------------------------
#: control messages larger than this are refused from their length prefix alone
MAX_CONTROL_MESSAGE = 64 * 1024
_LEN = struct.Struct("!I")
#: set in a length prefix: the body is a binary input batch (client → host), not JSON; the
#: reader hands it on as ``{"type": "input", "batch": <bytes>}`` (docs/protocol-native.md, "Input")
BINARY_INPUT = 0x8000_0000


class ProtocolError(Exception):
    """The peer sent something that is not valid punktfunk/1."""


class MessageTooLarge(ProtocolError):
    pass


def encode_message(msg: dict[str, Any]) -> bytes:
    """One control message: 4-byte big-endian length, then compact UTF-8 JSON."""
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("a control message is a JSON object with a string 'type'")
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > MAX_CONTROL_MESSAGE:
        raise MessageTooLarge(f"control message of {len(body)} bytes exceeds {MAX_CONTROL_MESSAGE}")
    return _LEN.pack(len(body)) + body


def encode_input_batch(batch: bytes) -> bytes:
    """One control frame carrying a binary input batch (plugins/native/input.py encodes it)."""
    if not 0 < len(batch) <= MAX_CONTROL_MESSAGE:
        raise MessageTooLarge(f"input batch of {len(batch)} bytes is not 1..{MAX_CONTROL_MESSAGE}")
    return _LEN.pack(BINARY_INPUT | len(batch)) + batch


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse one message body (without its length prefix)."""
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"control message is not UTF-8 JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("control message is not a JSON object")
    if not isinstance(msg.get("type"), str) or not msg["type"]:
        raise ProtocolError("control message has no string 'type'")
    return msg


class MessageReader:
    """Incremental decoder of length-prefixed control messages.

    ``feed(data)`` accepts any split of the byte stream and returns the
    complete messages. A prefix with :data:`BINARY_INPUT` set frames a binary
    input batch, returned undecoded. A length above :data:`MAX_CONTROL_MESSAGE` (or
    zero) raises :class:`MessageTooLarge`/:class:`ProtocolError` before the
    body is buffered.
    """

    def __init__(self, max_size: int = MAX_CONTROL_MESSAGE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._need: int | None = None
        self._binary = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while True:
            if self._need is None:
                if len(self._buf) < 4:
                    return out
                (n,) = _LEN.unpack_from(self._buf, 0)
                self._binary = bool(n & BINARY_INPUT)
                n &= ~BINARY_INPUT
                if n > self.max_size:
                    raise MessageTooLarge(f"peer announced a {n}-byte control message (limit {self.max_size})")
                if n == 0:
                    raise ProtocolError("empty control message")
                del self._buf[:4]
                self._need = n
            if len(self._buf) < self._need:
                return out
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._need = None
            out.append({"type": "input", "batch": body} if self._binary else decode_body(body))

    def read(self, sock: socket.socket) -> list[dict[str, Any]]:
        """Read what the socket has (honouring its timeout); [] on timeout.

        Raises :class:`EOFError` when the peer closed the connection.
        """
        try:
            data = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return []
        if not data:
            raise EOFError("peer closed the connection")
        return self.feed(data)


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(value: Any, what: str, max_len: int = 8192) -> bytes:
    """Decode a base64 field, raising ProtocolError naming it."""
    if not isinstance(value, str) or len(value) > max_len * 2:
        raise ProtocolError(f"field {what!r} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ProtocolError(f"field {what!r} is not valid base64") from None


def get_int(msg: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = msg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(f"field {key!r} must be an integer {lo}..{hi}")
    return v


#: SHA-256 of a DER certificate as lowercase hex: how peers name each other
fingerprint = cert_fingerprint


# -- pairing (SPAKE2 confirmation) ------------------------------------------------------
SPAKE_ID_CLIENT = b"punktfunk/1 client"
SPAKE_ID_HOST = b"punktfunk/1 host"


def pairing_confirm_keys(spake_key: bytes, host_fp: str, client_fp: str, msg_a: bytes,
                         msg_b: bytes) -> tuple[bytes, bytes]:
    """(client_key, host_key) for the pairing MACs, bound to both certificates."""
    info = b"punktfunk/1 pair confirm|" + host_fp.encode() + b"|" + client_fp.encode()
    salt = hashlib.sha256(msg_a + msg_b).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=info).derive(spake_key)
    return okm[:32], okm[32:]


def pairing_mac(key: bytes, role: bytes) -> bytes:
    return hmac.new(key, b"punktfunk/1 pair " + role, hashlib.sha256).digest()


# -- session keys ------------------------------------------------------------------------
DIR_HOST_TO_CLIENT = 1
DIR_CLIENT_TO_HOST = 2
#: the nonce direction of the host's audio datagrams: under the same h2c key as video, so the
#: two streams' sequence numbers (counted apart) never give the same nonce
DIR_AUDIO_HOST_TO_CLIENT = 3
KEY_BYTES = 16  # AES-128-GCM
TAG_BYTES = 16


def session_keys(shared: bytes, client_nonce: bytes, host_nonce: bytes, host_fp: str,
                 client_fp: str) -> tuple[bytes, bytes]:
    """(host→client key, client→host key) from the session's X25519 secret."""
    out = []
    for label in (b"h2c", b"c2h"):
        info = b"punktfunk/1 data " + label + b"|" + host_fp.encode() + b"|" + client_fp.encode()
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=client_nonce + host_nonce, info=info)
        out.append(hkdf.derive(shared))
    return out[0], out[1]


def nonce(direction: int, seq: int) -> bytes:
    """12-byte AES-GCM nonce: direction (u32) || packet sequence number (u64)."""
    return struct.pack("!IQ", direction, seq)


# -- data plane --------------------------------------------------------------------------
WIRE_VERSION = 1
PKT_VIDEO = 1
PKT_PROBE = 2
PKT_AUDIO = 3
#: packet types whose datagrams carry shards of an access unit (a video frame, an Opus packet)
SHARD_TYPES = (PKT_VIDEO, PKT_AUDIO)
FLAG_KEYFRAME = 0x01

#: version, type, flags, reserved, seq, frame_id, au_seq, au_len, shard_index,
#: data_count, parity_count, shard_len
HEADER = struct.Struct("!BBBBQIIIHHHH")
HEADER_BYTES = HEADER.size  # 32
assert HEADER_BYTES == 32
OVERHEAD = HEADER_BYTES + TAG_BYTES
MAX_SHARD_BYTES = 1408  # header + shard + tag stay under a 1500-byte MTU with IPv6
MAX_TOTAL_SHARDS = 65535  # GF(2^16) Reed–Solomon limit
MAX_DATA_SHARDS = 32768
MAX_PACKET = HEADER_BYTES + MAX_SHARD_BYTES + TAG_BYTES


@dataclass(slots=True)
class PacketHeader:
    type: int
    flags: int
    seq: int
    frame_id: int
    au_seq: int
    au_len: int
    shard_index: int
    data_count: int
    parity_count: int
    shard_len: int

    def pack(self) -> bytes:
        return HEADER.pack(WIRE_VERSION, self.type, self.flags, 0, self.seq, self.frame_id, self.au_seq,
                           self.au_len, self.shard_index, self.data_count, self.parity_count, self.shard_len)


class PacketRejected(ProtocolError):
    """A datagram failed validation; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_header(pkt: bytes | bytearray | memoryview) -> PacketHeader:
    """Validate and parse a datagram's header (before decryption).

    Raises :class:`PacketRejected` with reason ``truncated`` (too short or the
    length disagrees with the header) or ``malformed`` (impossible values).
    """
    n = len(pkt)
    if n < OVERHEAD:
        raise PacketRejected("truncated", f"{n} bytes")
    ver, ptype, flags, rsv, seq, frame_id, au_seq, au_len, idx, k, m, slen = HEADER.unpack_from(pkt, 0)
    if ver != WIRE_VERSION:
        raise PacketRejected("malformed", f"wire version {ver}")
    if rsv != 0 or flags & ~FLAG_KEYFRAME:
        raise PacketRejected("malformed", "reserved bits set")
    if ptype in SHARD_TYPES:
        if not 1 <= k <= MAX_DATA_SHARDS or k + m > MAX_TOTAL_SHARDS or idx >= k + m:
            raise PacketRejected("malformed", f"shard {idx} of {k}+{m}")
        if slen == 0 or slen % 2 or slen > MAX_SHARD_BYTES:
            raise PacketRejected("malformed", f"shard length {slen}")
        if au_len == 0 or au_len > k * slen or au_len <= (k - 1) * slen:
            raise PacketRejected("malformed", f"access unit of {au_len} bytes in {k}×{slen}")
        if n != OVERHEAD + slen:
            raise PacketRejected("truncated", f"{n} bytes for a {slen}-byte shard")
    elif ptype == PKT_PROBE:
        if k or m or idx or slen or au_len or frame_id or au_seq:
            raise PacketRejected("malformed", "probe with shard fields")
        if n != OVERHEAD + 8:
            raise PacketRejected("truncated", f"probe of {n} bytes")
    else:
        raise PacketRejected("malformed", f"packet type {ptype}")
    return PacketHeader(ptype, flags, seq, frame_id, au_seq, au_len, idx, k, m, slen)


def shard_plan(au_len: int, max_shard: int, target_shards: int, min_shard: int) -> tuple[int, int]:
    """(data_count, shard_len) for an access unit of ``au_len`` bytes.

    Shards are as large as ``max_shard`` allows but an access unit is split
    into about ``target_shards`` shards (never smaller than ``min_shard``
    bytes) so that small frames still get enough shards for the parity to
    work statistically (see docs/protocol-native.md, "FEC parameters").
    ``shard_len`` is even (the GF(2^16) code works on 16-bit symbols).
    """
    if au_len <= 0:
        raise ValueError("empty access unit")
    want = max(min_shard, -(-au_len // max(1, target_shards)))
    slen = min(max_shard, want)
    k = -(-au_len // slen)
    if k > MAX_DATA_SHARDS:
        raise ValueError(f"access unit of {au_len} bytes needs more than {MAX_DATA_SHARDS} shards")
    slen = -(-au_len // k)  # spread evenly: minimal padding
    slen += slen & 1
    k = -(-au_len // slen)  # rounding up to even can save a shard
    return k, slen


def parity_count(data_count: int, fec_percent: int, min_parity: int) -> int:
    """Parity shards for ``data_count`` data shards: ceil(k·p/100), at least ``min_parity`` (0 when p = 0)."""
    return min(fixed_parity(data_count, fec_percent, min_parity), MAX_TOTAL_SHARDS - data_count)


class ReplayWindow:
    """Sliding anti-replay window over packet sequence numbers (RFC 4303 style).

    ``check(seq)`` says whether a packet could be fresh (``"ok"``), is older
    than the window (``"old"``) or was already accepted (``"replayed"``); call
    ``accept(seq)`` only after the packet authenticated, so forged packets
    cannot move the window.

    The window is a ring of ``size`` slots: slot ``seq % size`` holds
    ``seq + 1`` once ``seq`` was accepted. A slot can only be overwritten by a
    later sequence number ``seq + j·size``, which moves ``highest`` so far that
    ``seq`` is "old" by then, so the ring answers exactly like a bitmap.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self.highest = -1
        self._ring = [0] * size

    def check(self, seq: int) -> str:
        if seq > self.highest:
            return "ok"
        if self.highest - seq >= self.size:
            return "old"
        return "replayed" if self._ring[seq % self.size] == seq + 1 else "ok"

    def accept(self, seq: int) -> None:
        self._ring[seq % self.size] = seq + 1
        if seq > self.highest:
            self.highest = seq
