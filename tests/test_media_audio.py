"""Audio stages: ``tone`` source and ``opus`` encoder, checked by decoding with PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest
from audio_helpers import MultistreamDecoder, libopus, peak_hz

from punktfunk_core.media.audio import CHANNEL_ORDER, OPUS_LAYOUTS, OpusEncoder, ToneSource
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.stages import StreamSpec


def decode_opus(packets: list[bytes]) -> np.ndarray:
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate = 48_000
    dec.layout = "stereo"
    chunks = []
    for p in packets:
        for f in dec.decode(av.Packet(p)):
            a = f.to_ndarray()  # planar float (2, n) or packed (1, 2n)
            chunks.append(a.reshape(2, -1) if a.shape[0] == 2 else a.reshape(-1, 2).T)
    return np.concatenate(chunks, axis=1)


def test_tone_is_phase_continuous_across_reads():
    a = ToneSource(StreamSpec(), {"frequency": 997})
    b = ToneSource(StreamSpec(), {"frequency": 997})
    pieces = np.concatenate([a.read(n) for n in (240, 100, 7, 653)])
    whole = b.read(1000)
    assert pieces.shape == whole.shape == (1000, 2) and pieces.dtype == np.int16
    assert np.abs(pieces.astype(int) - whole.astype(int)).max() <= 1
    assert abs(int(whole.max()) - int(0.25 * 32767)) < 50  # default amplitude
    assert np.array_equal(whole[:, 0], whole[:, 1])


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3150.0])
def test_opus_200_frames_decode_to_the_right_length_and_pitch(freq):
    tone = ToneSource(StreamSpec(), {"frequency": freq, "amplitude": 0.5})
    enc = OpusEncoder(StreamSpec(), {})
    assert enc.frame_samples == 240
    packets = []
    for _ in range(200):
        out = enc.encode(tone.read(240))
        assert len(out) == 1  # one packet per 5 ms frame, no buffering
        packets.extend(out)
    assert all(isinstance(p, bytes) and 0 < len(p) < 1276 for p in packets)
    # stereo's default is GameStream's 96 kbps: CBR at 5 ms is 60 bytes a packet
    assert enc.bitrate_kbps == 96
    assert abs(sum(map(len, packets)) * 8 / 1.0 / 1000 - 96) < 8
    pcm = decode_opus(packets)
    assert pcm.shape[0] == 2
    assert abs(pcm.shape[1] - 200 * 240) <= 480  # decoder may trim the encoder's pre-skip
    steady = pcm[0, 4800:]
    assert abs(peak_hz(steady) - freq) < 10
    assert 0.3 < np.abs(steady).max() < 0.7  # the level survives
    enc.close()


def test_opus_codes_as_sunshine_does_celt_only_5_ms_frames_at_a_constant_size():
    """Restricted low delay (CELT only, no look-ahead) and CBR, as Sunshine sets its encoder:
    every packet's TOC byte (RFC 6716, 3.1) says CELT fullband 5 ms, stereo, one frame, and
    every packet is 96 kbps × 5 ms = 60 bytes, silence included."""
    enc = OpusEncoder(StreamSpec(), {})
    tone = ToneSource(StreamSpec(), {"frequency": 997, "amplitude": 0.5})
    frames = [np.zeros((240, 2), np.int16)] * 10 + [tone.read(240) for _ in range(100)]
    frames.append(np.asfortranarray(tone.read(240)))  # not C-contiguous: copied, then coded alike
    packets = [p for pcm in frames for p in enc.encode(pcm)]
    enc.close()
    assert len(packets) == len(frames)
    assert {p[0] >> 3 for p in packets} == {29}  # config 29: CELT-only, fullband, 5 ms
    assert {(p[0] >> 2) & 1 for p in packets} == {1} and {p[0] & 3 for p in packets} == {0}  # stereo, 1 frame
    assert {len(p) for p in packets} == {60}


def test_opus_frame_size_and_bitrate_options():
    enc = OpusEncoder(StreamSpec(), {"frame_samples": 960, "bitrate_kbps": 64})
    tone = ToneSource(StreamSpec(), {"frequency": 600})
    packets = [p for _ in range(50) for p in enc.encode(tone.read(960))]
    assert len(packets) == 50
    assert abs(sum(map(len, packets)) * 8 / 1.0 / 1000 - 64) < 6  # 50 × 20 ms = 1 s
    with pytest.raises(ValueError, match="expected int16"):
        enc.encode(tone.read(240))
    enc.close()
    assert OpusEncoder(StreamSpec(), {"frame_ms": 10}).frame_samples == 480
    assert OpusEncoder(StreamSpec(), {"frame_ms": 2.5}).frame_samples == 120
    with pytest.raises(ValueError, match="frame_ms"):
        OpusEncoder(StreamSpec(), {"frame_ms": 7})


def test_audio_options_are_validated():
    with pytest.raises(ValueError, match="frame_samples"):
        OpusEncoder(StreamSpec(), {"frame_samples": 300})
    with pytest.raises(ValueError, match=r"unknown option.*known: "):
        OpusEncoder(StreamSpec(), {"bitrate": 64})
    with pytest.raises(ValueError, match="frequency"):
        ToneSource(StreamSpec(), {"frequency": 30_000})
    with pytest.raises(ValueError, match=r"known: amplitude, channels, frequency"):
        ToneSource(StreamSpec(), {"volume": 1})


def test_audio_stages_are_registered():
    pm = load_plugin_manager()
    src = pm.stages.create("audio_source", "tone", StreamSpec(), {})
    enc = pm.stages.create("audio_encoder", "opus", StreamSpec(), {})
    assert pm.stages.get("audio_encoder", "opus").available() == ""
    assert len(enc.encode(src.read(enc.frame_samples))) == 1
    enc.close()
    src.close()


#: one frequency a channel, so a channel that arrives in the wrong place is seen
CHANNEL_HZ = (300.0, 500.0, 700.0, 1100.0, 1300.0, 1700.0, 1900.0, 2300.0)


@pytest.mark.parametrize("high_quality", [False, True], ids=["normal", "high-quality"])
@pytest.mark.parametrize("channels", [2, 6, 8], ids=["stereo", "5.1", "7.1"])
def test_multichannel_opus_decodes_with_the_layout_it_announces(channels, high_quality):
    lib = libopus()
    if lib is None:
        pytest.skip("libopus is not installed (Debian/Ubuntu: apt-get install libopus0)")
    enc = OpusEncoder(StreamSpec(), {"channels": channels, "high_quality": high_quality})
    layout = enc.layout
    # the layouts GameStream clients are told about (Sunshine's table, our mapping)
    assert layout == OPUS_LAYOUTS[(channels, high_quality)]
    assert len(CHANNEL_ORDER[channels]) == channels == len(layout.mapping)
    t = np.arange(48_000) / 48_000
    pcm = np.stack([np.sin(2 * np.pi * f * t) * 8000 for f in CHANNEL_HZ[:channels]], axis=1).astype(np.int16)
    packets = [p for i in range(0, 48_000, 240) for p in enc.encode(pcm[i:i + 240])]
    enc.close()
    assert len(packets) == 200
    # CBR at the layout's bitrate: one second of packets carries it
    assert abs(sum(map(len, packets)) * 8 / 1000 - layout.bitrate_kbps) < 0.06 * layout.bitrate_kbps
    dec = MultistreamDecoder(lib, layout.channels, layout.streams, layout.coupled, layout.mapping)
    out = np.concatenate([dec.decode(p) for p in packets])
    dec.close()
    assert dec.failed == 0 and out.shape == (48_000, channels)
    # every channel comes out where it went in, at its pitch and level
    steady = out[4800:].astype(np.float64)
    assert [round(peak_hz(steady[:, c])) for c in range(channels)] == [round(f) for f in CHANNEL_HZ[:channels]]
    assert all(4000 < np.abs(steady[:, c]).max() < 12000 for c in range(channels))


def test_multichannel_options_are_checked():
    with pytest.raises(ValueError, match="channels"):
        OpusEncoder(StreamSpec(), {"channels": 4})
    with pytest.raises(ValueError, match="bitrate_kbps"):
        OpusEncoder(StreamSpec(), {"channels": 2, "bitrate_kbps": 600})
    assert OpusEncoder(StreamSpec(), {"channels": 6, "bitrate_kbps": 1536}).bitrate_kbps == 1536
    enc = OpusEncoder(StreamSpec(), {"channels": 6})
    with pytest.raises(ValueError, match=r"\(240, 6\)"):
        enc.encode(np.zeros((240, 2), np.int16))
    tone = ToneSource(StreamSpec(), {"channels": 6})
    assert tone.read(240).shape == (240, 6) and tone.capture_ns > 0
    assert len(enc.encode(tone.read(240))) == 1
    enc.close()


def test_without_a_system_libopus_the_copy_in_pyavs_wheel_encodes() -> None:
    """A fresh ``pip install`` needs no libopus0: the opus stage falls back to PyAV's bundled copy."""
    from punktfunk_core.media.clib import load_library
    from punktfunk_core.media.libopus import LibOpus, _wheel_copies

    copies = _wheel_copies()
    assert copies, "PyAV's wheel bundles libopus (av.libs/libopus-*.so*)"
    # a stem and soname that do not exist: only the wheel's copy can load
    found = load_library("opus-not-installed", "libopus-not-installed.so.0", ("opus_multistream_encode",), copies)
    assert found is not None and found[1] in copies
    assert LibOpus(*found).version.startswith("libopus")
