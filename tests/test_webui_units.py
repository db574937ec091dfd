"""Unit formatting of the console (µs/ms boundary, frame budget, axis)."""

from __future__ import annotations

import pytest

from punktfunk_webui import units


@pytest.mark.parametrize(("fn", "arg", "expected"), units.REFERENCE_CASES)
def test_reference_cases(fn: str, arg: float | None, expected: str) -> None:
    assert getattr(units, fn)(arg) == expected


def test_below_1000_us_is_whole_microseconds() -> None:
    assert units.format_us(450) == "450 µs"
    assert units.format_us(999.49) == "999 µs"


def test_boundary_is_decided_on_the_rounded_value() -> None:
    # 999.5 µs rounds to 1000 µs, which must read as ms, never "1000 µs"
    assert units.format_us(999.5) == "1.0 ms"
    assert "1000 µs" not in {units.format_us(x / 10) for x in range(9990, 10010)}


def test_ms_have_one_decimal() -> None:
    assert units.format_us(8333.3) == "8.3 ms"
    assert units.format_us(16_666.7) == "16.7 ms"
    assert units.format_us(1_234_567) == "1234.6 ms"


def test_negative_and_missing_values() -> None:
    assert units.format_us(-450) == "-450 µs"
    assert units.format_us(None) == units.NO_VALUE
    assert units.format_us(float("nan")) == units.NO_VALUE


@pytest.mark.parametrize(("fps", "budget"), [(60, 16_666.67), (120, 8_333.33), (30, 33_333.33), (144, 6_944.44)])
def test_frame_budget_is_one_second_over_fps(fps: int, budget: float) -> None:
    assert units.frame_budget_us(fps) == pytest.approx(budget, abs=0.01)
    assert units.format_us(units.frame_budget_us(60)) == "16.7 ms"


@pytest.mark.parametrize("fps", [0, -1, None, float("inf")])
def test_no_budget_without_a_rate(fps: float | None) -> None:
    assert units.frame_budget_us(fps) is None


def test_latency_axis_reaches_at_least_1_2_budgets() -> None:
    budget = units.frame_budget_us(60)
    assert budget is not None
    assert units.latency_axis_max_us(budget, 500) == pytest.approx(1.2 * budget)
    # data above the budget lifts the axis above the data
    assert units.latency_axis_max_us(budget, 30_000) > 30_000
    assert units.latency_axis_max_us(None, 0) == 1000.0


def test_durations_are_rounded_never_cut() -> None:
    assert units.format_duration_ms(0) == "0.0 s"
    assert units.format_duration_ms(10_800) == "10.8 s"  # was "10 s"
    assert units.format_duration_ms(59_949) == "59.9 s"
    assert units.format_duration_ms(59_999) == "1 min 00 s"
    assert units.format_duration_ms(60_000) == "1 min 00 s"
    assert units.format_duration_ms(3_599_499) == "59 min 59 s"
    assert units.format_duration_ms(3_600_000) == "1 h 00 min"
