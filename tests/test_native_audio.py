"""punktfunk/1 audio end to end: a real host records its desktop's sound (a private PulseAudio
with a null sink, a 997 Hz tone played into it) or its tone, codes Opus and sends it on the
session's encrypted datapath; the reference client decodes it (PyAV libopus)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from audio_helpers import peak_hz
from test_native_e2e import run_client, start_host, summary_of

STREAM = ("--seconds", "4", "--json", "--width", "320", "--height", "180", "--bitrate", "1000")


def _wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        channels, rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, channels)
    assert rate == 48_000
    return channels, pcm


def _start(host_factory, tmp_path, source: str):
    """A native host whose audio comes from ``source``, pairing open for PIN 4821."""
    h = start_host(host_factory, tmp_path, extra=f'audio_source = "{source}"')  # lands in [native]
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    return h


def test_the_desktop_sound_reaches_the_native_client(host_factory, tmp_path, sound_server) -> None:
    """``auto`` finds the private sound server; the 997 Hz played into its null sink is
    what the reference client decodes from the punktfunk/1 stream."""
    player = sound_server.play_tone(997, seconds=30, amplitude=0.5)
    try:
        h = _start(host_factory, tmp_path, "auto")
        out = tmp_path / "audio.wav"
        s = summary_of(run_client(h, tmp_path, "--pin", "4821", *STREAM, "--audio", "2", "--audio-out", str(out)))
    finally:
        player.kill()
        player.wait(5)
    assert "audio source auto: desktop" in h.log(), h.log()[-2000:]
    assert s["frames_decoded"] > 30, s
    # 4 s of 5 ms packets: ~800 (fewer while the session starts)
    assert s["audio_channels"] == 2 and s["audio_packets"] >= 400, s
    assert s["audio_lost"] == 0 and s["audio_decode_errors"] == 0, s
    channels, pcm = _wav(out)
    assert channels == 2 and len(pcm) >= 400 * 240
    tail = pcm[len(pcm) // 4:].astype(np.float64) / 32768.0
    assert abs(peak_hz(tail[:, 0]) - 997) <= 5 and abs(peak_hz(tail[:, 1]) - 997) <= 5
    assert np.sqrt(np.mean(tail ** 2)) > 0.05  # 0.5 amplitude: ≈ 0.35; silence would be ≈ 0


@pytest.mark.parametrize("channels", [6, 8])
def test_surround_decodes_every_packet_in_every_channel(host_factory, tmp_path, channels) -> None:
    """5.1 and 7.1 (the host's tone in every channel): the layout the host announces is the one
    its packets are coded in, so every packet decodes and every channel carries the tone."""
    h = _start(host_factory, tmp_path, "tone")
    out = tmp_path / "surround.wav"
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", *STREAM, "--audio", str(channels),
                              "--audio-out", str(out)))
    assert s["audio_channels"] == channels and s["audio_packets"] >= 400, s
    assert s["audio_decode_errors"] == 0 and s["audio_lost"] == 0, s
    got, pcm = _wav(out)
    assert got == channels
    tail = pcm[len(pcm) // 4:].astype(np.float64) / 32768.0
    for ch in range(channels):
        if ch == 3:  # LFE: Opus codes it band-limited; the tone may be filtered out
            continue
        assert np.sqrt(np.mean(tail[:, ch] ** 2)) > 0.01, (ch, s)
        assert abs(peak_hz(tail[:, ch]) - 440) <= 5, ch


def test_audio_fec_rebuilds_what_the_network_lost(host_factory, tmp_path) -> None:
    """10 % of all datagrams dropped in the client: the parity copies of each Opus packet
    rebuild nearly every one (losing 3 datagrams of the same packet is rare: ≈ 0.1 %)."""
    h = _start(host_factory, tmp_path, "tone")
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", *STREAM, "--audio", "2", "--loss", "0.1",
                              "--loss-seed", "7", "--fec", "20"))
    assert s["audio_datagrams_lost"] > 50, s
    assert s["audio_recovered"] > 50, s
    assert s["audio_lost"] <= 5 and s["audio_decode_errors"] == 0, s


def test_a_host_with_audio_off_says_so_and_streams_video(host_factory, tmp_path) -> None:
    h = start_host(host_factory, tmp_path, extra="audio = false")
    h.call("pairing.pin", protocol="native", pin="4821", seconds=120)
    s = summary_of(run_client(h, tmp_path, "--pin", "4821", *STREAM, "--audio", "2"))
    assert s["frames_decoded"] > 30 and s["audio_packets"] == 0, s
    assert "native.audio is off" in s["audio_error"], s


def test_a_bad_audio_request_is_refused_clearly(host_factory, tmp_path) -> None:
    """A client asking for 3 channels gets a bad_request naming the field; the host serves on."""
    from punktfunk_native.client.session import ClientError, ClientOptions, NativeClient

    h = _start(host_factory, tmp_path, "tone")
    opts = ClientOptions(host="127.0.0.1", port=h.native_port, pin="4821", seconds=1.5, json=True, status=False,
                         width=320, height=180, audio_channels=3, config_dir=tmp_path / "client-cfg")
    with pytest.raises(ClientError, match="audio_channels"):
        NativeClient(opts).run()
    s = summary_of(run_client(h, tmp_path, *STREAM[:2], "--json", "--width", "320", "--height", "180",
                              "--audio", "2"))
    assert s["audio_packets"] > 100, s
