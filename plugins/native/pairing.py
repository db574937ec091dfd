"""PIN pairing of punktfunk/1, both sides of the exchange.

SPAKE2 runs inside the TLS control connection (the PIN never crosses it and
cannot be guessed offline from a recording), then each side proves it
derived the same key with a MAC bound to both certificates
(docs/protocol-native.md, "Pairing")::

    client → host  pair_start   {spake: A, client_cert, name}
    host → client  pair_reply   {spake: B}
    client → host  pair_confirm {mac: HMAC(client key, "punktfunk/1 pair client")}
    host → client  pair_ok      {mac: HMAC(host key, "punktfunk/1 pair host"), host_name}

The messages and the checks are here; the host's plane and the client do the
I/O and keep their own state (the host its pairing window and paired list,
the client its pinned hosts).
"""

from __future__ import annotations

import hmac
from typing import Any

from spake2 import SPAKE2_A, SPAKE2_B, SPAKEError

from punktfunk_native.identity import validate_cert_der
from punktfunk_native.wire import (
    SPAKE_ID_CLIENT,
    SPAKE_ID_HOST,
    ProtocolError,
    b64d,
    b64e,
    fingerprint,
    pairing_confirm_keys,
    pairing_mac,
)

_SPAKE_FAILURES = (SPAKEError, ValueError, AssertionError)


class BadSpakeMessage(ProtocolError):
    """The peer's SPAKE2 message does not complete the exchange."""


class ClientPairing:
    """The client's side: ``start`` → (reply) ``confirm`` → (ok) ``host_knows_pin``."""

    def __init__(self, pin: str) -> None:
        self._spake = SPAKE2_A(pin.encode(), idA=SPAKE_ID_CLIENT, idB=SPAKE_ID_HOST)
        self.msg_a = self._spake.start()
        self._host_key = b""

    def start(self, cert_der: bytes, name: str) -> dict[str, Any]:
        return {"type": "pair_start", "spake": b64e(self.msg_a), "client_cert": b64e(cert_der), "name": name}

    def confirm(self, reply: dict[str, Any], host_fp: str, client_fp: str) -> dict[str, Any]:
        """The confirmation for the host's ``pair_reply``; BadSpakeMessage when its SPAKE2 message
        does not complete the exchange, ProtocolError when it is not even well-formed."""
        msg_b = b64d(reply.get("spake"), "spake", 256)
        try:
            key = self._spake.finish(msg_b)
        except _SPAKE_FAILURES as exc:
            raise BadSpakeMessage(f"bad pairing reply from the host: {exc}") from None
        client_key, self._host_key = pairing_confirm_keys(key, host_fp, client_fp, self.msg_a, msg_b)
        return {"type": "pair_confirm", "mac": b64e(pairing_mac(client_key, b"client"))}

    def host_knows_pin(self, ok: dict[str, Any]) -> bool:
        """Whether the host's ``pair_ok`` proves it derived our key (it knows the PIN)."""
        mac = b64d(ok.get("mac"), "mac", 64)
        return bool(self._host_key) and hmac.compare_digest(mac, pairing_mac(self._host_key, b"host"))


class HostPairing:
    """The host's side, from the client's ``pair_start``: ``reply`` → (confirm)
    ``client_knows_pin`` → ``ok``. Bad input raises ProtocolError."""

    def __init__(self, pin: str, start: dict[str, Any]) -> None:
        self.cert_der = b64d(start.get("client_cert"), "client_cert")
        try:
            validate_cert_der(self.cert_der)
        except ValueError as exc:
            raise ProtocolError(f"client_cert is not a usable certificate: {exc}") from None
        self.msg_a = b64d(start.get("spake"), "spake", 256)
        given_name = start.get("name")
        self.name = given_name if isinstance(given_name, str) else ""
        spake = SPAKE2_B(pin.encode(), idA=SPAKE_ID_CLIENT, idB=SPAKE_ID_HOST)
        self.msg_b = spake.start()
        try:
            self._key = spake.finish(self.msg_a)
        except _SPAKE_FAILURES as exc:
            raise BadSpakeMessage(f"bad SPAKE2 message: {exc}") from None
        self.client_fp = fingerprint(self.cert_der)
        self._host_key = b""

    def reply(self) -> dict[str, Any]:
        return {"type": "pair_reply", "spake": b64e(self.msg_b)}

    def client_knows_pin(self, confirm: dict[str, Any], host_fp: str) -> bool:
        """Whether the client's ``pair_confirm`` proves it used the same PIN."""
        if confirm.get("type") != "pair_confirm":
            raise ProtocolError(f"expected pair_confirm, got {confirm.get('type')!r}")
        mac = b64d(confirm.get("mac"), "mac", 64)
        client_key, self._host_key = pairing_confirm_keys(self._key, host_fp, self.client_fp, self.msg_a,
                                                          self.msg_b)
        return hmac.compare_digest(mac, pairing_mac(client_key, b"client"))

    def ok(self, host_name: str) -> dict[str, Any]:
        """The host's proof, sent once the pairing is stored."""
        return {"type": "pair_ok", "mac": b64e(pairing_mac(self._host_key, b"host")), "host_name": host_name}
