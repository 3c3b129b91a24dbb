"""The routes of the relay's two HTTP listeners, sans-IO: which handler answers which request.

The contract between the server (relay/_server.py) and every handler named in :func:`relay_routes`
(relay/_api.py, relay/_longpoll.py, relay/_wsattach.py):

* A route is ``(listeners, method, path pattern) -> handler name``.  :meth:`RouteTable.match`
  returns the route and its path parameters, or raises :class:`HTTPError`: 404 when no route of
  that listener has the path, 405 with ``Allow`` when some route of that listener has it under
  other methods.  A route of one listener is invisible on the other: an admin path asked on the
  public listener is a 404 (not a 405 that would say it exists), and so is the client API on the
  private one.
* A handler is ``async def handler(request: Request) -> Response | Upgrade``.  It gets the request
  head, the query and the path parameters, and reads a body, when its route takes one, with
  ``await request.read_body(limit)`` (413, 408 and 400 are raised there).  It never writes to the
  socket: the server sends the :class:`Response` (and keeps the connection for the next request
  when HTTP allows), or for an :class:`Upgrade` sends 101 and hands the socket to
  ``Upgrade.run``; the connection ends when that returns.
* A handler refuses by raising :class:`HTTPError`, which the server answers (JSON, SPEC 3) and
  counts in ``relay_handshake_failures_total`` by its code.  Any other exception is a bug: the
  server answers 500 and closes that one connection.
* A ``cors`` route (the client API under ``/cobrowse/``) is origin-checked by the server before its
  handler runs (403 for an origin that is not allowed, SPEC 6), and answers OPTIONS on its path
  with the CORS preflight (handler ``preflight``, made here for every cors path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional
from urllib.parse import parse_qs, urlsplit

import h11

from relay._errors import HTTPError

__all__ = ["PUBLIC", "PRIVATE", "FORWARDED", "Route", "Match", "RouteTable", "Request", "Response", "Upgrade",
           "relay_routes", "parse_target", "json_body", "STATIC_FILES"]

PUBLIC = "public"  # the client API, WebSocket, long-poll, demo pages, /health
PRIVATE = "private"  # node to node traffic and the admin endpoints, never reachable from the public side
# A request that a peer node forwarded to this one over the private listener (it carries
# x-relay-forwarded-by, relay/_forward.py): only the routes of one session are reachable so.
FORWARDED = "forwarded"
BOTH = (PUBLIC, PRIVATE)
CLIENT = (PUBLIC, FORWARDED)
PREFLIGHT = "preflight"

STATIC_FILES = {  # path -> (file in relay/static, content type)
    "/cobrowse/client.js": ("client.js", "application/javascript; charset=utf-8"),
    "/cobrowse/master.html": ("master.html", "text/html; charset=utf-8"),
    "/cobrowse/slave.html": ("slave.html", "text/html; charset=utf-8"),
    "/cobrowse/capture.js": ("capture.js", "application/javascript; charset=utf-8"),  # the demo's page capture
    "/cobrowse/replay.js": ("replay.js", "application/javascript; charset=utf-8"),  # and its replay
}


@dataclass(frozen=True)
class Route:
    """``method`` on ``pattern`` (segments ``{name}`` match one non-empty segment) -> ``handler``."""

    listeners: tuple
    method: bytes
    pattern: str
    handler: str
    cors: bool = False


def relay_routes(*, demo_pages: bool = True) -> list:
    """Every route of a relay node, in the order ``Allow`` lists their methods."""
    routes = [
        # The load balancer's probe (public) and the operators' (private); HEAD for probes that use it.
        Route(BOTH, b"GET", "/health", "health"),
        Route(BOTH, b"HEAD", "/health", "health"),
        Route((PRIVATE,), b"GET", "/metrics", "metrics"),
        Route((PRIVATE,), b"HEAD", "/metrics", "metrics"),
        Route((PRIVATE,), b"GET", "/sessions", "sessions"),
        Route((PRIVATE,), b"HEAD", "/sessions", "sessions"),
        Route((PRIVATE,), b"GET", "/cluster", "cluster"),
        Route((PRIVATE,), b"HEAD", "/cluster", "cluster"),
        # The client API (SPEC 3).
        Route((PUBLIC,), b"POST", "/cobrowse/sessions", "create_session", cors=True),
        # A request about a session that reaches a node which does not host it is forwarded to the
        # host's private listener (SPEC 5, "Routing"; relay/_server.py): FORWARDED reaches these too.
        Route(CLIENT, b"POST", "/cobrowse/sessions/{session}/join", "join_session", cors=True),
        Route(CLIENT, b"DELETE", "/cobrowse/sessions/{session}", "end_session", cors=True),
        Route(CLIENT, b"GET", "/cobrowse/ws/{session}", "websocket", cors=True),
        Route(CLIENT, b"GET", "/cobrowse/poll/{session}", "poll_get", cors=True),
        Route(CLIENT, b"POST", "/cobrowse/poll/{session}", "poll_post", cors=True),
    ]
    if demo_pages:
        # HEAD answers like GET without the body (relay/_http.py), for probes and caches.
        routes += [Route((PUBLIC,), method, path, "static") for path in STATIC_FILES for method in (b"GET", b"HEAD")]
    return routes


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict  # {name: segment} of the pattern's {name} segments


class RouteTable:
    """Routes compiled for matching (a dozen patterns: a linear scan is the fast way)."""

    def __init__(self, routes: list) -> None:
        self.routes = list(routes)
        preflights = {}
        for route in routes:
            if route.cors:
                for listener in route.listeners:
                    preflights.setdefault((listener, route.pattern), Route((listener,), b"OPTIONS",
                                                                            route.pattern, PREFLIGHT, cors=True))
        self.routes += preflights.values()
        seen = set()
        for route in self.routes:
            for listener in route.listeners:
                key = (listener, route.method, route.pattern)
                if key in seen:
                    raise ValueError(f"two routes for {route.method.decode()} {route.pattern} on {listener}")
                seen.add(key)
        self._compiled = [(route, _segments(route.pattern)) for route in self.routes]

    def handler_names(self) -> set:
        return {route.handler for route in self.routes}

    def match(self, listener: str, method: bytes, path: str) -> Match:
        """The route of ``method`` on ``path`` at ``listener``; HTTPError 404 or 405 otherwise."""
        parts = path.split("/")
        allowed = []
        for route, segments in self._compiled:
            if listener not in route.listeners:
                continue
            params = _match_segments(segments, parts)
            if params is None:
                continue
            if route.method == method:
                return Match(route, params)
            if route.method not in allowed:
                allowed.append(route.method)
        if allowed:
            allow = ", ".join(m.decode() for m in allowed)
            raise HTTPError(405, "method-not-allowed", f"{path} takes {allow}", [("allow", allow)])
        raise HTTPError(404, "not-found", "no such resource")


def _segments(pattern: str) -> tuple:
    """("cobrowse", "ws", None) for "/cobrowse/ws/{session}": a parameter is (name,) in a tuple."""
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with '/'")
    return tuple((piece[1:-1],) if piece.startswith("{") and piece.endswith("}") else piece
                 for piece in pattern.split("/"))


def _match_segments(segments: tuple, parts: list) -> Optional[dict]:
    if len(segments) != len(parts):
        return None
    params = {}
    for segment, part in zip(segments, parts):
        if isinstance(segment, tuple):
            if not part:
                return None
            params[segment[0]] = part
        elif segment != part:
            return None
    return params


def parse_target(target: bytes) -> tuple:
    """(path, {name: first value}) of a request target; HTTPError 400 if it cannot be parsed."""
    try:
        parts = urlsplit(target.decode("latin-1"))
    except ValueError:  # e.g. "//[x": h11 accepts it, urlsplit does not
        raise HTTPError(400, "bad-request", "malformed request target") from None
    return parts.path, {key: values[0] for key, values in parse_qs(parts.query).items()}


def json_body(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Request:
    """What a handler sees of one HTTP request."""

    __slots__ = ("head", "path", "query", "params", "connection_id", "peer_ip", "scheme", "_read_body")

    def __init__(self, head: h11.Request, path: str, query: dict, params: dict, *, connection_id: str = "",
                 peer_ip: Optional[str] = None, scheme: str = "http",
                 read_body: Optional[Callable[[int], Awaitable[bytes]]] = None) -> None:
        self.head = head
        self.path = path
        self.query = query
        self.params = params
        self.connection_id = connection_id
        self.peer_ip = peer_ip  # the TCP peer (a trusted proxy's X-Forwarded-For may name the client)
        self.scheme = scheme  # "https" when it came over TLS (to this node, or to the node that forwarded it)
        self._read_body = read_body

    def header_values(self, name: bytes) -> list:
        """Every value of a request header (lower-case name; latin-1), in order."""
        return [value.decode("latin-1") for key, value in self.head.headers if key == name]

    @property
    def method(self) -> bytes:
        return self.head.method

    def header(self, name: bytes) -> Optional[str]:
        """The first value of a request header (lower-case name; latin-1), or None."""
        for key, value in self.head.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    async def read_body(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (HTTPError 413 past it)."""
        if self._read_body is None:
            return b""
        return await self._read_body(limit)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list = field(default_factory=list)

    @classmethod
    def json(cls, status: int, obj, headers=()) -> "Response":
        return cls(status, json_body(obj), headers=list(headers))


@dataclass
class Upgrade:
    """Switch the connection to WebSocket: send 101 with ``headers``, then ``await run(sock, leftover)``
    (``leftover``: the bytes the client sent after its request head)."""

    headers: list
    run: Callable
