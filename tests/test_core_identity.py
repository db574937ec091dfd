"""The one identity and paired-client store both protocols use
(punktfunk_core.identity): files, formats, permissions, bad files."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from punktfunk_core.identity import AmbiguousClient, PairedClients, UnknownClient, load_or_create_identity
from punktfunk_core.tls import cert_fingerprint

from punktfunk_gamestream.pairing import Identity as GameStreamIdentity


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two real client certificates (DER)."""
    d = tmp_path_factory.mktemp("certs")
    return [load_or_create_identity(d / name, "client", name).cert_der for name in ("laptop", "tablet")]


def test_a_paired_client_is_kept_owner_only_with_its_permissions(tmp_path, certs):
    store = PairedClients(tmp_path / "p" / "paired-clients.json")
    laptop = store.add(certs[0], "laptop")
    assert laptop.fingerprint == cert_fingerprint(certs[0]) and not laptop.view_only
    store.set_view_only(laptop.fingerprint, True)
    assert stat.S_IMODE((tmp_path / "p" / "paired-clients.json").stat().st_mode) == 0o600
    again = PairedClients(tmp_path / "p" / "paired-clients.json")
    (client,) = again.list()
    assert client.info() == {"fingerprint": laptop.fingerprint, "name": "laptop",
                             "paired_unix_ms": laptop.paired_unix_ms, "view_only": True}
    assert again.for_cert_der(certs[0]) == client and again.for_cert_der(certs[1]) is None


def test_both_earlier_file_formats_are_read(tmp_path, certs):
    fp0, fp1 = (cert_fingerprint(c) for c in certs)
    native = tmp_path / "native.json"  # punktfunk/1: an object by fingerprint, time in seconds
    native.write_text(json.dumps({fp0: {"name": "laptop", "cert": "PEM", "paired_unix": 1700000000}}))
    gamestream = tmp_path / "paired.json"  # GameStream: a list, time in ms
    gamestream.write_text(json.dumps([{"name": "tv", "cert": "PEM", "fingerprint": fp1,
                                       "paired_unix_ms": 1700000000123}]))
    assert PairedClients(native).get(fp0).paired_unix_ms == 1700000000000
    assert PairedClients(gamestream).get(fp1).info() == {"fingerprint": fp1, "name": "tv",
                                                         "paired_unix_ms": 1700000000123, "view_only": False}


def test_a_fingerprint_prefix_names_one_client_or_says_why_not(tmp_path, certs):
    store = PairedClients(tmp_path / "paired.json")
    fps = [store.add(c, n).fingerprint for c, n in zip(certs, ("a", "b"), strict=True)]
    assert store.find(fps[0][:8].upper()) == fps[0]
    with pytest.raises(ValueError, match="8 hex digits"):
        store.find(fps[0][:7])
    with pytest.raises(UnknownClient):
        store.find("0" * 64 if not fps[0].startswith("0") else "f" * 64)
    common = next(i for i in range(64) if fps[0][i] != fps[1][i])
    if common >= 8:  # two random fingerprints rarely share 8 digits; when they do, the prefix is ambiguous
        with pytest.raises(AmbiguousClient):
            store.find(fps[0][:common])


def test_an_unreadable_gamestream_paired_list_is_refused_not_overwritten(tmp_path):
    d = tmp_path / "gs"
    GameStreamIdentity(d)  # makes the host certificate
    (d / "paired.json").write_text("[{\"name\": \"tv\", \"cert\": ")  # cut off mid-write by hand
    with pytest.raises(ValueError, match="paired.json"):
        GameStreamIdentity(d)
    assert (d / "paired.json").read_text().startswith("[{")  # the pairings are still there to repair


def test_host_identities_are_ec_for_native_and_rsa_for_gamestream(tmp_path):
    native = load_or_create_identity(tmp_path / "n", "host", "box")
    assert native.private_key().curve.name == "secp256r1"
    gs = GameStreamIdentity(tmp_path / "g")
    assert gs.key.key_size == 2048
    assert gs.cert_pem == (tmp_path / "g" / "host-cert.pem").read_bytes()  # the certificate clients pin
    assert GameStreamIdentity(tmp_path / "g").cert.public_bytes(serialization.Encoding.DER) == \
        gs.cert.public_bytes(serialization.Encoding.DER)  # kept across starts
    for p in ("host-cert.pem", "host-key.pem", "uniqueid"):
        assert stat.S_IMODE((tmp_path / "g" / p).stat().st_mode) == 0o600
