"""punktfunk/1 input datagrams and the session's injector process (docs/protocol-native.md,
"Input datagrams"; docs/input.md, "The injector process").

End to end: the reference client → a real host (``x11`` capture of a private Xvfb,
``xtest``) whose session's injector process reads the datagrams and injects → the X
server, where a real X client window records what arrives. The channel alone: the
client's and the host's ends over real loopback sockets, with a relay between them
that loses, replays and forges datagrams.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import test_native_input
from test_native_input import _streaming_client, input_host, native_counters, pointer
from x11_helpers import keysym_char

from punktfunk_core.inputevents import Key, PointerPosition

from punktfunk_native.inputchannel import ClientInputChannel, HostInputChannel

pytest.importorskip("Xlib", reason="python-xlib is not installed")
pytest.importorskip("mss", reason="mss is not installed (x11 capture)")

#: the private Xvfb and the X client window that records what arrives (tests/test_native_input.py's)
xserver = test_native_input.xserver
window = test_native_input.window


def _session_input(h) -> dict:
    for s in h.call("sessions.list"):
        got = s.get("details", {}).get("input")
        if got:
            return got
    return {}


def _injector_pid(h, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _session_input(h).get("process")
        if pid:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("the session shows no injector process")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_input_travels_as_datagrams_to_an_injector_process_that_ends_with_the_session(
        host_factory, tmp_path, xserver, window):
    h = input_host(host_factory, tmp_path, xserver.name)
    client, runner, result = _streaming_client(h, tmp_path, seconds=4)
    pid = _injector_pid(h)
    assert pid != h.proc.pid and _alive(pid)  # a process of its own, not a thread of the host
    client.send_input(PointerPosition(80, 45, 319, 179))
    for vk in (0x48, 0x49):  # h, i
        client.send_input(Key(vk, True))
        client.send_input(Key(vk, False))
    events = window.wait_for(lambda evs: sum(e.kind == "key_release" for e in evs) >= 2)
    assert [keysym_char(e.keysym) for e in events if e.kind == "key_press"] == ["h", "i"]
    assert pointer(window) == (160, 90)  # scaled from the 320x180 stream to the 640x360 screen
    runner.join(30)
    assert not runner.is_alive() and result["frames_decoded"] > 0, result
    assert client.input_channel is not None and client.input_channel.datagrams_sent >= 1
    assert not client.input_channel.unacked  # the host acknowledged every batch
    c = native_counters(h)
    assert c["input_datagrams"] >= 1 and c["input_messages"] >= 1, c
    assert c["input_forged"] == 0 and c["input_malformed"] == 0 and c["input_lost"] == 0, c
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the injector process outlived its session"


def test_a_killed_injector_process_costs_the_session_its_input_not_its_stream(host_factory, tmp_path, xserver,
                                                                              window):
    h = input_host(host_factory, tmp_path, xserver.name)
    client, runner, result = _streaming_client(h, tmp_path, seconds=4)
    os.kill(_injector_pid(h), signal.SIGKILL)
    time.sleep(0.5)
    decoded = client.stats.frames_decoded
    client.send_input(Key(0x41, True), Key(0x41, False))  # nobody injects it now
    runner.join(30)
    assert not runner.is_alive()
    assert result["frames_decoded"] > decoded + 30, result  # the stream went on (30 fps for ~3 s)
    assert window.snapshot("key_press") == []
    assert h.log().count("the input process ended") == 1, h.log()[-3000:]


def test_the_x_server_going_away_is_logged_once_by_the_injector_and_the_stream_goes_on(host_factory, tmp_path,
                                                                                      xserver, window):
    from test_native_e2e import start_host
    from test_native_input import INPUT_TOML

    # the test pattern: the capture does not need the X server that goes away
    h = start_host(host_factory, tmp_path, extra=INPUT_TOML.format(display=xserver.name))
    client, runner, result = _streaming_client(h, tmp_path, seconds=4)
    client.send_input(Key(0x41, True), Key(0x41, False))
    window.wait_for(lambda evs: any(e.kind == "key_release" for e in evs))
    window.close()
    xserver.kill()
    time.sleep(0.3)
    decoded = client.stats.frames_decoded
    for _ in range(20):  # input keeps coming after the loss
        client.send_input(Key(0x42, True), Key(0x42, False))
        time.sleep(0.05)
    runner.join(30)
    assert not runner.is_alive()
    assert result["frames_decoded"] > decoded + 30, result  # the stream went on
    log = h.log()
    assert log.count("is gone") == 1, log[-3000:]  # said once, by the injector process
    assert "the input process ended" not in log  # which lived on without its backend


def test_a_reload_switching_the_keyboard_off_reaches_the_running_injector_process(host_factory, tmp_path, xserver,
                                                                                  window):
    h = input_host(host_factory, tmp_path, xserver.name)
    client, runner, result = _streaming_client(h, tmp_path, seconds=5)
    client.send_input(Key(0x41, True), Key(0x41, False))
    window.wait_for(lambda evs: any(e.kind == "key_release" for e in evs))
    h.config_path.write_text(h.config_path.read_text().replace('backend = "xtest"',
                                                               'backend = "xtest"\nkeyboard = false'))
    h.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reloaded from" not in h.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the switch travels to the injector process over its socket
    client.send_input(Key(0x42, True), Key(0x42, False))  # switched off now
    client.send_input(PointerPosition(80, 45, 319, 179))  # the mouse still goes
    deadline = time.monotonic() + 10
    while pointer(window) != (160, 90) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pointer(window) == (160, 90)
    runner.join(30)
    assert [keysym_char(e.keysym) for e in window.snapshot("key_press")] == ["a"]
    assert native_counters(h)["input_datagrams"] >= 2


# ---- the channel alone, over real sockets ------------------------------------------------------


class Relay:
    """A UDP relay between the client's and the host's end: forwards what ``fate`` allows.

    ``fate(i, datagram)`` for the client's i-th datagram returns the datagrams to pass on
    (``[]`` loses it; the same one twice, or a changed copy, replays or forges)."""

    def __init__(self, host: tuple, fate: Callable[[int, bytes], list[bytes]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.host, self.fate, self.client = host, fate, None
        self.sent: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, src = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if src == self.host:
                if self.client is not None:
                    self.sock.sendto(data, self.client)
                continue
            self.client = src
            self.sent.append(data)
            for out in self.fate(len(self.sent), data):
                self.sock.sendto(out, self.host)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()


def _pair(fate: Callable[[int, bytes], list[bytes]]):
    k_c2h, k_h2c = os.urandom(16), os.urandom(16)
    host_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host_sock.bind(("127.0.0.1", 0))
    host_sock.setblocking(False)
    host = HostInputChannel(host_sock, k_c2h.hex(), k_h2c.hex())
    relay = Relay(host_sock.getsockname(), fate)
    client = ClientInputChannel(relay.address, k_c2h, k_h2c)
    return host, client, relay


def _run_until(host: HostInputChannel, client: ClientInputChannel, want: int, seconds: float = 5.0) -> list:
    """Both ends' loops (the injector's select, the client's acks and retransmissions) until
    ``want`` events arrived and all is acknowledged."""
    got: list = []
    watch: list[Any] = [host, client]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (len(got) < want or client.unacked):
        readable, _, _ = select.select(watch, [], [], 0.005)
        if host in readable:
            for events, _received in host.receive():
                got.extend(events)
        if client in readable:
            client.read_acks()
        if client.retransmit_in(time.monotonic()) == 0:
            client.retransmit()
    return got


def test_lost_input_datagrams_are_repeated_until_acknowledged_and_arrive_once_in_order():
    # every other datagram is lost, and the last one: only a retransmission brings its batch
    host, client, relay = _pair(lambda i, d: [] if i % 2 or i == 40 else [d])
    try:
        keys = [Key(0x41 + i % 26, down) for i in range(40) for down in (True, False)]
        for i in range(0, len(keys), 2):
            client.send_events(keys[i:i + 2])  # one batch, one datagram per call
            time.sleep(0.002)
        got = _run_until(host, client, len(keys))
        assert got == keys  # none lost, none twice, in order
        assert not client.unacked
        counts = host.take_counts()
        assert counts.get("input_lost", 0) == 0 and counts["input_messages"] == len(keys) // 2, counts
        assert client.retransmissions >= 1 and client.datagrams_sent > len(keys) // 2  # the last one went again
    finally:
        relay.close()
        client.close()
        host.sock.close()


def test_replayed_forged_and_cut_input_datagrams_are_counted_and_change_nothing():
    def fate(i: int, d: bytes) -> list[bytes]:
        if i == 1:  # the first one, a forged copy (another sequence number in its sealed header) and a cut one
            return [d, d[:4] + (1000).to_bytes(8, "big") + d[12:], d[:40]]
        if i == 2:
            return [d, relay.sent[0]]  # and then the first one again: a replay
        return [d]

    host, client, relay = _pair(fate)
    try:
        client.send_events([Key(0x41, True), Key(0x41, False)])
        time.sleep(0.05)
        client.send_events([Key(0x42, True), Key(0x42, False)])
        got = _run_until(host, client, 4)
        assert got == [Key(0x41, True), Key(0x41, False), Key(0x42, True), Key(0x42, False)]
        counts = host.take_counts()
        assert counts["input_forged"] == 1 and counts["input_malformed"] == 1, counts
        assert counts["input_replayed"] == 1 and counts["input_messages"] == 2, counts
    finally:
        relay.close()
        client.close()
        host.sock.close()


def test_an_ack_not_sealed_by_the_host_acknowledges_nothing():
    host, client, relay = _pair(lambda i, d: [])  # the host hears nothing
    try:
        client.send_events([Key(0x41, True)])
        # a forged ack: the right shape, under a key that is not the session's
        liar = ClientInputChannel(("127.0.0.1", 9), os.urandom(16), os.urandom(16))
        from punktfunk_native.inputchannel import _seal
        from punktfunk_native.wire import DIR_INPUT_ACK_HOST_TO_CLIENT, PKT_INPUT_ACK
        forged = _seal(liar._aead, DIR_INPUT_ACK_HOST_TO_CLIENT, PKT_INPUT_ACK, 1, 1, b"")
        liar.close()
        relay.sock.sendto(forged, client.sock.getsockname())  # from the relay's address, as the host's acks come
        deadline = time.monotonic() + 2
        while client.acks_rejected == 0 and time.monotonic() < deadline:
            select.select([client], [], [], 0.05)
            client.read_acks()
        assert client.acks_rejected == 1 and len(client.unacked) == 1
    finally:
        relay.close()
        client.close()
        host.sock.close()


def test_a_long_run_of_events_is_split_into_batches_the_host_takes_whole():
    from punktfunk_core.inputevents import ControllerRemoval, Text

    host, client, relay = _pair(lambda i, d: [d])
    try:
        # 600 two-byte records (more than the 256 a batch may hold), then texts of 771-byte records (two
        # of them do not fit in a datagram): batches of 256, 256, 88 and a text, then one text each
        events = [ControllerRemoval(i % 16) for i in range(600)] + [Text("€" * 256) for _ in range(4)]
        client.send_events(events)
        got = _run_until(host, client, len(events))
        assert got == events
        counts = host.take_counts()
        assert counts.get("input_oversized", 0) == 0 and counts.get("input_malformed", 0) == 0, counts
        assert counts["input_messages"] == 6, counts
    finally:
        relay.close()
        client.close()
        host.sock.close()
