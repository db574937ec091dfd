"""The host side of PIN pairing, driven step by step like a client (incl. hostile ones)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gamestream_helpers import client_cert, ecb

from punktfunk_gamestream.pairing import Identity, Pairing, PairingError
from punktfunk_gamestream.wire import BadInput

CLIENT_IP = "192.168.1.20"


@pytest.fixture(scope="module")
def client_keys():
    return client_cert()


def _run(identity: Identity, client_keys, client_pin: str, operator_pin: str, tamper: str = "") -> Pairing:
    key, cert = client_keys
    pairing = Pairing(identity, pin_timeout_s=10)
    salt = os.urandom(16)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    result: dict = {}

    def phase1() -> None:
        try:
            result["cert"] = pairing.get_server_cert("uid", CLIENT_IP, "tester", salt.hex(), pem.hex())
        except Exception as exc:  # noqa: BLE001 - inspected below
            result["error"] = exc

    t = threading.Thread(target=phase1)
    t.start()
    deadline = time.monotonic() + 5
    while pairing.pending() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pairing.submit_pin(operator_pin) == "tester"
    t.join(5)
    assert result["cert"] == identity.cert_pem
    server_cert = x509.load_pem_x509_certificate(result["cert"])
    k = hashlib.sha256(salt + client_pin.encode()).digest()[:16]
    challenge = os.urandom(16)
    resp = ecb(k, pairing.client_challenge("uid", CLIENT_IP, ecb(k, challenge).hex()), decrypt=True)
    server_hash, server_challenge = resp[:32], resp[32:48]
    client_secret = os.urandom(16)
    h = hashlib.sha256(server_challenge + cert.signature + client_secret).digest()
    secret = pairing.server_challenge_resp("uid", CLIENT_IP, ecb(k, h).hex())
    server_secret, sig = secret[:16], secret[16:]
    server_key = server_cert.public_key()
    assert isinstance(server_key, rsa.RSAPublicKey)  # GameStream certificates are RSA-2048
    server_key.verify(sig, server_secret, padding.PKCS1v15(), hashes.SHA256())
    if client_pin == operator_pin:
        assert server_hash == hashlib.sha256(challenge + server_cert.signature + server_secret).digest()
    signed = key.sign(client_secret, padding.PKCS1v15(), hashes.SHA256())
    if tamper == "signature":
        signed = bytes([signed[0] ^ 1]) + signed[1:]
    pairing.client_pairing_secret("uid", CLIENT_IP, (client_secret + signed).hex())
    return pairing


def test_correct_pin_pairs_and_persists(tmp_path, client_keys) -> None:
    ident = Identity(tmp_path / "gs")
    _run(ident, client_keys, "1234", "1234")
    assert len(ident.paired) == 1
    assert stat.S_IMODE((tmp_path / "gs" / "paired.json").stat().st_mode) == 0o600
    der = client_keys[1].public_bytes(serialization.Encoding.DER)
    assert ident.paired.for_cert_der(der) is not None
    assert Identity(tmp_path / "gs").paired.for_cert_der(der) is not None  # reloaded from disk


def test_server_rejects_a_client_that_does_not_know_the_pin(tmp_path, client_keys) -> None:
    # a hostile client ignores its own mismatch check and carries on: the host refuses
    ident = Identity(tmp_path / "gs")
    with pytest.raises(PairingError, match="PIN"):
        _run(ident, client_keys, "9999", "1234")
    assert len(ident.paired) == 0


def test_server_rejects_a_secret_not_signed_by_the_client_cert(tmp_path, client_keys) -> None:
    ident = Identity(tmp_path / "gs")
    with pytest.raises(PairingError, match="signed"):
        _run(ident, client_keys, "1234", "1234", tamper="signature")
    assert len(ident.paired) == 0


def test_steps_out_of_order_and_bad_input(tmp_path) -> None:
    ident = Identity(tmp_path / "gs")
    pairing = Pairing(ident, pin_timeout_s=0.2)
    with pytest.raises(PairingError):
        pairing.client_challenge("uid", CLIENT_IP, "00" * 16)
    with pytest.raises(PairingError):
        pairing.client_pairing_secret("uid", CLIENT_IP, "00" * 300)
    with pytest.raises(BadInput):
        pairing.get_server_cert("uid", CLIENT_IP, "x", "zz", "00")
    with pytest.raises(BadInput):
        pairing.get_server_cert("uid", CLIENT_IP, "x", "00" * 16, "00" * 100)  # not a certificate
    with pytest.raises(LookupError):
        pairing.submit_pin("1234")
    with pytest.raises(ValueError):
        pairing.submit_pin("12345")
    # nobody enters the PIN: the waiting request fails after the timeout
    _key, cert = client_cert()
    pem = cert.public_bytes(serialization.Encoding.PEM).hex()
    t0 = time.monotonic()
    with pytest.raises(PairingError, match="in time"):
        pairing.get_server_cert("uid", CLIENT_IP, "x", "00" * 16, pem)
    assert 0.15 < time.monotonic() - t0 < 3
    assert pairing.failures >= 3


def test_the_pairing_belongs_to_the_client_that_started_it(tmp_path, client_keys) -> None:
    """Every Moonlight client sends the same uniqueid: the source address tells
    them apart. Another address can neither step in, start over, nor cancel."""
    from punktfunk_gamestream.pairing import PairingRefused

    ident = Identity(tmp_path / "gs")
    pairing = Pairing(ident, pin_timeout_s=10)
    _key, cert = client_keys
    pem = cert.public_bytes(serialization.Encoding.PEM).hex()
    t = threading.Thread(target=pairing.get_server_cert, args=("uid", CLIENT_IP, "tv", "00" * 16, pem), daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while pairing.pending() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(PairingRefused):
        pairing.get_server_cert("uid", "192.168.1.66", "tv", "00" * 16, pem)
    with pytest.raises(PairingRefused):
        pairing.client_gave_up("uid", "192.168.1.66")
    pending = pairing.pending()
    assert pending is not None and pending["device"] == "tv"
    pairing.submit_pin("1234")
    t.join(5)
    with pytest.raises(PairingRefused):
        pairing.client_challenge("uid", "192.168.1.66", "00" * 16)
    failures = pairing.failures
    pairing.client_challenge("uid", CLIENT_IP, "00" * 16)  # the owner's step still works
    # the owner gives up after the PIN was entered (what Moonlight does on a PIN mismatch): counted
    pairing.client_gave_up("uid", CLIENT_IP)
    assert pairing.failures == failures + 1
    pairing.client_gave_up("uid", "192.168.1.66")  # nothing in progress: nothing to refuse
