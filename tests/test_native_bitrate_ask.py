"""The punktfunk/1 client asks for a bitrate during the stream (``--ask-bitrate``,
``NativeClient.ask_bitrate``): the host sets it and, with adaptive rate control,
probes no higher (docs/protocol-native.md, ``set_bitrate``)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
from test_native_adaptive import _finish, _pair, _samples, _stream
from test_native_e2e import client_cmd, client_env, start_host


@pytest.mark.slow
def test_a_bitrate_the_client_asks_for_is_set_and_becomes_the_ceiling(host_factory, tmp_path):
    h = start_host(host_factory, tmp_path, timeout=5.0, probe=True)
    _pair(h, tmp_path, "c")
    s = _finish(_stream(h, tmp_path, "c", "--seconds", "14", "--bitrate", "4000", "--ask-bitrate", "900@4"))
    granted = s["details"]["bitrates_granted"]
    samples = _samples(tmp_path / "samples.jsonl", s["details"]["session_id"])
    targets = [x["bitrate_target_kbps"] for x in samples]
    print(f"\ngranted {granted}; target kbps per 2 s window: {targets}; wire Mbit/s {[x['mbps'] for x in samples]}")
    assert [k for _t, k in granted] == [900], granted
    assert 4 <= granted[0][0] < 6, granted  # asked 4 s in, answered within a round trip and a loop turn
    assert targets[0] > 900, targets  # before the ask: the 4000 negotiated
    # from the window after the ask on, adaptive control never probes above what the client asked for
    assert len(targets) >= 6 and max(targets[3:]) <= 900, targets
    # and the encoder really sent less than in the window before the ask
    assert max(x["mbps"] for x in samples[4:-1]) < samples[1]["mbps"], samples
    assert h.proc.poll() is None


def test_a_malformed_bitrate_ask_is_refused_before_connecting(tmp_path):
    nowhere = SimpleNamespace(native_port=9)  # an argument error is reported before any connection is tried
    for bad in ("fast", "900@-1", "0@2", "900@nan"):
        proc = subprocess.run(client_cmd(nowhere, "--seconds", "1", "--ask-bitrate", bad), env=client_env(tmp_path),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "--ask-bitrate" in proc.stderr, (bad, proc.stderr)
