"""punktfunk/1 wire format and data plane, without a host: control framing,
packet header, shard plan, replay window, FEC recovery, sealing — plus
hypothesis fuzzing of the two parsers that face the network."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punktfunk_core.stages import AccessUnit

from punktfunk_native.datapath import (
    FecParams,
    NativePacketizer,
    NativeReceiver,
    NativeSender,
    PacketOpener,
    make_probe,
)
from punktfunk_native.wire import (
    DIR_CLIENT_TO_HOST,
    HEADER,
    HEADER_BYTES,
    MAX_CONTROL_MESSAGE,
    OVERHEAD,
    PKT_VIDEO,
    MessageReader,
    MessageTooLarge,
    PacketRejected,
    ProtocolError,
    ReplayWindow,
    encode_message,
    nonce,
    parity_count,
    parse_header,
    shard_plan,
)

KEY = bytes(range(16))


def au(data: bytes, fid: int = 1, key: bool = False) -> AccessUnit:
    return AccessUnit(data, key, fid, time.monotonic_ns())


# -- control messages ----------------------------------------------------------------
def test_control_roundtrip_in_any_split():
    msgs = [{"type": "hello", "versions": ["punktfunk/1"]}, {"type": "ping", "id": 1, "t_us": 5},
            {"type": "report", "packets_lost": 3, "name": "wohnzimmer ✓"}]
    stream = b"".join(encode_message(m) for m in msgs)
    for cut in range(1, 12):
        r = MessageReader()
        out = []
        for i in range(0, len(stream), cut):
            out += r.feed(stream[i:i + cut])
        assert out == msgs


def test_oversized_control_message_refused_from_its_prefix():
    r = MessageReader()
    with pytest.raises(MessageTooLarge):
        r.feed(struct.pack("!I", MAX_CONTROL_MESSAGE + 1))  # refused before any body byte arrives
    with pytest.raises(MessageTooLarge):
        encode_message({"type": "x", "pad": "a" * MAX_CONTROL_MESSAGE})
    with pytest.raises(ProtocolError):
        MessageReader().feed(b"\x00\x00\x00\x00")


@pytest.mark.parametrize("body", [b"[1,2]", b"{}", b'{"type": 3}', b'{"type": ""}', b"\xff\xfe", b"nope", b"{" * 5000])
def test_bad_control_bodies_are_protocol_errors(body):
    with pytest.raises(ProtocolError):
        MessageReader().feed(struct.pack("!I", len(body)) + body)


@given(st.binary(max_size=2000))
def test_control_reader_never_raises_anything_but_protocol_error(data):
    r = MessageReader()
    try:
        for m in r.feed(data):
            assert isinstance(m, dict) and isinstance(m["type"], str)
    except ProtocolError:
        pass


@given(st.lists(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20), st.booleans(),
                                                                st.none()), max_size=5), max_size=6),
       st.integers(1, 64))
def test_control_roundtrip_property(dicts, cut):
    msgs = [dict(d, type="t") for d in dicts]
    stream = b"".join(encode_message(m) for m in msgs)
    r = MessageReader()
    out = []
    for i in range(0, len(stream), cut):
        out += r.feed(stream[i:i + cut])
    assert out == [json.loads(json.dumps(m)) for m in msgs]


# -- shard plan / header ----------------------------------------------------------------
@given(st.integers(1, 3_000_000), st.sampled_from([64, 256, 1200, 1408]), st.integers(1, 256),
       st.sampled_from([2, 64, 256]))
def test_shard_plan_properties(n, max_shard, target, min_shard):
    min_shard = min(min_shard, max_shard)
    if n > 32768 * max_shard:
        with pytest.raises(ValueError):
            shard_plan(n, max_shard, target, min_shard)
        return
    k, slen = shard_plan(n, max_shard, target, min_shard)
    assert slen % 2 == 0 and 2 <= slen <= max_shard
    assert (k - 1) * slen < n <= k * slen  # the header validity rule holds
    assert k * slen - n < 2 * k  # padding is at most rounding


def test_parity_count_rules():
    assert parity_count(10, 0, 2) == 0
    assert parity_count(10, 20, 2) == 2
    assert parity_count(64, 20, 2) == 13
    assert parity_count(1, 20, 2) == 2  # small units still get the minimum
    assert parity_count(100, 100, 0) == 100


def test_header_layout_is_32_bytes_big_endian():
    b = NativePacketizer(KEY, FecParams(0, 0, 1200, 1, 64)).packetize(au(b"x" * 100, fid=0x01020304, key=True))
    p = bytes(b.packets[0])
    assert HEADER_BYTES == 32 and len(p) == OVERHEAD + 100
    assert p[0] == 1 and p[1] == PKT_VIDEO and p[2] == 1 and p[3] == 0
    assert p[4:12] == (0).to_bytes(8, "big") and p[12:16] == bytes([1, 2, 3, 4])
    assert p[20:24] == (100).to_bytes(4, "big") and p[30:32] == (100).to_bytes(2, "big")
    assert nonce(1, 5) == b"\x00\x00\x00\x01" + (5).to_bytes(8, "big")


@given(st.binary(max_size=300))
def test_header_parser_rejects_or_parses(data):
    try:
        h = parse_header(data)
    except PacketRejected as exc:
        assert exc.reason in ("truncated", "malformed")
    else:
        assert h.type in (1, 2)


@given(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 3), st.integers(0, 2), st.integers(0, 2**64 - 1),
                 st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                 st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535)),
       st.integers(0, 1500))
def test_structured_headers_never_crash_the_receiver(fields, body):
    rx = NativeReceiver(KEY)
    pkt = HEADER.pack(*fields) + os.urandom(min(body, 1500))
    assert rx.push(pkt) is None  # nothing unauthenticated gets through
    assert sum(rx.rejected.values()) == 1


# -- replay window ------------------------------------------------------------------------
def test_replay_window():
    w = ReplayWindow(64)
    for s in (5, 3, 7, 6):
        assert w.check(s) == "ok"
        w.accept(s)
    assert w.check(5) == "replayed" and w.check(4) == "ok"
    w.accept(200)
    assert w.check(136) == "old" and w.check(137) == "ok" and w.check(200) == "replayed"


@given(st.lists(st.integers(0, 5000), max_size=300))
def test_replay_window_accepts_each_seq_once(seqs):
    w = ReplayWindow(1024)
    seen = set()
    for s in seqs:
        state = w.check(s)
        if s in seen:
            assert state in ("replayed", "old")
        if state == "ok":
            assert s not in seen
            w.accept(s)
            seen.add(s)


# -- FEC + AEAD roundtrip ----------------------------------------------------------------------
@settings(max_examples=60)
@given(st.integers(1, 200_000), st.integers(0, 100), st.data())
def test_any_k_of_n_shards_rebuild_the_unit(size, pct, data):
    payload = random.Random(size).randbytes(size)
    pk = NativePacketizer(KEY, FecParams(pct, 2, 1200, 64, 64))
    b = pk.packetize(au(payload, 9))
    k, m = b.meta["data_shards"], b.meta["parity_shards"]
    keep = data.draw(st.permutations(range(k + m)))[:k]
    rx = NativeReceiver(KEY)
    out = [rx.push(bytes(b.packets[i])) for i in sorted(keep)]
    got = [x for x in out if x is not None]
    assert len(got) == 1 and got[0].data == payload and got[0].frame_id == 9
    assert got[0].recovered == sum(1 for i in keep if i >= k)


def test_nonces_never_repeat_across_units():
    pk = NativePacketizer(KEY, FecParams(20, 2, 1200, 64, 64))
    seqs = []
    for i in range(50):
        for p in pk.packetize(au(os.urandom(random.randint(1, 30000)), i)).packets:
            seqs.append(struct.unpack_from("!Q", p, 4)[0])
    assert seqs == list(range(len(seqs)))


def test_tampered_replayed_truncated_and_old_packets_are_counted():
    pk = NativePacketizer(KEY, FecParams(0, 0, 1200, 1, 64))
    rx = NativeReceiver(KEY)
    first = bytes(pk.packetize(au(b"a" * 500, 1)).packets[0])
    assert rx.push(first) is not None
    assert rx.push(first) is None and rx.rejected["replayed"] == 1
    p2 = bytearray(pk.packetize(au(b"b" * 500, 2)).packets[0])
    for pos in (3 + 1, 20, HEADER_BYTES + 7, len(p2) - 1):  # header (AAD), payload, tag
        bad = bytearray(p2)
        bad[pos] ^= 0x40
        assert rx.push(bytes(bad)) is None
    assert rx.rejected["forged"] + rx.rejected["malformed"] + rx.rejected["truncated"] == 4
    assert rx.rejected["forged"] >= 2
    assert rx.push(bytes(p2[:-1])) is None and rx.rejected["truncated"] == 1
    assert rx.push(bytes(p2)) is not None  # the genuine one still gets through after all that
    stranger = NativePacketizer(os.urandom(16), FecParams(0, 0, 1200, 1, 64))
    wrong_key = bytes(stranger.packetize(au(b"c" * 500, 3)).packets[0])
    assert rx.push(wrong_key) is None and rx.rejected["forged"] >= 3
    # push the window far ahead, then an old packet is "too_old"
    for _ in range(3, 9000):
        pk.seq += 1
    late = bytes(pk.packetize(au(b"d" * 10, 4)).packets[0])
    assert rx.push(late) is not None
    pk.seq = 5
    assert rx.push(bytes(pk.packetize(au(b"e" * 10, 5)).packets[0])) is None
    assert rx.rejected["too_old"] == 1


def test_probe_opens_only_with_the_client_key():
    probe = make_probe(KEY, 0)
    h, _ = PacketOpener(KEY, DIR_CLIENT_TO_HOST).open(probe)
    assert h.type == 2
    with pytest.raises(PacketRejected) as e:
        PacketOpener(os.urandom(16), DIR_CLIENT_TO_HOST).open(probe)
    assert e.value.reason == "forged"
    with pytest.raises(PacketRejected):  # a host→client opener must not accept a client→host nonce
        PacketOpener(KEY, 1).open(probe)


# -- real sockets: GSO and plain, a relay that tampers and replays --------------------------------
@pytest.mark.parametrize("gso", [True, False])
def test_sender_over_loopback_with_tampering_relay(gso):
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    rx_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sender = NativeSender(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), relay.getsockname(), 60, gso=gso,
                          pace_percent=10)
    if gso:
        assert sender.gso, "this kernel refuses UDP GSO"
    pk = NativePacketizer(KEY, FecParams(20, 2, 1200, 64, 64))
    units = [os.urandom(random.Random(i).randint(100, 90_000)) for i in range(20)]
    sent = 0
    for i, data in enumerate(units):
        b = pk.packetize(au(data, i + 1, key=i == 0))
        sender.send(b)
        sent += b.meta["count"]
        assert b.extra_ns["sock"] > 0 and b.extra_ns["seal"] > 0
    assert sender.send_dropped == 0 and sender.packets_sent == sent
    relay.settimeout(0.5)
    got = []
    while len(got) < sent:
        got.append(relay.recv(4096))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tampered = replayed = 0
    for i, p in enumerate(got):
        if i % 23 == 0:  # a tampered copy ahead of the genuine packet: fails authentication
            bad = bytearray(p)
            bad[-3] ^= 1
            out.sendto(bytes(bad), rx_sock.getsockname())
            tampered += 1
        out.sendto(p, rx_sock.getsockname())
        if i % 17 == 0:
            out.sendto(p, rx_sock.getsockname())  # replay of an accepted packet
            replayed += 1
    rx = NativeReceiver(KEY)
    rx_sock.settimeout(0.5)
    frames = []
    try:
        while True:
            r = rx.push(rx_sock.recv(4096))
            if r is not None:
                frames.append(r)
    except TimeoutError:
        pass
    assert [f.data for f in frames] == units
    assert [f.frame_id for f in frames] == list(range(1, 21))
    assert rx.rejected["replayed"] == replayed and rx.rejected["forged"] == tampered
    assert rx.packets_lost == 0
    for s in (rx_sock, relay, out):
        s.close()
    sender.close()


@settings()  # case count from the hypothesis profile
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 6), st.integers(0, 3), st.integers(0, 9),
                          st.sampled_from([2, 4, 64]), st.integers(0, 1), st.integers(0, 2**32 - 1)),
                min_size=1, max_size=150))
def test_authenticated_but_hostile_headers_never_crash_the_reassembler(items):
    """Even a peer holding the key (a broken or hostile host) cannot make the
    client raise: inconsistent shard counts, lengths and ids are counted."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(KEY)
    rx = NativeReceiver(KEY)
    for seq, (au_seq, k, m, idx, slen, flags, fid) in enumerate(items):
        idx = idx % (k + m)
        au_len = (k - 1) * slen + 1
        hdr = HEADER.pack(1, PKT_VIDEO, flags, 0, seq, fid, au_seq, au_len, idx, k, m, slen)
        pkt = hdr + aead.encrypt(nonce(1, seq), os.urandom(slen), hdr)
        out = rx.push(pkt)
        if out is not None:
            assert len(out.data) == au_len
    c = rx.counters()
    assert c["packets_accepted"] == len(items)
    assert len(rx.reasm.slots) <= rx.reasm.max_pending


@given(st.dictionaries(st.sampled_from(["packets_lost", "shards_recovered", "frames_unrecoverable", "frames_decoded",
                                        "span_us", "decode_us", "last", "x"]),
                       st.one_of(st.integers(-5, 2**50), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                                 st.booleans())))
def test_feedback_report_parser(msg):
    from punktfunk_core.session import Session
    from punktfunk_core.stages import StreamSpec
    from punktfunk_core.stats import StatsSample

    from punktfunk_native.server import NativePlane

    session = Session("native", "test", StreamSpec())
    session.feedback.expect_last_report()
    try:
        NativePlane._feedback(session, dict(msg, type="report"))
    except ProtocolError:
        return
    sample = StatsSample([], 0.0, 0.0, 0.0, 0)
    session.feedback.drain_into(sample)
    if "packets_lost" in msg:
        assert sample.packets_dropped == msg["packets_lost"] >= 0
    if "shards_recovered" in msg:
        assert sample.fec_recovered == msg["shards_recovered"] >= 0
    if "frames_unrecoverable" in msg:
        assert sample.frames_unrecoverable == msg["frames_unrecoverable"] >= 0
    # a decoded count is a rate only with the span it covers
    if "frames_decoded" in msg and msg.get("span_us", 0) > 0:
        assert sample.delivered_fps == round(msg["frames_decoded"] / (msg["span_us"] / 1e6), 2)
    else:
        assert sample.delivered_fps is None
    # only a report marked last (exactly true) lets the session's last window close
    assert session.feedback.wait_last_report(0) is (msg.get("last") is True)


def test_audio_units_are_one_shard_with_copies_and_never_open_as_video() -> None:
    """An Opus packet is one data shard plus parity copies (type 3, nonce direction 3): any one
    datagram gives it back, and neither stream's receiver takes the other's datagrams."""
    from punktfunk_native.audio import audio_fec
    from punktfunk_native.wire import DIR_AUDIO_HOST_TO_CLIENT, PKT_AUDIO

    key = os.urandom(16)
    opus = os.urandom(161)  # odd: the shard is padded to even, au_len stays exact
    audio = NativePacketizer(key, audio_fec(FecParams(20, 2)), DIR_AUDIO_HOST_TO_CLIENT, packet_type=PKT_AUDIO)
    video = NativePacketizer(key, FecParams(20, 2))
    a_dgrams = [bytes(p) for p in audio.packetize(au(opus)).packets]
    v_dgrams = [bytes(p) for p in video.packetize(au(os.urandom(3000), key=True)).packets]
    assert len(a_dgrams) == 3 and all(d[1] == PKT_AUDIO for d in a_dgrams)
    assert {parse_header(d).data_count for d in a_dgrams} == {1}
    rx_audio = NativeReceiver(key, DIR_AUDIO_HOST_TO_CLIENT, PKT_AUDIO)
    rx_video = NativeReceiver(key)
    got = rx_audio.push(a_dgrams[2])  # only the last parity copy arrives
    assert got is not None and got.data == opus and rx_audio.reasm.shards_recovered == 1
    # same key, same sequence numbers, other nonce direction: each is forged to the other
    assert rx_video.push(a_dgrams[0]) is None and rx_video.rejected["forged"] == 1
    assert all(rx_audio.push(d) is None for d in v_dgrams)
    # (video seq 2 is the audio seq the receiver accepted already: refused as a replay before opening)
    assert rx_audio.rejected["forged"] + rx_audio.rejected["replayed"] == len(v_dgrams)
    assert rx_audio.reasm.frames_complete == 1
