"""The relay node over real sockets: order and completeness, catch-up, slow slaves, long-polling,
embedding and hooks, the routing cookie."""

from __future__ import annotations

import json

import msgpack
import trio

import relay
from helpers import RawSocket, State, new_session, pack, running_relay, test_config, ws_target

KiB = 1024
MiB = 1024 * KiB


def mutation_body(i: int) -> bytes:
    return pack(b"%08d" % i + b"." * (KiB - 8))


def snapshot_body(i: int, size: int) -> bytes:
    return pack(b"snapshot-%d:" % i + b"#" * size)


async def read_into(conn, state: State, stop_body: bytes, done: trio.Event = None) -> None:
    """Apply everything ``conn`` receives to ``state`` until the mutation ``stop_body`` arrives."""
    while True:
        envelope = await conn.receive()
        state.apply(envelope)
        if envelope.kind == "mutation" and bytes(envelope.body) == stop_body:
            break
    if done is not None:
        done.set()


async def test_order_completeness_late_joiner_resume_and_resync():
    with trio.fail_after(60):
        async with running_relay() as (server, listening, client):
            created, joined = await new_session(client, slaves=5)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            reference = State()  # what a slave that never left must end with
            sent = 0

            async def send_snapshot(i, size):
                nonlocal sent
                body = snapshot_body(i, size)
                await master.send("snapshot", body)
                reference.snapshot, reference.mutations = body, []

            async def send_mutations(count):
                nonlocal sent
                for _ in range(count):
                    body = mutation_body(sent)
                    sent += 1
                    await master.send("mutation", body)
                    reference.mutations.append(body)

            steady = [State(), State()]
            resumer, resyncer, late = State(), State(), State()
            end_marker = b"END"
            async with trio.open_nursery() as nursery:
                for state, join in zip(steady, joined[:2]):
                    conn = await client.connect(sid, join["slave_token"])
                    nursery.start_soon(read_into, conn, state, pack(end_marker))
                resume_conn = await client.connect(sid, joined[2]["slave_token"])
                resync_conn = await client.connect(sid, joined[3]["slave_token"])
                await send_snapshot(1, 1 * MiB)
                await send_mutations(1000)
                phase_one_end = mutation_body(sent - 1)
                await read_into(resume_conn, resumer, phase_one_end)
                await read_into(resync_conn, resyncer, phase_one_end)
                await resume_conn.close()
                await resync_conn.close()
                await send_mutations(500)
                # Resume: nothing it missed has left the history.
                resume_conn = await client.connect(sid, joined[2]["slave_token"], after=resumer.last_seq)
                nursery.start_soon(read_into, resume_conn, resumer, pack(end_marker))
                await send_snapshot(2, 3 * MiB)
                await send_mutations(500)
                # Resync: a snapshot replaced the history after its last seq.
                resync_conn = await client.connect(sid, joined[3]["slave_token"], after=resyncer.last_seq)
                nursery.start_soon(read_into, resync_conn, resyncer, pack(end_marker))
                late_conn = await client.connect(sid, joined[4]["slave_token"])
                nursery.start_soon(read_into, late_conn, late, pack(end_marker))
                await send_snapshot(3, 5 * MiB)
                await send_mutations(1000)
                await master.send("mutation", pack(end_marker))
                reference.mutations.append(pack(end_marker))
            await master.close()
    assert sent == 3000
    for state in steady + [resumer, resyncer, late]:
        assert state.page() == reference.page()
    for state in steady:
        assert state.resyncs == 0 and state.hello["catchup"] == "full"
    assert resumer.hello["catchup"] == "resume" and resumer.resyncs == 0
    assert resyncer.hello["catchup"] == "resync" and resyncer.resyncs == 1
    assert late.hello["catchup"] == "full"
    # every slave saw the same last seq
    assert len({state.last_seq for state in steady + [resumer, resyncer, late]}) == 1


async def test_slow_slave_bounded_resynced_then_closed_1013():
    queue_bound = 256 * KiB
    config = test_config(slave_queue_bytes=queue_bound, max_message_bytes=64 * KiB, ping_interval_s=30,
                         idle_timeout_s=60)
    payload_size = 8 * KiB
    with trio.fail_after(30):
        async with running_relay(config) as (server, listening, client):
            created, (fast_join, slow_join) = await new_session(client, slaves=2)
            sid = created["session"]
            session = server.host.sessions[sid]
            master = await client.connect(sid, created["master_token"])
            fast_conn = await client.connect(sid, fast_join["slave_token"])
            slow = await RawSocket.open(listening.public_port, ws_target(sid, slow_join["slave_token"]), rcvbuf=64 * KiB)
            hello = await slow.receive()
            assert hello.kind == "hello"
            slow_record = session.slaves[slow_join["slave"]]
            slow_peer = slow_record.peer
            fast = State()
            highest = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_into, fast_conn, fast, pack(b"END"))
                i = 0
                while not slow_peer.closing:
                    if i % 10 == 0:  # frequent checkpoints, so that a resync fits in the bound
                        await master.send("snapshot", pack(b"S%d" % i + b"s" * payload_size))
                    await master.send("mutation", pack(b"%d" % i + b"m" * payload_size))
                    highest = max(highest, slow_peer.queued_bytes)
                    assert slow_peer.queued_bytes <= queue_bound
                    i += 1
                    assert i < 20_000, "the slow slave was never closed"
                    await trio.sleep(0)
                # the master keeps sending: nothing is queued for the closed slave any more
                for j in range(50):
                    await master.send("mutation", pack(b"after-%d" % j))
                    assert slow_peer.queued_bytes <= queue_bound
                await master.send("mutation", pack(b"END"))
            assert slow_peer.close_code == 1013
            assert session.stats["resyncs"] >= 1
            assert fast.resyncs == 0 and fast.mutations[-1] == pack(b"END")
            # Once it reads again, the slow client finds the close frame with 1013.
            assert await slow.close_code() == 1013
            slow.close()
            # Private /sessions reports the session, never the content.
            status, _h, body = await relay.Client("127.0.0.1", listening.private_port).request("GET", "/sessions")
            assert status == 200
            described = json.loads(body)["sessions"]
            assert [d["session"] for d in described] == [sid]
            # The metrics count what happened to the slow slave.
            metrics = await scrape_metrics(listening.private_port)
            assert metrics["relay_resyncs_total"] == session.stats["resyncs"] >= 1
            assert metrics["relay_slow_closed_total"] == 1
            assert metrics["relay_dropped_stale_total"] > 0
            assert metrics['relay_connections{role="slave",transport="ws"}'] >= 1
            assert metrics["relay_bytes_out_total"] > metrics['relay_bytes_in_total{role="master"}']
            await master.close()


async def scrape_metrics(port: int) -> dict:
    status, _headers, body = await relay.Client("127.0.0.1", port).request("GET", "/metrics")
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _unpack_all(body: bytes):
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(body)
    return list(unpacker)


async def poll_get(client, sid, token, after=None):
    target = f"/cobrowse/poll/{sid}?token={token}" + (f"&after={after}" if after is not None else "")
    status, headers, body = await client.request("GET", target)
    assert status == 200, body
    return [tuple(item) for item in _unpack_all(body)]


async def test_long_poll_slave_gets_same_stream_posts_and_resumes():
    with trio.fail_after(30):
        async with running_relay(poll_wait_s=0.3) as (server, listening, client):
            created, (ws_join, poll_join) = await new_session(client, slaves=2)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            ws = await client.connect(sid, ws_join["slave_token"])
            token = poll_join["slave_token"]
            first = await poll_get(client, sid, token)
            assert first[0][0] == "hello"
            await master.send("snapshot", pack("page"))
            for i in range(20):
                await master.send("mutation", pack(i))
            received = []
            while not received or received[-1][1] < server.host.sessions[sid].seq:
                received += [item for item in await poll_get(client, sid, token) if item[1] > 0]
            # POST a chat and a pointer
            status, _h, body = await client.request(
                "POST", f"/cobrowse/poll/{sid}?token={token}",
                msgpack.packb(["chat", 0, "hello from poll"]) + msgpack.packb(["pointer", 0, [1, 2]]))
            assert status == 200 and json.loads(body) == {"accepted": 2}
            while True:
                envelope = await master.receive()
                if envelope.kind == "pointer":
                    assert envelope.decode() == [1, 2] and envelope.sender == poll_join["slave"]
                    break
            # the WebSocket slave saw the same stream with the same seqs
            ws_items = []
            while True:
                envelope = await ws.receive()
                if envelope.kind == "hello":
                    continue
                ws_items.append((envelope.kind, envelope.seq, envelope.decode(), envelope.sender))
                if envelope.kind == "chat":
                    break
            last_polled = received[-1][1]
            overlap = [item for item in ws_items if item[1] <= last_polled and item[1] >= received[0][1]]
            assert overlap == received
            chat = await poll_get(client, sid, token)
            # both transports carry the relay's stamp: the POSTing slave's id
            assert ("chat", ws_items[-1][1], "hello from poll", poll_join["slave"]) in chat
            assert {item[3] for item in received} == {"master"}
            # resume with after=SEQ on a new poll peer: exactly what was missed
            resume_from = ws_items[-1][1]
            for i in range(3):
                await master.send("mutation", pack(100 + i))
            server.host.sessions[sid].slaves[poll_join["slave"]].peer.close(1000, "simulate a lost poller")
            items = []
            while not items or items[-1][1] < server.host.sessions[sid].seq:
                got = await poll_get(client, sid, token, after=resume_from) if not items else \
                    await poll_get(client, sid, token)
                items += got
            hello = items[0][2] if items[0][0] == "hello" else None
            assert hello is not None and hello["catchup"] == "resume"
            mutations = [item[2] for item in items if item[0] == "mutation"]
            assert mutations == [100, 101, 102]
            seqs = [item[1] for item in items[1:]]
            assert seqs == list(range(resume_from + 1, resume_from + 1 + len(seqs)))
            await ws.close()
            await master.close()


async def test_embedding_reports_ports_and_calls_hooks():
    events = []

    async def created(session_id, chat):
        await trio.sleep(0)
        events.append(("created", session_id, chat))

    def ended(session_id, reason):
        events.append(("ended", session_id, reason))

    def observed(session_id, kind, seq, size):
        events.append(("message", session_id, kind, seq))

    def authorize(request):
        return request.join_token == "let-me-in"

    config = test_config(on_session_created=created, on_session_ended=ended, on_message=observed,
                         authorize_join=authorize)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(relay.serve, config)
            assert isinstance(listening, relay.Listening)
            assert listening.public_port > 0 and listening.private_port > 0
            assert listening.public_port != listening.private_port
            client = relay.Client("127.0.0.1", listening.public_port)
            status, _h, body = await client.request("GET", "/health")
            assert status == 200 and json.loads(body)["node"] == "test-node"
            session = await client.create_session()
            sid = session["session"]
            try:
                await client.join(sid, join_token="wrong")
                raise AssertionError("join with a refused token succeeded")
            except relay._client.HTTPStatusError as exc:
                assert exc.status == 403
            joined = await client.join(sid, join_token="let-me-in")
            master = await client.connect(sid, session["master_token"])
            await master.send("snapshot", pack("x"))
            await master.close()
            await client.end_session(sid, session["master_token"])
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert ("created", sid, False) in events
    assert ("ended", sid, "ended by the master") in events
    assert any(e[0] == "message" and e[2] == "snapshot" for e in events)
    assert joined["mode"] == "pointer"


async def test_async_authorize_hook_refuses_with_403():
    async def authorize(request):
        await trio.sleep(0)
        return request.agent_id == "good"

    with trio.fail_after(10):
        async with running_relay(authorize_join=authorize) as (server, listening, client):
            created = await client.create_session()
            assert (await client.join(created["session"], agent="good"))["mode"] == "pointer"
            try:
                await client.join(created["session"], agent="bad")
                raise AssertionError("refused join succeeded")
            except relay._client.HTTPStatusError as exc:
                assert exc.status == 403 and exc.body["error"] == "join-refused"
            assert len(server.host.sessions[created["session"]].slaves) == 1


def cookie_of(headers) -> str:
    values = [v for k, v in headers if k.lower() == "set-cookie"]
    assert len(values) == 1, headers
    return values[0]


async def test_routing_cookie_on_create_chat_create_and_join():
    with trio.fail_after(10):
        async with running_relay(node_name="CB_Server_7", cookie_same_site="None") as (server, listening, client):
            created = await client.create_session()
            attributes = [part.strip().lower() for part in cookie_of(client.last_headers).split(";")]
            assert attributes[0] == "gcbsessionserver=cb_server_7"
            assert cookie_of(client.last_headers).startswith("gcbSessionServer=CB_Server_7")
            assert {"path=/", "httponly", "samesite=none", "secure"} <= set(attributes)
            chat = await client.create_session(chat=True)
            assert chat["chat"] is True and "CB_Server_7" in cookie_of(client.last_headers)
            await client.join(created["session"])
            assert "gcbSessionServer=CB_Server_7" in cookie_of(client.last_headers)
        async with running_relay(cookie_name="route", cookie_http_only=False, cookie_same_site="Strict") as (
                server, listening, client):
            await client.create_session()
            attributes = [part.strip().lower() for part in cookie_of(client.last_headers).split(";")]
            assert attributes[0] == "route=test-node"
            assert "samesite=strict" in attributes and "httponly" not in attributes and "secure" not in attributes


async def test_slow_slave_that_never_reads_is_disconnected_after_1013():
    """Closing with 1013 must end the connection even if the client never reads again: a writer
    blocked on a full socket cannot be allowed to hold the connection (and its fd) forever."""
    from relay._websocket import CLOSE_HANDSHAKE_TIMEOUT_S

    config = test_config(slave_queue_bytes=256 * KiB, max_message_bytes=64 * KiB)
    with trio.fail_after(30):
        async with running_relay(config) as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            session = server.host.sessions[sid]
            master = await client.connect(sid, created["master_token"])
            slow = await RawSocket.open(listening.public_port, ws_target(sid, join["slave_token"]), rcvbuf=64 * KiB)
            record = session.slaves[join["slave"]]
            peer = record.peer
            i = 0
            while not peer.closing:
                if i % 10 == 0:
                    await master.send("snapshot", pack(b"s" * 8 * KiB))
                await master.send("mutation", pack(b"m" * 8 * KiB))
                i += 1
                await trio.sleep(0)
            assert peer.close_code == 1013
            with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S + 1.0):
                while record.peer is not None:
                    await trio.sleep(0.05)
            assert record.peer is None, "the relay still holds the connection of a slave it closed with 1013"
            slow.close()
            await master.close()
