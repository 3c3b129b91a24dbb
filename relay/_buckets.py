"""A token bucket: how often something may happen, with a burst (refusals, reconnects, requests).

Sans-IO: the caller passes the time (``trio.current_time()`` or a test's clock).
"""

from __future__ import annotations

from typing import Optional

__all__ = ["TokenBucket"]


class TokenBucket:
    """``burst`` events at once, then ``rate_per_s`` in the long run."""

    __slots__ = ("burst", "rate_per_s", "tokens", "updated_at")

    def __init__(self, burst: float, rate_per_s: float) -> None:
        self.burst = float(burst)
        self.rate_per_s = float(rate_per_s)
        self.tokens = float(burst)
        self.updated_at: Optional[float] = None

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilled for the time since the last call)."""
        if self.updated_at is not None and now > self.updated_at:
            self.tokens = min(self.burst, self.tokens + (now - self.updated_at) * self.rate_per_s)
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def retry_after_s(self) -> float:
        """Seconds until the next token (0 when one is there)."""
        missing = 1.0 - self.tokens
        return max(0.0, missing / self.rate_per_s) if self.rate_per_s > 0 else float("inf")
