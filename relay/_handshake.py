"""The server side of the WebSocket opening handshake (RFC 6455 section 4.2), sans-IO.

h11 has parsed the request; wsproto's handshake helpers compute the accept token and split the
comma-separated headers.  No extension and no subprotocol is negotiated: relay does not offer
permessage-deflate (see docs/architecture.md, "Compression").
"""

from __future__ import annotations

import base64
import binascii

import h11
from wsproto.utilities import generate_accept_token

from relay._errors import HTTPError

__all__ = ["accept_headers", "is_upgrade_request"]

WEBSOCKET_VERSION = b"13"


def split_comma_header(value: bytes) -> list:
    """Tokens of a comma-separated header value.  (wsproto's helper decodes as ASCII and raises on
    the bytes 0x80-0xff that h11 lets through; latin-1 cannot fail, and no valid token uses them.)"""
    return [piece.strip() for piece in value.decode("latin-1").split(",")]


def _values(request: h11.Request, name: bytes) -> list:
    return [value for key, value in request.headers if key == name]


def is_upgrade_request(request: h11.Request) -> bool:
    """Whether the client asks to switch to WebSocket (Upgrade: websocket)."""
    upgrade = [token.lower() for value in _values(request, b"upgrade") for token in split_comma_header(value)]
    return "websocket" in upgrade


def accept_headers(request: h11.Request) -> list:
    """Validate an upgrade request; return the 101 response headers or raise HTTPError."""
    if request.method != b"GET":
        raise HTTPError(405, "method-not-allowed", "WebSocket upgrades must use GET", [("allow", "GET")])
    if request.http_version != b"1.1":
        raise HTTPError(400, "bad-handshake", "WebSocket upgrades need HTTP/1.1")
    connection = {token.lower() for value in _values(request, b"connection") for token in split_comma_header(value)}
    if "upgrade" not in connection:
        raise HTTPError(400, "bad-handshake", "missing 'Connection: Upgrade'")
    versions = _values(request, b"sec-websocket-version")
    if versions != [WEBSOCKET_VERSION]:
        raise HTTPError(426, "bad-version", "only WebSocket version 13 is supported",
                        [("sec-websocket-version", "13")])
    keys = _values(request, b"sec-websocket-key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        raise HTTPError(400, "bad-handshake", "missing or malformed Sec-WebSocket-Key")
    return [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(keys[0])),
    ]


def _valid_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False
