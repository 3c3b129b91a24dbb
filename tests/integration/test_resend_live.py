"""A master's numbered messages against a live node (docs/protocol.md section 4b): a master whose
connection breaks mid-stream reconnects, sends again what the relay lacks, and every slave gets every
message exactly once, in order; a new page with the session's token continues the numbering; a slave
reconnects with ``resume=`` and gets exactly what it missed."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import trio

from helpers import new_session, pack, running_relay, unpack
from relay import ConnectionClosed, ResendWindow
from relay._netio import close_socket

CLIENT_JS = Path(__file__).resolve().parents[2] / "relay" / "static" / "client.js"
TIMEOUT_S = 30
BODY_BYTES = 2048  # big enough that a burst is still in the socket buffers when the reset comes
BURST = 200


def node_with_websocket() -> list:
    """Node.js with a global WebSocket (Node 20 and 21 need the flag); no skip without it."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (`node`, version 18 or later) is required to test relay/static/client.js")
    probe = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
    return [node] if probe.returncode == 0 else [node, "--experimental-websocket"]


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
    checks that seqs go up by one (presence events are in the stream too)."""
    seen = []
    last_seq = None
    while True:
        envelope = await slave.receive()
        if envelope.seq == 0:
            continue
        assert last_seq is None or envelope.seq == last_seq + 1, (last_seq, envelope.seq, envelope.kind)
        last_seq = envelope.seq
        if envelope.kind not in ("snapshot", "mutation"):
            continue
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
            # One that never reaches the relay (as if lost in the socket buffer), the reset, and one
            # sent into the broken connection: both numbered and kept.
            master.window.number("mutation", mutation(BURST + 1))
            reset(master)
            with pytest.raises(ConnectionClosed):
                await master.send("mutation", mutation(BURST + 2))
            broken, master = master, await client.connect(session, token, resume=master)
            with pytest.raises(ConnectionClosed, match="superseded"):
                await broken.send("mutation", mutation(0))  # would number a message nobody sends
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
            hello = await slave.wait_for_hello()
            assert slave.resumed is True and hello["catchup"] == "resume", hello
            assert await stream_bodies(slave, 4) == [2, 3, 4]
            assert slave.master_count == 5
            await master.close()
            await slave.close()


# ---------------------------------------------------------------------------- client.js, live

CLIENT_JS_SCENARIO = r"""
const R = require(process.argv[2]);
const assert = require('assert');
const options = {base: process.argv[3], backoffInitialMs: 20, backoffMaxMs: 100};
if (process.argv[4] === 'long-polling') options.disableWebSockets = true;
const TOTAL = 60;

function within(ms, what, promise) {
  let timer;
  const late = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error('timed out waiting for ' + what)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
const once = (connection, event, test) => new Promise((resolve) => {
  const listener = function () {
    if (test && !test.apply(null, arguments)) return;
    connection.off(event, listener);
    resolve(Array.from(arguments));
  };
  connection.on(event, listener);
});

(async () => {
  const master = await R.create(options);
  const hellos = [];
  master.on('hello', (hello) => {
    hellos.push({held: hello.held, resumed: hello.resumed});
    if (!hello.resumed) master.send('snapshot', 'page');
  });
  await within(8000, 'the master hello', once(master, 'hello'));
  const slave = await R.join(Object.assign({session: master.session, agent: 'agent-7'}, options));
  const seen = [];
  const done = once(slave, 'message', (kind, seq, body) => kind === 'mutation' && body === TOTAL);
  slave.on('message', (kind, seq, body) => { if (kind === 'snapshot' || kind === 'mutation') seen.push(body); });
  await within(8000, 'the slave hello', once(slave, 'hello'));
  for (let n = 1; n <= TOTAL / 2; n++) master.send('mutation', n);
  // The connection breaks under the master (no close handshake), with sends in flight and more
  // made while it reconnects: they are numbered, kept and queued.
  master._stopTransport();
  master._lost(1006, 'broken by the test');
  for (let n = TOTAL / 2 + 1; n <= TOTAL - 5; n++) master.send('mutation', n);
  // A WebSocket gets a new hello; a long-poll GET may find its client kept by the relay (no hello).
  await within(8000, 'the master open again', once(master, 'open'));
  if (process.argv[4] === 'websocket') await within(8000, 'the master hello again', once(master, 'hello'));
  for (let n = TOTAL - 4; n <= TOTAL; n++) master.send('mutation', n);
  await within(8000, 'the last mutation', done);
  await master.end();
  console.log(JSON.stringify({hellos: hellos, seen: seen, transport: slave.transport}));
  process.exit(0);
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.mark.node
@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_client_js_master_broken_mid_stream_loses_nothing_and_repeats_nothing(tmp_path, transport):
    script = tmp_path / "resend.js"
    script.write_text(CLIENT_JS_SCENARIO)
    with trio.fail_after(40):
        async with running_relay(poll_wait_s=1.0) as (_server, listening, _client):
            base = f"http://127.0.0.1:{listening.public_port}"
            result = await trio.run_process([*node_with_websocket(), str(script), str(CLIENT_JS), base, transport],
                                            capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    out = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert out["transport"] == transport
    assert out["hellos"][0] == {"held": 0, "resumed": False}
    assert all(hello["resumed"] is True for hello in out["hellos"][1:])
    if transport == "websocket":
        assert len(out["hellos"]) == 2
    assert out["seen"] == ["page"] + list(range(1, 61))
