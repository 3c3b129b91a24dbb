"""Listening sockets and the one accept loop of every relay server (``serve`` and ``serve_echo``).

The loop accepts in bursts (every pending connection per wake-up), sets TCP_NODELAY (frames are
small and latency matters more than packets), refuses past the connection limit with a 503, backs
off when accept itself fails (EMFILE: no descriptor left), and runs each connection in a task of its
own whose socket is closed when it ends.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Awaitable, Callable, Optional

import trio

from relay._config import parse_hostport
from relay._logging import limit_log, log_event
from relay._netio import Broken, close_socket

__all__ = ["listen_socket", "Connections", "accept_loop", "LISTEN_BACKLOG"]

log = logging.getLogger("relay.server")

LISTEN_BACKLOG = 1024  # connections the kernel holds for us between two accept bursts
ACCEPT_BACKOFF_S = 0.1  # after a failed accept (EMFILE and friends): let connections close, do not spin
ACCEPT_LOG_EVERY_S = 10.0  # at most one accept.failed line per this, with the count since the last
# accept() errors that mean "no resources now" (trio's _highlevel_serve_listeners.py has the same list);
# any other error concerns one connection only.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
OVERLOADED_BODY = b'{"error":"overloaded","message":"too many connections"}'
OVERLOADED_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
                       b"retry-after: 1\r\ncontent-length: " + str(len(OVERLOADED_BODY)).encode() + b"\r\n\r\n"
                       + OVERLOADED_BODY)


def listen_socket(address: str, setting: str) -> socket.socket:
    """A non-blocking listening socket on ``address`` ("host:port"; ``setting`` names it in errors)."""
    host, port = parse_hostport(address, setting=setting)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Connections:
    """The live connections of one server: counted, bounded by ``limit``, awaited at shutdown."""

    def __init__(self, limit: Optional[int] = None, on_refused: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.on_refused = on_refused  # e.g. count it in the metrics
        self.count = 0
        self._none_left = trio.Event()
        self._none_left.set()

    def admit(self) -> bool:
        if self.limit is not None and self.count >= self.limit:
            self.on_refused()
            return False
        self.count += 1
        if self.count == 1:
            self._none_left = trio.Event()
        return True

    def release(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._none_left.set()

    async def wait_none_left(self) -> None:
        await self._none_left.wait()


def _refuse_overloaded(sock: socket.socket, answer: bool) -> None:
    limit_log.hit("max_connections", status=503)
    if answer:  # (a TLS listener's client would read a plaintext 503 as a broken handshake: just close)
        try:
            sock.send(OVERLOADED_RESPONSE)
        except OSError:
            pass
    sock.close()


async def _run_connection(handle, sock: socket.socket, address, connections: Connections) -> None:
    try:
        await handle(sock, address)
    except Broken:
        pass
    except Exception:
        # A bug must cost one connection, never the process or another client's session.
        log.exception("internal.error")
    finally:
        close_socket(sock)
        connections.release()


async def accept_loop(listener: socket.socket, handle: Callable[[socket.socket, object], Awaitable[None]],
                      connections: Connections, *, answer_overload: bool = True,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept on ``listener`` until it is closed; ``await handle(sock, address)`` for each connection.
    Past the connection limit a connection gets a plaintext 503 (``answer_overload``) and is closed.

    Returns once the listener is closed and every connection it accepted has ended.
    """
    failures, logged_at = 0, -ACCEPT_LOG_EVERY_S
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                await trio.lowlevel.wait_readable(listener)
            except (trio.ClosedResourceError, OSError):
                return
            while True:
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if listener.fileno() == -1:  # closed under us (shutdown)
                        return
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        continue  # that one connection failed (reset before accept...): take the next
                    # Out of descriptors or memory: let connections close instead of spinning, and
                    # say so once per ACCEPT_LOG_EVERY_S, not once per try.
                    failures += 1
                    now = trio.current_time()
                    if now - logged_at >= ACCEPT_LOG_EVERY_S:
                        log_event(log, logging.WARNING, "accept.failed", error=str(exc), failures=failures,
                                  hint="raise the file descriptor limit (ulimit -n) or lower max_connections")
                        logged_at, failures = now, 0
                    await trio.sleep(ACCEPT_BACKOFF_S)
                    break
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if not connections.admit():
                    _refuse_overloaded(sock, answer_overload)
                    continue
                nursery.start_soon(_run_connection, handle, sock, address, connections)
