"""relay._ratelimit: who the client is behind trusted proxies, and a bounded table of buckets."""

import pytest

from relay._ratelimit import ClientLimiter, TrustedProxies


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards():
    proxies = TrustedProxies([])
    assert proxies.client_of("203.0.113.7", ["10.0.0.1"]) == "203.0.113.7"


def test_a_trusted_proxy_names_the_right_most_untrusted_address():
    proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    assert proxies.client_of("10.1.2.3", ["198.51.100.9"]) == "198.51.100.9"
    # the left part is the client's own claim: never believed past the first untrusted hop
    assert proxies.client_of("10.1.2.3", ["6.6.6.6, 198.51.100.9"]) == "198.51.100.9"
    assert proxies.client_of("10.1.2.3", ["6.6.6.6", "198.51.100.9, 192.0.2.1"]) == "198.51.100.9"
    assert proxies.client_of("10.1.2.3", []) == "10.1.2.3"
    assert proxies.client_of("10.1.2.3", ["garbage, 10.9.9.9"]) == "10.9.9.9"
    assert proxies.client_of("203.0.113.7", ["198.51.100.9"]) == "203.0.113.7"  # not a trusted peer


def test_bad_proxy_entries_are_refused():
    with pytest.raises(ValueError):
        TrustedProxies(["not-an-address"])


def test_a_client_gets_its_burst_then_the_rate_others_are_apart():
    limiter = ClientLimiter(3, 1.0)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [None, None, None]
    assert limiter.allow("a", 0.0) == 1.0
    assert limiter.allow("b", 0.0) is None
    assert limiter.allow("a", 1.0) is None


def test_the_table_stays_bounded_under_many_forged_addresses():
    limiter = ClientLimiter(2, 1.0, max_clients=1000)
    for i in range(100_000):
        limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert len(limiter) == 1000
    # the busiest recent client is still tracked (LRU keeps what is used)
    for _ in range(2):
        limiter.allow("198.51.100.1", 1.0)
    assert limiter.allow("198.51.100.1", 1.0) is not None
