"""Roles and lifecycle: master replacement and grace, ending, idle timeout, ping, chat sessions,
graceful shutdown."""

from __future__ import annotations

import pytest
import trio

import relay
from relay._accel import OP_PING, OP_PONG, encode_client_frame
from helpers import (
    ConnectionClosed,
    HTTPStatusError,
    RawSocket,
    State,
    expect_close,
    new_session,
    pack,
    recv_until,
    running_relay,
    test_config,
    unpack,
    ws_target,
)


def presence(event: str):
    return lambda envelope: envelope.kind == "presence" and envelope.decode().get("event") == event


async def test_second_master_replaces_first_with_4001():
    with trio.fail_after(10):
        async with running_relay() as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            first = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, join["slave_token"])
            second = await client.connect(sid, created["master_token"])
            assert await expect_close(first) == 4001
            await second.send("snapshot", pack("from the second master"))
            envelope, _ = await recv_until(slave, lambda e: e.kind == "snapshot")
            assert envelope.decode() == "from the second master"
            assert server.host.sessions[sid].master is not None
            await slave.close()
            await second.close()


async def test_master_reconnect_within_grace_continues_the_session():
    with trio.fail_after(10):
        async with running_relay(master_grace_s=5) as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, join["slave_token"])
            state = State()
            await master.send("snapshot", pack("page"))
            await master.close()
            await recv_until(slave, presence("master-left"))
            master = await client.connect(sid, created["master_token"])
            await recv_until(slave, presence("master-reconnected"))
            await master.send("mutation", pack("after reconnect"))
            envelope, _ = await recv_until(slave, lambda e: e.kind == "mutation")
            assert envelope.decode() == "after reconnect"
            assert envelope.seq == server.host.sessions[sid].seq
            await slave.close()
            await master.close()


async def test_master_gone_past_grace_ends_session_and_slaves_get_4002():
    ended = []
    with trio.fail_after(10):
        async with running_relay(master_grace_s=0.5,
                                 on_session_ended=lambda sid, reason: ended.append((sid, reason))) as (
                server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, join["slave_token"])
            await master.close()
            start = trio.current_time()
            envelope, _ = await recv_until(slave, presence("ended"))
            assert trio.current_time() - start >= 0.5
            assert await expect_close(slave) == 4002
            assert ended == [(sid, "master gone")]
            with pytest.raises(HTTPStatusError) as info:
                await client.join(sid)
            assert info.value.status == 404


async def test_delete_by_master_ends_session_204_then_join_is_404():
    with trio.fail_after(10):
        async with running_relay() as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            slave = await client.connect(sid, join["slave_token"])
            status, _h, _b = await client.request("DELETE", f"/cobrowse/sessions/{sid}?token={join['slave_token']}")
            assert status == 403  # a slave may not end it
            status, _h, _b = await client.request("DELETE", f"/cobrowse/sessions/{sid}?token={created['master_token']}")
            assert status == 204
            await recv_until(slave, presence("ended"))
            assert await expect_close(slave) == 4002
            with pytest.raises(HTTPStatusError) as info:
                await client.join(sid)
            assert info.value.status == 404
            with pytest.raises(HTTPStatusError) as info:
                await client.connect(sid, created["master_token"])
            assert info.value.status == 404
            assert sid not in server.host.sessions


async def test_idle_peer_that_never_answers_pings_is_closed_1001():
    with trio.fail_after(10):
        async with running_relay(ping_interval_s=0.1, idle_timeout_s=0.4) as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            lazy = await RawSocket.open(listening.public_port, ws_target(created["session"], join["slave_token"]))
            start = trio.current_time()
            pings = 0
            while True:  # read, but never answer
                opcode, payload = await lazy.next_event(answer_pings=False)
                if opcode == OP_PING:
                    pings += 1
                if opcode == 0x8:
                    break
            assert int.from_bytes(payload[:2], "big") == 1001
            assert pings >= 2
            assert trio.current_time() - start >= 0.4
            lazy.close()


async def test_ping_is_answered_with_pong_and_answering_keeps_peer_alive():
    with trio.fail_after(10):
        async with running_relay(ping_interval_s=0.1, idle_timeout_s=0.4) as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            peer = await RawSocket.open(listening.public_port, ws_target(created["session"], join["slave_token"]))
            await peer.send_raw(encode_client_frame(OP_PING, b"are you there"))
            while True:
                opcode, payload = await peer.next_event()  # answers the relay's pings
                if opcode == OP_PONG:
                    assert bytes(payload) == b"are you there"
                    break
            with trio.move_on_after(1.0):  # well past idle_timeout_s: still open
                while True:
                    event = await peer.next_event()
                    assert event is not None and event[0] != 0x8, "closed although it answered pings"
            peer.close()


async def test_chat_session_refuses_mutation_before_first_snapshot():
    with trio.fail_after(10):
        async with running_relay() as (server, listening, client):
            created = await client.create_session(chat=True)
            assert created["chat"] is True
            join = await client.join(created["session"])
            master = await client.connect(created["session"], created["master_token"])
            slave = await client.connect(created["session"], join["slave_token"])
            hello, _ = await recv_until(slave, lambda e: e.kind == "hello")
            assert hello.decode()["chat"] is True
            await master.send("chat", pack("hello agent"))
            await master.send("mutation", pack("too early"))
            error, _ = await recv_until(master, lambda e: e.kind == "error")
            assert error.decode()["code"] == "chat-only"
            await master.send("snapshot", pack("page"))
            await master.send("mutation", pack("now fine"))
            state = State()
            state.apply(hello)
            while state.mutations != [pack("now fine")]:
                envelope = await slave.receive()
                state.apply(envelope)
                assert envelope.kind != "mutation" or envelope.decode() != "too early"
            assert state.snapshot == pack("page")
            await slave.close()
            await master.close()


async def test_graceful_shutdown_closes_clients_1012_within_grace():
    grace = 1.0
    config = test_config(shutdown_grace_s=grace)
    shutdown = trio.Event()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(lambda task_status: relay.serve(config, shutdown=shutdown,
                                                                            task_status=task_status))
            client = relay.Client("127.0.0.1", listening.public_port)
            created, (join, stuck_join) = await new_session(client, slaves=2)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, join["slave_token"])
            # a client that never answers the close handshake must not hold the shutdown past the grace
            stuck = await RawSocket.open(listening.public_port, ws_target(sid, stuck_join["slave_token"]))
            codes = []
            events = []

            async def watch(conn):
                try:
                    while True:
                        envelope = await conn.receive()
                        if envelope.kind == "presence":
                            events.append(unpack(envelope.body)["event"])
                except ConnectionClosed as closed:
                    codes.append(closed.code)

            nursery.start_soon(watch, master)
            nursery.start_soon(watch, slave)
            await trio.sleep(0.05)
            start = trio.current_time()
            shutdown.set()
        elapsed = trio.current_time() - start
    assert codes == [1012, 1012]
    # A node going away does not end the session for its clients: in a cluster it goes on elsewhere.
    assert "ended" not in events
    # The stuck client would hold the shutdown until the close timeout (3 s); the grace cut it.
    assert elapsed < grace + 1.5
    stuck.close()
