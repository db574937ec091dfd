"""A measuring probe, installed through its own entry point like any plugin.

Stages that wrap a real stage and add a known delay where the runner times
them: capture ``probe`` (around ``testpattern``: the delay is in ``grab``)
and encoder ``probe`` (around ``x264``: in ``submit``, in ``receive``, or
both). The delays are set over IPC, ``probe.delays {"grab_ms", "submit_ms",
"receive_ms"}``, and apply to sessions started afterwards; a host uses them
with ``[stream] capture = "probe"`` and ``encoder = "probe"``.

The probe knows nothing of the stats plugin: what the stats make of the
delays is checked from the outside, in the capture.
"""

from __future__ import annotations

import time
from typing import Any

from punktfunk_core import hookimpl
from punktfunk_core.ipc import IpcError
from punktfunk_core.stages import AccessUnit, CaptureSource, Encoder, Frame, StreamSpec

#: the delays (ms) new probe stages take; set with ``probe.delays``
DELAYS_MS = {"grab_ms": 0.0, "submit_ms": 0.0, "receive_ms": 0.0}
#: what the holds really took (ns), per delay name; bounded
HELD_NS: dict[str, list[int]] = {name: [] for name in DELAYS_MS}
HELD_MAX = 100_000
_registry: Any = None


def hold(ms: float, name: str) -> None:
    """Sleep ``ms`` and note how long that really took (a sleep wakes a little
    late). A sleep, not a spin: spinning would hold the GIL, and the next call
    that releases it would then wait for the host's other threads."""
    if ms <= 0:
        return
    start = time.perf_counter_ns()
    time.sleep(ms / 1000)
    held = HELD_NS[name]
    if len(held) < HELD_MAX:
        held.append(time.perf_counter_ns() - start)


class ProbeCapture(CaptureSource):
    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.inner = _registry.create("capture", options.pop("inner", "testpattern"), spec, options)
        self.grab_ms = DELAYS_MS["grab_ms"]

    def grab(self, frame_id: int) -> Frame:
        hold(self.grab_ms, "grab_ms")
        return self.inner.grab(frame_id)

    def close(self) -> None:
        self.inner.close()


class ProbeEncoder(Encoder):
    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.inner = _registry.create("encoder", options.pop("inner", "x264"), spec, options)
        self.input_format = self.inner.input_format
        self.backend = f"probe+{self.inner.backend or self.inner.name}"
        self.gpu = self.inner.gpu
        self.submit_ms, self.receive_ms = DELAYS_MS["submit_ms"], DELAYS_MS["receive_ms"]

    def submit(self, frame: Frame) -> None:
        hold(self.submit_ms, "submit_ms")
        self.inner.submit(frame)

    def receive(self) -> list[AccessUnit]:
        hold(self.receive_ms, "receive_ms")
        return self.inner.receive()

    def request_keyframe(self) -> None:
        self.inner.request_keyframe()

    def set_bitrate(self, kbps: int) -> None:
        self.inner.set_bitrate(kbps)

    @property
    def bitrate_kbps(self) -> int:
        return self.inner.bitrate_kbps

    def close(self) -> None:
        self.inner.close()


@hookimpl
def register_stages(registry: Any) -> None:
    global _registry
    _registry = registry
    registry.add("capture", "probe", ProbeCapture, description="a capture with a known delay (measuring probe)")
    registry.add("encoder", "probe", ProbeEncoder, description="an encoder with known delays (measuring probe)")


def _set_delays(args: dict[str, Any]) -> dict[str, float]:
    for key, value in args.items():
        if (key not in DELAYS_MS or isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 <= value <= 100):
            raise IpcError(400, f"probe.delays takes {', '.join(DELAYS_MS)} in ms (0..100), not {key}={value!r}")
        DELAYS_MS[key] = float(value)
    for held in HELD_NS.values():
        held.clear()
    return dict(DELAYS_MS)


def _held(_args: dict[str, Any]) -> dict[str, float]:
    """The median hold per call (ms) for each delay that was taken."""
    return {name: sorted(v)[len(v) // 2] / 1e6 for name, v in HELD_NS.items() if v}


@hookimpl
def ipc_commands(host: Any, register: Any) -> None:
    register("probe.delays", _set_delays)
    register("probe.held", _held)
