"""relay._buckets.TokenBucket: a burst, then a rate."""

from relay._buckets import TokenBucket


def test_a_burst_then_the_rate():
    bucket = TokenBucket(3, 2.0)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after_s() == 0.5
    assert not bucket.take(10.4)  # 0.8 of a token
    assert bucket.take(10.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_time_going_backwards_refills_nothing():
    bucket = TokenBucket(1, 1.0)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert not bucket.take(5.5)
    assert bucket.take(6.0)


def test_no_rate_means_the_burst_only():
    bucket = TokenBucket(2, 0.0)
    assert [bucket.take(t) for t in (0.0, 1.0, 1e9)] == [True, True, False]
    assert bucket.retry_after_s() == float("inf")
