"""The stats data model shared by the runner, the stats plugin and the console.

JSON field names are part of the contract (``docs/stats.md``, "What is
recorded"). Optional counters a path cannot measure are ``None`` here and
*absent* from the JSON, never 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: optional StatsSample fields, in the order they are written
OPTIONAL_FIELDS = (
    "window_ms",
    "frames_dropped",
    "packets_dropped",
    "send_dropped",
    "fec_recovered",
    "frames_unrecoverable",
    "delivered_fps",
    "host_p50_us",
    "host_p99_us",
    "rtt_us",
    "fec_us",
    "seal_us",
    "sock_us",
    "audio_fps",
    "audio_kbps",
    "audio_p50_us",
    "audio_p99_us",
    "audio_send_dropped",
    "input_events",
    "input_dropped",
    "input_p50_us",
    "input_p99_us",
    "fec_parity_pct",
    "bitrate_target_kbps",
    "loss_estimate_pct",
)
#: optional fields that are integer counts of events in the window
COUNT_FIELDS = frozenset({"frames_dropped", "packets_dropped", "send_dropped", "fec_recovered", "frames_unrecoverable",
                          "audio_send_dropped", "input_events", "input_dropped"})
#: optional fields that are integers but not counts (summed over a capture they mean nothing)
INT_FIELDS = COUNT_FIELDS | {"window_ms", "bitrate_target_kbps"}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile of already sorted values: index = min(floor(n·q), n−1).

    Returns 0.0 for an empty sequence.
    """
    n = len(sorted_values)
    if n == 0:
        return 0.0
    return float(sorted_values[min(int(n * q), n - 1)])


@dataclass(slots=True)
class StageTiming:
    name: str
    p50_us: float
    p99_us: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "p50_us": self.p50_us, "p99_us": self.p99_us}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageTiming:
        return cls(str(d["name"]), float(d["p50_us"]), float(d["p99_us"]))

    @classmethod
    def from_values_ns(cls, name: str, values_ns: Iterable[int]) -> StageTiming:
        s = sorted(values_ns)
        return cls(name, round(percentile(s, 0.50) / 1000.0, 1), round(percentile(s, 0.99) / 1000.0, 1))


@dataclass(slots=True)
class StatsSample:
    """One aggregation window."""

    stages: list[StageTiming]
    fps: float
    repeat_fps: float
    mbps: float
    bitrate_kbps: int
    t_ms: int = 0
    session_id: int = 0
    #: length of the window in ms (the last window of a session is usually shorter)
    window_ms: int | None = None
    frames_dropped: int | None = None
    packets_dropped: int | None = None
    send_dropped: int | None = None
    fec_recovered: int | None = None
    #: access units the client lost for good (could not rebuild, even with FEC)
    frames_unrecoverable: int | None = None
    #: frames per second the client decoded (its own count over its own report span)
    delivered_fps: float | None = None
    host_p50_us: float | None = None
    host_p99_us: float | None = None
    rtt_us: float | None = None
    fec_us: float | None = None
    seal_us: float | None = None
    sock_us: float | None = None
    #: the session's audio, when it has an audio pipeline: frames and wire kbit/s sent, each
    #: frame's time from read to sent (p50/p99), datagrams the socket refused
    audio_fps: float | None = None
    audio_kbps: float | None = None
    audio_p50_us: float | None = None
    audio_p99_us: float | None = None
    audio_send_dropped: int | None = None
    #: the client's input, in windows where some arrived (absent otherwise, never 0): events
    #: received, events the sink dropped (switched off, throttled, queue full, no backend),
    #: receive → injected p50/p99 over the events injected in the window
    input_events: int | None = None
    input_dropped: int | None = None
    input_p50_us: float | None = None
    input_p99_us: float | None = None
    #: adaptive control (docs/adaptive.md), absent when fixed: the parity share the window's FEC
    #: blocks got (percent of their data shards), the encoder's target at the window's end, and
    #: the smoothed loss estimate (percent) that drove them
    fec_parity_pct: float | None = None
    bitrate_target_kbps: int | None = None
    loss_estimate_pct: float | None = None
    #: the finer split: parts of a stage (``encode.submit``) and measurements inside one
    #: (``send_spread``); never stacked, they do not add up to the host total
    detail: list[StageTiming] = field(default_factory=list)
    #: not serialised: window length in seconds and the stage max (for PUNKTFUNK_PERF logs)
    window_s: float = field(default=0.0, compare=False)
    stage_max_us: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "t_ms": self.t_ms,
            "session_id": self.session_id,
            "stages": [s.to_dict() for s in self.stages],
            "fps": self.fps,
            "repeat_fps": self.repeat_fps,
            "mbps": self.mbps,
            "bitrate_kbps": self.bitrate_kbps,
        }
        for name in OPTIONAL_FIELDS:
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        if self.detail:
            d["detail"] = [s.to_dict() for s in self.detail]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatsSample:
        """Parse a sample from JSON. Raises ValueError/KeyError/TypeError on bad input."""
        if not isinstance(d, dict):
            raise TypeError("sample must be an object")
        kw: dict[str, Any] = {}
        for name in OPTIONAL_FIELDS:
            v = d.get(name)
            if v is not None:
                kw[name] = int(v) if name in INT_FIELDS else float(v)
        return cls(
            stages=[StageTiming.from_dict(s) for s in d.get("stages", [])],
            detail=[StageTiming.from_dict(s) for s in d.get("detail", [])],
            fps=float(d.get("fps", 0.0)),
            repeat_fps=float(d.get("repeat_fps", 0.0)),
            mbps=float(d.get("mbps", 0.0)),
            bitrate_kbps=int(d.get("bitrate_kbps", 0)),
            t_ms=int(d.get("t_ms", 0)),
            session_id=int(d.get("session_id", 0)),
            **kw,
        )

    def stage(self, name: str) -> StageTiming | None:
        for s in self.stages:
            if s.name == name:
                return s
        return None

    def perf_line(self, kind: str) -> str:
        """The one-line PUNKTFUNK_PERF log of this window."""
        parts = []
        for s in self.stages:
            mx = self.stage_max_us.get(s.name)
            mx_s = f"/{mx:.0f}" if mx is not None else ""
            parts.append(f"{s.name}={s.p50_us:.0f}/{s.p99_us:.0f}{mx_s}")
        extra = ""
        if self.host_p50_us is not None:
            extra += f" host={self.host_p50_us:.0f}/{self.host_p99_us:.0f}"
        if self.detail:
            extra += " [" + " ".join(f"{s.name}={s.p50_us:.0f}/{s.p99_us:.0f}" for s in self.detail) + "]"
        client = ""
        if self.delivered_fps is not None:
            client += f" delivered={self.delivered_fps:.1f}"
        if self.frames_unrecoverable is not None:
            client += f" unrecoverable={self.frames_unrecoverable}"
        return (
            f"perf[{kind}] session={self.session_id} {' '.join(parts)} (p50/p99/max µs){extra} "
            f"fps={self.fps:.1f} repeat={self.repeat_fps:.1f} mbps={self.mbps:.2f} "
            f"target={self.bitrate_kbps}kbps{client}"
        )
