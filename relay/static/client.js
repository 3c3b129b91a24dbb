/* relay's browser client: msgpack envelopes over a WebSocket, with a long-polling fallback.
 *
 * Plain ES2017 with no dependencies.  Loaded by a <script> tag it defines window.RelayClient;
 * loaded by require() (Node, tests) it is module.exports.  The wire protocol is described in
 * docs/protocol.md.
 *
 *   const master = await RelayClient.create({base: '', chat: false});
 *   master.on('hello', (hello) => { if (!hello.resumed) master.send('snapshot', document.body.innerHTML); });
 *   const slave = await RelayClient.join({base: '', session: master.session, agent: 'agent-7'});
 *   slave.on('message', (kind, seq, body, sender) => show(slave.nameOf(sender), body.text));
 *
 * Who sent a message is the relay's stamp, never the body: the relay delivers every envelope as
 * [kind, seq, body, sender] with sender "master", a slave id, or "" (the relay itself), whatever
 * the sender put in its body or in a fourth element of its own (this client sends [kind, seq,
 * body] only).  connection.participants maps slave ids to {slave, agent, mode}, kept from hello
 * and presence; connection.nameOf(sender) turns a stamp into a name to show.  An envelope of 3
 * elements (a relay from before the stamp) is accepted with sender null, which names nobody
 * ("unknown"): it is not "" because that would show a participant's words as the relay's.
 *
 * Failover that loses nothing (docs/protocol.md section 4b): a master numbers the stream kinds it
 * sends (snapshot, mutation, css, navigate, chat) and keeps them until the relay's 'ack' says the
 * failover copy holds them (option maxKeptBytes, 32 MiB by default: past it the oldest are
 * dropped).  After each hello it first sends again what the relay does not hold, then what was
 * queued while disconnected, and sets hello.resumed = true: the stream goes on, send no snapshot.
 * hello.resumed = false (a first hello, or what was kept cannot continue the stream): send a
 * snapshot (a slave's hello has resumed = true when its catch-up is a resume).  A slave counts the
 * master's messages (connection.masterCount) and reconnects with
 * after=<last seq>&epoch=<epoch>&master_count=<count>, so that it gets exactly what it missed even
 * from a new host; the master's re-sends of messages it had already applied are left out (no
 * 'message' event).  Nothing is sent on a connection before its hello: sends wait in the queue.
 */
(function (root, factory) {
  'use strict';
  var host = root || (typeof globalThis !== 'undefined' ? globalThis : {});
  var api = factory(host);
  if (typeof module === 'object' && module && module.exports) module.exports = api;
  if (root) root.RelayClient = api;
})(typeof window !== 'undefined' ? window : typeof self !== 'undefined' ? self : null, function (host) {
  'use strict';

  // ---------------------------------------------------------------- msgpack

  const MAX_DEPTH = 512; // nesting of arrays/maps: deeper input is refused, not a stack overflow
  const TWO_32 = 4294967296;
  const MAX_KIND_BYTES = 32; // the relay refuses longer kinds (docs/fastpath.md, MAX_KIND_BYTES)

  /** A msgpack extension value (type -128..127, data bytes); decoded ext values are these. */
  class Ext {
    constructor(type, data) {
      if (!Number.isInteger(type) || type < -128 || type > 127) throw new RangeError('ext type must be -128..127');
      this.type = type;
      this.data = data;
    }
  }

  class DecodeError extends Error {}
  DecodeError.prototype.name = 'DecodeError';

  const utf8Encoder = new host.TextEncoder();
  const utf8Decoder = new host.TextDecoder('utf-8', {fatal: true});
  const hasBigInt = typeof host.BigInt === 'function' || typeof BigInt === 'function';

  class Writer {
    constructor() {
      this.bytes = new Uint8Array(256);
      this.view = new DataView(this.bytes.buffer);
      this.length = 0;
    }

    reserve(count) {
      const needed = this.length + count;
      if (needed <= this.bytes.length) return;
      let size = this.bytes.length * 2;
      while (size < needed) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }

    byte(value) { this.reserve(1); this.bytes[this.length++] = value; }
    u16(tag, value) { this.reserve(3); this.bytes[this.length] = tag; this.view.setUint16(this.length + 1, value); this.length += 3; }
    u32(tag, value) { this.reserve(5); this.bytes[this.length] = tag; this.view.setUint32(this.length + 1, value); this.length += 5; }
    raw(data) { this.reserve(data.length); this.bytes.set(data, this.length); this.length += data.length; }
    result() { return this.bytes.slice(0, this.length); }
  }

  function encodeInteger(writer, value) {
    // The smallest encoding, as msgpack-python picks it: unsigned families for >= 0.
    if (value >= 0) {
      if (value < 0x80) writer.byte(value);
      else if (value < 0x100) { writer.byte(0xcc); writer.byte(value); }
      else if (value < 0x10000) writer.u16(0xcd, value);
      else if (value < TWO_32) writer.u32(0xce, value);
      else { writer.u32(0xcf, Math.floor(value / TWO_32)); writer.reserve(4); writer.view.setUint32(writer.length, value >>> 0); writer.length += 4; }
    } else {
      if (value >= -32) writer.byte(value & 0xff);
      else if (value >= -0x80) { writer.byte(0xd0); writer.byte(value & 0xff); }
      else if (value >= -0x8000) { writer.reserve(3); writer.bytes[writer.length] = 0xd1; writer.view.setInt16(writer.length + 1, value); writer.length += 3; }
      else if (value >= -0x80000000) { writer.reserve(5); writer.bytes[writer.length] = 0xd2; writer.view.setInt32(writer.length + 1, value); writer.length += 5; }
      else {
        const high = Math.floor(value / TWO_32);
        writer.reserve(9);
        writer.bytes[writer.length] = 0xd3;
        writer.view.setInt32(writer.length + 1, high);
        writer.view.setUint32(writer.length + 5, value - high * TWO_32);
        writer.length += 9;
      }
    }
  }

  function encodeBigInt(writer, value) {
    const big = host.BigInt || BigInt;
    if (value >= big(-Number.MAX_SAFE_INTEGER) && value <= big(Number.MAX_SAFE_INTEGER)) {
      encodeInteger(writer, Number(value));
    } else if (value > 0 && value <= big('18446744073709551615')) {
      writer.reserve(9); writer.bytes[writer.length] = 0xcf; writer.view.setBigUint64(writer.length + 1, value); writer.length += 9;
    } else if (value < 0 && value >= big('-9223372036854775808')) {
      writer.reserve(9); writer.bytes[writer.length] = 0xd3; writer.view.setBigInt64(writer.length + 1, value); writer.length += 9;
    } else {
      throw new RangeError('integer ' + value + ' does not fit in 64 bits');
    }
  }

  function encodeLength(writer, length, fixBase, fixLimit, tag8, tag16, tag32) {
    if (length < fixLimit) writer.byte(fixBase | length);
    else if (tag8 !== 0 && length < 0x100) { writer.byte(tag8); writer.byte(length); }
    else if (length < 0x10000) writer.u16(tag16, length);
    else if (length < TWO_32) writer.u32(tag32, length);
    else throw new RangeError('too long for msgpack: ' + length);
  }

  // Type tests work across realms (an object made in an iframe has that frame's prototypes).
  const tagOf = (value) => Object.prototype.toString.call(value);
  const isArrayBuffer = (value) => tagOf(value) === '[object ArrayBuffer]';

  function asBytes(value) {
    if (value instanceof Uint8Array) return value;
    if (isArrayBuffer(value)) return new Uint8Array(value);
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }

  function isPlainObject(value) {
    const proto = Object.getPrototypeOf(value);
    return proto === null || (tagOf(value) === '[object Object]' && Object.getPrototypeOf(proto) === null);
  }

  function encodeValue(writer, value, depth) {
    if (value === null || value === undefined) { writer.byte(0xc0); return; }
    switch (typeof value) {
      case 'boolean': writer.byte(value ? 0xc3 : 0xc2); return;
      case 'number':
        // Integral numbers go as ints (JS cannot tell 1 from 1.0); -0 and unsafe magnitudes as
        // float64 so that the value survives exactly.
        if (Number.isSafeInteger(value) && !Object.is(value, -0)) encodeInteger(writer, value);
        else { writer.reserve(9); writer.bytes[writer.length] = 0xcb; writer.view.setFloat64(writer.length + 1, value); writer.length += 9; }
        return;
      case 'bigint': encodeBigInt(writer, value); return;
      case 'string': {
        const data = utf8Encoder.encode(value);
        encodeLength(writer, data.length, 0xa0, 32, 0xd9, 0xda, 0xdb);
        writer.raw(data);
        return;
      }
      case 'object': break;
      default: throw new TypeError('msgpack cannot encode a ' + typeof value);
    }
    if (depth >= MAX_DEPTH) throw new RangeError('nested deeper than ' + MAX_DEPTH + ' levels (a cycle?)');
    if (isArrayBuffer(value) || ArrayBuffer.isView(value)) {
      const data = asBytes(value);
      encodeLength(writer, data.length, 0, 0, 0xc4, 0xc5, 0xc6);
      writer.raw(data);
    } else if (Array.isArray(value)) {
      encodeLength(writer, value.length, 0x90, 16, 0, 0xdc, 0xdd);
      for (let i = 0; i < value.length; i++) encodeValue(writer, value[i], depth + 1);
    } else if (tagOf(value) === '[object Map]') {
      encodeLength(writer, value.size, 0x80, 16, 0, 0xde, 0xdf);
      value.forEach((item, key) => { encodeValue(writer, key, depth + 1); encodeValue(writer, item, depth + 1); });
    } else if (value instanceof Ext) {
      const data = asBytes(value.data);
      const fixTags = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8};
      if (fixTags[data.length]) writer.byte(fixTags[data.length]);
      else encodeLength(writer, data.length, 0, 0, 0xc7, 0xc8, 0xc9);
      writer.byte(value.type & 0xff);
      writer.raw(data);
    } else if (isPlainObject(value)) {
      const keys = Object.keys(value);
      encodeLength(writer, keys.length, 0x80, 16, 0, 0xde, 0xdf);
      for (const key of keys) { encodeValue(writer, key, depth + 1); encodeValue(writer, value[key], depth + 1); }
    } else {
      throw new TypeError('msgpack cannot encode ' + Object.prototype.toString.call(value));
    }
  }

  /** One value as msgpack bytes (a new Uint8Array). */
  function encode(value) {
    const writer = new Writer();
    encodeValue(writer, value, 0);
    return writer.result();
  }

  class Reader {
    constructor(bytes) {
      this.bytes = bytes;
      this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      this.offset = 0;
    }

    need(count) {
      if (this.bytes.length - this.offset < count) throw new DecodeError('truncated msgpack at byte ' + this.offset);
    }

    take(count) {
      this.need(count);
      const start = this.offset;
      this.offset += count;
      return this.bytes.slice(start, start + count); // a copy: it must not pin a large receive buffer
    }

    skip(count) {
      this.need(count);
      this.offset += count;
    }
  }

  // Bytes after the tag of the fixed-size msgpack values (ints, floats, fixext with its type byte).
  const FIXED_SIZES = {0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8,
    0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17};
  // str8/16/32 and bin8/16/32: the width of their length; ext8/16/32 also have a type byte.
  const SIZED = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4};
  const EXT_SIZED = {0xc7: 1, 0xc8: 2, 0xc9: 4};

  /** Step over one msgpack value without building it: no depth limit, no recursion (a body this
   *  client cannot decode is skipped as one bad message, never a broken connection). */
  function skipValue(reader) {
    let pending = 1;
    while (pending > 0) {
      if (pending > reader.bytes.length - reader.offset) throw new DecodeError('truncated msgpack value');
      pending -= 1;
      reader.need(1);
      const tag = reader.bytes[reader.offset++];
      if (tag < 0x80 || tag >= 0xe0) continue;
      if (tag < 0x90) { pending += 2 * (tag & 0x0f); continue; }
      if (tag < 0xa0) { pending += tag & 0x0f; continue; }
      if (tag < 0xc0) { reader.skip(tag & 0x1f); continue; }
      if (tag in FIXED_SIZES) { reader.skip(FIXED_SIZES[tag]); continue; }
      if (tag in SIZED) { reader.skip(readLength(reader, SIZED[tag])); continue; }
      if (tag in EXT_SIZED) { reader.skip(readLength(reader, EXT_SIZED[tag]) + 1); continue; }
      if (tag === 0xdc || tag === 0xdd) { pending += readLength(reader, tag === 0xdc ? 2 : 4); continue; }
      if (tag === 0xde || tag === 0xdf) { pending += 2 * readLength(reader, tag === 0xde ? 2 : 4); continue; }
      throw new DecodeError('reserved msgpack byte 0x' + tag.toString(16) + ' at byte ' + (reader.offset - 1));
    }
  }

  function readUint64(reader, signed) {
    reader.need(8);
    const high = signed ? reader.view.getInt32(reader.offset) : reader.view.getUint32(reader.offset);
    const low = reader.view.getUint32(reader.offset + 4);
    const value = high * TWO_32 + low;
    if (Number.isSafeInteger(value)) { reader.offset += 8; return value; }
    if (!hasBigInt) throw new DecodeError('integer beyond 2**53 and this browser has no BigInt');
    const result = signed ? reader.view.getBigInt64(reader.offset) : reader.view.getBigUint64(reader.offset);
    reader.offset += 8;
    return result;
  }

  function readLength(reader, size) {
    reader.need(size);
    const value = size === 1 ? reader.view.getUint8(reader.offset)
      : size === 2 ? reader.view.getUint16(reader.offset) : reader.view.getUint32(reader.offset);
    reader.offset += size;
    return value;
  }

  function readString(reader, length) {
    reader.need(length);
    const data = reader.bytes.subarray(reader.offset, reader.offset + length);
    reader.offset += length;
    try {
      return utf8Decoder.decode(data);
    } catch (error) {
      throw new DecodeError('invalid UTF-8 in a msgpack str');
    }
  }

  function readArray(reader, count, depth) {
    reader.need(count); // every item takes at least one byte: refuse a huge count before allocating
    const items = new Array(count);
    for (let i = 0; i < count; i++) items[i] = decodeValue(reader, depth + 1);
    return items;
  }

  function readMap(reader, count, depth) {
    reader.need(count * 2);
    const keys = new Array(count);
    const values = new Array(count);
    let allStrings = true;
    for (let i = 0; i < count; i++) {
      keys[i] = decodeValue(reader, depth + 1);
      values[i] = decodeValue(reader, depth + 1);
      if (typeof keys[i] !== 'string') allStrings = false;
    }
    if (!allStrings) {
      const map = new Map();
      for (let i = 0; i < count; i++) map.set(keys[i], values[i]);
      return map;
    }
    const object = {};
    for (let i = 0; i < count; i++) {
      // Assigning '__proto__' would replace the prototype instead of adding a key.
      if (keys[i] === '__proto__') Object.defineProperty(object, keys[i], {value: values[i], enumerable: true, writable: true, configurable: true});
      else object[keys[i]] = values[i];
    }
    return object;
  }

  function readExt(reader, length) {
    reader.need(1 + length);
    const type = reader.view.getInt8(reader.offset);
    reader.offset += 1;
    return new Ext(type, reader.take(length));
  }

  function decodeValue(reader, depth) {
    if (depth > MAX_DEPTH) throw new DecodeError('msgpack nested deeper than ' + MAX_DEPTH + ' levels');
    reader.need(1);
    const tag = reader.bytes[reader.offset++];
    if (tag < 0x80) return tag;
    if (tag < 0x90) return readMap(reader, tag & 0x0f, depth);
    if (tag < 0xa0) return readArray(reader, tag & 0x0f, depth);
    if (tag < 0xc0) return readString(reader, tag & 0x1f);
    if (tag >= 0xe0) return tag - 0x100;
    const view = reader.view;
    let value;
    switch (tag) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return reader.take(readLength(reader, 1));
      case 0xc5: return reader.take(readLength(reader, 2));
      case 0xc6: return reader.take(readLength(reader, 4));
      case 0xc7: return readExt(reader, readLength(reader, 1));
      case 0xc8: return readExt(reader, readLength(reader, 2));
      case 0xc9: return readExt(reader, readLength(reader, 4));
      case 0xca: reader.need(4); value = view.getFloat32(reader.offset); reader.offset += 4; return value;
      case 0xcb: reader.need(8); value = view.getFloat64(reader.offset); reader.offset += 8; return value;
      case 0xcc: return readLength(reader, 1);
      case 0xcd: return readLength(reader, 2);
      case 0xce: return readLength(reader, 4);
      case 0xcf: return readUint64(reader, false);
      case 0xd0: reader.need(1); value = view.getInt8(reader.offset); reader.offset += 1; return value;
      case 0xd1: reader.need(2); value = view.getInt16(reader.offset); reader.offset += 2; return value;
      case 0xd2: reader.need(4); value = view.getInt32(reader.offset); reader.offset += 4; return value;
      case 0xd3: return readUint64(reader, true);
      case 0xd4: return readExt(reader, 1);
      case 0xd5: return readExt(reader, 2);
      case 0xd6: return readExt(reader, 4);
      case 0xd7: return readExt(reader, 8);
      case 0xd8: return readExt(reader, 16);
      case 0xd9: return readString(reader, readLength(reader, 1));
      case 0xda: return readString(reader, readLength(reader, 2));
      case 0xdb: return readString(reader, readLength(reader, 4));
      case 0xdc: return readArray(reader, readLength(reader, 2), depth);
      case 0xdd: return readArray(reader, readLength(reader, 4), depth);
      case 0xde: return readMap(reader, readLength(reader, 2), depth);
      case 0xdf: return readMap(reader, readLength(reader, 4), depth);
      default: throw new DecodeError('reserved msgpack byte 0x' + tag.toString(16) + ' at byte ' + (reader.offset - 1));
    }
  }

  function toBytes(data) {
    if (data instanceof Uint8Array) return data;
    if (isArrayBuffer(data) || ArrayBuffer.isView(data)) return asBytes(data);
    throw new TypeError('expected bytes (Uint8Array, ArrayBuffer or a view)');
  }

  /** Exactly one msgpack value; trailing bytes are an error. */
  function decode(data) {
    const reader = new Reader(toBytes(data));
    const value = decodeValue(reader, 0);
    if (reader.offset !== reader.bytes.length) {
      throw new DecodeError((reader.bytes.length - reader.offset) + ' trailing bytes after the msgpack value');
    }
    return value;
  }

  /** Every value of a concatenation (a long-poll body); a cut-off last value is an error. */
  function decodeAll(data) {
    const reader = new Reader(toBytes(data));
    const values = [];
    while (reader.offset < reader.bytes.length) values.push(decodeValue(reader, 0));
    return values;
  }

  // ---------------------------------------------------------------- envelopes

  function checkKind(kind) {
    if (typeof kind !== 'string' || kind.length === 0 || utf8Encoder.encode(kind).length > MAX_KIND_BYTES) {
      throw new TypeError('kind must be a string of 1 to ' + MAX_KIND_BYTES + ' UTF-8 bytes');
    }
  }

  /** The bytes of [kind, seq, body].  Clients always send seq 0: the relay numbers messages, and
   *  stamps the sender itself (a fourth element would be ignored, so none is sent). */
  function encodeEnvelope(kind, body, seq) {
    checkKind(kind);
    return encode([kind, seq === undefined ? 0 : seq, body]);
  }

  function toEnvelope(value) {
    if (!Array.isArray(value) || (value.length !== 3 && value.length !== 4)) {
      throw new DecodeError('an envelope is an array of 3 or 4 (kind, seq, body, sender)');
    }
    const kind = value[0];
    const seq = value[1];
    if (typeof kind !== 'string' || kind.length === 0) throw new DecodeError('envelope kind must be a non-empty str');
    if (!Number.isSafeInteger(seq) || seq < 0) throw new DecodeError('envelope seq must be a non-negative integer');
    // No stamp (a relay from before it): null, "unknown"; a stamp that is not a str is refused.
    if (value.length === 4 && typeof value[3] !== 'string') throw new DecodeError('envelope sender must be a str');
    const sender = value.length === 4 ? value[3] : null;
    return {kind: kind, seq: seq, body: value[2], sender: sender};
  }

  /** {kind, seq, body, sender} of one envelope (one WebSocket message); sender null if unstamped. */
  function decodeEnvelope(data) { return toEnvelope(decode(data)); }

  /** [{kind, seq, body, sender}, ...] of a long-poll body (envelopes back to back). */
  function decodeEnvelopes(data) { return decodeAll(data).map(toEnvelope); }

  /** The envelopes of a WebSocket message or a long-poll body, each read on its own: the shape
   *  (array, kind, seq, sender) must be right, but a body this client cannot decode (nested past
   *  MAX_DEPTH, bad UTF-8, a 64-bit integer without BigInt...) gives {..., body: undefined,
   *  bodyError} instead of failing the whole read.  DecodeError only for a broken shape. */
  function readEnvelopes(data) {
    const reader = new Reader(toBytes(data));
    const envelopes = [];
    while (reader.offset < reader.bytes.length) {
      reader.need(1);
      const tag = reader.bytes[reader.offset++];
      const count = tag === 0x93 || tag === 0x94 ? tag & 0x0f
        : tag === 0xdc ? readLength(reader, 2) : tag === 0xdd ? readLength(reader, 4) : -1;
      if (count !== 3 && count !== 4) throw new DecodeError('an envelope is an array of 3 or 4 (kind, seq, body, sender)');
      const kind = decodeValue(reader, 0);
      const seq = decodeValue(reader, 0);
      const start = reader.offset;
      let body;
      let bodyError = null;
      try {
        body = decodeValue(reader, 1);
      } catch (error) {
        if (!(error instanceof DecodeError)) throw error;
        bodyError = error;
        reader.offset = start;
        skipValue(reader); // a truncated or reserved byte here is a broken envelope: DecodeError
      }
      const envelope = toEnvelope(count === 4 ? [kind, seq, null, decodeValue(reader, 0)] : [kind, seq, null]);
      envelope.body = body;
      if (bodyError) envelope.bodyError = bodyError;
      envelopes.push(envelope);
    }
    return envelopes;
  }

  // ---------------------------------------------------------------- participants

  const MASTER = 'master'; // the relay's stamp for the master
  const RELAY = ''; // the relay's stamp for what it writes itself
  // Names that nameOf gives the master, the relay and an unstamped envelope: an agent id equal to
  // one of them is shown with its slave id, so that no agent can pass for the master.
  const RESERVED_NAMES = {master: true, relay: true, unknown: true};
  const MAX_DEPARTED_NAMES = 1024; // names of slaves that left, kept for their late messages

  // ---------------------------------------------------------------- numbered master messages

  // The kinds a master numbers (docs/protocol.md 4b): its session-stream messages.
  const NUMBERED_KINDS = {snapshot: true, mutation: true, css: true, navigate: true, chat: true};
  const KEPT_MESSAGE_OVERHEAD_BYTES = 64; // what one kept message costs beyond its bytes

  /** The bytes of [kind, seq, body] from a body already encoded (re-numbered without re-encoding). */
  function envelopeBytes(kind, seq, bodyBytes) {
    const head = encode(kind);
    const number = encode(seq);
    const bytes = new Uint8Array(1 + head.length + number.length + bodyBytes.length);
    bytes[0] = 0x93;
    bytes.set(head, 1);
    bytes.set(number, 1 + head.length);
    bytes.set(bodyBytes, 1 + head.length + number.length);
    return bytes;
  }

  /**
   * A master's message numbers and what it keeps until the relay acks it: the same rules as
   * relay/_resend.py (ResendWindow).  Items are {kind, body (encoded), number, seq, bytes}: number
   * is the message's number (0: not numbered), seq what goes on the wire (0 for the first message
   * after a fresh start, which the relay numbers held + 1 itself).
   */
  class ResendWindow {
    constructor(maxKeptBytes) {
      if (!Number.isSafeInteger(maxKeptBytes) || maxKeptBytes < 0) throw new RangeError('maxKeptBytes must be a non-negative integer');
      this.maxKeptBytes = maxKeptBytes;
      this.numbering = false; // a hello with "held" was seen (and the last one had it)
      this.lastNumber = 0;
      this.unnumberedNext = false; // a fresh start: the next message goes with seq 0
      this._kept = [];
      this._head = 0; // this._kept[this._head] is the oldest kept (shifting each one would be O(n))
      this.keptBytes = 0;
    }

    get kept() { return this._kept.slice(this._head); }

    get firstKept() { return this._head < this._kept.length ? this._kept[this._head].number : this.lastNumber + 1; }

    /** Give item its number and wire seq (and its bytes); a numbered item is kept. */
    number(item) {
      item.number = 0;
      item.seq = 0;
      if (this.numbering && NUMBERED_KINDS[item.kind] === true) {
        item.number = ++this.lastNumber;
        item.seq = this.unnumberedNext ? 0 : item.number;
        this.unnumberedNext = false;
        this._keep(item);
      }
      const bytes = envelopeBytes(item.kind, item.seq, item.body);
      item.body = bytes.subarray(bytes.length - item.body.length); // kept once, inside its envelope
      item.bytes = bytes;
      return item.seq;
    }

    _cost(item) { return item.body.length + item.kind.length + KEPT_MESSAGE_OVERHEAD_BYTES; }

    _keep(item) {
      this._kept.push(item);
      this.keptBytes += this._cost(item);
      while (this.keptBytes > this.maxKeptBytes && this._head < this._kept.length) this._dropOldest();
    }

    _dropOldest() {
      this.keptBytes -= this._cost(this._kept[this._head]);
      this._kept[this._head++] = undefined;
      if (this._head > 1024 && this._head * 2 > this._kept.length) {
        this._kept = this._kept.slice(this._head);
        this._head = 0;
      }
    }

    forgetThrough(number) {
      while (this._head < this._kept.length && this._kept[this._head].number <= number) this._dropOldest();
    }

    /** The relay's ack {seq, held}: forget what the failover copy holds. */
    onAck(body) {
      const held = body ? body.held : undefined;
      if (!Number.isSafeInteger(held) || held < 0) throw new RelayError('protocol', 'an ack without a valid held: ' + JSON.stringify(held));
      this.forgetThrough(held);
    }

    /** A master hello: {resumed, resend: [items above held, in order]} or a fresh start. */
    onHello(body) {
      const held = body.held;
      if (held === undefined || held === null) {
        this.numbering = false; // a relay from before numbered messages
        this._startOver(0);
        return {resumed: false, resend: []};
      }
      if (!Number.isSafeInteger(held) || held < 0) throw new RelayError('protocol', 'a hello with a bad held: ' + JSON.stringify(held));
      if (this.numbering && !this.unnumberedNext && held <= this.lastNumber && this.firstKept <= held + 1) {
        this.forgetThrough(held);
        return {resumed: true, resend: this.kept};
      }
      // Dropped past the bound, never connected, the relay holds more than we sent, or the fresh
      // start's snapshot was never sent: what was kept cannot continue the relay's numbering.
      this.numbering = true;
      this._startOver(held);
      this.unnumberedNext = true;
      return {resumed: false, resend: []};
    }

    _startOver(held) {
      this._kept = [];
      this._head = 0;
      this.keptBytes = 0;
      this.lastNumber = held;
      this.unnumberedNext = false;
    }
  }

  // ---------------------------------------------------------------- HTTP API

  class RelayError extends Error {
    constructor(code, message, status) {
      super(message || code);
      this.code = code;
      this.status = status || 0;
    }
  }
  RelayError.prototype.name = 'RelayError';

  function trimBase(base) { return (base || '').replace(/\/+$/, ''); }

  function apiUrl(base, path) { return trimBase(base) + '/cobrowse' + path; }

  function webSocketUrl(base, path) {
    const location = host.location && host.location.href;
    const url = location ? new URL(apiUrl(base, path), location) : new URL(apiUrl(base, path));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  function fetchFor(options) {
    const impl = options.fetch || host.fetch;
    if (typeof impl !== 'function') throw new RelayError('no-fetch', 'this environment has no fetch()');
    // A browser's fetch must be called on its window: kept as this._fetch and called as a method
    // of the connection it throws "Illegal invocation" (the long-poll path in every browser).
    return impl === host.fetch ? impl.bind(host) : impl;
  }

  async function errorFromResponse(response) {
    let payload = null;
    try { payload = await response.json(); } catch (error) { payload = null; }
    const code = payload && typeof payload.error === 'string' ? payload.error : 'http-' + response.status;
    const message = payload && typeof payload.message === 'string' ? payload.message : 'HTTP ' + response.status;
    return new RelayError(code, message, response.status);
  }

  async function postJson(options, path, data) {
    let response;
    try {
      response = await fetchFor(options)(apiUrl(options.base, path), {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(data),
        credentials: options.credentials || 'same-origin',
      });
    } catch (error) {
      throw new RelayError('network', 'the relay is unreachable: ' + error.message, 0);
    }
    if (!response.ok) throw await errorFromResponse(response);
    return response.json();
  }

  // ---------------------------------------------------------------- connection

  const DEFAULTS = {
    base: '',
    disableWebSockets: false,
    reconnect: true,
    backoffInitialMs: 250,
    backoffMaxMs: 10000,
    stableAfterMs: 5000, // a connection open this long resets the backoff
    openTimeoutMs: 10000, // a WebSocket neither open nor failed by then counts as failed
    pollTimeoutMs: 40000, // the relay answers a long-poll GET within poll_wait_s (25 s by default)
    pollBatchBytes: 1024 * 1024, // most envelopes per long-poll POST (the relay takes up to 16 MiB)
    maxPendingBytes: 16 * 1024 * 1024, // sends queued while disconnected
    maxKeptBytes: 32 * 1024 * 1024, // a master's sent messages kept until acked, to re-send after a failover
  };

  // Close codes after which reconnecting cannot help: the relay will say the same again.
  const FINAL_CLOSE_CODES = {
    1003: 'text messages are not supported',
    1007: 'the relay refused a malformed envelope',
    1008: 'policy violation',
    4001: 'replaced by a newer connection with the same token',
    4002: 'the session ended',
    4403: 'the master did not let this agent in',
  };
  // HTTP statuses after which reconnecting cannot help (unknown session, bad token, origin).
  const FINAL_STATUSES = {400: true, 403: true, 404: true};

  /**
   * One client of one session, master or slave.  It connects at once and keeps reconnecting
   * (resuming with after=<last seq>&epoch=<epoch>) until close() or a final refusal.
   *
   * Events (on/off): 'hello' (body), 'resync' (body), 'presence' (body), 'message' (kind, seq,
   * body, sender) for every other kind (sender: the relay's stamp, see nameOf; null if the relay
   * did not stamp it), 'error' (RelayError: relay error envelopes and client failures),
   * 'mode' (mode: this slave's mode changed), 'state' (state, transport), 'open' (transport),
   * 'disconnect' ({code, reason, retryInMs}), 'close' ({code, reason}: final, no reconnect),
   * 'ack' ({seq, held}: a master's messages up to held are in the failover copy; never a 'message').
   * The hello body has resumed (true: the stream continues, a master sends no snapshot).
   * Consent (join_policy "approve"): a master gets 'join-request' ({slave, agent}: answer with
   * admit(slave, allow); also for the requests its hello lists as pending) and 'join-withdrawn';
   * a slave has .admitted (false while it waits) and gets 'admitted' once the master let it in;
   * a refused slave is closed with 4403 ('close', final).
   */
  class Connection {
    constructor(params, options) {
      this.options = Object.assign({}, DEFAULTS, options || {});
      this.session = params.session;
      this.token = params.token;
      this.role = params.role || null;
      this.slave = params.slave || null;
      this.agent = typeof params.agent === 'string' ? params.agent : null; // a slave's own agent id
      this.mode = params.mode || null;
      this.admitted = null; // a slave: false while the master has not let it in (join_policy "approve")
      // slave id -> {slave, agent, mode} of the slaves connected now, as hello and presence tell:
      // complete for the master (its hello lists them); a slave learns the others from presence.
      this.participants = new Map();
      this._departed = new Map(); // slave id -> agent id of slaves that left (bounded)
      this.node = params.node || null;
      this.state = 'connecting'; // connecting | open | reconnecting | closed
      this.transport = null; // 'websocket' | 'long-polling' while open
      this.epoch = null;
      this.lastSeq = null; // last session-stream seq seen (null: the next message starts fresh)
      this.lastInboxSeq = 0; // master only: pointer/control events are numbered apart
      this.masterCount = null; // slave only: stream messages stamped "master" so far (null: unknown)
      this._skipThrough = null; // slave only: master messages up to this count are re-sends it has applied
      this._window = new ResendWindow(this.options.maxKeptBytes); // numbers only a master's messages
      this._ready = false; // the current transport's hello was handled: sends may go out
      this._listeners = {};
      this._pending = []; // items ({kind, body, number, seq, bytes}) waiting for a transport's hello
      this._pendingBytes = 0;
      this._generation = 0; // callbacks of superseded transports compare and give up
      this._attempt = 0;
      this._openedAt = 0;
      this._webSocket = null;
      this._aborts = new Set();
      this._posting = false;
      this._retryTimer = null;
      this._WebSocket = this.options.WebSocket || host.WebSocket;
      this._fetch = fetchFor(this.options);
      this._tryWebSocket = !this.options.disableWebSockets && typeof this._WebSocket === 'function';
      // Listeners are attached after the constructor returns: start on the next turn.
      Promise.resolve().then(() => this._connect());
    }

    on(event, listener) {
      (this._listeners[event] || (this._listeners[event] = [])).push(listener);
      return this;
    }

    off(event, listener) {
      const list = this._listeners[event];
      if (list) this._listeners[event] = list.filter((item) => item !== listener);
      return this;
    }

    /** Send one envelope; queued while (re)connecting.  Returns false if the queue is full. */
    send(kind, body) {
      if (this.state === 'closed') throw new RelayError('closed', 'this connection is closed');
      checkKind(kind);
      const item = {kind: kind, body: encode(body), number: 0, seq: 0, bytes: null, counted: false};
      const direct = this._ready && this.state === 'open' && this._webSocket;
      // Checked before numbering: a numbered message that is then dropped would be a hole.
      if (!direct && this._pendingBytes + item.body.length + MAX_KIND_BYTES + 10 > this.options.maxPendingBytes) {
        this._emit('error', new RelayError('send-queue-full', 'too much to send while disconnected: ' + kind + ' dropped'));
        return false;
      }
      this._window.number(item); // a master's stream kinds get the next number and are kept
      if (direct) {
        this._webSocket.send(item.bytes);
        return true;
      }
      item.counted = true;
      this._pending.push(item);
      this._pendingBytes += item.bytes.length;
      this._flushPolling();
      return true;
    }

    /**
     * The name to show for a sender stamp: 'master', 'relay' (""), the slave's agent id (its slave
     * id when it has none or is not known yet; with the slave id in brackets when the agent id is
     * one of the reserved names), 'unknown' for an unstamped envelope (null).  Compare stamps, not
     * names, to tell participants apart: only the stamp is unique.
     */
    nameOf(sender) {
      if (sender === MASTER) return 'master';
      if (sender === RELAY) return 'relay';
      if (typeof sender !== 'string') return 'unknown';
      const known = this.participants.get(sender);
      const agent = known ? known.agent : this._departed.get(sender);
      if (typeof agent !== 'string' || agent === '') return sender;
      return RESERVED_NAMES[agent] ? agent + ' (' + sender + ')' : agent;
    }

    /** Master: grant ('write') or revoke ('pointer') write mode for a slave. */
    setMode(slave, mode) { return this.send('mode', {slave: slave, mode: mode}); }

    /** The master's answer to a 'join-request': let that slave see the session, or refuse it (4403). */
    admit(slave, allow) { return this.send('admit', {slave: String(slave), admit: !!allow}); }

    /** Leave for good.  The session goes on (a master may come back within the grace time). */
    close() {
      if (this.state === 'closed') return;
      this._stopTransport(1000, 'closed by the client');
      this._finish(1000, 'closed by the client');
    }

    /** Master: end the session for everyone, then close. */
    async end() {
      const response = await this._fetch(apiUrl(this.options.base, '/sessions/' + encodeURIComponent(this.session)), {
        method: 'DELETE', headers: {authorization: 'Bearer ' + this.token},
        credentials: this.options.credentials || 'same-origin',
      });
      if (!response.ok && response.status !== 404) throw await errorFromResponse(response);
      this.close();
    }

    // -------------------------------------------------------------- events

    _emit(event) {
      const args = Array.prototype.slice.call(arguments, 1);
      const list = this._listeners[event];
      if (!list) return;
      for (const listener of list.slice()) {
        try {
          listener.apply(this, args);
        } catch (error) {
          // A broken listener must not break the stream; still let it reach the console.
          setTimeout(() => { throw error; }, 0);
        }
      }
    }

    _setState(state, transport) {
      this.state = state;
      this.transport = transport || null;
      this._emit('state', state, this.transport);
    }

    // -------------------------------------------------------------- connecting

    _resumeQuery() {
      let query = '?token=' + encodeURIComponent(this.token);
      if (this.lastSeq !== null && this.epoch !== null) {
        query += '&after=' + this.lastSeq + '&epoch=' + this.epoch;
        const applied = this.role === 'slave' ? this._appliedCount() : null;
        if (applied !== null) query += '&master_count=' + applied;
      }
      return query;
    }

    /** A slave's count of master messages applied (more than masterCount while re-sends are left out). */
    _appliedCount() { return this._skipThrough !== null ? this._skipThrough : this.masterCount; }

    _connect() {
      if (this.state === 'closed') return;
      this._retryTimer = null;
      const generation = ++this._generation;
      if (this._tryWebSocket) this._openWebSocket(generation);
      else this._poll(generation, false);
    }

    _openWebSocket(generation) {
      const url = webSocketUrl(this.options.base, '/ws/' + encodeURIComponent(this.session) + this._resumeQuery());
      let socket;
      try {
        socket = new this._WebSocket(url);
      } catch (error) {
        this._webSocketFailed(generation);
        return;
      }
      socket.binaryType = 'arraybuffer';
      let opened = false;
      const timer = setTimeout(() => {
        if (opened || generation !== this._generation) return;
        try { socket.close(); } catch (error) { /* it is being abandoned anyway */ }
        this._webSocketFailed(generation);
      }, this.options.openTimeoutMs);
      socket.onopen = () => {
        clearTimeout(timer);
        if (generation !== this._generation) { socket.close(); return; }
        opened = true;
        this._webSocket = socket;
        this._opened('websocket');
      };
      socket.onmessage = (event) => {
        if (generation !== this._generation) return;
        if (typeof event.data === 'string') {
          this._protocolError('the relay sent a text message');
          return;
        }
        this._receive(event.data);
      };
      socket.onerror = () => { /* a close event follows and says more */ };
      socket.onclose = (event) => {
        clearTimeout(timer);
        if (generation !== this._generation) return;
        this._webSocket = null;
        if (!opened) this._webSocketFailed(generation);
        else this._lost(event.code, event.reason || '');
      };
    }

    _webSocketFailed(generation) {
      if (generation !== this._generation) return;
      // Proxies that break WebSockets fail here; long-polling also tells why a refusal happened
      // (a browser hides the HTTP status of a refused WebSocket).
      this._poll(++this._generation, true);
    }

    _opened(transport) {
      this._openedAt = Date.now();
      this._ready = false; // what was queued waits for the hello (a master's numbers depend on it)
      this._setState('open', transport);
      this._emit('open', transport);
    }

    /** After a hello: what the relay lacks goes first, then what was queued, then anything new. */
    _flushPending() {
      this._ready = true;
      if (this.transport === 'websocket' && this._webSocket) {
        const pending = this._pending;
        this._pending = [];
        this._pendingBytes = 0;
        for (const item of pending) {
          item.counted = false;
          this._webSocket.send(item.bytes);
        }
      } else {
        this._flushPolling();
      }
    }

    /** A master's hello: re-send what the relay does not hold, or renumber the queue afresh. */
    _planAfterHello(body) {
      const plan = this._window.onHello(body);
      const held = typeof body.held === 'number' ? body.held : 0;
      if (plan.resumed) {
        // Queued items go in the queue's turn (so none is sent twice); those the relay holds
        // already (a POST whose answer was lost) are left out.
        const queued = new Set(this._pending);
        const resend = plan.resend.filter((item) => !queued.has(item));
        this._pending = resend.concat(this._pending.filter((item) => !(item.number > 0 && item.number <= held)));
        for (const item of this._pending) {
          // The fresh start's first message went unnumbered: again, it carries the number it got.
          if (item.number > 0 && item.seq !== item.number) {
            item.seq = item.number;
            item.bytes = envelopeBytes(item.kind, item.seq, item.body);
            item.body = item.bytes.subarray(item.bytes.length - item.body.length);
          }
        }
      } else {
        // A fresh start: what was queued gets new numbers (the first numbered one goes with seq 0).
        for (const item of this._pending) this._window.number(item);
      }
      // maxPendingBytes bounds what was queued by send(), not what is sent again.
      this._pendingBytes = this._pending.reduce((total, item) => total + (item.counted ? item.bytes.length : 0), 0);
      return plan.resumed;
    }

    _lost(code, reason) {
      if (this.state === 'closed') return;
      if (this._openedAt && Date.now() - this._openedAt >= this.options.stableAfterMs) this._attempt = 0;
      this._openedAt = 0;
      if (FINAL_CLOSE_CODES[code] || !this.options.reconnect) {
        this._finish(code, reason || FINAL_CLOSE_CODES[code] || '');
        return;
      }
      const base = Math.min(this.options.backoffMaxMs, this.options.backoffInitialMs * Math.pow(2, this._attempt));
      const delay = Math.round(base / 2 + Math.random() * base / 2); // jitter: clients of a dead node spread out
      this._attempt += 1;
      this._setState('reconnecting');
      this._emit('disconnect', {code: code, reason: reason, retryInMs: delay});
      this._retryTimer = setTimeout(() => this._connect(), delay);
    }

    _finish(code, reason) {
      if (this.state === 'closed') return;
      ++this._generation;
      clearTimeout(this._retryTimer);
      this._setState('closed');
      this._emit('close', {code: code, reason: reason});
    }

    _stopTransport(code, reason) {
      ++this._generation;
      this._ready = false;
      if (this._webSocket) {
        try { this._webSocket.close(code, reason); } catch (error) { /* already closing */ }
        this._webSocket = null;
      }
      for (const controller of this._aborts) controller.abort();
      this._aborts.clear();
    }

    _protocolError(message) {
      this._emit('error', new RelayError('protocol', message));
      this._stopTransport(1000, 'protocol error');
      this._lost(1006, message);
    }

    // -------------------------------------------------------------- long-polling

    _request(url, init, timeoutMs) {
      const Controller = host.AbortController || (typeof AbortController === 'function' ? AbortController : null);
      const controller = Controller ? new Controller() : null;
      let timer = null;
      if (controller) {
        this._aborts.add(controller);
        init.signal = controller.signal;
        if (timeoutMs) timer = setTimeout(() => controller.abort(), timeoutMs);
      }
      init.credentials = this.options.credentials || 'same-origin';
      const done = () => { clearTimeout(timer); if (controller) this._aborts.delete(controller); };
      return this._fetch(url, init).then(
        (response) => response.arrayBuffer().then((body) => { done(); return {response: response, body: body}; }),
        (error) => { done(); throw error; });
    }

    async _poll(generation, afterWebSocketFailed) {
      const path = '/poll/' + encodeURIComponent(this.session);
      let first = true;
      while (generation === this._generation) {
        let result;
        try {
          result = await this._request(apiUrl(this.options.base, path + this._resumeQuery()),
            {method: 'GET', cache: 'no-store'}, this.options.pollTimeoutMs);
        } catch (error) {
          if (generation !== this._generation) return;
          this._stopTransport();
          this._lost(1006, 'long-poll failed: ' + error.message);
          return;
        }
        if (generation !== this._generation) return;
        const response = result.response;
        if (response.status === 200) {
          const opening = first;
          if (first) {
            first = false;
            if (afterWebSocketFailed) this._tryWebSocket = false; // this network passes HTTP only
            this._opened('long-polling');
          }
          this._receive(result.body);
          // No hello in the first answer: the relay kept our long-poll client (our after was not
          // behind it), the same connection as far as it is concerned: what was queued may go.
          if (opening && !this._ready && generation === this._generation && this.state === 'open') this._flushPending();
          continue;
        }
        this._stopTransport();
        this._pollRefused(response.status, result.body);
        return;
      }
    }

    _pollRefused(status, body) {
      let payload = {};
      try { payload = JSON.parse(utf8Decoder.decode(new Uint8Array(body))); } catch (error) { payload = {}; }
      const error = new RelayError(payload.error || 'http-' + status, payload.message || 'HTTP ' + status, status);
      if (FINAL_STATUSES[status]) {
        this._emit('error', error);
        this._finish(4000 + status, error.message);
      } else if (status === 410) {
        // The relay closed this client: its 410 carries the WebSocket close code it would have had, so
        // the same codes are final on both transports (4001: two tabs with one token would take the
        // session from each other for ever; 4403: the master refused this agent).
        const code = typeof payload.close_code === 'number' ? payload.close_code : (/replaced/.test(error.message) ? 4001 : 1001);
        if (FINAL_CLOSE_CODES[code]) this._finish(code, error.message);
        else this._lost(code, error.message);
      } else {
        this._lost(1006, error.message);
      }
    }

    _flushPolling() {
      if (this._posting || !this._ready || this.state !== 'open' || this.transport !== 'long-polling' || !this._pending.length) return;
      const batch = [];
      let size = 0;
      let counted = 0;
      const wasCounted = [];
      while (this._pending.length && (!batch.length || size + this._pending[0].bytes.length <= this.options.pollBatchBytes)) {
        const item = this._pending.shift();
        batch.push(item);
        size += item.bytes.length;
        wasCounted.push(item.counted);
        if (item.counted) counted += item.bytes.length;
        item.counted = false;
      }
      this._pendingBytes -= counted;
      const body = new Uint8Array(size);
      let offset = 0;
      for (const item of batch) { body.set(item.bytes, offset); offset += item.bytes.length; }
      this._posting = true;
      const url = apiUrl(this.options.base, '/poll/' + encodeURIComponent(this.session) + '?token=' + encodeURIComponent(this.token));
      this._request(url, {method: 'POST', headers: {'content-type': 'application/msgpack'}, body: body}, this.options.pollTimeoutMs)
        .then((result) => {
          this._posting = false;
          if (!result.response.ok) {
            let payload = {};
            try { payload = JSON.parse(utf8Decoder.decode(new Uint8Array(result.body))); } catch (error) { payload = {}; }
            this._emit('error', new RelayError(payload.error || 'http-' + result.response.status,
              (payload.message || 'HTTP ' + result.response.status) + ' (' + batch.length + ' envelopes not delivered)',
              result.response.status));
          }
          this._flushPolling();
        }, () => {
          // Not known to be delivered: send again once reconnected (the GET fails too and reconnects).
          this._posting = false;
          batch.forEach((item, index) => { item.counted = wasCounted[index]; });
          this._pending = batch.concat(this._pending);
          this._pendingBytes += counted;
        });
    }

    // -------------------------------------------------------------- receiving

    _receive(data) {
      let envelopes;
      try {
        envelopes = readEnvelopes(data);
      } catch (error) {
        this._protocolError('undecodable message from the relay: ' + error.message);
        return;
      }
      const generation = this._generation;
      for (const envelope of envelopes) {
        if (generation !== this._generation) return; // a gap or a listener closed the connection
        this._dispatch(envelope.kind, envelope.seq, envelope.body, envelope.sender, envelope.bodyError);
      }
    }

    _notRelay(kind, sender) {
      // The relay refuses these kinds from clients; were one ever forwarded, believing it would let
      // a participant rename others (presence) or steer this client (hello, resync).
      if (sender === RELAY || sender === null) return false;
      this._emit('error', new RelayError('protocol', 'ignored a ' + kind + ' stamped ' + JSON.stringify(sender) +
        ': only the relay writes ' + kind));
      return true;
    }

    _helloParticipants(hello) {
      if (this.role === 'master') {
        // The master's hello lists who is connected now (maybe on a new node): it replaces the map.
        this.participants.forEach((item, id) => this._depart(id, item.agent));
        this.participants.clear();
        for (const item of Array.isArray(hello.slaves) ? hello.slaves : []) this._arrive(item);
      } else if (this.slave) {
        // A slave's hello names only itself; the others come with presence.
        const me = this.participants.get(this.slave);
        this._arrive({slave: this.slave, agent: this.agent !== null ? this.agent : me && me.agent, mode: this.mode});
      }
    }

    _arrive(item) {
      if (!item || typeof item.slave !== 'string') return;
      this._departed.delete(item.slave);
      this.participants.set(item.slave, {slave: item.slave, agent: typeof item.agent === 'string' ? item.agent : null,
        mode: typeof item.mode === 'string' ? item.mode : null});
    }

    _depart(id, agent) {
      this.participants.delete(id);
      this._departed.delete(id);
      this._departed.set(id, agent);
      // A Map iterates in insertion order: the first key is the oldest departure.
      if (this._departed.size > MAX_DEPARTED_NAMES) this._departed.delete(this._departed.keys().next().value);
    }

    _notePresence(event) {
      if (!event || typeof event.slave !== 'string') return;
      if (event.event === 'joined' || event.event === 'mode') this._arrive(event);
      else if (event.event === 'left') this._depart(event.slave, typeof event.agent === 'string' ? event.agent : null);
    }

    _dispatch(kind, seq, body, sender, bodyError) {
      // hello, resync, presence and seq-0 errors are the relay's own: from anyone else, refused.
      const relayKind = kind === 'hello' || kind === 'resync' || kind === 'ack' || (kind === 'error' && seq === 0);
      if (relayKind && this._notRelay(kind, sender)) return;
      if (bodyError && (relayKind || kind === 'presence')) {
        this._protocolError('undecodable ' + kind + ' from the relay: ' + bodyError.message);
        return;
      }
      if (kind === 'hello') {
        this.role = body.role;
        this.epoch = body.epoch;
        this.mode = body.mode;
        if (body.slave) this.slave = body.slave;
        // Only a resume continues our numbering; otherwise a fresh catch-up follows.
        if (body.catchup !== 'resume') this.lastSeq = null;
        if (this.role === 'master') {
          let resumed = false;
          try {
            resumed = this._planAfterHello(body);
          } catch (error) {
            this._protocolError('a master hello it cannot use: ' + error.message);
            return;
          }
          body.resumed = resumed;
        } else {
          body.resumed = body.catchup === 'resume';
          if (this.role === 'slave') {
            // Across epochs a resume continues from the failover copy's end, maybe below our seq.
            if (body.resumed && Number.isSafeInteger(body.after) && body.after >= 0) this.lastSeq = body.after;
            const count = Number.isSafeInteger(body.master_count) && body.master_count >= 0 ? body.master_count : null;
            // Resumed from a failover copy that ends before what we applied: the master's re-sends
            // of what we have come first; leave them out until our count is back (protocol.md 4b).
            const applied = this._appliedCount();
            this._skipThrough = body.resumed && count !== null && applied !== null && applied > count ? applied : null;
            this.masterCount = count;
          }
        }
        this._flushPending(); // before the listeners: what they send comes after
        this._helloParticipants(body);
        const waited = this.admitted === false;
        if (this.role === 'slave') this.admitted = body.admitted !== false;
        this._emit('hello', body);
        if (waited && this.admitted) this._emit('admitted', body);
        if (this.role === 'master' && Array.isArray(body.pending)) {
          for (const item of body.pending) {
            if (item && typeof item.slave === 'string') this._emit('join-request', {slave: item.slave, agent: item.agent});
          }
        }
        return;
      }
      if (kind === 'resync') {
        // For a slave, what follows replaces its state; for the master it asks for a snapshot.
        if (this.role === 'slave') {
          this.lastSeq = null;
          this.masterCount = body && Number.isSafeInteger(body.master_count) && body.master_count >= 0 ? body.master_count : null;
          this._skipThrough = null; // what follows replaces the state: nothing of it was applied
        }
        if (body && typeof body.epoch === 'number') this.epoch = body.epoch;
        this._emit('resync', body);
        return;
      }
      if (kind === 'ack' && seq === 0) {
        try {
          this._window.onAck(body);
        } catch (error) {
          this._emit('error', error);
          return;
        }
        this._emit('ack', body);
        return;
      }
      if (kind === 'error' && seq === 0) {
        const info = body || {};
        this._emit('error', new RelayError(String(info.code || 'error'), String(info.message || info.code || 'error')));
        return;
      }
      let repeat = false; // a master re-send this slave applied before a failover
      if (seq > 0) {
        if (this.role === 'master' && (kind === 'pointer' || kind === 'control')) {
          this.lastInboxSeq = seq;
        } else if (this.role === 'slave' && this.lastSeq !== null && seq !== this.lastSeq + 1) {
          if (seq <= this.lastSeq) return; // already seen
          // The relay never leaves a gap without a resync: something was lost, resume to refill.
          this._emit('error', new RelayError('gap', 'missed messages ' + (this.lastSeq + 1) + '..' + (seq - 1) + ': resuming'));
          this._stopTransport(1000, 'resuming after a gap');
          this._lost(1006, 'gap in the message sequence');
          return;
        } else if (this.lastSeq === null || seq > this.lastSeq) {
          // The master does not receive its own messages, so its view of the stream has holes.
          this.lastSeq = seq;
          if (this.role === 'slave' && sender === MASTER && this.masterCount !== null) {
            this.masterCount += 1;
            if (this._skipThrough !== null) {
              repeat = this.masterCount <= this._skipThrough;
              if (this.masterCount >= this._skipThrough) this._skipThrough = null;
            }
          }
        }
      }
      if (repeat) return; // counted and its seq seen, never applied twice
      if (kind === 'presence') {
        if (this._notRelay(kind, sender)) return; // after the seq bookkeeping: it was in the stream
        this._notePresence(body);
        if (body && (body.event === 'join-request' || body.event === 'join-withdrawn') && typeof body.slave === 'string') {
          this._emit(body.event, {slave: body.slave, agent: typeof body.agent === 'string' ? body.agent : null});
        }
        if (body && body.event === 'mode' && body.slave === this.slave && this.slave !== null) {
          this.mode = body.mode;
          this._emit('mode', body.mode);
        }
        this._emit('presence', body);
        return;
      }
      if (bodyError) {
        // One bad message: reported and skipped; its seq counts as seen, so a resume does not
        // ask for it again (and again, until the next snapshot).
        this._emit('error', new RelayError('bad-body', kind + ' #' + seq + ' from ' + this.nameOf(sender) +
          ' could not be decoded (' + bodyError.message + '): skipped'));
        return;
      }
      this._emit('message', kind, seq, body, sender);
    }
  }

  // ---------------------------------------------------------------- entry points

  /** Create a session and connect as its master.  Resolves to a Connection (still connecting). */
  async function create(options) {
    options = options || {};
    const created = await postJson(options, '/sessions', {chat: !!options.chat});
    const connection = new Connection({session: created.session, token: created.master_token, role: 'master',
      mode: 'write', node: created.node}, options);
    connection.created = created;
    return connection;
  }

  /** Join a session as a slave (agent: your agent id; joinToken: a ticket for the authorization hook). */
  async function join(options) {
    options = options || {};
    if (!options.session) throw new RelayError('bad-request', 'join needs a session id');
    const request = {};
    if (options.agent) request.agent = String(options.agent);
    if (options.joinToken) request.join_token = String(options.joinToken);
    const joined = await postJson(options, '/sessions/' + encodeURIComponent(options.session) + '/join', request);
    const connection = new Connection({session: joined.session, token: joined.slave_token, role: 'slave',
      slave: joined.slave, agent: request.agent, mode: joined.mode, node: joined.node}, options);
    connection.joined = joined;
    return connection;
  }

  /** Reconnect with a token you already have (e.g. after a page reload; agent: a slave's agent id). */
  function connect(options) {
    return new Connection({session: options.session, token: options.token, agent: options.agent}, options);
  }

  return {
    create: create,
    join: join,
    connect: connect,
    Connection: Connection,
    ResendWindow: ResendWindow,
    RelayError: RelayError,
    msgpack: {encode: encode, decode: decode, decodeAll: decodeAll, Ext: Ext, DecodeError: DecodeError},
    encodeEnvelope: encodeEnvelope,
    decodeEnvelope: decodeEnvelope,
    decodeEnvelopes: decodeEnvelopes,
    MAX_KIND_BYTES: MAX_KIND_BYTES,
  };
});
