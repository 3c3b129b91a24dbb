"""The client methods a load generator needs (benchmarks/loadgen): ``ClientConnection.receive_batch``
(every message one read completes) and ``decode=False`` (frames left to the caller)."""

from __future__ import annotations

import socket

import pytest
import trio

from relay._accel import FrameDecoder

from relay import ClientConnection
from relay._client import ConnectionClosed, parse_delivered
from helpers import new_session, pack, running_relay


def connection_pair() -> tuple:
    """A ClientConnection on one end of a socket pair, and the other end (blocking) as the server."""
    left, right = socket.socketpair()
    left.setblocking(False)
    return ClientConnection(left, b"", 1 << 20), right


async def batches_until(conn, count: int, kind: str) -> list:
    """Envelopes of ``kind`` from receive_batch until ``count`` of them have come."""
    got = []
    while len(got) < count:
        for payload in await conn.receive_batch():
            envelope = parse_delivered(payload)
            if envelope.kind == kind:
                got.append(envelope)
    return got


async def test_receive_batch_returns_every_message_of_a_read_in_order_as_delivered():
    with trio.fail_after(20):
        async with running_relay() as (_server, _listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            master = await client.connect(created["session"], created["master_token"])
            slave = await client.connect(created["session"], joined["slave_token"])
            for index in range(200):
                await master.send("mutation", pack(index))
            got = await batches_until(slave, 200, "mutation")
            assert [e.decode() for e in got] == list(range(200))
            assert {e.sender for e in got} == {"master"}
            assert [e.seq for e in got] == sorted(e.seq for e in got)
            await master.close()
            await slave.close()


async def test_receive_batch_answers_pings_and_raises_on_close():
    conn, right = connection_pair()
    with trio.fail_after(10):
        # A server's ping, a message, then a close 1001, all in one read (server frames: unmasked).
        right.sendall(bytes([0x89, 2]) + b"hi" + bytes([0x82, 3]) + b"abc" + bytes([0x88, 2])
                      + (1001).to_bytes(2, "big"))
        assert [bytes(p) for p in await conn.receive_batch()] == [b"abc"]
        pong = right.recv(64)
        assert pong[0] == 0x8A and pong[1] == 0x80 | 2  # a masked pong of the ping's 2 bytes
        with pytest.raises(ConnectionClosed) as closed:
            await conn.receive_batch()
        assert closed.value.code == 1001
        with pytest.raises(ConnectionClosed):
            await conn.receive_batch()
    right.close()


async def test_receive_batch_raises_when_the_peer_goes_away():
    conn, right = connection_pair()
    right.close()
    with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
        await conn.receive_batch()
    assert closed.value.code == 1006


async def test_decode_false_leaves_the_bytes_after_the_handshake_to_the_caller():
    with trio.fail_after(20):
        async with running_relay() as (_server, _listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            master = await client.connect(created["session"], created["master_token"])
            await master.send("snapshot", pack("<p>page</p>"))
            raw = await client.connect(created["session"], joined["slave_token"], decode=False)
            assert raw.pending == []
            # The relay's hello and catch-up follow the 101 at once: whatever came with it is in
            # ``unread``, the rest is on the socket, all as plain server frames.
            data = bytearray(raw.unread)
            while b"<p>page</p>" not in data:
                await trio.lowlevel.wait_readable(raw.sock)
                data += raw.sock.recv(65536)
            assert data[0] == 0x82  # the first frame is a binary, unmasked server frame
            decoder = FrameDecoder(client_side=True)
            decoder.feed(bytes(data))
            opcode, payload = decoder.next_event()
            first = parse_delivered(payload)
            assert first.kind == "hello" and first.sender == ""
            raw.sock.close()
            await master.close()
