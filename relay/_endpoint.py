"""Where a client's envelopes enter a session, whatever the transport.

The WebSocket handler and the long-poll POST both call :func:`deliver_envelope`, so the two
transports share one set of rules (SPEC 3: "same semantics as the WebSocket").
"""

from __future__ import annotations

import logging

import trio

from relay._accel import OP_TEXT, peek_envelope
from relay._closecodes import CloseCode
from relay._errors import FloodError, RemoteProtocolError
from relay._session import Peer, Role, Session

__all__ = ["deliver_envelope", "refuse", "SessionSocketHandler"]

# A body is copied out of its received buffer when the buffer holds more than this beyond it, and the
# body is small (up to COMPACT_COPY_BYTES) or the rest is more than a quarter of it.
COMPACT_SLACK_BYTES = 256
COMPACT_COPY_BYTES = 64 * 1024

log = logging.getLogger("relay.endpoint")


def deliver_envelope(session: Session, peer: Peer, payload, now: float) -> None:
    """Route one envelope from ``peer``.  Raises EnvelopeError if it is malformed.

    Refusals that leave the connection usable (a kind the role may not send) are answered with an
    ``error`` envelope queued for the sender, within its allowance (:func:`refuse`): past it,
    FloodError (1008 / 429).
    """
    if now > session.fence.valid_until:  # this node's lease ran out: another node may host it now
        session.fence.lapsed()
        return
    # A client's own fourth element (a forged sender) ends at the peek: only the body goes on.
    kind, seq, body_offset, body_end = peek_envelope(payload)
    body = memoryview(payload)[body_offset:body_end]
    # The view keeps the whole received buffer alive (a long-poll body, or a big fourth element)
    # while queues count only the body: copy a body that would hold much more than itself.
    held = len(body.obj) - len(body)
    if held > COMPACT_SLACK_BYTES and (len(body) <= COMPACT_COPY_BYTES or held > len(body) // 4):
        body = bytes(body)
    if peer.role is Role.MASTER:
        # A master's seq is its own number of the message (docs/protocol.md 4b); a slave's is ignored.
        error = session.from_master(peer, kind, body, now, seq)
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
    peer.close(CloseCode.POLICY_VIOLATION, reason)
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
            connection.request_close(CloseCode.UNSUPPORTED_DATA, "text messages are not supported: send binary envelopes",
                                     discard_queued=True)
            return
        self.metrics.message_in(self.peer.role.value, len(payload))
        try:
            # The time of the read that brought this message: one clock call per read, not per message.
            deliver_envelope(self.session, self.peer, payload, connection.last_receive)
        except FloodError as exc:  # the peer's fault too, already counted by the session (flood_closed)
            connection.request_close(exc.close_code, exc.message, discard_queued=True)
        except RemoteProtocolError as exc:  # the peer's fault: a malformed envelope (EnvelopeError)
            self.metrics.envelope_error()
            connection.request_close(exc.close_code, exc.message, discard_queued=True)
        except Exception:
            # A LocalProtocolError or any other exception is relay's own bug, never the peer's bad
            # envelope: log it, and cost this one connection (1011), not the session or the node.
            log.exception("internal.error", extra={"relay_fields": {
                "conn": connection.connection_id, "session": self.session.id, "role": self.peer.role.value}})
            connection.request_close(CloseCode.INTERNAL_ERROR, "internal error", discard_queued=True)

    def on_close(self) -> None:
        self.session.detach(self.peer, trio.current_time())
