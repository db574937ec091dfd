"""Window aggregation: per-frame step timings → one StatsSample per window.

Lives on the session's send thread; nothing here is shared with another
thread except the counters it *reads* (each written by one thread only), so
there is no lock. Values are kept in plain lists of ints and sorted once per
window (≈ 60–120 frames), which costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from punktfunk_core.stats import StageTiming, StatsSample, percentile

if TYPE_CHECKING:
    from punktfunk_core.session import ClientFeedback

# The steps the runner times for every measured frame, named after the call they time:
# capture.grab, encoder.submit, encoder.receive, the wait for the send thread,
# packetizer.packetize, sender.send. A synchronous encoder (x264) does its work in
# submit, an asynchronous one (NVENC) mostly while receive waits for the bitstream:
# protocols therefore report the two together as the stage "encode".
STEP_CAPTURE, STEP_SUBMIT, STEP_RECEIVE, STEP_QUEUE, STEP_PACKETIZE, STEP_SEND = range(6)
STEP_ENCODE = STEP_RECEIVE  # the name of the receive step before it was called receive
N_STEPS = 6
STEP_NAMES = ("capture", "submit", "receive", "queue", "packetize", "send")

#: optional per-frame means a packetizer/sender may report through ``extra_ns``
MEAN_FIELDS = {"fec": "fec_us", "seal": "seal_us", "sock": "sock_us"}

#: the encoder's two calls, kept apart in every layout's detail (protocols define their
#: own layouts beside their planes; the core has only the loopback's, below)
ENCODE_SPLIT = (("encode.submit", (STEP_SUBMIT,)), ("encode.receive", (STEP_RECEIVE,)))


@dataclass(frozen=True, slots=True)
class StageLayout:
    """How a protocol reports the runner's steps as named stages.

    ``stages`` maps each reported stage name, in pipeline order, to the steps
    whose durations it sums; together they must cover every step, so that a
    frame's stages add up to its host total. ``detail`` is the finer split
    (parts of a stage, reported beside the stages and never stacked), and
    ``extra_stages`` are detail entries a packetizer or sender measures itself
    and passes in the batch's ``extra_ns`` (e.g. GameStream's ``send_spread``,
    which lies inside ``send``).
    """

    kind: str
    window_s: float
    stages: tuple[tuple[str, tuple[int, ...]], ...]
    extra_stages: tuple[str, ...] = ()
    host_latency: bool = True
    detail: tuple[tuple[str, tuple[int, ...]], ...] = ()


#: the host's diagnostic loopback sessions (``punktfunk loopback``): every step, 1 s windows
LOOPBACK_LAYOUT = StageLayout(
    kind="loopback",
    window_s=1.0,
    stages=(
        ("capture", (STEP_CAPTURE,)),
        ("encode", (STEP_SUBMIT, STEP_RECEIVE)),
        ("queue", (STEP_QUEUE,)),
        ("packetize", (STEP_PACKETIZE,)),
        ("send", (STEP_SEND,)),
    ),
    detail=ENCODE_SPLIT,
)


@dataclass(slots=True)
class _Acc:
    steps: list[list[int]] = field(default_factory=lambda: [[] for _ in range(N_STEPS)])
    host: list[int] = field(default_factory=list)
    extra_stage: dict[str, list[int]] = field(default_factory=dict)
    extra_sum: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    repeats: int = 0
    wire_bytes: int = 0


class WindowAggregator:
    """Collects measured frames of one session and builds window samples."""

    def __init__(self, layout: StageLayout) -> None:
        self.layout = layout
        self.window_ns = int(layout.window_s * 1e9)
        self._acc = _Acc()
        self._start_ns = 0  # 0 = no window open
        self._frames_dropped_base = 0
        self._send_dropped_base: int | None = None

    @property
    def open(self) -> bool:
        return self._start_ns != 0

    def begin(self, start_ns: int, frames_dropped: int, send_dropped: int | None) -> None:
        """Open a window at ``start_ns`` (capture start of its first frame)."""
        self._acc = _Acc()
        self._start_ns = start_ns
        self._frames_dropped_base = frames_dropped
        self._send_dropped_base = send_dropped

    def discard(self) -> None:
        """Measurement went off mid-window: forget the partial window."""
        self._start_ns = 0

    def add(self, steps_ns: tuple[int, ...], host_ns: int, is_repeat: bool, wire_bytes: int,
            extra_ns: dict[str, int]) -> None:
        acc = self._acc
        for i in range(N_STEPS):
            acc.steps[i].append(steps_ns[i])
        acc.host.append(host_ns)
        acc.frames += 1
        if is_repeat:
            acc.repeats += 1
        acc.wire_bytes += wire_bytes
        if extra_ns:
            for key, v in extra_ns.items():
                if key in MEAN_FIELDS:
                    acc.extra_sum[key] = acc.extra_sum.get(key, 0) + v
                else:
                    acc.extra_stage.setdefault(key, []).append(v)

    def due(self, now_ns: int) -> bool:
        return self._start_ns != 0 and now_ns - self._start_ns >= self.window_ns

    def close(
        self,
        now_ns: int,
        bitrate_kbps: int,
        frames_dropped: int,
        send_dropped: int | None,
        feedback: ClientFeedback | None,
        *,
        last: bool = False,
    ) -> StatsSample:
        """Build the sample for the window ending at ``now_ns`` and open the next
        (``last``: the session ended, open none)."""
        acc = self._acc
        layout = self.layout
        seconds = max((now_ns - self._start_ns) / 1e9, 1e-9)
        stages: list[StageTiming] = []
        detail: list[StageTiming] = []
        stage_max: dict[str, float] = {}
        if acc.frames:  # a session's last window may hold no frame, only the client's last report
            for out, named in ((stages, layout.stages), (detail, layout.detail)):
                for name, step_ids in named:
                    if len(step_ids) == 1:
                        values = acc.steps[step_ids[0]]
                    else:
                        values = [sum(v) for v in zip(*(acc.steps[i] for i in step_ids), strict=True)]
                    out.append(_timing(name, sorted(values), stage_max))
            for name in layout.extra_stages:
                values = sorted(acc.extra_stage.get(name, ()))
                if values:
                    detail.append(_timing(name, values, stage_max))
        repeats = acc.repeats
        sample = StatsSample(
            stages=stages,
            detail=detail,
            fps=round((acc.frames - repeats) / seconds, 2),
            repeat_fps=round(repeats / seconds, 2),
            mbps=round(acc.wire_bytes * 8 / seconds / 1e6, 3),
            bitrate_kbps=int(bitrate_kbps),
            window_ms=round(seconds * 1000),
            frames_dropped=frames_dropped - self._frames_dropped_base,
            window_s=seconds,
            stage_max_us=stage_max,
        )
        if send_dropped is not None:
            sample.send_dropped = send_dropped - (self._send_dropped_base or 0)
        if layout.host_latency and acc.host:
            host = sorted(acc.host)
            sample.host_p50_us = round(percentile(host, 0.5) / 1e3, 1)
            sample.host_p99_us = round(percentile(host, 0.99) / 1e3, 1)
        if acc.frames:
            for key, field_name in MEAN_FIELDS.items():
                if key in acc.extra_sum:
                    setattr(sample, field_name, round(acc.extra_sum[key] / acc.frames / 1e3, 1))
        if feedback is not None:
            feedback.drain_into(sample)
        if last:
            self._start_ns = 0
        else:
            self.begin(now_ns, frames_dropped, send_dropped)
        return sample


def _timing(name: str, sorted_ns: list[int], stage_max: dict[str, float]) -> StageTiming:
    stage_max[name] = sorted_ns[-1] / 1e3 if sorted_ns else 0.0
    return StageTiming(name, round(percentile(sorted_ns, 0.5) / 1e3, 1), round(percentile(sorted_ns, 0.99) / 1e3, 1))
