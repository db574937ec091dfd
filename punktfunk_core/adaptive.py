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

import dataclasses
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from punktfunk_core.settings import LIVE_NEW_SESSIONS, Settings, setting

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
SMALL_BLOCK_PARITY = 12
#: the reference block the reported share (``percent``) is computed for: the native
#: packetizer splits small access units into about this many shards
REFERENCE_DATA_SHARDS = 64
#: the loss rate the table is designed for is the estimate plus this many standard errors of its
#: measurement (an upper confidence bound: n datagrams in runs of b measure p within about
#: sqrt(p(1-p)·b/n)); a thin pool (the first window, a short one) widens it
CONFIDENCE_Z = 2.5
#: the parity is planned for this share of ``fec_target``: a controller that held every frame's
#: chance of loss exactly at the target would lose target·N of N frames on average, so over the
#: 1/target frames the target speaks of it would exceed it about a third of the time (Poisson: more
#: than 1 when 1 is expected); planned at a quarter, 2.6 % of the time (P(Poisson(0.25) >= 2))
PLAN_SHARE = 0.25
#: the estimate pools the report windows of this many seconds (4 native windows, 16 GameStream
#: ones): more datagrams, a narrower bound, so less parity for the same confidence; a window
#: significantly worse than the pool replaces it at once (the link changed), a better one only
#: pushes the old windows out as it rolls (the loss decays over POOL_S)
POOL_S = 8.0
#: and at most this many windows (a report without a span)
POOL_WINDOWS = 32
#: an estimate below this is taken as a clean link (the table is then the floor)
CLEAN_LOSS = 1e-4
#: after this many windows in a row without a single loss, of MIN_PACKETS datagrams together, the
#: estimate is 0: the link is clean
CLEAN_WINDOWS = 3
#: the clean windows that end the loss carry at least this many datagrams; the confidence bound
#: never counts on fewer
MIN_PACKETS = 200
#: a report of fewer datagrams than this is no news (the stream has barely started, or paused)
MIN_REPORT_PACKETS = 50


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
    #: adaptive: until the first report (nothing is known about the link yet) blocks get the fixed
    #: share rather than the floor
    start_fixed: bool = False
    #: adaptive, when above 0 (and not ``start_fixed``): until the first report blocks get the
    #: parity this loss rate needs (a protocol whose first report comes late, with many small frames)
    start_loss: float = 0.0

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


def parity_plan(policy: FecPolicy, loss: float, burst: float, max_k: int = TABLE_DATA_SHARDS,
                target: float | None = None) -> tuple[list[int], list[float]]:
    """``(table, lower)``: ``table[k]`` as :func:`parity_table` says, and ``lower[k]`` the share of
    the blocks of ``k`` data shards that may get one parity shard less, so that the mean of
    P(unrecoverable) over the blocks is the goal rather than below it (0 where ``table[k]`` is the
    floor or the ceiling binds). A whole shard is a coarse step for a small block (one of 5 data
    shards is 20 %): mixing m-1 and m in this proportion spends only what the goal needs."""
    lo = [math.ceil(k * policy.floor_percent / 100 - 1e-9) for k in range(max_k + 1)]
    hi = [max(lo[k], math.floor(k * policy.ceiling_percent / 100 + 1e-9), SMALL_BLOCK_PARITY if k else 0)
          for k in range(max_k + 1)]
    lower = [0.0] * (max_k + 1)
    if loss < CLEAN_LOSS:
        return lo, lower
    loss = min(loss, 0.95)
    burst = max(burst, 1 / (1 - loss))  # a run is at least as long as independent loss makes it
    n_max = max_k + hi[max_k]
    tail = _tail_table(loss, burst, n_max)
    goal = policy.target if target is None else target
    table = [0] * (max_k + 1)
    for k in range(1, max_k + 1):
        ms = np.arange(lo[k], hi[k] + 1)
        fail = tail[k + ms, ms]
        ok = np.nonzero(fail <= goal)[0]
        if not ok.size:  # the ceiling binds: every block gets it
            table[k] = hi[k]
            continue
        i = int(ok[0])
        table[k] = int(ms[i])
        if i > 0:  # m-1 is not below the floor: w·fail(m-1) + (1-w)·fail(m) = goal
            lower[k] = float((goal - fail[i]) / (fail[i - 1] - fail[i]))
    return table, lower


def parity_table(policy: FecPolicy, loss: float, burst: float, max_k: int = TABLE_DATA_SHARDS,
                 target: float | None = None) -> list[int]:
    """``table[k]``: parity shards for a block of ``k`` data shards (index 0 unused) so that
    P(more than m of k+m lost) <= ``target`` (default: the policy's) at loss rate ``loss`` and mean run ``burst``,
    clamped to [floor, ceiling] of ``k`` (a small block may exceed the ceiling up to
    SMALL_BLOCK_PARITY)."""
    return parity_plan(policy, loss, burst, max_k, target)[0]


def block_failure(k: int, m: int, loss: float, burst: float) -> float:
    """P(a block of ``k`` data + ``m`` parity shards cannot be rebuilt) under the chain."""
    if loss <= 0:
        return 0.0
    loss = min(loss, 0.95)
    return float(_tail_table(loss, max(burst, 1 / (1 - loss)), k + m)[k + m, m])


class FecController:
    """Parity per FEC block from the loss the client reports.

    ``observe`` (control thread) pools the report windows of the last ``POOL_S``
    seconds into a loss rate and a run length and publishes a new table;
    ``parity_for`` (packetize thread) reads it. Until the first report the link
    is unknown: blocks get the floor, the fixed share with ``start_fixed``, or
    the parity ``start_loss`` needs.
    """

    def __init__(self, policy: FecPolicy) -> None:
        self.policy = policy
        #: pooled loss rate (0..1) that drove the table
        self.loss_estimate = 0.0
        #: mean loss-run length (1.0 = independent losses)
        self.burst_estimate = 1.0
        #: P(unrecoverable) of the reference block at the chosen parity: > target when the ceiling binds
        self.residual_loss = 0.0
        self.windows = 0
        #: the report windows the estimate pools, oldest first
        self._pool: deque[LossReport] = deque(maxlen=POOL_WINDOWS)
        #: clean windows in a row, and their datagrams
        self._clean_windows = 0
        self._clean_packets = 0
        #: blocks asked for so far, and data and parity shards and payload bytes of those (written
        #: by the packetize thread only)
        self.blocks = 0
        self.data_shards = 0
        self.parity_shards = 0
        self.payload_bytes = 0
        #: the first block (counted from 0) whose parity the last ``observe`` chose: every block
        #: from it on saw that table (the native host tells its client, docs/adaptive.md)
        self.informed_from: int | None = None
        #: (parity per data-shard count, share of those blocks that get one less): ``_publish``
        #: rebinds it whole, so a block reads one table and its mixing shares together
        self._plan: tuple[list[int], list[float]] = ([], [])
        #: per data-shard count, the blocks owed one parity shard less (error diffusion: each block
        #: adds its share, a whole one is paid out); written by the packetize thread only
        self._owed = [0.0] * (TABLE_DATA_SHARDS + 1)
        self._publish()

    @property
    def adaptive(self) -> bool:
        return self.policy.mode == "adaptive"

    def observe(self, report: LossReport) -> None:
        if report.packets_expected < MIN_REPORT_PACKETS:
            return
        if not self.adaptive:  # the share never changes; the report is taken in all the same
            self.informed_from = self.blocks
            return
        self.windows += 1
        pool = self._pool
        if pool and self._worse_than_pool(report):
            pool.clear()  # the link got worse: the older windows no longer describe it (fast attack)
        pool.append(report)
        while len(pool) > 1 and sum(w.window_s for w in pool) - pool[0].window_s >= POOL_S:
            pool.popleft()  # it rolls: a lower loss takes over as the lossy windows leave (slow decay)
        if report.packets_lost:
            self._clean_windows = self._clean_packets = 0
        else:
            self._clean_windows += 1
            self._clean_packets += report.packets_expected
        if self._clean_windows >= CLEAN_WINDOWS and self._clean_packets >= MIN_PACKETS:
            while len(pool) > self._clean_windows:  # the link is clean: the lossy windows before go
                pool.popleft()
        self.loss_estimate, self.burst_estimate = self._pooled()
        if self.loss_estimate < CLEAN_LOSS:
            self.loss_estimate = 0.0
        self._publish()
        self.informed_from = self.blocks  # after the table: every block counted later read it

    def _pooled(self) -> tuple[float, float]:
        """Loss rate and mean run length of the pooled windows."""
        expected = sum(w.packets_expected for w in self._pool)
        lost = sum(w.packets_lost for w in self._pool)
        counted = [w for w in self._pool if w.loss_runs and w.packets_lost]  # windows whose runs the client counted
        runs = sum(w.loss_runs or 0 for w in counted)
        burst = sum(w.packets_lost for w in counted) / runs if runs else 1.0
        return (lost / expected if expected else 0.0), burst

    def _worse_than_pool(self, report: LossReport) -> bool:
        """The window lost significantly more than the pool (a two-sample test at CONFIDENCE_Z)."""
        n0 = sum(w.packets_expected for w in self._pool)
        p0, burst = self._pooled()
        n1, p1 = report.packets_expected, report.loss_rate
        if p1 <= p0 or not n0:
            return False
        pbar = (p0 * n0 + p1 * n1) / (n0 + n1)
        return p1 - p0 > CONFIDENCE_Z * math.sqrt(pbar * (1 - pbar) * burst * (1 / n0 + 1 / n1))

    def _publish(self) -> None:
        p = self.policy
        if not self.adaptive or (not self.windows and p.start_fixed):  # fixed, or nothing known yet
            table = [fixed_parity(k, p.fixed_percent, p.min_parity) for k in range(TABLE_DATA_SHARDS + 1)]
            self._plan = (table, [0.0] * len(table))
            self.residual_loss = 0.0
            return
        design = self.design_loss if self.windows or p.start_loss <= 0 else min(0.95, p.start_loss)
        table, lower = parity_plan(p, design, self.burst_estimate, target=p.target * PLAN_SHARE)
        k, m, w = REFERENCE_DATA_SHARDS, table[REFERENCE_DATA_SHARDS], lower[REFERENCE_DATA_SHARDS]
        residual = block_failure(k, m, self.loss_estimate, self.burst_estimate)
        if w:  # the mean over the blocks that get m-1 and those that get m
            residual += w * (block_failure(k, m - 1, self.loss_estimate, self.burst_estimate) - residual)
        self.residual_loss = residual
        self._plan = (table, lower)  # one rebinding: the packetize thread sees the old plan or the new one

    @property
    def design_loss(self) -> float:
        """The loss rate the parity is sized for: the pooled estimate plus its uncertainty."""
        p = self.loss_estimate
        if p <= 0:
            return 0.0
        n = max(MIN_PACKETS, sum(w.packets_expected for w in self._pool))
        return min(0.95, p + CONFIDENCE_Z * math.sqrt(p * (1 - p) * self.burst_estimate / n))

    def congestion_cleared(self) -> None:
        """The rate was cut because the loss was ours (congestion): the new rate should not
        see it, and parity sized for it would only add to the load. The next report decides
        again (a pool of one window)."""
        if self.adaptive:
            self.windows += 1  # the link is known now: no longer the fixed share of the start
            self._pool.clear()
            self.loss_estimate = 0.0
            self.burst_estimate = 1.0
            self._clean_windows = self._clean_packets = 0
            self._publish()
            self.informed_from = self.blocks

    def parity_for(self, data_shards: int, payload_bytes: int = 0) -> int:
        """Parity shards for a block of ``data_shards`` data shards (per frame: no lock).
        ``payload_bytes``, the block's size, is counted for the rate controller (what the
        encoder really sent, which may be less than its target)."""
        self.blocks += 1  # before the table is read: ``informed_from`` never counts a block that read an older one
        table, lower = self._plan
        if data_shards < len(table):
            m = table[data_shards]
            share = lower[data_shards]
            if share:  # every 1/share-th block of this size gets one parity shard less
                owed = self._owed[data_shards] + share
                if owed >= 1.0:
                    owed -= 1.0
                    m -= 1
                self._owed[data_shards] = owed
        elif not self.adaptive or (not self.windows and self.policy.start_fixed):
            p = self.policy
            m = fixed_parity(data_shards, p.fixed_percent, p.min_parity)
        else:  # a larger block needs no larger share than the largest row (losses average out)
            m = math.ceil(data_shards * table[-1] / (len(table) - 1))
        self.data_shards += data_shards
        self.parity_shards += m
        self.payload_bytes += payload_bytes
        return m

    @property
    def percent(self) -> float:
        """The mean share chosen now for the reference block, in percent (for captures)."""
        table, lower = self._plan
        return 100.0 * (table[REFERENCE_DATA_SHARDS] - lower[REFERENCE_DATA_SHARDS]) / REFERENCE_DATA_SHARDS


@dataclass(frozen=True)
class RatePolicy:
    """From config: ``rate_control``, ``bitrate_min_kbps``, ``bitrate_max_kbps`` (0 = the session's start bitrate)."""

    mode: Mode = "adaptive"
    min_kbps: int = 500
    max_kbps: int = 0
    #: an RTT rise counts when it lasts this many windows in a row (GameStream: 2, since ENet's RTT
    #: on a loaded host jumps for a window without any queue on the path; native: 1, its own pings)
    rtt_windows: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"rate_control must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.min_kbps <= 0 or self.max_kbps < 0:
            raise ValueError("bitrate_min_kbps must be positive and bitrate_max_kbps >= 0")
        if self.max_kbps and self.max_kbps < self.min_kbps:
            raise ValueError("bitrate_max_kbps must be 0 or at least bitrate_min_kbps")


#: multiplicative decrease on congestion ...
DECREASE = 0.8
#: ... or, when the window lost more, down to this share of what got through: a link that
#: delivered (1 - p) of the datagrams carries about (1 - p) of the rate, with a margin
THROUGH_MARGIN = 0.9
#: loss in runs at least this long on average (and above BURSTY_LOSS) is a queue overflowing
BURSTY_RUN = 3.0
BURSTY_LOSS = 0.001
#: the reasons for a decrease that say the loss was caused by our own rate
CONGESTION = ("loss", "burst")
#: increase per clean window: this share of the target or CEILING_SHARE of the ceiling, whichever
#: is more (brisk far below the ceiling, in proportion near it) ...
INCREASE_SHARE = 0.1
CEILING_SHARE = 0.05
#: ... and this share near the rate the link carried when it last congested (from NEAR_SHARE to
#: FAR_SHARE of it): probing past what the link carries costs a loss burst, so it is done slowly
CAUTIOUS_SHARE = 0.02
NEAR_SHARE = 0.9
FAR_SHARE = 1.1
#: for this many windows after the cut; later the link may have changed, and probing is brisk again
CAUTIOUS_WINDOWS = 5
#: clean windows after a decrease before probing up again
HOLD_WINDOWS = 2
#: RTT above the smallest seen by this factor plus RTT_SLACK_US means a queue is building ...
RTT_RISE = 1.5
RTT_SLACK_US = 10_000.0


class RateController:
    """AIMD on the encoder's target: down on congestion, up additively when clean.

    Congestion is loss FEC cannot absorb (``residual_loss`` above the FEC target, or
    unrecoverable frames in two windows in a row) unless its runs are as short as
    independent loss makes them, loss in long runs (a queue overflowing: bursts,
    not scattered drops) or an RTT that stayed well above the smallest one seen
    for two windows (a queue). Random loss leaves the rate alone: a lower rate would not reduce it.
    The window right after a decrease does not decrease again (it still carries
    the old rate).
    """

    def __init__(self, policy: RatePolicy, start_kbps: int, fec_target: float = 0.001) -> None:
        self.policy = policy
        self.max_kbps = policy.max_kbps or start_kbps
        self.min_kbps = min(policy.min_kbps, self.max_kbps)
        self.target_kbps = max(self.min_kbps, min(start_kbps, self.max_kbps))
        self.fec_target = fec_target
        self.min_rtt_us: float | None = None
        self._lossy_windows = 0
        self._rtt_windows = 0
        self._since_decrease = HOLD_WINDOWS + 1
        #: why the target last moved ("loss", "burst", "rtt", "probe", "client"), for logs and tests
        self.last_reason = ""
        #: the last window's loss was caused by our own rate ("loss" or "burst"), cut or not
        self.congested = False
        #: what the link carried when congestion last cut the rate (what was sent times what got
        #: through, in encoder kbit/s): probing near it goes slowly
        self.congested_at_kbps: int | None = None

    def observe(self, report: LossReport, residual_loss: float, *, sent_kbps: float | None = None,
                relief: float = 1.0) -> int | None:
        """A report window: the new target in kbps when it changes, else None.

        ``sent_kbps``: what the encoder really sent in the window (a cut starts from it when
        it is below the target); ``relief``: how much the wire rate shrinks besides the cut
        (parity dropped back to the floor: (1 + share then) / (1 + share now)).
        """
        if self.policy.mode != "adaptive":
            return None
        reason = ""
        # the parity in force could not cover the loss the window had (none: nothing to cover)
        residual_loss = residual_loss if report.packets_lost else 0.0
        if report.frames_unrecoverable > 0 or residual_loss > self.fec_target:
            self._lossy_windows += 1
        else:
            self._lossy_windows = 0
        loss = report.loss_rate
        run = report.packets_lost / report.loss_runs if report.loss_runs else None
        # runs as short as independent loss makes them: the link drops at random, whatever our rate
        scattered = run is not None and run < 1.5 / (1 - min(loss, 0.9))
        if (residual_loss > 10 * self.fec_target or self._lossy_windows >= 2) and not scattered:
            reason = "loss"
        elif loss > BURSTY_LOSS and run is not None and run >= BURSTY_RUN:
            reason = "burst"
        if report.rtt_us is not None and report.rtt_us > 0:
            base = self.min_rtt_us = report.rtt_us if self.min_rtt_us is None else min(self.min_rtt_us, report.rtt_us)
            self._rtt_windows = self._rtt_windows + 1 if report.rtt_us > base * RTT_RISE + RTT_SLACK_US else 0
            if self._rtt_windows >= self.policy.rtt_windows:
                reason = reason or "rtt"
        self.congested = reason in CONGESTION
        old = self.target_kbps
        if reason and self._since_decrease == 0:
            reason = ""  # the window after a decrease still carries the old rate
            self._since_decrease = 1
        elif reason:
            base = min(old, sent_kbps) if sent_kbps else old
            if reason in CONGESTION:
                self.congested_at_kbps = int(base * (1 - loss))
            factor = min(DECREASE, (1 - loss) * THROUGH_MARGIN * max(1.0, relief))
            self.target_kbps = max(self.min_kbps, min(int(old * DECREASE), int(base * factor)))
            self._since_decrease = 0
            self._lossy_windows = self._rtt_windows = 0
        else:
            self._since_decrease += 1
            if self._since_decrease > HOLD_WINDOWS and self._lossy_windows == 0 and report.loss_rate < 0.5:
                step = max(1, int(old * INCREASE_SHARE), int(self.max_kbps * CEILING_SHARE))
                broke = self.congested_at_kbps
                if broke is not None and (old >= FAR_SHARE * broke or self._since_decrease > CAUTIOUS_WINDOWS):
                    self.congested_at_kbps = broke = None  # well past it: the link has grown
                if broke is not None and old + step > NEAR_SHARE * broke:
                    step = max(1, int(old * CAUTIOUS_SHARE))
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
    """One forced IDR per loss burst: requests within ``hold_s`` of the last forced one are absorbed.

    ``hold_s`` is about the time the forced IDR needs to reach the client: requests sent before it
    arrived belong to the same burst; one after it is a new loss (or the IDR itself was lost) and
    gets its own. Holding longer would leave a client that lost the IDR waiting.
    """

    def __init__(self, hold_s: float = 0.1) -> None:
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


@dataclass(frozen=True, kw_only=True)
class AdaptiveSettings(Settings):
    """The adaptive keys, the same in every protocol's section: a protocol's settings class
    inherits them (declared once here), :func:`policies` reads them."""

    fec: str = setting("adaptive", "video FEC: adaptive (the parity share follows the loss the client reports, "
                                   "between fec_floor_percent and fec_ceiling_percent; docs/adaptive.md) or "
                                   "fixed (fec_percent)", enum=list(MODES), live=LIVE_NEW_SESSIONS)
    fec_target: float = setting(0.001, "adaptive FEC: the share of frames it lets go unrecoverable",
                                exclusiveMinimum=0, maximum=0.1, live=LIVE_NEW_SESSIONS)
    fec_floor_percent: float = setting(5.0, "adaptive FEC: the parity share on a clean link (a floor above the "
                                            "ceiling is the ceiling)", minimum=0, maximum=100, live=LIVE_NEW_SESSIONS)
    fec_ceiling_percent: float = setting(50.0, "adaptive FEC: the largest parity share it chooses, in percent of "
                                               "a block's data shards", minimum=0, maximum=200,
                                         live=LIVE_NEW_SESSIONS)
    rate_control: str = setting("adaptive", "video bitrate: adaptive (lower in steps on congestion: loss FEC "
                                            "cannot absorb or a rising round-trip time; probe back up when clean) "
                                            "or fixed (the bitrate the client asked for)", enum=list(MODES),
                                live=LIVE_NEW_SESSIONS)
    bitrate_min_kbps: int = setting(500, "adaptive bitrate: never below this", minimum=100, maximum=2_000_000,
                                    live=LIVE_NEW_SESSIONS)
    bitrate_max_kbps: int = setting(0, "adaptive bitrate: never above this (0 = the bitrate the session started "
                                       "with)", minimum=0, maximum=2_000_000, live=LIVE_NEW_SESSIONS)


def policies(cfg: Mapping[str, Any], fixed_percent: float | None = None,
             start_fixed: bool = False) -> tuple[FecPolicy, RatePolicy]:
    """The policies of a protocol's config section (the keys are the same in every protocol's
    section; their schema checked each one). Values the schema cannot relate are reconciled,
    never refused: a floor above the ceiling is the ceiling, a maximum below the minimum the
    minimum. ``fixed_percent``: the share fixed mode uses (default: the section's ``fec_percent``);
    ``start_fixed``: see :class:`FecPolicy`."""
    s = AdaptiveSettings.of(cfg)  # absent keys: the defaults declared there, stated once
    # the protocol's own FEC keys (each protocol declares its fixed share and minimum; absent: the policy's)
    own: dict[str, Any] = {}
    if fixed_percent is not None or "fec_percent" in cfg:
        own["fixed_percent"] = float(cfg["fec_percent"] if fixed_percent is None else fixed_percent)
    if "fec_min_parity" in cfg:
        own["min_parity"] = int(cfg["fec_min_parity"])
    ceiling = float(s.fec_ceiling_percent)
    fec = FecPolicy(mode="fixed" if s.fec == "fixed" else "adaptive", target=float(s.fec_target),
                    floor_percent=min(float(s.fec_floor_percent), ceiling), ceiling_percent=ceiling,
                    start_fixed=start_fixed, **own)
    low, high = s.bitrate_min_kbps, s.bitrate_max_kbps
    rate = RatePolicy(mode="fixed" if s.rate_control == "fixed" else "adaptive",
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
                 set_bitrate: Callable[[int], None] | None = None, keyframe_hold_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fec = FecController(fec)
        self.rate = RateController(rate, start_kbps, fec.target)
        self.keyframes = KeyframeCoalescer(keyframe_hold_s)
        self._keyframe_hold_s = keyframe_hold_s
        #: where a new bitrate goes (the session's encoder); the protocol may set it once the session runs
        self.set_bitrate = set_bitrate
        #: the latest smoothed RTT, from the protocol's pings
        self.rtt_us: float | None = None
        self._shards_seen = (0, 0)
        self._observed = (0, 0, 0)  # data shards, parity shards, payload bytes at the last report
        #: the time base of the sent rate (a simulation passes its own)
        self.clock = clock
        self._observed_at: float | None = clock()  # the session starts sending now

    def _window_sent(self) -> tuple[float | None, float]:
        """Since the last report: the kbit/s the encoder sent and the parity share (0..) its blocks got."""
        fec = self.fec
        now = self.clock()
        k0, m0, b0 = self._observed
        k, m, b = fec.data_shards, fec.parity_shards, fec.payload_bytes
        self._observed = (k, m, b)
        since, self._observed_at = self._observed_at, now
        share = (m - m0) / (k - k0) if k > k0 else fec.percent / 100
        if since is None or now <= since or b <= b0:
            return None, share
        return (b - b0) * 8 / (now - since) / 1000, share

    def observe(self, report: LossReport) -> int | None:
        """A client report window: update FEC, then the bitrate (returned when it changed)."""
        if report.rtt_us is None and self.rtt_us is not None:
            report = LossReport(report.window_s, report.packets_expected, report.packets_lost, report.loss_runs,
                                report.frames_unrecoverable, self.rtt_us)
        sent_kbps, share = self._window_sent()
        floor = self.fec.policy.floor_percent / 100
        if self.fec.adaptive and not self.fec.windows and report.frames_unrecoverable:
            # the frames were lost under the start share, chosen before anything was known of the
            # link: that says the share was wrong, not that our rate congests it
            report = dataclasses.replace(report, frames_unrecoverable=0)
        # the rate first, judged by the parity that was in force during the window; a cut for
        # congestion also drops the parity to the floor (below), which it counts as relief
        kbps = self.rate.observe(report, self.fec.residual_loss, sent_kbps=sent_kbps,
                                 relief=(1 + share) / (1 + floor))
        if self.rate.congested and self.rate.target_kbps > self.rate.min_kbps:
            # the loss is our rate's: the cut answers it, and parity sized for it would only add
            # to the load (at the minimum rate nothing is left to cut: then FEC protects)
            self.fec.congestion_cleared()
        else:
            self.fec.observe(report)
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
        if self.rtt_us is not None:  # the IDR needs a round trip and a bit to arrive
            self.keyframes.hold_s = max(self._keyframe_hold_s, 1.5 * self.rtt_us / 1e6)
        return self.keyframes.request(self.clock() if now is None else now)

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
