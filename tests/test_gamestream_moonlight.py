"""GameStream against a real Moonlight core (moonlight-python's moonlight-common-c).

Each test runs a real ``punktfunk serve --gamestream`` host and the client in
its own process (see gamestream_helpers.py).
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from app_helpers import group_alive, marker_app, wait_for
from gamestream_helpers import FAULTS_ENV, finish_client, gs_config, pair, run_client, start_client, wait_ready

pytest.importorskip("moonlight_python")
pytestmark = pytest.mark.moonlight


def _host(host_factory, env=None, **cfg):
    host = host_factory(config=gs_config(**cfg), env=env)
    wait_ready(host)
    return host


def _assert_stream_ok(res: dict, frames: int = 120, size=(1280, 720)) -> list[int]:
    assert res["ok"], res
    assert len(res["frames"]) >= frames, (len(res["frames"]), res.get("terminated"), res["_stderr"][-1500:])
    ids = [i for i in res["decoded_ids"] if i is not None]
    assert len(res["decoded_ids"]) >= frames
    # the test pattern's stamp is readable in nearly every decoded frame
    assert len(ids) >= 0.9 * len(res["decoded_ids"]), res["decoded_ids"][:40]
    assert all(b > a for a, b in pairwise(ids)), "test pattern frame ids must increase"
    assert tuple(res["shape"]) == size
    assert res["frames"][0]["type"] == 1, "the first frame is an IDR"
    assert any(f["lat"] > 0 for f in res["frames"]), "host processing latency is carried in the frame header"
    return ids


# -- pairing --------------------------------------------------------------------------
def test_pair_with_operator_pin_persists_private_files(host_factory, tmp_path: Path) -> None:
    host = _host(host_factory)
    res = pair(host, tmp_path / "client")
    assert res == {"ok": True, "server_cert_matches": True, "_stderr": res["_stderr"]}
    st = host.call("gamestream.status")
    assert len(st["paired_clients"]) == 1 and st["pairing"] is None
    apps = run_client("applist", host, tmp_path / "client")
    assert apps["ok"] and apps["apps"] == ["Desktop"]
    info = run_client("serverinfo", host, tmp_path / "client")
    assert info["paired"] is True and info["appversion"] == "7.1.431.-1"
    assert info["state"] == "SUNSHINE_SERVER_FREE" and info["codecs"] & 0x1
    gsdir = host.dirs["config"] / "gamestream"
    assert stat.S_IMODE(gsdir.stat().st_mode) == 0o700
    for name in ("host-key.pem", "host-cert.pem", "paired.json", "uniqueid"):
        assert stat.S_IMODE((gsdir / name).stat().st_mode) == 0o600, name
    # the host certificate and the paired list survive a restart
    cert = (gsdir / "host-cert.pem").read_bytes()
    assert host.stop() == 0
    host2 = _host(host_factory)
    assert (gsdir / "host-cert.pem").read_bytes() == cert
    assert len(host2.call("gamestream.status")["paired_clients"]) == 1
    assert run_client("applist", host2, tmp_path / "client")["apps"] == ["Desktop"]


def test_wrong_pin_fails_and_trusts_nothing(host_factory, tmp_path: Path) -> None:
    host = _host(host_factory)
    res = pair(host, tmp_path / "client", client_pin="1111", operator_pin="1234")
    assert res["ok"] is False and res["error"] == "wrong_pin"
    st = host.call("gamestream.status")
    assert st["paired_clients"] == []
    # the client finds the mismatch and says so with /unpair: the host counts and logs the failure
    assert st["pairing_failures"] == 1 and st["pairing"] is None
    assert "GameStream pairing with 'roth' failed" in host.log() and "wrong PIN" in host.log()
    apps = run_client("applist", host, tmp_path / "client")
    assert apps["ok"] is False


def test_unpaired_certificate_gets_nothing_over_https(host_factory, tmp_path: Path) -> None:
    import ssl
    import urllib.request
    from xml.etree import ElementTree

    host = _host(host_factory)
    assert pair(host, tmp_path / "paired")["ok"]
    before = host.call("gamestream.status")["counters"]
    # a Moonlight identity that never paired (its certificate has the paired one's subject)
    res = run_client("applist", host, tmp_path / "stranger")
    assert res["ok"] is False and res["detail"].startswith("HTTP 401"), res
    ports = host.call("gamestream.status")["ports"]
    https = f"https://127.0.0.1:{ports['https']}"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    stranger = ssl.create_default_context()
    stranger.check_hostname = False
    stranger.verify_mode = ssl.CERT_NONE
    stranger.load_cert_chain(tmp_path / "stranger" / "cert.pem", tmp_path / "stranger" / "key.pem")
    launch = "appid=1&mode=1280x720x60&rikey=" + "00" * 16 + "&rikeyid=1"
    for cmd in ("serverinfo", "applist", f"launch?{launch}", f"resume?{launch}", "cancel", "pair?phrase=pairchallenge"):
        body = urllib.request.urlopen(f"{https}/{cmd}", context=stranger, timeout=5).read()
        root = ElementTree.fromstring(body)
        assert root.get("status_code") == "401" and len(root) == 0, (cmd, body)  # nothing but the refusal
    assert host.call("gamestream.status")["app_running"] is False
    # no client certificate at all: the handshake fails
    with pytest.raises(OSError):  # URLError, SSLError or a reset: all OSErrors
        urllib.request.urlopen(f"{https}/applist?uniqueid=0", context=ctx, timeout=5).read()
    # plain HTTP never serves the HTTPS commands
    body = urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/applist?uniqueid=0", timeout=5).read()
    assert b'status_code="401"' in body and b"<App>" not in body
    after = host.call("gamestream.status")["counters"]
    assert after.get("tls_unpaired", 0) == before.get("tls_unpaired", 0) + 7
    assert after.get("tls_rejected", 0) == before.get("tls_rejected", 0) + 1
    assert after.get("http_unauthorized", 0) >= 1
    # the paired device is still served
    assert run_client("applist", host, tmp_path / "paired")["apps"] == ["Desktop"]


def test_pin_needs_a_waiting_client_and_four_digits(host_factory) -> None:
    from punktfunk_core.ipc import IpcError

    host = _host(host_factory)
    with pytest.raises(IpcError) as e:
        host.call("pairing.pin", protocol="gamestream", pin="1234")
    assert e.value.code == 409
    with pytest.raises(IpcError) as e:
        host.call("pairing.pin", protocol="gamestream", pin="12a4")
    assert e.value.code == 400


def _fingerprint(device: Path) -> str:
    """SHA-256 of a Moonlight identity's certificate (moonlight-python keeps it in ``cert.pem``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(x509.load_pem_x509_certificate((device / "cert.pem").read_bytes())
                          .public_bytes(Encoding.DER)).hexdigest()


def test_three_devices_with_one_certificate_subject_pair_and_each_streams(host_factory, tmp_path: Path) -> None:
    """Every Moonlight client's certificate is self-signed as ``CN=NVIDIA GameStream Client``; the
    host tells devices apart by fingerprint, so each pairs, each streams while the others stay
    paired, and forgetting one leaves the others working."""
    from cryptography import x509

    host = _host(host_factory, client_timeout_s=3)
    devices = [tmp_path / name for name in ("phone", "tv", "laptop")]
    for i, device in enumerate(devices):
        res = pair(host, device)
        assert res["ok"], (device.name, res)
        for earlier in devices[: i + 1]:  # a new pairing keeps every earlier one working
            apps = run_client("applist", host, earlier)
            assert apps["ok"] and apps["apps"] == ["Desktop"], (earlier.name, apps)
    subjects = {x509.load_pem_x509_certificate((d / "cert.pem").read_bytes()).subject.rfc4514_string()
                for d in devices}
    assert subjects == {"CN=NVIDIA GameStream Client"}
    paired = {c["fingerprint"] for c in host.call("gamestream.status")["paired_clients"]}
    assert paired == {_fingerprint(d) for d in devices}
    small = ("--frames", "30", "--width", "640", "--height", "360", "--cancel")
    for device in devices:
        _assert_stream_ok(run_client("stream", host, device, *small), frames=30, size=(640, 360))
    # the operator forgets the tv: it gets nothing over HTTPS, the others carry on
    host.call("pairing.unpair", protocol="gamestream", fingerprint=_fingerprint(devices[1]))
    gone = run_client("applist", host, devices[1])
    assert gone["ok"] is False and gone["detail"].startswith("HTTP 401"), gone  # as Sunshine answers
    # Moonlight falls back to plain HTTP when HTTPS refuses it, and sees that it is no longer paired
    assert run_client("serverinfo", host, devices[1])["paired"] is False
    for device in (devices[0], devices[2]):
        assert run_client("serverinfo", host, device)["paired"] is True
        _assert_stream_ok(run_client("stream", host, device, *small), frames=30, size=(640, 360))
    assert host.call("gamestream.status")["sessions_started"] == 5


# -- streaming ----------------------------------------------------------------------------
@pytest.fixture
def paired_host(host_factory, tmp_path: Path):
    """``paired_host(faults=False, **gamestream)``: a host and a paired client; with
    ``faults`` the host loads the fault-injection stages (tests/plugins/pf_faults.py)."""
    def make(faults: bool = False, **cfg):
        host = _host(host_factory, env=FAULTS_ENV if faults else None, client_timeout_s=3, **cfg)
        client = tmp_path / "client"
        assert pair(host, client)["ok"]
        return host, client

    return make


def test_h264_1392_all_encryption_and_cancel_then_relaunch(paired_host) -> None:
    host, client = paired_host()
    res = run_client("stream", host, client, "--frames", "130", "--cancel")
    _assert_stream_ok(res)
    st = host.call("gamestream.status")
    last = st["last_session"]
    # ENCFLG_ALL: video AES-GCM (packet size shrinks by the 32-byte header), audio CBC, control GCM
    assert last["video_encryption"] is True and last["audio_encryption"] is True
    assert last["control_encryption"] == "aes-gcm"
    assert last["packet_size"] == 1392 - 32
    assert last["codec"] == "h264" and (last["width"], last["height"], last["fps"]) == (1280, 720, 60)
    # cancel ended the app and the session
    assert st["app_running"] is False
    deadline = time.monotonic() + 5
    while host.call("sessions.list") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.call("sessions.list") == []
    # a second launch works without restarting the host
    res2 = run_client("stream", host, client, "--frames", "60", "--cancel")
    assert res2["launched"] == "launch"
    _assert_stream_ok(res2, frames=60)
    assert host.call("gamestream.status")["sessions_started"] == 2


def test_packet_size_1024_without_encryption(paired_host) -> None:
    host, client = paired_host()
    res = run_client("stream", host, client, "--frames", "120", "--packet-size", "1024", "--encryption", "none",
                     "--cancel")
    _assert_stream_ok(res)
    last = host.call("gamestream.status")["last_session"]
    assert last["packet_size"] == 1024
    assert last["video_encryption"] is False and last["audio_encryption"] is False


def test_packet_size_1024_encrypted(paired_host) -> None:
    host, client = paired_host()
    res = run_client("stream", host, client, "--frames", "120", "--packet-size", "1024", "--cancel")
    _assert_stream_ok(res)
    last = host.call("gamestream.status")["last_session"]
    assert last["packet_size"] == 1024 - 32 and last["video_encryption"] is True


def test_hevc(paired_host) -> None:
    host, client = paired_host()
    info = run_client("serverinfo", host, client)
    if not info["codecs"] & 0x100:
        pytest.skip("no HEVC encoder stage on this host (media plugin without `hevc`)")
    res = run_client("stream", host, client, "--frames", "120", "--codec", "hevc", "--cancel")
    _assert_stream_ok(res)
    assert host.call("gamestream.status")["last_session"]["codec"] == "hevc"


def test_av1(paired_host) -> None:
    host, client = paired_host()
    info = run_client("serverinfo", host, client)
    if not info["codecs"] & 0x10000:
        pytest.skip("no AV1 encoder stage on this host (media plugin without `av1`)")
    res = run_client("stream", host, client, "--frames", "60", "--seconds", "60", "--codec", "av1", "--cancel")
    assert res["ok"] and len(res["frames"]) >= 60, res
    assert res["frames"][0]["type"] == 1
    ids = [i for i in res["decoded_ids"] if i is not None]
    assert len(ids) >= 30 and all(b > a for a, b in pairwise(ids)), res["decoded_ids"]
    assert host.call("gamestream.status")["last_session"]["codec"] == "av1"


def test_idr_request_is_answered(paired_host) -> None:
    host, client = paired_host()
    res = run_client("stream", host, client, "--frames", "100", "--idr-at", "40", "--cancel")
    _assert_stream_ok(res, frames=100)
    after = [f for f in res["frames"][40:] if f["type"] == 1]
    assert after, "an IDR frame arrives after the client asked for one"
    assert host.call("gamestream.status")["counters"].get("idr_requests", 0) >= 2  # start + explicit


def _capture_samples(host) -> list[dict]:
    meta = host.call("stats.stop")
    assert meta and meta["id"]
    return host.call("stats.load", id=meta["id"])["samples"]


def _lose_second_packet(frames: range, **packetizer: object) -> dict:
    """Config: frames ``frames`` lose their second packet on the way out (FEC must
    repair it), and their access units are hashed as sent."""
    return {"faults": True, "video_sender": "drop-packets", "video_sender_options": {"second_of": list(frames)},
            "video_packetizer": "gamestream-probe",
            "video_packetizer_options": {"hash_frames": list(frames), **packetizer}}


def test_fec_repairs_a_lost_packet_in_the_client(paired_host) -> None:
    # frames 20..29 each lose their second packet: the real client must rebuild
    # it from our parity (nanors decoder) and report the recovery
    host, client = paired_host(**_lose_second_packet(range(20, 30)))
    host.call("stats.start")
    res = run_client("stream", host, client, "--frames", "120")
    ids = _assert_stream_ok(res)
    faults = host.call("faults.status")
    assert faults["dropped"]["drop-packets"] == 10
    # the repaired frames are byte-identical to what the encoder produced
    sent = faults["frame_hashes"]
    got = {str(f["n"]): f["sha"] for f in res["frames"] if 20 <= f["n"] < 30}
    assert len(sent) == 10 and got == sent
    assert [f["n"] for f in res["frames"][:60]] == list(range(1, 61)), "no frame was lost: FEC repaired them"
    assert len(ids) >= 100
    # the client never had to ask for an IDR (the one at start excepted)
    assert host.call("gamestream.status")["counters"].get("idr_requests", 0) == 1
    samples = _capture_samples(host)
    # Moonlight reported each repaired block: one packet missing, one data packet rebuilt, nothing lost for good;
    # the capture (its last window too) holds exactly that
    assert host.call("gamestream.status")["counters"].get("fec_reports", 0) == 10
    assert sum(s["fec_recovered"] for s in samples) == 10
    assert sum(s["packets_dropped"] for s in samples) == 10
    assert sum(s["frames_unrecoverable"] for s in samples) == 0
    assert all("delivered_fps" not in s for s in samples)  # Moonlight does not report what it decoded


def test_multi_block_frames_with_repairs(paired_host) -> None:
    # every frame of > 3 packets is split into up to 4 FEC blocks; frames 20..29
    # lose their second packet (in block 0): the client reassembles the blocks
    # and repairs them; the repaired frames match what was sent byte for byte
    host, client = paired_host(**_lose_second_packet(range(20, 30), block_data_shards=3))
    res = run_client("stream", host, client, "--frames", "100")
    _assert_stream_ok(res, frames=100)
    assert [f["n"] for f in res["frames"][:60]] == list(range(1, 61))
    faults = host.call("faults.status")
    assert faults["dropped"]["drop-packets"] == 10
    sent = faults["frame_hashes"]
    got = {str(f["n"]): f["sha"] for f in res["frames"] if 20 <= f["n"] < 30}
    assert len(sent) == 10 and got == sent
    assert host.call("gamestream.status")["counters"].get("idr_requests", 0) == 1


def test_loss_beyond_fec_budget_makes_the_client_ask_for_an_idr(paired_host) -> None:
    host, client = paired_host(faults=True, video_sender="drop-packets",
                               video_sender_options={"all_but_first_of": [45]})
    host.call("stats.start")
    res = run_client("stream", host, client, "--frames", "110", "--cancel")
    assert res["ok"], res
    assert host.call("faults.status")["dropped"]["drop-packets"] >= 1
    ids = [i for i in res["decoded_ids"] if i is not None]
    assert all(b > a for a, b in pairwise(ids))
    # frames after the broken one arrive again, starting with a fresh IDR
    late = [f for f in res["frames"] if f["n"] > 45]
    assert late and late[0]["type"] == 1, [(f["n"], f["type"]) for f in res["frames"][40:60]]
    assert len(res["frames"]) >= 100
    counters = host.call("gamestream.status")["counters"]
    assert counters.get("idr_requests", 0) >= 2
    assert counters.get("fec_reports", 0) >= 1, counters
    samples = _capture_samples(host)
    assert sum(s["frames_unrecoverable"] for s in samples) == 1  # frame 45, reported given up
    assert sum(s["packets_dropped"] for s in samples) >= 1


def test_silent_client_times_out(paired_host) -> None:
    host, client = paired_host()
    proc = start_client("stream", host, client, "--frames", "100000", "--seconds", "60")
    try:
        _wait_session(host)
        os.kill(proc.pid, signal.SIGKILL)  # no ENet disconnect: the client just goes silent
        proc.wait(5)
        t0 = time.monotonic()
        while host.call("sessions.list") and time.monotonic() - t0 < 15:
            time.sleep(0.2)
        assert host.call("sessions.list") == []
        assert time.monotonic() - t0 < 12
        assert host.call("gamestream.status")["counters"].get("client_timeouts", 0) >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_stats_capture_records_gamestream_windows(paired_host) -> None:
    host, client = paired_host()
    host.call("stats.start")
    res = run_client("stream", host, client, "--frames", "200", "--cancel")
    _assert_stream_ok(res, frames=200)
    meta = host.call("stats.stop")
    assert meta and meta["id"]
    cap = host.call("stats.load", id=meta["id"])
    assert cap["meta"]["kind"] == "gamestream"
    samples = cap["samples"]
    assert len(samples) >= 2
    for s in samples:
        names = [st["name"] for st in s["stages"]]
        assert names == ["capture", "encode", "queue", "packetize", "send"], names
        # send_spread lies inside send: it is detail, never stacked on top of it
        assert [st["name"] for st in s["detail"]] == ["encode.submit", "encode.receive", "send_spread"]
        assert s["fps"] > 0 and s["mbps"] > 0
        # measured from the start: no FEC report from Moonlight means no loss
        assert (s["packets_dropped"], s["fec_recovered"], s["frames_unrecoverable"]) == (0, 0, 0)
    # 1 s windows (punktfunk/1 uses 2 s): the recorder stamps each on arrival
    gaps = sorted(b["t_ms"] - a["t_ms"] for a, b in pairwise(samples))
    assert 700 <= gaps[len(gaps) // 2] <= 1500, gaps


@pytest.mark.parametrize("encryption", ["all", "none"])
def test_audio_tone_reaches_the_client(paired_host, encryption: str) -> None:
    host, client = paired_host(audio_source="tone")
    host.call("stats.start")
    res = run_client("stream", host, client, "--frames", "150", "--audio", "--encryption", encryption, "--cancel")
    _assert_stream_ok(res, frames=150)
    counters = host.call("gamestream.status")["counters"]
    if counters.get("audio_start_failed"):
        pytest.skip("tone/opus media stages are not available on this host")
    # the audio ran through the runner: measured in the session's windows, closed with it
    samples = _capture_samples(host)
    audio = [s for s in samples if "audio_fps" in s]
    assert audio and sum(round(s["audio_fps"] * s["window_ms"] / 1000) for s in audio) >= 100
    assert max(s["audio_fps"] for s in audio) > 150  # 5 ms frames: 200 per second
    assert all(s["audio_send_dropped"] == 0 and s["audio_kbps"] > 0 for s in audio if s["audio_fps"])
    final = host.call("sessions.get", id=host.call("gamestream.status")["last_session"]["id"])
    assert final["audio"]["state"] == "ended" and final["audio"]["frames_sent"] >= 100
    assert host.call("gamestream.status")["last_session"]["audio_encryption"] is (encryption == "all")
    # 2.5 s of 5 ms packets: far more than 100 must have been delivered and decoded
    assert res["audio_packets"] >= 100, res["audio_packets"]
    assert res["tone_hz"] is not None and abs(res["tone_hz"] - 440) < 15, res["tone_hz"]
    assert res["audio_rms"] > 0.05
    assert res["tone_purity"] > 0.99, res["tone_purity"]


@pytest.mark.parametrize(("channels", "bitrate", "layout"), [
    (2, 8000, {"streams": 1, "coupled": 1, "mapping": [0, 1]}),
    (6, 8000, {"streams": 4, "coupled": 2, "mapping": [0, 1, 4, 5, 2, 3]}),
    (8, 8000, {"streams": 5, "coupled": 3, "mapping": [0, 1, 6, 7, 4, 5, 2, 3]}),
    # Moonlight asks for the high-quality layout from 15 Mbit/s on, when the DESCRIBE offers one
    (6, 20000, {"streams": 6, "coupled": 0, "mapping": [0, 1, 2, 3, 4, 5]}),
    (8, 20000, {"streams": 8, "coupled": 0, "mapping": [0, 1, 2, 3, 4, 5, 6, 7]}),
], ids=["stereo", "5.1", "7.1", "5.1-hq", "7.1-hq"])
def test_surround_the_client_asks_for_decodes_every_packet(paired_host, channels, bitrate, layout) -> None:
    host, client = paired_host(audio_source="tone")
    res = run_client("stream", host, client, "--frames", "150", "--audio", "--channels", str(channels),
                     "--bitrate", str(bitrate), "--cancel")
    _assert_stream_ok(res, frames=150)
    if host.call("gamestream.status")["counters"].get("audio_start_failed"):
        pytest.skip("tone/opus media stages are not available on this host")
    # the client read the layout from our DESCRIBE (LFE swap undone) and decodes with it
    assert res["opus_config"] == {"channels": channels, **layout}, res["opus_config"]
    assert res["audio_packets"] >= 100
    assert res["audio_decode_errors"] == 0 and res["audio_decoded"] == res["audio_packets"], res
    # the tone is on every channel: each one decodes at its level and pitch
    assert len(res["channel_rms"]) == channels and min(res["channel_rms"]) > 0.05, res["channel_rms"]
    assert abs(res["tone_hz"] - 440) < 15 and res["tone_purity"] > 0.99, res


def test_the_desktop_sound_reaches_the_client_by_default(paired_host, sound_server) -> None:
    """``auto`` (the default) finds the private sound server and records its null sink's monitor:
    the 997 Hz played into it is what Moonlight decodes."""
    player = sound_server.play_tone(997, seconds=30, amplitude=0.5)
    try:
        host, client = paired_host()
        res = run_client("stream", host, client, "--frames", "150", "--audio", "--cancel")
    finally:
        player.kill()
        player.wait(5)
    _assert_stream_ok(res, frames=150)
    assert "audio source auto: desktop" in host.log(), host.log()[-2000:]
    assert not host.call("gamestream.status")["counters"].get("audio_start_failed")
    assert res["audio_packets"] >= 100 and res["audio_decode_errors"] == 0
    assert res["tone_hz"] is not None and abs(res["tone_hz"] - 997) <= 5, res["tone_hz"]
    assert res["audio_rms"] > 0.05, res["audio_rms"]  # 0.5 amplitude: ≈ 0.35 when nothing was lost


def test_audio_fec_repairs_lost_packets_in_the_client(paired_host) -> None:
    host, client = paired_host(faults=True, audio_source="tone", audio_sender="drop-audio",
                               audio_sender_options={"every": 8})
    res = run_client("stream", host, client, "--frames", "150", "--audio", "--cancel")
    _assert_stream_ok(res, frames=150)
    if host.call("gamestream.status")["counters"].get("audio_start_failed"):
        pytest.skip("tone/opus media stages are not available on this host")
    assert host.call("faults.status")["dropped"]["drop-audio"] >= 10
    # one data packet in every other RS(4,2) block never left the host; the
    # client rebuilt each from our parity, so the decoder saw no gap
    assert res["audio_packets"] >= 100
    assert res["audio_lost"] == 0, res["audio_lost"]
    assert abs(res["tone_hz"] - 440) < 15
    # a wrong repair decodes as noise bursts (purity ≈ 0.95 with broken parity)
    assert res["tone_purity"] > 0.99, res["tone_purity"]


def _wait_session(host, frames: int = 30, timeout: float = 30.0) -> dict:
    """Wait until a GameStream session has sent ``frames`` frames."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = host.call("sessions.list")
        if sessions and host.call("gamestream.status")["frames_sent"] >= frames:
            return sessions[0]
        time.sleep(0.1)
    raise AssertionError("no GameStream session started")


def test_operator_cancel_terminates_the_client_gracefully(paired_host) -> None:
    host, client = paired_host()
    proc = start_client("stream", host, client, "--frames", "100000", "--seconds", "25")
    try:
        _wait_session(host)
        t0 = time.monotonic()
        assert host.call("gamestream.cancel") == {"cancelled": True}
        res = finish_client(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert res["ok"], res
    assert res["terminated"] == 0, ("graceful termination (0x80030023 after frames) reaches the client", res)
    assert time.monotonic() - t0 < 15
    assert len(res["frames"]) > 10
    st = host.call("gamestream.status")
    assert st["app_running"] is False
    deadline = time.monotonic() + 10  # the pipeline finishes its current frame, then ends
    while host.call("sessions.list") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.call("sessions.list") == []


def test_host_side_session_stop_terminates_and_the_client_can_resume(paired_host) -> None:
    host, client = paired_host()
    proc = start_client("stream", host, client, "--frames", "100000", "--seconds", "25")
    try:
        sid = _wait_session(host)["id"]
        host.call("sessions.stop", id=sid)
        res = finish_client(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert res["terminated"] == 0, res
    assert host.call("gamestream.status")["app_running"] is True
    res2 = run_client("stream", host, client, "--frames", "60", "--cancel")
    assert res2["launched"] == "resume"
    _assert_stream_ok(res2, frames=60)


# -- apps ([[apps]], docs/apps.md) -----------------------------------------------------------
def test_applist_shows_the_configured_apps_with_their_stable_ids(paired_host, tmp_path: Path) -> None:
    from punktfunk_core.apps import app_id

    host, client = paired_host(apps=(marker_app(tmp_path), {"name": "Steam <Big> & Picture", "cmd": ["true"]}))
    res = run_client("applist", host, client)
    assert res["apps"] == ["Desktop", "Marker", "Steam <Big> & Picture"], res
    assert res["ids"] == [1, app_id("Marker"), app_id("Steam <Big> & Picture")]


@pytest.mark.parametrize("who", ["client", "operator"])
def test_a_launched_app_runs_after_its_prep_and_quitting_ends_its_group_then_undoes(paired_host, tmp_path: Path,
                                                                                       who: str) -> None:
    from punktfunk_core.apps import app_id

    host, client = paired_host(apps=(marker_app(tmp_path),))
    res = run_client("stream", host, client, "--app", "Marker", "--frames", "30")
    _assert_stream_ok(res, frames=30)
    assert wait_for(lambda: (tmp_path / "marker").exists()), "the app did not start"
    assert (tmp_path / "prepared").exists() and not (tmp_path / "undone").exists()
    pgid = int((tmp_path / "pgid").read_text())
    assert group_alive(pgid) and os.getpgid(pgid) == pgid != os.getpgid(0)  # a group of its own
    info = run_client("serverinfo", host, client)
    assert info["current_game"] == app_id("Marker")
    assert host.call("apps.list")["running"]["name"] == "Marker"
    if who == "client":
        assert "<cancel>1</cancel>" in run_client("quit", host, client)["xml"]
    else:  # punktfunk gamestream cancel: answered at once, the app ends on its own thread
        assert host.call("gamestream.cancel") == {"cancelled": True}
    assert wait_for(lambda: not group_alive(pgid)), "the app's process group outlived the quit"
    assert wait_for(lambda: (tmp_path / "undone").exists()), "undo did not run"
    assert host.call("gamestream.status")["app_running"] is False
    assert wait_for(lambda: host.call("apps.list")["running"] is None)
    assert run_client("serverinfo", host, client)["current_game"] == 0


def test_an_app_that_cannot_start_gives_the_client_an_error_and_the_host_stays_ready(paired_host,
                                                                                        tmp_path: Path) -> None:
    host, client = paired_host(apps=({"name": "Broken", "cmd": [str(tmp_path / "no-such-program")],
                                      "prep": [{"do": ["true"], "undo": ["touch", f"{tmp_path}/undone"]}]},))
    res = run_client("launch", host, client, "--app", "Broken")
    assert res["ok"] is False and res["detail"].startswith("HTTP 503"), res
    assert "cannot start" in res["detail"] and "not found" in res["detail"]
    assert (tmp_path / "undone").exists()  # the prep step was undone
    lines = [ln for ln in host.log().splitlines() if "no-such-program" in ln]
    assert len(lines) == 1 and "cannot start" in lines[0], lines
    st = host.call("gamestream.status")
    assert st["app_running"] is False and st["counters"]["launch_failed"] == 1
    # nothing is left half-launched: Desktop streams right away
    _assert_stream_ok(run_client("stream", host, client, "--frames", "30", "--cancel"), frames=30)


def _punktfunk(host, *args: str) -> subprocess.CompletedProcess:
    """The ``punktfunk`` CLI against this host."""
    return subprocess.run([sys.executable, "-m", "punktfunk_core.cli", *args], env=host.env, capture_output=True,
                          text=True, timeout=60)


def test_punktfunk_apps_quit_ends_the_live_stream_the_app_group_and_runs_undo(paired_host, tmp_path: Path) -> None:
    """An operator's quit (CLI, IPC ``apps.quit``, the console) ends the app as the launching client's
    /cancel does: the Moonlight stream ends (the client is told), the group goes, undo runs."""
    host, client = paired_host(apps=(marker_app(tmp_path), {"name": "Other", "cmd": ["true"]}))
    listed = _punktfunk(host, "apps")
    assert listed.returncode == 0 and "no app is running" in listed.stdout, listed
    proc = start_client("stream", host, client, "--app", "Marker", "--frames", "100000", "--seconds", "40")
    try:
        assert wait_for(lambda: (tmp_path / "pgid").exists(), 30), "the app did not start"
        pgid = int((tmp_path / "pgid").read_text())
        assert wait_for(lambda: host.call("gamestream.status")["streaming"], 30), "the stream did not start"
        running = host.call("apps.list")["running"]
        client_name = host.call("pairing.clients", protocol="gamestream")[0]["name"]
        assert (running["name"], running["pgid"], running["protocol"], running["client"]) == \
            ("Marker", pgid, "gamestream", client_name)
        assert abs(running["since"] - time.time()) < 60 and running["cmd"].startswith("sh -c ")
        listed = _punktfunk(host, "apps")
        marked = [ln for ln in listed.stdout.splitlines() if ln.startswith("*")]
        assert listed.returncode == 0 and "Marker" in marked[0] and "Other" not in "".join(marked), listed.stdout
        assert f"launched by gamestream {client_name!r}, process group {pgid}" in marked[-1], listed.stdout

        quit_ = _punktfunk(host, "apps", "quit")
        # the CLI returns once the app is gone: no waiting here
        assert quit_.returncode == 0 and "Marker ended" in quit_.stdout, (quit_.stdout, quit_.stderr)
        assert not group_alive(pgid), "the app's process group outlived the quit"
        assert (tmp_path / "undone").exists(), "undo did not run"
        res = finish_client(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert res["terminated_before_stop"] is True, "the client was not told that the stream ended"
    assert host.call("apps.list")["running"] is None
    st = host.call("gamestream.status")
    assert st["app_running"] is False and not st["streaming"]
    assert "quit by the operator" in host.log()
    again = _punktfunk(host, "apps", "quit")
    assert again.returncode == 0 and "no app was running" in again.stdout
    # the host is ready for the next launch
    _assert_stream_ok(run_client("stream", host, client, "--frames", "30", "--cancel"), frames=30)


def test_an_app_that_exits_by_itself_ends_the_stream(paired_host, tmp_path: Path) -> None:
    host, client = paired_host(apps=({"name": "Short", "cmd": ["sleep", "4"],
                                      "prep": [{"do": ["true"], "undo": ["touch", f"{tmp_path}/undone"]}]},))
    res = run_client("stream", host, client, "--app", "Short", "--frames", "100000", "--seconds", "40")
    assert res["ok"] and len(res["frames"]) >= 30, res
    assert res["terminated_before_stop"] is True, "the client was not told that the stream ended"
    assert (tmp_path / "undone").exists()
    st = host.call("gamestream.status")
    assert st["app_running"] is False and not st["streaming"]
    assert "exited by itself" in host.log()
