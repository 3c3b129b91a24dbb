"""Large values to Redis without copying them: ``SET key value PX ttl`` written with scatter-gather
``sendmsg`` from the caller's views (the failover copy's large messages, relay/_streamcopy.py).

coredis joins every command into one ``bytes`` before it sends it (two or three copies of a 1 MiB
snapshot, and a ``bytes`` of each chunk first, since it takes no views): for the copy of a 1 MiB
stream that was most of what the copy cost.  This writer speaks just enough RESP for ``SET`` on a
connection of its own: the command's few header bytes are built, the value goes as the message's own
``head``/``body``/``tail`` views, pipelined (every SET of a batch in as few ``sendmsg`` calls as the
kernel takes, then every reply read).  The views must stay valid until ``set_many`` returns.
"""

from __future__ import annotations

import socket
from typing import Awaitable, Callable, Optional

import trio

from relay._netio import Broken, Yielder, close_socket, recv, send_buffers

__all__ = ["BlobWriter", "BlobWriteFailed"]

BUFFERS_PER_SENDMSG = 512  # below the kernel's IOV_MAX (1024)
REPLY_BYTES = 64 * 1024


class BlobWriteFailed(Exception):
    """Redis refused a SET, or the connection broke or timed out (the batch may be partly written)."""


def _bulk(data: bytes) -> list:
    return [b"$%d\r\n" % len(data), data, b"\r\n"]


class BlobWriter:
    """One connection to Redis's primary for large SETs.  ``address`` is an async callable that gives
    the primary's (host, port): fixed for one Redis, asked of the sentinels for a Sentinel-managed one."""

    def __init__(self, address: Callable[[], Awaitable[tuple]], db: int = 0, connect_timeout_s: float = 0.5) -> None:
        self._address = address
        self._db = db
        self._connect_timeout_s = connect_timeout_s
        self._sock: Optional[socket.socket] = None
        self._lock = trio.Lock()
        self._yielder = Yielder()

    async def _connect(self) -> socket.socket:
        from relay._forward import connect  # (a plain non-blocking TCP connect with a deadline)

        host, port = await self._address()
        sock = await connect(f"{host}:{port}", self._connect_timeout_s)
        if self._db:
            self._sock = sock
            await self._send([b"*2\r\n", *_bulk(b"SELECT"), *_bulk(str(self._db).encode())])
            await self._replies(1)
        return sock

    async def set_many(self, items: list, ttl_ms: int) -> None:
        """``SET key value PX ttl_ms`` for each ``(key, parts)``: ``parts`` are bytes-like views whose
        concatenation is the value.  BlobWriteFailed if any is not written (the caller retries all)."""
        if not items:
            return
        async with self._lock:
            try:
                if self._sock is None:
                    self._sock = await self._connect()
                buffers = []
                ttl = str(ttl_ms).encode()
                for key, parts in items:
                    length = sum(len(part) for part in parts)
                    buffers += [b"*5\r\n", *_bulk(b"SET"), *_bulk(key.encode()), b"$%d\r\n" % length]
                    buffers += [part for part in parts if len(part)]
                    buffers += [b"\r\n", *_bulk(b"PX"), *_bulk(ttl)]
                await self._send(buffers)
                await self._replies(len(items))
            except BaseException:
                # Cancelled or failed halfway: what is on the connection is unknown, start afresh.
                self.close()
                raise

    async def _send(self, buffers: list) -> None:
        try:
            for start in range(0, len(buffers), BUFFERS_PER_SENDMSG):
                await send_buffers(self._sock, buffers[start:start + BUFFERS_PER_SENDMSG], self._yielder)
        except Broken as exc:
            raise BlobWriteFailed(f"redis connection broke: {exc}") from None

    async def _replies(self, count: int) -> None:
        pending = b""
        while count:
            end = pending.find(b"\r\n")
            if end < 0:
                try:
                    data = await recv(self._sock, REPLY_BYTES, self._yielder)
                except Broken as exc:
                    raise BlobWriteFailed(f"redis connection broke: {exc}") from None
                if not data:
                    raise BlobWriteFailed("redis closed the connection")
                pending += data
                continue
            line, pending = pending[:end], pending[end + 2:]
            if not line.startswith(b"+"):
                raise BlobWriteFailed(f"redis refused a SET: {line[:200].decode(errors='replace')}")
            count -= 1

    def close(self) -> None:
        if self._sock is not None:
            close_socket(self._sock)
            self._sock = None
