"""relay: the message relay core of a co-browse system.

The public API (SPEC section 7); everything else lives in underscore modules::

    import trio, relay

    async def main():
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(relay.serve, relay.Config(listen="127.0.0.1:0"))
            print(listening.public_port)
"""

from relay._accel import fastpath_active, implementation
from relay._accel import murmur3_token, parse_cookie, random_token
from relay._client import Client, ClientConnection, ConnectionClosed, Envelope, HTTPStatusError
from relay._config import Config, ConfigError, JoinRequest
from relay._errors import (
    CookieError,
    EnvelopeError,
    LocalProtocolError,
    ProtocolError,
    RelayError,
    RemoteProtocolError,
)
from relay._resend import ResendWindow
from relay._ring import Ring
from relay._server import Listening, serve, serve_echo
from relay._tickets import TicketAuthorizer, make_join_ticket

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClientConnection",
    "Config",
    "ConfigError",
    "ConnectionClosed",
    "CookieError",
    "Envelope",
    "EnvelopeError",
    "HTTPStatusError",
    "JoinRequest",
    "Listening",
    "LocalProtocolError",
    "ProtocolError",
    "RelayError",
    "RemoteProtocolError",
    "ResendWindow",
    "Ring",
    "TicketAuthorizer",
    "fastpath_active",
    "implementation",
    "make_join_ticket",
    "murmur3_token",
    "parse_cookie",
    "random_token",
    "serve",
    "serve_echo",
]
