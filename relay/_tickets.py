"""HMAC-signed join tickets: a ready authorization hook for embedding co-browse servers.

The co-browse server (which knows its agents) signs a ticket for one session and one agent with
a secret it shares with the relay; the agent's browser passes it as ``join_token`` when joining.
A ticket is ``base64url(json{"s": session, "a": agent, "exp": unix seconds}) "." base64url(mac)``
with HMAC-SHA256.  Verification is constant-time and checks session, agent and expiry; a ticket
admits its agent once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Callable, Optional

from relay._config import JoinRequest

__all__ = ["make_join_ticket", "TicketAuthorizer", "DEFAULT_TICKET_TTL_S"]

DEFAULT_TICKET_TTL_S = 300.0
MAX_TICKET_CHARS = 2048
MIN_SWEEP_ENTRIES = 1024  # used tickets remembered before the first sweep of expired ones


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def make_join_ticket(secret: bytes, session_id: str, agent_id: str, *, ttl_s: float = DEFAULT_TICKET_TTL_S,
                     now: Optional[float] = None) -> str:
    """A ticket that lets ``agent_id`` join ``session_id`` for ``ttl_s`` seconds."""
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"s": session_id, "a": agent_id, "exp": expires}, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


class TicketAuthorizer:
    """``Config(authorize_join=TicketAuthorizer(secret))``: admit joins that carry a valid ticket.

    A ticket admits the agent it names, once: the join must name that agent, and the ticket is
    remembered (until it expires) so that it cannot be used again.  ``join_policy = "ticket"`` uses
    one of these with the configured secret.
    """

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the ticket secret must be at least 16 bytes")
        self._secret = secret
        self._clock = clock
        self._used: dict = {}  # mac -> expiry, for tickets that admitted a join

    def __call__(self, request: JoinRequest) -> bool:
        ticket = request.join_token
        if not ticket or len(ticket) > MAX_TICKET_CHARS or ticket.count(".") != 1 or not request.agent_id:
            return False
        payload, mac = ticket.split(".")
        try:
            if not hmac.compare_digest(mac.encode("ascii"), _mac(self._secret, payload).encode("ascii")):
                return False
            claims = json.loads(_unb64(payload))
        except (ValueError, UnicodeError):
            return False
        if not isinstance(claims, dict) or claims.get("s") != request.session_id:
            return False
        if claims.get("a") != request.agent_id:
            return False
        expires = claims.get("exp")
        now = self._clock()
        if not isinstance(expires, int) or now >= expires:
            return False
        if mac in self._used:
            return False  # each ticket admits once
        self._forget_expired(now)
        self._used[mac] = expires
        return True

    def _forget_expired(self, now: float) -> None:
        # Amortised: a sweep only when the table has doubled since the last one.
        if len(self._used) >= self._sweep_at:
            self._used = {mac: expires for mac, expires in self._used.items() if expires > now}
            self._sweep_at = max(2 * len(self._used), MIN_SWEEP_ENTRIES)

    _sweep_at = 1024
