"""HMAC-signed join tickets: a ready authorization hook for embedding co-browse servers.

The co-browse server (which knows its agents) signs a ticket for one session and one agent with
a secret it shares with the relay; the agent's browser passes it as ``join_token`` when joining.
A ticket is ``base64url(json{"s": session, "a": agent, "exp": unix seconds}) "." base64url(mac)``
with HMAC-SHA256.  Verification is constant-time and checks session, agent and expiry.
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
    """``Config(authorize_join=TicketAuthorizer(secret))``: admit joins that carry a valid ticket."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the ticket secret must be at least 16 bytes")
        self._secret = secret
        self._clock = clock

    def __call__(self, request: JoinRequest) -> bool:
        ticket = request.join_token
        if not ticket or len(ticket) > MAX_TICKET_CHARS or ticket.count(".") != 1:
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
        if request.agent_id is not None and claims.get("a") != request.agent_id:
            return False
        expires = claims.get("exp")
        return isinstance(expires, int) and self._clock() < expires
