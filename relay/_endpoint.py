"""Where a client's envelopes enter a session, whatever the transport.

The WebSocket handler and the long-poll POST both call :func:`deliver_envelope`, so the two
transports share one set of rules (SPEC 3: "same semantics as the WebSocket").
"""

from __future__ import annotations

import trio

from relay._accel import OP_TEXT, peek_envelope
from relay._errors import FloodError
from relay._session import CLOSE_POLICY, CLOSE_UNSUPPORTED_DATA, Peer, Role, Session

__all__ = ["deliver_envelope", "refuse", "SessionSocketHandler"]


def deliver_envelope(session: Session, peer: Peer, payload, now: float) -> None:
    """Route one envelope from ``peer``.  Raises EnvelopeError if it is malformed.

    Refusals that leave the connection usable (a kind the role may not send) are answered with an
    ``error`` envelope queued for the sender, within its allowance (:func:`refuse`): past it,
    FloodError (1008 / 429).
    """
    # A client's own fourth element (a forged sender) ends at the peek: only the body goes on.
    kind, _seq, body_offset, body_end = peek_envelope(payload)
    body = memoryview(payload)[body_offset:body_end]
    if peer.role is Role.MASTER:
        error = session.from_master(peer, kind, body, now)
    else:
        error = session.from_slave(peer, kind, body, now)
    if error is not None:
        refuse(session, peer, error, now)


def refuse(session: Session, peer: Peer, error, now: float) -> None:
    """Answer a refused envelope within the client's allowance and queue bound, or close it.

    The answer is dropped (never queued past the bound) when the client does not read; a client
    that spends its allowance is closed with 1008 and FloodError tells the transport so.
    """
    if peer.allow_refusal(now):
        if not peer.push_within_bound(error):
            session.stats["refusals_dropped"] += 1
        return
    session.stats["flood_closed"] += 1
    reason = "too many refused envelopes"
    peer.close(CLOSE_POLICY, reason)
    raise FloodError(reason)


class SessionSocketHandler:
    """The WebSocket MessageHandler of a session peer."""

    def __init__(self, session: Session, peer: Peer, metrics) -> None:
        self.session = session
        self.peer = peer
        self.connection = None  # the WebSocketConnection, set once it is made (it needs this handler)
        self.metrics = metrics

    def on_message(self, opcode: int, payload: bytes) -> None:
        connection = self.connection
        if opcode == OP_TEXT:
            connection.request_close(CLOSE_UNSUPPORTED_DATA, "text messages are not supported: send binary envelopes",
                                     discard_queued=True)
            return
        self.metrics.message_in(self.peer.role.value, len(payload))
        try:
            # The time of the read that brought this message: one clock call per read, not per message.
            deliver_envelope(self.session, self.peer, payload, connection.last_receive)
        except Exception as exc:  # EnvelopeError and nothing else is expected
            code = getattr(exc, "close_code", 1011)
            if code == 1011:
                raise
            self.metrics.envelope_error()
            connection.request_close(code, str(exc), discard_queued=True)

    def on_close(self) -> None:
        self.session.detach(self.peer, trio.current_time())
