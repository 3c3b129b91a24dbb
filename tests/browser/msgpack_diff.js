'use strict';
// client.js's own msgpack codec against @msgpack/msgpack (npm), both directions, on edge values and
// seeded random ones:  node msgpack_diff.js CLIENT_JS NODE_MODULES SEED COUNT
// Prints {cases, byteEqual, mismatches} as JSON; a mismatch names the value and what differed.
const [clientPath, nodeModules, seedText, countText] = process.argv.slice(2);
const R = require(clientPath);
const M = require(require('path').join(nodeModules, '@msgpack', 'msgpack'));
const OURS = R.msgpack;
const THEIRS_OPTIONS = {useBigInt64: true};

let seed = Number(seedText) >>> 0;
function random() { // xorshift32: the same cases for the same seed
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}
const pick = (items) => items[Math.floor(random() * items.length)];
const int = (low, high) => low + Math.floor(random() * (high - low + 1));

function randomString() {
  const length = pick([0, 1, 5, 31, 32, 33, 100, 255, 256, 300]);
  let out = '';
  for (let i = 0; i < length; i++) {
    out += pick([() => String.fromCharCode(int(32, 126)), () => String.fromCharCode(int(0xa0, 0x7ff)),
      () => String.fromCharCode(int(0x800, 0xd7ff)), () => String.fromCodePoint(int(0x10000, 0x10ffff)),
      () => String.fromCharCode(int(0, 31))])();
  }
  return out;
}

function randomNumber() {
  return pick([
    () => int(-32, 127), () => int(-128, 255), () => int(-32768, 65535), () => int(-2147483648, 4294967295),
    () => Math.floor((random() - 0.5) * 2 * Number.MAX_SAFE_INTEGER),
    () => (random() - 0.5) * Math.pow(10, int(-300, 300)), () => random(),
    () => BigInt(int(0, 0xffffffff)) * 4294967296n + BigInt(int(0, 0xffffffff)), // uint64, often past 2**53
    () => -(BigInt(int(0, 0x7fffffff)) * 4294967296n + BigInt(int(0, 0xffffffff))) - 1n,
  ])();
}

function randomValue(depth) {
  const leaves = [() => null, () => true, () => false, randomNumber, randomString,
    () => Uint8Array.from({length: pick([0, 1, 16, 255, 256, 1000])}, () => int(0, 255)),
    () => ['ext', int(0, 127), Uint8Array.from({length: pick([1, 2, 4, 8, 16, 3, 17, 300])}, () => int(0, 255))]];
  if (depth > 2 || random() < 0.6) {
    const value = pick(leaves)();
    return Array.isArray(value) && value[0] === 'ext' ? {ext: value[1], data: value[2]} : value;
  }
  if (random() < 0.5) return Array.from({length: pick([0, 1, 3, 15, 16, 17])}, () => randomValue(depth + 1));
  const object = {};
  for (let i = pick([0, 1, 3, 15, 16, 17]); i > 0; i--) object[randomString() + i] = randomValue(depth + 1);
  return object;
}

const big = (n) => BigInt(n);
const EDGES = [
  null, true, false, 0, 1, -1, 31, 32, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296,
  -31, -32, -33, -127, -128, -129, -32768, -32769, -2147483648, -2147483649, Number.MAX_SAFE_INTEGER,
  -Number.MAX_SAFE_INTEGER, big('18446744073709551615'), big('9223372036854775807'), big('-9223372036854775808'),
  big('9007199254740993'), -0, 0.5, -0.5, 1.5e300, 5e-324, Infinity, -Infinity, NaN, Math.PI,
  '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(65535), 'x'.repeat(65536),
  'é'.repeat(200), '😀'.repeat(100), '\u0000', new Uint8Array(0), new Uint8Array(255), new Uint8Array(256),
  new Uint8Array(65535), new Uint8Array(65536), [], new Array(15).fill(0), new Array(16).fill(0),
  new Array(65536).fill(1), {}, Object.fromEntries(Array.from({length: 15}, (_, i) => ['k' + i, i])),
  Object.fromEntries(Array.from({length: 16}, (_, i) => ['k' + i, i])),
  Object.fromEntries(Array.from({length: 65536}, (_, i) => ['k' + i, i])),
  {ext: 5, data: new Uint8Array(1)}, {ext: 127, data: new Uint8Array(16)}, {ext: 0, data: new Uint8Array(0)},
  {ext: 1, data: new Uint8Array(256)}, {ext: 2, data: new Uint8Array(65536)},
  [[[[[[[[[['deep']]]]]]]]]],
];

// The same value for each library: ext as its own class.
function forOurs(value) {
  if (value && value.ext !== undefined && value.data instanceof Uint8Array) return new OURS.Ext(value.ext, value.data);
  if (Array.isArray(value)) return value.map(forOurs);
  if (value && typeof value === 'object' && !(value instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, forOurs(v)]));
  }
  return value;
}
function forTheirs(value) {
  if (value && value.ext !== undefined && value.data instanceof Uint8Array) return new M.ExtData(value.ext, value.data);
  if (Array.isArray(value)) return value.map(forTheirs);
  if (value && typeof value === 'object' && !(value instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, forTheirs(v)]));
  }
  return value;
}

// A decoded value as comparable text: ints as decimal whatever their JS type, floats by their bits.
function describe(value) {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'bigint') return 'i' + value;
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && !Object.is(value, -0)) return 'i' + value;
    const view = new DataView(new ArrayBuffer(8)); view.setFloat64(0, value);
    return 'f' + view.getBigUint64(0).toString(16);
  }
  if (typeof value === 'string') return 's' + JSON.stringify(value);
  if (value instanceof Uint8Array) return 'b' + Buffer.from(value).toString('hex');
  if (value instanceof OURS.Ext || value instanceof M.ExtData) return 'x' + value.type + ':' + Buffer.from(value.data).toString('hex');
  if (Array.isArray(value)) return '[' + value.map(describe).join(',') + ']';
  if (value instanceof Map) return '{' + Array.from(value, ([k, v]) => describe(k) + ':' + describe(v)).join(',') + '}';
  return '{' + Object.keys(value).map((k) => describe(k) + ':' + describe(value[k])).join(',') + '}';
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const mismatches = [];
let cases = 0;
let byteEqual = 0;
function check(value) {
  cases += 1;
  const want = describe(forOurs(value));
  const short = want.length > 120 ? want.slice(0, 120) + '...' : want;
  try {
    const ours = OURS.encode(forOurs(value));
    const theirs = M.encode(forTheirs(value), THEIRS_OPTIONS);
    // client.js's bytes: both decoders read the value it was given.
    const theyRead = describe(M.decode(ours, THEIRS_OPTIONS));
    if (theyRead !== want) mismatches.push({value: short, direction: 'client.js -> @msgpack/msgpack', got: theyRead.slice(0, 200)});
    const weReadOurs = describe(OURS.decode(ours));
    if (weReadOurs !== want) mismatches.push({value: short, direction: 'client.js -> client.js', got: weReadOurs.slice(0, 200)});
    // @msgpack/msgpack's bytes: client.js reads what @msgpack/msgpack reads (its encoder has its own
    // choices: -0 as the integer 0, integers past 32 bits as float64).
    const theyMeant = describe(M.decode(theirs, THEIRS_OPTIONS));
    const weRead = describe(OURS.decode(theirs));
    if (weRead !== theyMeant) mismatches.push({value: short, direction: '@msgpack/msgpack -> client.js', got: weRead.slice(0, 200), want: theyMeant.slice(0, 200)});
    if (hex(ours) === hex(theirs)) byteEqual += 1;
  } catch (error) {
    mismatches.push({value: short, error: String(error)});
  }
}

// Encodings neither encoder writes (float32, non-minimal ints and lengths): both decoders agree.
const RAW = ['ca3fc00000', 'ca7f800000', 'cac0490fdb', 'cc05', 'cd0005', 'ce00000005', 'cf0000000000000005', 'd0ff',
  'd1ffff', 'd2ffffffff', 'd3ffffffffffffffff', 'd90161', 'da000161', 'db0000000161', 'c50001ff', 'c600000001ff',
  'dc000101', 'dd0000000101', 'de0001a16101', 'df00000001a16101', 'c70105ff', 'c8000105ff', 'c90000000105ff'];
for (const text of RAW) {
  cases += 1;
  const bytes = Uint8Array.from(Buffer.from(text, 'hex'));
  const theirs = describe(M.decode(bytes, THEIRS_OPTIONS));
  const ours = describe(OURS.decode(bytes));
  if (ours !== theirs) mismatches.push({bytes: text, direction: 'decode', got: ours, want: theirs});
}
for (const value of EDGES) check(value);
for (let i = 0; i < Number(countText); i++) check(randomValue(0));
console.log(JSON.stringify({cases: cases, byteEqual: byteEqual, mismatches: mismatches.slice(0, 20)}));
