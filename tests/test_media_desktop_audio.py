"""The ``desktop`` audio source against a real, private PulseAudio (tests/conftest.py ``sound_server``).

A tone is played into the server's null sink with pacat; the source records the sink's
monitor with parec. The stalls are real too: the server is stopped with SIGSTOP (a hung
sound server) or terminated (one that went away).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from audio_helpers import peak_hz

from punktfunk_core.gate import MeasurementGate
from punktfunk_core.media.audio import ToneSource
from punktfunk_core.media.desktop_audio import DesktopAudioSource, available, make_auto
from punktfunk_core.pipeline import AudioPipeline
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.session import Session
from punktfunk_core.stages import StreamSpec

from bench.soundserver import SoundServer, missing, tone

FRAME = 240  # 5 ms


def paced_reads(src: DesktopAudioSource, seconds: float) -> list[tuple[np.ndarray, bool]]:
    """Read a 5 ms frame every 5 ms for ``seconds``, paced on the monotonic clock as the
    runner paces audio. Each frame comes with whether it is whole: no silence was
    inserted into it and no backlog dropped before it."""
    frames = []
    due = time.monotonic()
    for _ in range(int(seconds * 200)):
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        due += FRAME / 48_000
        gap, dropped = src.gap_samples, src.dropped_samples
        pcm = src.read(FRAME)
        frames.append((pcm, src.gap_samples == gap and src.dropped_samples == dropped))
    return frames


def read_seconds(src: DesktopAudioSource, seconds: float) -> np.ndarray:
    return np.concatenate([pcm for pcm, _ in paced_reads(src, seconds)])


def longest_whole_run(frames: list[tuple[np.ndarray, bool]]) -> np.ndarray:
    """The longest stretch of whole, audible frames: audio without a seam in it. (A loaded
    machine delays the sound server now and then; a gap or a dropped burst would smear
    the spectrum.)"""
    best: list[np.ndarray] = []
    run: list[np.ndarray] = []
    for pcm, whole in frames:
        if whole and np.abs(pcm).max() > 1000:
            run.append(pcm)
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return np.concatenate(best) if best else np.zeros((0, frames[0][0].shape[1]), np.int16)


def audible(pcm: np.ndarray) -> np.ndarray:
    """The part from the first sample that is not silence on."""
    loud = np.flatnonzero(np.abs(pcm).max(axis=1) > 1000)
    return pcm[loud[0]:] if loud.size else pcm[:0]


def test_the_desktop_source_records_a_997_hz_tone_played_into_the_default_sink(sound_server):
    src = DesktopAudioSource(StreamSpec(), {})
    try:
        sound_server.play_tone(997, seconds=6, amplitude=0.5)
        before = time.monotonic_ns()
        frames = paced_reads(src, 4.0)
        heard = audible(np.concatenate([pcm for pcm, _ in frames]))
        assert heard.shape[0] > 48_000, f"only {heard.shape[0]} samples of sound in 4 s ({src.stats()})"
        steady = longest_whole_run(frames).astype(np.float64)
        assert steady.shape[0] >= 4800, f"no 100 ms without a seam ({src.stats()})"
        assert abs(peak_hz(steady[:, 0]) - 997) <= 5 and abs(peak_hz(steady[:, 1]) - 997) <= 5
        level = np.sqrt(np.mean(steady ** 2)) / 32767
        assert 0.2 < level < 0.5  # a sine at 0.5 of full scale has an RMS of 0.35
        # each read says when its first sample was captured: in the past, never before we asked
        assert before - 50_000_000 < src.capture_ns <= time.monotonic_ns()
    finally:
        src.close()
    assert src.stats()["restarts"] == 0


def test_a_stalled_sound_server_gives_counted_silence_and_never_blocks_the_reader(sound_server):
    src = DesktopAudioSource(StreamSpec(), {})
    try:
        sound_server.play_tone(997, seconds=20, amplitude=0.5)
        assert audible(read_seconds(src, 2.0)).shape[0] > 0, src.stats()
        gap_before = src.gap_samples
        sound_server.pause()
        try:
            t0 = time.monotonic()
            pcm = read_seconds(src, 1.0)
            took = time.monotonic() - t0
        finally:
            sound_server.resume()
        # a read waits for its own frame at most: 200 reads of 5 ms are not held up by a hung server
        # (a blocked reader would never return; the bound only tells the two apart)
        assert took < 200 * 0.005 * 4, took
        silent = sum(1 for f in pcm.reshape(200, FRAME, 2) if not f.any())
        assert silent >= 190
        assert src.gap_samples - gap_before >= silent * FRAME
        # the server comes back: sound again, and the burst it delivers is trimmed, not queued
        assert audible(read_seconds(src, 2.0)).shape[0] > 0, src.stats()
        assert src._ring.backlog() <= src.max_delay + FRAME * 4
    finally:
        src.close()


def test_a_sound_server_that_goes_away_gives_silence_and_the_source_keeps_trying(caplog):
    reason = missing()
    if reason:
        pytest.skip(f"no sound server: {reason}")
    server = SoundServer().__enter__()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in server.env.items():
                mp.setenv(key, value)
            src = DesktopAudioSource(StreamSpec(), {})
            server.play_tone(440, seconds=20)
            assert audible(read_seconds(src, 2.0)).shape[0] > 0
            with caplog.at_level(logging.WARNING, logger="punktfunk.media.desktop_audio"):
                server.__exit__()
                pcm = read_seconds(src, 1.5)
                assert not pcm[-2400:].any()  # silence once the server is gone
                deadline = time.monotonic() + 10
                while src.restarts == 0 and time.monotonic() < deadline:
                    src.read(FRAME)
                assert src.restarts >= 1 and "parec exited" in src.last_error
            warnings = [r for r in caplog.records if "desktop audio" in r.getMessage()]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one line per outage
            t0 = time.monotonic()
            src.close()
            assert time.monotonic() - t0 < 6
    finally:
        server.__exit__()


def test_surround_capture_keeps_every_channel_in_its_place():
    reason = missing()
    if reason:
        pytest.skip(f"no sound server: {reason}")
    freqs = (300.0, 500.0, 700.0, 1100.0, 1300.0, 1700.0)
    with SoundServer(channels=6) as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env.items():
            mp.setenv(key, value)
        src = DesktopAudioSource(StreamSpec(), {"channels": 6})
        try:
            server.play(tone(0, 6, 0.3, per_channel=freqs))
            steady = longest_whole_run(paced_reads(src, 4.0)).astype(np.float64)
        finally:
            src.close()
    assert steady.shape[0] >= 4800 and steady.shape[1] == 6, src.stats()
    # FL FR FC LFE RL RR in, FL FR FC LFE RL RR out
    heard = [peak_hz(steady[:, c]) for c in range(6)]
    assert all(abs(h - f) <= 5 for h, f in zip(heard, freqs, strict=True)), heard


def test_auto_picks_the_desktop_when_a_server_answers_else_the_tone(sound_server, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="punktfunk.media.desktop_audio"):
        src = make_auto(StreamSpec(), {"channels": 6})
        assert isinstance(src, DesktopAudioSource) and src.channels == 6
        src.close()
        monkeypatch.setenv("PULSE_SERVER", f"unix:{sound_server.dir}/nobody-here")
        fallback = make_auto(StreamSpec(), {})
        assert isinstance(fallback, ToneSource) and fallback.read(FRAME).any()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audio source auto")]
    assert lines[0] == "audio source auto: desktop (@DEFAULT_MONITOR@)"
    assert lines[1].startswith("audio source auto: tone (no sound server answers") and len(lines) == 2
    assert "no sound server" in available()


def test_desktop_audio_options_and_registration(sound_server):
    with pytest.raises(ValueError, match="known: channels, max_delay_ms, source"):
        DesktopAudioSource(StreamSpec(), {"device": "x"})
    with pytest.raises(ValueError, match="channels"):
        DesktopAudioSource(StreamSpec(), {"channels": 4})
    with pytest.raises(ValueError, match="source"):
        DesktopAudioSource(StreamSpec(), {"source": ""})
    pm = load_plugin_manager()
    assert pm.stages.get("audio_source", "desktop").available() == ""
    src = pm.stages.create("audio_source", "desktop", StreamSpec(), {"source": "punktfunk_null.monitor"})
    try:
        assert src.read(FRAME).shape == (FRAME, 2)
    finally:
        src.close()
    assert "auto" in pm.stages.names("audio_source")


def test_the_desktop_source_paces_the_audio_runner_and_a_hung_server_keeps_that_pace(sound_server):
    """The runner has no clock of its own for the desktop source: it is woken by the sound
    server's fragments. A hung server must neither stall it (no frames) nor let it spin
    (frames back to back): each read then waits one frame's duration and sends silence."""
    pm = load_plugin_manager()
    spec = StreamSpec()
    src = DesktopAudioSource(spec, {})
    assert src.self_paced
    stages = (src, pm.stages.create("audio_encoder", "opus", spec, {}),
              pm.stages.create("packetizer", "chunk", spec, {}), pm.stages.create("sender", "null", spec, {}))
    audio = AudioPipeline(Session("test", "-", spec), *stages, MeasurementGate(perf=False))
    sound_server.play_tone(997, seconds=20, amplitude=0.5)
    audio.start()
    try:
        deadline = time.monotonic() + 10
        while src.bytes_read < 48_000 * 4 and time.monotonic() < deadline:  # a second of sound came
            time.sleep(0.05)
        assert src.bytes_read >= 48_000 * 4, src.stats()
        sound_server.pause()
        try:
            time.sleep(0.1)  # the last fragments drained; from here on only silence
            frames, gaps, t0 = audio.frames_sent, src.gaps, time.monotonic()
            time.sleep(1.0)
            sent, silent, took = audio.frames_sent - frames, src.gaps - gaps, time.monotonic() - t0
        finally:
            sound_server.resume()
        # one 5 ms frame of silence per 5 ms: 200 in the second, give or take the machine's load
        assert 100 <= sent <= 1.2 * took * 200, (sent, took)
        assert silent >= sent - 2, (silent, sent)
        deadline, quiet = time.monotonic() + 10, False
        while not quiet and time.monotonic() < deadline:  # the server is back: 0.2 s without silence
            gaps = src.gaps
            time.sleep(0.2)
            quiet = src.gaps == gaps
        assert quiet, src.stats()
        assert audio.running and audio.error is None
    finally:
        audio.stop("test over")
        assert audio.join(10)
    assert audio.state == "ended"
