"""Latency percentiles and the quantiles kept for CDF plots."""

from __future__ import annotations

# Quantiles kept for CDF plots: every percent, then the tail.
CDF_QUANTILES = [i / 100 for i in range(101)] + [0.995, 0.999, 0.9995, 0.9999]


def percentile(sorted_values, fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def quantiles(sorted_values, points=CDF_QUANTILES) -> list:
    return [percentile(sorted_values, q) for q in points] if sorted_values else []


def latency_summary(latencies: list, prefix: str = "latency") -> dict:
    latencies = sorted(latencies)
    return {
        f"{prefix}_p50_s": percentile(latencies, 0.50),
        f"{prefix}_p99_s": percentile(latencies, 0.99),
        f"{prefix}_p999_s": percentile(latencies, 0.999),
        f"{prefix}_max_s": latencies[-1] if latencies else None,
        f"{prefix}_samples": len(latencies),
        f"{prefix}_quantiles": quantiles(latencies),
    }
