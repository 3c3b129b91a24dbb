"""The relay stamps every sender (SPEC 4), tested from the attacker's side.

Every delivered envelope is ``[kind, seq, body, sender]``; ``sender`` is what the relay assigned
(``"master"``, the slave id that ``hello`` and ``presence`` announce, ``""`` for the relay). A
slave that forges an id, in its body or as a fourth element, on either transport, fools nobody.
"""

from __future__ import annotations

import json

import msgpack
import trio

from relay._accel import OP_BINARY, build_envelope, encode_client_frame
from helpers import expect_close, new_session, pack, recv_until, running_relay


def poll_items(body: bytes) -> list:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(body)
    return [tuple(item) for item in unpacker]


async def forged(conn, kind: str, body_obj, sender) -> None:
    """Send ``[kind, 0, body, sender]``: a client choosing its own fourth element."""
    await conn.send_raw(encode_client_frame(OP_BINARY, build_envelope(kind, 0, pack(body_obj), sender)))


async def test_websocket_slave_cannot_speak_as_another_slave_or_the_master():
    with trio.fail_after(20):
        async with running_relay() as (server, listening, client):
            created, (mallory_join, victim_join) = await new_session(client, slaves=2)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            victim = await client.connect(sid, victim_join["slave_token"])
            mallory = await client.connect(sid, mallory_join["slave_token"])
            hello, _ = await recv_until(mallory, lambda e: e.kind == "hello")
            assert hello.sender == "" and hello.decode()["slave"] == mallory_join["slave"]

            await forged(mallory, "chat", {"text": "transfer the money", "from": "agent-1",
                                           "slave": victim_join["slave"]}, victim_join["slave"])
            await forged(mallory, "pointer", {"x": 1, "y": 2, "slave": victim_join["slave"]}, "master")
            await forged(mallory, "chat", "as the relay", "")

            chats = []
            while len(chats) < 2:
                envelope = await victim.receive()
                if envelope.kind == "chat":
                    chats.append(envelope)
            assert [c.sender for c in chats] == [mallory_join["slave"]] * 2
            assert chats[0].decode()["slave"] == victim_join["slave"]  # the body is passed on untouched

            seen = {"chat": [], "pointer": []}
            while len(seen["chat"]) < 2 or not seen["pointer"]:
                envelope = await master.receive()
                if envelope.kind in seen:
                    seen[envelope.kind].append(envelope.sender)
            assert seen == {"chat": [mallory_join["slave"]] * 2, "pointer": [mallory_join["slave"]]}

            # The master's own stream is stamped "master" whatever it puts in a fourth element.
            await forged(master, "snapshot", "<html/>", victim_join["slave"])
            snapshot, _ = await recv_until(victim, lambda e: e.kind == "snapshot")
            assert snapshot.sender == "master" and snapshot.decode() == "<html/>"
            for conn in (master, victim, mallory):
                await conn.close()


async def test_presence_and_hello_name_the_ids_that_stamps_carry():
    with trio.fail_after(20):
        async with running_relay() as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, join["slave_token"])
            presence, _ = await recv_until(master, lambda e: e.kind == "presence")
            assert presence.sender == ""
            event = presence.decode()
            assert event["event"] == "joined" and event["slave"] == join["slave"] and event["agent"] == "agent-0"
            await slave.send("chat", pack("hi"))
            chat, _ = await recv_until(master, lambda e: e.kind == "chat")
            assert chat.sender == event["slave"]
            echo, _ = await recv_until(slave, lambda e: e.kind == "chat")
            assert echo.sender == join["slave"]  # a sender learns its own seq and sees its own stamp
            await master.close()
            await slave.close()


async def test_long_poll_slave_cannot_forge_a_sender():
    with trio.fail_after(20):
        async with running_relay(poll_wait_s=0.2) as (server, listening, client):
            created, (mallory_join, victim_join) = await new_session(client, slaves=2)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            victim = await client.connect(sid, victim_join["slave_token"])
            body = (build_envelope("chat", 0, pack("as the master"), "master")
                    + build_envelope("pointer", 0, pack([5, 6]), victim_join["slave"])
                    + build_envelope("chat", 0, pack("plain"), None))
            status, _headers, answer = await client.request(
                "POST", f"/cobrowse/poll/{sid}?token={mallory_join['slave_token']}", body)
            assert status == 200 and json.loads(answer) == {"accepted": 3}
            chats = []
            while len(chats) < 2:
                envelope = await victim.receive()
                if envelope.kind == "chat":
                    chats.append((envelope.decode(), envelope.sender))
            assert chats == [("as the master", mallory_join["slave"]), ("plain", mallory_join["slave"])]
            pointer, _ = await recv_until(master, lambda e: e.kind == "pointer")
            assert pointer.sender == mallory_join["slave"]

            # What the long-poll GET delivers is stamped the same way.
            status, _headers, answer = await client.request(
                "GET", f"/cobrowse/poll/{sid}?token={mallory_join['slave_token']}")
            assert status == 200
            items = poll_items(answer)
            assert all(len(item) == 4 for item in items)
            assert [item[3] for item in items if item[0] == "chat"] == [mallory_join["slave"]] * 2
            assert {item[3] for item in items if item[0] in ("hello", "presence")} == {""}
            await master.close()
            await victim.close()


async def test_a_malformed_fourth_element_is_a_bad_envelope():
    with trio.fail_after(20):
        async with running_relay() as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            slave = await client.connect(sid, join["slave_token"])
            # [chat, 0, "x", <str of 5 bytes cut to 2>]: the fourth element is not one msgpack object
            await slave.send_raw(encode_client_frame(OP_BINARY, b"\x94\xa4chat\x00\xa1x\xa5ab"))
            assert await expect_close(slave) == 1007
