"""Host identity, paired clients and the GameStream PIN pairing handshake.

State lives in ``<config dir>/gamestream`` (0700): ``host-key.pem`` and
``host-cert.pem`` (the persistent host certificate clients pin),
``uniqueid`` and ``paired.json`` (the paired client certificates, in the
core's store: :mod:`punktfunk_core.identity`), each 0600.

Pairing (all over plain HTTP until the last step, which is why the plugin
warns): the client sends a salt and its certificate; the host waits for the
operator to type the PIN the client shows; key = SHA-256(salt ‖ PIN)[:16]
(AES-128-ECB, no padding). Challenge/response then prove both sides know the
PIN and own their certificates' keys before the client cert is trusted.

One pairing at a time, owned by the client that started it (its uniqueid and
source address): steps, a second start or an ``/unpair`` from anyone else are
refused and leave it alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from punktfunk_core.identity import PairedClient, PairedClients, load_or_create_identity
from punktfunk_core.paths import MAX_SECRET_BYTES, atomic_write, ensure_private_dir, read_regular_file

from punktfunk_gamestream.wire import BadInput, parse_hex

log = logging.getLogger("punktfunk.gamestream.pairing")

PIN_RE = re.compile(r"^\d{4}$")


def _ecb(key: bytes, data: bytes, decrypt: bool) -> bytes:
    if len(data) % 16:
        raise BadInput("ECB data is not a multiple of 16 bytes")
    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


class Identity:
    """The GameStream host: its certificate (RSA, as Moonlight expects), the
    uniqueid clients know it by, and its paired clients (the core's store)."""

    def __init__(self, directory: Path) -> None:
        self.dir = ensure_private_dir(Path(directory))
        host = load_or_create_identity(self.dir, "host", "Sunshine Gamestream Host", key_type="rsa",
                                       what="GameStream host")
        self.cert_path, self.key_path = host.cert_path, host.key_path
        self.key: rsa.RSAPrivateKey = host.private_key()
        self.cert = x509.load_der_x509_certificate(host.cert_der)
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.unique_id = self._load_or_create_uid()
        self.paired = PairedClients(self.dir / "paired.json")

    def _load_or_create_uid(self) -> str:
        path = self.dir / "uniqueid"
        try:
            uid = read_regular_file(path, MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
            if uid and len(uid) <= 64 and uid.isprintable():
                return uid
            if uid:
                raise ValueError("not a printable id of at most 64 characters")
        except FileNotFoundError:
            pass
        except ValueError as exc:
            raise ValueError(f"{path} is unreadable ({exc}); remove it to create a new host id") from None
        uid = str(uuid.uuid4()).upper()
        atomic_write(path, uid.encode(), 0o600)
        return uid

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


#: a pairing whose client took no step for this long (after the PIN) may be taken over by another client
STALE_AFTER_S = 30.0


@dataclass
class PairingSession:
    """One client's pairing: bound to its uniqueid *and* source address (every
    Moonlight client sends the same uniqueid, so the address tells them apart)."""

    unique_id: str
    address: str
    device: str
    client_cert: x509.Certificate
    salt: bytes
    started: float = field(default_factory=time.monotonic)
    last_step: float = field(default_factory=time.monotonic)
    pin_event: threading.Event = field(default_factory=threading.Event)
    key: bytes | None = None
    server_secret: bytes = b""
    server_challenge: bytes = b""
    client_hash: bytes = b""
    stage: str = "waiting_for_pin"


class PairingError(Exception):
    """The handshake failed (the reply is ``paired=0``)."""


class PairingRefused(PairingError):
    """A pairing request from a client other than the one pairing (the reply is ``paired=0``)."""


class Pairing:
    """The host side of the PIN handshake; one pending pairing at a time."""

    def __init__(self, identity: Identity, pin_timeout_s: float = 60.0) -> None:
        self.identity = identity
        self.pin_timeout_s = pin_timeout_s
        self._lock = threading.Lock()
        self._session: PairingSession | None = None
        self.failures = 0

    # -- operator side ---------------------------------------------------------------
    def pending(self) -> dict[str, Any] | None:
        s = self._session
        if s is None or s.stage != "waiting_for_pin":
            return None
        return {"device": s.device, "waiting_s": round(time.monotonic() - s.started, 1)}

    def submit_pin(self, pin: str) -> str:
        """Deliver the operator's PIN to the waiting client; returns its device name."""
        if not isinstance(pin, str) or not PIN_RE.match(pin):
            raise ValueError("the PIN is 4 digits")
        with self._lock:
            s = self._session
            if s is None or s.stage != "waiting_for_pin":
                raise LookupError("no client is waiting to pair (start pairing in Moonlight first)")
            s.key = hashlib.sha256(s.salt + pin.encode()).digest()[:16]
            s.stage = "pin_entered"
            s.pin_event.set()
        return s.device

    def cancel(self) -> None:
        """The host ends whatever pairing is under way (shutdown)."""
        with self._lock:
            s = self._session
            if s is not None:
                s.stage = "cancelled"
                s.pin_event.set()
                self._session = None

    def client_gave_up(self, unique_id: str, address: str) -> None:
        """``/unpair`` over HTTP: only the client that is pairing can end its
        pairing. After the PIN was entered this is how Moonlight reports that
        the host's proof did not match its PIN, so it counts as a failure."""
        with self._lock:
            s = self._session
            if s is None:
                return
            if (s.unique_id, s.address) != (unique_id, address):
                log.warning("GameStream unpair from %s refused: not the client that started the pairing "
                            "(%r at %s)", address, s.device, s.address)
                raise PairingRefused("unpair from a client that is not pairing")
            self._session = None
            pin_entered = s.stage not in ("waiting_for_pin", "cancelled")
            s.stage = "cancelled"
            s.pin_event.set()
        if pin_entered:
            self.failures += 1
            log.warning("GameStream pairing with %r failed: the client gave up after the PIN was entered "
                        "(a wrong PIN, most likely)", s.device)

    # -- client side (nvhttp /pair) ------------------------------------------------------
    def get_server_cert(self, unique_id: str, address: str, device: str, salt_hex: str | None,
                        cert_hex: str | None) -> bytes:
        """Phase 1: blocks until the operator enters the PIN (or times out)."""
        salt = parse_hex(salt_hex, name="salt", exact=16)
        pem = parse_hex(cert_hex, name="clientcert", min_len=64, max_len=16384)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise BadInput("clientcert is not a PEM certificate") from None
        s = PairingSession(unique_id, address, device or "Moonlight", cert, salt)
        with self._lock:
            old = self._session
            if old is not None and (old.unique_id, old.address) != (unique_id, address) and not self._stale(old):
                log.warning("GameStream client %r at %s wants to pair while %r at %s is pairing; refused",
                            s.device, address, old.device, old.address)
                raise PairingRefused("another client is pairing")
            if old is not None:  # the same client starting over, or an abandoned pairing
                old.stage = "cancelled"
                old.pin_event.set()
            self._session = s
        log.warning("GameStream client %r wants to pair: enter the PIN it shows with `punktfunk gamestream pin NNNN`",
                    s.device)
        if not s.pin_event.wait(self.pin_timeout_s) or s.stage != "pin_entered":
            self._fail(s, "no PIN was entered in time" if s.stage == "waiting_for_pin" else "pairing cancelled")
        s.stage = "cert_sent"
        s.last_step = time.monotonic()
        return self.identity.cert_pem

    def client_challenge(self, unique_id: str, address: str, challenge_hex: str | None) -> bytes:
        s = self._expect(unique_id, address, "cert_sent")
        enc = parse_hex(challenge_hex, name="clientchallenge", exact=16)
        assert s.key is not None
        challenge = _ecb(s.key, enc, decrypt=True)
        s.server_secret = secrets.token_bytes(16)
        s.server_challenge = secrets.token_bytes(16)
        digest = hashlib.sha256(challenge + self.identity.cert.signature + s.server_secret).digest()
        s.stage = "challenged"
        return _ecb(s.key, digest + s.server_challenge, decrypt=False)

    def server_challenge_resp(self, unique_id: str, address: str, resp_hex: str | None) -> bytes:
        s = self._expect(unique_id, address, "challenged")
        enc = parse_hex(resp_hex, name="serverchallengeresp", exact=32)
        assert s.key is not None
        s.client_hash = _ecb(s.key, enc, decrypt=True)
        s.stage = "responded"
        return s.server_secret + self.identity.sign(s.server_secret)

    def client_pairing_secret(self, unique_id: str, address: str, secret_hex: str | None) -> PairedClient:
        s = self._expect(unique_id, address, "responded")
        raw = parse_hex(secret_hex, name="clientpairingsecret", min_len=16 + 64, max_len=16 + 1024)
        client_secret, signature = raw[:16], raw[16:]
        expected = hashlib.sha256(s.server_challenge + s.client_cert.signature + client_secret).digest()
        if not secrets.compare_digest(expected, s.client_hash[:32]):
            self._fail(s, "the client's PIN proof does not match (wrong PIN?)")
        try:
            pub = s.client_cert.public_key()
            pub.verify(signature, client_secret, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg, arg-type]
        except Exception:  # noqa: BLE001 - any verification problem is a refusal
            self._fail(s, "the client's pairing secret is not signed by its certificate")
        client = self.identity.paired.add(s.client_cert.public_bytes(serialization.Encoding.DER), s.device)
        with self._lock:
            if self._session is s:
                self._session = None
        log.warning("GameStream client %r paired (certificate %s…)", s.device, client.fingerprint[:16])
        return client

    # -- helpers -------------------------------------------------------------------
    def _expect(self, unique_id: str, address: str, stage: str) -> PairingSession:
        s = self._session
        if s is not None and (s.unique_id, s.address) != (unique_id, address):
            log.warning("GameStream pairing step from %s refused: not the client that started it (%r at %s)",
                        address, s.device, s.address)
            raise PairingRefused("a pairing step from a client that is not pairing")
        if s is None or s.stage != stage:
            self.failures += 1
            raise PairingError(f"pairing step out of order (expected {stage})")
        s.last_step = time.monotonic()
        return s

    def _stale(self, s: PairingSession) -> bool:
        """Waiting for the PIN ends by itself (pin_timeout_s); after it, a client gone silent lets go."""
        return s.stage != "waiting_for_pin" and time.monotonic() - s.last_step > STALE_AFTER_S

    def _fail(self, s: PairingSession, why: str) -> None:
        self.failures += 1
        with self._lock:
            if self._session is s:
                self._session = None
        log.warning("GameStream pairing with %r failed: %s", s.device, why)
        raise PairingError(why)
