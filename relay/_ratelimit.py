"""Per-client rate limits for the calls anyone can make (create a session, join one), sans-IO.

A client is its IP address: the TCP peer's, or, when the peer is a configured trusted proxy (the
load balancer), the right-most address of ``X-Forwarded-For`` that is not a trusted proxy itself
(each proxy appends what it saw, so everything left of that is the client's own claim and is never
trusted).  Memory is bounded: at most ``max_clients`` buckets, the least recently used evicted first.
"""

from __future__ import annotations

import collections
import ipaddress
from typing import Iterable, Optional

from relay._buckets import TokenBucket

__all__ = ["ClientLimiter", "TrustedProxies", "MAX_TRACKED_CLIENTS"]

MAX_TRACKED_CLIENTS = 100_000  # about 150 bytes each: 15 MB at most


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` the node believes (IP addresses or CIDR networks)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_of(self, peer_ip: Optional[str], forwarded_for: Iterable[str]) -> Optional[str]:
        """The client address of a request from ``peer_ip`` with these X-Forwarded-For header values."""
        if peer_ip is None or not self.networks or peer_ip not in self:
            return peer_ip
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        client = peer_ip
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage from the left: what we have is the last address a proxy vouched for
            client = hop
            if hop not in self:
                break
        return client


class ClientLimiter:
    """A token bucket per client address, bounded in number (LRU)."""

    def __init__(self, burst: float, rate_per_s: float, *, max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self.burst = burst
        self.rate_per_s = rate_per_s
        self.max_clients = max_clients
        self._buckets: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: Optional[str], now: float) -> Optional[float]:
        """None when ``client`` may go on now, else the seconds it should wait (Retry-After)."""
        key = client or "-"
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.burst, self.rate_per_s)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return None
        return max(1.0, bucket.retry_after_s())
