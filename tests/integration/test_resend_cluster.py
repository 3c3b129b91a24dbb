"""relay.Client's side of failover that loses nothing (docs/protocol.md 4b) in a real cluster: three
relay node processes and Debian's redis-server on 127.0.0.1 (tests/cluster_nodes.py).

A master that connects with a ``ResendWindow`` forgets what the copy acked, re-sends by itself after
a kill -9 of its host, and slaves that reconnect with ``resume=`` leave out what they already had:
each slave's page (built from what ``receive`` returns) is exactly the master's, nothing twice.
client.js does the same, master and slave in one Node.js process behind a balancer that skips the
dead node.  (tests/integration/test_failover_copy.py tests the server's side with a hand-numbering
master.)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import msgpack
import pytest
import trio

from relay import ResendWindow
from test_cluster import LEASE_TTL_S, client, connect_until_hello

pytestmark = pytest.mark.slow

BUDGET_S = 60


@pytest.fixture
def cluster(start_cluster):
    return start_cluster(lease_ttl_s=LEASE_TTL_S)


class Page:
    """A slave and its page, from what its connection returns (snapshot replaces, mutation appends)."""

    def __init__(self, joined: dict, connection) -> None:
        self.joined = joined
        self.connection = connection
        self.page: list = []
        self.seqs: list = []

    async def read_until(self, page: list) -> None:
        while self.page != page:
            envelope = await self.connection.receive()
            if envelope.seq == 0 or envelope.sender != "master":
                continue
            self.seqs.append((self.connection.epoch, envelope.seq))
            body = envelope.decode()
            self.page = [body] if envelope.kind == "snapshot" else self.page + [body]


class Master:
    def __init__(self, connection) -> None:
        self.connection = connection
        self.page: list = []

    async def send(self, kind: str, obj) -> None:
        self.page = [obj] if kind == "snapshot" else self.page + [obj]
        await self.connection.send(kind, msgpack.packb(obj))

    async def drain_acks(self) -> None:
        """Read until the window has nothing left (every message acked by the copy)."""
        while self.connection.window.kept:
            await self.connection.receive()


async def start(cluster, host, slaves: int):
    created = await client(cluster, host).create_session()
    session_id = created["session"]
    master = Master(await client(cluster, host).connect(session_id, created["master_token"], window=ResendWindow()))
    assert master.connection.hello["held"] == 0 and master.connection.resumed is False
    pages = []
    for _ in range(slaves):
        joined = await client(cluster, host).join(session_id)
        pages.append(Page(joined, await client(cluster, host).connect(session_id, joined["slave_token"])))
    return created, master, pages


async def fail_over(cluster, host, created, master, pages) -> list:
    cluster.kill(host)
    others = [name for name in cluster.names if name != host]
    session_id = created["session"]
    master.connection, hello, _ = await connect_until_hello(cluster, others, session_id, created["master_token"],
                                                            resume=master.connection)
    assert hello["role"] == "master"
    for page in pages:
        page.connection, _hello, _ = await connect_until_hello(cluster, others, session_id,
                                                               page.joined["slave_token"], resume=page.connection)
    return others


async def test_acked_messages_are_forgotten_and_a_takeover_needs_no_re_send(cluster):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master, pages = await start(cluster, a, slaves=2)
        await master.send("snapshot", "v1")
        for n in range(20):
            await master.send("mutation", n)
        await master.drain_acks()
        for page in pages:
            await page.read_until(master.page)
        await fail_over(cluster, a, created, master, pages)
        assert master.connection.resumed is True and master.connection.hello["held"] == 21
        for n in range(20, 25):
            await master.send("mutation", n)
        for page in pages:
            await page.read_until(master.page)
            assert page.connection.hello["catchup"] == "resume"
            assert len(set(page.seqs)) == len(page.seqs)


async def test_the_window_re_sends_what_the_copy_missed_and_slaves_leave_out_what_they_had(cluster, redis):
    a, _b, _c = cluster.names
    with trio.fail_after(BUDGET_S):
        created, master, pages = await start(cluster, a, slaves=2)
        await master.send("snapshot", "v1")
        await master.drain_acks()
        redis.process.send_signal(signal.SIGSTOP)  # the copy and its acks stop; the fan-out goes on
        try:
            for n in range(10):
                await master.send("mutation", n)
            for page in pages:
                await page.read_until(master.page)
            assert [m.seq for m in master.connection.window.kept] == list(range(2, 12))
            cluster.kill(a)  # dies with 10 messages its copy never got
        finally:
            redis.process.send_signal(signal.SIGCONT)
        await fail_over(cluster, a, created, master, pages)
        assert master.connection.resumed is True and master.connection.hello["held"] == 1
        await master.send("mutation", "after")
        for page in pages:
            hello = page.connection.hello
            assert hello["catchup"] == "resume" and hello["master_count"] == 1
            await page.read_until(master.page)
            assert page.connection.left_out == 10  # the re-sends: received, counted, not applied
            assert page.page == master.page


# ---------------------------------------------------------------------------- client.js in the cluster

CLIENT_JS_SCENARIO = r"""
const R = require(process.argv[2]);
const bases = JSON.parse(process.argv[3]); // node name -> base URL
const readline = require('readline');
const lines = readline.createInterface({input: process.stdin});
const waiting = [];
lines.on('line', (line) => { const next = waiting.shift(); if (next) next(line); });
const nextLine = () => new Promise((resolve) => waiting.push(resolve));
const say = (what) => console.log(JSON.stringify(what));

// A load balancer in front of the nodes: each connection goes to the next live node (the relay
// forwards to the host, or takes the session over when the host is dead).
const dead = new Set();
let turn = 0;
function live(url) {
  const names = Object.keys(bases).filter((name) => !dead.has(name));
  const name = names[turn++ % names.length];
  return url.replace(/^(https?|wss?):\/\/[^/]+/, (m, scheme) => scheme + '://' + new URL(bases[name]).host);
}
class Balanced extends WebSocket { constructor(url) { super(live(url)); } }
const options = {base: Object.values(bases)[0], WebSocket: Balanced, fetch: (url, init) => fetch(live(url), init),
                 backoffInitialMs: 50, backoffMaxMs: 300};

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
    hellos.push({epoch: hello.epoch, held: hello.held, resumed: hello.resumed});
    if (!hello.resumed) master.send('snapshot', 'page');
  });
  await once(master, 'hello');
  const slave = await R.join(Object.assign({session: master.session, agent: 'agent-7'}, options));
  const seen = [];
  const slaveHellos = [];
  slave.on('hello', (hello) => slaveHellos.push({catchup: hello.catchup, resumed: hello.resumed}));
  slave.on('resync', () => seen.push('resync'));
  slave.on('message', (kind, seq, body) => { if (kind === 'snapshot' || kind === 'mutation') seen.push(body); });
  await once(slave, 'hello');
  const upTo = (n) => new Promise((resolve) => {
    const check = () => { if (seen[seen.length - 1] === n) { slave.off('message', check); resolve(); } };
    slave.on('message', check);
    check();
  });
  for (let n = 1; n <= 5; n++) master.send('mutation', n);
  await upTo(5);
  await once(master, 'ack', (ack) => ack.held === 6); // the copy has the snapshot and 1..5
  say({session: master.session, host: master.created.node});
  await nextLine(); // Redis is stopped: the copy and its acks stop, the fan-out goes on
  for (let n = 6; n <= 15; n++) master.send('mutation', n);
  await upTo(15);
  say({kept: master._window.kept.map((item) => item.number)});
  dead.add(await nextLine()); // the host is killed (and Redis answers again)
  for (let n = 16; n <= 18; n++) master.send('mutation', n); // queued while the master reconnects
  await once(master, 'hello', (hello) => hello.epoch === 2);
  for (let n = 19; n <= 20; n++) master.send('mutation', n);
  await upTo(20);
  say({hellos: hellos, slaveHellos: slaveHellos, seen: seen, transports: [master.transport, slave.transport]});
  process.exit(0);
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.mark.node
async def test_client_js_master_and_slave_through_a_kill_of_the_host_lose_and_repeat_nothing(cluster, redis, tmp_path):
    node = shutil.which("node")
    assert node, "Node.js is required to test relay/static/client.js"
    probe = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
    command = [node] if probe.returncode == 0 else [node, "--experimental-websocket"]
    script = tmp_path / "cluster_resend.js"
    script.write_text(CLIENT_JS_SCENARIO)
    client_js = Path(__file__).resolve().parents[2] / "relay" / "static" / "client.js"
    bases = {name: f"http://127.0.0.1:{cluster.public(name)}" for name in cluster.names}
    errors = tmp_path / "node-stderr.txt"
    with trio.fail_after(BUDGET_S):
        with errors.open("wb") as stderr:
            process = await trio.lowlevel.open_process([*command, str(script), str(client_js), json.dumps(bases)],
                                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        buffer = b""

        async def line() -> dict:
            nonlocal buffer
            while b"\n" not in buffer:
                data = await process.stdout.receive_some(65536)
                assert data, f"the node scenario exited early: {errors.read_text()}"
                buffer += data
            text, buffer = buffer.split(b"\n", 1)
            return json.loads(text)

        try:
            started = await line()
            host = started["host"]
            redis.process.send_signal(signal.SIGSTOP)
            try:
                await process.stdin.send_all(b"go\n")
                assert (await line())["kept"] == list(range(7, 17))  # 6..15 of the page: numbers 7..16
                await process.stdin.send_all(host.encode() + b"\n")
                cluster.kill(host)
            finally:
                redis.process.send_signal(signal.SIGCONT)
            result = await line()
            assert await process.wait() == 0, errors.read_text()
        finally:
            if process.returncode is None:
                process.kill()
    assert result["seen"] == ["page"] + list(range(1, 21))  # every message once, in order, no resync
    assert result["hellos"][0] == {"epoch": 1, "held": 0, "resumed": False}
    assert result["hellos"][-1] == {"epoch": 2, "held": 6, "resumed": True}  # it re-sent 7..19 itself
    assert result["slaveHellos"][-1] == {"catchup": "resume", "resumed": True}
