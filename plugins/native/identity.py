"""Certificates and pinning for punktfunk/1.

Host and client each own a long-lived self-signed certificate (ECDSA P-256),
created on first use and kept owner-only under ``<config dir>/native/``.
Pairing (SPAKE2 over the TLS channel) makes each side pin the other's
certificate by SHA-256 fingerprint:

    host    native/host-cert.pem, native/host-key.pem (0600)
            native/paired-clients.json (0600): fingerprint → name, cert, time
    client  native/client-cert.pem, native/client-key.pem (0600)
            native/known-hosts.json (0600): "host:port" → fingerprint, cert, name
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from punktfunk_core import boundedjson
from punktfunk_core.paths import atomic_write, ensure_private_dir
from punktfunk_core.tls import TlsServer

from punktfunk_native.wire import fingerprint


@dataclass(slots=True)
class Identity:
    cert_path: Path
    key_path: Path
    cert_der: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_der)

    @property
    def cert_pem(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self.cert_der)


def load_or_create_identity(directory: Path, role: str, common_name: str) -> Identity:
    """The certificate ``<role>-cert.pem`` / key ``<role>-key.pem`` in ``directory``."""
    ensure_private_dir(directory)
    cert_path = directory / f"{role}-cert.pem"
    key_path = directory / f"{role}-key.pem"
    if cert_path.exists() and key_path.exists():
        for p in (cert_path, key_path):
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"the {role} identity {cert_path} / {key_path} is unreadable ({exc}); "
                             "move both away to create a new one (paired peers then pair again)") from None
        return Identity(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (common_name or role)[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=20 * 365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o600)
    return Identity(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


def validate_cert_der(der: bytes) -> x509.Certificate:
    """Parse a peer's DER certificate; ValueError when it is not one."""
    cert = x509.load_der_x509_certificate(der)
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise ValueError("client certificate must use an EC key")
    return cert


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


class PairedClients(JsonStore):
    """The host's paired clients, by certificate fingerprint."""

    def add(self, cert_der: bytes, name: str) -> str:
        fp = fingerprint(cert_der)
        self.put(fp, {"name": name[:64], "cert": ssl.DER_cert_to_PEM_cert(cert_der), "paired_unix": int(time.time())})
        return fp

    def is_paired(self, fp: str) -> bool:
        return self.get(fp) is not None


class KnownHosts(JsonStore):
    """The client's pinned hosts, by "host:port"."""

    def pin(self, address: str, cert_der: bytes, name: str) -> None:
        self.put(address, {"fingerprint": fingerprint(cert_der), "name": name[:64],
                           "cert": ssl.DER_cert_to_PEM_cert(cert_der), "paired_unix": int(time.time())})

    def fingerprint_of(self, address: str) -> str | None:
        entry = self.get(address)
        return entry.get("fingerprint") if entry else None


def control_tls(identity: Identity) -> TlsServer:
    """TLS 1.3 only. A client certificate is optional (a device without one may only pair)
    and any is accepted in the handshake: the plane looks its fingerprint up in the paired
    list on each connection (several clients may share a subject, e.g. one hostname)."""
    return TlsServer(identity.cert_path, identity.key_path, min_version="1.3", require_client_cert=False,
                     session_id=b"punktfunk/1")


def client_context(identity: Identity | None) -> ssl.SSLContext:
    """TLS 1.3 only. The host certificate is checked by fingerprint after the
    handshake (pinning), not against a CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if identity is not None:
        ctx.load_cert_chain(identity.cert_path, identity.key_path)
    return ctx
