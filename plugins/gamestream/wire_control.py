"""Control stream wire format: AES-GCM messages both ways and the client's reports (no sockets here)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from punktfunk_gamestream.wire import BadInput

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
