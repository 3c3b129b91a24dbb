"""relay.Client's side of failover that loses nothing (docs/protocol.md 4b) in a real cluster: three
relay node processes and Debian's redis-server on 127.0.0.1 (tests/cluster_nodes.py).

A master that connects with a ``ResendWindow`` forgets what the copy acked, re-sends by itself after
a kill -9 of its host, and slaves that reconnect with ``resume=`` leave out what they already had:
each slave's page (built from what ``receive`` returns) is exactly the master's, nothing twice.
(tests/integration/test_failover_copy.py tests the server's side with a hand-numbering master.)
"""

from __future__ import annotations

import signal

import msgpack
import pytest
import trio

from relay import ResendWindow
from test_cluster import LEASE_TTL_S, client, connect_until_hello

pytestmark = pytest.mark.slow

BUDGET_S = 60


@pytest.fixture
def cluster(start_cluster):
    return start_cluster(lease_ttl_s=LEASE_TTL_S)


class Page:
    """A slave and its page, from what its connection returns (snapshot replaces, mutation appends)."""

    def __init__(self, joined: dict, connection) -> None:
        self.joined = joined
        self.connection = connection
        self.page: list = []
        self.seqs: list = []

    async def read_until(self, page: list) -> None:
        while self.page != page:
            envelope = await self.connection.receive()
            if envelope.seq == 0 or envelope.sender != "master":
                continue
            self.seqs.append((self.connection.epoch, envelope.seq))
            body = envelope.decode()
            self.page = [body] if envelope.kind == "snapshot" else self.page + [body]


class Master:
    def __init__(self, connection) -> None:
        self.connection = connection
        self.page: list = []

    async def send(self, kind: str, obj) -> None:
        self.page = [obj] if kind == "snapshot" else self.page + [obj]
        await self.connection.send(kind, msgpack.packb(obj))

    async def drain_acks(self) -> None:
        """Read until the window has nothing left (every message acked by the copy)."""
        while self.connection.window.kept:
            await self.connection.receive()


async def start(cluster, host, slaves: int):
    created = await client(cluster, host).create_session()
    session_id = created["session"]
    master = Master(await client(cluster, host).connect(session_id, created["master_token"], window=ResendWindow()))
    assert master.connection.hello["held"] == 0 and master.connection.resumed is False
    pages = []
    for _ in range(slaves):
        joined = await client(cluster, host).join(session_id)
        pages.append(Page(joined, await client(cluster, host).connect(session_id, joined["slave_token"])))
    return created, master, pages


async def fail_over(cluster, host, created, master, pages) -> list:
    cluster.kill(host)
    others = [name for name in cluster.names if name != host]
    session_id = created["session"]
    master.connection, hello, _ = await connect_until_hello(cluster, others, session_id, created["master_token"],
                                                            resume=master.connection)
    assert hello["role"] == "master"
    for page in pages:
        page.connection, _hello, _ = await connect_until_hello(cluster, others, session_id,
                                                               page.joined["slave_token"], resume=page.connection)
    return others


async def test_acked_messages_are_forgotten_and_a_takeover_needs_no_re_send(cluster):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master, pages = await start(cluster, a, slaves=2)
        await master.send("snapshot", "v1")
        for n in range(20):
            await master.send("mutation", n)
        await master.drain_acks()
        for page in pages:
            await page.read_until(master.page)
        await fail_over(cluster, a, created, master, pages)
        assert master.connection.resumed is True and master.connection.hello["held"] == 21
        for n in range(20, 25):
            await master.send("mutation", n)
        for page in pages:
            await page.read_until(master.page)
            assert page.connection.hello["catchup"] == "resume"
            assert len(set(page.seqs)) == len(page.seqs)


async def test_the_window_re_sends_what_the_copy_missed_and_slaves_leave_out_what_they_had(cluster, redis):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master, pages = await start(cluster, a, slaves=2)
        await master.send("snapshot", "v1")
        await master.drain_acks()
        redis.process.send_signal(signal.SIGSTOP)  # the copy and its acks stop; the fan-out goes on
        try:
            for n in range(10):
                await master.send("mutation", n)
            for page in pages:
                await page.read_until(master.page)
            assert [m.seq for m in master.connection.window.kept] == list(range(2, 12))
            cluster.kill(a)  # dies with 10 messages its copy never got
        finally:
            redis.process.send_signal(signal.SIGCONT)
        await fail_over(cluster, a, created, master, pages)
        assert master.connection.resumed is True and master.connection.hello["held"] == 1
        await master.send("mutation", "after")
        for page in pages:
            hello = page.connection.hello
            assert hello["catchup"] == "resume" and hello["master_count"] == 1
            await page.read_until(master.page)
            assert page.connection.left_out == 10  # the re-sends: received, counted, not applied
            assert page.page == master.page
