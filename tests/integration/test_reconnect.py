"""Immediate reconnects: a client whose TCP connection died reconnects at once with its token.

Failover and every flaky network do this.  Attaching the new connection closes the previous one,
which may be ending at that very moment (its tasks gone, its cleanup not yet run); that must never
fail the new connection (it used to: 101, then EOF and "Nursery is closed to new arrivals").
"""

import logging
import socket
import struct

import trio

import msgpack

from helpers import RawSocket, running_relay, ws_target
from relay._accel import OP_BINARY, frame_header
from relay._closecodes import CloseCode
from relay._outbox import Outbox, RawFrame
from relay._websocket import EchoHandler, WebSocketConnection

RECONNECTS = 300


def drop(raw: RawSocket, index: int) -> None:
    """Lose the connection without a close frame: a reset (SO_LINGER 0) or a plain FIN, in turn."""
    if index % 2 == 0:
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


async def hello_of(port: int, target: str) -> RawSocket:
    raw = await RawSocket.open(port, target)
    envelope = await raw.receive()
    assert envelope[0] == "hello", envelope
    return raw


def internal_errors(caplog) -> list:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_master_that_drops_tcp_and_reconnects_at_once_always_gets_hello(caplog):
    caplog.set_level(logging.ERROR, logger="relay")
    with trio.fail_after(60):
        async with running_relay() as (_server, listening, client):
            created = await client.create_session()
            target = ws_target(created["session"], created["master_token"])
            raw = await hello_of(listening.public_port, target)
            for index in range(RECONNECTS):
                drop(raw, index)
                raw = await hello_of(listening.public_port, target)
            raw.close()
    assert internal_errors(caplog) == []


async def test_slave_that_drops_tcp_and_reconnects_at_once_always_gets_hello(caplog):
    caplog.set_level(logging.ERROR, logger="relay")
    with trio.fail_after(60):
        async with running_relay() as (_server, listening, client):
            created = await client.create_session()
            joined = await client.join(created["session"], agent="flaky")
            target = ws_target(created["session"], joined["slave_token"])
            raw = await hello_of(listening.public_port, target)
            for index in range(RECONNECTS):
                drop(raw, index)
                raw = await hello_of(listening.public_port, target)
            raw.close()
    assert internal_errors(caplog) == []


async def test_long_poll_and_websocket_replace_each_other_at_once(caplog):
    """poll -> WebSocket -> dropped -> poll at once, for both roles: every step gets its hello."""
    caplog.set_level(logging.ERROR, logger="relay")
    with trio.fail_after(60):
        async with running_relay(poll_wait_s=0.5) as (_server, listening, client):
            created = await client.create_session()
            joined = await client.join(created["session"], agent="switcher")
            for token in (created["master_token"], joined["slave_token"]):
                poll = f"/cobrowse/poll/{created['session']}?token={token}"
                for index in range(RECONNECTS // 3):
                    status, _headers, body = await client.request("GET", poll)
                    assert status == 200, body
                    kinds = [envelope[0] for envelope in _envelopes(body)]
                    assert "hello" in kinds, kinds
                    raw = await hello_of(listening.public_port, ws_target(created["session"], token))
                    drop(raw, index)
    assert internal_errors(caplog) == []


def _envelopes(body: bytes) -> list:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(body)
    return list(unpacker)


async def test_a_connection_accepts_a_close_request_in_every_phase():
    """Before run(), while it runs and after it ended: asking to close never raises."""
    with trio.fail_after(10):
        server_side, client_side = socket.socketpair()
        server_side.setblocking(False)
        outbox = Outbox(limit=1 << 20)
        connection = WebSocketConnection(server_side, outbox, EchoHandler(outbox), max_message_bytes=1 << 20,
                                         ping_interval_s=30, idle_timeout_s=60)
        connection.request_close(CloseCode.GOING_AWAY, "before run", discard_queued=False)
        with trio.move_on_after(0.2):
            await connection.run()  # the close frame goes out; the deadline ends it when no echo comes
        client_side.close()
        # After run(): once its nursery was closed, this started a task there and raised RuntimeError.
        connection.request_close(CloseCode.GOING_AWAY, "after the end", discard_queued=True)
        outbox.close(CloseCode.GOING_AWAY, "after the end")


async def test_close_deadline_ends_a_connection_whose_peer_stopped_reading():
    """The close deadline (the cancel scope's now, no task of its own) still ends a connection
    whose writer is blocked on a peer that reads nothing."""
    with trio.fail_after(10):
        server_side, client_side = socket.socketpair()
        server_side.setblocking(False)
        outbox = Outbox(limit=1 << 30)
        connection = WebSocketConnection(server_side, outbox, EchoHandler(outbox), max_message_bytes=1 << 20,
                                         ping_interval_s=30, idle_timeout_s=60)
        big = bytes(16 * 1024 * 1024)  # far more than the socket buffers hold: the writer blocks
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            outbox.push(RawFrame(frame_header(OP_BINARY, len(big)), big))
            await trio.sleep(0.1)
            started = trio.current_time()
            outbox.close(CloseCode.GOING_AWAY, "bye")
        ended_after = trio.current_time() - started
        client_side.close()
        assert 2.5 < ended_after < 4.5, ended_after  # CLOSE_HANDSHAKE_TIMEOUT_S is 3 s
