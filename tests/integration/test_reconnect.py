"""Reconnecting at once never fails (issue "Hardening 2"): a client whose TCP connection dropped
without a close frame connects again with its token, and the new connection always gets its hello,
however the old one is ending (failover and flaky networks do exactly this)."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from helpers import new_session, running_relay

RECONNECTS = 150


def drop(conn) -> None:
    """Close the TCP connection with a reset, no close frame: a network that went away."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()


@pytest.mark.parametrize("role", ["master", "slave"])
async def test_immediate_reconnects_after_a_dropped_connection_always_get_hello(role):
    with trio.fail_after(60):
        async with running_relay() as (server, listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            sid = created["session"]
            token = created["master_token"] if role == "master" else joined["slave_token"]
            conn = await client.connect(sid, token)
            for i in range(RECONNECTS):
                first = await conn.receive()
                assert first.kind == "hello", (i, first)
                if i % 3 == 0:
                    drop(conn)  # before the next connects
                    conn = await client.connect(sid, token)
                else:
                    newer = await client.connect(sid, token)  # while the older one is still open
                    drop(conn)
                    conn = newer
            session = server.host.sessions[sid]
            assert (session.master if role == "master" else session.slaves[joined["slave"]].peer) is not None
            drop(conn)


async def test_a_long_poll_client_that_switches_to_a_websocket_at_once_gets_hello():
    with trio.fail_after(30):
        async with running_relay(poll_wait_s=0.1) as (server, listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            sid = created["session"]
            for _ in range(30):
                status, _headers, _body = await client.request(
                    "GET", f"/cobrowse/poll/{sid}?token={joined['slave_token']}")
                assert status == 200
                conn = await client.connect(sid, joined["slave_token"])
                assert (await conn.receive()).kind == "hello"
                drop(conn)
