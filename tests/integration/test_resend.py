"""A master's numbered messages against a live node (docs/protocol.md section 4b): a master whose
connection breaks mid-stream reconnects, sends again what the relay lacks, and every slave gets every
message exactly once, in order; a new page with the session's token continues the numbering; a slave
reconnects with ``resume=`` and gets exactly what it missed."""

from __future__ import annotations

import socket
import struct

import trio

from helpers import new_session, pack, running_relay, unpack
from relay import ResendWindow
from relay._netio import close_socket

TIMEOUT_S = 30
BODY_BYTES = 2048  # big enough that a burst is still in the socket buffers when the reset comes
BURST = 200


def reset(connection) -> None:
    """Break a connection the hard way: a TCP reset (SO_LINGER 0), no close frame; what the kernel
    had not sent yet is lost."""
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    close_socket(connection.sock)
    connection.closed = True


def mutation(index: int) -> bytes:
    return pack({"n": index, "pad": "x" * BODY_BYTES})


async def stream_bodies(slave, until: int) -> list:
    """The slave's stream (snapshots as "snapshot", mutations as their number) up to mutation ``until``;
    checks that seqs go up by one."""
    seen = []
    last_seq = None
    while True:
        envelope = await slave.receive()
        if envelope.seq == 0 or envelope.kind not in ("snapshot", "mutation"):
            continue
        assert last_seq is None or envelope.seq == last_seq + 1, (last_seq, envelope.seq)
        last_seq = envelope.seq
        body = unpack(envelope.body)
        seen.append("snapshot" if envelope.kind == "snapshot" else body["n"])
        if isinstance(body, dict) and body["n"] == until:
            return seen


async def test_a_master_that_loses_its_connection_mid_stream_re_sends_and_slaves_get_everything_once():
    with trio.fail_after(TIMEOUT_S):
        async with running_relay() as (_server, _listening, client):
            created, [joined] = await new_session(client, slaves=1)
            session, token = created["session"], created["master_token"]
            slave = await client.connect(session, joined["slave_token"])
            master = await client.connect(session, token, window=ResendWindow())
            assert master.hello["held"] == 0 and master.resumed is False
            await master.send("snapshot", pack("page"))
            for index in range(1, BURST + 1):
                await master.send("mutation", mutation(index))
            # Two more that never reach the relay (as if lost in the socket buffer), then the reset.
            master.window.number("mutation", mutation(BURST + 1))
            master.window.number("mutation", mutation(BURST + 2))
            reset(master)
            master = await client.connect(session, token, resume=master)
            held = master.hello["held"]
            assert master.resumed is True and held <= BURST + 1  # the snapshot was 1: the lost two are above
            assert master.window.last_number == BURST + 3
            for index in range(BURST + 3, BURST + 10):
                await master.send("mutation", mutation(index))
            seen = await stream_bodies(slave, BURST + 9)
            assert seen == ["snapshot"] + list(range(1, BURST + 10))
            await master.close()
            await slave.close()


async def test_a_reconnect_that_lost_nothing_re_sends_nothing_the_relay_needs():
    with trio.fail_after(TIMEOUT_S):
        async with running_relay() as (_server, _listening, client):
            created, [joined] = await new_session(client, slaves=1)
            session, token = created["session"], created["master_token"]
            slave = await client.connect(session, joined["slave_token"])
            master = await client.connect(session, token, window=ResendWindow())
            await master.send("snapshot", pack("page"))
            for index in range(1, 4):
                await master.send("mutation", mutation(index))
            await master.close()  # a clean close: the relay took everything
            master = await client.connect(session, token, resume=master)
            assert master.resumed is True and master.hello["held"] == 4
            await master.send("mutation", mutation(4))
            assert await stream_bodies(slave, 4) == ["snapshot", 1, 2, 3, 4]
            await master.close()
            await slave.close()


async def test_a_new_page_with_the_sessions_token_continues_the_numbering():
    with trio.fail_after(TIMEOUT_S):
        async with running_relay() as (_server, _listening, client):
            created, [joined] = await new_session(client, slaves=1)
            session, token = created["session"], created["master_token"]
            slave = await client.connect(session, joined["slave_token"])
            first = await client.connect(session, token, window=ResendWindow())
            await first.send("snapshot", pack("page"))
            await first.send("mutation", mutation(1))
            await first.send("mutation", mutation(2))
            await first.close()
            # A reload: a new window knows nothing, so it starts afresh from what the relay holds.
            page = await client.connect(session, token, window=ResendWindow())
            assert page.resumed is False and page.hello["held"] == 3
            await page.send("snapshot", pack("page again"))  # unnumbered: the relay gives it 4
            await page.send("mutation", mutation(3))  # 5: taken, not dropped as a repeat
            assert await stream_bodies(slave, 3) == ["snapshot", 1, 2, "snapshot", 3]
            await page.close()
            await slave.close()


async def test_a_slave_that_reconnects_with_resume_gets_exactly_what_it_missed():
    with trio.fail_after(TIMEOUT_S):
        async with running_relay() as (_server, _listening, client):
            created, [joined] = await new_session(client, slaves=1)
            session = created["session"]
            master = await client.connect(session, created["master_token"], window=ResendWindow())
            slave = await client.connect(session, joined["slave_token"])
            await master.send("snapshot", pack("page"))
            await master.send("mutation", mutation(1))
            assert await stream_bodies(slave, 1) == ["snapshot", 1]
            assert slave.master_count == 2
            position = slave.resume_params()
            assert position["after"] == slave.last_seq and position["master_count"] == 2
            reset(slave)
            for index in range(2, 5):
                await master.send("mutation", mutation(index))
            slave = await client.connect(session, joined["slave_token"], resume=slave)
            assert slave.resumed is True and slave.hello["catchup"] == "resume"
            assert await stream_bodies(slave, 4) == [2, 3, 4]
            assert slave.master_count == 5
            await master.close()
            await slave.close()
