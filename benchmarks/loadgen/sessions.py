"""Connecting the publisher and the subscribers: a relay session, or a peer's ``/pub`` and ``/sub``."""

from __future__ import annotations

import msgpack
import trio

from relay import Client, ClientConnection
from benchmarks.loadgen.stamp import SNAPSHOT_KIND

PEER_REGISTER_S = 0.2  # peers: time to register every subscriber before the first message


def client_tls(args):
    """``--tls-ca FILE``: a client context that trusts that CA (the servers' test certificates)."""
    path = getattr(args, "tls_ca", None)
    if not path:
        return None
    import ssl

    return ssl.create_default_context(cafile=path)


async def open_session(args, slaves: int, *, first_snapshot: bool = True, raw_subscribers: bool = False):
    """(publisher, [subscribers]) through relay's public endpoints, or a peer's /pub and /sub.
    ``raw_subscribers``: subscribers opened with ``decode=False``, for ``SkimReader``."""
    decode = not raw_subscribers
    tls = client_tls(args)
    if args.target == "relay":
        client = Client(args.host, args.port, tls=tls)
        created = await client.create_session()
        # Keep the sticky cookie as a browser does: behind a load balancer it pins the session's
        # connections to its host.
        cookies = [value.split(";", 1)[0] for name, value in client.last_headers if name == "set-cookie"]
        if cookies:
            client.cookie = cookies[-1]
        publisher = await client.connect(created["session"], created["master_token"])
        if first_snapshot:
            # A snapshot first, as a real master would: slaves then hold a consistent state.  Its
            # body is a msgpack str, so that receivers do not take it for a timed message.
            await publisher.send(SNAPSHOT_KIND, msgpack.packb("<html></html>"))
        subscribers = []
        # --subscriber-port: the slaves enter through another node of a cluster (forwarded to the host)
        entry = Client(args.host, getattr(args, "subscriber_port", None) or args.port, cookie=client.cookie, tls=tls)
        for index in range(slaves):
            joined = await client.join(created["session"], agent=f"bench-{index}")
            subscribers.append(await entry.connect(created["session"], joined["slave_token"], decode=decode))
        return publisher, subscribers
    headers = [("host", args.host)]
    subscribers = [await ClientConnection.open(args.host, args.port, "/sub", headers=headers, decode=decode, tls=tls)
                   for _ in range(slaves)]
    publisher = await ClientConnection.open(args.host, args.port, "/pub", headers=headers, tls=tls)
    await trio.sleep(PEER_REGISTER_S)
    return publisher, subscribers
