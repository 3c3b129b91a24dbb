"""The WebSocket closing handshake of one connection, as an explicit state machine (sans-IO).

RFC 6455 section 7 in the spirit of wsproto's ``connection.ConnectionState``: the transport
(:class:`relay._websocket.WebSocketConnection`) reports what happened (a close was decided, our
close frame was written, the peer's close frame arrived, the deadline passed, the socket went away)
and asks what it may do now (deliver a message, send data, send a ping or pong, write the close
frame).  No sockets, no clock: the transport owns those, so every path is testable on its own
(tests/unit/test_closing.py).

States and the events that move between them::

    OPEN --request_close/fail--> LOCAL_CLOSING --close_written--> CLOSE_SENT --peer_closed--> CLOSED
      |                               |                                              ^
      +--peer_closed--> REMOTE_CLOSING <--peer_closed--+   REMOTE_CLOSING --close_written--+
    any state --deadline_expired / connection_lost--> CLOSED

Rules the transport relies on:

* The first close decision wins (its code and reason go out); a later one can only make the close
  frame come sooner (fewer of the queued messages before it), so asking to close is never an error.
* Once a close is decided, only the messages queued before the decision may still go out, and
  only as many as were counted then; after the peer's close frame none do (we echo at once,
  RFC 6455 5.5.1), and after our close frame nothing at all (RFC 6455 5.5.1: no data after Close).
  A send the state does not allow raises :class:`~relay._errors.LocalProtocolError`: it is a bug
  in the transport, never the peer's fault.
* Nothing of the peer's is parsed after its close frame; reporting something anyway is a
  LocalProtocolError too.  I/O that was already under way when the connection ended (deadline,
  lost socket) may still report in CLOSED: that is ignored, not refused.
"""

from __future__ import annotations

import enum
from typing import Optional

from relay._accel import MAX_CONTROL_PAYLOAD
from relay._closecodes import CloseCode
from relay._errors import LocalProtocolError

__all__ = ["ConnectionState", "ClosingHandshake", "MAX_CLOSE_REASON_BYTES", "clip_close_reason"]

MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD - 2  # the close payload's first 2 bytes are the code


class ConnectionState(enum.Enum):
    """Where a connection is in the closing handshake."""

    OPEN = "open"  # no close decided: messages flow both ways
    LOCAL_CLOSING = "local-closing"  # we decided to close; the messages queued before that still go out
    REMOTE_CLOSING = "remote-closing"  # the peer's close frame came first; our echo is due, no more data
    CLOSE_SENT = "close-sent"  # our close frame is written; waiting for the peer's (or the deadline)
    CLOSED = "closed"  # both close frames exchanged, the deadline passed, or the socket is gone


_OPEN = ConnectionState.OPEN
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSE_SENT = ConnectionState.CLOSE_SENT
_CLOSED = ConnectionState.CLOSED
_CLOSE_DUE = (_LOCAL_CLOSING, _REMOTE_CLOSING)


def clip_close_reason(reason: str) -> str:
    """A close reason fits in MAX_CLOSE_REASON_BYTES of UTF-8; cut on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return data[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


class ClosingHandshake:
    """The closing state of one WebSocket connection (server side).

    Attributes (read them, do not assign): ``state``; ``code`` and ``reason``, what our close
    frame carries (``code`` None until a close is decided; ``CloseCode.NO_STATUS_RCVD`` means an
    empty close payload, the echo of a peer's empty one); ``peer_code``, the code of the peer's
    close frame (None: none came, or it had no code); ``peer_close_received``; ``close_sent``,
    our close frame is written; ``failed``, we
    failed the connection on a bad frame (RFC 6455 7.1.7) and parse nothing more.
    """

    __slots__ = ("state", "code", "reason", "peer_code", "peer_close_received", "close_sent", "failed",
                 "_messages_left")

    def __init__(self) -> None:
        self.state = _OPEN
        self.code: Optional[int] = None
        self.reason = ""
        self.peer_code: Optional[int] = None
        self.peer_close_received = False
        self.close_sent = False  # our close frame is written
        self.failed = False
        # Once a close is decided: how many queued messages may still go out before the close
        # frame.  Counted at the decision, so a busy session that keeps pushing cannot postpone
        # the close frame, and nothing pushed after the decision is sent.
        self._messages_left = 0

    def __repr__(self) -> str:
        return (f"ClosingHandshake({self.state.name}, code={self.code}, peer_code={self.peer_code}, "
                f"failed={self.failed})")

    # ------------------------------------------------------------------ events

    def request_close(self, code: int, reason: str, *, queued: int) -> None:
        """We decided to close with ``code``: ``queued`` of the messages queued now still go out
        before the close frame (0: discard them).  Allowed in every state (see the module rules)."""
        if queued < 0:
            raise LocalProtocolError(f"queued must be >= 0, not {queued}")
        if self.state is _OPEN:
            self.state = _LOCAL_CLOSING
            self.code = code
            self.reason = reason
            self._messages_left = queued
        elif self.state is _LOCAL_CLOSING:
            self._messages_left = min(self._messages_left, queued)
        # REMOTE_CLOSING: nothing is left to send but the echo.  CLOSE_SENT, CLOSED: too late.

    def fail(self, code: int, reason: str, *, queued: int) -> None:
        """The peer sent a frame we cannot parse: close with ``code`` after ``queued`` messages
        (what the peer sent before the bad frame was valid) and parse nothing more."""
        if self.peer_close_received:
            raise LocalProtocolError("a frame was parsed after the peer's close frame")
        if self.state is _CLOSED:
            return  # a read that was under way when the connection ended
        self.failed = True
        self.request_close(code, reason, queued=queued)

    def peer_closed(self, code: Optional[int]) -> ConnectionState:
        """The peer's close frame arrived (``code`` None: it had no code).  Returns the new state:
        CLOSED when that completes the handshake, else REMOTE_CLOSING (our echo is due now:
        the transport discards what is queued)."""
        if self.peer_close_received:
            raise LocalProtocolError("a second close frame from the peer was parsed")
        if self.state is _CLOSED:
            return _CLOSED  # a read that was under way when the connection ended
        self.peer_close_received = True
        self.peer_code = code
        if self.state is _CLOSE_SENT:
            self.state = _CLOSED
        elif self.state is _OPEN:
            # Echo the peer's code (RFC 6455 5.5.1); an empty close payload is echoed empty.
            self.state = _REMOTE_CLOSING
            self.code = code if code is not None else CloseCode.NO_STATUS_RCVD
            self.reason = ""
            self._messages_left = 0
        else:  # LOCAL_CLOSING: our own code stands, but nothing more goes out before it
            self.state = _REMOTE_CLOSING
            self._messages_left = 0
        return self.state

    def close_written(self) -> ConnectionState:
        """Our close frame is on the wire.  Returns CLOSED (the peer's came first) or CLOSE_SENT."""
        state = self.state
        if state is _REMOTE_CLOSING:
            self.state = _CLOSED
        elif state is _LOCAL_CLOSING:
            self.state = _CLOSE_SENT
        elif not (state is _CLOSED and self.code is not None and not self.close_sent):
            # (CLOSED with a close decided but not yet written: the write was under way when the
            # deadline ended the connection, and is simply recorded.)
            raise LocalProtocolError(f"no close frame may be written in state {state.name}"
                                     + (" (ours is already out)" if self.close_sent else ""))
        self.close_sent = True
        return self.state

    def deadline_expired(self) -> None:
        """The close handshake took too long (or the peer stopped reading): the connection ends."""
        self.state = _CLOSED

    def connection_lost(self) -> None:
        """EOF from the peer, or a broken socket: the connection ends."""
        self.state = _CLOSED

    # ------------------------------------------------------------------ sends

    def data_allowance(self) -> Optional[int]:
        """How many more data messages may go out now: None for no limit (OPEN), 0 for none."""
        state = self.state
        if state is _OPEN:
            return None
        if state is _LOCAL_CLOSING:
            return self._messages_left
        return 0

    def data_sent(self, count: int) -> None:
        """``count`` data messages are about to be written.  Raises LocalProtocolError when the
        state does not allow that many (e.g. any data after our close frame)."""
        state = self.state
        if state is _OPEN or count == 0:
            return
        if state is _LOCAL_CLOSING and count <= self._messages_left:
            self._messages_left -= count
            return
        raise LocalProtocolError(f"{count} data message(s) may not be sent in state {state.name}"
                                 + (f" (only {self._messages_left} left before the close frame)"
                                    if state is _LOCAL_CLOSING else ""))

    @property
    def may_send_control(self) -> bool:
        """Whether a ping or pong may still go out: until our close frame is written (or the end)."""
        return self.state is _OPEN or self.state in _CLOSE_DUE

    def control_sent(self) -> None:
        """Ping or pong frames are about to be written; refused after our close frame."""
        if not self.may_send_control:
            raise LocalProtocolError(f"no ping or pong may be sent in state {self.state.name}")

    def close_frame_due(self, queued: int) -> bool:
        """Whether our close frame goes out now, ``queued`` messages being still in the queue."""
        return self.state in _CLOSE_DUE and queued == 0

    def close_frame(self) -> tuple:
        """``(code, reason)`` for our close frame: code None for an empty payload, reason clipped."""
        if self.state not in _CLOSE_DUE:
            raise LocalProtocolError(f"no close frame is due in state {self.state.name}")
        if self.code == CloseCode.NO_STATUS_RCVD:
            return None, ""
        return self.code, clip_close_reason(self.reason)

    # ------------------------------------------------------------------ queries

    @property
    def accepts_messages(self) -> bool:
        """Whether a data message from the peer is still handed on: not once a close is decided."""
        return self.state is _OPEN

    @property
    def expects_frames(self) -> bool:
        """Whether the peer's frames are still parsed: until its close frame, our failing, or the end."""
        return not (self.peer_close_received or self.failed) and self.state is not _CLOSED

    @property
    def must_echo(self) -> bool:
        """Whether the peer closed first and our close frame (the echo) is still to be written."""
        return self.state is _REMOTE_CLOSING
