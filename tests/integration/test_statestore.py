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


async def test_the_copy_is_fenced_replaced_at_a_reset_and_dropped_with_its_blobs(redis):
    from relay._statestore import BLOB_MARKER, COPY_NO_RECORD

    async with store_for(redis) as store:
        assert await store.append_copies("n1", [("s", 1, True, {"seq": 1}, [b"x"])], 30) == [COPY_NO_RECORD]
        assert await store.create_session("s", "n1", {"chat": False}, 30)
        blob = store.blob_key("s", 1, 2)
        await store.write_blob(blob, [b"head", b"b" * (3 * 1024 * 1024 + 5), b"tail"], 30)
        marker = BLOB_MARKER + blob.encode()
        assert await store.append_copies("n1", [("s", 1, True, {"seq": 2}, [b"one", marker])], 30) == [WRITE_OK]
        meta, items = await store.load_copy("s")
        assert meta == {"seq": 2} and items[0] == b"one"
        assert bytes(items[1]) == b"head" + b"b" * (3 * 1024 * 1024 + 5) + b"tail"
        assert await store.append_copies("n1", [("s", 1, False, {"seq": 3}, [b"three"])], 30) == [WRITE_OK]
        assert [bytes(i) for i in (await store.load_copy("s"))[1]][::2] == [b"one", b"three"]
        # a reset replaces the list and deletes the blobs it no longer names
        assert await store.append_copies("n1", [("s", 1, True, {"seq": 4}, [b"four"])], 30) == [WRITE_OK]
        assert (await store.load_copy("s"))[1] == [b"four"]
        assert not await store._client.exists([blob])
        # another epoch's host may not write it, nor drop it
        claim = await store.take_over("s", 1, "n2")
        assert await store.append_copies("n1", [("s", 1, False, {"seq": 5}, [b"stale"])], 30) == [WRITE_LOST]
        assert not await store.drop_copy("s", "n1", 1)
        assert await store.drop_copy("s", "n2", claim.epoch)
        assert await store.load_copy("s") == (None, [])
        assert (await store.session("s")).host == "n2"  # the record stays


async def test_a_large_blob_goes_to_redis_a_chunk_at_a_time(redis):
    import tracemalloc

    message = bytes(10 * 1024 * 1024)
    async with store_for(redis) as store:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            await store.write_blob(store.blob_key("s", 1, 1), [message], 30)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, peak  # never the 10 MiB again: a chunk (and its frame) at a time
        assert await store._client.strlen(store.blob_key("s", 1, 1)) == len(message)
