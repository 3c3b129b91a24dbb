"""The relay server: listeners, connections, routing of HTTP requests, graceful shutdown.

``serve(config)`` runs one node: a public listener (client API, WebSocket, long-poll, demo pages,
``/health``) and a private one (``/health``, ``/metrics``, ``/sessions``: never on the public one).
Each accepted socket starts as HTTP/1.1 (:mod:`relay._http`); a WebSocket upgrade hands the socket
to :class:`relay._websocket.WebSocketConnection`.
"""

from __future__ import annotations

import importlib.resources
import inspect
import itertools
import json
import logging
import socket
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import h11
import msgpack
import trio

from relay._accel import SHADOWED_BUILD, SHADOWED_BUILD_HINT, implementation
from relay._closecodes import CloseCode
from relay._config import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_HANDSHAKE_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PING_INTERVAL_S,
    Config,
    JoinRequest,
    parse_hostport,
)
from relay._endpoint import SessionSocketHandler, deliver_envelope
from relay._errors import EnvelopeError, FloodError
from relay._handshake import accept_headers, is_upgrade_request
from relay._host import LimitReached, SessionHost
from relay._http import HTTPConnection, HTTPError
from relay._logging import log_event
from relay._metrics import CONTENT_TYPE_LATEST, Metrics
from relay._netio import Broken, close_socket
from relay._outbox import Outbox
from relay._session import Peer, Role, Session, SessionEnded
from relay._tickets import TicketAuthorizer
from relay._websocket import EchoHandler, WebSocketConnection

__all__ = ["serve", "serve_echo", "Listening", "Server"]

log = logging.getLogger("relay.server")

API_BODY_BYTES = 64 * 1024  # JSON bodies of create/join
CORS_MAX_AGE_S = 600  # how long a browser may cache a preflight answer
MAX_AGENT_ID_CHARS = 256  # an agent id is repeated in every presence event
LISTEN_BACKLOG = 1024
ECHO_QUEUE_MESSAGES = 4  # the echo server's outbox holds this many maximum-size messages
STATIC_FILES = {
    "/cobrowse/client.js": ("client.js", "application/javascript; charset=utf-8"),
    "/cobrowse/master.html": ("master.html", "text/html; charset=utf-8"),
    "/cobrowse/slave.html": ("slave.html", "text/html; charset=utf-8"),
}
_connection_ids = itertools.count(1)


@dataclass(frozen=True)
class Listening:
    """What ``serve`` bound, reported through ``task_status.started``."""

    public_host: str
    public_port: int
    private_host: str
    private_port: int


def _listen_socket(address: str, setting: str) -> socket.socket:
    host, port = parse_hostport(address, setting=setting)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class Server:
    """One relay node.  Use :func:`serve`; this class is the embedding-friendly handle behind it."""

    def __init__(self, config: Config) -> None:
        config.validate()
        self.config = config
        self.host = SessionHost(config, observer=self._observe if config.on_message is not None else None)
        self.metrics = Metrics(lambda: self.host.sessions.values(), self.host.ended_stats,
                               self.host.ended_published)
        self.connections = 0
        self.shutting_down = False
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._listeners: list = []
        self._cookie_header = config.set_cookie_value()
        self._tickets = TicketAuthorizer(config.ticket_secret()) if config.join_policy == "ticket" else None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, shutdown: Optional[trio.Event] = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        public = _listen_socket(config.listen, "listen")
        try:
            private = _listen_socket(config.private_listen, "private_listen")
        except BaseException:
            public.close()
            raise
        self._listeners = [public, private]
        public_host, public_port = public.getsockname()[:2]
        private_host, private_port = private.getsockname()[:2]
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.host.run_timers)
                nursery.start_soon(self._accept_loop, public, True)
                nursery.start_soon(self._accept_loop, private, False)
                if config.join_policy == "open":
                    log_event(log, logging.WARNING, "node.join_policy_open", node=config.node_name,
                              hint="anyone who knows a session ID sees its page: use approve or ticket in production")
                log_event(log, logging.INFO, "node.listening", node=config.node_name,
                          public=f"{public_host}:{public_port}", private=f"{private_host}:{private_port}",
                          implementation=implementation())
                if SHADOWED_BUILD is not None:
                    log_event(log, logging.WARNING, "node.shadowed_build", compiled=SHADOWED_BUILD,
                              hint=SHADOWED_BUILD_HINT)
                task_status.started(Listening(public_host, public_port, private_host, private_port))
                if shutdown is not None:
                    await shutdown.wait()
                    await self.shutdown()
                    nursery.cancel_scope.cancel()
        finally:
            for sock in self._listeners:
                close_socket(sock)

    async def shutdown(self) -> None:
        """Stop accepting, close every client with 1012 so it reconnects elsewhere, wait (bounded)."""
        self.shutting_down = True
        for sock in self._listeners:
            close_socket(sock)
        # Not announced as "ended": in a cluster the session goes on on the next replica.
        self.host.end_all("node shutting down", code=CloseCode.SERVICE_RESTART, announce=False)
        with trio.move_on_after(self.config.shutdown_grace_s):
            await self._no_connections.wait()
        log_event(log, logging.INFO, "node.shutdown", connections_left=self.connections)

    def _observe(self, session: Session, kind: str, seq: int, size: int) -> None:
        self.host.call_hook(self.config.on_message, session.id, kind, seq, size)

    async def _accept_loop(self, listener: socket.socket, public: bool) -> None:
        while not self.shutting_down:
            try:
                await trio.lowlevel.wait_readable(listener)
            except (trio.ClosedResourceError, OSError):
                return
            while True:
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # EMFILE and friends: back off instead of spinning
                    log_event(log, logging.WARNING, "accept.failed", error=str(exc))
                    await trio.sleep(0.1)
                    break
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.connections >= self.config.max_connections:
                    self.metrics.handshake_failures.labels("too-many-connections").inc()
                    _refuse_overloaded(sock)
                    continue
                self.connections += 1
                self._no_connections = trio.Event() if self.connections == 1 else self._no_connections
                self._nursery.start_soon(self._handle_connection, sock, address, public)

    async def _handle_connection(self, sock: socket.socket, address, public: bool) -> None:
        http = HTTPConnection(sock, max_header_bytes=self.config.max_header_bytes)
        connection_id = f"c{next(_connection_ids)}"
        try:
            while not self.shutting_down:
                request = await http.next_request(self.config.handshake_timeout_s)
                if request is None:
                    break
                try:
                    upgraded = await self._dispatch(http, request, public, connection_id)
                except HTTPError as error:
                    self.metrics.handshake_failures.labels(error.code).inc()
                    await http.respond_error(error)
                    upgraded = False
                if upgraded or not http.reusable:
                    break
        except Broken:
            pass
        except Exception:
            # A bug must cost one connection, never the process or another client's session.
            log.exception("internal.error", extra={"relay_fields": {"conn": connection_id}})
            await http.try_error(500, "internal-error", "internal error")
        finally:
            close_socket(sock)
            self.connections -= 1
            if self.connections == 0:
                self._no_connections.set()

    # ------------------------------------------------------------------ routing

    async def _dispatch(self, http: HTTPConnection, request: h11.Request, public: bool, connection_id: str) -> bool:
        """Answer one request.  Returns True if the connection became a WebSocket."""
        path, query = parse_target(request.target)
        method = request.method
        if path == "/health":
            await http.respond_json(200, {"status": "ok", "node": self.config.node_name,
                                          "sessions": len(self.host.sessions)})
            return False
        if not public:
            return await self._dispatch_private(http, method, path)
        if path in STATIC_FILES and method == b"GET" and self.config.demo_pages:
            name, content_type = STATIC_FILES[path]
            await http.respond(200, _static(name), content_type=content_type)
            return False
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "cobrowse":
            raise HTTPError(404, "not-found", "no such resource")
        self._check_origin(http)
        if method == b"OPTIONS":
            await self._preflight(http)
            return False
        if parts[1] == "sessions":
            if len(parts) == 2 and method == b"POST":
                await self._create_session(http)
            elif len(parts) == 4 and parts[3] == "join" and method == b"POST":
                await self._join_session(http, parts[2])
            elif len(parts) == 3 and method == b"DELETE":
                await self._end_session(http, parts[2], query)
            else:
                raise HTTPError(404 if len(parts) > 4 else 405, "not-found", "no such resource or method")
            return False
        if parts[1] == "ws" and len(parts) == 3:
            await self._websocket(http, request, parts[2], query, connection_id)
            return True
        if parts[1] == "poll" and len(parts) == 3:
            if method == b"GET":
                await self._poll_get(http, parts[2], query)
            elif method == b"POST":
                await self._poll_post(http, parts[2], query)
            else:
                raise HTTPError(405, "method-not-allowed", "long-poll takes GET and POST", [("allow", "GET, POST")])
            return False
        raise HTTPError(404, "not-found", "no such resource")

    async def _dispatch_private(self, http: HTTPConnection, method: bytes, path: str) -> bool:
        if path == "/metrics" and method == b"GET":
            await http.respond(200, self.metrics.render(), content_type=CONTENT_TYPE_LATEST)
        elif path == "/sessions" and method == b"GET":
            await http.respond_json(200, {"node": self.config.node_name,
                                          "sessions": [s.describe() for s in self.host.sessions.values()]})
        else:
            raise HTTPError(404, "not-found", "no such resource")
        return False

    def _check_origin(self, http: HTTPConnection) -> None:
        """SPEC 6: no Origin, the relay's own origin, or a configured one; 403 otherwise.

        An allowed cross-origin caller also gets the CORS headers that let a page on that origin
        read the answer and keep the sticky cookie (credentials).
        """
        origin = http.header(b"origin")
        if origin is None:
            return
        host = http.header(b"host")
        scheme = http.header(b"x-forwarded-proto") or "http"
        if host is not None and origin.lower() == f"{scheme}://{host}".lower():
            return
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            http.response_headers = [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-relay-seq"),
                ("vary", "Origin"),
            ]
            return
        raise HTTPError(403, "origin-not-allowed", f"origin {origin!r} is not allowed")

    async def _preflight(self, http: HTTPConnection) -> None:
        """A CORS preflight from an allowed origin (the origin was checked before)."""
        await http.respond(204, content_type="text/plain", headers=[
            ("access-control-allow-methods", "GET, POST, DELETE"),
            ("access-control-allow-headers", "content-type, authorization"),
            ("access-control-max-age", str(CORS_MAX_AGE_S)),
        ])

    def _session_or_404(self, session_id: str) -> Session:
        session = self.host.get(session_id)
        if session is None:
            raise HTTPError(404, "unknown-session", "no such session (unknown or ended)")
        return session

    def _authenticate(self, session: Session, token: Optional[str]):
        role, record = session.role_of_token(token)
        if role is None:
            raise HTTPError(403, "bad-token", "the token does not open this session")
        return role, record

    # ------------------------------------------------------------------ session API

    async def _read_json(self, http: HTTPConnection) -> dict:
        body = await http.read_body(API_BODY_BYTES, self.config.handshake_timeout_s)
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except ValueError:
            raise HTTPError(400, "bad-json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "bad-json", "the body must be a JSON object")
        return data

    async def _create_session(self, http: HTTPConnection) -> None:
        data = await self._read_json(http)
        chat = data.get("chat", False)
        if not isinstance(chat, bool):
            raise HTTPError(400, "bad-request", "'chat' must be true or false")
        try:
            session = self.host.create(chat=chat)
        except LimitReached as exc:
            raise HTTPError(503, "too-many-sessions", str(exc)) from None
        await http.respond_json(201, {"session": session.id, "master_token": session.master_token,
                                      "node": self.config.node_name, "chat": chat},
                                headers=[("set-cookie", self._cookie_header)])

    async def _join_session(self, http: HTTPConnection, session_id: str) -> None:
        data = await self._read_json(http)
        session = self._session_or_404(session_id)
        agent_id = data.get("agent")
        join_token = data.get("join_token")
        if agent_id is not None and not isinstance(agent_id, str) or join_token is not None and not isinstance(join_token, str):
            raise HTTPError(400, "bad-request", "'agent' and 'join_token' must be strings")
        if agent_id is not None and len(agent_id) > MAX_AGENT_ID_CHARS:
            raise HTTPError(400, "bad-request", f"'agent' is longer than {MAX_AGENT_ID_CHARS} characters")
        admitted = await self._join_verdict(JoinRequest(session_id, agent_id, join_token, http.header(b"origin")))
        if self.host.get(session_id) is not session:
            raise HTTPError(404, "unknown-session", "the session ended")
        if session.slave_slots_used() >= self.config.max_slaves_per_session:
            raise HTTPError(429, "too-many-slaves",
                            f"this session has its maximum of {self.config.max_slaves_per_session} slaves",
                            [("retry-after", str(int(self.config.slave_grace_s) or 1))])
        record = session.add_slave(agent_id, trio.current_time(), admitted=admitted)
        await http.respond_json(200, {"session": session.id, "slave_token": record.token, "slave": record.slave_id,
                                      "node": self.config.node_name, "mode": record.mode, "admitted": admitted},
                                headers=[("set-cookie", self._cookie_header)])

    async def _join_verdict(self, request: JoinRequest) -> bool:
        """Whether a join sees the session at once (True) or waits for the master (False); HTTPError 403
        when it is refused.  An embedder's hook decides before the policy (SPEC 6)."""
        hook = self.config.authorize_join
        if hook is not None:
            verdict = hook(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is not True:
                raise HTTPError(403, "join-refused", "the join was refused by the authorization hook")
            return True
        policy = self.config.join_policy
        if policy == "open":
            return True
        if policy == "ticket":
            if not self._tickets(request):
                raise HTTPError(403, "join-refused", "a valid join ticket for this session and agent is required "
                                                    "(each ticket admits one agent once)")
            return True
        return False  # "approve": the master admits it

    async def _end_session(self, http: HTTPConnection, session_id: str, query: dict) -> None:
        session = self._session_or_404(session_id)
        token = query.get("token")
        authorization = http.header(b"authorization")
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        role, _record = self._authenticate(session, token)
        if role is not Role.MASTER:
            raise HTTPError(403, "master-only", "only the master can end the session")
        self.host.end(session, "ended by the master")
        await http.respond(204)

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, http: HTTPConnection, request: h11.Request, session_id: str, query: dict,
                         connection_id: str) -> None:
        if not is_upgrade_request(request):
            raise HTTPError(426, "upgrade-required", "this endpoint speaks WebSocket",
                            [("upgrade", "websocket"), ("connection", "Upgrade")])
        session = self._session_or_404(session_id)
        role, record = self._authenticate(session, query.get("token"))
        after, epoch = _resume_params(query)
        headers = accept_headers(request)
        config = self.config
        peer = Peer(role, transport="ws", limit=config.slave_queue_bytes, connection_id=connection_id)
        leftover = await http.switch_to_websocket(headers)
        handler = SessionSocketHandler(session, peer, self.metrics)
        connection = WebSocketConnection(
            http.sock, peer, handler, max_message_bytes=config.max_message_bytes,
            ping_interval_s=config.ping_interval_s, idle_timeout_s=config.idle_timeout_s,
            leftover=leftover, connection_id=connection_id,
        )
        handler.connection = connection
        now = trio.current_time()
        try:
            if role is Role.MASTER:
                session.attach_master(peer, now)
            else:
                session.attach_slave(record, peer, now, after=after, epoch=epoch)
        except SessionEnded:
            peer.close(CloseCode.SESSION_ENDED, "session ended")
        log_event(log, logging.INFO, "ws.open", conn=connection_id, session=session.id, role=role.value,
                  slave=record.slave_id if record is not None else None)
        try:
            await connection.run()
        finally:
            if connection.close_code is not None:
                self.metrics.closes.labels(str(connection.close_code)).inc()
            log_event(log, logging.INFO, "ws.closed", conn=connection_id, session=session.id, role=role.value,
                      code=connection.close_code, peer_code=connection.peer_close_code,
                      reason=connection.close_reason or None)

    # ------------------------------------------------------------------ long-polling

    def _poll_peer(self, session: Session, role: Role, record, after: Optional[int], epoch: Optional[int]) -> Peer:
        """The long-poll peer of this token, attaching a new one when there is none (or on resume)."""
        current = session.current_peer(role, record)
        now = trio.current_time()
        if current is not None and current.transport == "poll" and not current.closing:
            if after is None or after >= current.last_seq_sent or role is Role.MASTER:
                current.last_seen = now
                return current
        peer = Peer(role, transport="poll", limit=self.config.slave_queue_bytes)
        peer.last_seen = now
        if role is Role.MASTER:
            session.attach_master(peer, now)
        else:
            session.attach_slave(record, peer, now, after=after, epoch=epoch)
        return peer

    async def _poll_get(self, http: HTTPConnection, session_id: str, query: dict) -> None:
        session = self._session_or_404(session_id)
        role, record = self._authenticate(session, query.get("token"))
        after, epoch = _resume_params(query)
        peer = self._poll_peer(session, role, record, after, epoch)
        if peer.poll_event is not None:
            peer.poll_event.set()  # an older GET for this peer returns now, empty
        if not peer.queue and not peer.closing:
            event = peer.poll_event = trio.Event()
            peer.wakeup = event.set
            with trio.move_on_after(self.config.poll_wait_s):
                await event.wait()
            if peer.poll_event is event:
                peer.poll_event = None
                peer.wakeup = _nothing
        peer.last_seen = trio.current_time()
        batch = peer.take_batch(max_bytes=self.config.max_message_bytes)
        if not batch and peer.closing:
            session.detach(peer, trio.current_time())
            raise HTTPError(410, "closed", peer.close_reason or "this long-poll client was closed",
                            details={"close_code": peer.close_code})
        parts = []
        for message in batch:
            parts.extend(message.envelope())
        await http.respond(200, b"".join(parts), content_type="application/msgpack",
                           headers=[("x-relay-seq", str(peer.last_seq_sent))])

    async def _poll_post(self, http: HTTPConnection, session_id: str, query: dict) -> None:
        session = self._session_or_404(session_id)
        role, record = self._authenticate(session, query.get("token"))
        body = await http.read_body(self.config.poll_body_bytes, self.config.handshake_timeout_s)
        current = session.current_peer(role, record)
        if current is not None and not current.closing:
            peer = current  # a client that receives on a WebSocket may still send by POST
        else:
            peer = self._poll_peer(session, role, record, None, None)
        count = 0
        try:
            for envelope in split_envelopes(body):
                self.metrics.message_in(role.value, len(envelope))
                deliver_envelope(session, peer, envelope, trio.current_time())
                count += 1
        except FloodError as exc:
            raise HTTPError(429, "too-many-refusals", f"envelope {count}: {exc}; this client was closed",
                            details={"accepted": count, "close_code": exc.close_code}) from None
        except EnvelopeError as exc:
            self.metrics.envelope_error()
            raise HTTPError(400, "bad-envelope", f"envelope {count}: {exc}") from None
        await http.respond_json(200, {"accepted": count})


def split_envelopes(body: bytes):
    """Yield each msgpack object of a long-poll body as a view (bodies are decoded by msgpack only
    to find where they end; the relay itself never looks inside)."""
    if not body:
        raise EnvelopeError("empty long-poll body: send one or more envelopes")
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(body), strict_map_key=False)
    unpacker.feed(body)
    view = memoryview(body)
    start = 0
    try:
        for _ in unpacker:
            end = unpacker.tell()
            yield view[start:end]
            start = end
    except EnvelopeError:
        raise
    except Exception as exc:
        raise EnvelopeError(f"malformed msgpack: {exc}") from None
    if start != len(body):
        raise EnvelopeError("the body ends in the middle of an envelope")


def parse_target(target: bytes) -> tuple:
    """(path, {name: first value}) of a request target; HTTPError 400 if it cannot be parsed."""
    try:
        parts = urlsplit(target.decode("latin-1"))
    except ValueError:  # e.g. "//[x": h11 accepts it, urlsplit does not
        raise HTTPError(400, "bad-request", "malformed request target") from None
    return parts.path, {key: values[0] for key, values in parse_qs(parts.query).items()}


def _resume_params(query: dict) -> tuple:
    def number(name):
        text = query.get(name)
        if text is None:
            return None
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            raise HTTPError(400, "bad-request", f"{name} must be a non-negative integer")
        return int(text)

    return number("after"), number("epoch")


def _nothing() -> None:
    return None


def _static(name: str) -> bytes:
    return importlib.resources.files("relay").joinpath("static", name).read_bytes()


def _refuse_overloaded(sock: socket.socket) -> None:
    body = b'{"error":"overloaded","message":"too many connections"}'
    try:
        sock.send(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
                  b"retry-after: 1\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    except OSError:
        pass
    sock.close()


async def serve(config: Config, *, shutdown: Optional[trio.Event] = None,
                task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED) -> None:
    """Run one relay node until cancelled (or until ``shutdown`` is set: then gracefully).

    ``await nursery.start(serve, config)`` returns a :class:`Listening` with the bound ports
    (``listen = "127.0.0.1:0"`` picks a free one).
    """
    await Server(config).run(shutdown=shutdown, task_status=task_status)


async def serve_echo(listen: str = DEFAULT_ECHO_LISTEN, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     ping_interval_s: float = DEFAULT_PING_INTERVAL_S, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                     task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """A WebSocket echo server on the same connection code as sessions (for Autobahn|Testsuite).

    ``await nursery.start(serve_echo, "127.0.0.1:0")`` returns the bound ``(host, port)``; the limits
    default to Config's.
    """
    listener = _listen_socket(listen, "listen")
    host, port = listener.getsockname()[:2]

    async def handle(sock):
        http = HTTPConnection(sock, max_header_bytes=DEFAULT_MAX_HEADER_BYTES)
        try:
            request = await http.next_request(DEFAULT_HANDSHAKE_TIMEOUT_S)
            if request is None:
                return
            try:
                headers = accept_headers(request)
            except HTTPError as error:
                await http.respond_error(error)
                return
            leftover = await http.switch_to_websocket(headers)
            outbox = Outbox(limit=max_message_bytes * ECHO_QUEUE_MESSAGES)
            await WebSocketConnection(sock, outbox, EchoHandler(outbox), max_message_bytes=max_message_bytes,
                                      ping_interval_s=ping_interval_s, idle_timeout_s=idle_timeout_s,
                                      leftover=leftover).run()
        except Broken:
            pass
        finally:
            close_socket(sock)

    try:
        async with trio.open_nursery() as nursery:
            task_status.started((host, port))
            while True:
                await trio.lowlevel.wait_readable(listener)
                while True:
                    try:
                        sock, _address = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    nursery.start_soon(handle, sock)
    finally:
        close_socket(listener)
