"""The WebSocket's eager write over plain sockets and over TLS (relay/_websocket.py, relay/_tls.py): what the
kernel did not take of an eagerly sent frame goes out before anything else, a pong included, and bytes
arrive whole and in order through a TLSStream whose sends are partial."""

from __future__ import annotations

import socket

import pytest
import trio

from relay._accel import OP_BINARY, OP_PONG, FrameDecoder, encode_frame, frame_header
from relay._netio import Yielder, recv_into
from relay._outbox import Outbox, RawFrame
from relay._tls import TLSSettings, accept_tls, client_context, connect_tls, server_context
from relay._websocket import WebSocketConnection
from tls_certs import TestCA

TIMEOUT_S = 20
BIG = 3 * 1024 * 1024  # far more than the 64 KiB socket buffer: the eager write leaves a remainder


class Quiet:
    def on_message(self, opcode, payload):
        raise AssertionError("the peer sends no message in these tests")

    def on_close(self):
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = TestCA(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("server")


async def _pair(kind: str, pki):
    """(our end for the WebSocket, the peer's end): sockets, or TLS streams over them."""
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    if kind == "plain":
        return ours, theirs
    ca, server = pki
    result = {}

    async def client_side():
        result["peer"] = await connect_tls(theirs, client_context(ca.cert), "localhost", 5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        result["ours"] = await accept_tls(ours, server_context(TLSSettings(server.cert, server.key)), timeout_s=5,
                                          listener="test", peer=None)
    return result["ours"], result["peer"]


async def _frames(peer, count: int) -> list:
    decoder = FrameDecoder(64 * 1024 * 1024, client_side=True)
    events = []
    buffer = bytearray(1 << 20)
    yielder = Yielder()
    while len(events) < count:
        n = await recv_into(peer, buffer, yielder)
        assert n, "connection closed early"
        decoder.feed(memoryview(buffer)[:n])
        while (event := decoder.next_event()) is not None:
            events.append((event[0], bytes(event[1])))
    return events


@pytest.mark.parametrize("kind", ["plain", "tls"])
async def test_the_rest_of_an_eager_frame_goes_before_a_pong(kind, pki):
    ours, peer = await _pair(kind, pki)
    outbox = Outbox(limit=1 << 30)
    connection = WebSocketConnection(ours, outbox, Quiet(), max_message_bytes=1 << 26, ping_interval_s=60,
                                     idle_timeout_s=120)
    big = bytes(range(256)) * (BIG // 256)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.sleep(0.05)  # the writer is idle now
            outbox.push(RawFrame(frame_header(OP_BINARY, len(big)), big))  # sent eagerly, in part
            # Then, before the writer runs, the reader answers a ping (what _drain_events does).
            connection.control.append(encode_frame(OP_PONG, b"pong"))
            connection._notify()
            events = await _frames(peer, 2)
            nursery.cancel_scope.cancel()
    assert events[0] == (OP_BINARY, big)
    assert events[1] == (OP_PONG, b"pong")


@pytest.mark.parametrize("kind", ["plain", "tls"])
async def test_messages_of_every_size_arrive_in_order(kind, pki):
    ours, peer = await _pair(kind, pki)
    outbox = Outbox(limit=1 << 30)
    connection = WebSocketConnection(ours, outbox, Quiet(), max_message_bytes=1 << 26, ping_interval_s=60,
                                     idle_timeout_s=120)
    payloads = [bytes([n % 251]) * size for n, size in enumerate([10, BIG, 1000, 5, 2 * 1024 * 1024, 64 * 1024, 7])]
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            await trio.sleep(0.05)
            for payload in payloads:
                outbox.push(RawFrame(frame_header(OP_BINARY, len(payload)), payload))
                await trio.sleep(0.003)  # past EAGER_WRITE_GAP_S: each one is sent eagerly first
            events = await _frames(peer, len(payloads))
            nursery.cancel_scope.cancel()
    assert [payload for _opcode, payload in events] == payloads
