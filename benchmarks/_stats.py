"""Ratios over interleaved rounds, with their spread, and verdicts that say when a difference is noise.

A benchmark compares two servers measured in turn, round after round (the order rotating), so round
``i`` of one and round ``i`` of the other ran within seconds of each other on the same machine.  The
ratio of the pair is taken per round; its median is the figure and the range of the per-round
ratios (min..max) is its spread.  On a shared 2-core VM one round's ratio can be 1.3-1.7x off the
next, so a verdict is only PASS or MISS when the whole spread is on one side of the target, and
"within spread" otherwise: then the run cannot tell, and the verdict cannot flip between runs
either, short of the spread itself moving.
"""

from __future__ import annotations

import statistics
from typing import Optional, Sequence

#: Fewest rounds a ratio with a verdict is measured over (more are allowed, fewer are raised to it).
MIN_RATIO_ROUNDS = 5
PASS, MISS, WITHIN_SPREAD, NO_DATA = "PASS", "MISS", "within spread", "no data"


def paired_ratios(ours: Sequence[Optional[float]], theirs: Sequence[Optional[float]], *,
                  higher_is_better: bool = True) -> list:
    """How many times better ``ours`` is than ``theirs``, round by round (ours/theirs when more is
    better, theirs/ours otherwise); rounds where either side failed (None, or not positive) are left out."""
    ratios = []
    for a, b in zip(ours, theirs):
        if a is None or b is None or a <= 0 or b <= 0:
            continue
        ratios.append(a / b if higher_is_better else b / a)
    return ratios


def ratio_stats(ratios: Sequence[float]) -> Optional[dict]:
    """Median and spread (min..max, and the max/min factor) of per-round ratios; None without any."""
    if not ratios:
        return None
    low, high = min(ratios), max(ratios)
    return {"median": statistics.median(ratios), "min": low, "max": high, "rounds": len(ratios),
            "spread": high / low, "ratios": list(ratios)}


def verdict(stats: Optional[dict], target: float) -> str:
    """PASS when every round's ratio reaches ``target``, MISS when none does, else "within spread"."""
    if not stats:
        return NO_DATA
    if stats["min"] >= target:
        return PASS
    if stats["max"] < target:
        return MISS
    return WITHIN_SPREAD


def format_ratio(stats: Optional[dict], digits: int = 2) -> str:
    """``1.02x (0.91..1.10, 5 rounds)``, or ``-`` without data."""
    if not stats:
        return "-"
    return (f"{stats['median']:.{digits}f}x ({stats['min']:.{digits}f}..{stats['max']:.{digits}f}, "
            f"{stats['rounds']} round{'s' if stats['rounds'] != 1 else ''})")


def compare_ratios(now: Optional[dict], before: Optional[dict]) -> Optional[dict]:
    """``now`` against ``before`` (two ratio_stats of separate runs): the factor between the medians,
    and its bounds from the two spreads (worst and best pairing); "within spread" when they include 1."""
    if not now or not before:
        return None
    factor = {"median": now["median"] / before["median"], "min": now["min"] / before["max"],
              "max": now["max"] / before["min"], "rounds": min(now["rounds"], before["rounds"])}
    factor["spread"] = factor["max"] / factor["min"]
    factor["within_spread"] = factor["min"] <= 1.0 <= factor["max"]
    return factor
