"""Refused envelopes are rationed on both transports: a flood ends in 1008 / 429, not in memory."""

from __future__ import annotations

import json

import msgpack

import trio

from relay._accel import OP_BINARY, build_envelope, encode_client_frame
from relay._session import REFUSAL_BURST
from helpers import HTTPStatusError, expect_close, new_session, pack, recv_until, running_relay

FLOOD = 10_000


async def test_a_websocket_slave_flooding_refused_kinds_is_closed_and_others_go_on():
    with trio.fail_after(20):
        async with running_relay() as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            other, (other_join,) = await new_session(client, slaves=1)
            sid = created["session"]
            attacker = await client.connect(sid, join["slave_token"])
            bystander = await client.connect(other["session"], other_join["slave_token"])
            other_master = await client.connect(other["session"], other["master_token"])
            frame = encode_client_frame(OP_BINARY, build_envelope("snapshot", 0, b"\xc0"))
            await attacker.send_raw(frame * FLOOD)  # and never reads
            assert await expect_close(attacker) == 1008
            assert attacker.close_reason == "too many refused envelopes"
            session = server.host.sessions[sid]
            assert session.stats["flood_closed"] == 1
            await other_master.send("mutation", pack("still here"))
            got, _ = await recv_until(bystander, lambda e: e.kind == "mutation")
            assert got.decode() == "still here"
            await bystander.close()
            await other_master.close()


async def test_a_long_poll_post_of_refused_envelopes_gets_429_and_the_client_is_closed():
    with trio.fail_after(20):
        async with running_relay(poll_wait_s=0.2) as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            target = f"/cobrowse/poll/{sid}?token={join['slave_token']}"
            body = build_envelope("snapshot", 0, b"\xc0") * FLOOD
            status, _headers, answer = await client.request("POST", target, body)
            assert status == 429
            error = json.loads(answer)
            assert error["error"] == "too-many-refusals" and error["close_code"] == 1008
            assert error["accepted"] == REFUSAL_BURST
            session = server.host.sessions[sid]
            assert session.stats["flood_closed"] == 1
            record = session.slaves[join["slave"]]
            assert record.peer is None or record.peer.close_code == 1008
            # Like a WebSocket client after its close, the next GET starts over with a hello.
            status, _headers, answer = await client.request("GET", target)
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(answer)
            assert status == 200 and next(unpacker)[0] == "hello"


async def test_a_reconnect_storm_is_refused_with_429_and_others_are_not_flooded(monkeypatch):
    import relay._session

    RECONNECT_BURST = 20  # smaller than the node's 500, for a short test; the rule is the same
    monkeypatch.setattr(relay._session, "RECONNECT_BURST", RECONNECT_BURST)
    monkeypatch.setattr(relay._session, "RECONNECTS_PER_S", 0.5)
    with trio.fail_after(30):
        async with running_relay() as (server, listening, client):
            created, (storm, calm) = await new_session(client, slaves=2)
            sid = created["session"]
            bystander = await client.connect(sid, calm["slave_token"])
            refused = 0
            for _ in range(RECONNECT_BURST + 20):
                try:
                    conn = await client.connect(sid, storm["slave_token"])
                except HTTPStatusError as error:
                    assert error.status == 429 and dict(error.headers).get("retry-after")
                    refused += 1
                    continue
                await conn.close()
            assert refused >= 19  # the burst, then about one every two seconds
            presence = server.host.sessions[sid].published["presence"]
            assert presence <= 2 * (RECONNECT_BURST + 2) + 2  # joined/left per accepted connection, not per try
            # the long-poll transport refuses the same way
            status, headers, _body = await client.request("GET", f"/cobrowse/poll/{sid}?token={storm['slave_token']}")
            assert status == 429 and dict(headers).get("retry-after")
            await bystander.close()
