"""Hostile files: every file the host reads back (captures, paired-client
lists, certificates) fuzzed. A bad file is skipped or refused with a clear
error (ValueError naming it); it never raises anything else and never takes
good files with it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from punktfunk_core.identity import PairedClients

from punktfunk_gamestream.pairing import Identity as GsIdentity
from punktfunk_native.identity import KnownHosts, load_or_create_identity
from punktfunk_stats.recorder import Recorder
from punktfunk_stats.store import CaptureStore, NotFound

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)
blobs = st.one_of(st.binary(max_size=3000), json_values.map(lambda v: json.dumps(v).encode()))

GOOD_SAMPLE = {"t_ms": 0, "session_id": 1, "stages": [{"name": "encode", "p50_us": 1.0, "p99_us": 2.0}],
               "fps": 60.0, "repeat_fps": 0.0, "mbps": 1.0, "bitrate_kbps": 1000}

_NATIVE_DIR = Path(tempfile.mkdtemp(prefix="pf-fuzz-native-"))
_IDENTITY = load_or_create_identity(_NATIVE_DIR, "host", "fuzz")  # one real key: generating keys is slow


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("captures")
    rec = Recorder(CaptureStore(d))
    rec.start()
    rec.push_sample(dict(GOOD_SAMPLE))
    good = rec.stop()
    return d, good["id"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["20260101-000000-000", "20260101-000000-001-2", "zz", ".index"]), body=blobs)
def test_bad_capture_files_are_skipped_and_good_ones_stay(capture_dir, name, body):
    d, good_id = capture_dir
    (d / f"{name}.json").write_bytes(body)
    store = CaptureStore(d)
    ids = [m["id"] for m in store.list()]
    assert good_id in ids
    assert store.load(good_id)["samples"][0]["fps"] == 60.0
    try:
        cap = store.load(name)
        assert isinstance(cap["samples"], list) and isinstance(cap["meta"], dict)
    except NotFound:
        pass
    (d / f"{name}.json").unlink()


@given(body=blobs)
def test_bad_captures_index_is_rebuilt(capture_dir, body):
    d, good_id = capture_dir
    (d / ".index.json").write_bytes(body)
    assert good_id in [m["id"] for m in CaptureStore(d).list()]


@given(body=blobs)
def test_bad_native_paired_clients_file_is_refused_clearly_or_loaded(body):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "paired-clients.json"
        path.write_bytes(body)
        try:
            paired = PairedClients(path)
        except ValueError as exc:
            assert str(path) in str(exc)
            return
        paired.is_paired("00" * 32)
        hosts = KnownHosts(path)
        hosts.fingerprint_of("127.0.0.1:47992")


@given(cert=blobs, key=blobs, clients=blobs, uid=st.binary(max_size=100))
def test_bad_gamestream_identity_files_are_refused_clearly_or_loaded(cert, key, clients, uid):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "host-cert.pem").write_bytes(cert)
        (d / "host-key.pem").write_bytes(key)
        (d / "paired.json").write_bytes(clients)
        (d / "uniqueid").write_bytes(uid)
        try:
            ident = GsIdentity(d)
        except ValueError as exc:
            # the paired list is one store for both protocols: an unreadable one is refused, never overwritten
            assert any(name in str(exc) for name in ("host-cert.pem", "host-key.pem", "uniqueid", "paired.json")), exc
            return
        assert all(c.fingerprint for c in ident.paired.list())


@given(cert=blobs, key=blobs)
def test_bad_native_identity_files_are_refused_clearly(cert, key):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "host-cert.pem").write_bytes(cert)
        (d / "host-key.pem").write_bytes(key)
        try:
            load_or_create_identity(d, "host", "fuzz")
        except ValueError as exc:
            assert "host-cert.pem" in str(exc) and "move both away" in str(exc), exc


def test_one_damaged_paired_client_does_not_lock_the_others_out(tmp_path):
    path = tmp_path / "paired-clients.json"
    good = _IDENTITY.fingerprint
    path.write_text(json.dumps({"aa": {"cert": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"},
                                "bb": 5, good: {"cert": _IDENTITY.cert_pem}}))
    paired = PairedClients(path)
    assert paired.is_paired(good)  # devices are looked up by fingerprint; a damaged entry is not consulted
    assert not paired.is_paired("bb")  # an entry that is not an object pairs nothing
