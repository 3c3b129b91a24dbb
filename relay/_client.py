"""A small trio client that speaks relay's protocol: the HTTP API and the WebSocket transport.

Used by the tests and benchmarks, and usable by embedders (a bot that joins a session, a load
generator, a server-side master)::

    client = relay.Client("127.0.0.1", 8700)
    created = await client.create_session()
    master = await client.connect(created["session"], created["master_token"])
    await master.send("snapshot", msgpack.packb(b"<html>...</html>"))

Failover that loses nothing (docs/protocol.md section 4b): a master that connects with a
``ResendWindow`` numbers its stream messages, keeps them until the relay's ``ack``, and after each
``hello`` sends again what the relay does not hold (``connection.resumed``: the stream continues;
False: send a fresh snapshot).  ``resume=`` reconnects where a previous connection stopped: a master
with its window, a slave with ``after``, ``epoch`` and ``master_count``::

    master = await client.connect(session, master_token, window=ResendWindow())
    if not master.resumed:
        await master.send("snapshot", page)
    ...                                              # the connection breaks
    master = await client.connect(session, master_token, resume=master)   # re-sent already
    slave = await client.connect(session, slave_token, resume=old_slave)  # exactly what it missed
"""

from __future__ import annotations

import json
import socket
from collections import deque
from typing import Any, Iterable, NamedTuple, Optional
from urllib.parse import urlencode

import h11
import msgpack
import trio

from relay._accel import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameDecoder,
    build_envelope,
    close_payload,
    encode_client_frame,
    parse_close_payload,
    peek_envelope,
)
from relay._closecodes import CloseCode
from relay._config import DEFAULT_MAX_MESSAGE_BYTES
from relay._errors import EnvelopeError, RelayError
from relay._netio import Broken, Yielder, close_socket, recv, recv_into, send_all, send_buffers
from relay._resend import ResendWindow

__all__ = ["Client", "ClientConnection", "Envelope", "ConnectionClosed", "HTTPStatusError"]

RECV_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
#: Envelopes a window's ``connect`` reads while waiting for the ``hello`` (the relay sends it first).
MAX_ENVELOPES_BEFORE_HELLO = 16
#: Re-sent frames per sendmsg call (the kernel refuses more than IOV_MAX, 1024, buffers at once).
FRAMES_PER_SENDMSG = 512


class Envelope(NamedTuple):
    """One received message.  ``body`` is a read-only view of the packed msgpack body; it stays
    valid as long as you keep it (it owns the received payload).  ``sender`` is the relay's stamp:
    ``"master"``, a slave's id (as ``hello`` and ``presence`` announce it), or ``""`` for the
    relay's own messages; no client can choose it."""

    kind: str
    seq: int
    body: memoryview
    sender: str

    def decode(self) -> Any:
        """The body, unpacked (the relay itself never does this for DOM traffic)."""
        return msgpack.unpackb(self.body, raw=False)


class ConnectionClosed(RelayError):
    """The WebSocket is closed; ``code`` and ``reason`` are what the relay sent (1006: none)."""

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class HTTPStatusError(RelayError):
    """The relay answered an API call with an error status."""

    def __init__(self, status: int, body: dict, headers: list) -> None:
        super().__init__(f"HTTP {status}: {body.get('error')}: {body.get('message')}")
        self.status = status
        self.body = body
        self.headers = headers


async def _connect(host: str, port: int) -> socket.socket:
    infos = await trio.to_thread.run_sync(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    family, type_, proto, _canon, address = infos[0]
    sock = socket.socket(family, type_, proto)
    sock.setblocking(False)
    try:
        try:
            sock.connect(address)
        except BlockingIOError:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, f"cannot connect to {host}:{port}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class Client:
    """The HTTP API of one relay node.  ``origin`` is sent as the Origin header when given."""

    def __init__(self, host: str, port: int, *, origin: Optional[str] = None, cookie: Optional[str] = None) -> None:
        self.host = host
        self.port = port
        self.origin = origin
        self.cookie = cookie
        self.last_headers: list = []

    def _headers(self, extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        headers = [("host", f"{self.host}:{self.port}")]
        if self.origin is not None:
            headers.append(("origin", self.origin))
        if self.cookie is not None:
            headers.append(("cookie", self.cookie))
        headers.extend(extra)
        return headers

    async def request(self, method: str, target: str, body: bytes = b"",
                      headers: Iterable[tuple[str, str]] = ()) -> tuple[int, list[tuple[str, str]], bytes]:
        """One HTTP request on a fresh connection: (status, headers, body)."""
        sock = await _connect(self.host, self.port)
        yielder = Yielder()
        try:
            conn = h11.Connection(h11.CLIENT)
            all_headers = self._headers(headers) + [("content-length", str(len(body))), ("connection", "close")]
            data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
            data += conn.send(h11.Data(data=body)) if body else b""
            data += conn.send(h11.EndOfMessage())
            await send_all(sock, data, yielder)
            response = None
            chunks = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await recv(sock, RECV_BYTES, yielder))
                    continue
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            headers_out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
            self.last_headers = headers_out
            return response.status_code, headers_out, b"".join(chunks)
        finally:
            close_socket(sock)

    async def _json(self, method: str, target: str, payload=None, expect=(200, 201, 204)) -> dict:
        body = json.dumps(payload).encode() if payload is not None else b""
        status, headers, data = await self.request(method, target, body, [("content-type", "application/json")])
        parsed = json.loads(data) if data else {}
        if status not in expect:
            raise HTTPStatusError(status, parsed if isinstance(parsed, dict) else {}, headers)
        return parsed

    async def create_session(self, *, chat: bool = False) -> dict:
        return await self._json("POST", "/cobrowse/sessions", {"chat": True} if chat else {})

    async def join(self, session_id: str, *, agent: Optional[str] = None, join_token: Optional[str] = None) -> dict:
        payload = {}
        if agent is not None:
            payload["agent"] = agent
        if join_token is not None:
            payload["join_token"] = join_token
        return await self._json("POST", f"/cobrowse/sessions/{session_id}/join", payload)

    async def end_session(self, session_id: str, master_token: str) -> None:
        await self._json("DELETE", f"/cobrowse/sessions/{session_id}?{urlencode({'token': master_token})}")

    async def connect(self, session_id: str, token: str, *, after: Optional[int] = None, epoch: Optional[int] = None,
                      master_count: Optional[int] = None, window: Optional[ResendWindow] = None,
                      resume: Optional["ClientConnection"] = None,
                      max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, decode: bool = True) -> "ClientConnection":
        """Open the session's WebSocket with a role token (``after`` resumes after that seq).

        ``window``: this is a master that numbers its messages (docs/protocol.md 4b): ``connect``
        reads the ``hello`` before it returns (``receive`` still gives it first), sends again what
        the relay does not hold, and sets ``connection.resumed``.  ``resume``: a previous connection
        with the same token; a master's goes on with its window, a slave's asks for what came after
        its last seq (``after``, ``epoch``, ``master_count`` given here win).  ``decode=False``: see
        ``ClientConnection.open`` (not with a window)."""
        if resume is not None:
            if window is None:
                window = resume.window
            previous = resume.resume_params()
            after = previous.get("after") if after is None else after
            epoch = previous.get("epoch") if epoch is None else epoch
            master_count = previous.get("master_count") if master_count is None else master_count
        if window is not None and not decode:
            raise ValueError("a master with a resend window must decode what it receives (decode=True)")
        query = {"token": token}
        if after is not None:
            query["after"] = str(after)
        if epoch is not None:
            query["epoch"] = str(epoch)
        if master_count is not None:
            query["master_count"] = str(master_count)
        connection = await ClientConnection.open(self.host, self.port, f"/cobrowse/ws/{session_id}?{urlencode(query)}",
                                                 headers=self._headers(), max_message_bytes=max_message_bytes,
                                                 decode=decode)
        if resume is not None:
            connection._continue_from(resume)
            resume.superseded = True  # its window numbers for this connection from now on
        if window is not None:
            connection.window = window
            try:
                await connection.wait_for_hello()
            except BaseException:
                close_socket(connection.sock)
                raise
        return connection


def _count_or_none(value) -> Optional[int]:
    """A non-negative int from a relay body, or None (absent or not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_delivered(payload) -> Envelope:
    """An envelope as the relay delivers it, ``[kind, seq, body, sender]``.

    ``RemoteProtocolError`` (an ``EnvelopeError``) when it is malformed or its sender is not a str.
    """
    kind, seq, offset, body_end = peek_envelope(payload)
    view = memoryview(payload)
    if body_end == len(view):
        raise EnvelopeError("the relay's envelope carries no sender")
    try:
        sender = msgpack.unpackb(view[body_end:], raw=False)
    except ValueError:
        sender = None
    if not isinstance(sender, str):
        raise EnvelopeError("the relay's envelope sender is not a str")
    return Envelope(kind, seq, view[offset:body_end], sender)


class ClientConnection:
    """A client WebSocket to the relay: masked frames out, envelopes in, pings answered.

    ``receive`` keeps the protocol's bookkeeping (``role``, ``epoch``, ``hello``; a slave's
    ``last_seq`` and ``master_count``, for ``resume_params``); with a ``window`` (a numbering master)
    it also numbers what ``send`` sends, sends again after a ``hello`` what the relay lacks
    (``resumed``), and forgets what an ``ack`` says the failover copy holds.  Every envelope still
    reaches the caller (``hello`` and ``ack`` too), except the master's re-sends that a slave resumed
    across a failover had already applied (``left_out`` counts them).  ``receive_frame`` and
    ``receive_batch`` skip all of this."""

    def __init__(self, sock: socket.socket, leftover: bytes, max_message_bytes: int) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(max_message_bytes, client_side=True)
        self.yielder = Yielder()
        self.pending: list = []
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.closed = False
        self._send_lock = trio.Lock()
        #: A master's numbering and re-send window (``Client.connect(..., window=)``), or None.
        self.window: Optional[ResendWindow] = None
        #: The latest ``hello`` body, decoded; ``role`` and ``epoch`` come from it (and resyncs).
        self.hello: Optional[dict] = None
        self.role: Optional[str] = None
        self.epoch: Optional[int] = None
        #: After the latest hello: the stream continues (a master re-sent what the relay lacked; a
        #: slave's catch-up is a resume).  False: a master sends a fresh snapshot.
        self.resumed = False
        #: A slave's last session-stream seq (None: the next one starts a fresh numbering).
        self.last_seq: Optional[int] = None
        #: A slave's count of stream messages stamped "master" (None: the relay did not say).
        self.master_count: Optional[int] = None
        #: A slave's master re-sends left out (it had applied them before a failover, 4b).
        self.left_out = 0
        self._skip_through: Optional[int] = None
        self._unreturned: deque[Envelope] = deque()  # read by wait_for_hello, not yet by receive
        #: A newer connection resumed this one (``connect(resume=)``): ``send`` refuses, so that its
        #: window never numbers a message that no connection would send.
        self.superseded = False
        #: With ``open(..., decode=False)``: the bytes that came with the handshake response, unparsed.
        self.unread = b""
        if leftover:
            # Frames that arrived with the 101 response must be read now: receive_frame only asks
            # the decoder for events after the next recv, which may never come.
            self.decoder.feed(leftover)
            while True:
                event = self.decoder.next_event()
                if event is None:
                    break
                self.pending.append(event)

    @classmethod
    async def open(cls, host: str, port: int, target: str, *, headers: Iterable[tuple[str, str]] = (),
                   max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, decode: bool = True) -> "ClientConnection":
        """Open a WebSocket on ``target`` (a path and query) with the extra request ``headers``.

        ``decode=False`` is for a caller that parses the server's frames itself from ``sock`` (a load
        generator skimming large messages): the bytes that came with the 101 response are left in
        ``unread`` instead of going to the frame decoder, and the ``receive*`` methods must not be used.
        """
        import base64
        import os

        sock = await _connect(host, port)
        yielder = Yielder()
        try:
            key = base64.b64encode(os.urandom(16))
            conn = h11.Connection(h11.CLIENT)
            request_headers = list(headers) + [
                ("upgrade", "websocket"), ("connection", "Upgrade"),
                ("sec-websocket-key", key), ("sec-websocket-version", "13"),
            ]
            await send_all(sock, conn.send(h11.Request(method="GET", target=target, headers=request_headers)), yielder)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await recv(sock, RECV_BYTES, yielder))
                    continue
                break
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                leftover, _closed = conn.trailing_data
                if decode:
                    connection = cls(sock, bytes(leftover), max_message_bytes)
                else:
                    connection = cls(sock, b"", max_message_bytes)
                    connection.unread = bytes(leftover)
                # The 101's headers (a cluster node's sticky cookie, for one)
                connection.response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
                return connection
            body = b""
            if isinstance(event, h11.Response):
                while True:
                    more = conn.next_event()
                    if more is h11.NEED_DATA:
                        conn.receive_data(await recv(sock, RECV_BYTES, yielder))
                        continue
                    if isinstance(more, h11.Data):
                        body += more.data
                        continue
                    break
                try:
                    parsed = json.loads(body) if body else {}
                except ValueError:
                    parsed = {}
                raise HTTPStatusError(event.status_code, parsed, [(k.decode(), v.decode()) for k, v in event.headers])
            raise ConnectionClosed(None, "no handshake response")
        except BaseException:
            close_socket(sock)
            raise

    async def send_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes as they are (tests use this to send malformed frames).  ConnectionClosed
        (1006) when the connection is gone, as ``receive`` says it."""
        async with self._send_lock:
            await self._send_buffers([data])

    async def _send_buffers(self, buffers: list) -> None:
        try:
            await send_buffers(self.sock, buffers, self.yielder)
        except Broken as exc:
            self.closed = True
            raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, f"connection lost: {exc}") from None

    async def send(self, kind: str, body: bytes, *, seq: int = 0) -> None:
        """Send one envelope; ``body`` is already-packed msgpack (e.g. ``msgpack.packb(x)``).

        With a ``window`` (and ``seq`` 0) a stream kind gets the master's next number and is kept
        for re-sending: numbered under the send lock, so numbers go out in order.  A kept message
        whose send raises ``ConnectionClosed`` goes again after the reconnect's hello
        (``connect(..., resume=this)``): do not send it again yourself."""
        if self.superseded:
            raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, "superseded by a connection that resumed it")
        async with self._send_lock:
            if self.window is not None and seq == 0:
                seq = self.window.number(kind, body)
            await self._send_buffers([encode_client_frame(OP_BINARY, build_envelope(kind, seq, body))])

    async def send_obj(self, kind: str, obj: Any) -> None:
        """Send one envelope whose body is ``obj`` packed with msgpack."""
        await self.send(kind, msgpack.packb(obj, use_bin_type=True))

    async def receive_frame(self) -> tuple[int, bytes]:
        """The next data message as (opcode, payload); answers pings on the way."""
        while True:
            while self.pending:
                opcode, payload = self.pending.pop(0)
                if opcode == OP_PING:
                    await self.send_raw(encode_client_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    code, reason = parse_close_payload(payload)
                    self.close_code, self.close_reason = code, reason
                    if not self.closed:
                        self.closed = True
                        try:
                            await self.send_raw(encode_client_frame(OP_CLOSE, payload[:2]))
                        except Broken:
                            pass
                    raise ConnectionClosed(code, reason)
                elif opcode == OP_PONG:
                    continue
                else:
                    return opcode, payload
            if self.close_code is not None or self.closed:
                raise ConnectionClosed(self.close_code if self.close_code is not None else CloseCode.ABNORMAL_CLOSURE,
                                       self.close_reason)
            try:
                data = await recv(self.sock, RECV_BYTES, self.yielder)
            except Broken:
                data = b""
            if not data:
                self.closed = True
                self.close_code = self.close_code if self.close_code is not None else CloseCode.ABNORMAL_CLOSURE
                raise ConnectionClosed(self.close_code, "connection lost")
            self.decoder.feed(data)
            while True:
                event = self.decoder.next_event()
                if event is None:
                    break
                self.pending.append(event)

    async def receive_batch(self) -> list:
        """The payloads of every data message that one read completes: possibly none, never waiting
        for a second read.  For receivers that must keep up with a server (a load generator): the
        socket reads straight into the frame decoder's buffer, and the payloads are not parsed as
        envelopes (``parse_delivered`` does that).  Pings are answered and pongs dropped on the way;
        a close frame or a lost connection raises ``ConnectionClosed`` as ``receive_frame`` does."""
        payloads = []
        if not self.pending:
            if self.close_code is not None or self.closed:
                raise ConnectionClosed(self.close_code if self.close_code is not None else 1006, self.close_reason)
            decoder = self.decoder
            try:
                n = await recv_into(self.sock, decoder.get_buffer(), self.yielder)
            except Broken:
                n = 0
            if n == 0:
                self.closed = True
                self.close_code = self.close_code if self.close_code is not None else 1006
                raise ConnectionClosed(self.close_code, "connection lost")
            decoder.buffer_updated(n)
            while (event := decoder.next_event()) is not None:
                self.pending.append(event)
            await self.yielder.account(n)
        events, self.pending = self.pending, []
        for index, (opcode, payload) in enumerate(events):
            if opcode == OP_CLOSE:
                # The close and what follows it go back, for receive_frame to handle as always.
                self.pending = events[index:]
                if payloads:
                    return payloads
                await self.receive_frame()  # raises ConnectionClosed
                raise AssertionError("receive_frame returned at a close frame")
            if opcode == OP_PING:
                await self.send_raw(encode_client_frame(OP_PONG, payload))
            elif opcode != OP_PONG:
                payloads.append(payload)
        return payloads

    async def receive(self) -> Envelope:
        """The next envelope from the relay (its bookkeeping done: see the class).

        A slave that resumed past a failover copy does not get the master's re-sends of messages
        it already had (docs/protocol.md 4b): they are counted in ``left_out`` instead."""
        if self._unreturned:
            return self._unreturned.popleft()
        while True:
            _opcode, payload = await self.receive_frame()
            envelope = parse_delivered(payload)
            if await self._note(envelope):
                return envelope

    async def wait_for_hello(self) -> dict:
        """Read up to the next ``hello`` (the relay sends one first on every connection) and return
        its body; what was read stays for ``receive`` to return, in order."""
        read = []
        try:
            for _ in range(MAX_ENVELOPES_BEFORE_HELLO):
                _opcode, payload = await self.receive_frame()
                envelope = parse_delivered(payload)
                if not await self._note(envelope):
                    continue
                read.append(envelope)
                if envelope.kind == "hello" and envelope.sender == "":
                    return self.hello
        finally:
            self._unreturned.extend(read)
        raise EnvelopeError(f"no hello among the relay's first {MAX_ENVELOPES_BEFORE_HELLO} envelopes")

    def resume_params(self) -> dict:
        """``after``, ``epoch`` and ``master_count`` (those known) to reconnect with and resume."""
        params = {}
        if self.role == "slave" and self.last_seq is not None and self.epoch is not None:
            params["after"] = self.last_seq
            params["epoch"] = self.epoch
            if self._applied_count() is not None:
                params["master_count"] = self._applied_count()
        return params

    def _continue_from(self, previous: "ClientConnection") -> None:
        """Take over a previous connection's bookkeeping: this one resumes where it stopped (the
        next hello compares its counts with it)."""
        self.role, self.epoch = previous.role, previous.epoch
        self.last_seq, self.master_count = previous.last_seq, previous.master_count
        self._skip_through, self.left_out = previous._skip_through, previous.left_out

    def _applied_count(self) -> Optional[int]:
        """A slave's count of master messages applied (more than ``master_count`` while re-sends are
        left out)."""
        return self._skip_through if self._skip_through is not None else self.master_count

    def _relay_body(self, envelope: Envelope) -> dict:
        try:
            body = envelope.decode()
        except ValueError as exc:
            raise EnvelopeError(f"the relay's {envelope.kind} body is not msgpack: {exc}") from None
        if not isinstance(body, dict):
            raise EnvelopeError(f"the relay's {envelope.kind} body is not a map")
        return body

    async def _note(self, envelope: Envelope) -> bool:
        """The bookkeeping of one envelope; False for a re-send this slave leaves out."""
        kind, seq, sender = envelope.kind, envelope.seq, envelope.sender
        if sender == "" and seq == 0 and kind in ("hello", "resync", "ack"):
            body = self._relay_body(envelope)
            try:
                if kind == "hello":
                    await self._note_hello(body)
                elif kind == "resync":
                    if isinstance(body.get("epoch"), int):
                        self.epoch = body["epoch"]
                    if self.role == "slave":
                        self.last_seq = None  # what follows replaces the state, numbered afresh
                        self.master_count = _count_or_none(body.get("master_count"))
                        self._skip_through = None
                elif self.window is not None:
                    self.window.on_ack(body)
            except ValueError as exc:  # the window refused a bad held
                raise EnvelopeError(str(exc)) from None
            return True
        if seq > 0 and self.role == "slave" and kind not in ("pointer", "control"):
            if self.last_seq is not None and seq <= self.last_seq:
                return True  # already seen: counted once
            self.last_seq = seq
            if sender == "master" and self.master_count is not None:
                self.master_count += 1
                if self._skip_through is not None:
                    repeat = self.master_count <= self._skip_through
                    if self.master_count >= self._skip_through:
                        self._skip_through = None
                    if repeat:
                        self.left_out += 1
                        return False
        return True

    async def _note_hello(self, body: dict) -> None:
        self.hello = body
        self.role = body.get("role")
        if isinstance(body.get("epoch"), int):
            self.epoch = body["epoch"]
        if self.role == "master" and self.window is not None:
            async with self._send_lock:
                # Under the lock: nothing new may go out before (or between) the re-sent messages.
                plan = self.window.on_hello(body)
                frames = [encode_client_frame(OP_BINARY, build_envelope(m.kind, m.seq, m.body)) for m in plan.resend]
                for start in range(0, len(frames), FRAMES_PER_SENDMSG):
                    await self._send_buffers(frames[start:start + FRAMES_PER_SENDMSG])
            self.resumed = plan.resumed
        elif self.role == "slave":
            self.resumed = body.get("catchup") == "resume"
            if not self.resumed:
                self.last_seq = None
            elif _count_or_none(body.get("after")) is not None:
                # Across epochs the stream continues from the copy's end, maybe below our last seq.
                self.last_seq = body["after"]
            count = _count_or_none(body.get("master_count"))
            applied = self._applied_count()
            # Resumed from a copy that ends before what we applied: the master's re-sends of what we
            # have come first, left out until our count is back.
            behind = self.resumed and count is not None and applied is not None and applied > count
            self._skip_through = applied if behind else None
            self.master_count = count
        else:
            self.resumed = False

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame, wait briefly for the relay's, and drop the connection."""
        try:
            if not self.closed:
                self.closed = True
                await self.send_raw(encode_client_frame(OP_CLOSE, close_payload(code, reason)))
                with trio.move_on_after(2):
                    while True:
                        data = await recv(self.sock, RECV_BYTES, self.yielder)
                        if not data:
                            break
        except Broken:
            pass
        finally:
            close_socket(self.sock)

    async def __aenter__(self) -> "ClientConnection":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
