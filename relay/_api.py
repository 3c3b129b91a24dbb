"""The JSON API of a node (SPEC 3) and its admin endpoints: handlers of relay/_routes.py.

Every handler takes a :class:`relay._routes.Request` and returns a :class:`relay._routes.Response`
(the contract is at the top of relay/_routes.py); none touches a socket.  The session lookup, token
and resume-parameter checks here are shared with the two transports (relay/_wsattach.py,
relay/_longpoll.py), so that every route refuses the same way.
"""

from __future__ import annotations

import importlib.resources
import inspect
import json
from dataclasses import dataclass

import trio
from typing import Optional

from relay._config import Config, JoinRequest
from relay._errors import HTTPError
from relay._host import LimitReached, SessionHost
from relay._metrics import CONTENT_TYPE_LATEST, Metrics
from relay._routes import STATIC_FILES, Request, Response
from relay._session import Role, Session
from relay._ratelimit import ClientLimiter, TrustedProxies
from relay._tickets import TicketAuthorizer

__all__ = ["ApiContext", "Api", "session_or_404", "authenticate", "allow_connection", "resume_params"]

API_BODY_BYTES = 64 * 1024  # JSON bodies of create/join
CORS_MAX_AGE_S = 600  # how long a browser may cache a preflight answer
MAX_AGENT_ID_CHARS = 256  # an agent id is repeated in every presence event
MAX_RESUME_DIGITS = 20  # after= and epoch= are 64-bit counters
# What a trusted proxy may say about the browser's side of the connection (the Origin check).
FORWARDED_SCHEMES = ("http", "https")
FORWARDING_HEADERS = (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for")
CORS_HEADERS_PREFLIGHT = [
    ("access-control-allow-methods", "GET, POST, DELETE"),
    ("access-control-allow-headers", "content-type, authorization"),
    ("access-control-max-age", str(CORS_MAX_AGE_S)),
]


@dataclass(frozen=True)
class ApiContext:
    """What the handlers of one node share."""

    config: Config
    host: SessionHost
    metrics: Metrics
    cookie_header: str  # the Set-Cookie value that pins a client to this node
    cluster: Optional[object] = None  # relay._clusternode.ClusterNode when this node is part of a cluster


def session_or_404(host: SessionHost, session_id: str) -> Session:
    session = host.get(session_id)
    if session is None:
        raise HTTPError(404, "unknown-session", "no such session (unknown or ended)")
    return session


def allow_connection(session: Session, role, record, now: float) -> None:
    """HTTPError 429 with Retry-After when this participant reconnects too often (a reconnect storm)."""
    wait_s = session.allow_connection(role, record, now)
    if wait_s is not None:
        raise HTTPError(429, "too-many-reconnects", "this participant reconnects too often; wait and retry",
                        [("retry-after", str(int(wait_s + 0.999)))])


def authenticate(session: Session, token: Optional[str]) -> tuple:
    """(role, slave record or None) of a token; HTTPError 403 if it does not open this session."""
    role, record = session.role_of_token(token)
    if role is None:
        raise HTTPError(403, "bad-token", "the token does not open this session")
    return role, record


def resume_params(query: dict) -> tuple:
    """(after, epoch, master_count) of a reconnecting client, each None when absent; HTTPError 400 if
    malformed."""
    def number(name):
        text = query.get(name)
        if text is None:
            return None
        # isascii(): str.isdigit() is also true for digits that int() refuses ("²").
        if not (text.isascii() and text.isdigit()) or len(text) > MAX_RESUME_DIGITS:
            raise HTTPError(400, "bad-request", f"{name} must be a non-negative integer")
        return int(text)

    return number("after"), number("epoch"), number("master_count")


def _first_forwarded(value: Optional[str]) -> Optional[str]:
    """The first element of a forwarded header ("https, http" -> "https"): the client-facing hop."""
    if value is None:
        return None
    return value.split(",", 1)[0].strip() or None


def _static(name: str) -> bytes:
    return importlib.resources.files("relay").joinpath("static", name).read_bytes()


class Api:
    """The handlers of the JSON API, CORS and the admin endpoints, by route handler name."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.config = context.config
        self.host = context.host
        config = self.config
        self._proxies = TrustedProxies(config.trusted_proxies)
        self._creates = ClientLimiter(config.create_burst, config.create_rate_per_min / 60.0)
        self._joins = ClientLimiter(config.join_burst, config.join_rate_per_min / 60.0)
        # join_policy "ticket": a ticket admits the agent it names, once (relay/_tickets.py)
        secret = self.config.ticket_secret() if self.config.join_policy == "ticket" else None
        self._tickets = TicketAuthorizer(secret) if secret is not None else None

    def handlers(self) -> dict:
        return {name: getattr(self, name) for name in (
            "health", "metrics", "sessions", "cluster", "static", "preflight", "create_session", "join_session",
            "end_session")}

    # ------------------------------------------------------------------ admin and pages

    async def health(self, request: Request) -> Response:
        return Response.json(200, {"status": "ok", "node": self.config.node_name, "sessions": len(self.host.sessions)})

    async def metrics(self, request: Request) -> Response:
        return Response(200, self.context.metrics.render(), content_type=CONTENT_TYPE_LATEST)

    async def sessions(self, request: Request) -> Response:
        return Response.json(200, {"node": self.config.node_name,
                                   "sessions": [s.describe() for s in self.host.sessions.values()]})

    async def cluster(self, request: Request) -> Response:
        """This node's view of its cluster (live set, ring version, sessions hosted and their epochs)."""
        cluster = self.context.cluster
        if cluster is None:
            return Response.json(200, {"node": self.config.node_name, "cluster_name": None,
                                       "sessions_hosted": len(self.host.sessions)})
        return Response.json(200, await cluster.describe_now())

    async def static(self, request: Request) -> Response:
        name, content_type = STATIC_FILES[request.path]
        return Response(200, _static(name), content_type=content_type)

    # ------------------------------------------------------------------ CORS

    def check_origin(self, request: Request) -> list:
        """SPEC 6: no Origin, the relay's own origin, or a configured one; 403 otherwise.

        The relay's own origin is the scheme and Host the browser used.  Behind a load balancer that
        is what the balancer passes on: ``X-Forwarded-Proto`` (and ``X-Forwarded-Host`` when present),
        believed only from a TCP peer listed in ``trusted_proxies``: anyone else could claim any
        origin.  Returns the headers for every response to this request: an allowed cross-origin
        caller gets the CORS headers that let a page on that origin read the answer and keep the
        sticky cookie (credentials).
        """
        origin = request.header(b"origin")
        if origin is None:
            return []
        own = self._own_origin(request)
        if own is not None and origin.lower() == own.lower():
            return []
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            return [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-relay-seq"),
                ("vary", "Origin"),
            ]
        raise HTTPError(403, "origin-not-allowed", self._origin_hint(request, origin, own))

    def _from_trusted_proxy(self, request: Request) -> bool:
        return bool(self._proxies.networks) and request.peer_ip is not None and request.peer_ip in self._proxies

    def _own_origin(self, request: Request) -> Optional[str]:
        """``scheme://host`` of this request as the browser sent it, or None without a Host."""
        host = request.header(b"host")
        scheme = "http"
        if self._from_trusted_proxy(request):
            forwarded_host = _first_forwarded(request.header(b"x-forwarded-host"))
            if forwarded_host:
                host = forwarded_host
            forwarded_proto = (_first_forwarded(request.header(b"x-forwarded-proto")) or "").lower()
            if forwarded_proto in FORWARDED_SCHEMES:
                scheme = forwarded_proto
        if not host:
            return None
        return f"{scheme}://{host}"

    def _origin_hint(self, request: Request, origin: str, own: Optional[str]) -> str:
        """The 403 message: what to configure so that this origin is allowed."""
        message = f"origin {origin!r} is not allowed"
        if own is not None:
            message += f" (relay sees its own origin as {own!r})"
        forwarded = any(request.header(name) is not None for name in FORWARDING_HEADERS)
        if forwarded and not self._from_trusted_proxy(request):
            return (f"{message}: the request came through a proxy ({request.peer_ip}) that is not in "
                    f"trusted_proxies, so its X-Forwarded-Proto and X-Forwarded-Host are ignored: list it in "
                    f"trusted_proxies (--trusted-proxies), or add the origin to allowed_origins "
                    f"(--allowed-origins)")
        return (f"{message}: add it to allowed_origins (--allowed-origins), or if a proxy forwards to relay, "
                f"have it pass Host (proxy_set_header Host $http_host) and X-Forwarded-Proto and list it in "
                f"trusted_proxies (--trusted-proxies)")

    async def preflight(self, request: Request) -> Response:
        """A CORS preflight from an allowed origin (the server checked the origin before)."""
        return Response(204, content_type="text/plain", headers=list(CORS_HEADERS_PREFLIGHT))

    # ------------------------------------------------------------------ sessions

    async def _read_json(self, request: Request) -> dict:
        body = await request.read_body(API_BODY_BYTES)
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested ~1000 deep in a small body
            raise HTTPError(400, "bad-json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "bad-json", "the body must be a JSON object")
        return data

    def _rate_limit(self, limiter: ClientLimiter, request: Request, what: str) -> None:
        client = self._proxies.client_of(request.peer_ip, request.header_values(b"x-forwarded-for"))
        wait_s = limiter.allow(client, trio.current_time())
        if wait_s is not None:
            raise HTTPError(429, f"too-many-{what}", f"too many {what} from this client; retry later",
                            [("retry-after", str(int(wait_s + 0.999)))])

    async def create_session(self, request: Request) -> Response:
        self._rate_limit(self._creates, request, "creates")
        data = await self._read_json(request)
        chat = data.get("chat", False)
        if not isinstance(chat, bool):
            raise HTTPError(400, "bad-request", "'chat' must be true or false")
        cluster = self.context.cluster
        if cluster is not None:
            cluster.check_can_host()
        try:
            session = self.host.create(chat=chat)
        except LimitReached as exc:
            raise HTTPError(503, "too-many-sessions", str(exc)) from None
        if cluster is not None:
            try:
                await cluster.record_new(session)
            except BaseException:
                self.host.end(session, "not recorded in the cluster", announce=False)
                raise
        return Response.json(201, {"session": session.id, "master_token": session.master_token,
                                   "node": self.config.node_name, "chat": chat},
                             headers=[("set-cookie", self.context.cookie_header)])

    async def join_session(self, request: Request) -> Response:
        self._rate_limit(self._joins, request, "joins")
        data = await self._read_json(request)
        session_id = request.params["session"]
        session = session_or_404(self.host, session_id)
        agent_id = data.get("agent")
        join_token = data.get("join_token")
        if agent_id is not None and not isinstance(agent_id, str) or join_token is not None and not isinstance(join_token, str):
            raise HTTPError(400, "bad-request", "'agent' and 'join_token' must be strings")
        if agent_id is not None and len(agent_id) > MAX_AGENT_ID_CHARS:
            raise HTTPError(400, "bad-request", f"'agent' is longer than {MAX_AGENT_ID_CHARS} characters")
        admitted = await self._join_verdict(JoinRequest(session_id, agent_id, join_token, request.header(b"origin")))
        if self.host.get(session_id) is not session:  # it ended while the hook decided
            raise HTTPError(404, "unknown-session", "the session ended")
        if session.slave_slots_used() >= self.config.max_slaves_per_session:
            raise HTTPError(429, "too-many-slaves",
                            f"this session has its maximum of {self.config.max_slaves_per_session} slaves",
                            [("retry-after", str(max(1, int(self.config.slave_grace_s))))])
        record = session.add_slave(agent_id, trio.current_time(), admitted=admitted)
        if self.context.cluster is not None:  # so that a new host knows this slave's token after a failover
            await self.context.cluster.persist(session)
        return Response.json(200, {"session": session.id, "slave_token": record.token, "slave": record.slave_id,
                                   "node": self.config.node_name, "mode": record.mode, "admitted": admitted},
                             headers=[("set-cookie", self.context.cookie_header)])

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

    async def end_session(self, request: Request) -> Response:
        session = session_or_404(self.host, request.params["session"])
        token = request.query.get("token")
        authorization = request.header(b"authorization")
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[len("bearer "):].strip()
        role, _record = authenticate(session, token)
        if role is not Role.MASTER:
            raise HTTPError(403, "master-only", "only the master can end the session")
        self.host.end(session, "ended by the master")
        return Response(204)
