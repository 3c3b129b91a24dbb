"""The cluster (SPEC 5) with real components: three relay node processes and Debian's redis-server,
on 127.0.0.1 ports, started and stopped by the tests (tests/cluster_nodes.py, tests/real_redis.py).

Routing (the cookie of the host, forwarding from any node), failover after kill -9 (the next replica
takes over with a new epoch; no slave sees a duplicate or a reorder after its resync), a restarted
node (still one host per session), a host paused past its lease (it serves nothing stale), Redis
restarted under load (running sessions never stop), and the refusals at start.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import msgpack
import pytest
import trio

import relay
from relay._accel import build_envelope, peek_envelope
from cluster_nodes import ClusterNodes, write_cluster_file

pytestmark = pytest.mark.slow

LEASE_TTL_S = 2.0
FAILOVER_BUDGET_S = 15.0  # kill -9 to a hello from the new host: lease TTL + reconnect retries, bounded


@pytest.fixture
def cluster(start_cluster):
    return start_cluster(lease_ttl_s=LEASE_TTL_S)


def cookie_of(headers) -> str:
    values = [value for name, value in headers if name == "set-cookie" and value.startswith("gcbSessionServer=")]
    assert values, f"no gcbSessionServer cookie in {headers}"
    assert len(set(values)) == 1, values
    return values[0].split(";")[0].split("=", 1)[1]


def client(cluster: ClusterNodes, name: str) -> relay.Client:
    return relay.Client("127.0.0.1", cluster.public(name))


async def connect_until_hello(cluster, names, session_id, token, *, budget_s=FAILOVER_BUDGET_S, **resume):
    """Reconnect the way a client does after its host died: through any node, retrying on 503."""
    statuses = []
    with trio.fail_after(budget_s):
        attempt = 0
        while True:
            name = names[attempt % len(names)]
            attempt += 1
            try:
                connection = await client(cluster, name).connect(session_id, token, **resume)
                envelope = await connection.receive()
                assert envelope.kind == "hello", envelope
                return connection, envelope.decode(), statuses
            except relay.HTTPStatusError as exc:
                statuses.append(exc.status)
                assert exc.status == 503, exc  # "not yet": never 404, 403 or 500 while a session moves
                assert any(name == "retry-after" for name, _ in exc.headers), exc.headers
            except relay.ConnectionClosed as exc:
                statuses.append(exc.code)
            await trio.sleep(0.2)


async def receive_until(connection, kind: str, limit: int = 100) -> list:
    got = []
    for _ in range(limit):
        envelope = await connection.receive()
        got.append(envelope)
        if envelope.kind == kind:
            return got
    raise AssertionError(f"no {kind} in {[e.kind for e in got]}")


def metric(cluster: ClusterNodes, name: str, sample: str) -> float:
    """One sample of a node's private /metrics (0 when absent)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", cluster.private(name), timeout=2)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def session_with_clients(nodes: ClusterNodes, host: str, *, join_via: str | None = None):
    """A session created on ``host`` with one slave (joined through ``join_via``), master and slave
    connected to the host, past their hellos: (created, joined, master, slave)."""
    created = await client(nodes, host).create_session()
    joined = await client(nodes, join_via or host).join(created["session"])
    master = await client(nodes, host).connect(created["session"], created["master_token"])
    assert (await master.receive()).kind == "hello"
    slave = await client(nodes, host).connect(created["session"], joined["slave_token"])
    assert (await slave.receive()).kind == "hello"
    return created, joined, master, slave


async def collect_mutations(slave, into: list) -> None:
    """Append the body of every mutation ``slave`` receives to ``into``, until cancelled."""
    while True:
        envelope = await slave.receive()
        if envelope.kind == "mutation":
            into.append(envelope.decode())


def hosts_of(cluster: ClusterNodes, session_id: str) -> list:
    return [name for name in cluster.processes if session_id in (cluster.view(name) or {}).get("epochs", {})]


async def test_the_seeds_procedure_create_and_join_get_the_hosts_cookie_from_any_node(cluster):
    a, b, c = cluster.names
    with trio.fail_after(20):
        creator = client(cluster, a)
        created = await creator.create_session()
        assert created["node"] == a and cookie_of(creator.last_headers) == a  # a node mints IDs it owns
        for name in (b, c):  # a fresh client, no cookie, joins through another node
            joiner = client(cluster, name)
            joined = await joiner.join(created["session"], agent=f"agent-{name}")
            assert joined["node"] == a
            assert cookie_of(joiner.last_headers) == a
        master = await creator.connect(created["session"], created["master_token"])
        assert (await master.receive()).kind == "hello"
        slave = await client(cluster, c).connect(created["session"], joined["slave_token"])  # forwarded to a
        hello = (await slave.receive()).decode()
        assert hello["epoch"] == 1 and hello["role"] == "slave"
        await master.send("snapshot", msgpack.packb("<html>page</html>"))
        got = await receive_until(slave, "snapshot")
        assert got[-1].decode() == "<html>page</html>" and got[-1].sender == "master"
        await slave.send("pointer", msgpack.packb({"x": 1, "y": 2}))
        pointer = await receive_until(master, "pointer")
        assert pointer[-1].sender == joined["slave"]
        views = {name: cluster.view(name) for name in cluster.names}
        assert hosts_of(cluster, created["session"]) == [a]
        assert {tuple(v["live"]) for v in views.values()} == {tuple(sorted(cluster.names))}
        assert len({v["ring_version"] for v in views.values()}) == 1


async def test_a_forwarded_websocket_carries_the_hosts_cookie_and_long_poll_is_forwarded_too(cluster):
    a, b, c = cluster.names
    with trio.fail_after(20):
        created = await client(cluster, a).create_session()
        joined = await client(cluster, a).join(created["session"])
        # A WebSocket through b with a's cookie lost: the 101 comes from a, with a's cookie.
        other = relay.Client("127.0.0.1", cluster.public(b), cookie=f"gcbSessionServer={b}")
        slave = await other.connect(created["session"], joined["slave_token"])
        assert cookie_of(slave.response_headers) == a
        assert (await slave.receive()).kind == "hello"
        # Long-poll through c: the GET is answered by a (its hello), with a's cookie.
        poller = client(cluster, c)
        status, headers, body = await poller.request(
            "GET", f"/cobrowse/poll/{created['session']}?token={created['master_token']}")
        assert status == 200, body
        assert cookie_of(headers) == a
        kind, _seq, offset, end = peek_envelope(body)
        assert kind == "hello"
        # The master's envelope posted through c reaches the slave on b's forwarded WebSocket.
        post = build_envelope("mutation", 0, msgpack.packb("m1"))
        status, headers, body = await poller.request(
            "POST", f"/cobrowse/poll/{created['session']}?token={created['master_token']}", post)
        assert status in (200, 204), body
        got = await receive_until(slave, "mutation")
        assert got[-1].decode() == "m1"
        forwarded = [cluster.view(name) for name in (b, c)]
        assert all(view["sessions_hosted"] == 0 for view in forwarded)
        assert metric(cluster, b, 'relay_forwarded_requests_total{kind="websocket"}') == 1
        assert metric(cluster, c, 'relay_forwarded_requests_total{kind="http"}') == 2
        assert metric(cluster, c, 'relay_forwarded_bytes_total{direction="to_host"}') > len(post)
        assert metric(cluster, a, 'relay_redis_calls_total{operation="renew_lease"}') >= 1


async def test_one_agent_holds_sessions_hosted_by_two_nodes(cluster):
    a, b, c = cluster.names
    with trio.fail_after(20):
        first = await client(cluster, a).create_session()
        second = await client(cluster, b).create_session()
        assert (first["node"], second["node"]) == (a, b)
        agent = relay.Client("127.0.0.1", cluster.public(c), cookie=f"gcbSessionServer={a}")  # one cookie jar
        slaves = []
        for created in (first, second):
            joined = await agent.join(created["session"], agent="agent-7")
            slave = await agent.connect(created["session"], joined["slave_token"])
            assert (await slave.receive()).kind == "hello"
            master = await client(cluster, created["node"]).connect(created["session"], created["master_token"])
            assert (await master.receive()).kind == "hello"
            slaves.append((master, slave, created["node"]))
        for master, slave, node in slaves:
            await master.send("mutation", msgpack.packb(f"from {node}"))
        for master, slave, node in slaves:
            assert (await receive_until(slave, "mutation"))[-1].decode() == f"from {node}"


async def test_kill_9_of_the_host_moves_its_session_to_the_next_replica_without_duplicates(start_cluster):
    # Without the failover copy (tests/integration/test_failover_copy.py has it): the new host starts
    # an empty stream, the master sends a snapshot, the slaves resync.
    cluster = start_cluster(lease_ttl_s=LEASE_TTL_S, extra_args=["--failover-copy", "false"])
    a, b, c = cluster.names
    with trio.fail_after(60):
        created = await client(cluster, a).create_session()
        session_id = created["session"]
        joined = [await client(cluster, name).join(session_id, agent=f"agent-{i}") for i, name in enumerate((b, c))]
        master = await client(cluster, a).connect(session_id, created["master_token"])
        await master.receive()
        slaves = [await client(cluster, a).connect(session_id, j["slave_token"]) for j in joined]
        for slave in slaves:
            await slave.receive()
        await master.send("snapshot", msgpack.packb("v1"))
        for n in range(5):
            await master.send("mutation", msgpack.packb(n))
        last_seen = []
        for slave in slaves:
            got = await receive_until(slave, "mutation", 50)
            while got[-1].decode() != 4:
                got += await receive_until(slave, "mutation", 50)
            last_seen.append(got[-1].seq)

        killed_at = time.monotonic()
        cluster.kill(a)
        successors = [b, c]
        master2, hello, statuses = await connect_until_hello(cluster, successors, session_id, created["master_token"])
        assert hello["epoch"] == 2 and hello["role"] == "master"
        new_host = hosts_of(cluster, session_id)
        assert len(new_host) == 1 and new_host[0] in successors
        assert metric(cluster, new_host[0], "relay_takeovers_total") == 1
        # The master re-sends its snapshot (the new host has no history) and goes on.
        await master2.send("snapshot", msgpack.packb("v2"))
        for n in range(5, 10):
            await master2.send("mutation", msgpack.packb(n))
        for slave_joined, seq in zip(joined, last_seen):
            slave2, hello, _ = await connect_until_hello(cluster, successors, session_id, slave_joined["slave_token"],
                                                         after=seq, epoch=1)
            assert hello["epoch"] == 2 and hello["catchup"] == "resync"  # the old stream cannot be continued
            seqs, bodies = [], []
            while not bodies or bodies[-1] != 9:
                envelope = await slave2.receive()
                if envelope.seq:
                    seqs.append(envelope.seq)
                if envelope.kind in ("snapshot", "mutation"):
                    bodies.append(envelope.decode())
            assert seqs == sorted(set(seqs)), seqs  # no duplicate, no reorder
            assert bodies == ["v2", 5, 6, 7, 8, 9]
        print(f"failover: {time.monotonic() - killed_at:.2f} s, statuses while moving: {statuses}")


async def test_a_restarted_node_leaves_moved_sessions_where_they_are(cluster):
    a, b, c = cluster.names
    with trio.fail_after(60):
        created = await client(cluster, a).create_session()
        session_id = created["session"]
        cluster.kill(a)
        _master, hello, _ = await connect_until_hello(cluster, [b, c], session_id, created["master_token"])
        assert hello["epoch"] == 2
        [moved_to] = hosts_of(cluster, session_id)
        cluster.start(a)
        joiner = client(cluster, a)
        joined = await joiner.join(session_id)  # through the node that created it: forwarded
        assert joined["node"] == moved_to and cookie_of(joiner.last_headers) == moved_to
        slave = await client(cluster, a).connect(session_id, joined["slave_token"])
        assert (await slave.receive()).decode()["epoch"] == 2
        assert hosts_of(cluster, session_id) == [moved_to]


async def test_a_host_paused_past_its_lease_serves_nothing_stale_when_it_continues(cluster):
    a, b, c = cluster.names
    with trio.fail_after(60):
        created, joined, old_master, old_slave = await session_with_clients(cluster, a)
        session_id = created["session"]

        cluster.signal(a, signal.SIGSTOP)
        try:
            new_master, hello, _ = await connect_until_hello(cluster, [b, c], session_id, created["master_token"])
            assert hello["epoch"] == 2
            new_slave, hello, _ = await connect_until_hello(cluster, [b, c], session_id, joined["slave_token"])
            # The paused host's clients still have their sockets open: it must not serve them.
            await old_master.send("mutation", msgpack.packb("stale"))
        finally:
            cluster.signal(a, signal.SIGCONT)
        await new_master.send("mutation", msgpack.packb("fresh"))
        assert (await receive_until(new_slave, "mutation"))[-1].decode() == "fresh"
        with pytest.raises(relay.ConnectionClosed) as closed:
            while True:
                envelope = await old_slave.receive()
                assert envelope.kind != "mutation", "the paused host delivered a message after its lease ran out"
        assert closed.value.code == 1012
        deadline = trio.current_time() + 5
        while session_id in (cluster.view(a) or {}).get("epochs", {}):
            assert trio.current_time() < deadline, cluster.view(a)
            await trio.sleep(0.1)
        assert hosts_of(cluster, session_id) != [a]


async def test_redis_restarted_under_load_running_sessions_never_stop(cluster, redis):
    a, b, c = cluster.names
    with trio.fail_after(60):
        created, joined, master, slave = await session_with_clients(cluster, a, join_via=b)
        session_id = created["session"]
        sent = 0
        received = []
        redis_down = trio.Event()
        refused_while_down = []

        async def send_for(seconds):
            nonlocal sent
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                await master.send("mutation", msgpack.packb(sent))
                sent += 1
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_mutations, slave, received)
            await send_for(1.0)
            redis.kill()
            redis_down.set()
            await send_for(2 * LEASE_TTL_S + 1.0)  # longer than a lease: the nodes agree Redis is down
            try:
                await client(cluster, b).create_session()
            except relay.HTTPStatusError as exc:
                refused_while_down.append((exc.status, dict(exc.headers).get("retry-after")))
            redis.start()  # empty: no persistence
            await send_for(2 * LEASE_TTL_S + 1.0)
            with trio.fail_after(5):
                while len(received) < sent:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert received == list(range(sent)), "a running session lost or reordered messages while Redis was down"
        assert refused_while_down and refused_while_down[0][0] == 503 and refused_while_down[0][1]
        # Redis is back: the node wrote its sessions again, and creates work again.
        deadline = trio.current_time() + 10
        while True:
            try:
                created2 = await client(cluster, b).create_session()
                break
            except relay.HTTPStatusError as exc:
                assert exc.status == 503 and trio.current_time() < deadline
                await trio.sleep(0.2)
        assert created2["node"] == b
        joiner = client(cluster, c)
        assert (await joiner.join(session_id))["node"] == a  # the session's record is back in Redis


def _serve(cluster_file, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay", "serve", "--cluster", str(cluster_file), "--node-name", name],
                          capture_output=True, text=True, timeout=30)


def test_a_node_with_another_ring_refuses_to_start_and_says_why(cluster, redis, tmp_path):
    other = tmp_path / "other.toml"
    write_cluster_file(other, cluster.names, redis.url, rf=1, lease_ttl_s=LEASE_TTL_S)  # other ports and RF
    cluster.kill(cluster.names[0])
    time.sleep(LEASE_TTL_S + 0.5)  # its lease lapses: the name is free, the others are live
    done = _serve(other, cluster.names[0])
    assert done.returncode == 2, done.stderr
    assert "ring version" in done.stderr
    assert cluster.names[1] in done.stderr or cluster.names[2] in done.stderr


def test_two_live_nodes_may_not_share_a_name(cluster):
    done = _serve(cluster.file, cluster.names[1])
    assert done.returncode == 2, done.stderr
    assert f"a node named {cluster.names[1]} is already live" in done.stderr


async def test_without_redis_a_create_answers_503_with_retry_after(cluster, redis):
    redis.kill()
    with trio.fail_after(10):
        with pytest.raises(relay.HTTPStatusError) as refused:
            await client(cluster, cluster.names[0]).create_session()
    assert refused.value.status == 503
    assert dict(refused.value.headers).get("retry-after")


class CuttableProxy:
    """A TCP proxy to Redis for one node, that the test can cut (every connection dropped, new ones
    refused) and mend: the node is cut off from Redis while the others still reach it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self.port = None
        self._scopes = set()

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client):
        if self.cut:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                async with upstream, client, trio.open_nursery() as nursery:
                    async def copy(a, b):
                        try:
                            async for chunk in a:
                                await b.send_all(chunk)
                        except trio.BrokenResourceError:
                            pass
                        nursery.cancel_scope.cancel()
                    nursery.start_soon(copy, client, upstream)
                    nursery.start_soon(copy, upstream, client)
            except OSError:
                pass
            finally:
                self._scopes.discard(scope)

    def cut_off(self):
        self.cut = True
        for scope in list(self._scopes):
            scope.cancel()


async def test_a_node_cut_off_from_redis_stops_hosting_while_the_others_take_over(tmp_path, redis):
    names = ["CB_Server_1", "CB_Server_2", "CB_Server_3"]
    proxy = CuttableProxy(redis.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        nodes = ClusterNodes(tmp_path / "nodes", redis.url, names=names, lease_ttl_s=LEASE_TTL_S)
        # The first node reads the same cluster file but for its state store, which goes through the proxy.
        cut_file = tmp_path / "nodes" / "cut.toml"
        cut_file.write_text(nodes.file.read_text().replace(redis.url, f"redis://127.0.0.1:{proxy.port}/0"))
        try:
            # (in a thread: the proxy runs on this test's loop meanwhile)
            await trio.to_thread.run_sync(nodes.start_all_with, {names[0]: cut_file})
            a = names[0]
            with trio.fail_after(60):
                created, joined, master, slave = await session_with_clients(nodes, a)
                session_id = created["session"]
                cut_at = trio.current_time()
                proxy.cut_off()
                # The others still reach Redis, so the cut-off node lets its fence lapse and closes with 1012.
                with pytest.raises(relay.ConnectionClosed) as closed:
                    while True:
                        await slave.receive()
                assert closed.value.code == 1012
                assert trio.current_time() - cut_at <= 2 * LEASE_TTL_S + 1.0
                _, hello, _ = await connect_until_hello(nodes, names[1:], session_id, created["master_token"])
                assert hello["epoch"] == 2
                [new_host] = hosts_of(nodes, session_id)
                assert new_host != a
                view = nodes.view(a)
                assert view["state_store"] == "unreachable" and view["sessions_hosted"] == 0
                # And the cut-off node creates nothing meanwhile.
                with pytest.raises(relay.HTTPStatusError) as refused:
                    await client(nodes, a).create_session()
                assert refused.value.status == 503
        except BaseException:
            print(nodes.logs())
            raise
        finally:
            nodes.stop_all()
            nursery.cancel_scope.cancel()


async def test_a_sentinel_failover_of_redis_stops_no_running_session(tmp_path):
    from real_redis import SentinelRedis

    with SentinelRedis(tmp_path / "sentinel") as redis:
        store = f'{{sentinels = ["127.0.0.1:{redis.sentinel_port}"], service = "{redis.SERVICE}", db = 0}}'
        nodes = ClusterNodes(tmp_path / "nodes", store, lease_ttl_s=LEASE_TTL_S)
        try:
            nodes.start_all()
            a, b, c = nodes.names
            with trio.fail_after(60):
                created, joined, master, slave = await session_with_clients(nodes, a, join_via=b)
                session_id = created["session"]
                old_primary = redis.primary.port
                redis.kill_primary()
                sent = 0
                received = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect_mutations, slave, received)
                    deadline = trio.current_time() + 20
                    while redis.primary_port() == old_primary:  # until the Sentinel promoted the replica
                        assert trio.current_time() < deadline, "the Sentinel did not fail over"
                        await master.send("mutation", msgpack.packb(sent))
                        sent += 1
                        await trio.sleep(0.02)
                    # Then creates work again, on the new primary, and the session still flows.
                    while True:
                        try:
                            created2 = await client(nodes, c).create_session()
                            break
                        except relay.HTTPStatusError as exc:
                            assert exc.status == 503 and trio.current_time() < deadline + 10
                            await master.send("mutation", msgpack.packb(sent))
                            sent += 1
                            await trio.sleep(0.1)
                    with trio.fail_after(5):
                        while len(received) < sent:
                            await trio.sleep(0.02)
                    nursery.cancel_scope.cancel()
                assert received == list(range(sent))
                assert created2["node"] == c
                # Every node finds the new primary by itself, at its next lease renewal.
                deadline = trio.current_time() + 3 * LEASE_TTL_S
                while not all((nodes.view(name) or {}).get("state_store") == "ok" for name in nodes.names):
                    assert trio.current_time() < deadline, [nodes.view(name) for name in nodes.names]
                    await trio.sleep(0.1)
        except BaseException:
            print(nodes.logs())
            raise
        finally:
            nodes.stop_all()


async def test_a_cluster_restarted_whole_keeps_each_session_on_its_host(cluster):
    """How a grown cluster file is taken into use (docs/ring.md): every node stops, every node starts."""
    with trio.fail_after(60):
        sessions = []
        for name in cluster.names:
            created = await client(cluster, name).create_session()
            joined = await client(cluster, name).join(created["session"])
            sessions.append((name, created, joined))
        await trio.to_thread.run_sync(cluster.stop_all)
        await trio.to_thread.run_sync(cluster.start_all)
        for name, created, joined in sessions:
            other = [n for n in cluster.names if n != name]
            master, hello, _ = await connect_until_hello(cluster, other, created["session"], created["master_token"])
            assert hello["epoch"] == 2
            assert hosts_of(cluster, created["session"]) == [name]  # back on the node that hosted it
            slave = await client(cluster, other[0]).connect(created["session"], joined["slave_token"])
            assert (await slave.receive()).decode()["epoch"] == 2  # the slave's token survived too


async def test_a_flood_of_unknown_sessions_costs_redis_a_few_connections_and_made_up_ids_nothing(cluster, redis):
    a = cluster.names[0]
    node = client(cluster, a)
    before = metric(cluster, a, 'relay_redis_calls_total{operation="lookup"}')
    statuses = []

    async def ask(session_id):
        status, _headers, _body = await node.request("GET", f"/cobrowse/poll/{session_id}?token=x")
        statuses.append(status)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:  # made-up IDs: not the shape a node mints
            for n in range(200):
                nursery.start_soon(ask, f"not-an-id-{n}")
        assert statuses == [404] * 200
        assert metric(cluster, a, 'relay_redis_calls_total{operation="lookup"}') == before
        statuses.clear()
        import secrets
        async with trio.open_nursery() as nursery:  # well-formed unknown IDs, 400 at once
            for _ in range(400):
                nursery.start_soon(ask, secrets.token_urlsafe(16))
            await trio.sleep(0.3)
            info = subprocess.run(["redis-cli", "-p", str(redis.port), "info", "clients"],
                                  capture_output=True, text=True, timeout=10).stdout
        assert set(statuses) <= {404, 503} and statuses.count(404) >= 300, sorted(set(statuses))
    connected = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("connected_clients")))
    from relay._statestore import REDIS_MAX_CONNECTIONS
    assert connected <= len(cluster.names) * (REDIS_MAX_CONNECTIONS + 2) + 2, info  # + the lease's own


async def test_a_reconnect_storm_after_the_host_dies_lands_every_client_on_the_new_host(cluster):
    """Every client of a dead host reconnects at once through the survivors: each gets 503s (never
    a 404, 403 or 500) until its session has moved, then its hello from the one new host."""
    a, b, c = cluster.names
    sessions, slaves = 4, 30  # max_slaves_per_session is 32
    with trio.fail_after(90):
        clients = []  # (session_id, token)
        for _ in range(sessions):
            created = await client(cluster, a).create_session()
            clients.append((created["session"], created["master_token"]))
            for n in range(slaves):
                joined = await client(cluster, [b, c][n % 2]).join(created["session"])
                clients.append((created["session"], joined["slave_token"]))
        cluster.kill(a)
        hellos = []
        statuses = []

        async def reconnect(index, session_id, token):
            connection, hello, seen = await connect_until_hello(cluster, [[b, c], [c, b]][index % 2], session_id,
                                                                token, budget_s=60)
            hellos.append((session_id, hello))
            statuses.extend(seen)
            await connection.close()

        async with trio.open_nursery() as nursery:
            for index, (session_id, token) in enumerate(clients):
                nursery.start_soon(reconnect, index, session_id, token)
    assert len(hellos) == len(clients) and {hello["epoch"] for _, hello in hellos} == {2}
    session_ids = {session_id for session_id, _ in clients}
    assert all(len(hosts_of(cluster, session_id)) == 1 for session_id in session_ids)
    by_node = {name: metric(cluster, name, "relay_takeovers_total") for name in (b, c)}
    takeovers = sum(by_node.values())
    assert takeovers == sessions, (by_node, [cluster.view(name) for name in (b, c)])  # one per session, however many asked at once
    assert set(statuses) <= {503, 1006, None}, set(statuses)
