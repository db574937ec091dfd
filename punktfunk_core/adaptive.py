"""Adaptive FEC, bitrate and keyframe control, protocol-neutral (see docs/adaptive.md).

A protocol turns each client report into a :class:`LossReport` and feeds it to
a :class:`FecController` and a :class:`RateController` on its control thread
(a few times a second at most). The packetizer asks
:meth:`FecController.parity_for` once per FEC block: that is a lookup in a
table ``observe`` precomputed and published by rebinding one attribute, so the
per-frame path takes no lock. :class:`KeyframeCoalescer` turns the many
keyframe requests of one loss burst into one IDR.

Loss model: a two-state Gilbert–Elliott chain (good: no loss, bad: loss) fitted
to the loss rate ``p`` and the mean loss-run length ``b`` the client counts.
With ``b = 1/(1-p)`` the chain is exactly independent (binomial) loss, so one
computation covers both; longer runs (bursts) make large losses within one
block likelier and ask for more parity.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from punktfunk_core.stats import StatsSample

Mode = Literal["adaptive", "fixed"]
MODES: tuple[Mode, ...] = ("adaptive", "fixed")

#: blocks up to this many data shards get their own table row; larger ones use its share
TABLE_DATA_SHARDS = 256
#: a small block may get this many parity shards whatever the ceiling says: a one-shard frame
#: at 20 % loss needs 4 to meet 0.1 % (0.2⁵ = 3·10⁻⁴), twelve shards at 12.5 % need 8; small
#: blocks are small frames (native: 64-byte shards below 4 kB), so their parity costs little
SMALL_BLOCK_PARITY = 8
#: the reference block the reported share (``percent``) is computed for: the native
#: packetizer splits small access units into about this many shards
REFERENCE_DATA_SHARDS = 64
#: the loss rate the table is designed for is the estimate times this (estimation error,
#: the loss varying within a window)
HEADROOM = 1.25
#: per clean-ish window the estimate moves this share of the way down to the measured rate
#: (attack is immediate: a worse window replaces the estimate)
DECAY = 0.5
#: an estimate below this is taken as a clean link (the table is then the floor)
CLEAN_LOSS = 1e-4
#: windows with fewer datagrams say little about the loss rate: they are blended in by weight
MIN_PACKETS = 200


def fixed_parity(data_shards: int, percent: float, min_parity: int) -> int:
    """The fixed share: ceil(k·percent/100) parity shards, at least ``min_parity`` (0 when percent is 0)."""
    if percent <= 0:
        return 0
    return max(math.ceil(data_shards * percent / 100 - 1e-9), min_parity)


@dataclass(frozen=True)
class LossReport:
    """One client report window, protocol-neutral."""

    window_s: float
    #: datagrams (data + parity) the client should have seen in the window
    packets_expected: int
    #: of those, never arrived (before FEC)
    packets_lost: int
    #: runs of consecutive lost datagrams in the window, when the client counts them
    loss_runs: int | None = None
    frames_unrecoverable: int = 0
    rtt_us: float | None = None

    @property
    def loss_rate(self) -> float:
        return self.packets_lost / self.packets_expected if self.packets_expected > 0 else 0.0


@dataclass(frozen=True)
class FecPolicy:
    """From config: ``fec``, ``fec_target``, ``fec_floor_percent``, ``fec_ceiling_percent``,
    ``fec_percent`` (the fixed share) and ``fec_min_parity`` (fixed mode's per-block minimum)."""

    mode: Mode = "adaptive"
    target: float = 0.001
    floor_percent: float = 5.0
    ceiling_percent: float = 50.0
    fixed_percent: float = 20.0
    min_parity: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"fec mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 0 < self.target < 1:
            raise ValueError("fec_target must be between 0 and 1")
        if not 0 <= self.floor_percent <= self.ceiling_percent <= 400:
            raise ValueError("need 0 <= fec_floor_percent <= fec_ceiling_percent <= 400")


def _tail_table(p: float, burst: float, n_max: int) -> np.ndarray:
    """``tail[n, j]`` = P(more than ``j`` of ``n`` consecutive datagrams are lost) under the
    Gilbert–Elliott chain with loss rate ``p`` and mean loss-run length ``burst``, started in
    its stationary state. One forward pass, O(n_max²)."""
    r = min(1.0, 1.0 / burst)  # bad → good: a run ends
    g = min(1.0, p * r / (1 - p))  # good → bad, so that the stationary loss rate is p
    good = np.zeros(n_max + 1)  # P(state after n datagrams = good, j lost), over j
    bad = np.zeros(n_max + 1)
    tail = np.zeros((n_max + 1, n_max + 1))
    # the state "before" the first datagram is stationary; each step picks the next state and its loss
    pg, pb = 1 - p, p
    good[0] = pg * (1 - g) + pb * r
    bad[1] = pg * g + pb * (1 - r)
    for n in range(1, n_max + 1):
        dist = good + bad
        tail[n] = 1.0 - np.cumsum(dist)
        if n == n_max:
            break
        ng = good * (1 - g) + bad * r
        nb = np.empty_like(bad)
        nb[0] = 0.0
        nb[1:] = (good * g + bad * (1 - r))[:-1]
        good, bad = ng, nb
    np.clip(tail, 0.0, 1.0, out=tail)
    return tail


def parity_table(policy: FecPolicy, loss: float, burst: float, max_k: int = TABLE_DATA_SHARDS) -> list[int]:
    """``table[k]``: parity shards for a block of ``k`` data shards (index 0 unused) so that
    P(more than m of k+m lost) <= target at loss rate ``loss`` and mean run ``burst``,
    clamped to [floor, ceiling] of ``k`` (a small block may exceed the ceiling up to
    SMALL_BLOCK_PARITY)."""
    lo = [math.ceil(k * policy.floor_percent / 100 - 1e-9) for k in range(max_k + 1)]
    hi = [max(lo[k], math.floor(k * policy.ceiling_percent / 100 + 1e-9), SMALL_BLOCK_PARITY if k else 0)
          for k in range(max_k + 1)]
    if loss < CLEAN_LOSS:
        return lo
    loss = min(loss, 0.95)
    burst = max(burst, 1 / (1 - loss))  # a run is at least as long as independent loss makes it
    n_max = max_k + hi[max_k]
    tail = _tail_table(loss, burst, n_max)
    table = [0] * (max_k + 1)
    for k in range(1, max_k + 1):
        ms = np.arange(lo[k], hi[k] + 1)
        ok = np.nonzero(tail[k + ms, ms] <= policy.target)[0]
        table[k] = int(ms[ok[0]]) if ok.size else hi[k]
    return table


def block_failure(k: int, m: int, loss: float, burst: float) -> float:
    """P(a block of ``k`` data + ``m`` parity shards cannot be rebuilt) under the chain."""
    if loss <= 0:
        return 0.0
    loss = min(loss, 0.95)
    return float(_tail_table(loss, max(burst, 1 / (1 - loss)), k + m)[k + m, m])


class FecController:
    """Parity per FEC block from the loss the client reports.

    ``observe`` (control thread) updates the smoothed loss rate and run length and
    publishes a new table; ``parity_for`` (packetize thread) reads it. Until the
    first report the link is unknown and blocks get the fixed share.
    """

    def __init__(self, policy: FecPolicy) -> None:
        self.policy = policy
        #: smoothed loss rate (0..1) that drove the table
        self.loss_estimate = 0.0
        #: mean loss-run length (1.0 = independent losses)
        self.burst_estimate = 1.0
        #: P(unrecoverable) of the reference block at the chosen parity: > target when the ceiling binds
        self.residual_loss = 0.0
        self.windows = 0
        #: data and parity shards of the blocks asked for so far (written by the packetize thread only)
        self.data_shards = 0
        self.parity_shards = 0
        self._table: list[int] = []
        self._publish()

    @property
    def adaptive(self) -> bool:
        return self.policy.mode == "adaptive"

    def observe(self, report: LossReport) -> None:
        if not self.adaptive or report.packets_expected <= 0:
            return
        self.windows += 1
        measured = report.loss_rate
        weight = min(1.0, report.packets_expected / MIN_PACKETS)  # a thin window moves the estimate less
        if measured >= self.loss_estimate:
            self.loss_estimate += weight * (measured - self.loss_estimate)  # fast attack
        else:
            self.loss_estimate += weight * DECAY * (measured - self.loss_estimate)  # slow decay
        if self.loss_estimate < CLEAN_LOSS:
            self.loss_estimate = 0.0
        if report.loss_runs and report.packets_lost:
            run = report.packets_lost / report.loss_runs
            if run >= self.burst_estimate:
                self.burst_estimate += weight * (run - self.burst_estimate)
            else:
                self.burst_estimate += weight * DECAY * (run - self.burst_estimate)
        elif measured == 0:
            self.burst_estimate += weight * DECAY * (1.0 - self.burst_estimate)
        self._publish()

    def _publish(self) -> None:
        p = self.policy
        if not self.adaptive or not self.windows:  # before the first report nothing is known: the fixed share
            self._table = [fixed_parity(k, p.fixed_percent, p.min_parity) for k in range(TABLE_DATA_SHARDS + 1)]
            self.residual_loss = 0.0
            return
        design = min(0.95, self.loss_estimate * HEADROOM)
        table = parity_table(p, design, self.burst_estimate)
        m = table[REFERENCE_DATA_SHARDS]
        self.residual_loss = block_failure(REFERENCE_DATA_SHARDS, m, self.loss_estimate, self.burst_estimate)
        self._table = table  # one rebinding: the packetize thread sees the old table or the new one

    def parity_for(self, data_shards: int) -> int:
        """Parity shards for a block of ``data_shards`` data shards (per frame: no lock)."""
        table = self._table
        if data_shards < len(table):
            m = table[data_shards]
        elif not self.adaptive or not self.windows:
            p = self.policy
            m = fixed_parity(data_shards, p.fixed_percent, p.min_parity)
        else:  # a larger block needs no larger share than the largest row (losses average out)
            m = math.ceil(data_shards * table[-1] / (len(table) - 1))
        self.data_shards += data_shards
        self.parity_shards += m
        return m

    @property
    def percent(self) -> float:
        """The share chosen now for the reference block, in percent (for captures)."""
        return 100.0 * self._table[REFERENCE_DATA_SHARDS] / REFERENCE_DATA_SHARDS


@dataclass(frozen=True)
class RatePolicy:
    """From config: ``rate_control``, ``bitrate_min_kbps``, ``bitrate_max_kbps`` (0 = the session's start bitrate)."""

    mode: Mode = "adaptive"
    min_kbps: int = 500
    max_kbps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"rate_control must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.min_kbps <= 0 or self.max_kbps < 0:
            raise ValueError("bitrate_min_kbps must be positive and bitrate_max_kbps >= 0")
        if self.max_kbps and self.max_kbps < self.min_kbps:
            raise ValueError("bitrate_max_kbps must be 0 or at least bitrate_min_kbps")


#: multiplicative decrease on congestion
DECREASE = 0.8
#: additive increase per clean window, as a share of the ceiling
INCREASE_SHARE = 0.05
#: clean windows after a decrease before probing up again
HOLD_WINDOWS = 2
#: RTT above the smallest seen by this factor plus RTT_SLACK_US means a queue is building
RTT_RISE = 1.5
RTT_SLACK_US = 10_000.0


class RateController:
    """AIMD on the encoder's target: down on congestion, up additively when clean.

    Congestion is loss FEC cannot absorb (``residual_loss`` above the FEC target, or
    unrecoverable frames in two windows in a row) or an RTT that rose well above the
    smallest one seen (a queue). Random loss that FEC covers leaves the rate alone.
    """

    def __init__(self, policy: RatePolicy, start_kbps: int, fec_target: float = 0.001) -> None:
        self.policy = policy
        self.max_kbps = policy.max_kbps or start_kbps
        self.min_kbps = min(policy.min_kbps, self.max_kbps)
        self.target_kbps = max(self.min_kbps, min(start_kbps, self.max_kbps))
        self.fec_target = fec_target
        self.min_rtt_us: float | None = None
        self._lossy_windows = 0
        self._since_decrease = HOLD_WINDOWS
        #: why the target last moved ("loss", "rtt", "probe", "client"), for logs and tests
        self.last_reason = ""

    def observe(self, report: LossReport, residual_loss: float) -> int | None:
        """A report window: the new target in kbps when it changes, else None."""
        if self.policy.mode != "adaptive":
            return None
        reason = ""
        if report.frames_unrecoverable > 0 or residual_loss > self.fec_target:
            self._lossy_windows += 1
        else:
            self._lossy_windows = 0
        if residual_loss > 10 * self.fec_target or self._lossy_windows >= 2:
            reason = "loss"
        if report.rtt_us is not None and report.rtt_us > 0:
            base = self.min_rtt_us = report.rtt_us if self.min_rtt_us is None else min(self.min_rtt_us, report.rtt_us)
            if report.rtt_us > base * RTT_RISE + RTT_SLACK_US:
                reason = reason or "rtt"
        old = self.target_kbps
        if reason:
            self.target_kbps = max(self.min_kbps, int(old * DECREASE))
            self._since_decrease = 0
            self._lossy_windows = 0
        else:
            self._since_decrease += 1
            if self._since_decrease > HOLD_WINDOWS and self._lossy_windows == 0 and report.loss_rate < 0.5:
                step = max(1, int(self.max_kbps * INCREASE_SHARE))
                self.target_kbps = min(self.max_kbps, old + step)
                reason = "probe"
        if self.target_kbps == old:
            return None
        self.last_reason = reason
        return self.target_kbps

    def client_asks(self, kbps: int) -> int | None:
        """The client asked for a rate: it becomes the target and the ceiling probing stops at
        (never below the minimum); the new target, or None when it does not change."""
        kbps = max(self.min_kbps, int(kbps))
        self.max_kbps = kbps
        if kbps == self.target_kbps:
            return None
        self.target_kbps = kbps
        self._since_decrease = 0
        self.last_reason = "client"
        return kbps


class KeyframeCoalescer:
    """One forced IDR per loss burst: requests within ``hold_s`` of the last forced one are absorbed."""

    def __init__(self, hold_s: float = 0.5) -> None:
        self.hold_s = hold_s
        self._last: float | None = None
        self.forced = 0
        self.coalesced = 0

    def request(self, now: float | None = None) -> bool:
        """True: force an IDR now; False: one is already on its way for this burst."""
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last < self.hold_s:
            self.coalesced += 1
            return False
        self._last = now
        self.forced += 1
        return True


def policies(cfg: Mapping[str, Any], fixed_percent: float | None = None) -> tuple[FecPolicy, RatePolicy]:
    """The policies of a protocol's config section (the keys are the same in every protocol's
    section; their schema checked each one). Values the schema cannot relate are reconciled,
    never refused: a floor above the ceiling is the ceiling, a maximum below the minimum the
    minimum. ``fixed_percent``: the share fixed mode uses (default: the section's ``fec_percent``)."""
    ceiling = float(cfg.get("fec_ceiling_percent", 50.0))
    fec = FecPolicy(
        mode="fixed" if cfg.get("fec", "adaptive") == "fixed" else "adaptive",
        target=float(cfg.get("fec_target", 0.001)),
        floor_percent=min(float(cfg.get("fec_floor_percent", 5.0)), ceiling),
        ceiling_percent=ceiling,
        fixed_percent=float(cfg.get("fec_percent", 20) if fixed_percent is None else fixed_percent),
        min_parity=int(cfg.get("fec_min_parity", 2)),
    )
    low = int(cfg.get("bitrate_min_kbps", 500))
    high = int(cfg.get("bitrate_max_kbps", 0))
    rate = RatePolicy(mode="fixed" if cfg.get("rate_control", "adaptive") == "fixed" else "adaptive",
                      min_kbps=low, max_kbps=max(high, low) if high else 0)
    return fec, rate


class AdaptiveControl:
    """One session's controllers, fed by its protocol's control thread.

    ``observe`` takes a report window and applies a new bitrate through
    ``set_bitrate``; ``keyframe`` says whether a client's keyframe request
    forces an IDR; ``fill`` writes the capture fields into a window's sample
    (called by the runner when the window closes; fields of a fixed
    controller stay absent).
    """

    def __init__(self, fec: FecPolicy, rate: RatePolicy, start_kbps: int,
                 set_bitrate: Callable[[int], None] | None = None, keyframe_hold_s: float = 0.5) -> None:
        self.fec = FecController(fec)
        self.rate = RateController(rate, start_kbps, fec.target)
        self.keyframes = KeyframeCoalescer(keyframe_hold_s)
        #: where a new bitrate goes (the session's encoder); the protocol may set it once the session runs
        self.set_bitrate = set_bitrate
        #: the latest smoothed RTT, from the protocol's pings
        self.rtt_us: float | None = None
        self._shards_seen = (0, 0)

    def observe(self, report: LossReport) -> int | None:
        """A client report window: update FEC, then the bitrate (returned when it changed)."""
        if report.rtt_us is None and self.rtt_us is not None:
            report = LossReport(report.window_s, report.packets_expected, report.packets_lost, report.loss_runs,
                                report.frames_unrecoverable, self.rtt_us)
        self.fec.observe(report)
        kbps = self.rate.observe(report, self.fec.residual_loss)
        if kbps is not None and self.set_bitrate is not None:
            self.set_bitrate(kbps)
        return kbps

    def client_asks(self, kbps: int) -> int:
        """The client asked for a bitrate: the new target (and ceiling) when rate control is adaptive."""
        if self.rate.policy.mode == "adaptive":
            self.rate.client_asks(kbps)
            return self.rate.target_kbps
        return int(kbps)

    def keyframe(self, now: float | None = None) -> bool:
        """A keyframe request: True = force an IDR now."""
        return self.keyframes.request(now)

    def fill(self, sample: StatsSample) -> None:
        if self.fec.adaptive:
            k, m = self.fec.data_shards, self.fec.parity_shards
            k0, m0 = self._shards_seen
            self._shards_seen = (k, m)
            # the share the window's blocks got; the share chosen now when none was sent
            sample.fec_parity_pct = round(100 * (m - m0) / (k - k0), 2) if k > k0 else round(self.fec.percent, 2)
            sample.loss_estimate_pct = round(100 * self.fec.loss_estimate, 3)
        if self.rate.policy.mode == "adaptive":
            sample.bitrate_target_kbps = self.rate.target_kbps
