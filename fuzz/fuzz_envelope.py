"""Differential fuzzing of the envelope primitives: the Cython twin against the pure twin.

Input layout: byte 0 picks the mode (even: peek, odd: build), the rest is the mode's data.

* peek: ``peek_envelope`` on the bytes (as ``bytes``, ``bytearray`` and ``memoryview``), both
  twins; the result, or the exception type and close code, must agree.  It is also held to the
  contract's oracle, msgpack itself: accepted exactly when ``msgpack.unpackb`` accepts the message
  and it has the envelope's shape, except for the three documented blind spots (body strings are
  not UTF-8-checked, timestamp payloads are not checked, depth is not limited).
* build: a kind (a length byte, then UTF-8 bytes decoded with ``surrogateescape`` so lone
  surrogates happen), a seq (a byte ``n``, then ``n`` bytes, a sign bit from byte 0's bit 1) and
  the rest as the body.  ``envelope_header`` / ``build_envelope`` / ``envelope_frame_header`` must
  agree across twins; a built envelope with a well-formed body must peek back to its kind, seq and
  header length, and its frame must decode (client side) back to the envelope.
"""

from __future__ import annotations

import msgpack

from _common import TWINS, Finding, Reader, main, outcome, pure, same
from relay._errors import EnvelopeError

MAX_SEQ_BYTES = 10  # a little past 2**64 - 1, so the range check is exercised


def _shape_ok(obj) -> bool:
    if not isinstance(obj, (list, tuple)) or len(obj) not in (3, 4):
        return False
    kind, seq = obj[0], obj[1]
    if not isinstance(kind, str):
        return False
    try:  # not UTF-8 on the wire: surrogateescape left lone surrogates that cannot be encoded
        encoded = kind.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if not 1 <= len(encoded) <= pure.MAX_KIND_BYTES:
        return False
    return type(seq) is int and 0 <= seq < 2**64


def msgpack_verdict(data: bytes):
    """True / False: what msgpack says; None when the input is in a documented blind spot."""
    try:
        # body strings are not checked by the relay: decode them leniently
        obj = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape", strict_map_key=False,
                              use_list=False, object_pairs_hook=list, timestamp=0,
                              # ext types are not interpreted: the default hook refuses -128..-2
                              ext_hook=lambda code, payload: (code, payload))
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        if isinstance(exc, msgpack.StackError) or "timestamp" in str(exc).lower() or "nanoseconds" in str(exc):
            return None
        return False
    return _shape_ok(obj)


def check_peek(data: bytes) -> None:
    results = {}
    for name, module in TWINS:
        for wrap in (bytes, bytearray, memoryview):
            results[f"{name}/{wrap.__name__}"] = outcome(module.peek_envelope, wrap(data))
    same(f"peek_envelope({data!r})", results)
    result = results["pure/bytes"]
    if result[0] == "error":
        if result[1] is not EnvelopeError or result[2] != 1007:
            raise Finding(f"peek_envelope({data!r}) raised {result[1].__name__} (close code {result[2]})")
    else:
        kind, seq, offset, body_end = result[1]
        if type(kind) is not str or type(seq) is not int or not 0 < offset < body_end <= len(data):
            raise Finding(f"peek_envelope({data!r}) returned {result[1]!r}")
    verdict = msgpack_verdict(data)
    accepted = result[0] == "ok"
    if verdict is not None and verdict != accepted:
        raise Finding(f"peek_envelope({data!r}) {'accepts' if accepted else 'refuses'} it, msgpack says {verdict}")


def check_build(reader: Reader, negative: bool) -> None:
    kind = reader.sized(40).decode("utf-8", "surrogateescape") if reader.remaining() else ""
    seq = reader.uint(reader.byte() % (MAX_SEQ_BYTES + 1))
    if negative:
        seq = -seq - 1
    body = reader.rest()
    headers = {name: outcome(module.envelope_header, kind, seq) for name, module in TWINS}
    same(f"envelope_header({kind!r}, {seq})", headers)
    built = {name: outcome(module.build_envelope, kind, seq, body) for name, module in TWINS}
    same(f"build_envelope({kind!r}, {seq}, {body!r})", built)
    tail = pure.sender_tail("master")
    stamped = {name: outcome(module.build_envelope, kind, seq, body, "master") for name, module in TWINS}
    same(f"build_envelope({kind!r}, {seq}, {body!r}, 'master')", stamped)
    frame_headers = {name: outcome(module.envelope_frame_header, kind, seq, len(body), tail)
                     for name, module in TWINS}
    same(f"envelope_frame_header({kind!r}, {seq}, {len(body)}, {tail!r})", frame_headers)
    if headers["pure"][0] == "error":
        if built["pure"][0] != "error" or frame_headers["pure"][0] != "error":
            raise Finding(f"envelope_header refuses ({kind!r}, {seq}) but build/frame header accept")
        return
    header = headers["pure"][1]
    envelope = built["pure"][1]
    if envelope != header + body:
        raise Finding("build_envelope is not envelope_header + body")
    delivered = stamped["pure"][1]
    if delivered != bytes((0x94,)) + header[1:] + body + tail:
        raise Finding("build_envelope with a sender is not the stamped header + body + tail")
    frame = frame_headers["pure"][1] + body + tail
    for name, module in TWINS:
        decoder = module.FrameDecoder(client_side=True)
        decoder.feed(frame)
        events = [decoder.next_event(), decoder.next_event()]
        if events != [(pure.OP_BINARY, delivered), None]:
            raise Finding(f"{name}: the envelope frame decodes to {events!r}")
    try:
        msgpack.unpackb(body, raw=True, strict_map_key=False, use_list=False, object_pairs_hook=list)
    except Exception:  # noqa: BLE001 - a body msgpack refuses: nothing to round-trip
        check_peek(envelope)
        return
    for name, module in TWINS:
        peeked = outcome(module.peek_envelope, envelope)
        if peeked != ("ok", (kind, seq, len(header), len(envelope))):
            raise Finding(f"{name}: peek_envelope(build_envelope({kind!r}, {seq}, {body!r})) gave {peeked!r}")
        peeked = outcome(module.peek_envelope, delivered)
        if peeked != ("ok", (kind, seq, len(header), len(header) + len(body))):
            raise Finding(f"{name}: peek_envelope of the stamped envelope gave {peeked!r}")


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.byte()
    if mode & 1:
        check_build(reader, negative=bool(mode & 2))
    else:
        check_peek(reader.rest())


def make_peek_input(data: bytes) -> bytes:
    return b"\0" + data


def make_build_input(kind: str, seq: int, body: bytes) -> bytes:
    encoded = kind.encode("utf-8", "surrogateescape")
    seq_bytes = seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")
    return b"\1" + bytes((len(encoded),)) + encoded + bytes((len(seq_bytes),)) + seq_bytes + body


def seeds():
    """Seed inputs from tests/corpus/envelopes.py: every case peeked, the good ones rebuilt."""
    from tests.corpus.envelopes import ENVELOPE_CASES

    for case in ENVELOPE_CASES:
        yield make_peek_input(case["data"])
        if case["expected"][0] == "ok":
            _, kind, seq, offset, body_end = case["expected"]
            yield make_build_input(kind, seq, case["data"][offset:body_end])


if __name__ == "__main__":
    main(test_one_input)
