"""Failover that loses nothing (issue 11), with real components: three relay node processes and
Debian's redis-server on 127.0.0.1 (tests/cluster_nodes.py, tests/real_redis.py).

The host copies each session's stream to Redis behind the fan-out and acks the master; after a
kill -9 the next replica continues the stream from the copy: slaves resume (behind the copy, or
ahead of it), the master re-sends only what the copy had not got, nobody applies anything twice.
The master here numbers its messages by hand (``send(kind, body, seq=N)``) so that the server's
side is tested apart from relay.Client's own re-send window.
"""

from __future__ import annotations

import hashlib
import signal
import time

import msgpack
import pytest
import trio

import relay
from relay._statestore import StateStore
from cluster_nodes import ClusterNodes

from test_cluster import LEASE_TTL_S, client, connect_until_hello, hosts_of, metric

pytestmark = pytest.mark.slow

BUDGET_S = 60


@pytest.fixture
def cluster(start_cluster):
    return start_cluster(lease_ttl_s=LEASE_TTL_S)


class NumberingMaster:
    """A master that numbers what it sends and keeps it until acked (the protocol of docs/protocol.md 4b)."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.number = 0
        self.kept: list = []  # (number, kind, body bytes)
        self.acked = 0
        self.page: list = []
        self.resent = 0
        self.resent_bytes = 0

    async def send(self, kind: str, obj) -> None:
        self.number += 1
        body = msgpack.packb(obj)
        self.kept.append((self.number, kind, body))
        self.page = [obj] if kind == "snapshot" else self.page + [obj]
        await self.connection.send(kind, body, seq=self.number)

    def note(self, envelope) -> None:
        if envelope.kind == "ack":
            held = envelope.decode()["held"]
            self.acked = max(self.acked, held)
            self.kept = [k for k in self.kept if k[0] > held]

    async def drain_acks(self, until_held: int) -> None:
        while self.acked < until_held:
            self.note(await self.connection.receive())

    async def reconnect(self, connection, hello: dict) -> None:
        self.connection = connection
        held = hello["held"]
        self.kept = [k for k in self.kept if k[0] > held]
        assert not self.kept or self.kept[0][0] == held + 1, (held, self.kept[:1])
        for number, kind, body in self.kept:
            await connection.send(kind, body, seq=number)
            self.resent += 1
            self.resent_bytes += len(body)


class CountingSlave:
    """A slave that tracks what client.js tracks (seq, epoch, master_count) and its page."""

    def __init__(self, joined: dict) -> None:
        self.joined = joined
        self.connection = None
        self.page: list = []
        self.seq = None
        self.epoch = None
        self.count = None
        self.skip_until = 0
        self.skipped = 0
        self.seen: list = []
        self.hellos: list = []

    def resume(self) -> dict:
        if self.seq is None:
            return {}
        return {"after": self.seq, "epoch": self.epoch, "master_count": self.count}

    def apply(self, envelope) -> None:
        if envelope.kind == "hello":
            hello = envelope.decode()
            self.hellos.append(hello)
            self.epoch = hello["epoch"]
            resumed = hello["catchup"] == "resume"
            ahead = resumed and self.count is not None and self.count > hello["master_count"]
            self.skip_until = self.count if ahead else 0
            self.count = hello["master_count"]
            self.seq = hello["after"] if resumed else None
            return
        if envelope.kind == "resync":
            body = envelope.decode()
            self.count, self.seq, self.page, self.skip_until = body["master_count"], None, [], 0
            return
        if envelope.seq == 0:
            return
        assert self.seq is None or envelope.seq == self.seq + 1, (self.seq, envelope.kind, envelope.seq)
        self.seq = envelope.seq
        self.seen.append((self.epoch, envelope.seq))
        if envelope.sender == "master":
            self.count += 1
            if self.count <= self.skip_until:
                self.skipped += 1
                return
        if envelope.kind == "snapshot":
            self.page = [envelope.decode()]
        elif envelope.kind == "mutation":
            self.page.append(envelope.decode())

    async def read_until(self, page: list) -> None:
        while self.page != page:
            self.apply(await self.connection.receive())


async def start_session(cluster, host):
    created = await client(cluster, host).create_session()
    connection = await client(cluster, host).connect(created["session"], created["master_token"])
    hello = (await connection.receive()).decode()
    assert hello["held"] == 0
    return created, NumberingMaster(connection)


async def add_slave(cluster, host, session_id) -> CountingSlave:
    slave = CountingSlave(await client(cluster, host).join(session_id))
    slave.connection = await client(cluster, host).connect(session_id, slave.joined["slave_token"])
    slave.apply(await slave.connection.receive())
    return slave


async def fail_over(cluster, host, session_id, created, master, slaves):
    """kill -9 the host; the master and the slaves come back through the others."""
    cluster.kill(host)
    others = [name for name in cluster.names if name != host]
    connection, hello, _ = await connect_until_hello(cluster, others, session_id, created["master_token"])
    assert hello["role"] == "master"
    await master.reconnect(connection, hello)
    for slave in slaves:
        slave.connection, hello_body, _ = await connect_until_hello(
            cluster, others, session_id, slave.joined["slave_token"], **slave.resume())
        slave.hellos.append(hello_body)
        slave.apply(_Hello(hello_body))
    return hello, others


class _Hello:
    """connect_until_hello has read the hello already: hand it to a CountingSlave as an envelope."""

    kind, seq, sender = "hello", 0, ""

    def __init__(self, body) -> None:
        self.body = body

    def decode(self):
        return self.body


async def test_a_takeover_continues_the_stream_from_the_copy_and_the_master_re_sends_nothing(cluster):
    a, b, c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        session_id = created["session"]
        slaves = [await add_slave(cluster, a, session_id) for _ in range(2)]
        await master.send("snapshot", "v1 " + "x" * 5000)
        for n in range(20):
            await master.send("mutation", n)
        await master.drain_acks(master.number)  # everything is in the copy
        assert not master.kept
        for slave in slaves:
            await slave.read_until(master.page)
        assert metric(cluster, a, "relay_copy_writes_total") >= 1

        killed = time.monotonic()
        hello, others = await fail_over(cluster, a, session_id, created, master, slaves)
        assert hello["epoch"] == 2 and hello["held"] == master.number
        assert master.resent == 0
        for n in range(20, 25):
            await master.send("mutation", n)
        for slave in slaves:
            assert slave.hellos[-1]["catchup"] == "resume"
            await slave.read_until(master.page)
            assert len(set(slave.seen)) == len(slave.seen)
        host = hosts_of(cluster, session_id)[0]
        assert metric(cluster, host, "relay_takeovers_from_copy_total") == 1
        # A slave that joins now gets the page from the copy, not from the master.
        late = await add_slave(cluster, host, session_id)
        assert late.hellos[-1]["catchup"] == "full"
        await late.read_until(master.page)
        print(f"kill to a continued stream: {time.monotonic() - killed:.2f} s")


async def test_slaves_ahead_of_the_copy_leave_out_the_masters_re_sends(cluster, redis):
    a, b, c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        session_id = created["session"]
        slaves = [await add_slave(cluster, a, session_id) for _ in range(2)]
        await master.send("snapshot", "v1")
        await master.drain_acks(1)
        # Redis stops answering (SIGSTOP): the fan-out goes on, the copy and the acks stop.
        redis.process.send_signal(signal.SIGSTOP)
        try:
            for n in range(10):
                await master.send("mutation", n)
            for slave in slaves:
                await slave.read_until(master.page)
            assert master.acked == 1 and len(master.kept) == 10
            cluster.kill(a)  # dies with 10 messages its copy never got
        finally:
            redis.process.send_signal(signal.SIGCONT)
        others = [b, c]
        connection, hello, _ = await connect_until_hello(cluster, others, session_id, created["master_token"])
        assert hello["held"] == 1
        await master.reconnect(connection, hello)
        assert master.resent == 10
        for slave in slaves:
            slave.connection, body, _ = await connect_until_hello(
                cluster, others, session_id, slave.joined["slave_token"], **slave.resume())
            slave.apply(_Hello(body))
            assert body["catchup"] == "resume" and body["after"] < slave.seq + 1
        await master.send("mutation", "after")
        for slave in slaves:
            await slave.read_until(master.page)
            assert slave.skipped == 10  # the re-sends, received and left out


async def test_a_large_snapshot_goes_to_redis_in_chunks_and_comes_back_whole(cluster, redis):
    a, b, c = cluster.names
    page = hashlib.sha256(b"seed").hexdigest() * (5 * 1024 * 1024 // 64)  # 5 MiB
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        session_id = created["session"]
        await master.send("snapshot", page)
        await master.send("mutation", 1)
        await master.drain_acks(2)
        async with StateStore(cluster_name(cluster), port=redis.port) as store:
            meta, items = await store.load_copy(session_id)
        assert meta["seq"] == 2 and len(items) == 2
        assert msgpack.unpackb(items[0]) == ["snapshot", 1, page, "master"]
        cluster.kill(a)
        others = [b, c]
        connection, hello, _ = await connect_until_hello(cluster, others, session_id, created["master_token"])
        await master.reconnect(connection, hello)
        late = CountingSlave(await client(cluster, b).join(session_id))
        late.connection, body, _ = await connect_until_hello(cluster, others, session_id, late.joined["slave_token"])
        late.apply(_Hello(body))
        await late.read_until([page, 1])


async def test_a_copy_past_its_bound_is_given_up_and_the_takeover_starts_a_new_stream(start_cluster, redis):
    cluster = start_cluster(lease_ttl_s=LEASE_TTL_S, extra_args=["--copy-lag-bytes", "65536"])
    a, b, c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        session_id = created["session"]
        slave = await add_slave(cluster, a, session_id)
        await master.send("snapshot", "v1")
        await master.drain_acks(1)
        redis.process.send_signal(signal.SIGSTOP)
        try:
            for n in range(5):
                await master.send("mutation", "m" * 20_000)  # 100 KB behind: past the bound
            await slave.read_until(master.page)
            await trio.sleep(0.3)
        finally:
            redis.process.send_signal(signal.SIGCONT)
        await trio.sleep(0.5)
        assert metric(cluster, a, 'relay_copy_fallbacks_total{reason="bytes"}') == 1
        cluster.kill(a)
        others = [b, c]
        connection, hello, _ = await connect_until_hello(cluster, others, session_id, created["master_token"])
        assert hello["held"] == 0  # a new stream: the master cannot re-send from 1, it sends a snapshot
        master.connection = connection
        await connection.send("snapshot", msgpack.packb("v2"))
        master.page = ["v2"]
        slave.connection, body, _ = await connect_until_hello(cluster, others, session_id, slave.joined["slave_token"],
                                                              **slave.resume())
        slave.apply(_Hello(body))
        assert body["catchup"] == "resync"
        await slave.read_until(["v2"])


async def test_a_session_that_ends_leaves_no_copy_in_redis(cluster, redis):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        await master.send("snapshot", "x" * (600 * 1024))  # a blob too
        await master.drain_acks(1)
        async with StateStore(cluster_name(cluster), port=redis.port) as store:
            assert (await store.load_copy(created["session"]))[0] is not None
            await client(cluster, a).end_session(created["session"], created["master_token"])
            for _ in range(50):
                if not await store._client.keys(f"relay:*{created['session']}*"):
                    break
                await trio.sleep(0.05)
            assert not await store._client.keys(f"relay:*{created['session']}*")


def cluster_name(cluster: ClusterNodes) -> str:
    import tomllib

    return tomllib.loads(cluster.file.read_text())["cluster_name"]


async def test_while_redis_is_away_the_session_flows_acks_stop_and_the_copy_catches_up_after(cluster, redis):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        session_id = created["session"]
        slave = await add_slave(cluster, a, session_id)
        await master.send("snapshot", "v1")
        await master.drain_acks(1)
        redis.process.send_signal(signal.SIGSTOP)
        try:
            for n in range(30):  # 3 s without Redis, past the lease TTL: every node is cut off alike
                await master.send("mutation", n)
                await trio.sleep(0.1)
            await slave.read_until(master.page)  # the fan-out never waited
            assert master.acked == 1  # no ack while the copy cannot advance
        finally:
            redis.process.send_signal(signal.SIGCONT)
        await master.drain_acks(master.number)  # the copy caught up once Redis answered
        assert not master.kept
        async with StateStore(cluster_name(cluster), port=redis.port) as store:
            meta, items = await store.load_copy(session_id)
        envelopes = [msgpack.unpackb(item) for item in items]
        assert meta["held"] == master.number and envelopes[-1][1] == meta["seq"]
        assert envelopes[0][0] == "snapshot" and [e[1] for e in envelopes] == list(range(envelopes[0][1], meta["seq"] + 1))
        assert metric(cluster, a, "relay_copy_fallbacks_total") == 0


async def test_a_flood_of_tiny_messages_reaches_the_copy_in_bounded_scripts(cluster, redis):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        await master.send("snapshot", "v1")
        for n in range(12_000):  # more than one script call takes (COPY_SCRIPT_ITEMS)
            await master.send("mutation", n)
        await master.drain_acks(master.number)
        async with StateStore(cluster_name(cluster), port=redis.port) as store:
            meta, items = await store.load_copy(created["session"])
        seqs = [msgpack.unpackb(item)[1] for item in items]
        assert seqs == list(range(seqs[0], meta["seq"] + 1)) and len(items) == 12_001
        assert metric(cluster, a, "relay_copy_writes_total") >= 3


async def test_a_host_paused_past_its_lease_never_writes_the_copy_again(cluster, redis):
    a, b, c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master = await start_session(cluster, a)
        session_id = created["session"]
        await master.send("snapshot", "v1")
        await master.drain_acks(1)
        for n in range(50):  # some of these are likely still waiting for a's copier when it stops
            await master.send("mutation", f"old {n}")
        cluster.signal(a, signal.SIGSTOP)
        try:
            connection, hello, _ = await connect_until_hello(cluster, [b, c], session_id, created["master_token"])
            assert hello["epoch"] == 2
            await master.reconnect(connection, hello)  # what a's copy had not got, sent again
            await master.send("mutation", "fresh")
            await master.drain_acks(master.number)
        finally:
            cluster.signal(a, signal.SIGCONT)
        await trio.sleep(1.0)  # a runs again: whatever its copier still had is refused by the epoch
        async with StateStore(cluster_name(cluster), port=redis.port) as store:
            meta, items = await store.load_copy(session_id)
        envelopes = [msgpack.unpackb(item) for item in items]
        assert meta["writer"] == 2 and meta["held"] == master.number
        bodies = [e[2] for e in envelopes if e[0] in ("snapshot", "mutation")]
        assert bodies == master.page  # exactly the master's stream, once each, in order
        assert [e[1] for e in envelopes] == list(range(envelopes[0][1], meta["seq"] + 1))
