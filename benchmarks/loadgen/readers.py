"""Receiving as fast as a server sends: ``drain`` for connections nobody reads, ``SkimReader`` for
large messages.  Small messages are read with ``ClientConnection.receive_batch`` (every message one
read completes, received straight into the frame decoder's buffer)."""

from __future__ import annotations

import trio

from relay import ClientConnection
from benchmarks.loadgen.wire import OP_CLOSE, OP_PING, OP_PONG, encode_client_frame

RECEIVE_BUFFER_BYTES = 1024 * 1024
# Without waiting in the kernel, a reader passes through trio's scheduler after this many bytes,
# so that one busy connection cannot starve the others (relay's own readers do the same).
YIELD_EVERY_BYTES = 1024 * 1024


async def drain(connection: ClientConnection) -> None:
    """Read and drop everything (pings answered) until cancelled or closed."""
    while True:
        await connection.receive_batch()


class SkimReader:
    """Server frames parsed by their headers only: of each binary message, keeps the first
    ``HEAD_BYTES`` (envelope header and stamp) and lets the rest go by unread and uncopied, so that
    receiving 4 or 16 copies of a 5 MiB message costs the load generator little more than the
    kernel's copy.  For large messages only: per frame it is slower than the C decoder.  The
    connection must come from ``ClientConnection.open(..., decode=False)``."""

    HEAD_BYTES = 64

    def __init__(self, connection: ClientConnection, name: str, buffer_bytes: int = RECEIVE_BUFFER_BYTES) -> None:
        self.connection = connection
        self.sock = connection.sock
        self.name = name
        self.view = memoryview(bytearray(buffer_bytes))
        self.unread = bytes(connection.unread)  # what came with the handshake response
        self.since_yield = 0
        self.carry = b""  # bytes of an incomplete frame header
        self.fin = 0x80
        self.skip = 0  # payload bytes of the current frame still to go by
        self.head = None  # the current binary frame's first bytes, while shorter than HEAD_BYTES
        self.head_wanted = 0
        self.control = None  # (opcode, payload so far) of a control frame being read

    async def _recv(self) -> int:
        while True:
            try:
                n = self.sock.recv_into(self.view)
            except BlockingIOError:
                self.since_yield = 0
                await trio.lowlevel.wait_readable(self.sock)
                continue
            if n == 0:
                raise ConnectionError(f"{self.name}: the server closed the connection")
            return n

    async def binary(self) -> list:
        """The heads of the binary messages one read completes (possibly none)."""
        if self.unread:
            data, self.unread = self.unread, b""
            n = 0
        else:
            n = await self._recv()
            data = self.view[:n]
            if self.carry:  # at most a frame header's few bytes
                data, self.carry = self.carry + bytes(data), b""
        heads = []
        length = len(data)
        at = 0
        while at < length:
            if self.skip:
                take = min(self.skip, length - at)
                if self.head is not None and len(self.head) < self.head_wanted:
                    self.head += bytes(data[at:at + min(take, self.head_wanted - len(self.head))])
                if self.control is not None:
                    self.control[1].extend(data[at:at + take])
                at += take
                self.skip -= take
                if self.skip == 0:
                    await self._frame_done(heads)
                continue
            # A frame header (RFC 6455 5.2): 2 bytes, then 2 or 8 bytes of length (server frames are unmasked).
            if length - at < 2:
                self.carry = bytes(data[at:])
                break
            first, second = data[at], data[at + 1] & 0x7F
            header = 2 + (2 if second == 126 else 8 if second == 127 else 0)
            if length - at < header:
                self.carry = bytes(data[at:])
                break
            if second == 126:
                payload = int.from_bytes(data[at + 2:at + 4], "big")
            elif second == 127:
                payload = int.from_bytes(data[at + 2:at + 10], "big")
            else:
                payload = second
            at += header
            opcode = first & 0x0F
            if opcode >= 0x8:
                self.control = (opcode, bytearray())
                self.head = None
            else:
                self.control = None
                if opcode != 0:  # a continuation frame keeps its message's head
                    self.head = b""
                    self.head_wanted = min(self.HEAD_BYTES, payload)
                self.fin = first & 0x80
            self.skip = payload
            if payload == 0:
                await self._frame_done(heads)
        self.since_yield += n
        if self.since_yield >= YIELD_EVERY_BYTES:
            self.since_yield = 0
            await trio.lowlevel.checkpoint()
        return heads

    async def _frame_done(self, heads: list) -> None:
        if self.control is not None:
            opcode, payload = self.control
            self.control = None
            if opcode == OP_PING:
                await self.connection.send_raw(encode_client_frame(OP_PONG, bytes(payload)))
            elif opcode == OP_CLOSE:
                raise ConnectionError(f"{self.name}: closed by the server ({bytes(payload[:2]).hex()})")
            return
        if self.fin and self.head is not None:
            heads.append(self.head)
            self.head = None
