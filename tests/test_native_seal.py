"""The compiled batch sealer writes exactly the bytes of the portable path.

``punktfunk_native._seal`` is optional (setup.py builds it when a compiler
and OpenSSL headers are there). Where it is built, every datagram it writes
must equal the cryptography-based path byte for byte, and the receiver must
accept it; the sender must put the same datagrams on the wire either way.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from punktfunk_core.stages import AccessUnit
from punktfunk_core.transport import Datagrams

from punktfunk_native.datapath import (
    FecParams,
    NativePacketizer,
    NativeReceiver,
    NativeSender,
    batch_sealer_available,
    split_shards,
)

KEY = bytes(range(16))
needs_sealer = pytest.mark.skipif(
    not batch_sealer_available(),
    reason="punktfunk_native._seal was not built (needs gcc, Python headers and libssl-dev at install time)",
)


def test_the_sealer_is_built_where_it_can_be():
    # where a compiler and OpenSSL's headers exist (.ci/install-deps.sh installs
    # them), `pip install` must have built the extension; elsewhere a missing
    # sealer only costs speed
    import sysconfig

    can_build = (shutil.which("gcc") is not None and os.path.exists("/usr/include/openssl/evp.h")
                 and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
    if not can_build:
        pytest.skip("no gcc, OpenSSL headers or Python headers here: the portable path is used")
    assert batch_sealer_available(), "setup.py could build punktfunk_native._seal here but did not"


@needs_sealer
@pytest.mark.parametrize("size,fec", [(1, 0), (100, 20), (1200, 0), (60_001, 20), (250_000, 50)])
def test_batch_and_portable_paths_write_identical_datagrams(size, fec):
    data = os.urandom(size)
    fast = NativePacketizer(KEY, FecParams(fec, 2, 1200, 64, 64))
    slow = NativePacketizer(KEY, FecParams(fec, 2, 1200, 64, 64), batch_seal=False)
    for fid in (1, 2, 3):  # sequence numbers advance identically across frames
        a = fast.packetize(AccessUnit(data, fid == 1, fid, 0))
        b = slow.packetize(AccessUnit(data, fid == 1, fid, 0))
        assert isinstance(a.packets, Datagrams) and isinstance(b.packets, list)
        assert len(a.packets) == len(b.packets) == a.meta["count"]
        assert [bytes(p) for p in a.packets] == b.packets
        assert a.wire_bytes == b.wire_bytes == sum(map(len, b.packets))
    assert fast.seq == slow.seq and fast.au_seq == slow.au_seq


@needs_sealer
def test_batch_sealed_datagrams_open_and_reassemble():
    pk = NativePacketizer(KEY, FecParams(20, 2, 1200, 64, 64))
    rx = NativeReceiver(KEY)
    data = os.urandom(70_000)
    batch = pk.packetize(AccessUnit(data, True, 9, 0))
    out = [rx.push(bytes(p)) for i, p in enumerate(batch.packets) if i % 9 != 4]  # lose some, FEC rebuilds
    got = [au for au in out if au is not None]
    assert len(got) == 1 and got[0].data == data and got[0].frame_id == 9
    assert rx.reasm.shards_recovered > 0


@needs_sealer
def test_sealer_rejects_bad_input():
    from punktfunk_native._seal import Sealer

    with pytest.raises(ValueError, match="16 or 32"):
        Sealer(b"short", 1)
    s = Sealer(KEY, 1)
    with pytest.raises(ValueError, match="shard 1 has 3 bytes"):
        s.seal_frame([b"ab" * 2, b"abc"], 0, 1, 1, 0, 0, 0, 7, 2, 0, 4)
    with pytest.raises(TypeError):
        s.seal_frame([b"abcd", 5], 0, 1, 1, 0, 0, 0, 8, 2, 0, 4)
    with pytest.raises(ValueError, match="out of range"):
        s.seal_frame([b"abcd"], 0, 1, 1, 0, 0, 0, 4, 1, 0, 70_000)
    assert len(s.seal_frame([b"abcd"], 0, 1, 1, 0, 0, 0, 4, 1, 0, 4)) == 4 + 48


@needs_sealer
def test_split_pads_only_the_last_shard_and_refuses_impossible_layouts():
    from punktfunk_native._seal import split

    assert split(b"abcdefg", 3, 3) == [b"abc", b"def", b"g\0\0"] == split_shards(b"abcdefg", 3, 3)
    assert split(memoryview(b"abcdef"), 2, 3) == [b"abc", b"def"] == split_shards(memoryview(b"abcdef"), 2, 3)
    for k, slen in ((2, 2), (4, 3), (0, 3), (3, 0)):  # too few, one too many, nonsense
        with pytest.raises(ValueError, match="do not make"):
            split(b"abcdefg", k, slen)


@pytest.mark.parametrize("batch_seal", [True, False])
@pytest.mark.parametrize("gso", [True, False])
def test_sender_puts_every_datagram_on_the_wire(batch_seal, gso):
    if batch_seal and not batch_sealer_available():
        pytest.skip("punktfunk_native._seal was not built")
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    rx_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx_sock.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = NativeSender(tx, rx_sock.getsockname(), 60, gso=gso, pace_percent=0)
    pk = NativePacketizer(KEY, FecParams(20, 2, 1200, 64, 64), batch_seal=batch_seal)
    rx = NativeReceiver(KEY)
    data = os.urandom(150_000)  # > 64 datagrams: several GSO sends, the last one short
    batch = pk.packetize(AccessUnit(data, True, 1, 0))
    sender.send(batch)
    assert sender.send_dropped == 0 and sender.packets_sent == len(batch.packets) > 64
    got = []
    for _ in range(len(batch.packets)):
        dgram = rx_sock.recv(2048)
        assert len(dgram) == batch.meta["psize"]
        au = rx.push(dgram)
        if au is not None:
            got.append(au)
    assert [au.data for au in got] == [data]
    assert rx.rejected == {r: 0 for r in rx.rejected}
    sender.close()
    rx_sock.close()
