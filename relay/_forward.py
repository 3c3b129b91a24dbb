"""Forwarding a client's request to the node that hosts its session, over the private listeners (SPEC 5).

The entry node has parsed only the request head (and, for a request with a body, the body: a
long-poll POST or a join).  It opens a connection to the host's private listener, sends the same
head with ``x-relay-forwarded-by`` (so the host answers with its own sticky cookie and never
forwards again) and from then on moves bytes: both directions for a WebSocket, the response for a
plain request.  No message is re-framed or re-encoded on the hop; the entry node's cost is two
socket copies per chunk (splice(2): the bytes stay in the kernel).  When the private listeners speak
TLS, the hop does too (``tls``: the node's client context, verifying the host's certificate and
presenting its own); then each chunk is decrypted and encrypted again in user space, both ways.

A plain request is forwarded with ``connection: close``: the host closes after its answer, and so
does the entry node, so that a client's next request is routed again (its cookie now names the
host).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Callable, Optional

import h11
import trio

from relay._errors import HTTPError
from relay._netio import Broken, Yielder, close_socket, recv_into, send_all
from relay._tls import connect_tls

__all__ = ["FORWARD_ANSWER_TIMEOUT_S", "FORWARDED_BY", "FORWARDED_PEER", "FORWARDED_PROTO", "PIPE_BUFFER_BYTES", "connect", "forward_request", "HOP_BY_HOP"]

# splice(2): Linux only, Python 3.10+; elsewhere the pipe copies through a buffer.
SPLICE = sys.platform.startswith("linux") and hasattr(os, "splice") and os.environ.get("RELAY_FORWARD_COPY") != "1"
FORWARDED_BY = b"x-relay-forwarded-by"  # the entry node's name
FORWARDED_PEER = b"x-relay-peer"  # the entry node's TCP peer
FORWARDED_PROTO = b"x-relay-proto"  # "https" when the client reached the entry node over TLS
PIPE_BUFFER_BYTES = 64 * 1024  # per direction of a forwarded connection
CONNECT_TIMEOUT_S = 1.0  # to a peer's private listener on the same network: fail fast, the client retries
RETRY_AFTER_S = 1
# How long the host may take to begin its answer (a long-poll GET adds its wait): a host on the same
# network answers a request head in milliseconds; one that does not is paused or overloaded.
FORWARD_ANSWER_TIMEOUT_S = 2.0
# Headers that belong to one hop (RFC 9110 7.6.1) and are rewritten on the forwarded request.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"content-length", FORWARDED_BY, FORWARDED_PEER, FORWARDED_PROTO})


async def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S, *, tls=None):
    """A non-blocking TCP connection to ``HOST:PORT`` (a TLSStream over it with the client context
    ``tls``, which checks the certificate against HOST); OSError if it cannot be made in time."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        with trio.fail_after(timeout_s):
            result = sock.connect_ex((host, int(port)))
            if result not in (0, errno.EINPROGRESS):
                raise OSError(result, errno.errorcode.get(result, str(result)))
            await trio.lowlevel.wait_writable(sock)
            result = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if result:
                raise OSError(result, errno.errorcode.get(result, str(result)))
    except trio.TooSlowError:
        sock.close()
        raise OSError(errno.ETIMEDOUT, f"connect to {address} timed out") from None
    except BaseException:
        sock.close()
        raise
    if tls is None:
        return sock
    try:
        return await connect_tls(sock, tls, host, timeout_s)
    except BaseException:
        sock.close()
        raise


def forwarded_head(head: h11.Request, via: str, *, body_length: Optional[int], client_ip: Optional[str],
                   scheme: str = "http") -> bytes:
    """The request head as the host receives it (HTTP/1.1 bytes).  ``X-Forwarded-*`` go on unchanged;
    ``client_ip`` (the entry node's TCP peer) is passed as ``x-relay-peer``, so that the host applies
    its per-client limits and its trust in proxies as if the request had reached it directly."""
    upgrade = body_length is None
    lines = [b"%s %s HTTP/1.1" % (head.method, head.target)]
    for name, value in head.headers:
        if name in HOP_BY_HOP:
            if upgrade and name == b"connection":
                lines.append(b"connection: " + value)  # Upgrade must reach the host
            continue
        lines.append(name + b": " + value)
    lines.append(FORWARDED_BY + b": " + via.encode("latin-1"))
    if client_ip:
        lines.append(FORWARDED_PEER + b": " + client_ip.encode("latin-1"))
    if scheme == "https":
        lines.append(FORWARDED_PROTO + b": https")
    if not upgrade:
        lines.append(b"content-length: %d" % body_length)
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _pipe(source, sink, moved: Callable[[int], None]) -> None:
    """Bytes from ``source`` to ``sink`` until ``source`` ends; ``moved(n)`` after each chunk.
    (Either may be a TLSStream: then the bytes go through user space, to be decrypted or encrypted.)"""
    if SPLICE and type(source) is socket.socket and type(sink) is socket.socket:
        await _splice(source, sink, moved)
        return
    buffer = bytearray(PIPE_BUFFER_BYTES)
    view = memoryview(buffer)
    yielder = Yielder()
    while True:
        count = await recv_into(source, buffer, yielder)
        if count == 0:
            return
        await send_all(sink, view[:count], yielder)
        moved(count)


async def _splice(source: socket.socket, sink: socket.socket, moved: Callable[[int], None]) -> None:
    """Move bytes from socket to socket through a kernel pipe (Linux splice(2)): the payload never
    enters Python, and the kernel hands pages on instead of copying them twice through user space."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    yielder = Yielder()
    try:
        while True:
            try:
                count = os.splice(source.fileno(), write_end, PIPE_BUFFER_BYTES, flags=flags)
            except BlockingIOError:
                await _wait(trio.lowlevel.wait_readable, source)
                yielder.waited()
                continue
            except OSError as exc:
                raise Broken(str(exc)) from None
            if count == 0:
                return
            left = count
            while left:
                try:
                    left -= os.splice(read_end, sink.fileno(), left, flags=flags)
                except BlockingIOError:
                    await _wait(trio.lowlevel.wait_writable, sink)
                    yielder.waited()
                except OSError as exc:
                    raise Broken(str(exc)) from None
            moved(count)
            await yielder.account(count)
    finally:
        os.close(read_end)
        os.close(write_end)


async def _wait(wait, sock: socket.socket) -> None:
    try:
        await wait(sock)
    except (trio.ClosedResourceError, OSError) as exc:
        raise Broken(str(exc)) from None


async def forward_request(client: socket.socket, head: h11.Request, address: str, *, via: str,
                          client_ip: Optional[str], body: Optional[bytes], leftover: bytes = b"",
                          answer_timeout_s: float, metrics=None, tls=None, scheme: str = "http") -> None:
    """Send the request to ``address`` (a peer's private HOST:PORT) and relay what follows.

    ``body`` is the whole body of a plain request; None for a WebSocket upgrade, whose ``leftover``
    (bytes the client sent after its head) goes on unchanged.  HTTPError 503 with Retry-After when
    the host cannot be reached, or does not begin its answer within ``answer_timeout_s`` (a host
    that is paused still accepts connections in its kernel): the client retries, and by then the
    cluster may have moved the session.  ``tls``: the client context for the host's private listener
    (None: plaintext); ``scheme``: how the client reached this node (passed on for the origin check).
    """
    try:
        upstream = await connect(address, tls=tls)
    except OSError as exc:
        if metrics is not None:
            metrics.forward_failures.inc()
        raise HTTPError(503, "host-unreachable", f"the node hosting this session cannot be reached ({exc.strerror or exc}); "
                        "retry", [("retry-after", str(RETRY_AFTER_S))]) from None
    upgrade = body is None
    if metrics is not None:
        metrics.forwarded.labels("websocket" if upgrade else "http").inc()
        to_host, to_client = (metrics.forwarded_bytes.labels("to_host").inc,
                              metrics.forwarded_bytes.labels("to_client").inc)
    else:
        to_host = to_client = _ignore
    try:
        first = forwarded_head(head, via, body_length=None if upgrade else len(body), client_ip=client_ip,
                               scheme=scheme)
        await send_all(upstream, first + (leftover if upgrade else body), Yielder())
        to_host(len(first) + len(leftover if upgrade else body))
        # Nothing has gone to the client yet: until the host answers, a 503 can still be sent.
        answer = bytearray(PIPE_BUFFER_BYTES)
        count = None
        with trio.move_on_after(answer_timeout_s):
            count = await recv_into(upstream, answer, Yielder())
        if not count:
            if metrics is not None:
                metrics.forward_failures.inc()
            raise HTTPError(503, "host-unresponsive", "the node hosting this session did not answer; retry",
                            [("retry-after", str(RETRY_AFTER_S))])
        await send_all(client, memoryview(answer)[:count], Yielder())
        to_client(count)
        del answer
        async with trio.open_nursery() as nursery:
            async def from_host():
                try:
                    await _pipe(upstream, client, to_client)
                except Broken:
                    pass
                nursery.cancel_scope.cancel()

            async def from_client():
                try:
                    await _pipe(client, upstream, to_host)
                except Broken:
                    pass
                if upgrade:
                    nursery.cancel_scope.cancel()
                # A plain request has nothing more to send: the host's answer still comes back.

            nursery.start_soon(from_host)
            nursery.start_soon(from_client)
    except Broken:
        pass
    finally:
        close_socket(upstream)


def _ignore(_count: int) -> None:
    pass
