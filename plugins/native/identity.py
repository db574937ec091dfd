"""Certificates and pinning for punktfunk/1.

Host and client each own a long-lived self-signed certificate (ECDSA P-256),
created on first use and kept owner-only under ``<config dir>/native/``.
Pairing (SPAKE2 over the TLS channel) makes each side pin the other's
certificate by SHA-256 fingerprint:

    host    native/host-cert.pem, native/host-key.pem (0600)
            native/paired-clients.json (0600): the core's paired-client store
            (punktfunk_core.identity.PairedClients: name, cert, time, view_only)
    client  native/client-cert.pem, native/client-key.pem (0600)
            native/known-hosts.json (0600): "host:port" → fingerprint, cert, name
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from punktfunk_core.identity import HostIdentity, JsonStore
from punktfunk_core.identity import load_or_create_identity as _load_or_create
from punktfunk_core.tls import TlsServer

from punktfunk_native.wire import fingerprint

#: the host's and the client's certificate and key (one mechanism for every protocol: punktfunk_core.identity)
Identity = HostIdentity


def load_or_create_identity(directory: Path, role: str, common_name: str) -> Identity:
    """The certificate ``<role>-cert.pem`` / key ``<role>-key.pem`` in ``directory`` (ECDSA P-256)."""
    return _load_or_create(directory, role, common_name, key_type="ec")


def validate_cert_der(der: bytes) -> x509.Certificate:
    """Parse a peer's DER certificate; ValueError when it is not one."""
    cert = x509.load_der_x509_certificate(der)
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise ValueError("client certificate must use an EC key")
    return cert


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
