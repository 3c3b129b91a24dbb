"""Every WebSocket close code relay sends, receives or reports, in one place.

RFC 6455 section 7.4.1 defines 1000-1011 (and 1015); the IANA "WebSocket Close Code Number"
registry adds 1012-1014.  3000-3999 are for libraries and frameworks, 4000-4999 private to an
application: relay's own codes live there (docs/protocol.md section 5 says what a client should do
with each).  Named after wsproto's ``frame_protocol.CloseReason``.

The values on the wire are plain integers: a ``CloseCode`` compares equal to its number, and its
``str()`` is the number (as it is from Python 3.11 on), so logs and metric labels read the same.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode"]


class CloseCode(enum.IntEnum):
    """A WebSocket close code (RFC 6455 7.4.1, the IANA registry, and relay's private 4xxx)."""

    # --- RFC 6455 section 7.4.1
    NORMAL_CLOSURE = 1000  # the purpose of the connection is fulfilled
    GOING_AWAY = 1001  # an endpoint goes away; relay: no byte from the peer for idle_timeout_s
    PROTOCOL_ERROR = 1002  # a frame broke RFC 6455 (bad header, unmasked client frame, bad close)
    UNSUPPORTED_DATA = 1003  # a data type the endpoint cannot accept; relay: a text message
    # 1004 is reserved and has no meaning.
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame carried no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "the connection dropped without a close frame"
    INVALID_FRAME_PAYLOAD_DATA = 1007  # data not consistent with its type: bad UTF-8, bad envelope
    POLICY_VIOLATION = 1008  # a message violates the endpoint's policy (generic refusal)
    MESSAGE_TOO_BIG = 1009  # a message is larger than the endpoint accepts (max_message_bytes)
    MANDATORY_EXT = 1010  # sent by a client: the server did not negotiate an extension it needs
    INTERNAL_ERROR = 1011  # the server met an unexpected condition: a bug in relay, not the peer's fault
    # --- IANA registry
    SERVICE_RESTART = 1012  # the node is shutting down: reconnect (through the load balancer)
    TRY_AGAIN_LATER = 1013  # overloaded; relay: a slave that cannot keep up even after a resync
    BAD_GATEWAY = 1014  # a gateway got an invalid response upstream (relay never sends it)
    TLS_HANDSHAKE_FAILED = 1015  # never on the wire: the TLS handshake failed
    # --- relay's private codes (4000-4999)
    REPLACED = 4001  # a newer connection with the same token took this one's place
    SESSION_ENDED = 4002  # the session ended (master ended it, left past its grace period, or idle)
    JOIN_REFUSED = 4403  # SPEC 6: the master refused this slave's join, or did not answer in time

    def __str__(self) -> str:
        return str(self.value)
