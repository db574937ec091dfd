"""The adaptive controllers (punktfunk_core/adaptive.py) on real numbers: the parity
table against the binomial tail computed independently, Gilbert–Elliott bursts
against a simulated chain, smoothing, AIMD and keyframe coalescing."""

from __future__ import annotations

import math
import random

import pytest

from punktfunk_core.adaptive import (
    PLAN_SHARE,
    POOL_S,
    REFERENCE_DATA_SHARDS,
    FecController,
    FecPolicy,
    KeyframeCoalescer,
    LossReport,
    RateController,
    RatePolicy,
    block_failure,
    fixed_parity,
    parity_table,
)


def binomial_failure(k: int, m: int, p: float) -> float:
    """P(more than m of k+m independent shards lost), summed term by term."""
    n = k + m
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(m + 1, n + 1))


def report(lost: int, expected: int = 10_000, runs: int | None = None, unrec: int = 0,
           rtt_us: float | None = None) -> LossReport:
    return LossReport(window_s=2.0, packets_expected=expected, packets_lost=lost,
                      loss_runs=runs if runs is not None else lost, frames_unrecoverable=unrec, rtt_us=rtt_us)


@pytest.mark.parametrize("loss", [0.013, 0.05, 0.12])
def test_parity_is_the_least_that_keeps_independent_loss_under_target(loss):
    policy = FecPolicy(floor_percent=0, ceiling_percent=100)
    table = parity_table(policy, loss, 1.0)
    for k in (1, 2, 5, 10, 32, 64, 128):
        m = table[k]
        assert binomial_failure(k, m, loss) <= policy.target, (k, m)
        if m > 0:  # one fewer would miss the target: the least, not just enough
            assert binomial_failure(k, m - 1, loss) > policy.target, (k, m)


def test_small_blocks_get_parity_that_follows_the_loss():
    policy = FecPolicy()
    clean, lossy = parity_table(policy, 0.0, 1.0), parity_table(policy, 0.12, 1.0)
    assert clean[1] == 1  # the 5 % floor rounds up to one shard
    # a one-shard frame at 12 % loss: 0.12^(m+1) <= 0.001 needs m = 3; at 20 %, 0.2^5 < 0.001 needs 4
    assert lossy[1] == 3
    assert parity_table(policy, 0.20, 1.0)[1] == 4
    assert lossy[2] > clean[2] and lossy[64] > clean[64]


def test_shares_are_clamped_between_floor_and_ceiling():
    policy = FecPolicy(floor_percent=10, ceiling_percent=30)
    assert parity_table(policy, 0.0, 1.0)[100] == 10
    assert parity_table(policy, 0.001, 1.0)[100] == 10  # the binomial asks for fewer: the floor holds
    assert parity_table(policy, 0.40, 1.0)[100] == 30  # it asks for more than the ceiling allows


def test_bursty_loss_asks_for_more_parity_than_independent_loss():
    policy = FecPolicy()
    independent = parity_table(policy, 0.05, 1.0)
    bursty = parity_table(policy, 0.05, 4.0)
    assert bursty[64] > independent[64]
    assert all(b >= i for b, i in zip(bursty[1:], independent[1:], strict=True))


def dithered_blocks(fec: FecController, k: int, blocks: int) -> list[int]:
    return [fec.parity_for(k) for _ in range(blocks)]


@pytest.mark.parametrize("lost", [200, 500, 1000])  # 2 %, 5 %, 10 % of a 10 000-datagram window
def test_dithered_parity_meets_the_plan_on_average_with_less_parity_than_the_table(lost):
    """Blocks of one size get m-1 or m parity shards in the proportion that makes their mean
    chance of loss the plan: exactly what the goal needs, where m alone spends up to a shard more."""
    fec = FecController(FecPolicy())
    fec.observe(report(lost=lost))
    plan, loss = fec.policy.target * PLAN_SHARE, fec.design_loss
    table = parity_table(fec.policy, loss, 1.0, target=plan)
    saved = 0
    for k in (1, 2, 5, 16, 64, 200):
        parity = dithered_blocks(fec, k, 10_000)
        m = table[k]
        assert set(parity) <= {m - 1, m}, (k, m, set(parity))
        mean_failure = sum(parity.count(p) * binomial_failure(k, p, loss) for p in (m - 1, m)) / len(parity)
        if m - 1 in parity:
            # the mean is the plan, to the one block the error diffusion may owe
            assert mean_failure == pytest.approx(plan, abs=binomial_failure(k, m - 1, loss) / len(parity))
            saved += 1
        else:  # m-1 is below the floor, or the share of m-1 rounds to none in 10 000
            assert mean_failure <= plan
        assert sum(parity) / len(parity) <= m
    assert saved >= 4, "most block sizes mix m-1 in"


def test_dithering_is_deterministic_and_evenly_spread():
    """No randomness: the same reports give the same parity sequence, and every run of blocks
    of one size holds the share of m-1 that the plan says, to within one block."""
    def run() -> tuple[list[int], float, int]:
        fec = FecController(FecPolicy())
        fec.observe(report(lost=500))
        table = parity_table(fec.policy, fec.design_loss, 1.0, target=fec.policy.target * PLAN_SHARE)
        return dithered_blocks(fec, 5, 2_000), fec.percent, table[5]

    first, percent, m = run()
    assert run() == (first, percent, m)
    lower = first.count(m - 1) / len(first)
    assert 0 < lower < 1
    for start in range(0, 2_000, 97):  # any stretch, not just the whole sequence
        stretch = first[start:start + 100]
        assert abs(stretch.count(m - 1) - lower * len(stretch)) <= 1.0 + 1e-9, start


def test_dithering_keeps_floor_and_ceiling():
    policy = FecPolicy(floor_percent=10, ceiling_percent=30)
    fec = FecController(policy)
    fec.observe(report(lost=1))  # 0.01 %: the table is the floor, and m-1 would be below it
    assert fec.loss_estimate > 0 and set(dithered_blocks(fec, 100, 500)) == {10}
    fec.observe(report(lost=4000))  # 40 %: the ceiling binds, every block gets it
    assert set(dithered_blocks(fec, 100, 500)) == {30}
    assert fec.residual_loss > policy.target  # the rate controller sees that the ceiling binds


def test_gilbert_elliott_failure_matches_a_simulated_chain():
    """The forward computation against 100 000 blocks drawn from the same chain."""
    p, burst, k, m = 0.08, 3.0, 20, 6
    r = 1 / burst
    g = p * r / (1 - p)
    rng = random.Random(19)
    bad = rng.random() < p
    failures, blocks = 0, 100_000
    for _ in range(blocks):
        lost = 0
        for _ in range(k + m):
            bad = (rng.random() >= r) if bad else (rng.random() < g)
            lost += bad
        failures += lost > m
    simulated = failures / blocks
    computed = block_failure(k, m, p, burst)
    assert computed == pytest.approx(simulated, rel=0.1), (computed, simulated)
    # and with runs as short as independent loss makes them, it is the binomial
    assert block_failure(k, m, p, 1 / (1 - p)) == pytest.approx(binomial_failure(k, m, p), rel=1e-6)


def test_fixed_mode_is_todays_share_with_its_minimum():
    fec = FecController(FecPolicy(mode="fixed", fixed_percent=20, min_parity=2))
    assert [fec.parity_for(k) for k in (1, 5, 10, 64, 1000)] == [2, 2, 2, 13, 200]
    fec.observe(report(lost=2000))
    assert fec.parity_for(64) == 13 and fec.loss_estimate == 0.0
    assert fixed_parity(64, 0, 2) == 0


def test_before_the_first_report_blocks_get_the_floor_or_with_start_fixed_the_fixed_share():
    assert FecController(FecPolicy()).parity_for(64) == 4  # the 5 % floor
    fec = FecController(FecPolicy(fixed_percent=20, min_parity=2, start_fixed=True))
    assert [fec.parity_for(k) for k in (1, 64, 1000)] == [2, 13, 200]
    fec.observe(report(lost=0))
    assert fec.parity_for(64) == 4  # a clean first window: the 5 % floor


def test_loss_raises_parity_at_once_and_clean_windows_bring_it_back_to_the_floor():
    policy = FecPolicy()
    fec = FecController(policy)
    fec.observe(report(lost=0))
    floor = fec.parity_for(REFERENCE_DATA_SHARDS)
    assert fec.percent == pytest.approx(100 * floor / REFERENCE_DATA_SHARDS)
    fec.observe(report(lost=1000))  # 10 %
    assert fec.loss_estimate == pytest.approx(0.10)  # fast attack: one window is enough
    high = fec.parity_for(REFERENCE_DATA_SHARDS)
    # sized for the estimate plus 2.5 standard errors of a 10 000-datagram window: 10.75 %, and
    # for a quarter of the target (planned with margin: the observed share stays under the target)
    assert fec.design_loss == pytest.approx(0.10 + 2.5 * math.sqrt(0.1 * 0.9 / 10_000))
    assert binomial_failure(REFERENCE_DATA_SHARDS, high, fec.design_loss) <= policy.target * PLAN_SHARE
    assert binomial_failure(REFERENCE_DATA_SHARDS, high - 1, fec.design_loss) > policy.target * PLAN_SHARE
    clean_windows = 0
    while fec.parity_for(REFERENCE_DATA_SHARDS) > floor:
        fec.observe(report(lost=0))
        clean_windows += 1
        assert fec.parity_for(REFERENCE_DATA_SHARDS) <= high  # it only decays
    assert 2 <= clean_windows <= 3, clean_windows  # slow decay, but within a few windows
    assert fec.loss_estimate == 0.0 and fec.percent == pytest.approx(100 * floor / REFERENCE_DATA_SHARDS)


def test_one_clean_window_after_a_lossy_one_keeps_most_of_the_protection():
    fec = FecController(FecPolicy())
    fec.observe(report(lost=1000))
    high = fec.parity_for(64)
    fec.observe(report(lost=0))
    assert fec.loss_estimate == pytest.approx(0.05)  # pooled with the lossy window: half, not zero
    plan = fec.policy.target * PLAN_SHARE
    assert fec.parity_for(64) == parity_table(fec.policy, fec.design_loss, 1.0, target=plan)[64] > 4 < high


def test_windows_within_the_noise_are_pooled_and_narrow_the_bound():
    fec = FecController(FecPolicy())
    fec.observe(report(lost=1000))
    one = fec.design_loss
    for lost in (1030, 970, 1010):  # the same link, measured again
        fec.observe(report(lost=lost))
    assert fec.loss_estimate == pytest.approx(4010 / 40_000)
    # four windows' datagrams: half the standard error of one window
    assert fec.design_loss == pytest.approx(fec.loss_estimate + 2.5 * math.sqrt(0.10025 * 0.89975 / 40_000))
    assert fec.design_loss < one


def test_a_window_significantly_worse_than_the_pool_replaces_it_at_once():
    fec = FecController(FecPolicy())
    for _ in range(3):
        fec.observe(report(lost=100))  # 1 %
    fec.observe(report(lost=800))  # 8 %: far outside what 1 % measures
    assert fec.loss_estimate == pytest.approx(0.08)


def test_a_better_window_lowers_the_estimate_only_as_the_pool_rolls():
    fec = FecController(FecPolicy())
    fec.observe(report(lost=1000))  # 10 %, then 2 % for the rest of the pool's span
    estimates = []
    for _ in range(int(POOL_S / 2.0) + 1):
        fec.observe(report(lost=200))
        estimates.append(fec.loss_estimate)
    assert estimates == sorted(estimates, reverse=True) and estimates[0] > 0.05  # slow decay
    assert estimates[-1] == pytest.approx(0.02)  # the lossy window left the pool


def test_a_thin_first_window_is_sized_with_a_wide_bound():
    thin, full = FecController(FecPolicy()), FecController(FecPolicy())
    thin.observe(report(lost=10, expected=100))  # 10 % of 100 datagrams
    full.observe(report(lost=1000, expected=10_000))
    assert thin.loss_estimate == full.loss_estimate == pytest.approx(0.10)
    # never counted on fewer than MIN_PACKETS (200) datagrams
    assert thin.design_loss == pytest.approx(0.10 + 2.5 * math.sqrt(0.1 * 0.9 / 200))
    assert thin.parity_for(64) > full.parity_for(64)
    thin.observe(report(lost=0, expected=0))  # nothing sent: no news
    assert thin.windows == 1


def test_the_first_block_that_saw_a_report_is_known():
    fec = FecController(FecPolicy(start_fixed=True))
    before = [fec.parity_for(20) for _ in range(5)]  # blocks 0..4: the fixed share
    fec.observe(report(lost=1000))
    assert fec.informed_from == 5
    assert fec.parity_for(20) > before[-1]  # block 5 got the parity chosen from the report


def test_loss_runs_drive_the_burst_estimate():
    fec = FecController(FecPolicy())
    fec.observe(report(lost=500, runs=500))
    independent = fec.parity_for(64)
    assert fec.burst_estimate == pytest.approx(1.0)
    fec.observe(report(lost=500, runs=125))  # same rate, runs of 4: pooled, 1000 lost in 625 runs
    assert fec.burst_estimate == pytest.approx(1.6)
    assert fec.parity_for(64) > independent
    bursty = FecController(FecPolicy())
    bursty.observe(report(lost=500, runs=125))
    assert bursty.burst_estimate == pytest.approx(4.0)


def test_blocks_larger_than_the_table_keep_its_share():
    fec = FecController(FecPolicy())
    fec.observe(report(lost=500))
    big = fec.parity_for(256)
    assert fec.parity_for(1024) == math.ceil(1024 * big / 256)


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match="fec mode"):
        FecPolicy(mode="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fec_target"):
        FecPolicy(target=0)
    with pytest.raises(ValueError, match="floor"):
        FecPolicy(floor_percent=60, ceiling_percent=50)
    with pytest.raises(ValueError, match="bitrate_max_kbps"):
        RatePolicy(min_kbps=5000, max_kbps=1000)


def test_random_loss_that_fec_absorbs_leaves_the_bitrate_alone():
    fec = FecController(FecPolicy())
    rate = RateController(RatePolicy(), start_kbps=8000)
    for _ in range(10):
        r = report(lost=1000)  # 10 %, independent
        fec.observe(r)
        assert rate.observe(r, fec.residual_loss) is None
    assert rate.target_kbps == 8000


def test_loss_beyond_the_fec_ceiling_steps_down_then_clean_windows_probe_back_up():
    fec = FecController(FecPolicy())
    rate = RateController(RatePolicy(min_kbps=1000), start_kbps=8000)
    r = report(lost=4000, runs=400)  # 40 % in runs of 10: no parity budget covers it
    fec.observe(r)
    assert fec.residual_loss > 10 * fec.policy.target
    # what got through (60 %) with a 10 % margin: one step to about what the link carries
    assert rate.observe(r, fec.residual_loss) == int(8000 * 0.6 * 0.9) and rate.last_reason == "loss"
    assert rate.observe(r, fec.residual_loss) is None  # the next window still carried the old rate
    for _ in range(20):
        rate.observe(r, fec.residual_loss)
    assert rate.target_kbps == 1000  # never below the minimum
    broke = rate.congested_at_kbps
    assert broke == 600  # what the link carried at the last cut: 1000 kbit/s sent, 60 % through
    ups = []
    for _ in range(60):
        got = rate.observe(report(lost=0), 0.0)
        if got is not None:
            ups.append(got)
    # 5 % of the ceiling (or 10 % of the target, when more) per clean window; 2 % near what the link
    # carried (not here: 1000 > 1.1 × 600)
    assert ups[:3] == [1400, 1800, 2200]
    assert rate.target_kbps == 8000  # never above the start rate (max 0 = start)


def test_probing_is_cautious_near_what_the_link_carried_when_it_congested():
    rate = RateController(RatePolicy(min_kbps=100), start_kbps=4000)
    assert rate.observe(report(lost=5000, runs=100), 0.0, sent_kbps=2000) == 900  # 2000 sent, half through
    assert rate.congested_at_kbps == 1000
    ups = [rate.observe(report(lost=0), 0.0) for _ in range(8)]
    # held two windows, then 2 % steps while within 90–110 % of the 1000 the link carried
    assert ups == [None, None, 918, 936, 954, 1154, 1354, 1554], ups  # brisk again 5 windows after the cut


def test_mild_loss_in_long_runs_is_a_queue_overflowing():
    rate = RateController(RatePolicy(), start_kbps=4000)
    assert rate.observe(report(lost=300, runs=300), 0.0) is None  # 3 % scattered: FEC's business
    assert rate.observe(report(lost=300, runs=60), 0.0) == 3200 and rate.last_reason == "burst"


def test_unrecoverable_frames_in_two_windows_in_a_row_are_congestion():
    rate = RateController(RatePolicy(), start_kbps=4000)
    assert rate.observe(report(lost=10, runs=2, unrec=1), 0.0) is None  # one window: could be chance
    assert rate.observe(report(lost=10, runs=2, unrec=2), 0.0) == 3200


def test_random_loss_beyond_what_fec_covers_does_not_lower_the_rate():
    rate = RateController(RatePolicy(), start_kbps=4000)
    for _ in range(5):  # 30 % scattered loss, frames lost every window: a lower rate would not help
        assert rate.observe(report(lost=3000, runs=2100, unrec=5), 0.5) is None


def test_frames_lost_under_the_start_share_are_not_congestion():
    from punktfunk_core.adaptive import AdaptiveControl

    applied: list[int] = []
    control = AdaptiveControl(FecPolicy(start_fixed=True), RatePolicy(), 4000, set_bitrate=applied.append)
    # 10 % loss as GameStream reports it (no run lengths). The first window ran on the fixed share
    # before anything was known; the second on parity sized for the link
    window = LossReport(window_s=0.5, packets_expected=10_000, packets_lost=1000, frames_unrecoverable=1)
    control.observe(window)
    control.observe(window)
    assert applied == [] and control.fec.loss_estimate > 0.05, "random loss: more parity, the same rate"
    control.observe(window)  # lost again with parity sized for the link: congestion
    assert len(applied) == 1 and control.rate.last_reason == "loss"


def test_a_congestion_cut_clears_the_loss_the_fec_was_sized_for():
    from punktfunk_core.adaptive import AdaptiveControl

    applied: list[int] = []
    control = AdaptiveControl(FecPolicy(), RatePolicy(), 4000, set_bitrate=applied.append)
    control.observe(report(lost=500, runs=500))  # 5 % scattered: FEC rises, the rate stays
    assert control.fec.loss_estimate == pytest.approx(0.05) and applied == []
    control.observe(report(lost=4000, runs=200))  # 40 % in runs of 20: our rate overflows a queue
    # 60 % got through; the parity dropping back to the floor relieves the wire a little more
    assert len(applied) == 1 and 4000 * 0.6 * 0.9 < applied[0] <= 4000 * 0.8
    assert control.fec.loss_estimate == 0.0 and control.fec.parity_for(64) == 4


def test_rising_rtt_steps_the_bitrate_down():
    rate = RateController(RatePolicy(), start_kbps=4000)
    assert rate.observe(report(lost=0, rtt_us=2_000), 0.0) is None
    assert rate.observe(report(lost=0, rtt_us=40_000), 0.0) == 3200 and rate.last_reason == "rtt"


def test_with_two_rtt_windows_a_sustained_rise_steps_the_bitrate_down_a_single_spike_does_not():
    rate = RateController(RatePolicy(rtt_windows=2), start_kbps=4000)
    assert rate.observe(report(lost=0, rtt_us=2_000), 0.0) is None
    # one window's RTT jumps (a loaded host's scheduler, not a queue on the path): the rate holds
    assert rate.observe(report(lost=0, rtt_us=40_000), 0.0) is None
    assert rate.observe(report(lost=0, rtt_us=3_000), 0.0) is None
    assert rate.observe(report(lost=0, rtt_us=40_000), 0.0) is None
    # two windows in a row: a queue is building
    assert rate.observe(report(lost=0, rtt_us=45_000), 0.0) == 3200 and rate.last_reason == "rtt"


def test_fixed_rate_control_never_moves():
    rate = RateController(RatePolicy(mode="fixed"), start_kbps=4000)
    assert rate.observe(report(lost=9000, unrec=50), 1.0) is None
    assert rate.target_kbps == 4000


def test_the_client_may_ask_for_less_and_probing_stops_there():
    rate = RateController(RatePolicy(min_kbps=500), start_kbps=4000)
    assert rate.client_asks(2000) == 2000
    for _ in range(10):
        rate.observe(report(lost=0), 0.0)
    assert rate.target_kbps == 2000
    assert rate.client_asks(100) == 500
    assert rate.client_asks(500) is None


def test_one_keyframe_per_burst():
    kc = KeyframeCoalescer(hold_s=0.5)
    burst = [kc.request(now=10.0 + i * 0.016) for i in range(20)]  # 20 lost frames in 0.32 s
    assert burst.count(True) == 1 and burst[0]
    assert kc.request(now=11.0)  # a later burst gets its own
    assert (kc.forced, kc.coalesced) == (2, 19)


def test_a_request_after_the_idr_could_have_arrived_gets_its_own():
    from punktfunk_core.adaptive import AdaptiveControl

    control = AdaptiveControl(FecPolicy(), RatePolicy(), 4000)
    assert control.keyframe(now=1.0) and not control.keyframe(now=1.05)  # in flight: same burst
    assert control.keyframe(now=1.15)  # the IDR had time to arrive: this is a new loss
    control.rtt_us = 200_000  # a long path: the IDR needs 1.5 round trips
    assert not control.keyframe(now=1.40) and control.keyframe(now=1.46)
