"""Socket I/O on trio with as few scheduler passes as possible.

trio's own socket methods yield to the scheduler after every successful call; at thousands of small
frames per second that is most of the cost.  These helpers call the non-blocking stdlib socket
directly and wait with ``trio.lowlevel.wait_readable`` / ``wait_writable`` only when the kernel
says so.  Callers must therefore yield by themselves now and then (``Yielder``), so that one busy
connection cannot starve the others.
"""

from __future__ import annotations

import errno
import socket

import trio

__all__ = ["Broken", "Yielder", "recv_into", "recv", "send_all", "send_buffers", "close_socket"]

# How much a task may move before it must let other tasks run, in bytes or in calls.
YIELD_EVERY_BYTES = 1024 * 1024
YIELD_EVERY_CALLS = 32
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT, errno.ENOTCONN, errno.EBADF}


class Broken(Exception):
    """The connection is gone (reset, broken pipe, closed under us): not a bug, not the peer's fault."""


class Yielder:
    """Counts work and yields to trio's scheduler once enough has been done without waiting."""

    __slots__ = ("_bytes", "_calls")

    def __init__(self) -> None:
        self._bytes = 0
        self._calls = 0

    def waited(self) -> None:
        """The task just blocked in the kernel: others have had their turn."""
        self._bytes = 0
        self._calls = 0

    async def account(self, nbytes: int) -> None:
        self._bytes += nbytes
        self._calls += 1
        if self._bytes >= YIELD_EVERY_BYTES or self._calls >= YIELD_EVERY_CALLS:
            self._bytes = 0
            self._calls = 0
            await trio.lowlevel.checkpoint()


async def _call(sock: socket.socket, wait, call, argument, yielder: Yielder):
    """``call(argument)`` on the non-blocking socket, waiting with ``wait`` while it would block."""
    while True:
        try:
            return call(argument)
        except BlockingIOError:
            try:
                await wait(sock)
            except trio.ClosedResourceError:
                raise Broken("socket closed") from None
            except OSError as exc:  # closed fd
                raise Broken(str(exc)) from None
            yielder.waited()
        except InterruptedError:
            continue
        except OSError as exc:
            raise Broken(str(exc)) from None


async def recv_into(sock: socket.socket, buffer, yielder: Yielder) -> int:
    """Read into ``buffer``; 0 means the peer closed.  Raises Broken on reset.

    Returns without passing through the scheduler when data was already there, so the caller may
    use a buffer shared by all connections as long as it consumes the bytes before its next await;
    it calls ``await yielder.account(n)`` once it has.
    """
    return await _call(sock, trio.lowlevel.wait_readable, sock.recv_into, buffer, yielder)


async def recv(sock: socket.socket, max_bytes: int, yielder: Yielder) -> bytes:
    data = await _call(sock, trio.lowlevel.wait_readable, sock.recv, max_bytes, yielder)
    await yielder.account(len(data))
    return data


def _advance(buffers: list, sent: int) -> list:
    """Drop ``sent`` bytes from the front of a list of buffers (and any empty buffer there, which
    sendmsg can never use up)."""
    index = 0
    count = len(buffers)
    while index < count:
        length = len(buffers[index])
        if sent < length:
            if sent:
                buffers[index] = memoryview(buffers[index])[sent:]
            break
        sent -= length
        index += 1
    return buffers[index:]


async def send_buffers(sock: socket.socket, buffers: list, yielder: Yielder) -> None:
    """Send every buffer, in order, with as few sendmsg calls as the kernel allows."""
    while buffers:
        sent = await _call(sock, trio.lowlevel.wait_writable, sock.sendmsg, buffers, yielder)
        await yielder.account(sent)
        buffers = _advance(buffers, sent)


async def send_all(sock: socket.socket, data, yielder: Yielder) -> None:
    await send_buffers(sock, [data], yielder)


def close_socket(sock: socket.socket) -> None:
    """Close a socket that other tasks may be waiting on (they get ClosedResourceError)."""
    try:
        trio.lowlevel.notify_closing(sock)
    except Exception:
        pass
    try:
        sock.close()
    except OSError:
        pass
