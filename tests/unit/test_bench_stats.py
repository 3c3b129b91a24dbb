"""benchmarks/_stats.py: per-round ratios, their spread, and verdicts that admit noise."""

from __future__ import annotations

import pytest

from benchmarks._stats import (MISS, NO_DATA, PASS, WITHIN_SPREAD, compare_ratios, format_ratio, paired_ratios,
                               ratio_stats, verdict)


def test_ratios_are_paired_by_round_and_failed_rounds_are_left_out():
    assert paired_ratios([2.0, 3.0, None, 4.0], [1.0, 2.0, 5.0, 0.0]) == [2.0, 1.5]
    # Latency, memory: less is better, so the ratio is theirs over ours.
    assert paired_ratios([1.0, 2.0], [2.0, 3.0], higher_is_better=False) == [2.0, 1.5]


def test_stats_give_the_median_and_the_range():
    stats = ratio_stats([1.2, 0.9, 1.0, 1.5, 1.1])
    assert stats["median"] == 1.1
    assert (stats["min"], stats["max"], stats["rounds"]) == (0.9, 1.5, 5)
    assert stats["spread"] == pytest.approx(1.5 / 0.9)
    assert ratio_stats([]) is None


@pytest.mark.parametrize("ratios, target, expected", [
    ([1.05, 1.2, 1.1], 1.0, PASS),           # every round at or above the target
    ([1.0, 1.3], 1.0, PASS),                 # exactly the target counts
    ([0.6, 0.8, 0.7], 1.0, MISS),            # every round below
    ([0.67, 0.99, 1.1], 1.0, WITHIN_SPREAD),  # the 0.67x-vs-0.99x flip of issue 8: the run cannot tell
    ([2.5, 3.4], 3.0, WITHIN_SPREAD),
])
def test_a_verdict_is_only_given_when_the_whole_spread_is_on_one_side(ratios, target, expected):
    assert verdict(ratio_stats(ratios), target) == expected


def test_no_rounds_no_verdict():
    assert verdict(None, 1.0) == NO_DATA
    assert format_ratio(None) == "-"


def test_format_shows_the_median_with_its_spread():
    assert format_ratio(ratio_stats([0.9, 1.0, 1.25])) == "1.00x (0.90..1.25, 3 rounds)"
    assert format_ratio(ratio_stats([2.0])) == "2.00x (2.00..2.00, 1 round)"


def test_comparing_two_runs_bounds_the_factor_by_both_spreads():
    now, before = ratio_stats([0.9, 1.0, 1.1]), ratio_stats([0.95, 1.0, 1.2])
    factor = compare_ratios(now, before)
    assert factor["median"] == pytest.approx(1.0)
    assert factor["min"] == pytest.approx(0.9 / 1.2) and factor["max"] == pytest.approx(1.1 / 0.95)
    assert factor["within_spread"]
    slower = compare_ratios(ratio_stats([0.5, 0.55]), ratio_stats([1.0, 1.1]))
    assert not slower["within_spread"] and slower["max"] < 1.0
    assert compare_ratios(None, before) is None
