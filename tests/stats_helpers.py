"""Helpers of the stats tests.

Also a small *third-party-style* plugin (loaded into a real host with
``PUNKTFUNK_PLUGINS=stats_helpers`` and ``PYTHONPATH=tests``) that provides
two protocol-like session kinds with different window lengths and stage sets,
run by the core's real pipeline runner:

``statsproto_a``  0.2 s windows, stages capture/submit/encode/send (native-like),
                  no send counter
``statsproto_b``  0.1 s windows, stages capture/encode/packetize/send and the
                  ``send_spread`` detail entry (GameStream-like), a send_dropped
                  counter, FEC mean time

IPC commands: ``statstest.session {proto, seconds, fps, width, height, paced}``
starts one; ``statstest.burst {session_id, n}`` emits n windows for a running
session straight through the ``stats_window`` hook (to fill big captures fast).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from punktfunk_core import hookimpl
from punktfunk_core.ipc import IpcError
from punktfunk_core.stages import AccessUnit, CaptureSource, Encoder, Frame, PacketBatch, Packetizer, Sender, StreamSpec
from punktfunk_core.stats import StageTiming, StatsSample
from punktfunk_core.window import (
    STEP_CAPTURE,
    STEP_ENCODE,
    STEP_PACKETIZE,
    STEP_QUEUE,
    STEP_SEND,
    STEP_SUBMIT,
    StageLayout,
)

TESTS_DIR = Path(__file__).resolve().parent

LAYOUT_A = StageLayout(
    kind="statsproto_a", window_s=0.2,
    stages=(("capture", (STEP_CAPTURE,)), ("submit", (STEP_SUBMIT,)), ("encode", (STEP_ENCODE, STEP_QUEUE)),
            ("send", (STEP_PACKETIZE, STEP_SEND))),
)
LAYOUT_B = StageLayout(
    kind="statsproto_b", window_s=0.1,
    stages=(("capture", (STEP_CAPTURE,)), ("encode", (STEP_SUBMIT, STEP_ENCODE)), ("packetize", (STEP_PACKETIZE,)),
            ("send", (STEP_SEND,))),
    extra_stages=("send_spread",),
)
STAGES_A = ["capture", "submit", "encode", "send"]
STAGES_B = ["capture", "encode", "packetize", "send"]
DETAIL_B = ["send_spread"]


def plugin_env(**extra: str) -> dict[str, str]:
    """Env for host_factory: load this module as a plugin.

    The protocol plugins are left out (they are not needed here, and a half
    written one in the shared checkout must not fail these tests); pass
    ``PUNKTFUNK_DISABLE_PLUGINS=""`` to keep them.
    """
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p),
           "PUNKTFUNK_PLUGINS": "stats_helpers",
           "PUNKTFUNK_DISABLE_PLUGINS": "native,gamestream"}
    env.update(extra)
    return env


class GreyCapture(CaptureSource):
    def __init__(self, spec: StreamSpec, options: dict) -> None:
        w, h = spec.width, spec.height
        self._planes = (np.full((h, w), 128, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
                        np.full((h // 2, w // 2), 128, np.uint8))
        self.spec = spec

    def grab(self, frame_id: int) -> Frame:
        return Frame(self._planes, "i420", self.spec.width, self.spec.height, frame_id, time.monotonic_ns())


class SizeEncoder(Encoder):
    """Emits an access unit of a size that follows the bitrate (no real codec)."""

    backend = "statstest"

    def __init__(self, spec: StreamSpec, options: dict) -> None:
        self.spec = spec
        self._kbps = spec.bitrate_kbps
        self._pending: Frame | None = None
        self._key = True

    def submit(self, frame: Frame) -> None:
        self._pending = frame

    def receive(self) -> list[AccessUnit]:
        f, self._pending = self._pending, None
        if f is None:
            return []
        size = max(64, self._kbps * 1000 // 8 // self.spec.fps)
        key, self._key = self._key, False
        return [AccessUnit(bytes(size), key, f.frame_id, f.capture_ns, self.spec.codec)]

    def request_keyframe(self) -> None:
        self._key = True

    def set_bitrate(self, kbps: int) -> None:
        self._kbps = int(kbps)

    @property
    def bitrate_kbps(self) -> int:
        return self._kbps


class ChunkPacketizer(Packetizer):
    def __init__(self, spec: StreamSpec, options: dict) -> None:
        self.extra = bool(options.get("extra", False))

    def packetize(self, au: AccessUnit) -> PacketBatch:
        t0 = time.perf_counter_ns()
        pkts = [au.data[i:i + 1200] for i in range(0, len(au.data), 1200)]
        batch = PacketBatch(pkts, au.frame_id, au.capture_ns, au.keyframe, wire_bytes=sum(len(p) + 16 for p in pkts))
        if self.extra:
            batch.extra_ns["fec"] = time.perf_counter_ns() - t0
        return batch


class LoopbackSender(Sender):
    """Real UDP datagrams to a local socket it drains itself."""

    def __init__(self, spec: StreamSpec, options: dict) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addr = self.rx.getsockname()
        self.spread = bool(options.get("spread", False))
        if options.get("count_drops", False):
            self.send_dropped = 0

    def send(self, batch: PacketBatch) -> None:
        t0 = time.perf_counter_ns()
        for p in batch.packets:
            try:
                self.tx.sendto(p, self.addr)
            except OSError:
                if self.send_dropped is not None:
                    self.send_dropped += 1
        try:
            while True:
                self.rx.recv(2048)
        except OSError:
            pass
        if self.spread:
            batch.extra_ns["send_spread"] = time.perf_counter_ns() - t0

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@hookimpl
def register_stages(registry: Any) -> None:
    registry.add("capture", "statstest", GreyCapture, description="grey frames (stats tests)")
    registry.add("encoder", "statstest", SizeEncoder, description="fake bitstream (stats tests)")
    registry.add("packetizer", "statstest", ChunkPacketizer)
    registry.add("sender", "statstest", LoopbackSender)


_host: Any = None


@hookimpl
def host_started(host: Any) -> None:
    global _host
    _host = host


def _start(host: Any, args: dict) -> dict:
    proto = args.get("proto", "a")
    if proto not in ("a", "b"):
        raise IpcError(400, "proto must be a or b")
    spec = StreamSpec(width=int(args.get("width", 64)), height=int(args.get("height", 32)),
                      fps=int(args.get("fps", 120)), codec="h264" if proto == "b" else "hevc",
                      bitrate_kbps=int(args.get("bitrate_kbps", 2000)))
    reg = host.pm.stages
    b = proto == "b"
    session = host.start_session(
        f"statsproto_{proto}", f"test-client-{proto}", spec,
        reg.create("packetizer", "statstest", spec, {"extra": b}),
        reg.create("sender", "statstest", spec, {"spread": b, "count_drops": b}),
        LAYOUT_B if b else LAYOUT_A,
        capture=reg.create("capture", "statstest", spec, {}),
        encoder=reg.create("encoder", "statstest", spec, {}),
        paced=bool(args.get("paced", True)),
    )
    seconds = float(args.get("seconds", 0) or 0)
    if seconds > 0:
        t = threading.Timer(seconds, session.stop, args=("test time is up",))
        t.daemon = True
        t.start()
    return session.info()


def _burst(host: Any, args: dict) -> dict:
    session = host.sessions.get(int(args.get("session_id", 0)))
    if session is None:
        raise IpcError(404, "no such session")
    n = int(args.get("n", 1))
    if args.get("bad"):
        for _ in range(n):
            host.pm.hook.stats_window(session=session, sample=object())
        return {"emitted": n}
    for i in range(n):
        s = StatsSample([StageTiming("capture", 100.0 + i % 7, 300.0), StageTiming("encode", 2500.0, 4000.0 + i % 11)],
                        fps=60.0, repeat_fps=0.0, mbps=20.0, bitrate_kbps=20000, frames_dropped=0)
        host.pm.hook.stats_window(session=session, sample=s)
    return {"emitted": n}


@hookimpl
def ipc_commands(host: Any, register: Any) -> None:
    register("statstest.session", lambda a: _start(host, a))
    register("statstest.burst", lambda a: _burst(host, a))


def wait_for(pred: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
