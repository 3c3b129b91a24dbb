"""HTTP/1.1 on one socket with h11: requests in, responses out, and the switch to WebSocket.

h11 does the parsing (it bounds the request head to ``max_header_bytes`` and tells 431 from 400);
this module adds the timeouts, the body limit and JSON error responses
(``{"error": CODE, "message": TEXT}``, SPEC 3).
"""

from __future__ import annotations

import itertools
import socket
from typing import Iterable, Optional

import h11
import trio

from relay._errors import HTTPError  # re-exported: the error responses this module sends
from relay._logging import limit_log
from relay._netio import Broken, Yielder, recv, send_all
from relay._routes import json_body

__all__ = ["HTTPConnection", "HTTPError", "json_body"]

RECV_BYTES = 64 * 1024
# The lingering close after an answer that left a body unread: at most this long and this much.
LINGER_TIMEOUT_S = 2.0
LINGER_MAX_BYTES = 16 * 1024 * 1024
SERVER_HEADER = b"relay"


def _head_size(request: h11.Request) -> int:
    """The size of the request head as sent (request line, header lines, CRLFs)."""
    size = len(request.method) + len(request.target) + len(b" HTTP/1.1\r\n\r\n") + 1
    for name, value in request.headers:
        size += len(name) + len(value) + len(b": \r\n")
    return size


def _peer_address(sock) -> Optional[str]:
    try:
        address = sock.getpeername()
    except (OSError, AttributeError):
        return None
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


class HTTPConnection:
    def __init__(self, sock, *, max_header_bytes: int) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.yielder = Yielder()
        self.request: Optional[h11.Request] = None
        self.response_headers: list = []  # added to every response to the current request (CORS)
        self.must_close = False  # the current request asks for the connection to end after its answer
        self.peer = _peer_address(sock)  # for log lines of limits hit
        self.peer_ip = self.peer.rsplit(":", 1)[0] if self.peer else None
        self.scheme = "http"  # "https" on a TLS listener (sock is then a relay._tls.TLSStream)
        self._received_bytes = 0

    async def _receive_event(self):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await recv(self.sock, RECV_BYTES, self.yielder)
            self._received_bytes += len(data)
            self.conn.receive_data(data)

    async def next_request(self, timeout_s: float) -> Optional[h11.Request]:
        """The next request head, or None when the client is gone or broke the protocol.

        Protocol errors are answered here (400, or 431 for an oversized head); a client that does
        not finish its head within ``timeout_s`` gets 408 and the connection is closed.
        """
        self.request = None  # (a 408 below must not be taken for the answer to the previous request)
        idle_between_requests = self.conn.our_state is h11.DONE and not self.conn.trailing_data[0]
        received_before = self._received_bytes
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            try:
                self.conn.start_next_cycle()
            except h11.ProtocolError:
                return None
        elif self.conn.our_state is not h11.IDLE:
            return None
        try:
            with trio.fail_after(timeout_s):
                event = await self._receive_event()
        except trio.TooSlowError:
            if idle_between_requests and self._received_bytes == received_before:
                # A kept-alive connection with no new request: it simply ends (RFC 9112 9.3), as a
                # browser's or a proxy's idle connection expects; a 408 there looks like an error.
                return None
            limit_log.hit("handshake_timeout_s", status=408, peer=self.peer)
            await self.try_error(408, "timeout", "request head not received in time")
            return None
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            code = "header-too-large" if status == 431 else "bad-request"
            if status == 431:
                limit_log.hit("max_header_bytes", status=431, peer=self.peer)
            await self.try_error(status, code, str(exc) or "malformed HTTP request")
            return None
        except Broken:
            return None
        if isinstance(event, h11.Request):
            self.request = event
            self.response_headers = []
            # RFC 9112 6.1: Content-Length with Transfer-Encoding may be a smuggling attempt; the
            # server must close the connection after responding, whatever it answers.
            self.must_close = self._has(b"transfer-encoding") and self._has(b"content-length")
            # h11 bounds only a head that is still incomplete: one that arrived whole in a single
            # read is parsed at any size, so the limit is checked again on the parsed head.
            if _head_size(event) > self.max_header_bytes:
                limit_log.hit("max_header_bytes", status=431, peer=self.peer)
                await self.try_error(431, "header-too-large", "request head over the size limit")
                return None
            return event
        return None  # ConnectionClosed or anything else: the client is done

    def _has(self, name: bytes) -> bool:
        return any(key == name for key, _value in self.request.headers)

    def _finish_bodiless_request(self) -> None:
        """A request without a body (a GET, most often) is complete once its head is read, but h11
        says so only when asked for its end: ask, so that the connection can be kept alive."""
        if self.request is None or self.conn.their_state is not h11.SEND_BODY or self._has(b"transfer-encoding"):
            return
        length = self.header(b"content-length")
        if length is not None and length.strip() != "0":
            return
        try:
            self.conn.next_event()  # no I/O: the EndOfMessage is already there
        except h11.RemoteProtocolError:
            pass  # then their state stays unfinished and the answer closes the connection

    async def read_body(self, limit: int, timeout_s: float) -> bytes:
        """The whole request body; 413 past ``limit`` bytes (checked against Content-Length first)."""
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HTTPError(413, "body-too-large", f"request body over {limit} bytes")
        chunks = []
        total = 0
        try:
            with trio.fail_after(timeout_s):
                while True:
                    event = await self._receive_event()
                    if isinstance(event, h11.Data):
                        total += len(event.data)
                        if total > limit:
                            raise HTTPError(413, "body-too-large", f"request body over {limit} bytes")
                        chunks.append(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        return b"".join(chunks)
                    else:
                        raise HTTPError(400, "bad-request", "incomplete request body")
        except trio.TooSlowError:
            raise HTTPError(408, "timeout", "request body not received in time") from None
        except h11.RemoteProtocolError as exc:
            raise HTTPError(400, "bad-request", str(exc)) from None

    def header(self, name: bytes) -> Optional[str]:
        """The first value of a request header (latin-1), or None."""
        for key, value in self.request.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def header_values(self, name: bytes) -> list:
        return [value.decode("latin-1") for key, value in self.request.headers if key == name]

    async def respond(self, status: int, body: bytes = b"", *, content_type: str = "application/json",
                      headers: Iterable = ()) -> None:
        response_headers = [
            (b"server", SERVER_HEADER),
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        response_headers.extend((k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                                for k, v in itertools.chain(self.response_headers, headers))
        self._finish_bodiless_request()
        if self.conn.their_state is not h11.DONE or self.must_close:
            # We answer before reading the whole body (an error), or the request was ambiguous
            # (Content-Length with Transfer-Encoding): do not reuse the connection.
            response_headers.append((b"connection", b"close"))
        data = self.conn.send(h11.Response(status_code=status, headers=response_headers))
        if body and not (self.request is not None and self.request.method == b"HEAD"):  # HEAD: the head only
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await send_all(self.sock, data, self.yielder)

    async def respond_json(self, status: int, obj, *, headers: Iterable = ()) -> None:
        await self.respond(status, json_body(obj), headers=headers)

    async def respond_error(self, error: HTTPError) -> None:
        await self.respond_json(error.status, {"error": error.code, "message": error.message, **error.details},
                                headers=error.headers)

    async def try_error(self, status: int, code: str, message: str) -> None:
        try:
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self.respond_json(status, {"error": code, "message": message},
                                        headers=[("connection", "close")])
        except (Broken, h11.ProtocolError):
            pass

    async def switch_to_websocket(self, headers: list) -> bytes:
        """Send 101 Switching Protocols; return the bytes the client sent after its request."""
        data = self.conn.send(h11.InformationalResponse(status_code=101, headers=headers))
        await send_all(self.sock, data, self.yielder)
        leftover, _closed = self.conn.trailing_data
        return bytes(leftover)

    async def linger(self) -> None:
        """After answering a request whose body we did not read (a 413, a 4xx before the body), stop
        sending and read what the client still sends, for a while, before the socket is closed.
        Closing with unread data makes the kernel reset the connection, and a reset can overtake our
        answer at the client (a proxy such as nginx then reports 502 instead of our 413)."""
        if self.conn.their_state is not h11.SEND_BODY:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        drained = 0
        with trio.move_on_after(LINGER_TIMEOUT_S):
            try:
                while drained < LINGER_MAX_BYTES:
                    data = await recv(self.sock, RECV_BYTES, self.yielder)
                    if not data:
                        return
                    drained += len(data)
            except Broken:
                return

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
