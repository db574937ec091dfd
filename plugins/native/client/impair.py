"""Impairments the test client applies to what it receives (testing FEC and rate control).

``--loss`` / ``--loss-pattern`` drop datagrams at random — uniformly
(``uniform:P``) or in bursts from a Gilbert–Elliott chain (``ge:P,R,H``: good →
bad with probability P per datagram, bad → good with R, a datagram lost with
probability H in the bad state and never in the good one). ``--cap-mbps`` is a
token bucket: datagrams beyond that rate are dropped, as a policer on a slow
link would. Each can end part-way through the stream (``--loss-until``,
``--cap-until``, seconds after the first datagram) so a test can watch the
host recover. Everything is seeded (``--loss-seed``): a run is repeatable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: the bucket holds this many seconds of traffic at the cap (a router's queue: a frame's
#: datagrams arrive in a burst, and a keyframe is many times the mean frame)
BUCKET_S = 0.25
#: but never less than this many bytes (a keyframe at a low rate must be able to pass)
BUCKET_MIN_BYTES = 64_000


@dataclass(frozen=True)
class LossPattern:
    """``uniform`` with ``rate``, or ``ge`` with ``p`` (good → bad), ``r`` (bad → good), ``h`` (loss when bad)."""

    kind: str
    rate: float = 0.0
    p: float = 0.0
    r: float = 1.0
    h: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LossPattern:
        """``uniform:0.05`` or ``ge:0.01,0.3,0.8``; ValueError says what is wrong."""
        kind, _, args = text.partition(":")
        try:
            values = [float(v) for v in args.split(",")] if args else []
        except ValueError:
            raise ValueError(f"loss pattern {text!r}: the values must be numbers") from None
        if kind == "uniform" and len(values) == 1 and 0 <= values[0] < 1:
            return cls("uniform", rate=values[0])
        if kind == "ge" and len(values) == 3 and 0 <= values[0] <= 1 and 0 < values[1] <= 1 and 0 <= values[2] <= 1:
            return cls("ge", p=values[0], r=values[1], h=values[2])
        raise ValueError(f"loss pattern {text!r}: use uniform:RATE (0 <= RATE < 1) or ge:P,R,H "
                         "(probabilities: good→bad, bad→good, loss when bad)")

    @property
    def mean_loss(self) -> float:
        """The long-run share of datagrams lost."""
        if self.kind == "uniform":
            return self.rate
        return self.h * self.p / (self.p + self.r) if self.p + self.r > 0 else 0.0


class LinkImpairment:
    """Decides per received datagram whether the "link" lost it (one receive thread calls it)."""

    def __init__(self, loss: LossPattern | None = None, *, loss_until_s: float = 0.0, cap_mbps: float = 0.0,
                 cap_until_s: float = 0.0, seed: int | None = None) -> None:
        self.loss = loss if loss is not None and loss.mean_loss > 0 else None
        self.loss_until_s = loss_until_s
        self.cap_bytes_s = cap_mbps * 1e6 / 8
        self.cap_until_s = cap_until_s
        self._rng = random.Random(seed)
        self._bad = False
        self._depth = max(BUCKET_MIN_BYTES, self.cap_bytes_s * BUCKET_S)
        self._tokens = self._depth
        self._t0: float | None = None
        self._last = 0.0
        self.lost = 0
        self.capped = 0

    @property
    def active(self) -> bool:
        return self.loss is not None or self.cap_bytes_s > 0

    def drop(self, nbytes: int, now: float) -> bool:
        """True: this datagram is lost."""
        if self._t0 is None:
            self._t0 = self._last = now
        t = now - self._t0
        if self.cap_bytes_s > 0 and (self.cap_until_s <= 0 or t < self.cap_until_s):
            self._tokens = min(self._depth, self._tokens + (now - self._last) * self.cap_bytes_s)
            self._last = now
            if self._tokens < nbytes:
                self.capped += 1
                return True
            self._tokens -= nbytes
        loss = self.loss
        if loss is None or (self.loss_until_s > 0 and t >= self.loss_until_s):
            return False
        rnd = self._rng.random
        if loss.kind == "uniform":
            hit = rnd() < loss.rate
        else:
            self._bad = (rnd() >= loss.r) if self._bad else (rnd() < loss.p)
            hit = self._bad and rnd() < loss.h
        if hit:
            self.lost += 1
        return hit
