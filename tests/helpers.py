"""Shared fixtures and utilities for the relay-node tests (server, sessions, interop, lifecycle).

Every network helper works on loopback with port 0; callers wrap their test in ``trio.fail_after``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import pathlib
import socket
from typing import Optional

import msgpack
import trio

import relay
from relay._accel import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameDecoder,
    build_envelope,
    encode_client_frame,
    parse_close_payload,
    peek_envelope,
)
from relay._client import ConnectionClosed, HTTPStatusError, parse_delivered
from relay._server import Server

__all__ = [
    "ConnectionClosed",
    "HTTPStatusError",
    "RawSocket",
    "State",
    "running_relay",
    "test_config",
    "pack",
    "unpack",
    "recv_until",
    "expect_close",
    "new_session",
    "ws_target",
]


def load_corpus(name: str):
    """A checked-in bad-input corpus, tests/corpus/NAME.py (by path: tests/corpus is not a package)."""
    path = pathlib.Path(__file__).parent / "corpus" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"relay_test_corpus_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(body):
    return msgpack.unpackb(bytes(body), raw=False)


def test_config(**overrides) -> relay.Config:
    """A Config on loopback port 0 with limits small enough for quick tests.

    Joins are admitted at once (``join_policy="open"``) unless a test asks otherwise: the tests of the
    join policies (tests/integration/test_join_policy.py) set it themselves."""
    settings = dict(listen="127.0.0.1:0", private_listen="127.0.0.1:0", node_name="test-node", log_level="warning",
                    join_policy="open")
    settings.update(overrides)
    return relay.Config(**settings)


test_config.__test__ = False  # not a pytest test


@contextlib.asynccontextmanager
async def running_relay(config: Optional[relay.Config] = None, **overrides):
    """Run one relay node; yield (server, listening, client).  ``server.host.sessions`` is live."""
    config = config if config is not None else test_config(**overrides)
    server = Server(config)
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(server.run)
        client = relay.Client("127.0.0.1", listening.public_port)
        try:
            yield server, listening, client
        finally:
            nursery.cancel_scope.cancel()


async def new_session(client: relay.Client, *, slaves: int = 0, chat: bool = False):
    """Create a session and join ``slaves`` slaves: (created, [joined...])."""
    created = await client.create_session(chat=chat)
    joined = [await client.join(created["session"], agent=f"agent-{i}") for i in range(slaves)]
    return created, joined


async def recv_until(conn, predicate, *, limit: int = 100_000):
    """Receive envelopes until ``predicate(envelope)``; return (that envelope, everything before it)."""
    seen = []
    for _ in range(limit):
        envelope = await conn.receive()
        if predicate(envelope):
            return envelope, seen
        seen.append(envelope)
    raise AssertionError(f"predicate never matched in {limit} envelopes")


async def expect_close(conn) -> int:
    """Read until the relay closes the connection; return its close code."""
    try:
        while True:
            await conn.receive_frame()
    except ConnectionClosed as closed:
        return closed.code


class State:
    """A slave's view of the page, built from the session stream: snapshot replaces, mutation appends.

    It also checks the stream: seqs strictly increase with no gap, except right after a ``resync``.
    """

    def __init__(self) -> None:
        self.snapshot: Optional[bytes] = None
        self.mutations: list = []
        self.last_seq: Optional[int] = None
        self.resyncs = 0
        self.hello: Optional[dict] = None
        self._gap_allowed = True

    def apply(self, envelope) -> None:
        kind, seq, body = envelope.kind, envelope.seq, bytes(envelope.body)
        if kind == "hello":
            self.hello = unpack(body)
            self._gap_allowed = self.hello["catchup"] != "resume"
            if self._gap_allowed:
                self.snapshot, self.mutations = None, []
            return
        if kind == "resync":
            self.resyncs += 1
            self._gap_allowed = True
            self.snapshot, self.mutations = None, []
            return
        if kind in ("error",):
            return
        assert seq > 0, f"{kind} without a seq"
        if self.last_seq is not None and not self._gap_allowed:
            assert seq == self.last_seq + 1, f"gap or duplicate: {self.last_seq} then {seq} ({kind})"
        elif self.last_seq is not None:
            assert seq > self.last_seq, f"seq went back after resync: {self.last_seq} then {seq}"
        self._gap_allowed = False
        self.last_seq = seq
        if kind == "snapshot":
            self.snapshot, self.mutations = body, []
        elif kind == "mutation":
            self.mutations.append(body)

    def page(self) -> tuple:
        return (self.snapshot, tuple(self.mutations))


class RawSocket:
    """A hand-driven WebSocket client on a plain non-blocking socket, for malformed or lazy clients."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.decoder = FrameDecoder(64 * 1024 * 1024, client_side=True)
        self.leftover = b""

    @classmethod
    async def open(cls, port: int, target: str, *, rcvbuf: Optional[int] = None, extra_headers: bytes = b"",
                   expect_status: int = 101):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.setblocking(False)
        self = cls(raw)
        await self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        await self.send_raw(
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
            + extra_headers + b"\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            data = await self.sock.recv(65536)
            assert data, f"closed during handshake: {head!r}"
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert status == expect_status, head
        self.decoder.feed(rest)
        return self

    async def send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = await self.sock.send(view)
            view = view[sent:]

    async def send(self, kind: str, body: bytes) -> None:
        await self.send_raw(encode_client_frame(OP_BINARY, build_envelope(kind, 0, body)))

    async def next_event(self, *, answer_pings: bool = True):
        """The next frame as (opcode, payload); None when TCP closed."""
        while True:
            event = self.decoder.next_event()
            if event is not None:
                opcode, payload = event
                if opcode == OP_PING and answer_pings:
                    await self.send_raw(encode_client_frame(OP_PONG, payload))
                return event
            try:
                data = await self.sock.recv(256 * 1024)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.decoder.feed(data)

    async def receive(self):
        """The next envelope (kind, seq, body, sender), skipping control frames; raises ConnectionClosed."""
        while True:
            event = await self.next_event()
            if event is None:
                raise ConnectionClosed(1006, "connection lost")
            opcode, payload = event
            if opcode == OP_CLOSE:
                code, reason = parse_close_payload(payload)
                raise ConnectionClosed(code, reason)
            if opcode == OP_BINARY:
                return parse_delivered(payload)

    async def close_code(self, *, answer_pings: bool = True) -> Optional[int]:
        """Read until the close frame; its code (None if TCP closed without one)."""
        while True:
            event = await self.next_event(answer_pings=answer_pings)
            if event is None:
                return None
            if event[0] == OP_CLOSE:
                return parse_close_payload(event[1])[0]

    def close(self) -> None:
        self.sock.close()


def ws_target(session_id: str, token: str, after: Optional[int] = None) -> str:
    target = f"/cobrowse/ws/{session_id}?token={token}"
    if after is not None:
        target += f"&after={after}"
    return target
