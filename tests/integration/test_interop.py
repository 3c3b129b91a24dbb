"""A third-party client (the `websockets` library, asyncio, in a thread) speaks the wire format
directly (msgpack envelopes [kind, seq, body] in binary frames), as master and as slave, next to
relay's own client."""

from __future__ import annotations

import asyncio

import msgpack
import trio
from websockets.asyncio.client import connect

from helpers import State, new_session, pack, running_relay

THIRD_PARTY_TIMEOUT_S = 20.0
END = "END"


def envelope(kind: str, body_obj) -> bytes:
    return msgpack.packb([kind, 0, body_obj], use_bin_type=True)


def decode(message: bytes) -> tuple:
    """A delivered envelope, read by plain msgpack: (kind, seq, body, sender)."""
    kind, seq, body, sender = msgpack.unpackb(message, raw=False)
    return kind, seq, body, sender


def run_asyncio(coroutine_function, *args):
    async def bounded():
        return await asyncio.wait_for(coroutine_function(*args), THIRD_PARTY_TIMEOUT_S)

    return asyncio.run(bounded())


async def third_party_slave(url: str, pointer_after_end: bool) -> list:
    """Receive everything until the master's END mutation; then send a pointer event and a chat."""
    received = []
    async with connect(url, max_size=None, open_timeout=5) as ws:
        while True:
            message = await ws.recv()
            assert isinstance(message, bytes), "the relay sends binary frames only"
            item = decode(message)
            received.append(item)
            if item[0] == "mutation" and item[2] == END:
                break
        if pointer_after_end:
            await ws.send(envelope("pointer", {"x": 3, "y": 4}))
            await ws.send(envelope("chat", "from websockets"))
            while True:  # our own chat comes back with its seq
                item = decode(await ws.recv())
                received.append(item)
                if item[0] == "chat":
                    break
    return received


async def third_party_master(url: str, mutations: int) -> list:
    """Send a snapshot and mutations, then wait for a pointer event from a slave."""
    received = []
    async with connect(url, max_size=None, open_timeout=5) as ws:
        hello = decode(await ws.recv())
        assert hello[0] == "hello" and hello[2]["role"] == "master"
        await ws.send(envelope("snapshot", "<html>third party</html>"))
        for i in range(mutations):
            await ws.send(envelope("mutation", i))
        await ws.send(envelope("mutation", END))
        while True:
            item = decode(await ws.recv())
            received.append(item)
            if item[0] == "pointer":
                break
    return received


def state_of(items) -> State:
    state = State()
    for kind, seq, body, _sender in items:
        state.apply(_Env(kind, seq, msgpack.packb(body, use_bin_type=True)))
    return state


class _Env:
    def __init__(self, kind, seq, body):
        self.kind, self.seq, self.body = kind, seq, body


async def test_websockets_library_as_master_and_as_slave():
    with trio.fail_after(30):
        async with running_relay() as (server, listening, client):
            created, (ours_join, theirs_join) = await new_session(client, slaves=2)
            sid = created["session"]
            base = f"ws://127.0.0.1:{listening.public_port}/cobrowse/ws/{sid}?token="
            ours = await client.connect(sid, ours_join["slave_token"])
            results = {}

            async def in_thread(name, function, *args):
                results[name] = await trio.to_thread.run_sync(run_asyncio, function, *args)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_thread, "slave", third_party_slave, base + theirs_join["slave_token"], False)
                while server.host.sessions[sid].slaves_connected() < 2:
                    await trio.sleep(0.01)
                nursery.start_soon(in_thread, "master", third_party_master, base + created["master_token"], 300)
                ours_items = []
                while True:
                    got = await ours.receive()
                    ours_items.append((got.kind, got.seq, got.decode(), got.sender))
                    if got.kind == "mutation" and got.decode() == END:
                        break
                await ours.send("pointer", pack({"x": 1, "y": 2}))
            await ours.close()
    theirs_items = results["slave"]
    live = lambda items: [item for item in items if item[0] in ("snapshot", "mutation")]
    assert live(theirs_items) == live(ours_items)
    assert [item[2] for item in live(ours_items)] == ["<html>third party</html>"] + list(range(300)) + [END]
    assert state_of(theirs_items).page() == state_of(ours_items).page()
    assert {item[3] for item in live(theirs_items)} == {"master"}
    pointer = results["master"][-1]
    assert pointer[0] == "pointer" and pointer[2] == {"x": 1, "y": 2} and pointer[1] >= 1
    assert pointer[3] == ours_join["slave"]


async def test_websockets_slave_talks_to_relay_client_master():
    with trio.fail_after(30):
        async with running_relay() as (server, listening, client):
            created, (join,) = await new_session(client, slaves=1)
            sid = created["session"]
            url = f"ws://127.0.0.1:{listening.public_port}/cobrowse/ws/{sid}?token={join['slave_token']}"
            master = await client.connect(sid, created["master_token"])
            await master.send("snapshot", pack("page"))
            results = {}

            async def slave_thread():
                results["slave"] = await trio.to_thread.run_sync(run_asyncio, third_party_slave, url, True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slave_thread)
                while server.host.sessions[sid].slaves_connected() < 1:
                    await trio.sleep(0.01)
                for i in range(50):
                    await master.send("mutation", pack(i))
                await master.send("mutation", pack(END))
                got, senders = {}, {}
                while "pointer" not in got or "chat" not in got:
                    item = await master.receive()
                    got[item.kind] = item.decode()
                    senders[item.kind] = item.sender
            await master.close()
    assert got["pointer"] == {"x": 3, "y": 4}
    assert got["chat"] == "from websockets"
    assert senders["pointer"] == senders["chat"] == join["slave"]
    assert senders["hello"] == ""
    items = results["slave"]
    assert items[0][0] == "hello" and items[0][2]["role"] == "slave"
    assert [item[2] for item in items if item[0] == "mutation"] == list(range(50)) + [END]
    assert items[-1][0] == "chat" and items[-1][2] == "from websockets"
    state = state_of(items)
    assert state.snapshot == pack("page")
