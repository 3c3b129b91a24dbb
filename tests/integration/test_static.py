"""The browser side: relay/static/client.js run for real under Node.js, against Python's msgpack,
relay's own envelope code, and a live relay node (WebSocket, long-polling, and the fallback).

Node.js is required (no skip): without it the JavaScript would go untested.  The demo pages are
checked for what can be checked without a browser (served, self-contained, scripts parse, and
their scripts run on a stub DOM name every sender from the relay's stamp, never from a body).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import pack, running_relay
from relay import _accel
from relay._accel import OP_BINARY, build_envelope, encode_client_frame
from relay._client import parse_delivered
from relay._session import Outgoing

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "relay" / "static"
CLIENT_JS = STATIC / "client.js"
NODE_TIMEOUT_S = 60
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (`node`, version 18 or later) is required to test relay/static/client.js; "
                    "install it (e.g. `apt-get install nodejs`) - these tests must not be skipped")
    return node


# ---------------------------------------------------------------------------- a codec server in node

# Values cross the process boundary as tagged JSON so that nothing is lost on the way:
# null/true/false as such; {"i": decimal}, {"f": 16 hex digits of the float64}, {"s": text},
# {"b": hex}, {"a": [...]}, {"m": [[k, v], ...]}, {"x": [type, hex]}.
CODEC_SERVER = r"""
'use strict';
const R = require(process.argv[2]);
const readline = require('readline');
const {Ext} = R.msgpack;

const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

function fromTagged(t) {
  if (t === null || t === true || t === false) return t;
  if ('i' in t) { const n = Number(t.i); return Number.isSafeInteger(n) ? n : BigInt(t.i); }
  if ('f' in t) return new DataView(unhex(t.f).buffer).getFloat64(0);
  if ('s' in t) return t.s;
  if ('b' in t) return unhex(t.b);
  if ('a' in t) return t.a.map(fromTagged);
  if ('m' in t) return new Map(t.m.map(([k, v]) => [fromTagged(k), fromTagged(v)]));
  if ('x' in t) return new Ext(t.x[0], unhex(t.x[1]));
  throw new Error('bad tag ' + JSON.stringify(t));
}

function toTagged(v) {
  if (v === null || v === true || v === false) return v;
  if (v === undefined) return {u: 1};
  if (typeof v === 'bigint') return {i: v.toString()};
  if (typeof v === 'number') {
    if (Number.isInteger(v) && !Object.is(v, -0)) return {i: BigInt(v).toString()};
    const view = new DataView(new ArrayBuffer(8)); view.setFloat64(0, v); return {f: hex(new Uint8Array(view.buffer))};
  }
  if (typeof v === 'string') return {s: v};
  if (v instanceof Uint8Array) return {b: hex(v)};
  if (Array.isArray(v)) return {a: v.map(toTagged)};
  if (v instanceof Map) return {m: Array.from(v, ([k, x]) => [toTagged(k), toTagged(x)])};
  if (v instanceof Ext) return {x: [v.type, hex(v.data)]};
  if (typeof v === 'object') {
    return {m: Object.keys(v).map((k) => [toTagged(k), toTagged(v[k])]), proto: Object.getPrototypeOf(v) === Object.prototype};
  }
  return {other: String(v)};
}

function run(request) {
  switch (request.op) {
    case 'decode': return toTagged(R.msgpack.decode(unhex(request.hex)));
    case 'decodeAll': return R.msgpack.decodeAll(unhex(request.hex)).map(toTagged);
    case 'encode': return hex(R.msgpack.encode(fromTagged(request.value)));
    case 'roundtrip': return hex(R.msgpack.encode(R.msgpack.decode(unhex(request.hex))));
    case 'prefixes': {
      // Every strict prefix must be refused as truncated, never decoded or crashed on.
      const bytes = unhex(request.hex);
      const results = [];
      for (let end = 0; end < bytes.length; end++) {
        try { R.msgpack.decode(bytes.subarray(0, end)); results.push('decoded'); }
        catch (error) { results.push(error.name + ': ' + error.message); }
      }
      return results;
    }
    case 'envelope': return hex(R.encodeEnvelope(request.kind, fromTagged(request.body)));
    case 'envelopes':
      return R.decodeEnvelopes(unhex(request.hex)).map((e) => ({kind: e.kind, seq: e.seq, body: toTagged(e.body), sender: e.sender}));
    case 'envelopeOne': {
      const e = R.decodeEnvelope(unhex(request.hex));
      return {kind: e.kind, seq: e.seq, body: toTagged(e.body), sender: e.sender};
    }
    case 'eval': return toTagged(new Function('R', 'unhex', 'hex', request.code)(R, unhex, hex));
    default: throw new Error('unknown op ' + request.op);
  }
}

readline.createInterface({input: process.stdin}).on('line', (line) => {
  let reply;
  try { reply = {ok: run(JSON.parse(line))}; }
  catch (error) { reply = {error: error.name + ': ' + error.message}; }
  process.stdout.write(JSON.stringify(reply) + '\n');
});
"""


class NodeCodec:
    """One long-lived node process answering codec requests line by line."""

    def __init__(self, directory: Path) -> None:
        script = directory / "codec_server.js"
        script.write_text(CODEC_SERVER)
        self.process = subprocess.Popen([node_binary(), str(script), str(CLIENT_JS)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, encoding="utf-8")

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the node codec server died (exit code {self.process.poll()})"
        return json.loads(line)

    def ok(self, **request):
        reply = self.ask(**request)
        assert "ok" in reply, f"{request['op']} failed in node: {reply.get('error')}"
        return reply["ok"]

    def error(self, **request) -> str:
        reply = self.ask(**request)
        assert "error" in reply, f"{request['op']} should have failed in node but gave {reply['ok']!r}"
        return reply["error"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    server = NodeCodec(tmp_path_factory.mktemp("node"))
    yield server
    server.close()


def tagged(value):
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": struct.pack(">d", value).hex()}
    if isinstance(value, str):
        return {"s": value}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, msgpack.ExtType):  # before tuple: ExtType is a namedtuple
        return {"x": [value.code, value.data.hex()]}
    if isinstance(value, (list, tuple)):
        return {"a": [tagged(item) for item in value]}
    if isinstance(value, dict):
        return {"m": [[tagged(k), tagged(v)] for k, v in value.items()]}
    if isinstance(value, msgpack.ExtType):
        return {"x": [value.code, value.data.hex()]}
    raise TypeError(value)


def canonical(value):
    """A comparable form: JavaScript has one number type, so an integral float equals that int."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return ("nan",)
        if value.is_integer():
            return ("number", int(value))
        return ("float", struct.pack(">d", value))
    if isinstance(value, int):
        return ("number", value)
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, msgpack.ExtType):
        return ("ext", value.code, value.data)
    if isinstance(value, (list, tuple)):
        return ("array", [canonical(item) for item in value])
    if isinstance(value, dict):
        return ("map", sorted((repr(canonical(k)), canonical(v)) for k, v in value.items()))
    if isinstance(value, msgpack.ExtType):
        return ("ext", value.code, value.data)
    raise TypeError(value)


def untagged(t):
    if t is None or t is True or t is False:
        return t
    (key,) = [k for k in t if k != "proto"]
    if key == "i":
        return int(t["i"])
    if key == "f":
        return struct.unpack(">d", bytes.fromhex(t["f"]))[0]
    if key == "s":
        return t["s"]
    if key == "b":
        return bytes.fromhex(t["b"])
    if key == "a":
        return [untagged(item) for item in t["a"]]
    if key == "m":
        return {_hashable(untagged(k)): untagged(v) for k, v in t["m"]}
    if key == "x":
        return msgpack.ExtType(t["x"][0], bytes.fromhex(t["x"][1]))
    raise AssertionError(f"node gave an unexpected value: {t!r}")


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def packb(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpackb(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def byte_exact(value) -> bool:
    """JavaScript writes an integral float as an int and NaN canonically: elsewhere bytes match."""
    if isinstance(value, float):
        return not (math.isnan(value) or value.is_integer())
    if isinstance(value, msgpack.ExtType):
        return True
    if isinstance(value, (list, tuple)):
        return all(byte_exact(item) for item in value)
    if isinstance(value, dict):
        return all(byte_exact(k) and byte_exact(v) for k, v in value.items())
    return True


# ---------------------------------------------------------------------------- values

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
EXT_TYPES = st.integers(min_value=0, max_value=127)  # msgpack-python reserves the negative ones
SCALARS = (st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=40) | st.binary(max_size=40)
           | st.builds(msgpack.ExtType, EXT_TYPES, st.binary(max_size=20)))
KEYS = st.text(max_size=10) | st.integers(min_value=-1000, max_value=2**40) | st.binary(max_size=4)
VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=6) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=25)

BOUNDARY_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1, 2**53, 2**53 + 1,
                 2**63, 2**64 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1,
                 -(2**53) + 1, -(2**53), -(2**53) - 1, -(2**63)]
BOUNDARY_VALUES = (
    [*BOUNDARY_INTS, 0.5, -0.0, 1e300, -2.5e-310, float("inf"), float("-inf")]
    + ["x" * n for n in (0, 31, 32, 255, 256, 65535, 65536)]
    + ["\u00e9\u4e2d\U0001f600" * 20]
    + [b"\x00" * n for n in (0, 1, 255, 256, 65535, 65536)]
    + [[None] * n for n in (0, 15, 16, 65535, 65536)]
    + [{str(i): i for i in range(n)} for n in (0, 15, 16, 65536)]
    + [msgpack.ExtType(5, b"\x01" * n) for n in (0, 1, 2, 3, 4, 8, 16, 17, 255, 256, 65536)]
)


# ---------------------------------------------------------------------------- codec


def test_node_is_available():
    version = subprocess.run([node_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0])
    assert major >= 18, f"client.js needs Node.js 18 or later for these tests, found {version.strip()}"


@pytest.mark.parametrize("value", BOUNDARY_VALUES, ids=lambda v: repr(v)[:30])
def test_boundary_values_both_ways(codec, value):
    packed = packb(value)
    assert canonical(untagged(codec.ok(op="decode", hex=packed.hex()))) == canonical(value)
    encoded = bytes.fromhex(codec.ok(op="encode", value=tagged(value)))
    assert encoded == packed  # the same smallest encodings as msgpack-python


@EXAMPLES
@given(VALUES)
def test_decodes_what_python_packs(codec, value):
    packed = packb(value)
    assert canonical(untagged(codec.ok(op="decode", hex=packed.hex()))) == canonical(value)
    again = bytes.fromhex(codec.ok(op="roundtrip", hex=packed.hex()))
    assert canonical(unpackb(again)) == canonical(value)
    if byte_exact(value):
        assert again == packed


@EXAMPLES
@given(VALUES)
def test_python_unpacks_what_javascript_packs(codec, value):
    encoded = bytes.fromhex(codec.ok(op="encode", value=tagged(value)))
    assert canonical(unpackb(encoded)) == canonical(value)
    if byte_exact(value):
        assert encoded == packb(value)


def test_float32_and_integral_floats(codec):
    # msgpack-python can send float32; JavaScript reads it back as a number.
    assert untagged(codec.ok(op="decode", hex=packb(1.5).hex())) == 1.5
    assert untagged(codec.ok(op="decode", hex=msgpack.packb(0.25, use_single_float=True).hex())) == 0.25
    assert untagged(codec.ok(op="decode", hex="ca7fc00000")) != untagged(codec.ok(op="decode", hex="ca7fc00000"))  # NaN
    assert bytes.fromhex(codec.ok(op="encode", value=tagged(2.0))) == packb(2)  # one number type in JS
    assert bytes.fromhex(codec.ok(op="encode", value=tagged(-0.0))) == packb(-0.0)  # the sign survives


@settings(max_examples=60, deadline=None)
@given(VALUES)
def test_every_truncation_is_refused(codec, value):
    packed = packb(value)
    for end, result in enumerate(codec.ok(op="prefixes", hex=packed.hex())):
        assert result.startswith("DecodeError: truncated"), f"prefix of {end} bytes of {packed.hex()}: {result}"


@settings(max_examples=60, deadline=None)
@given(VALUES, VALUES)
def test_trailing_data_and_concatenations(codec, first, second):
    data = packb(first) + packb(second)
    assert "trailing bytes" in codec.error(op="decode", hex=data.hex())
    both = [untagged(item) for item in codec.ok(op="decodeAll", hex=data.hex())]
    assert [canonical(item) for item in both] == [canonical(first), canonical(second)]
    if len(packb(second)) > 1:  # a cut-off last value is an error, not silently dropped
        assert "truncated" in codec.error(op="decodeAll", hex=data[:-1].hex())
    else:
        assert [canonical(untagged(item)) for item in codec.ok(op="decodeAll", hex=data[:-1].hex())] == \
            [canonical(first)]


@pytest.mark.parametrize("data, message", [
    (b"\xc1", "reserved msgpack byte 0xc1"),
    (b"\x92\x01\xc1", "reserved msgpack byte 0xc1"),
    (b"\xa2\xc3\x28", "invalid UTF-8"),
    (b"\xd9\x01\xff", "invalid UTF-8"),
    (b"\xdd\xff\xff\xff\xff", "truncated"),  # a 4-billion-item array claim must not allocate
    (b"\xdf\xff\xff\xff\xff\xc0", "truncated"),
    (b"\xc6\xff\xff\xff\xff\x00", "truncated"),
    (b"\x91" * 100_000 + b"\xc0", "nested deeper than 512"),  # a clear error, not a stack overflow
    (b"", "truncated"),
])
def test_malformed_input_is_refused(codec, data, message):
    error = codec.error(op="decode", hex=data.hex())
    assert error.startswith("DecodeError") and message in error


@pytest.mark.parametrize("data", ["d4fe01", "d6ffffffffff", "c70380616263", "c8010000" + "00" * 256], ids=lambda d: d[:12])
def test_negative_and_odd_ext_types_survive(codec, data):
    # Python cannot build these (negative types are reserved, -1 is the timestamp): hand-written.
    assert codec.ok(op="roundtrip", hex=data) == data


def test_nesting_limit_is_inclusive_of_512_levels(codec):
    count_levels = "let v = R.msgpack.decode(unhex('%s')); let d = 0; while (Array.isArray(v)) { v = v[0]; d++; } return [d, v];"
    assert untagged(codec.ok(op="eval", code=count_levels % (b"\x91" * 512 + b"\xc0").hex())) == [512, None]
    assert "nested deeper than 512" in codec.error(op="decode", hex=(b"\x91" * 513 + b"\xc0").hex())


def test_javascript_specific_values(codec):
    result = codec.ok(op="eval", code=r"""
      const {encode, decode} = R.msgpack;
      const out = {};
      out.object = hex(encode({b: 1, a: [true, null, undefined], 'é': new Uint8Array([1, 2])}));
      out.buffer = hex(encode(new Uint16Array([1, 2]).buffer));
      out.bigBig = hex(encode(BigInt('18446744073709551615')));
      out.bigNeg = hex(encode(BigInt('-9223372036854775808')));
      out.bigSmall = hex(encode(BigInt(5)));
      out.unsafe = hex(encode(2 ** 60));
      const errors = [];
      const cyclic = []; cyclic.push(cyclic);
      for (const bad of [() => {}, Symbol('s'), new Date(0), cyclic, BigInt('18446744073709551616')]) {
        try { encode(bad); errors.push('encoded'); } catch (error) { errors.push(error.name); }
      }
      out.errors = errors.join(',');
      const proto = decode(unhex('81a95f5f70726f746f5f5f01'));  // {"__proto__": 1}
      out.proto = [Object.getPrototypeOf(proto) === Object.prototype, proto.__proto__ === 1 || Object.getOwnPropertyDescriptor(proto, '__proto__').value === 1].join(',');
      out.intKeys = decode(unhex('82010203a161')) instanceof Map;
      out.binIsCopy = (() => { const b = unhex('c4020102'); const v = decode(b); b[2] = 9; return v[0]; })();
      return out;
    """)
    out = {key: untagged(value) for key, value in ((k, v) for k, v in untagged_map(result).items())}
    assert bytes.fromhex(out["object"]) == packb({"b": 1, "a": [True, None, None], "é": b"\x01\x02"})
    assert bytes.fromhex(out["buffer"]) == packb(b"\x01\x00\x02\x00")
    assert bytes.fromhex(out["bigBig"]) == packb(2**64 - 1)
    assert bytes.fromhex(out["bigNeg"]) == packb(-(2**63))
    assert bytes.fromhex(out["bigSmall"]) == packb(5)
    assert bytes.fromhex(out["unsafe"]) == packb(float(2**60))  # an unsafe Number may be rounded: float
    assert out["errors"] == "TypeError,TypeError,TypeError,RangeError,RangeError"
    assert out["proto"] == "true,true"
    assert out["intKeys"] is True
    assert out["binIsCopy"] == 1


def untagged_map(t) -> dict:
    return {untagged(k): v for k, v in t["m"]}


# ---------------------------------------------------------------------------- envelopes

KINDS = st.text(min_size=1, max_size=32).filter(lambda kind: 1 <= len(kind.encode()) <= _accel.MAX_KIND_BYTES)


@EXAMPLES
@given(KINDS, VALUES)
def test_envelopes_match_the_relays(codec, kind, body):
    encoded = bytes.fromhex(codec.ok(op="envelope", kind=kind, body=tagged(body)))
    body_bytes = bytes.fromhex(codec.ok(op="encode", value=tagged(body)))
    assert encoded == _accel.build_envelope(kind, 0, body_bytes)
    peeked_kind, seq, offset, body_end = _accel.peek_envelope(encoded)
    assert (peeked_kind, seq, body_end) == (kind, 0, len(encoded))  # three elements: no stamp of its own
    assert canonical(unpackb(encoded[offset:])) == canonical(body)


# What the relay stamps: "master", "" (itself), a slave id (16 hex digits), and any str it might be.
SENDERS = st.sampled_from(["master", "", "0123456789abcdef"]) | st.text(max_size=40)
SEQS = st.integers(min_value=0, max_value=2**53 - 1)


@EXAMPLES
@given(st.lists(st.tuples(KINDS, SEQS, VALUES, SENDERS), min_size=1, max_size=5))
def test_long_poll_bodies_from_the_relay(codec, messages):
    # Exactly what the relay sends: stamped Outgoing envelopes back to back (a long-poll body).
    body = b"".join(b"".join(bytes(part) for part in Outgoing(kind, seq, packb(value), _accel.sender_tail(sender)).envelope())
                    for kind, seq, value, sender in messages)
    decoded = codec.ok(op="envelopes", hex=body.hex())
    assert [(item["kind"], item["seq"], canonical(untagged(item["body"])), item["sender"]) for item in decoded] == \
        [(kind, seq, canonical(value), sender) for kind, seq, value, sender in messages]


@EXAMPLES
@given(KINDS, SEQS, VALUES, SENDERS)
def test_stamped_envelopes_both_ways(codec, kind, seq, body, sender):
    # relay -> client.js: one WebSocket message as the relay builds it.
    stamped = _accel.build_envelope(kind, seq, packb(body), sender)
    item = codec.ok(op="envelopeOne", hex=stamped.hex())
    assert (item["kind"], item["seq"], canonical(untagged(item["body"])), item["sender"]) == \
        (kind, seq, canonical(body), sender)
    # client.js's msgpack writes the same four elements byte for byte, and the Python client reads them.
    value = {"a": [tagged(kind), tagged(seq), tagged(body), tagged(sender)]}
    encoded = bytes.fromhex(codec.ok(op="encode", value=value))
    if byte_exact(body):
        assert encoded == stamped
    envelope = parse_delivered(encoded)
    assert (envelope.kind, envelope.seq, envelope.sender) == (kind, seq, sender)
    assert canonical(unpackb(bytes(envelope.body))) == canonical(body)


def test_unstamped_envelopes_are_accepted_with_a_null_sender(codec):
    # A relay from before the stamp sends [kind, seq, body]: no sender, which names nobody.
    item = codec.ok(op="envelopeOne", hex=_accel.build_envelope("chat", 7, packb({"text": "hi"})).hex())
    assert (item["kind"], item["seq"], untagged(item["body"]), item["sender"]) == ("chat", 7, {"text": "hi"}, None)
    both = _accel.build_envelope("chat", 1, packb("a")) + _accel.build_envelope("chat", 2, packb("b"), "master")
    assert [item["sender"] for item in codec.ok(op="envelopes", hex=both.hex())] == [None, "master"]


def test_client_never_sends_a_fourth_element(codec):
    encoded = bytes.fromhex(codec.ok(op="envelope", kind="chat", body=tagged({"text": "hi"})))
    assert unpackb(encoded) == ["chat", 0, {"text": "hi"}]
    assert encoded == _accel.build_envelope("chat", 0, packb({"text": "hi"}))


@pytest.mark.parametrize("kind", ["", "k" * 33, "\u00e9" * 17])
def test_envelope_kind_limits(codec, kind):
    assert codec.error(op="envelope", kind=kind, body=None).startswith("TypeError")


@pytest.mark.parametrize("value, message", [
    ({"a": []}, "an envelope is an array of 3 or 4"),
    ({"a": [{"s": "k"}, {"i": "0"}]}, "an envelope is an array of 3 or 4"),
    ({"a": [{"s": "k"}, {"i": "0"}, None, {"s": "master"}, None]}, "an envelope is an array of 3 or 4"),
    ({"a": [{"s": "k"}, {"i": "0"}, None, None]}, "sender must be a str"),
    ({"a": [{"s": "k"}, {"i": "0"}, None, {"i": "1"}]}, "sender must be a str"),
    ({"a": [{"s": "k"}, {"i": "0"}, None, {"b": "6d6173746572"}]}, "sender must be a str"),
    ({"a": [{"i": "1"}, {"i": "0"}, None]}, "kind must be a non-empty str"),
    ({"a": [{"s": ""}, {"i": "0"}, None]}, "kind must be a non-empty str"),
    ({"a": [{"s": "k"}, {"i": "-1"}, None]}, "seq must be a non-negative integer"),
    ({"a": [{"s": "k"}, {"f": struct.pack(">d", 0.5).hex()}, None]}, "seq must be a non-negative integer"),
])
def test_malformed_envelopes_are_refused(codec, value, message):
    data = codec.ok(op="encode", value=value)
    error = codec.error(op="envelopes", hex=data)
    assert error.startswith("DecodeError") and message in error


# ---------------------------------------------------------------------------- loading


def test_loads_from_a_plain_script_tag(tmp_path):
    # A browser has no `module`: the script must define window.RelayClient and nothing else.
    script = tmp_path / "script_tag.js"
    script.write_text(r"""
      const vm = require('vm');
      const fs = require('fs');
      const window = {TextEncoder, TextDecoder, URL, setTimeout, clearTimeout, console};
      window.window = window;
      const context = vm.createContext(window);
      vm.runInContext(fs.readFileSync(process.argv[2], 'utf8'), context, {filename: 'client.js'});
      const R = context.RelayClient;
      const bytes = R.encodeEnvelope('chat', {text: 'hi'});
      const back = R.decodeEnvelope(bytes);
      console.log(JSON.stringify({
        api: Object.keys(R).sort(), hex: Buffer.from(bytes).toString('hex'), kind: back.kind, text: back.body.text,
        leaked: Object.keys(context).filter((key) => !['TextEncoder', 'TextDecoder', 'URL', 'setTimeout',
          'clearTimeout', 'console', 'window', 'RelayClient'].includes(key)),
      }));
    """)
    result = subprocess.run([node_binary(), str(script), str(CLIENT_JS)], capture_output=True, text=True,
                            timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"create", "join", "connect", "Connection", "msgpack", "encodeEnvelope", "decodeEnvelopes"} <= set(out["api"])
    assert bytes.fromhex(out["hex"]) == _accel.build_envelope("chat", 0, packb({"text": "hi"}))
    assert (out["kind"], out["text"]) == ("chat", "hi")
    assert out["leaked"] == []


# ---------------------------------------------------------------------------- connection logic

CONNECTION_UNIT = r"""
const R = require(process.argv[2]);
const assert = require('assert');

// A WebSocket the test drives by hand: it records URLs and what the client sends.
const sockets = [];
class FakeSocket {
  constructor(url) { this.url = url; this.sent = []; sockets.push(this); }
  send(bytes) {
    const raw = R.msgpack.decode(bytes);
    assert.strictEqual(raw.length, 3, 'a client sends [kind, seq, body]: the relay stamps the sender');
    this.sent.push({kind: raw[0], seq: raw[1], body: raw[2]});
  }
  close() { this.closed = true; }
  open() { this.onopen({}); }
  // Without a sender: the 3-element envelope of a relay from before the stamp.
  deliver(kind, seq, body, sender) {
    const b = R.msgpack.encode(sender === undefined ? [kind, seq, body] : [kind, seq, body, sender]);
    this.onmessage({data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)});
  }
  drop(code) { this.onclose({code: code, reason: 'test'}); }
}
const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms || 0));
const noFetch = () => Promise.reject(new Error('no network in this test'));

(async () => {
  const options = {base: 'http://relay.test:8700', WebSocket: FakeSocket, fetch: noFetch,
                   backoffInitialMs: 1, backoffMaxMs: 2};
  const slave = R.connect(Object.assign({session: 'S/1', token: 't&k', agent: 'agent-x'}, options));
  const seen = [];
  for (const event of ['hello', 'resync', 'presence', 'error', 'mode', 'disconnect', 'close']) {
    slave.on(event, (arg) => seen.push([event, arg && (arg.code || arg.catchup || arg.event || arg.reason || arg)]));
  }
  slave.on('message', (kind, seq, body, sender) => seen.push(['message', kind, seq, body, sender]));
  assert.strictEqual(slave.send('chat', 'early'), true); // queued until open
  await tick();
  assert.strictEqual(sockets.length, 1);
  assert.strictEqual(sockets[0].url, 'ws://relay.test:8700/cobrowse/ws/S%2F1?token=t%26k');
  sockets[0].open();
  assert.deepStrictEqual(sockets[0].sent, []); // what was queued waits for the hello
  assert.strictEqual(slave.transport, 'websocket');
  sockets[0].deliver('hello', 0, {role: 'slave', session: 'S/1', epoch: 3, seq: 2, catchup: 'full', chat: false,
                                 slave: 'ab', mode: 'pointer'});
  assert.deepStrictEqual(sockets[0].sent, [{kind: 'chat', seq: 0, body: 'early'}]);
  assert.deepStrictEqual(Array.from(slave.participants.values()), [{slave: 'ab', agent: 'agent-x', mode: 'pointer'}]);
  assert.strictEqual(slave.nameOf('ab'), 'agent-x');
  sockets[0].deliver('snapshot', 1, '<p>1</p>');
  sockets[0].deliver('mutation', 2, '<p>2</p>');
  sockets[0].deliver('mutation', 2, '<p>2 again</p>'); // a duplicate is dropped
  sockets[0].deliver('presence', 3, {event: 'mode', slave: 'ab', mode: 'write'});
  sockets[0].deliver('error', 0, {code: 'write-mode-required', message: 'no'});
  assert.strictEqual(slave.mode, 'write');
  assert.strictEqual(slave.participants.get('ab').mode, 'write');
  assert.strictEqual(slave.lastSeq, 3);
  sockets[0].deliver('mutation', 5, '<p>5</p>'); // 4 is missing: the client must resume from 3
  assert.strictEqual(sockets[0].closed, true);
  await tick(20);
  assert.strictEqual(sockets.length, 2);
  assert.strictEqual(sockets[1].url, 'ws://relay.test:8700/cobrowse/ws/S%2F1?token=t%26k&after=3&epoch=3');
  sockets[1].open();
  sockets[1].deliver('hello', 0, {role: 'slave', epoch: 3, seq: 5, catchup: 'resync', slave: 'ab', mode: 'write'});
  sockets[1].deliver('resync', 0, {epoch: 4, seq: 9});
  sockets[1].deliver('snapshot', 8, '<p>8</p>'); // after a resync any seq starts the new numbering
  sockets[1].deliver('mutation', 9, '<p>9</p>');
  assert.strictEqual(slave.epoch, 4);
  assert.strictEqual(slave.lastSeq, 9);
  sockets[1].drop(1012); // node restart: reconnect, resuming
  await tick(20);
  assert.strictEqual(sockets[2].url, 'ws://relay.test:8700/cobrowse/ws/S%2F1?token=t%26k&after=9&epoch=4');
  sockets[2].open();
  sockets[2].drop(4001); // replaced by another tab with this token: final
  await tick(20);
  assert.strictEqual(sockets.length, 3);
  assert.strictEqual(slave.state, 'closed');
  assert.throws(() => slave.send('chat', 'late'), /closed/);

  // The master counts pointer/control events apart from the session stream, and has no gaps.
  const master = R.connect(Object.assign({session: 'S', token: 'm'}, options));
  const events = [];
  master.on('message', (kind, seq) => events.push(kind + seq));
  master.on('error', (error) => events.push('error ' + error.code));
  await tick();
  sockets[3].open();
  sockets[3].deliver('hello', 0, {role: 'master', epoch: 1, seq: 7, catchup: 'none', mode: 'write', slaves: []});
  sockets[3].deliver('pointer', 1, {x: 1});
  sockets[3].deliver('chat', 9, 'a');
  sockets[3].deliver('pointer', 2, {x: 2});
  sockets[3].deliver('chat', 12, 'b');
  assert.deepStrictEqual(events, ['pointer1', 'chat9', 'pointer2', 'chat12']);
  assert.strictEqual(master.lastInboxSeq, 2);
  master.setMode('ab', 'write');
  assert.deepStrictEqual(sockets[3].sent.pop(), {kind: 'mode', seq: 0, body: {slave: 'ab', mode: 'write'}});
  assert.strictEqual(master.nameOf('ab'), 'ab'); // not announced: its id, never a body's claim

  // Stamped: the sender is the fourth argument, and the participant map names it.
  const stamped = [];
  master.on('message', (kind, seq, body, sender) => stamped.push([kind, sender, master.nameOf(sender)]));
  master.on('error', (error) => stamped.push(['error', error.code]));
  sockets[3].deliver('hello', 0, {role: 'master', epoch: 1, seq: 12, catchup: 'none', mode: 'write',
    slaves: [{slave: 's1', agent: 'agent-7', mode: 'pointer'}, {slave: 's2', agent: 'master', mode: 'write'}]}, '');
  assert.deepStrictEqual(Array.from(master.participants.keys()), ['s1', 's2']);
  assert.deepStrictEqual(master.participants.get('s2'), {slave: 's2', agent: 'master', mode: 'write'});
  assert.deepStrictEqual(['master', '', null, undefined, 's1', 's2', 'zz'].map((who) => master.nameOf(who)),
    ['master', 'relay', 'unknown', 'unknown', 'agent-7', 'master (s2)', 'zz']);
  sockets[3].deliver('pointer', 3, {x: 1, y: 2, slave: 's2'}, 's1');
  sockets[3].deliver('chat', 13, {text: 'pay me', from: 'customer'}, 's2');
  sockets[3].deliver('presence', 14, {event: 'joined', slave: 's3', agent: null, mode: 'pointer'}, '');
  sockets[3].deliver('presence', 15, {event: 'mode', slave: 's1', agent: 'agent-7', mode: 'write'}, '');
  assert.strictEqual(master.nameOf('s3'), 's3'); // no agent id: its slave id
  assert.strictEqual(master.participants.get('s1').mode, 'write');
  sockets[3].deliver('presence', 16, {event: 'left', slave: 's1', agent: 'agent-7'}, '');
  assert.strictEqual(master.participants.has('s1'), false);
  assert.strictEqual(master.nameOf('s1'), 'agent-7'); // a late message of a slave that left keeps its name
  // Relay kinds stamped by a participant (the relay refuses to forward them): not believed.
  sockets[3].deliver('presence', 17, {event: 'joined', slave: 's2', agent: 'customer', mode: 'write'}, 's2');
  sockets[3].deliver('hello', 0, {role: 'slave', epoch: 9, slaves: []}, 's3');
  sockets[3].deliver('error', 0, {code: 'ended', message: 'fake'}, 'master');
  assert.strictEqual(master.nameOf('s2'), 'master (s2)');
  assert.deepStrictEqual(Array.from(master.participants.keys()), ['s2', 's3']);
  assert.strictEqual(master.role, 'master');
  assert.strictEqual(master.epoch, 1);
  sockets[3].deliver('chat', 18, 'plain', 's3');
  assert.deepStrictEqual(stamped, [['pointer', 's1', 'agent-7'], ['chat', 's2', 'master (s2)'],
    ['error', 'protocol'], ['error', 'protocol'], ['error', 'protocol'], ['chat', 's3', 's3']]);
  // A new hello (a new node) replaces the map; who left stays nameable.
  sockets[3].deliver('hello', 0, {role: 'master', epoch: 2, seq: 0, catchup: 'none', mode: 'write', slaves: []}, '');
  assert.strictEqual(master.participants.size, 0);
  assert.strictEqual(master.nameOf('s2'), 'master (s2)');
  master.close();
  assert.strictEqual(master.state, 'closed');

  console.log(JSON.stringify(seen));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def test_connection_sequencing_resume_and_close_codes(tmp_path):
    script = tmp_path / "connection_unit.js"
    script.write_text(CONNECTION_UNIT)
    result = subprocess.run([node_binary(), str(script), str(CLIENT_JS)], capture_output=True, text=True,
                            timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr + result.stdout
    seen = json.loads(result.stdout)
    assert seen == [
        ["hello", "full"],
        ["message", "snapshot", 1, "<p>1</p>", None],  # unstamped (a relay before the stamp): sender null
        ["message", "mutation", 2, "<p>2</p>", None],
        ["mode", "write"],
        ["presence", "mode"],
        ["error", "write-mode-required"],
        ["error", "gap"],
        ["disconnect", 1006],  # resuming after the gap
        ["hello", "resync"],
        ["resync", {"epoch": 4, "seq": 9}],
        ["message", "snapshot", 8, "<p>8</p>", None],
        ["message", "mutation", 9, "<p>9</p>", None],
        ["disconnect", 1012],
        ["close", 4001],
    ]


# ---------------------------------------------------------------------------- against a live relay

LAUNCHER = """
import json, trio, relay
async def main():
    config = relay.Config(listen="127.0.0.1:0", private_listen="127.0.0.1:0", poll_wait_s=2.0, join_policy="open")
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(relay.serve, config)
        print(json.dumps({"port": listening.public_port}), flush=True)
trio.run(main)
"""

SCENARIO = r"""
const R = require(process.argv[2]);
const assert = require('assert');
const base = process.argv[3];
const mode = process.argv[4];

// A WebSocket that can never open, as behind a proxy that refuses upgrades.
class RefusedWebSocket {
  constructor(url) { setTimeout(() => { this.onerror({}); this.onclose({code: 1006, reason: ''}); }, 5); }
  close() {}
  send() { throw new Error('not open'); }
}
const options = {base: base, backoffInitialMs: 20, backoffMaxMs: 100};
if (mode === 'poll') options.disableWebSockets = true;
if (mode === 'fallback') options.WebSocket = RefusedWebSocket;

// Records every event of a connection; next(pred) waits for the first unconsumed one that matches.
function recorder(connection, name) {
  const log = [];
  const waiters = [];
  const push = (item) => {
    log.push(item);
    for (const waiter of waiters.slice()) waiter();
  };
  for (const event of ['hello', 'resync', 'presence', 'error', 'mode', 'close', 'open']) {
    connection.on(event, (arg) => push({event: event, arg: arg}));
  }
  connection.on('message', (kind, seq, body, sender) => push({event: 'message', kind: kind, seq: seq, body: body,
    sender: sender}));
  let consumed = 0;
  return {
    log: log,
    next(pred, what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(name + ' never got ' + what + '; saw ' +
          JSON.stringify(log.slice(consumed)))), 8000);
        const check = () => {
          for (let i = consumed; i < log.length; i++) {
            if (pred(log[i])) {
              consumed = i + 1;
              clearTimeout(timer);
              waiters.splice(waiters.indexOf(check), 1);
              resolve(log[i]);
              return;
            }
          }
        };
        waiters.push(check);
        check();
      });
    },
  };
}
const isMessage = (kind, body) => (item) => item.event === 'message' && item.kind === kind &&
  (body === undefined || JSON.stringify(item.body) === JSON.stringify(body));
const isEvent = (event, test) => (item) => item.event === event && (!test || test(item.arg));

(async () => {
  const master = await R.create(options);
  const m = recorder(master, 'master');
  const hello = (await m.next(isEvent('hello'), 'hello')).arg;
  assert.strictEqual(hello.role, 'master');
  assert.strictEqual(hello.session, master.session);
  master.send('snapshot', '<p>v1</p>');
  master.send('mutation', '<p>v2</p>');

  const slave = await R.join(Object.assign({session: master.session, agent: 'agent-7'}, options));
  const s = recorder(slave, 'slave');
  const slaveHello = (await s.next(isEvent('hello'), 'hello')).arg;
  assert.strictEqual(slaveHello.mode, 'pointer');
  assert.strictEqual(slaveHello.catchup, 'full');
  assert.strictEqual(slaveHello.slave, slave.slave);
  const snapshot = await s.next(isMessage('snapshot'), 'the snapshot');
  assert.strictEqual(snapshot.body, '<p>v1</p>');
  assert.strictEqual(snapshot.sender, 'master');
  const mutation = await s.next(isMessage('mutation'), 'the mutation');
  assert.strictEqual(mutation.body, '<p>v2</p>');
  assert.ok(mutation.seq > snapshot.seq); // the join's presence may come between (a POST is slower)
  const joined = (await m.next(isEvent('presence', (p) => p.event === 'joined'), 'joined')).arg;
  assert.deepStrictEqual([joined.slave, joined.agent, joined.mode], [slave.slave, 'agent-7', 'pointer']);
  assert.deepStrictEqual(master.participants.get(slave.slave), {slave: slave.slave, agent: 'agent-7', mode: 'pointer'});
  assert.strictEqual(slave.participants.get(slave.slave).agent, 'agent-7');

  slave.send('pointer', {x: 10, y: 20});
  const pointer = await m.next(isMessage('pointer'), 'the pointer');
  assert.deepStrictEqual(pointer.body, {x: 10, y: 20});
  assert.strictEqual(pointer.sender, slave.slave);
  assert.strictEqual(master.nameOf(pointer.sender), 'agent-7');
  assert.strictEqual(master.lastInboxSeq, pointer.seq);

  slave.send('control', {action: 'click', path: [0]});
  assert.strictEqual((await s.next(isEvent('error'), 'a refusal')).arg.code, 'write-mode-required');
  master.setMode(slave.slave, 'write');
  assert.strictEqual((await s.next(isEvent('mode'), 'write mode')).arg, 'write');
  assert.strictEqual(slave.mode, 'write');
  await m.next(isEvent('presence', (p) => p.event === 'mode'), 'the mode change');
  assert.strictEqual(master.participants.get(slave.slave).mode, 'write');
  slave.send('control', {action: 'click', path: [1, 0]});
  const click = await m.next(isMessage('control'), 'the click');
  assert.deepStrictEqual([click.body, click.sender], [{action: 'click', path: [1, 0]}, slave.slave]);

  slave.send('chat', {text: 'hello customer'});
  const chat = await m.next(isMessage('chat'), 'chat from the slave');
  assert.deepStrictEqual([chat.body, chat.sender, master.nameOf(chat.sender)], [{text: 'hello customer'}, slave.slave, 'agent-7']);
  const echo = await s.next(isMessage('chat', {text: 'hello customer'}), 'its own chat echoed');
  assert.strictEqual(echo.sender, slave.slave);
  master.send('chat', {text: 'hi agent'});
  const fromMaster = await s.next(isMessage('chat', {text: 'hi agent'}), 'chat from the master');
  assert.deepStrictEqual([fromMaster.sender, slave.nameOf(fromMaster.sender)], ['master', 'master']);

  // Lose the slave's transport while the master goes on: it resumes and misses nothing.
  const before = slave.lastSeq;
  slave._stopTransport(1000, 'test');
  slave._lost(1006, 'test');
  master.send('mutation', '<p>v3</p>');
  const v3 = await s.next(isMessage('mutation', '<p>v3</p>'), 'the mutation sent while it was away');
  assert.ok(v3.seq > before);
  assert.strictEqual(slave.state, 'open');
  const resumedHellos = s.log.filter((item) => item.event === 'hello').slice(1).map((item) => item.arg.catchup);
  assert.ok(resumedHellos.every((how) => how === 'resume'), JSON.stringify(resumedHellos));
  assert.ok(s.log.every((item) => !(item.event === 'error' && item.arg.code === 'gap')));
  const mutations = s.log.filter((item) => item.event === 'message' && item.kind === 'mutation').map((item) => item.body);
  assert.deepStrictEqual(mutations, ['<p>v2</p>', '<p>v3</p>']);

  const transports = [master.transport, slave.transport];
  await master.end();
  const closed = (await s.next(isEvent('close'), 'the end of the session')).arg;
  assert.strictEqual(slave.state, 'closed');
  assert.strictEqual(master.state, 'closed');
  console.log(JSON.stringify({transports: transports, slaveClose: closed, resumedHellos: resumedHellos}));
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.fixture(scope="module")
def relay_base():
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line, f"the relay did not start (exit code {process.wait(timeout=10)})"
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def node_with_websocket() -> list:
    """Node 22 has a global WebSocket; Node 20 and 21 need the flag."""
    node = node_binary()
    probe = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
    return [node] if probe.returncode == 0 else [node, "--experimental-websocket"]


@pytest.mark.parametrize("mode, transport, close_code", [
    ("ws", "websocket", 4002),
    ("poll", "long-polling", 4404),  # 410 then 404: long-polling learns of the end by asking again
    ("fallback", "long-polling", 4404),
])
def test_against_a_live_relay(tmp_path, relay_base, mode, transport, close_code):
    script = tmp_path / "scenario.js"
    script.write_text(SCENARIO)
    started = time.monotonic()
    result = subprocess.run([*node_with_websocket(), str(script), str(CLIENT_JS), relay_base, mode],
                            capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr + result.stdout
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["transports"] == [transport, transport]
    assert out["slaveClose"]["code"] == close_code
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------- a forging slave

FORGERY_SCENARIO = r"""
const R = require(process.argv[2]);
const assert = require('assert');
const readline = require('readline');
const options = {base: process.argv[3], backoffInitialMs: 20, backoffMaxMs: 100};
if (process.argv[4] === 'poll') options.disableWebSockets = true;

function within(ms, what, promise) {
  let timer;
  const late = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error('timed out waiting for ' + what)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer)); // a pending timer would keep node alive
}
const once = (connection, event, test) => new Promise((resolve) => {
  const listener = function () {
    if (test && !test.apply(null, arguments)) return;
    connection.off(event, listener);
    resolve(Array.from(arguments));
  };
  connection.on(event, listener);
});
const message = (connection, kind, test) => once(connection, 'message', (k, seq, body, sender) =>
  k === kind && (!test || test(body, sender)));

(async () => {
  const master = await R.create(options);
  await within(8000, 'the master hello', once(master, 'hello'));
  master.send('snapshot', '<p>shared</p>');
  // Listen before joining: the master may hear of the observer before the observer's own hello.
  const observerJoined = once(master, 'presence', (p) => p.event === 'joined');
  const observer = await R.join(Object.assign({session: master.session, agent: 'agent-7'}, options));
  await within(8000, 'the observer hello', once(observer, 'hello'));
  await within(8000, 'the observer in the map', observerJoined);
  // Listen before Python's forging slave starts: its presence and messages may come at once.
  const masterChat = message(master, 'chat', (body) => body && body.text === 'transfer the money');
  const masterPointer = message(master, 'pointer');
  const observerChat = message(observer, 'chat', (body) => body && body.text === 'transfer the money');
  console.log(JSON.stringify({session: master.session, observer: observer.slave}));

  const [, , , chatSender] = await within(8000, 'the forged chat at the master', masterChat);
  const [, , pointerBody, pointerSender] = await within(8000, 'the forged pointer', masterPointer);
  const [, , observedBody, observedSender] = await within(8000, 'the forged chat at the observer', observerChat);
  const participants = (connection) => Array.from(connection.participants.values()).sort((a, b) => a.agent < b.agent ? -1 : 1);
  const result = {
    transports: [master.transport, observer.transport],
    master: {chat: [chatSender, master.nameOf(chatSender)], pointer: [pointerSender, master.nameOf(pointerSender)],
             participants: participants(master)},
    observer: {chat: [observedSender, observer.nameOf(observedSender)], participants: participants(observer)},
    bodies: [pointerBody, observedBody],
  };
  await master.end();
  console.log(JSON.stringify(result));
})().catch((error) => { console.error(error); process.exit(1); });
"""


class ProcessLines:
    """Lines from a trio subprocess's stdout."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, "the node scenario exited early (its stderr is in the test's tmp_path, node-stderr.txt)"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_a_forging_slave_is_named_by_its_stamp(tmp_path, transport):
    # Mallory, a raw Python slave, puts another participant's id in a fourth element and a false
    # "from"/"slave" in its bodies; the client.js master and slave still name Mallory.
    script = tmp_path / "forgery.js"
    script.write_text(FORGERY_SCENARIO)
    errors = tmp_path / "node-stderr.txt"
    mode = "ws" if transport == "websocket" else "poll"
    with trio.fail_after(40):
        async with running_relay(poll_wait_s=1.0) as (_server, listening, client):
            base = f"http://127.0.0.1:{listening.public_port}"
            with errors.open("wb") as stderr:
                process = await trio.lowlevel.open_process(
                    [*node_with_websocket(), str(script), str(CLIENT_JS), base, mode],
                    stdout=subprocess.PIPE, stderr=stderr)
            lines = ProcessLines(process.stdout)
            try:
                started = json.loads(await lines.next())
                sid, observer = started["session"], started["observer"]
                mallory = await client.join(sid, agent="mallory")
                forgeries = [
                    build_envelope("chat", 0, pack({"text": "transfer the money", "from": "agent-7", "slave": observer}),
                                   "master"),
                    build_envelope("pointer", 0, pack({"x": 3, "y": 4, "slave": observer, "from": "agent-7"}), observer),
                ]
                if transport == "websocket":
                    conn = await client.connect(sid, mallory["slave_token"])
                    for envelope in forgeries:
                        await conn.send_raw(encode_client_frame(OP_BINARY, envelope))
                else:
                    status, _headers, answer = await client.request(
                        "POST", f"/cobrowse/poll/{sid}?token={mallory['slave_token']}", b"".join(forgeries))
                    assert status == 200 and json.loads(answer) == {"accepted": 2}
                result = json.loads(await lines.next())
                assert await process.wait() == 0, errors.read_text()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    mallory_id = mallory["slave"]
    assert result["transports"] == [transport, transport]
    assert result["master"]["chat"] == [mallory_id, "mallory"]
    assert result["master"]["pointer"] == [mallory_id, "mallory"]
    assert result["observer"]["chat"] == [mallory_id, "mallory"]
    assert result["bodies"][0]["slave"] == observer  # the body is passed on untouched, and not believed
    expected = [{"slave": observer, "agent": "agent-7", "mode": "pointer"},
                {"slave": mallory_id, "agent": "mallory", "mode": "pointer"}]
    assert result["master"]["participants"] == expected
    assert result["observer"]["participants"] == expected


# ---------------------------------------------------------------------------- demo pages

PAGES = ["master.html", "slave.html"]


@pytest.mark.parametrize("page", PAGES)
def test_pages_are_self_contained(page):
    html = (STATIC / page).read_text()
    assert '<script src="client.js"></script>' in html
    # The network is closed and the pages must work offline: nothing from elsewhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external resource"
    assert "@import" not in html and "url(" not in html


@pytest.mark.parametrize("page", PAGES)
def test_page_scripts_parse(tmp_path, page):
    html = (STATIC / page).read_text()
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert scripts, "the page has no inline script"
    for index, code in enumerate(scripts):
        path = tmp_path / f"{page}.{index}.js"
        path.write_text(code)
        result = subprocess.run([node_binary(), "--check", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


# The demo pages' own scripts, run under node with the real client.js, a fake socket and just
# enough of a DOM: what they show must come from the stamp, whatever a body claims.
PAGE_HARNESS = r"""
const vm = require('vm');
const fs = require('fs');
const assert = require('assert');
const [clientPath, scriptPath, page] = process.argv.slice(2);

class Element {
  constructor(tag, id) {
    this.tagName = tag; this.id = id || ''; this.children = []; this.style = {}; this.listeners = {};
    this.ownText = ''; this.html = ''; this.value = ''; this.className = ''; this.parentElement = null;
    this.offsetLeft = 0; this.offsetTop = 0; this.clientLeft = 0; this.clientTop = 0; this.scrollHeight = 0;
  }
  get textContent() { return this.ownText + this.children.map((child) => child.textContent).join(''); }
  set textContent(text) { this.ownText = String(text); this.children = []; }
  get innerHTML() { return this.html; }
  set innerHTML(html) { this.html = String(html); this.ownText = ''; this.children = []; }
  appendChild(child) { child.parentElement = this; this.children.push(child); return child; }
  remove() { if (this.parentElement) this.parentElement.children = this.parentElement.children.filter((c) => c !== this); }
  addEventListener(event, listener) { (this.listeners[event] || (this.listeners[event] = [])).push(listener); }
  fire(event, arg) { for (const listener of this.listeners[event] || []) listener(arg); }
  click() { if (this.onclick) this.onclick(); }
}
const elements = {};
const document = {
  getElementById: (id) => elements[id] || (elements[id] = new Element('div', id)),
  createElement: (tag) => new Element(tag),
};
const frame = {body: new Element('body'), listeners: {}, addEventListener(e, f) { this.listeners[e] = f; }};
document.getElementById('view').contentDocument = frame;

const sockets = [];
class FakeSocket {
  constructor(url) { this.url = url; this.sent = []; sockets.push(this); setTimeout(() => this.onopen({}), 0); }
  send(bytes) {
    const raw = R.msgpack.decode(bytes);
    assert.strictEqual(raw.length, 3, 'the page sent a fourth element');
    this.sent.push({kind: raw[0], body: raw[1] === 0 ? raw[2] : 'seq ' + raw[1]});
  }
  close() {}
  deliver(kind, seq, body, sender) {
    const b = R.msgpack.encode([kind, seq, body, sender]);
    this.onmessage({data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)});
  }
}
const storage = {};
const reload = process.argv[5] === 'reload';
let joins = 0;
const fetch = async (url, init) => {
  assert.ok(/\/cobrowse\/sessions\/S\/join$/.test(url), url);
  joins += 1;
  return {ok: true, status: 200, json: async () => ({session: 'S', slave_token: 't', slave: 's2', node: 'n', mode: 'pointer'})};
};
const window = {
  document, WebSocket: FakeSocket, fetch, TextEncoder, TextDecoder, URL, URLSearchParams, setTimeout, clearTimeout, console,
  location: {href: 'http://relay.test/cobrowse/' + page + '.html', search: page === 'slave' ? '?session=S' : ''},
  history: {replaceState() {}},
  sessionStorage: {getItem: (k) => (k in storage ? storage[k] : null), setItem: (k, v) => { storage[k] = String(v); },
                   removeItem: (k) => { delete storage[k]; }},
  MutationObserver: class { observe() {} },
  requestAnimationFrame: (f) => setTimeout(f, 0),
  // The demo's capture and replay (capture.js, replay.js) need a real DOM: tests/browser runs them.
  RelayCapture: {start: () => ({snapshot() {}, flush() {}, nodeOf: () => null, idOf: () => undefined})},
  RelayReplay: {start: () => ({snapshot() {}, mutation() {}, css() {}, idOf: () => undefined, document: null})},
};
window.window = window;
// The master page reconnects with a saved token (no create call); the slave page joins, or after a
// reload reuses the token it kept.
storage['relay-master'] = JSON.stringify({session: 'S', token: 'm'});
if (reload) storage['relay-slave'] = JSON.stringify({session: 'S', token: 'kept', agent: 'agent-3'});
const context = vm.createContext(window);
vm.runInContext(fs.readFileSync(clientPath, 'utf8'), context, {filename: 'client.js'});
const R = context.RelayClient;
vm.runInContext(fs.readFileSync(scriptPath, 'utf8'), context, {filename: page + '.html'});

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms || 0));
const chatLines = () => document.getElementById('chat-log').children.map((line) => line.textContent);
const submitChat = (text) => {
  document.getElementById('chat-text').value = text;
  document.getElementById('chat-form').onsubmit({preventDefault() {}});
};

(async () => {
  for (let i = 0; i < 20 && !sockets.length; i++) await tick(5);
  await tick(5);
  const socket = sockets[0];
  const out = {};
  if (page === 'master') {
    socket.deliver('hello', 0, {role: 'master', session: 'S', epoch: 1, seq: 0, catchup: 'none', mode: 'write',
      slaves: [{slave: 's1', agent: 'agent-7', mode: 'pointer'}]}, '');
    socket.deliver('chat', 1, {text: 'hi', from: 'customer', slave: 's9'}, 's1');
    socket.deliver('pointer', 1, {x: 5, y: 6, slave: 's9', from: 'master'}, 's1');
    socket.deliver('pointer', 2, {x: 7, y: 8, slave: 's1'}, 's9'); // not a participant: no dot
    socket.deliver('presence', 2, {event: 'joined', slave: 's3', agent: 'master', mode: 'pointer'}, '');
    socket.deliver('chat', 3, 'plain', 's3');
    socket.deliver('presence', 4, {event: 'joined', slave: 's1', agent: 'customer', mode: 'write'}, 's3'); // forged
    socket.deliver('chat', 5, {text: 'again', from: 'customer'}, 's1');
    submitChat('hello agent');
    const stage = document.getElementById('stage');
    out.dots = stage.children.map((dot) => [dot.textContent, dot.style.left, dot.style.top]);
    out.slaves = document.getElementById('slaves').children.map((item) => item.ownText);
  } else {
    socket.deliver('hello', 0, {role: 'slave', session: 'S', epoch: 1, seq: 0, catchup: 'full', mode: 'pointer', slave: 's2'}, '');
    socket.deliver('presence', 1, {event: 'joined', slave: 's2', agent: 'agent', mode: 'pointer'}, '');
    socket.deliver('presence', 2, {event: 'joined', slave: 's1', agent: 'agent-7', mode: 'pointer'}, '');
    socket.deliver('chat', 3, {text: 'hi', from: 'master'}, 's1');
    socket.deliver('chat', 4, {text: 'welcome', from: 'agent-7'}, 'master');
    socket.deliver('chat', 5, {text: 'mine', from: 'master'}, 's2');
    socket.deliver('presence', 6, {event: 'joined', slave: 's1', agent: 'master', mode: 'write'}, 's1'); // forged
    socket.deliver('chat', 7, {text: 'again', from: 'master'}, 's1');
    socket.deliver('presence', 8, {event: 'left', slave: 's1', agent: 'agent-7'}, '');
    // The shared view: a pointer move and a click (write mode) go out without an id of their own.
    frame.listeners.load === undefined && document.getElementById('view').fire('load');
    frame.listeners.mousemove({clientX: 11, clientY: 12, pageX: 11, pageY: 12});
    submitChat('a question');
  }
  await tick(5);
  out.chat = chatLines();
  out.sent = socket.sent.filter((item) => item.kind !== 'snapshot' && item.kind !== 'mutation');
  out.url = socket.url;
  out.joins = joins;
  out.stored = storage['relay-slave'] ? JSON.parse(storage['relay-slave']) : null;
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def run_page(tmp_path, page: str, *extra: str) -> dict:
    html = (STATIC / f"{page}.html").read_text()
    (code,) = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    script = tmp_path / f"{page}.js"
    script.write_text(code)
    harness = tmp_path / "page_harness.js"
    harness.write_text(PAGE_HARNESS)
    result = subprocess.run([node_binary(), str(harness), str(CLIENT_JS), str(script), page, *extra],
                            capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_master_page_names_senders_by_their_stamp(tmp_path):
    out = run_page(tmp_path, "master")
    assert out["chat"] == [
        "agent-7: hi",  # not "customer": the body's from is ignored
        "master (s3): plain",  # an agent id that is a reserved name is told apart
        "relay: protocol: ignored a presence stamped \"s3\": only the relay writes presence",
        "agent-7: again",  # a forged presence did not rename s1
        "me: hello agent",
    ]
    assert out["dots"] == [["agent-7", "5px", "6px"]]  # the pointer label is the stamp's agent
    assert out["slaves"] == ["agent-7 (pointer)", "master (s3) (pointer)"]
    assert out["sent"] == [{"kind": "chat", "body": {"text": "hello agent"}}]


def test_slave_page_names_senders_by_their_stamp(tmp_path):
    out = run_page(tmp_path, "slave")
    assert out["chat"] == [
        "relay: agent joined",
        "relay: agent-7 joined",
        "agent-7: hi",
        "master: welcome",
        "me: mine",
        "relay: protocol: ignored a presence stamped \"s1\": only the relay writes presence",
        "agent-7: again",
        "relay: agent-7 left",
    ]
    assert out["sent"] == [{"kind": "pointer", "body": {"x": 11, "y": 12}},
                           {"kind": "chat", "body": {"text": "a question"}}]


def test_a_reload_of_the_slave_page_reuses_its_token_and_costs_no_new_join(tmp_path):
    first = run_page(tmp_path, "slave")
    assert first["joins"] == 1 and first["stored"] == {"session": "S", "token": "t", "agent": "agent"}
    reloaded = run_page(tmp_path, "slave", "reload")
    assert reloaded["joins"] == 0  # no new join: the relay sees the same slave come back
    assert "token=kept" in reloaded["url"]
    assert reloaded["stored"]["token"] == "kept"


@pytest.mark.parametrize("page", PAGES)
def test_pages_do_not_name_senders_from_bodies(page):
    script = "\n".join(re.findall(r"<script>(.*?)</script>", (STATIC / page).read_text(), flags=re.S))
    assert not re.search(r"\b(body|event)\.from\b", script)
    assert not re.search(r"\bbody\.slave\b", script)
    # What they send carries no identity of its own: the relay's stamp says who.
    for call in re.findall(r"send\('(?:chat|pointer|control)', \{([^}]*)\}", script):
        assert not re.search(r"\b(from|slave)\s*:", call), call
    assert "nameOf(" in script


@pytest.mark.parametrize("path, content_type", [
    ("/cobrowse/client.js", "application/javascript"),
    ("/cobrowse/master.html", "text/html"),
    ("/cobrowse/slave.html", "text/html"),
])
def test_served_by_the_relay(relay_base, path, content_type):
    with urllib.request.urlopen(relay_base + path, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith(content_type)
        assert response.read() == (STATIC / path.rsplit("/", 1)[1]).read_bytes()


# ---------------------------------------------------------------------------- consent (join_policy "approve")

@pytest.fixture(scope="module")
def approving_relay_base():
    """A relay with the default join policy, "approve": slaves wait for the master."""
    launcher = LAUNCHER.replace(', join_policy="open"', ', join_policy="approve"')
    assert launcher != LAUNCHER
    process = subprocess.Popen([sys.executable, "-c", launcher], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line, f"the relay did not start (exit code {process.wait(timeout=10)})"
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        process.terminate()
        process.wait(timeout=10)


CONSENT_SCENARIO = r"""
const R = require(process.argv[2]);
const assert = require('assert');
const options = {base: process.argv[3], backoffInitialMs: 20, backoffMaxMs: 100};
if (process.argv[4] === 'poll') options.disableWebSockets = true;
const until = (what, test) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('never: ' + what)), 8000);
  const poll = () => { const got = test(); if (got) { clearTimeout(timer); resolve(got); } else setTimeout(poll, 10); };
  poll();
});

(async () => {
  const master = await R.create(options);
  const requests = [];
  const withdrawn = [];
  master.on('join-request', (request) => requests.push(request));
  master.on('join-withdrawn', (request) => withdrawn.push(request));
  await until('master hello', () => master.state === 'open');
  master.send('snapshot', '<p>the page</p>');

  const welcome = await R.join(Object.assign({session: master.session, agent: 'agent-ok'}, options));
  const refused = await R.join(Object.assign({session: master.session, agent: 'agent-no'}, options));
  assert.strictEqual(welcome.joined.admitted, false);
  const seen = {welcome: [], refused: []};
  let admittedEvents = 0;
  welcome.on('message', (kind, seq, body) => seen.welcome.push([kind, body]));
  refused.on('message', (kind, seq, body) => seen.refused.push([kind, body]));
  welcome.on('admitted', () => { admittedEvents += 1; });
  const closes = [];
  refused.on('close', (info) => closes.push(info));
  const disconnects = [];
  refused.on('disconnect', (info) => disconnects.push(info));

  await until('two join requests', () => requests.length === 2);
  assert.deepStrictEqual(requests.map((r) => r.agent).sort(), ['agent-no', 'agent-ok']);
  await until('both waiting', () => welcome.admitted === false && refused.admitted === false);
  master.send('chat', {text: 'not for strangers'});
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepStrictEqual(seen.welcome, []);  // nothing of the session before the master says so
  assert.deepStrictEqual(seen.refused, []);

  master.admit(requests.find((r) => r.agent === 'agent-ok').slave, true);
  master.admit(requests.find((r) => r.agent === 'agent-no').slave, false);
  await until('the snapshot for the admitted slave', () => seen.welcome.some(([kind]) => kind === 'snapshot'));
  assert.strictEqual(welcome.admitted, true);
  assert.strictEqual(admittedEvents, 1);
  assert.deepStrictEqual(seen.welcome.find(([kind]) => kind === 'snapshot')[1], '<p>the page</p>');
  await until('the refused slave closed', () => closes.length === 1);
  assert.strictEqual(closes[0].code, 4403);
  assert.deepStrictEqual(seen.refused, []);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.strictEqual(refused.state, 'closed');  // final: no reconnect loop
  assert.deepStrictEqual(disconnects, []);
  await until('the master hears the refused one is gone', () => withdrawn.length === 1);
  master.send('mutation', '<p>live</p>');
  await until('live traffic for the admitted slave', () => seen.welcome.some(([kind, body]) => kind === 'mutation'));
  console.log(JSON.stringify({ok: true, transport: welcome.transport}));
  welcome.close();
  master.close();
  setTimeout(() => process.exit(0), 50);
})().catch((error) => { console.error(error.stack || String(error)); process.exit(1); });
"""


@pytest.mark.parametrize("mode, transport", [("ws", "websocket"), ("poll", "long-polling")])
def test_client_js_asks_the_master_and_obeys_its_answer(tmp_path, approving_relay_base, mode, transport):
    script = tmp_path / "consent.js"
    script.write_text(CONSENT_SCENARIO)
    result = subprocess.run([*node_with_websocket(), str(script), str(CLIENT_JS), approving_relay_base, mode],
                            capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr + result.stdout
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"ok": True, "transport": transport}


def test_the_demo_master_page_asks_the_person_and_never_admits_by_itself():
    page = (ROOT / "relay" / "static" / "master.html").read_text()
    script = page[page.index("<script>"):]
    assert "conn.on('join-request'" in script
    # the only admit call is the buttons' click handler
    assert script.count(".admit(") == 1 and "button.onclick = () => { conn.admit(request.slave, allow)" in script
    assert "textContent = (request.agent" in script  # the agent's name is shown as text, never as markup
    slave = (ROOT / "relay" / "static" / "slave.html").read_text()
    assert "waiting for the customer to let you in" in slave and "info.code === 4403" in slave


# ---------------------------------------------------------------------------- a body client.js cannot decode

DEEP_BODY_SCENARIO = r"""
const R = require(process.argv[2]);
const assert = require('assert');
const base = process.argv[3];
const options = {base: base, backoffInitialMs: 20, backoffMaxMs: 100};
if (process.argv[4] === 'poll') options.disableWebSockets = true;
const until = (what, test) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('never: ' + what)), 8000);
  const poll = () => { const got = test(); if (got) { clearTimeout(timer); resolve(got); } else setTimeout(poll, 10); };
  poll();
});
// [kind, 0, body] with body given as raw msgpack bytes (client.js would refuse to build a 600-deep one).
const raw = (kind, bodyBytes) => {
  const head = R.msgpack.encode([kind, 0, null]);
  const out = new Uint8Array(head.length - 1 + bodyBytes.length);
  out.set(head.subarray(0, head.length - 1));
  out.set(bodyBytes, head.length - 1);
  return out;
};

(async () => {
  const created = await (await fetch(base + '/cobrowse/sessions', {method: 'POST', body: '{}'})).json();
  const master = new WebSocket(base.replace('http', 'ws') + '/cobrowse/ws/' + created.session + '?token=' + created.master_token);
  master.binaryType = 'arraybuffer';
  await new Promise((resolve, reject) => { master.onopen = resolve; master.onerror = reject; });
  master.send(R.msgpack.encode(['snapshot', 0, '<p>page</p>']));

  const slave = await R.join(Object.assign({session: created.session, agent: 'agent-1'}, options));
  const seen = [];
  const errors = [];
  const disconnects = [];
  slave.on('message', (kind, seq, body) => seen.push([kind, seq, body]));
  slave.on('error', (error) => errors.push(error.code));
  slave.on('disconnect', (info) => disconnects.push(info));
  await until('the snapshot', () => seen.some(([kind]) => kind === 'snapshot'));

  const deep = new Uint8Array(601);
  deep.fill(0x91, 0, 600);  // [[[[...nil...]]]] nested 600 deep: valid msgpack, past client.js's MAX_DEPTH
  deep[600] = 0xc0;
  master.send(raw('chat', deep));
  master.send(R.msgpack.encode(['mutation', 0, '<p>after</p>']));
  await until('the mutation after the bad body', () => seen.some(([kind, , body]) => kind === 'mutation' && body === '<p>after</p>'));
  assert.deepStrictEqual(errors, ['bad-body']);
  assert.deepStrictEqual(disconnects, []);       // one bad message, not a broken connection
  assert.ok(!seen.some(([kind]) => kind === 'chat'));
  const chatSeq = seen.find(([kind]) => kind === 'mutation')[1] - 1;
  assert.strictEqual(slave.lastSeq, chatSeq + 1); // the bad one's seq counted as seen: no resume loop
  console.log(JSON.stringify({ok: true, transport: slave.transport}));
  slave.close();
  master.close();
  setTimeout(() => process.exit(0), 50);
})().catch((error) => { console.error(error.stack || String(error)); process.exit(1); });
"""


@pytest.mark.parametrize("mode, transport", [("ws", "websocket"), ("poll", "long-polling")])
def test_a_body_client_js_cannot_decode_is_one_skipped_message(tmp_path, relay_base, mode, transport):
    script = tmp_path / "deep.js"
    script.write_text(DEEP_BODY_SCENARIO)
    result = subprocess.run([*node_with_websocket(), str(script), str(CLIENT_JS), relay_base, mode],
                            capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ok": True, "transport": transport}
