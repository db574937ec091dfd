"""The pipeline runner's two thread models, with real stages and real loopback sockets.

A sender that may wait (pacing, blocking writes) gets its own thread behind a
bounded queue; one that never waits (``Sender.waits`` false) is called on the
encode thread. Both must deliver every frame in order, time the same steps
when measuring, and end the session cleanly when a stage fails. A session's
audio runs beside its video on the audio runner and ends with it.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from punktfunk_core.gate import MeasurementGate
from punktfunk_core.media.audio import OpusEncoder, ToneSource
from punktfunk_core.media.chunk import ChunkAssembler, ChunkPacketizer, UdpSender
from punktfunk_core.media.swenc import X264Encoder
from punktfunk_core.media.testpattern import TestPattern
from punktfunk_core.pipeline import AudioPipeline, Pipeline
from punktfunk_core.session import Session
from punktfunk_core.stages import PacketBatch, StreamSpec

from punktfunk_native.layout import NATIVE_LAYOUT

SPEC = StreamSpec(320, 180, 60, "h264", 1000)


class ThreadNotingSender(UdpSender):
    """The built-in UDP sender, noting which thread calls it; ``waits`` and an
    optional delay per batch (a slow network) are set per test."""

    def __init__(self, port: int, waits: bool, delay_s: float = 0.0, fail_at: int = 0) -> None:
        super().__init__(SPEC, {"host": "127.0.0.1", "port": port})
        self.waits = waits
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.threads: set[str] = set()
        self.batches = 0
        self.closed = 0

    def send(self, batch: PacketBatch) -> None:
        self.threads.add(threading.current_thread().name)
        self.batches += 1
        if self.fail_at and self.batches == self.fail_at:
            raise OSError("network unreachable (test)")
        if self.delay_s:
            time.sleep(self.delay_s)
        super().send(batch)

    def close(self) -> None:
        self.closed += 1
        super().close()


@pytest.fixture
def rx():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    yield s
    s.close()


def _pipeline(sender: ThreadNotingSender, gate: MeasurementGate, frames: int, **kw):
    windows, ended = [], []
    p = Pipeline(Session("test", "-", SPEC), TestPattern(SPEC, {}), X264Encoder(SPEC, {"preset": "ultrafast"}),
                 ChunkPacketizer(SPEC, {"payload_size": 1000}), sender, NATIVE_LAYOUT, gate,
                 emit_window=lambda s, w: windows.append(w), on_end=lambda s, e: ended.append(e),
                 max_frames=frames, **kw)
    return p, windows, ended


def _received_units(rx: socket.socket) -> list[tuple[int, bool, bytes]]:
    """(frame id, keyframe, data) of every chunked unit that arrives until the socket is quiet."""
    asm, units = ChunkAssembler(), []
    rx.settimeout(0.5)
    try:
        while True:
            got = asm.feed(rx.recv(65536))
            if got:
                units.append(got)
    except TimeoutError:
        pass
    return units


def _received_frames(rx: socket.socket) -> list[int]:
    return [fid for fid, _key, _data in _received_units(rx)]


@pytest.mark.parametrize("waits", [False, True], ids=["inline", "send-thread"])
def test_every_frame_arrives_in_order_on_the_thread_the_sender_asks_for(rx, waits):
    sender = ThreadNotingSender(rx.getsockname()[1], waits)
    gate = MeasurementGate(perf=False)
    p, _, ended = _pipeline(sender, gate, 40, paced=False, queue_depth=64)
    assert p.inline_send is (not waits)
    p.run()
    assert ended == [None] and p.session.state == "ended"
    assert p.frames_sent == 40 and p.frames_dropped == 0
    assert _received_frames(rx) == list(range(1, 41))
    (name,) = sender.threads
    assert name.endswith("-send" if waits else "-encode")
    assert sender.closed == 1


@pytest.mark.parametrize("waits", [False, True], ids=["inline", "send-thread"])
def test_measuring_times_every_step_either_way(rx, waits):
    sender = ThreadNotingSender(rx.getsockname()[1], waits)
    gate = MeasurementGate(perf=False)
    gate.arm("test")
    p, windows, _ = _pipeline(sender, gate, 150, paced=True)  # 60 fps: 2.5 s, one whole 2 s window
    p.run()
    assert windows
    w = windows[0]
    names = [s.name for s in w.stages]
    assert names == ["capture", "encode", "queue", "send"], names
    by = {s.name: s for s in w.stages}
    assert by["encode"].p50_us > 0 and by["send"].p50_us > 0
    # the finer split: x264 encodes in submit; receive only collects its output
    split = {s.name: s for s in w.detail}
    assert list(split) == ["encode.submit", "encode.receive", "send.packetize", "send.transmit"]
    assert split["encode.submit"].p50_us > split["encode.receive"].p50_us
    assert 50 <= w.fps <= 65
    assert not [k for k in w.to_dict() if k.startswith("audio_")], "no audio: no audio fields"
    # the session's last window is emitted too: every frame sent is in exactly one window
    assert len(windows) == 2 and windows[1].window_ms < 1000
    assert sum(round(x.fps * x.window_s) for x in windows) == p.frames_sent == 150
    if not waits:
        # no hand-off: the "queue" step is the few statements between receive and packetize
        # (the median, so one preemption on a busy CI machine does not decide it)
        assert by["queue"].p50_us < 500


def test_the_windows_add_up_to_the_session_counters(rx):
    # nobody listens: the kernel refuses datagrams from the first unit (a keyframe of many) to the last
    port = rx.getsockname()[1]
    rx.close()
    sender = UdpSender(SPEC, {"host": "127.0.0.1", "port": port})
    gate = MeasurementGate(perf=False)
    gate.arm("test")
    p, windows, _ = _pipeline(sender, gate, 100, paced=True)
    p.run()
    assert sender.send_dropped > 0
    assert sum(w.send_dropped for w in windows) == sender.send_dropped
    assert sum(w.frames_dropped for w in windows) == p.frames_dropped
    assert sum(round(w.fps * w.window_s) for w in windows) == p.frames_sent == 100


def test_a_slow_waiting_sender_makes_the_encode_thread_drop_and_ask_for_a_keyframe(rx):
    sender = ThreadNotingSender(rx.getsockname()[1], waits=True, delay_s=0.05)
    p, _, ended = _pipeline(sender, MeasurementGate(perf=False), 60, paced=False, queue_depth=1)
    p.run()
    assert ended == [None]
    assert p.frames_dropped > 0
    assert p.frames_sent + p.frames_dropped == 60


@pytest.mark.parametrize("waits", [False, True], ids=["inline", "send-thread"])
def test_a_failing_sender_ends_the_session_once_and_closes_every_stage(rx, waits, caplog):
    sender = ThreadNotingSender(rx.getsockname()[1], waits, fail_at=5)
    p, _, ended = _pipeline(sender, MeasurementGate(perf=False), 0, paced=True)  # endless until the failure
    p.start()
    assert p.join(timeout=10), "the pipeline did not stop after its sender failed"
    assert len(ended) == 1 and isinstance(ended[0], OSError)
    assert p.session.state == "ended" and sender.closed == 1
    assert "packetize/send stage failed" in caplog.text


# -- audio ---------------------------------------------------------------------------------------
class Closing:
    """Counts close() calls of the stage class it is mixed into."""

    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()  # type: ignore[misc]


class ClosingTone(Closing, ToneSource):
    def __init__(self, fail_after: int = 0) -> None:
        super().__init__(None, {})
        self.fail_after = fail_after
        self.reads = 0

    def read(self, samples: int):
        self.reads += 1
        if self.fail_after and self.reads > self.fail_after:
            raise RuntimeError("the sound card went away (test)")
        return super().read(samples)


class ClosingOpus(Closing, OpusEncoder):
    pass


class ClosingUdp(Closing, UdpSender):
    pass


def _audio(session: Session, gate: MeasurementGate, port: int, fail_after: int = 0):
    ended: list = []
    stages = (ClosingTone(fail_after), ClosingOpus(None, {}), ChunkPacketizer(SPEC, {"payload_size": 1200}),
              ClosingUdp(SPEC, {"host": "127.0.0.1", "port": port}))
    audio = AudioPipeline(session, *stages, gate, on_end=lambda s, e: ended.append(e))
    assert session.attach_audio(audio)
    return audio, stages, ended


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_audio_runs_beside_the_video_is_measured_and_ends_with_the_session(rx):
    import av

    audio_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    audio_rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    audio_rx.bind(("127.0.0.1", 0))
    gate = MeasurementGate(perf=False)
    gate.arm("test")
    p, windows, ended = _pipeline(ThreadNotingSender(rx.getsockname()[1], waits=False), gate, 0, paced=True)
    p.start()
    _wait(lambda: p.frames_sent >= 1)  # the first window is open: every audio frame falls in one
    audio, stages, audio_ended = _audio(p.session, gate, audio_rx.getsockname()[1])
    audio.start()
    _wait(lambda: audio.frames_sent >= 300)  # 1.5 s of 5 ms Opus frames
    p.session.stop("test over")
    assert p.join(10) and audio.join(0)
    assert ended == [None] and audio_ended == [None] and audio.state == "ended"
    assert [st.closed for st in stages if isinstance(st, Closing)] == [1, 1, 1]
    # every Opus packet arrived (one chunk datagram each) and decodes to 240 samples
    packets = [data for _fid, _key, data in _received_units(audio_rx)]
    audio_rx.close()
    assert len(packets) == audio.units_sent == audio.frames_sent
    decoder = av.CodecContext.create("opus", "r")
    decoded = sum(f.samples for pkt in packets[:50] for f in decoder.decode(av.Packet(pkt)))
    assert decoded == 50 * 240
    # measured in the video's windows: each audio frame in exactly one, nothing refused
    assert all(w.audio_fps is not None and w.audio_kbps is not None for w in windows)
    assert sum(round(w.audio_fps * w.window_s) for w in windows) == audio.frames_sent
    assert sum(w.audio_send_dropped for w in windows) == 0
    full = windows[0]
    assert 150 <= full.audio_fps <= 250 and full.audio_p50_us > 0 and full.audio_kbps > 50
    info = p.session.info()["audio"]
    assert info["state"] == "ended" and info["frames_sent"] == audio.frames_sent and info["send_dropped"] == 0


def test_a_failing_audio_stage_ends_the_audio_not_the_video(rx, caplog):
    gate = MeasurementGate(perf=False)
    p, _, ended = _pipeline(ThreadNotingSender(rx.getsockname()[1], waits=False), gate, 0, paced=True)
    p.start()
    audio, stages, audio_ended = _audio(p.session, gate, rx.getsockname()[1], fail_after=20)
    audio.start()
    assert audio.join(10)
    assert len(audio_ended) == 1 and isinstance(audio_ended[0], RuntimeError) and audio.state == "failed"
    assert [st.closed for st in stages if isinstance(st, Closing)] == [1, 1, 1]
    assert "audio stopped, the video goes on" in caplog.text
    sent = p.frames_sent
    _wait(lambda: p.frames_sent > sent + 10)  # the video streams on
    assert p.running and ended == []
    p.session.stop("test over")
    assert p.join(10) and ended == [None]
    assert [st.closed for st in stages if isinstance(st, Closing)] == [1, 1, 1]  # not closed again


def test_audio_cannot_join_a_session_that_has_ended(rx):
    from punktfunk_core import config as configmod
    from punktfunk_core.host import Host
    from punktfunk_core.plugins import PluginManager

    p, _, _ = _pipeline(ThreadNotingSender(rx.getsockname()[1], waits=False), MeasurementGate(perf=False), 5,
                        paced=False)
    p.run()
    assert p.session.ended
    stages = (ClosingTone(), ClosingOpus(None, {}), ChunkPacketizer(SPEC, {}),
              ClosingUdp(SPEC, {"host": "127.0.0.1", "port": rx.getsockname()[1]}))
    host = Host(configmod.load(None), PluginManager())
    with pytest.raises(RuntimeError, match="ending or has audio already"):
        host.start_audio(p.session, *stages)
    assert [st.closed for st in stages if isinstance(st, Closing)] == [1, 1, 1]
    assert p.session.audio is None
