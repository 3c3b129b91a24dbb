"""Exception types shared by both twins of the fast path and by the protocol layers.

Both ``relay._fastpath`` (Cython) and ``relay._purepath`` (pure Python) raise exactly these
classes, so callers never need to know which implementation is active.

Like h11 and wsproto, a protocol error says whose fault it is:

* :class:`RemoteProtocolError`: the peer sent something invalid. ``close_code`` is the WebSocket
  close code to send back and ``http_status`` the HTTP status for the same fault on the HTTP side.
* :class:`LocalProtocolError`: our own code asked for something invalid (a bug or a bad argument).

:class:`HTTPError` is the error *response* a request handler wants sent; it lives here, not in the
I/O module ``relay._http``, so that sans-IO code (handshake validation, routing) can raise it.
"""

from __future__ import annotations

from typing import Iterable, Optional

from relay._closecodes import CloseCode

__all__ = [
    "RelayError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "EnvelopeError",
    "FloodError",
    "CookieError",
    "HTTPError",
]


class RelayError(Exception):
    """Base class of every error that relay raises on purpose."""


class ProtocolError(RelayError):
    """A protocol rule was broken.

    ``close_code`` is the RFC 6455 close code that fits the fault; ``http_status`` the HTTP status.
    """

    def __init__(self, message: str, *, close_code: int = CloseCode.PROTOCOL_ERROR, http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = _as_close_code(close_code)
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, close_code={self.close_code})"

    def __reduce__(self):  # keep the codes when pickled (hypothesis, multiprocessing)
        return (_rebuild, (type(self), self.message, self.close_code, self.http_status))


def _as_close_code(code: int) -> int:
    """The CloseCode member for ``code`` (both twins then raise the same type), else the number."""
    try:
        return CloseCode(code)
    except ValueError:  # an application's code (3000-4999) that relay has no name for
        return code


def _rebuild(cls, message, close_code, http_status):
    return cls(message, close_code=close_code, http_status=http_status)


class LocalProtocolError(ProtocolError):
    """We (the caller of the API) tried to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; send ``close_code`` (WebSocket) or ``http_status`` (HTTP)."""


class EnvelopeError(RemoteProtocolError):
    """A message is not a well-formed ``[kind, seq, body]`` msgpack envelope.

    Sent as close code 1007 (data inconsistent with the message type) or HTTP 400.
    """

    def __init__(self, message: str, *, close_code: int = CloseCode.INVALID_FRAME_PAYLOAD_DATA,
                 http_status: int = 400) -> None:
        super().__init__(message, close_code=close_code, http_status=http_status)


class FloodError(RemoteProtocolError):
    """A client keeps sending what the relay must refuse (kinds its role may not send, unknown
    kinds) past its allowance: it is closed with 1008 (policy violation), or answered 429 on
    long-polling, instead of being answered forever."""

    def __init__(self, message: str, *, close_code: int = 1008, http_status: int = 429) -> None:
        super().__init__(message, close_code=close_code, http_status=http_status)


class CookieError(RelayError, ValueError):
    """A cookie name, value or attribute cannot be put in a header safely."""


class HTTPError(RelayError):
    """An HTTP error response to send: status, machine-readable code, human message.

    Whoever runs the connection answers it (``relay._http.HTTPConnection.respond_error``) as JSON
    ``{"error": code, "message": message, **details}`` with ``headers`` added (e.g. ``Allow``).
    """

    def __init__(self, status: int, code: str, message: str, headers: Iterable = (), *,
                 details: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)
        self.details = details or {}  # more JSON fields (e.g. the close code behind a long-poll 410)
