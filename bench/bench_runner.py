"""Runner overhead: the pipeline runner with no-op stages, measurement off and on.

What it costs to move one frame through capture → encode → queue →
packetize → send when every stage does nothing: CPU time of the whole
process (both runner threads) per frame, in µs. With measurement on the
runner takes six ``perf_counter_ns`` stamps per frame and closes an
aggregation window every second (percentiles over the window).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from punktfunk_core.gate import MeasurementGate
from punktfunk_core.pipeline import Pipeline
from punktfunk_core.session import Session
from punktfunk_core.stages import AccessUnit, CaptureSource, Encoder, Frame, PacketBatch, Packetizer, Sender, StreamSpec

from punktfunk_native.layout import NATIVE_LAYOUT


class NoopCapture(CaptureSource):
    def __init__(self, spec: StreamSpec) -> None:
        self.frame = Frame((np.zeros((2, 2), np.uint8),), "i420", spec.width, spec.height, 0, time.monotonic_ns())

    def grab(self, frame_id: int) -> Frame:
        return self.frame


class NoopEncoder(Encoder):
    backend = "noop"

    def __init__(self) -> None:
        self.out = [AccessUnit(b"x" * 100, False, 0, 0)]

    def submit(self, frame: Frame) -> None:
        pass

    def receive(self) -> list[AccessUnit]:
        return self.out

    def request_keyframe(self) -> None:
        pass

    def set_bitrate(self, kbps: int) -> None:
        pass

    @property
    def bitrate_kbps(self) -> int:
        return 1000


class NoopPacketizer(Packetizer):
    def __init__(self) -> None:
        self.batch = PacketBatch([b"x" * 100], 0, 0, False, wire_bytes=100)

    def packetize(self, au: AccessUnit) -> PacketBatch:
        return self.batch


class NoopSender(Sender):
    def send(self, batch: PacketBatch) -> None:
        pass


def measure(frames: int, measuring: bool) -> dict[str, float]:
    spec = StreamSpec(width=1920, height=1080, fps=60)
    gate = MeasurementGate(perf=False)
    if measuring:
        gate.arm("bench")
    windows = []
    p = Pipeline(Session("bench", "-", spec), NoopCapture(spec), NoopEncoder(), NoopPacketizer(), NoopSender(),
                 NATIVE_LAYOUT, gate, emit_window=lambda s, w: windows.append(w), paced=False,
                 max_frames=frames, queue_depth=frames + 1)
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    p.run()
    c1, w1 = time.process_time_ns(), time.perf_counter_ns()
    assert p.frames_sent == frames, (p.frames_sent, frames)
    return {"cpu_us": (c1 - c0) / frames / 1e3, "wall_us": (w1 - w0) / frames / 1e3, "windows": len(windows)}


def run(quick: bool) -> dict[str, Any]:
    frames = 20_000 if quick else 200_000
    reps = 3 if quick else 5
    measure(2000, False)  # warm up imports and the allocator
    off = [measure(frames, False) for _ in range(reps)]
    on = [measure(frames, True) for _ in range(reps)]
    off_cpu = statistics.median(r["cpu_us"] for r in off)
    on_cpu = statistics.median(r["cpu_us"] for r in on)
    budget_us = 1e6 / 60
    return {
        "title": "Runner overhead per frame (no-op stages)",
        "what": __doc__.split("\n\n", 1)[1].strip(),
        "tables": [{
            "title": f"median of {reps} runs × {frames:,} frames, unpaced",
            "headers": ["measurement", "CPU µs/frame", "wall µs/frame", "target CPU µs", "share of a 60 fps frame"],
            "rows": [
                ["off", off_cpu, statistics.median(r["wall_us"] for r in off), "< 15", f"{off_cpu / budget_us:.3%}"],
                ["on", on_cpu, statistics.median(r["wall_us"] for r in on), "< 30", f"{on_cpu / budget_us:.3%}"],
            ],
        }],
        "ratios": [
            {"name": "CPU per frame, off (µs)", "value": off_cpu, "target": "< 15", "ok": off_cpu < 15},
            {"name": "CPU per frame, on (µs)", "value": on_cpu, "target": "< 30", "ok": on_cpu < 30},
            {"name": "on / off", "value": on_cpu / off_cpu, "target": None, "ok": None},
        ],
        "plot": {"kind": "bar", "title": "Runner CPU per frame (no-op stages)", "ylabel": "µs / frame",
                 "labels": ["measurement off", "measurement on"], "series": {"punktfunk runner": [off_cpu, on_cpu]}},
        "raw": {"off": off, "on": on},
    }
