"""WebSocketConnection's eager write (relay/_websocket.py): a message queued to an idle writer is sent
by the task that queued it; what the kernel does not take stays queued for the writer.  Every byte
arrives once and in order, whether the kernel takes a message whole, in part, or not at all."""

from __future__ import annotations

import socket

import pytest
import trio

from relay._accel import OP_BINARY, FrameDecoder, frame_header
from relay._outbox import Outbox, RawFrame
from relay import _websocket
from relay._websocket import WebSocketConnection


class Quiet:
    def on_message(self, opcode, payload):
        raise AssertionError("the peer sends nothing in these tests")

    def on_close(self):
        pass


def frame(payload: bytes) -> RawFrame:
    return RawFrame(frame_header(OP_BINARY, len(payload)), payload)


async def read_frames(sock, count: int) -> list:
    decoder = FrameDecoder(64 * 1024 * 1024, client_side=True)
    payloads = []
    while len(payloads) < count:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        assert data, "connection closed early"
        decoder.feed(data)
        while (event := decoder.next_event()) is not None:
            payloads.append(bytes(event[1]))
    return payloads


@pytest.mark.parametrize("sizes", [[100] * 50, [3 * 1024 * 1024, 10, 2 * 1024 * 1024, 5]],
                         ids=["small, one at a time", "larger than the socket buffer"])
async def test_every_message_arrives_once_and_in_order(sizes, monkeypatch):
    calls = []
    original = WebSocketConnection._write_now

    def counting(self):
        done = original(self)
        calls.append(done)
        return done

    monkeypatch.setattr(WebSocketConnection, "_write_now", counting)
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    outbox = Outbox(limit=1 << 30)
    connection = WebSocketConnection(ours, outbox, Quiet(), max_message_bytes=1 << 26, ping_interval_s=60,
                                     idle_timeout_s=60)
    payloads = [bytes([index % 251]) * size for index, size in enumerate(sizes)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.sleep(0.01)  # the writer is idle now
            for payload in payloads:
                outbox.push(frame(payload))
                await trio.sleep(2 * _websocket.EAGER_WRITE_GAP_S)  # alone: each goes eagerly
            got = await read_frames(theirs, len(payloads))
            nursery.cancel_scope.cancel()
    assert got == payloads
    assert calls and (all(calls) if max(sizes) < 4096 else not all(calls))  # large ones left a remainder
    assert outbox.queued_bytes == 0
    theirs.close()


async def test_messages_that_come_together_go_to_the_writer_in_one_batch(monkeypatch):
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setblocking(False)
    outbox = Outbox(limit=1 << 30)
    connection = WebSocketConnection(ours, outbox, Quiet(), max_message_bytes=1 << 26, ping_interval_s=60,
                                     idle_timeout_s=60)
    eager = []
    original = WebSocketConnection._write_now
    monkeypatch.setattr(WebSocketConnection, "_write_now", lambda self: eager.append(1) or original(self))
    payloads = [b"%d" % n for n in range(100)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.sleep(0.01)
            for payload in payloads:  # in one turn of the loop, as one reader's batch would be
                outbox.push(frame(payload))
            got = await read_frames(theirs, len(payloads))
            nursery.cancel_scope.cancel()
    assert got == payloads
    assert len(eager) == 1  # the first went at once; the other 99 waited for the writer's batch
    theirs.close()
