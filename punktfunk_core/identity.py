"""Host identities and paired-client stores, one mechanism for every protocol.

Each protocol keeps its files in its own owner-only directory under the
config dir (``native/``, ``gamestream/``):

    host-cert.pem, host-key.pem   the host's self-signed certificate and key (0600),
                                  made on first start; clients pin the certificate
    <paired file>                 the paired clients (0600), by SHA-256
                                  fingerprint of their certificate

A paired client is known by its certificate's fingerprint alone
(:func:`punktfunk_core.tls.cert_fingerprint`; the TLS layer accepts any client
certificate and the plane looks the fingerprint up here on every connection,
docs/security.md). Each carries its permissions: ``view_only`` (may watch,
may not send input) is stored and shown now and enforced by the input path.

A store file that cannot be read is refused with an error naming it (the
protocol does not start, and nothing overwrites the pairings in it); one
damaged entry is skipped, the others stay paired.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from punktfunk_core import boundedjson
from punktfunk_core.paths import MAX_SECRET_BYTES, atomic_write, ensure_private_dir, read_regular_file
from punktfunk_core.tls import cert_fingerprint

#: how many hex digits of a fingerprint name a client unambiguously enough (`unpair`)
MIN_PREFIX = 8


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """A certificate and its key on disk."""

    cert_path: Path
    key_path: Path
    cert_der: bytes

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert_der)

    @property
    def cert_pem(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self.cert_der)

    def private_key(self) -> Any:
        return serialization.load_pem_private_key(read_regular_file(self.key_path, MAX_SECRET_BYTES), password=None)


def load_or_create_identity(directory: Path, role: str, common_name: str, *, key_type: Literal["ec", "rsa"] = "ec",
                            what: str = "") -> HostIdentity:
    """The certificate ``<role>-cert.pem`` and key ``<role>-key.pem`` in ``directory``
    (0700), made on first use: ``ec`` is ECDSA P-256, ``rsa`` RSA-2048 (what
    GameStream clients expect); valid 20 years. A pair that cannot be read is
    refused with an error naming both files (``what`` names the identity in it)."""
    ensure_private_dir(directory)
    cert_path = directory / f"{role}-cert.pem"
    key_path = directory / f"{role}-key.pem"
    if cert_path.exists() and key_path.exists():
        for p in (cert_path, key_path):
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        try:
            cert = x509.load_pem_x509_certificate(read_regular_file(cert_path, MAX_SECRET_BYTES))
            existing = serialization.load_pem_private_key(read_regular_file(key_path, MAX_SECRET_BYTES), password=None)
            wanted = ec.EllipticCurvePrivateKey if key_type == "ec" else rsa.RSAPrivateKey
            if not isinstance(existing, wanted):
                raise ValueError(f"the key is not an {key_type.upper()} key")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"the {what or role} identity {cert_path} / {key_path} is unreadable ({exc}); "
                             "move both away to create a new one (paired peers then pair again)") from None
        return HostIdentity(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (common_name or role)[:64])])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=20 * 365))
    )
    if key_type == "ec":
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o600)
    return HostIdentity(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


class JsonStore:
    """A small owner-only JSON object file, rewritten atomically on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {}
        try:
            raw = boundedjson.load_file(path, max_bytes=boundedjson.MAX_STORE_BYTES)
            if isinstance(raw, dict):
                self.data = raw
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path} is unreadable ({exc}); move it away to start over") from None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self.data[key] = value
            self._save()

    def remove(self, key: str) -> bool:
        with self._lock:
            found = self.data.pop(key, None) is not None
            if found:
                self._save()
            return found

    def get(self, key: str) -> dict[str, Any] | None:
        v = self.data.get(key)
        return v if isinstance(v, dict) else None

    def _save(self) -> None:
        ensure_private_dir(self.path.parent)
        atomic_write(self.path, (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode(), 0o600)


@dataclass(frozen=True, slots=True)
class PairedClient:
    """One paired client: its certificate, the name it gave, when, and what it may do."""

    fingerprint: str
    name: str
    cert_pem: str
    paired_unix_ms: int
    view_only: bool = False

    def info(self) -> dict[str, Any]:
        """What the console and CLI show (no certificate)."""
        return {"fingerprint": self.fingerprint, "name": self.name, "paired_unix_ms": self.paired_unix_ms,
                "view_only": self.view_only}


class UnknownClient(LookupError):
    """No paired client matches."""


class AmbiguousClient(LookupError):
    """A fingerprint prefix matches more than one paired client."""


class PairedClients:
    """A protocol's paired clients, by certificate fingerprint, in one owner-only file.

    Written as one JSON object ``{fingerprint: {"name", "cert", "paired_unix_ms",
    "view_only"}}``; the two earlier files are read too (the native
    ``{fingerprint: {"name", "cert", "paired_unix"}}`` in seconds and the
    GameStream list of ``{"name", "cert", "fingerprint", "paired_unix_ms"}``)
    and rewritten in this form at the next change.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._clients: dict[str, PairedClient] = {}
        try:
            raw = boundedjson.load_file(self.path, max_bytes=boundedjson.MAX_STORE_BYTES)
        except FileNotFoundError:
            return
        except (ValueError, OSError) as exc:
            raise ValueError(f"{self.path} is unreadable ({exc}); move it away to start over "
                             "(its clients then pair again)") from None
        if self.path.stat().st_mode & 0o077:
            self.path.chmod(0o600)
        items = raw.items() if isinstance(raw, dict) else ((None, v) for v in raw) if isinstance(raw, list) else ()
        for key, entry in items:
            client = _entry(key, entry)
            if client is not None:
                self._clients[client.fingerprint] = client

    # -- reading -----------------------------------------------------------------------
    def get(self, fingerprint: str | None) -> PairedClient | None:
        return self._clients.get(fingerprint) if fingerprint else None

    def is_paired(self, fingerprint: str | None) -> bool:
        return self.get(fingerprint) is not None

    def for_cert_der(self, der: bytes | None) -> PairedClient | None:
        return self.get(cert_fingerprint(der)) if der else None

    def list(self) -> list[PairedClient]:
        return [self._clients[fp] for fp in sorted(self._clients)]

    def __len__(self) -> int:
        return len(self._clients)

    def find(self, prefix: Any) -> str:
        """The fingerprint that ``prefix`` (at least :data:`MIN_PREFIX` hex digits) names.

        ValueError for a short or non-hex prefix, :class:`UnknownClient` when no
        client matches, :class:`AmbiguousClient` when several do."""
        if not isinstance(prefix, str) or len(prefix) < MIN_PREFIX or not _is_hex(prefix):
            raise ValueError(f"give at least {MIN_PREFIX} hex digits of the client's fingerprint")
        matches = [fp for fp in self._clients if fp.startswith(prefix.lower())]
        if not matches:
            raise UnknownClient(f"no paired client with fingerprint {prefix}…")
        if len(matches) > 1:
            raise AmbiguousClient(f"{prefix}… matches {len(matches)} clients; give more digits")
        return matches[0]

    # -- changing -------------------------------------------------------------------------
    def add(self, cert_der: bytes, name: str) -> PairedClient:
        """Pair the client of this certificate (again: its permissions start afresh)."""
        client = PairedClient(cert_fingerprint(cert_der), name[:64], ssl.DER_cert_to_PEM_cert(cert_der),
                              int(time.time() * 1000))
        with self._lock:
            self._clients[client.fingerprint] = client
            self._save()
        return client

    def remove(self, fingerprint: str) -> bool:
        with self._lock:
            gone = self._clients.pop(fingerprint, None) is not None
            if gone:
                self._save()
        return gone

    def clear(self) -> int:
        with self._lock:
            n = len(self._clients)
            self._clients.clear()
            self._save()
        return n

    def set_view_only(self, fingerprint: str, view_only: bool) -> PairedClient:
        with self._lock:
            client = self._clients.get(fingerprint)
            if client is None:
                raise UnknownClient(f"no paired client with fingerprint {fingerprint[:16]}…")
            client = self._clients[fingerprint] = replace(client, view_only=bool(view_only))
            self._save()
        return client

    def _save(self) -> None:
        data = {fp: {"name": c.name, "cert": c.cert_pem, "paired_unix_ms": c.paired_unix_ms, "view_only": c.view_only}
                for fp, c in sorted(self._clients.items())}
        ensure_private_dir(self.path.parent)
        atomic_write(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), 0o600)


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def _entry(key: str | None, entry: Any) -> PairedClient | None:
    """One stored client, or None for an entry that is not one (skipped, never fatal)."""
    if not isinstance(entry, dict):
        return None
    fp = key if key is not None else entry.get("fingerprint")
    if not isinstance(fp, str) or not fp or not _is_hex(fp) or len(fp) > 128:
        return None
    name, cert = entry.get("name", ""), entry.get("cert", "")
    when = entry.get("paired_unix_ms")
    if when is None and isinstance(entry.get("paired_unix"), (int, float)):
        when = entry["paired_unix"] * 1000  # the native file kept seconds
    try:
        when = int(when or 0)
    except (TypeError, ValueError, OverflowError):
        when = 0
    return PairedClient(fp.lower(), name[:64] if isinstance(name, str) else "", cert if isinstance(cert, str) else "",
                        when, entry.get("view_only") is True)
