"""Adaptive FEC and bitrate for one GameStream stream: Moonlight's reports → loss windows → controllers.

Moonlight reports only the FEC blocks it had to repair or gave up on
(docs/gamestream.md, "What Moonlight reports"), so a window's loss is built
from both ends: the host counts the datagrams it sent, the client's reports
say which were missing. Only what the client looked at counts as expected:
the data packets of a block that arrived whole (its parity is never
reported on, lost or not), the packets of a repaired block up to the one
that completed the repair, every packet of a block it gave up on. The window closes on the control thread
(every client message, at least the 100 ms ping, checks it); the controllers
of :mod:`punktfunk_core.adaptive` then choose the parity share the
packetizer reads for its next frame (no lock, one attribute) and the encoder
bitrate.

An IDR request is forced at once unless the one forced for the same burst is
still on its way: not yet packetized, or packetized so recently that the
client cannot have seen it yet (the round trip plus half a frame interval).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from punktfunk_core.adaptive import AdaptiveControl, LossReport, policies

from punktfunk_gamestream.wire_control import FecStatus

if TYPE_CHECKING:
    from punktfunk_core.stages import StreamSpec

log = logging.getLogger("punktfunk.gamestream.adaptive")

#: a loss window covers this long (Moonlight pings every 100 ms, so it closes within 0.1 s of this)
WINDOW_S = 0.5
#: a forced IDR that the encoder has not produced in this long no longer covers new requests
IDR_PENDING_S = 0.25
#: until Moonlight's first report the parity is sized for this loss (the worst the 0.1 % goal covers):
#: at 10 % loss the floor's first window lost more frames than the rest of the stream, and the fixed
#: 20 % still lost one or two (small frames: 5 data shards get 2 parity)
START_LOSS = 0.10


class StreamAdaptation:
    """The loss windows of one stream and the session's controllers (``control``).

    The packetize thread calls :meth:`packetized` per frame and reads ``fec``
    (its ``percent`` and ``parity_for``); the control thread calls everything
    else. Each counter has one writer. ``control`` is also the session's
    ``adaptive``: the runner has it fill the capture fields of each window.
    """

    def __init__(self, control: AdaptiveControl, fps: int) -> None:
        self.control = control
        #: what the packetizer asks per block; None with ``fec = "fixed"`` (``fec_percent`` as before)
        self.fec = control.fec if control.fec.adaptive else None
        self.rate = control.rate if control.rate.policy.mode == "adaptive" else None
        self.frame_s = 1.0 / max(1, fps)
        # written by the packetize thread
        self.packets_sent = 0
        self.data_sent = 0
        self.keyframes_sent = 0
        self.keyframe_sent_at = 0.0  # monotonic
        # written by the control thread
        self._idr_forced_at = 0.0
        self.keyframes_forced = 0
        self.idr_coalesced = 0
        self.reports: list[LossReport] = []  # the last few, for status and tests
        self.windows = 0
        self._start = time.monotonic()
        self._data_at_start = 0
        self._lost = 0
        self._seen = 0  # packets of the reported blocks the client looked at
        self._reported_data = 0  # data packets of the reported blocks
        self._lost_frames: set[int] = set()

    # -- packetize thread ----------------------------------------------------------------
    def packetized(self, datagrams: int, data: int, keyframe: bool) -> None:
        self.packets_sent += datagrams
        self.data_sent += data
        if keyframe:
            self.keyframes_sent += 1
            self.keyframe_sent_at = time.monotonic()

    # -- control thread ---------------------------------------------------------------------
    def fec_status(self, st: FecStatus) -> None:
        """One of Moonlight's block reports into the open window."""
        total = st.total_data + st.total_parity
        received = st.received_data + st.received_parity
        self._reported_data += st.total_data
        if st.recovered:  # repaired at the packet that made enough: the rest it never looked at
            self._lost += st.missing_before_highest
            self._seen += min(total, received + st.missing_before_highest)
        else:
            self._lost += max(0, total - received)
            self._seen += total
            self._lost_frames.add(st.frame)

    def idr_request(self, now: float, rtt_us: float | None) -> bool:
        """The client asked for an IDR: True = force one now, False = the one on its way covers it.

        Covered while the forced IDR is not yet packetized (for at most ``IDR_PENDING_S``), and
        until the client can have received it: a request that left the client before the IDR
        arrived there comes at most a round trip (plus half a frame of slack) after it was sent.
        A lost IDR is reported only when the next frame arrives, later than that, and gets a new one."""
        pending = self._idr_forced_at > self.keyframe_sent_at and now - self._idr_forced_at < IDR_PENDING_S
        in_flight = now - self.keyframe_sent_at < (rtt_us or 0) / 1e6 + self.frame_s / 2
        if pending or in_flight:
            self.idr_coalesced += 1
            return False
        self._idr_forced_at = now
        self.keyframes_forced += 1
        return True

    def tick(self, now: float, rtt_us: float | None) -> LossReport | None:
        """Close the window when it is due: feed the controllers, apply a new bitrate."""
        span = now - self._start
        if span < WINDOW_S:
            return None
        data = self.data_sent
        expected = max(0, data - self._data_at_start - self._reported_data + self._seen)
        report = LossReport(window_s=span, packets_expected=expected, packets_lost=min(self._lost, expected),
                            frames_unrecoverable=len(self._lost_frames), rtt_us=rtt_us)
        self._start, self._data_at_start = now, data
        self._lost = self._seen = self._reported_data = 0
        self._lost_frames = set()
        self.reports = [*self.reports[-7:], report]
        self.windows += 1
        kbps = self.control.observe(report)  # FEC, then the bitrate (applied through control.set_bitrate)
        if kbps is not None:
            log.info("bitrate target %d kbps (%s; loss %.1f %%, rtt %s)", kbps, self.control.rate.last_reason,
                     100 * report.loss_rate, f"{rtt_us / 1000:.1f} ms" if rtt_us is not None else "unknown")
        return report

    def status(self) -> dict[str, Any]:
        fec, rate = self.fec, self.rate
        return {
            "fec_parity_pct": round(fec.percent, 2) if fec is not None else None,
            "loss_estimate_pct": round(100 * fec.loss_estimate, 3) if fec is not None else None,
            "bitrate_target_kbps": rate.target_kbps if rate is not None else None,
            "bitrate_reason": rate.last_reason if rate is not None else None,  # why it last moved
            "windows": self.windows,
            "keyframes_forced": self.keyframes_forced,
            "idr_coalesced": self.idr_coalesced,
            "keyframes_sent": self.keyframes_sent,
            "last_report": dataclasses.asdict(self.reports[-1]) if self.reports else None,
        }


def adaptation_for(cfg: Mapping[str, Any], spec: StreamSpec, min_fec_packets: int,
                   set_bitrate: Callable[[int], None]) -> StreamAdaptation | None:
    """The stream's adaptation from the ``[gamestream]`` section (its schema checked the keys);
    None when FEC and rate are both fixed. The client's ``minRequiredFecPackets`` is the least
    parity of any block, adaptive or not (``fec_layout`` keeps it)."""
    fec, rate = policies(cfg)  # a floor above the ceiling, a maximum below the minimum: reconciled
    if fec.mode == "fixed" and rate.mode == "fixed":
        return None
    fec = dataclasses.replace(fec, min_parity=min_fec_packets, start_loss=START_LOSS)
    rate = dataclasses.replace(rate, rtt_windows=2)  # ENet's RTT on a loaded host jumps for a window
    return StreamAdaptation(AdaptiveControl(fec, rate, spec.bitrate_kbps, set_bitrate), spec.fps)
