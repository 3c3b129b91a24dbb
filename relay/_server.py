"""The relay server: its lifecycle (listeners, tasks, graceful shutdown) and the dispatch of requests.

``serve(config)`` runs one node: a public listener (client API, WebSocket, long-poll, demo pages,
``/health``) and a private one (``/health``, ``/metrics``, ``/sessions``: never on the public one).
Each accepted socket (relay/_listener.py) starts as HTTP/1.1 (relay/_http.py); every request is
matched in the route table (relay/_routes.py, which states the handlers' contract) and answered by
its handler: the JSON API (relay/_api.py), the WebSocket attach (relay/_wsattach.py, after which the
socket belongs to relay/_websocket.py) or long-polling (relay/_longpoll.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import socket
from dataclasses import dataclass
from functools import partial
from typing import Optional

import h11
import trio

from relay._accel import SHADOWED_BUILD, SHADOWED_BUILD_HINT, implementation
from relay._api import Api, ApiContext
from relay._closecodes import CloseCode
from relay._config import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_HANDSHAKE_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PING_INTERVAL_S,
    Config,
    ConfigError,
)
from relay._errors import HTTPError
from relay._forward import FORWARD_ANSWER_TIMEOUT_S, FORWARDED_BY, FORWARDED_PEER, FORWARDED_PROTO, forward_request
from relay._fdlimit import fd_limit_warning
from relay._handshake import accept_headers
from relay._host import SessionHost
from relay._http import HTTPConnection
from relay._listener import Connections, accept_loop, listen_socket
from relay._logging import limit_log, log_event
from relay._longpoll import LongPollTransport
from relay._metrics import Metrics
from relay._netio import Broken, close_socket
from relay._outbox import Outbox
from relay._routes import FORWARDED, PREFLIGHT, PRIVATE, PUBLIC, Request, RouteTable, Upgrade, parse_target, relay_routes
from relay._session import Session
from relay._tls import NodeTLS, TLSSettings, accept_tls, load_context, node_tls, server_context
from relay._websocket import EchoHandler, WebSocketConnection
from relay._wsattach import WebSocketAttach

__all__ = ["serve", "serve_echo", "Listening", "Server"]

log = logging.getLogger("relay.server")

LIMIT_STATUSES = frozenset({408, 413, 429, 503})  # answers that mean a limit was hit: logged (rate-limited)
# In a cluster, the transports' answers set the sticky cookie too (create and join set their own).
COOKIE_ON_ATTACH = frozenset({"websocket", "poll_get", "poll_post"})
ECHO_QUEUE_MESSAGES = 4  # the echo outbox holds this many messages of the maximum size
_connection_ids = itertools.count(1)


@dataclass(frozen=True)
class Listening:
    """What ``serve`` bound, reported through ``task_status.started``."""

    public_host: str
    public_port: int
    private_host: str
    private_port: int


async def _upgrade(http: HTTPConnection, upgrade: Upgrade) -> None:
    leftover = await http.switch_to_websocket(upgrade.headers)
    await upgrade.run(http.sock, leftover)


class Server:
    """One relay node.  Use :func:`serve`; this class is the embedding-friendly handle behind it."""

    def __init__(self, config: Config) -> None:
        config.validate()
        cluster = None
        if config.cluster is not None:
            from relay._cluster import load_cluster

            cluster = load_cluster(config.cluster)
            spec = cluster.nodes.get(config.node_name)
            if spec is None:
                raise ConfigError(f"node_name {config.node_name!r} is not a node of {config.cluster} "
                                  f"(its nodes: {', '.join(cluster.nodes)})")
            # A node of a cluster listens where the cluster file says: every node reads the same file.
            config = dataclasses.replace(config, listen=spec.public, private_listen=spec.private)
        self.config = config
        self.tls: NodeTLS = node_tls(config)  # (a certificate that cannot be used fails here, before binding)
        owns = (lambda session_id: cluster.ring.owner(session_id) == config.node_name) if cluster else (lambda _id: True)
        self.host = SessionHost(config, owns=owns,
                                observer=self._observe if config.on_message is not None else None)
        self.metrics = Metrics(lambda: self.host.sessions.values(), self.host.ended_stats,
                               self.host.ended_published)
        self.cluster = None
        if cluster is not None:
            from relay._clusternode import ClusterNode

            self.cluster = ClusterNode(cluster, config, self.host, self.metrics)
            self.cluster.peer_tls = self.tls.peers
            self.host.on_end = self.cluster.session_ended
        self.shutting_down = False
        self._connections = Connections(config.max_connections, on_refused=self._refused)
        self._listeners: list = []
        context = ApiContext(config, self.host, self.metrics, config.set_cookie_value(), self.cluster)
        self.api = Api(context)
        self.routes = RouteTable(relay_routes(demo_pages=config.demo_pages))
        self._handlers = {**self.api.handlers(), **WebSocketAttach(context).handlers(),
                          **LongPollTransport(context).handlers()}
        missing = self.routes.handler_names() - self._handlers.keys()
        if missing:  # a route without a handler would be a 500 at its first request: fail now
            raise RuntimeError(f"routes without a handler: {sorted(missing)}")

    @property
    def connections(self) -> int:
        """How many connections are open now (both listeners)."""
        return self._connections.count

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, shutdown: Optional[trio.Event] = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self.cluster is None:
            await self._run(shutdown, task_status)
            return
        async with trio.open_nursery() as nursery:
            # Join the cluster (or be refused: another ring, our name live elsewhere) before binding.
            await nursery.start(self.cluster.run)
            await self._run(shutdown, task_status)
            nursery.cancel_scope.cancel()

    async def _run(self, shutdown: Optional[trio.Event], task_status) -> None:
        config = self.config
        public = listen_socket(config.listen, "listen")
        try:
            private = listen_socket(config.private_listen, "private_listen")
        except BaseException:
            public.close()
            raise
        self._listeners = [public, private]
        public_host, public_port = public.getsockname()[:2]
        private_host, private_port = private.getsockname()[:2]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.host.run_timers)
                for sock, listener, tls in ((public, PUBLIC, self.tls.public), (private, PRIVATE, self.tls.private)):
                    await nursery.start(partial(accept_loop, sock, self._connection_handler(listener, tls),
                                                self._connections, answer_overload=tls is None))
                if config.join_policy == "open":
                    log_event(log, logging.WARNING, "node.join_policy_open", node=config.node_name,
                              hint="anyone who knows a session ID sees its page: use approve or ticket in production")
                log_event(log, logging.INFO, "node.listening", node=config.node_name,
                          public=f"{public_host}:{public_port}", private=f"{private_host}:{private_port}",
                          public_tls=self.tls.public is not None, private_tls=self.tls.private is not None,
                          implementation=implementation())
                fd_warning = fd_limit_warning(config.max_connections)
                if fd_warning is not None:
                    log_event(log, logging.WARNING, "node.fd_limit_low", detail=fd_warning)
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
            await self._connections.wait_none_left()
        log_event(log, logging.INFO, "node.shutdown", connections_left=self.connections)

    def _refused(self) -> None:
        self.metrics.handshake_failures.labels("too-many-connections").inc()

    def _observe(self, session: Session, kind: str, seq: int, size: int) -> None:
        self.host.call_hook(self.config.on_message, session.id, kind, seq, size)

    def _connection_handler(self, listener: str, tls):
        if tls is None:
            async def handle(sock: socket.socket, _address) -> None:
                await self._handle_connection(sock, listener, "http")
            return handle

        async def handle_tls(sock: socket.socket, address) -> None:
            # In the connection's own task: the connection limit counts it, and the handshake has
            # the request head's timeout (a client that never finishes it is a slowloris).
            stream = await accept_tls(sock, tls, timeout_s=self.config.handshake_timeout_s, listener=listener,
                                      peer=_address_text(address))
            if stream is None:
                self.metrics.handshake_failures.labels("tls-handshake").inc()
                return
            try:
                await self._handle_connection(stream, listener, "https")
            finally:
                stream.close()  # our close_notify (the listener closes the socket itself)
        return handle_tls

    async def _handle_connection(self, sock, listener: str, scheme: str) -> None:
        """HTTP/1.1 requests one after the other until the client is done or the socket is upgraded.
        ``sock`` is the socket, or its TLSStream on a TLS listener (``scheme`` https)."""
        http = HTTPConnection(sock, max_header_bytes=self.config.max_header_bytes)
        http.scheme = scheme
        connection_id = f"c{next(_connection_ids)}"
        try:
            while not self.shutting_down:
                request = await http.next_request(self.config.handshake_timeout_s)
                if request is None:
                    break
                try:
                    upgraded = await self._dispatch(http, request, listener, connection_id, scheme)
                except HTTPError as error:
                    self.metrics.handshake_failures.labels(error.code).inc()
                    if error.status in LIMIT_STATUSES:
                        limit_log.hit(error.code, status=error.status, peer=http.peer, conn=connection_id)
                    await http.respond_error(error)
                    upgraded = False
                if upgraded:
                    break
                if not http.reusable:
                    await http.linger()
                    break
        except Broken:
            pass
        except Exception:
            # A bug must cost one connection, never the process or another client's session.
            log.exception("internal.error", extra={"relay_fields": {"conn": connection_id}})
            await http.try_error(500, "internal-error", "internal error")

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, http: HTTPConnection, head: h11.Request, listener: str, connection_id: str,
                        scheme: str = "http") -> bool:
        """Answer one request (route -> handler).  Returns True if the connection became a WebSocket."""
        path, query = parse_target(head.target)
        peer_ip = http.peer_ip
        if listener == PRIVATE and self.cluster is not None and any(name == FORWARDED_BY for name, _ in head.headers):
            # A request that a peer node forwarded: the client is the one it names, and so is the
            # scheme it used (the relay's own origin is https:// when it came over TLS).
            listener = FORWARDED
            peer_ip = next((value.decode("latin-1") for name, value in head.headers if name == FORWARDED_PEER), peer_ip)
            scheme = "https" if any(name == FORWARDED_PROTO and value == b"https" for name, value in head.headers) \
                else "http"
        match = self.routes.match(listener, head.method, path)
        request = Request(head, path, query, match.params, connection_id=connection_id, peer_ip=peer_ip, scheme=scheme,
                          read_body=lambda limit: http.read_body(limit, self.config.handshake_timeout_s))
        if match.route.cors:
            http.response_headers = self.api.check_origin(request)
        session_id = match.params.get("session")
        pin_cookie = []
        if self.cluster is not None and session_id is not None and match.route.handler != PREFLIGHT:
            if await self._route_to_host(http, head, listener, session_id, match.route.handler,
                                         request.connection_id):
                return True
            if match.route.handler in COOKIE_ON_ATTACH:
                # Hosted here (or taken over just now): the answer pins the client to this node,
                # whatever its cookie said (none, or the node it reached first).
                pin_cookie = [("set-cookie", self.api.context.cookie_header)]
                http.response_headers = http.response_headers + pin_cookie  # on every answer, errors too
        result = await self._handlers[match.route.handler](request)
        if isinstance(result, Upgrade):  # a 101 is sent without response_headers: it carries its own
            result.headers = list(result.headers) + pin_cookie
            await _upgrade(http, result)
            return True
        await http.respond(result.status, result.body, content_type=result.content_type, headers=result.headers)
        return False

    async def _route_to_host(self, http: HTTPConnection, head: h11.Request, listener: str, session_id: str,
                             handler: str, connection_id: str) -> bool:
        """In a cluster: forward the request to the session's host (True: the connection is done),
        or leave it to this node (False: the session is here now)."""
        from relay._clusternode import Forward

        located = await self.cluster.locate(session_id, forwarded=listener == FORWARDED)
        if not isinstance(located, Forward):
            return False
        upgrade = handler == "websocket" and any(name == b"upgrade" for name, _value in head.headers)
        if upgrade:
            body, leftover = None, bytes(http.conn.trailing_data[0])
        else:
            body, leftover = await http.read_body(self.config.poll_body_bytes, self.config.handshake_timeout_s), b""
        log_event(log, logging.DEBUG, "cluster.forward", conn=connection_id, session=session_id,
                  host=located.node, upgrade=upgrade)
        # A long-poll GET is answered when there is news, or after poll_wait_s.
        answer_timeout_s = FORWARD_ANSWER_TIMEOUT_S + (self.config.poll_wait_s if handler == "poll_get" else 0)
        await forward_request(http.sock, head, located.address, via=self.config.node_name, client_ip=http.peer_ip,
                              body=body, leftover=leftover, answer_timeout_s=answer_timeout_s, metrics=self.metrics,
                              tls=self.tls.peers, scheme=http.scheme)
        return True


def _address_text(address) -> Optional[str]:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else None


async def serve(config: Config, *, shutdown: Optional[trio.Event] = None,
                task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED) -> None:
    """Run one relay node until cancelled (or until ``shutdown`` is set: then gracefully).

    ``await nursery.start(serve, config)`` returns a :class:`Listening` with the bound ports
    (``listen = "127.0.0.1:0"`` picks a free one).
    """
    await Server(config).run(shutdown=shutdown, task_status=task_status)


async def serve_echo(listen: str = DEFAULT_ECHO_LISTEN, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     ping_interval_s: float = DEFAULT_PING_INTERVAL_S, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                     tls: Optional[TLSSettings] = None,
                     task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """A WebSocket echo server on the same connection code as sessions (for Autobahn|Testsuite).

    ``await nursery.start(serve_echo, "127.0.0.1:0")`` returns the bound ``(host, port)``; the limits
    default to Config's.  With ``tls`` it speaks WSS only.
    """
    context = load_context(server_context, tls, "--tls-cert-file/--tls-key-file") if tls is not None else None
    listener = listen_socket(listen, "listen")
    host, port = listener.getsockname()[:2]

    async def run_echo(sock: socket.socket, leftover: bytes) -> None:
        outbox = Outbox(limit=max_message_bytes * ECHO_QUEUE_MESSAGES)
        await WebSocketConnection(sock, outbox, EchoHandler(outbox), max_message_bytes=max_message_bytes,
                                  ping_interval_s=ping_interval_s, idle_timeout_s=idle_timeout_s,
                                  leftover=leftover).run()

    async def handle(sock: socket.socket, address) -> None:
        if context is not None:
            stream = await accept_tls(sock, context, timeout_s=DEFAULT_HANDSHAKE_TIMEOUT_S, listener="echo",
                                      peer=_address_text(address))
            if stream is None:
                return
            try:
                await handle_http(stream)
            finally:
                stream.close()
            return
        await handle_http(sock)

    async def handle_http(sock) -> None:
        http = HTTPConnection(sock, max_header_bytes=DEFAULT_MAX_HEADER_BYTES)
        request = await http.next_request(DEFAULT_HANDSHAKE_TIMEOUT_S)
        if request is None:
            return
        try:
            upgrade = Upgrade(accept_headers(request), run_echo)
        except HTTPError as error:
            await http.respond_error(error)
            return
        await _upgrade(http, upgrade)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(accept_loop, listener, handle, Connections(), answer_overload=context is None))
            task_status.started((host, port))
    finally:
        close_socket(listener)
