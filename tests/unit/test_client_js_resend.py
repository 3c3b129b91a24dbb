"""client.js's side of docs/protocol.md section 4b, under Node.js with a WebSocket and a fetch the
test drives by hand: a master numbers, keeps, re-sends after a hello (WebSocket and long-polling),
forgets on ack and starts afresh when it must; a slave counts the master's messages and resumes
with them.  (tests/integration/test_static.py runs client.js against a live relay.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.node

CLIENT_JS = Path(__file__).resolve().parents[2] / "relay" / "static" / "client.js"
NODE_TIMEOUT_S = 60

SCENARIO = r"""
const R = require(process.argv[2]);
const assert = require('assert');

const sockets = [];
class FakeSocket {
  constructor(url) { this.url = url; this.sent = []; sockets.push(this); }
  send(bytes) {
    const raw = R.msgpack.decode(bytes);
    assert.strictEqual(raw.length, 3);
    this.sent.push([raw[0], raw[1], raw[2]]);
  }
  close() { this.closed = true; }
  open() { this.onopen({}); }
  deliver(kind, seq, body, sender) {
    const b = R.msgpack.encode([kind, seq, body, sender === undefined ? '' : sender]);
    this.onmessage({data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)});
  }
  drop(code) { this.onclose({code: code || 1006, reason: 'test'}); }
}
const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms || 0));
const noFetch = () => Promise.reject(new Error('no network in this test'));
const options = {base: 'http://relay.test', WebSocket: FakeSocket, fetch: noFetch, backoffInitialMs: 1, backoffMaxMs: 2};
const hello = (extra) => Object.assign({role: 'master', session: 'S', epoch: 1, seq: 0, catchup: 'none', mode: 'write',
                                        slaves: []}, extra);
const last = () => sockets[sockets.length - 1];
const out = {};

async function master() {
  const conn = new R.Connection({session: 'S', token: 'm', role: 'master'}, options);
  const events = [];
  conn.on('hello', (body) => {
    events.push('hello resumed=' + body.resumed);
    if (!body.resumed) conn.send('snapshot', 'page@' + body.held);
  });
  conn.on('ack', (body) => events.push('ack ' + body.held));
  conn.on('message', (kind) => events.push('message ' + kind));
  conn.on('error', (error) => events.push('error ' + error.code));
  conn.send('chat', 'before any connection'); // not numbered yet: numbering starts with the hello
  await tick();
  last().open();
  assert.deepStrictEqual(last().sent, []); // nothing goes out before the hello
  last().deliver('hello', 0, hello({held: 0}));
  // A first hello is a fresh start: the queued chat goes unnumbered (the relay gives it 1), then 2.
  assert.deepStrictEqual(last().sent, [['chat', 0, 'before any connection'], ['snapshot', 2, 'page@0']]);
  conn.send('mutation', 'm3');
  conn.setMode('s1', 'write');
  conn.send('css', 'c4');
  conn.send('navigate', 'n5');
  assert.deepStrictEqual(last().sent.slice(2), [['mutation', 3, 'm3'], ['mode', 0, {slave: 's1', mode: 'write'}],
                                               ['css', 4, 'c4'], ['navigate', 5, 'n5']]);
  last().deliver('ack', 0, {seq: 7, held: 3});
  assert.deepStrictEqual(conn._window.kept.map((item) => item.number), [4, 5]);
  // The socket breaks; sends while disconnected are numbered and queued.
  last().drop(1006);
  conn.send('mutation', 'm6');
  conn.admit('s2', true);
  conn.send('mutation', 'm7');
  await tick(20);
  assert.strictEqual(last().url, 'ws://relay.test/cobrowse/ws/S?token=m');
  last().open();
  assert.deepStrictEqual(last().sent, []);
  // The relay (another node, from the failover copy) holds 4: 5 goes again, then the queue, once each.
  last().deliver('hello', 0, hello({held: 4, epoch: 2}));
  assert.deepStrictEqual(last().sent, [['navigate', 5, 'n5'], ['mutation', 6, 'm6'],
                                       ['admit', 0, {slave: 's2', admit: true}], ['mutation', 7, 'm7']]);
  conn.send('mutation', 'm8');
  assert.deepStrictEqual(last().sent.pop(), ['mutation', 8, 'm8']);
  // The relay holds more than was ever sent (the copy is ahead of this page): start afresh.
  last().drop(1012);
  conn.send('mutation', 'm9');
  await tick(20);
  last().open();
  last().deliver('hello', 0, hello({held: 20, epoch: 3}));
  assert.deepStrictEqual(last().sent, [['mutation', 0, 'm9'], ['snapshot', 22, 'page@20']]);
  // A relay from before numbering (no held): seq 0 again, and the application snapshots.
  last().drop(1012);
  await tick(20);
  last().open();
  last().deliver('hello', 0, hello({epoch: 4}));
  conn.send('mutation', 'plain');
  assert.deepStrictEqual(last().sent, [['snapshot', 0, 'page@undefined'], ['mutation', 0, 'plain']]);
  // An ack stamped by a participant is not believed; a bad one is an error, never a message.
  last().deliver('ack', 0, {seq: 1, held: 1}, 's1');
  last().deliver('ack', 0, {seq: 1});
  conn.close();
  out.master = events;
}

async function bounded() {
  // A small window: past its bound the oldest go, and a hello that needs them is a fresh start.
  const conn = new R.Connection({session: 'B', token: 'b', role: 'master'}, Object.assign({maxKeptBytes: 300}, options));
  const resumed = [];
  conn.on('hello', (body) => { resumed.push(body.resumed); if (!body.resumed) conn.send('snapshot', 'p'); });
  await tick();
  last().open();
  last().deliver('hello', 0, hello({held: 0}));
  for (let i = 0; i < 5; i++) conn.send('mutation', 'x'.repeat(100)); // numbers 2..6, about 170 bytes kept each
  assert.deepStrictEqual(conn._window.kept.map((item) => item.number), [6]);
  assert.ok(conn._window.keptBytes <= 300);
  last().drop(1006);
  await tick(20);
  last().open();
  last().deliver('hello', 0, hello({held: 5}));
  assert.deepStrictEqual(last().sent.map((e) => [e[0], e[1]]), [['mutation', 6]]);
  last().drop(1006);
  await tick(20);
  last().open();
  last().deliver('hello', 0, hello({held: 4}));
  assert.deepStrictEqual(last().sent.map((e) => [e[0], e[1]]), [['snapshot', 0]]);
  assert.deepStrictEqual(resumed, [false, true, false]);
  // The fresh start's snapshot went unnumbered; lost with its connection, it goes again with its number.
  last().drop(1006);
  await tick(20);
  last().open();
  last().deliver('hello', 0, hello({held: 4}));
  assert.deepStrictEqual(last().sent.map((e) => [e[0], e[1]]), [['snapshot', 5]]);
  assert.deepStrictEqual(resumed, [false, true, false, true]);
  assert.throws(() => new R.Connection({session: 'B', token: 'b'}, Object.assign({}, options, {maxKeptBytes: -1})), /maxKeptBytes/);
  conn.close();
}

async function queueFull() {
  // A send refused because the queue is full takes no number: the numbers stay without a hole.
  const conn = new R.Connection({session: 'Q', token: 'q', role: 'master'}, Object.assign({maxPendingBytes: 200}, options));
  const errors = [];
  conn.on('error', (error) => errors.push(error.code));
  conn.on('hello', (body) => { if (!body.resumed) conn.send('snapshot', 'p'); });
  await tick();
  last().open();
  last().deliver('hello', 0, hello({held: 0}));
  last().drop(1006);
  assert.strictEqual(conn.send('mutation', 'a'.repeat(100)), true); // number 2
  assert.strictEqual(conn.send('mutation', 'b'.repeat(100)), false); // refused: no number
  assert.strictEqual(conn.send('mutation', 'c'), true); // number 3
  assert.deepStrictEqual(errors, ['send-queue-full']);
  await tick(20);
  last().open();
  last().deliver('hello', 0, hello({held: 1}));
  assert.deepStrictEqual(last().sent.map((e) => [e[1], e[2].slice(0, 1)]), [[2, 'a'], [3, 'c']]);
  conn.close();
}

async function slave() {
  const conn = R.connect(Object.assign({session: 'S', token: 's'}, options));
  const messages = [];
  conn.on('message', (kind, seq) => messages.push(kind + seq));
  conn.on('hello', (body) => messages.push('hello resumed=' + body.resumed));
  await tick();
  last().open();
  last().deliver('hello', 0, {role: 'slave', epoch: 5, seq: 10, catchup: 'full', mode: 'pointer', slave: 'ab',
                              master_count: 4});
  assert.strictEqual(conn.masterCount, 4);
  last().deliver('snapshot', 8, 'page', 'master');
  last().deliver('chat', 9, 'hi', 'cd');
  last().deliver('presence', 10, {event: 'joined', slave: 'cd', agent: 'x', mode: 'pointer'});
  last().deliver('mutation', 11, 'm', 'master');
  last().deliver('mutation', 11, 'm again', 'master'); // a repeat is dropped and not counted
  assert.strictEqual(conn.masterCount, 6);
  last().drop(1012);
  await tick(20);
  assert.strictEqual(last().url, 'ws://relay.test/cobrowse/ws/S?token=s&after=11&epoch=5&master_count=6');
  last().open();
  // The new host continues from the copy's end (seq 10 of epoch 5): our numbering continues from there.
  last().deliver('hello', 0, {role: 'slave', epoch: 6, seq: 12, catchup: 'resume', after: 10, mode: 'pointer',
                              slave: 'ab', master_count: 5});
  assert.strictEqual(conn.lastSeq, 10);
  // The master re-sends what the copy lacked: this slave had applied it (its count was 6), left out.
  last().deliver('mutation', 11, 'm', 'master');
  last().deliver('chat', 12, 'new', 'cd'); // not the master's: applied
  last().deliver('css', 13, 'c', 'master');
  assert.strictEqual(conn.masterCount, 7);
  // A reconnect in the middle of a skip asks with the count it applied, and goes on leaving out.
  last().deliver('hello', 0, {role: 'slave', epoch: 7, seq: 20, catchup: 'resume', after: 13, mode: 'pointer',
                              slave: 'ab', master_count: 5});
  last().deliver('mutation', 14, 'm6', 'master'); // count 6: applied before, left out
  last().drop(1012);
  await tick(20);
  assert.strictEqual(last().url, 'ws://relay.test/cobrowse/ws/S?token=s&after=14&epoch=7&master_count=7');
  last().open();
  last().deliver('hello', 0, {role: 'slave', epoch: 7, seq: 20, catchup: 'resume', mode: 'pointer', slave: 'ab',
                              master_count: 6});
  last().deliver('mutation', 15, 'm7', 'master'); // count 7: still had it
  last().deliver('mutation', 16, 'm8', 'master'); // count 8: new
  assert.strictEqual(conn.masterCount, 8);
  last().deliver('resync', 0, {epoch: 6, seq: 30, master_count: 2});
  assert.strictEqual(conn.masterCount, 2);
  last().deliver('snapshot', 30, 'page', 'master');
  last().drop(1012);
  await tick(20);
  assert.strictEqual(last().url, 'ws://relay.test/cobrowse/ws/S?token=s&after=30&epoch=6&master_count=3');
  last().open();
  // A relay that does not count (no master_count): the reconnect goes without it.
  last().deliver('hello', 0, {role: 'slave', epoch: 6, seq: 30, catchup: 'resume', mode: 'pointer', slave: 'ab'});
  assert.strictEqual(conn.masterCount, null);
  last().deliver('mutation', 31, 'm', 'master');
  last().drop(1012);
  await tick(20);
  assert.strictEqual(last().url, 'ws://relay.test/cobrowse/ws/S?token=s&after=31&epoch=6');
  conn.close();
  out.slave = messages;
}

async function longPolling() {
  // Long-polling: the re-sent messages and the queue go in POST bodies, in order, after the hello.
  const gets = [];
  const posts = [];
  const fetch = (url, init) => {
    if (init.method === 'POST') {
      posts.push(R.msgpack.decodeAll(new Uint8Array(init.body)).map((e) => [e[0], e[1], e[2]]));
      return Promise.resolve({ok: true, status: 200, arrayBuffer: async () => new ArrayBuffer(0)});
    }
    return new Promise((resolve, reject) => {
      gets.push({url: url, resolve: resolve, reject: reject});
      if (init.signal) init.signal.addEventListener('abort', () => reject(new Error('aborted')));
    });
  };
  const answer = (envelopes) => {
    const parts = envelopes.map((e) => R.msgpack.encode(e));
    const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const p of parts) { body.set(p, offset); offset += p.length; }
    gets[gets.length - 1].resolve({ok: true, status: 200, arrayBuffer: async () => body.buffer});
  };
  const conn = new R.Connection({session: 'L', token: 'l', role: 'master'},
    {base: 'http://relay.test', disableWebSockets: true, fetch: fetch, backoffInitialMs: 1, backoffMaxMs: 2});
  conn.on('hello', (body) => { if (!body.resumed) conn.send('snapshot', 'p'); });
  await tick();
  answer([['hello', 0, hello({held: 0}), '']]);
  await tick(5);
  conn.send('mutation', 'm2');
  conn.send('mutation', 'm3');
  await tick(5);
  assert.deepStrictEqual(posts.flat().map((e) => e[0] + e[1]), ['snapshot0', 'mutation2', 'mutation3']);
  posts.length = 0;
  gets[gets.length - 1].reject(new Error('network down'));
  await tick(5);
  conn.send('mutation', 'm4');
  await tick(20);
  answer([['hello', 0, hello({held: 2, epoch: 2}), '']]);
  await tick(5);
  assert.deepStrictEqual(posts.flat().map((e) => e[0] + e[1]), ['mutation3', 'mutation4']);
  conn.close();
}

(async () => {
  await master();
  await bounded();
  await queueFull();
  await slave();
  await longPolling();
  console.log(JSON.stringify(out));
  process.exit(0); // a never-opened socket's open timer would keep node alive for openTimeoutMs
})().catch((error) => { console.error(error); process.exit(1); });
"""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (`node`, version 18 or later) is required to test relay/static/client.js")
    return node


def test_client_js_numbers_keeps_re_sends_and_counts(tmp_path):
    script = tmp_path / "resend_unit.js"
    script.write_text(SCENARIO)
    result = subprocess.run([node_binary(), str(script), str(CLIENT_JS)], capture_output=True, text=True,
                            timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr + result.stdout
    out = json.loads(result.stdout)
    assert out["master"] == [
        "hello resumed=false",
        "ack 3",  # an ack is its own event, never a 'message'
        "hello resumed=true",
        "hello resumed=false",
        "hello resumed=false",
        "error protocol",  # the ack stamped by a participant
        "error protocol",  # the ack without held
    ]
    assert out["slave"] == ["hello resumed=false", "snapshot8", "chat9", "mutation11",
                            "hello resumed=true", "chat12", "css13", "hello resumed=true", "hello resumed=true", "mutation16", "snapshot30", "hello resumed=true", "mutation31"]
