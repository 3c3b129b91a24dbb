"""relay/_statestore.py against a real redis-server: leases, the epoch compare-and-set, fenced writes
(a stale epoch never writes again), and StoreUnavailable when Redis is gone."""

from __future__ import annotations

import pytest
import trio

from real_redis import RedisServer
from relay._statestore import WRITE_LOST, WRITE_OK, WRITE_RECREATED, REDIS_CALL_TIMEOUT_S, StateStore, StoreUnavailable


@pytest.fixture
def redis(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


def store_for(redis) -> StateStore:
    return StateStore("unit", host="127.0.0.1", port=redis.port)


async def test_a_lease_is_renewed_by_its_instance_only_and_lapses_by_itself(redis):
    async with store_for(redis) as store:
        assert await store.renew_lease("n1", {"instance": "a", "name": "n1"}, 0.3) == 2  # new
        assert await store.renew_lease("n1", {"instance": "a", "name": "n1"}, 0.3) == 1  # renewed
        assert await store.renew_lease("n1", {"instance": "b", "name": "n1"}, 0.3) == 0  # another process
        assert set(await store.leases(["n1", "n2"])) == {"n1"}
        await trio.sleep(0.5)
        assert await store.leases(["n1", "n2"]) == {}
        assert await store.renew_lease("n1", {"instance": "b", "name": "n1"}, 5) == 2
        await store.drop_lease("n1", "a")  # not ours: kept
        assert set(await store.leases(["n1"])) == {"n1"}
        await store.drop_lease("n1", "b")
        assert await store.leases(["n1"]) == {}


async def test_a_takeover_raises_the_epoch_once_and_fences_the_old_host(redis):
    async with store_for(redis) as store:
        assert await store.create_session("s", "n1", {"chat": False}, 30)
        assert not await store.create_session("s", "n2", {"chat": True}, 30)  # an ID is created once
        facts = await store.session("s")
        assert (facts.host, facts.epoch, facts.record) == ("n1", 1, {"chat": False})
        first, second = await store.take_over("s", 1, "n2"), await store.take_over("s", 1, "n3")
        assert first.taken and first.epoch == 2
        assert not second.taken and (second.host, second.epoch) == ("n2", 2)  # the loser learns the winner
        # The old host's writes are refused inside Redis, whatever they carry; the new host's go in.
        assert await store.write_sessions("n1", [("s", 1, {"stale": True}), ("s", 1, None)], 30) == [WRITE_LOST] * 2
        assert await store.write_sessions("n2", [("s", 2, {"fresh": True})], 30) == [WRITE_OK]
        assert (await store.session("s")).record == {"fresh": True}
        assert not await store.end_session("s", "n1", 1)
        assert await store.end_session("s", "n2", 2)
        assert await store.session("s") is None


async def test_a_record_lost_with_redis_is_written_again_by_its_host(redis):
    async with store_for(redis) as store:
        assert await store.write_sessions("n1", [("s", 3, {"a": 1})], 30) == [WRITE_RECREATED]
        assert (await store.session("s")).epoch == 3
        assert await store.write_sessions("n1", [("gone", 3, None)], 30) == [WRITE_LOST]  # a refresh creates nothing


async def test_redis_gone_is_store_unavailable_within_the_call_timeout(redis):
    async with store_for(redis) as store:
        await store.ping()
        redis.kill()
        for call in (store.ping, lambda: store.leases(["n1"]), lambda: store.session("s"),
                     lambda: store.write_sessions("n1", [("s", 1, {})], 30)):
            start = trio.current_time()
            with pytest.raises(StoreUnavailable):
                await call()
            assert trio.current_time() - start <= REDIS_CALL_TIMEOUT_S + 0.5
        redis.start()
        await store.ping()  # and it reconnects by itself
