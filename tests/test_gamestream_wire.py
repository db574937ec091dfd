"""GameStream wire formats: our own datagrams parsed back, FEC recovery, parsers under fuzz."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from punktfunk_core.stages import AccessUnit, StreamSpec

from punktfunk_gamestream import fec, wire, wire_control, wire_nvhttp, wire_rtsp
from punktfunk_gamestream import video as video_mod
from punktfunk_gamestream.audio import AudioPacketizer
from punktfunk_gamestream.video import GameStreamPacketizer, VideoContext, fec_layout

# -- a reference receiver (what moonlight-common-c checks), written from the layout --------


def _gf_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a·x = b over GF(2^8)/0x11D (a: n×n, b: n×S) by Gauss-Jordan."""
    mul = fec.mul_table()
    a = a.copy()
    b = b.copy()
    n = a.shape[0]
    for col in range(n):
        piv = next(r for r in range(col, n) if a[r, col])
        a[[col, piv]] = a[[piv, col]]
        b[[col, piv]] = b[[piv, col]]
        inv = fec.gf_inv(int(a[col, col]))
        a[col] = mul[inv][a[col]]
        b[col] = mul[inv][b[col]]
        for r in range(n):
            if r != col and a[r, col]:
                f = int(a[r, col])
                a[r] ^= mul[f][a[col]]
                b[r] ^= mul[f][b[col]]
    return b


def _parse(datagrams: Sequence[bytes | bytearray | memoryview], packet_size: int,
           key: bytes | None = None) -> list[dict]:
    out = []
    for d in datagrams:
        d = bytes(d)
        if key is not None:
            assert len(d) == packet_size + 16 + 32
            iv, frame, tag = d[:12], struct.unpack_from("<I", d, 12)[0], d[16:32]
            plain = AESGCM(key).decrypt(iv, d[32:] + tag, None)
            assert struct.unpack_from("<I", plain, 20)[0] == frame
            d = plain
        assert len(d) == packet_size + 16
        hdr, pt, seq, ts, ssrc, _ = struct.unpack_from(">BBHIII", d, 0)
        spi, frame, flags, _res, mflags, mblocks, info = struct.unpack_from("<IIBBBBI", d, 16)
        out.append({"raw": d, "hdr": hdr, "pt": pt, "seq": seq, "ts": ts, "ssrc": ssrc, "spi": spi, "frame": frame,
                    "flags": flags, "mflags": mflags, "block": (mblocks >> 4) & 3, "last_block": (mblocks >> 6) & 3,
                    "k": info >> 22, "index": (info >> 12) & 0x3FF, "pct": (info >> 4) & 0xFF})
    return out


def _check_frame(pkts: list[dict], packet_size: int) -> bytes:
    """Validate one frame's packets like the client does; return its payload bytes."""
    seqs = [p["seq"] for p in pkts]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))], "sequence continuous over data and parity"
    assert len({p["frame"] for p in pkts}) == 1 and len({p["ts"] for p in pkts}) == 1
    nblocks = pkts[0]["last_block"] + 1
    payload = b""
    pos = 0
    for b in range(nblocks):
        k = pkts[pos]["k"]
        pct = pkts[pos]["pct"]
        parity = (k * pct + 99) // 100
        blk = pkts[pos:pos + k + parity]
        assert len(blk) == k + parity, "the client's parity count matches what was sent"
        assert all(p["block"] == b and p["k"] == k and p["pct"] == pct for p in blk)
        assert [p["index"] for p in blk] == list(range(k + parity))
        low = blk[0]["seq"]
        for i, p in enumerate(blk):
            assert p["hdr"] == 0x90 and p["pt"] == 0 and p["ssrc"] == 0 and p["mflags"] == 0x10
            assert p["seq"] == (low + i) & 0xFFFF
        data = blk[:k]
        for i, p in enumerate(data):
            assert p["spi"] == (p["seq"] & 0xFFFFFF) << 8
            want = (wire.VIDEO_FLAG_PIC_DATA | (wire.VIDEO_FLAG_SOF if i == 0 else 0)
                    | (wire.VIDEO_FLAG_EOF if i == k - 1 else 0))
            assert p["flags"] == want
            payload += p["raw"][32:]
        if parity:
            rows = np.array([np.frombuffer(p["raw"], dtype=np.uint8) for p in data])
            buf = np.zeros((k + parity, packet_size + 16), dtype=np.uint8)
            buf[:k] = rows
            fec.NumpyKernel().encode(buf, k, parity)
            for j, p in enumerate(blk[k:]):
                got = np.frombuffer(p["raw"], dtype=np.uint8)
                # parity bytes where the client needs recovered values: spi, flags, payload
                assert np.array_equal(got[32:], buf[k + j, 32:])
                assert np.array_equal(got[16:20], buf[k + j, 16:20]) and got[24] == buf[k + j, 24]
        pos += k + parity
    assert pos == len(pkts)
    return payload


def _frames(pkts: list[dict]) -> dict[int, list[dict]]:
    by: dict[int, list[dict]] = {}
    for p in pkts:
        by.setdefault(p["frame"], []).append(p)
    return by


@pytest.mark.parametrize("packet_size,size,key,limit", [
    (1392, 100, None, 0), (1392, 5000, None, 0), (1024, 400_000, None, 0), (1392, 1_500_000, None, 0),
    (1360, 30_000, bytes(range(16)), 0), (992, 1, bytes(range(16)), 0), (1392, 14_000, None, 3),
])
def test_packetizer_datagrams_parse_back(packet_size: int, size: int, key: bytes | None, limit: int) -> None:
    ctx = VideoContext(packet_size=packet_size, fec_percent=20, min_fec_packets=2, key=key)
    pk = GameStreamPacketizer(StreamSpec(), {"context": ctx, "strip_sei": False})
    pk.block_limit = limit  # smaller FEC blocks, as a subclass may ask for
    rng = np.random.default_rng(size)
    aus = [AccessUnit(rng.integers(0, 256, size, dtype=np.uint8).tobytes(), i == 0, i + 1, 0) for i in range(3)]
    last_seq = None
    for n, au in enumerate(aus, start=1):
        batch = pk.packetize(au)
        pkts = _parse(batch.packets, packet_size, key)
        assert {p["frame"] for p in pkts} == {n}, "frame index starts at 1 and counts frames"
        if last_seq is not None:
            assert pkts[0]["seq"] == (last_seq + 1) & 0xFFFF
        last_seq = pkts[-1]["seq"]
        payload = _check_frame(pkts, packet_size)
        ver, lat, ftype, last_len, zero = struct.unpack_from("<BHBHH", payload, 0)
        assert ver == 1 and zero == 0 and ftype == (2 if au.keyframe else 1)
        assert payload[8:8 + size] == au.data and not any(payload[8 + size:])
        total = 8 + size
        per = packet_size - 16
        assert last_len == min(0xFFFF, total - (-(-total // per) - 1) * per)
        assert batch.wire_bytes == len(batch.packets) * (packet_size + 16 + (32 if key else 0))
        assert pkts[0]["last_block"] + 1 == batch.meta["blocks"] <= 4
        if limit:
            assert batch.meta["blocks"] == 4


def test_lost_shards_are_recovered_like_the_client_does() -> None:
    packet_size = 1392
    pk = GameStreamPacketizer(StreamSpec(), {"packet_size": packet_size, "fec_percent": 20, "min_fec_packets": 2,
                                             "strip_sei": False})
    data = bytes(range(256)) * 40  # 10240 bytes → 8 data shards, 2 parity
    batch = pk.packetize(AccessUnit(data, True, 1, 0))
    pkts = _parse(batch.packets, packet_size)
    k = pkts[0]["k"]
    parity = len(pkts) - k
    assert parity >= 2
    lost = [1, k - 1]  # a middle shard and the EOF shard
    have = [i for i in range(k + parity) if i not in lost][:k]
    mat = fec.cauchy_matrix(k, parity)
    a = np.zeros((k, k), dtype=np.uint8)
    b = np.zeros((k, packet_size + 16), dtype=np.uint8)
    for r, i in enumerate(have):
        if i < k:
            a[r, i] = 1
        else:
            a[r] = mat[i - k]
        b[r] = np.frombuffer(pkts[i]["raw"], dtype=np.uint8)
    rec = _gf_solve(a, b)
    for i in lost:
        orig = np.frombuffer(pkts[i]["raw"], dtype=np.uint8)
        # the fields the client keeps from a recovered packet are exact
        assert np.array_equal(rec[i, 32:], orig[32:])
        assert np.array_equal(rec[i, 16:20], orig[16:20])
        assert rec[i, 24] == orig[24]


def test_leading_sei_and_aud_are_stripped_before_the_first_slice() -> None:
    sc3, sc4 = b"\x00\x00\x01", b"\x00\x00\x00\x01"
    vps, sps, pps = sc4 + b"\x40\x01\x0c", sc3 + b"\x42\x01\x01", sc3 + b"\x44\x01\xc1"
    sei = sc3 + b"\x4e\x01\x05" + b"\x11" * 3000
    aud = sc4 + b"\x46\x01\x50"
    idr = sc3 + b"\x28\x01\xaf" + b"\x22" * 5000 + sc3 + b"\x4e\x01\x05\x33"  # slice + trailing SEI kept
    assert video_mod.strip_leading_sei(aud + vps + sps + pps + sei + idr, "hevc") == vps + sps + pps + idr
    p_frame = sc4 + b"\x02\x01\xd0" + b"\x44" * 100
    assert video_mod.strip_leading_sei(p_frame, "hevc") is p_frame
    h264 = sc4 + b"\x67\x42" + sc4 + b"\x68\xce" + sc3 + b"\x06\x05\x10" + b"\x55" * 700 + sc3 + b"\x65\x88\x84"
    assert video_mod.strip_leading_sei(h264, "h264") == sc4 + b"\x67\x42" + sc4 + b"\x68\xce" + sc3 + b"\x65\x88\x84"
    assert video_mod.strip_leading_sei(b"\x12\x00\x0a", "av1") == b"\x12\x00\x0a"
    assert video_mod.strip_leading_sei(sc3 + b"\x06", "h264") == sc3 + b"\x06"  # no slice: untouched


@settings(deadline=None)  # case count from the hypothesis profile (suite 300, fuzz run 10 000)
@given(n=st.integers(1, 4 * 1023), pct=st.integers(0, 100), min_fec=st.integers(0, 8),
       limit=st.sampled_from([0, 0, 1, 3, 50]))
def test_fec_layout_rules(n: int, pct: int, min_fec: int, limit: int) -> None:
    try:
        blocks, used = fec_layout(n, pct, min_fec, limit)
    except ValueError:
        assert n > 4 * 1023
        return
    assert 1 <= len(blocks) <= 4
    assert sum(k for k, _, _ in blocks) == n
    for k, p, w in blocks:
        assert 1 <= k <= 1023 and 0 <= w <= 255
        assert (k * w + 99) // 100 == p, "the client derives the same parity count"
        if p:
            assert k + p <= 255
            assert p >= min(min_fec, 255 - k, (k * 255 + 99) // 100)
            assert p >= -(-k * used // 100) or k + p == 255


def test_audio_packets_fec_and_cbc() -> None:
    key = bytes(range(16, 32))
    rikeyid = -12345
    ap = AudioPacketizer(5, key, rikeyid, fec.NumpyKernel())
    opus = [bytes([i]) * 60 for i in range(8)]
    out = [ap.packets_for(o) for o in opus]
    assert [len(x) for x in out] == [1, 1, 1, 3, 1, 1, 1, 3]
    datas = [x[0] for x in out]
    for seq, (d, o) in enumerate(zip(datas, opus, strict=True)):
        v, pt, s, ts, ssrc = struct.unpack_from(">BBHII", d, 0)
        assert (v, pt, s, ts, ssrc) == (0x80, 97, seq, seq * 5, 0)
        iv = struct.pack(">I", (rikeyid + seq) & 0xFFFFFFFF) + bytes(12)
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        padded = dec.update(d[12:]) + dec.finalize()
        unp = padding.PKCS7(128).unpadder()
        assert unp.update(padded) + unp.finalize() == o
    fec_pkts = out[3][1:]
    m = np.array(wire.AUDIO_FEC_MATRIX, dtype=np.uint8)
    payloads = np.array([np.frombuffer(d[12:], dtype=np.uint8) for d in datas[:4]])
    for j, f in enumerate(fec_pkts):
        assert f[1] == 127
        idx, pt, base, bts, ssrc = struct.unpack_from(">BBHII", f, 12)
        assert (idx, pt, base, bts, ssrc) == (j, 97, 0, 0, 0)
        want = np.zeros(payloads.shape[1], dtype=np.uint8)
        for i in range(4):
            want ^= fec.mul_table()[m[j, i]][payloads[i]]
        assert bytes(f[24:]) == want.tobytes()
    assert struct.unpack_from(">H", out[7][1], 14)[0] == 4  # second block's base sequence


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=12), st.integers(-(2**31), 2**31 - 1))
def test_each_audio_payload_decrypts_alone_with_its_own_iv(opus: list[bytes], rikeyid: int) -> None:
    """The packetizer chains one CBC context across packets; a client still decrypts every
    payload on its own, with a fresh context and that packet's IV, whatever the sizes
    (multiples of 16 included) and whichever packets it lost before."""
    key = bytes(range(32, 48))
    ap = AudioPacketizer(5, key, rikeyid, fec.NumpyKernel())
    for seq, o in enumerate(opus):
        d = ap.packets_for(o)[0]
        assert struct.unpack_from(">H", d, 2)[0] == seq
        iv = struct.pack(">I", (rikeyid + seq) & 0xFFFFFFFF) + bytes(12)
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        padded = dec.update(d[12:]) + dec.finalize()
        unp = padding.PKCS7(128).unpadder()
        assert unp.update(padded) + unp.finalize() == o


def test_control_messages_roundtrip_and_tamper() -> None:
    aead = AESGCM(bytes(16))
    graceful = struct.pack(">I", wire_control.TERMINATION_GRACEFUL)
    msg = wire_control.seal_control(aead, 7, wire_control.CTRL_TERMINATION, graceful)
    kind, length, seq = struct.unpack_from("<HHI", msg, 0)
    assert kind == 1 and seq == 7 and length == len(msg) - 4 == 4 + 16 + 4 + 4
    # the client decrypts host messages with IV byte 10 = 'H'
    assert wire_control.open_control(aead, msg, origin=b"H") == (7, wire_control.CTRL_TERMINATION,
                                                                 struct.pack(">I", 0x80030023))
    with pytest.raises(wire.BadInput):
        wire_control.open_control(aead, msg, origin=b"C")
    bad = bytearray(msg)
    bad[-1] ^= 1
    with pytest.raises(wire.BadInput):
        wire_control.open_control(aead, bytes(bad), origin=b"H")


def test_announce_is_parsed() -> None:
    sdp = (b"v=0\r\na=x-nv-video[0].clientViewportWd:1920 \r\na=x-nv-video[0].clientViewportHt:1080 \r\n"
           b"a=x-nv-video[0].maxFPS:120 \r\na=x-nv-video[0].packetSize:1360 \r\n"
           b"a=x-nv-vqos[0].bw.maximumBitrateKbps:16000 \r\na=x-nv-vqos[0].bitStreamFormat:1 \r\n"
           b"a=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\na=x-ss-general.encryptionEnabled:3 \r\n"
           b"a=x-nv-general.featureFlags:167 \r\na=x-nv-aqos.packetDuration:5 \r\n")
    a = wire_rtsp.parse_announce(sdp)
    assert (a.width, a.height, a.fps, a.packet_size, a.bitrate_kbps, a.codec) == (1920, 1080, 120, 1360, 16000, "hevc")
    assert a.min_fec_packets == 2 and a.video_encrypted and a.audio_encrypted and a.audio_packet_ms == 5
    with pytest.raises(wire.BadInput):
        wire_rtsp.parse_announce(sdp.replace(b"1360", b"1361"))
    with pytest.raises(wire.BadInput):
        wire_rtsp.parse_announce(b"a=x-nv-video[0].maxFPS:60\r\n")


def test_announce_carries_the_channels_and_quality_asked_for() -> None:
    base = b"a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n"
    stereo = wire_rtsp.parse_announce(base)
    assert (stereo.audio_channels, stereo.audio_high_quality) == (2, False)
    surround = wire_rtsp.parse_announce(base + b"a=x-nv-audio.surround.numChannels:8 \r\n"
                                        b"a=x-nv-audio.surround.channelMask:1599 \r\n"
                                        b"a=x-nv-audio.surround.AudioQuality:1 \r\n")
    assert (surround.audio_channels, surround.audio_high_quality) == (8, True)
    for bad in (b"4", b"9", b"x"):  # only the layouts the DESCRIBE offers
        with pytest.raises(wire.BadInput):
            wire_rtsp.parse_announce(base + b"a=x-nv-audio.surround.numChannels:" + bad + b"\r\n")


def test_describe_offers_each_surround_layout_with_lfe_last_in_normal_quality() -> None:
    """What moonlight-common-c parses (``parseOpusConfigurations``): per channel count the
    normal-quality line, then the high-quality one; in normal quality the client moves the
    last mapping entry to index 3 (GFE's order has LFE last), so it gets our mapping back."""
    from punktfunk_core.media.audio import OPUS_LAYOUTS

    lines = wire_rtsp.surround_params(OPUS_LAYOUTS.values())
    assert lines == [
        "a=fmtp:97 surround-params=642014235",    # 5.1: FL+FR, RL+RR coupled; mapping 0 1 4 5 2 3
        "a=fmtp:97 surround-params=660012345",    # 5.1 high quality: one stream a channel
        "a=fmtp:97 surround-params=85301645237",  # 7.1: mapping 0 1 6 7 4 5 2 3
        "a=fmtp:97 surround-params=88001234567",  # 7.1 high quality
    ]
    for (channels, hq), lay in OPUS_LAYOUTS.items():
        if channels == 2:
            continue
        # the client's reading of the first (normal) or second (high) line for its channel count
        prefix = f"a=fmtp:97 surround-params={channels}"
        value = [ln for ln in lines if ln.startswith(prefix)][int(hq)][len(prefix):]
        streams, coupled, mapping = int(value[0]), int(value[1]), [int(c) for c in value[2:]]
        if not hq:
            mapping = mapping[:3] + [mapping[-1]] + mapping[3:-1]
        assert (streams, coupled, tuple(mapping)) == (lay.streams, lay.coupled, lay.mapping)


# -- fuzz: every parser either parses or raises BadInput -----------------------------------
def _only_bad_input(fn, *args):
    try:
        fn(*args)
    except wire.BadInput:
        pass


@settings(deadline=None)  # case count from the hypothesis profile (suite 300, fuzz run 10 000)
@given(st.text(max_size=300))
def test_fuzz_query(qs: str) -> None:
    _only_bad_input(wire_nvhttp.parse_query, qs)


@settings(deadline=None)  # case count from the hypothesis profile (suite 300, fuzz run 10 000)
@given(st.one_of(st.binary(max_size=400), st.builds(
    lambda m, t, h, b: f"{m} {t} RTSP/1.0\r\n{h}\r\n\r\n".encode() + b,
    st.sampled_from(["OPTIONS", "DESCRIBE", "SETUP", "ANNOUNCE", "PLAY", "X"]), st.text(max_size=20),
    st.text(max_size=60), st.binary(max_size=80))))
def test_fuzz_rtsp(data: bytes) -> None:
    _only_bad_input(wire_rtsp.parse_rtsp, data)
    _only_bad_input(wire_rtsp.parse_announce, data)


@settings(deadline=None)  # case count from the hypothesis profile (suite 300, fuzz run 10 000)
@given(st.one_of(st.binary(max_size=120), st.builds(lambda s, b: struct.pack("<HHI", 1, s, 0) + b,
                                                    st.integers(0, 0xFFFF), st.binary(max_size=80))))
def test_fuzz_control(data: bytes) -> None:
    aead = AESGCM(bytes(16))
    _only_bad_input(wire_control.open_control, aead, data)
    _only_bad_input(wire_control.parse_fec_status, data)


@settings(deadline=None)  # case count from the hypothesis profile (suite 300, fuzz run 10 000)
@given(st.binary(max_size=64))
def test_fuzz_ping(data: bytes) -> None:
    try:
        payload, seq = wire_rtsp.parse_ping(data)
    except wire.BadInput:
        assert len(data) != 20 and data != b"PING"
        return
    assert len(payload) in (4, 16) and 0 <= seq < 2**32


@settings(deadline=None)  # case count from the hypothesis profile (suite 300, fuzz run 10 000)
@given(st.text(max_size=24))
def test_fuzz_mode_and_hex(s: str) -> None:
    _only_bad_input(wire_nvhttp.parse_mode, s)
    _only_bad_input(lambda v: wire.parse_hex(v, name="x", exact=16), s)
    _only_bad_input(lambda v: wire.parse_int(v, name="x"), s)


@pytest.mark.parametrize("gso", [True, False])
@pytest.mark.parametrize("key", [None, bytes(range(16))])
def test_sender_delivers_every_datagram_intact_and_paced(gso: bool, key: bytes | None) -> None:
    import socket
    import time

    from punktfunk_gamestream.video import GameStreamSender

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.settimeout(2)
    spec = StreamSpec(fps=60)
    ctx = VideoContext(packet_size=1392 - (32 if key else 0), key=key, peer=rx.getsockname(), pacing=0.5)
    pk = GameStreamPacketizer(spec, {"context": ctx})
    sd = GameStreamSender(spec, {"context": ctx, "gso": gso})
    try:
        au = AccessUnit(b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 400, True, 1, time.monotonic_ns())
        batch = pk.packetize(au)
        sent = [bytes(p) for p in batch.packets]
        sd.send(batch)
        got = [rx.recv(4096) for _ in sent]
        assert got == sent
        assert sd.send_dropped == 0
        if gso and sd.gso:
            assert sd.gso_sends >= 1
        # paced: the frame's packets were spread over part of the 16.7 ms interval
        assert 4_000_000 <= batch.extra_ns["send_spread"] <= 14_000_000
    finally:
        sd.close()
        rx.close()
        if ctx.sock is not None:
            ctx.sock.close()
