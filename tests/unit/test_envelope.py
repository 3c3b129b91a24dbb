"""Envelope framing (docs/fastpath.md, section 2), both twins, with msgpack as the oracle."""

from __future__ import annotations


import msgpack
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import relay._fastpath as fast_twin
import relay._purepath.envelope as pure_twin
from relay._errors import EnvelopeError, LocalProtocolError
from helpers import load_corpus




ENVELOPE_CASES = load_corpus("envelopes").ENVELOPE_CASES
TWINS = [pytest.param(pure_twin, id="pure"), pytest.param(fast_twin, id="cython")]
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MSGPACK_NESTING_LIMIT = 1024  # msgpack-python's unpacker refuses deeper bodies; peek does not


def outcome(twin, data):
    try:
        return ("ok",) + twin.peek_envelope(data)
    except EnvelopeError as exc:
        assert exc.close_code == 1007 and exc.http_status == 400
        return ("error", str(exc))


def msgpack_verdict(data):
    """What msgpack says about ``data`` as an envelope: ``("ok", kind, seq)`` or ``("error",)``.

    Semantic checks that the relay deliberately skips are turned off: body strings are not
    UTF-8-checked (surrogateescape), map keys are not hashed (pairs), ext types are not
    interpreted (msgpack-python's default hook refuses the reserved codes -128..-2, which are
    well-formed msgpack), ext -1 (timestamps) with odd lengths are set aside by the caller.
    The shape rules are the envelope's own.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape",
                              strict_map_key=False, object_pairs_hook=list,
                              ext_hook=lambda code, payload: (code, payload))
    except msgpack.StackError:
        return ("too deep",)
    except ValueError as exc:  # truncated, ExtraData, FormatError (0xc1), limits
        if "timestamp" in str(exc) or "nanoseconds" in str(exc):  # ext -1 payloads are not checked
            return ("timestamp",)
        return ("error",)
    if not (isinstance(obj, list) and len(obj) in (3, 4)):
        return ("error",)
    kind, seq = obj[0], obj[1]
    if type(kind) is not str or type(seq) is not int or not 0 <= seq < 2**64:
        return ("error",)
    try:
        kind_bytes = kind.encode("utf-8")  # fails on surrogateescaped bytes: kind not UTF-8
    except UnicodeEncodeError:
        return ("error",)
    if not 1 <= len(kind_bytes) <= pure_twin.MAX_KIND_BYTES:
        return ("error",)
    return ("ok", kind, seq)


# -- strategies -------------------------------------------------------------------------------

SIZE_BOUNDARIES = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]
kinds = st.text(min_size=1, max_size=8).filter(lambda k: 1 <= len(k.encode("utf-8")) <= 32) | \
    st.sampled_from(["k" * 31, "k" * 32, "\u00e9" * 16, "\U0001f600" * 8])
seqs = st.integers(0, 2**64 - 1) | st.sampled_from(
    [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
scalars = (
    st.none() | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40) | st.binary(max_size=40)
    | st.sampled_from(SIZE_BOUNDARIES).map(lambda n: "s" * n)
    | st.sampled_from(SIZE_BOUNDARIES).map(lambda n: b"b" * n)
    # msgpack-python builds ext types 0..127 only; -1 (timestamps) comes from Timestamp
    | st.builds(msgpack.ExtType, st.integers(0, 127),
                st.binary(max_size=20)
                | st.sampled_from([1, 2, 4, 8, 16, 17, 256, 65536]).map(lambda n: b"x" * n))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34), st.integers(0, 999_999_999))
)
bodies = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=5) | st.integers(-5, 5), children, max_size=5)
    | st.sampled_from([16, 300]).map(lambda n: [None] * n),  # array16 (array32: see below)
    max_leaves=30,
)


def pack_body(body, single_float):
    return msgpack.packb(body, use_single_float=single_float)


# -- building ---------------------------------------------------------------------------------

@pytest.mark.parametrize("twin", TWINS)
@SETTINGS
@given(kind=kinds, seq=seqs, body=bodies, single_float=st.booleans())
def test_build_matches_msgpack_and_peek_inverts_it(twin, kind, seq, body, single_float):
    try:
        packed_body = pack_body(body, single_float)
    except OverflowError:  # a double too large for float32
        packed_body = pack_body(body, False)
    envelope = twin.build_envelope(kind, seq, packed_body)
    assert envelope == twin.envelope_header(kind, seq) + packed_body
    kind_out, seq_out, offset, body_end = twin.peek_envelope(envelope)
    assert (kind_out, seq_out) == (kind, seq)
    assert envelope[offset:] == packed_body and body_end == len(envelope)
    # peek must accept exactly what msgpack accepts
    assert msgpack_verdict(envelope) == ("ok", kind, seq)
    # the stamped form: the same body, then the sender
    for sender in ("", "master", "0123456789abcdef", "s" * 40):
        stamped = twin.build_envelope(kind, seq, packed_body, sender)
        assert stamped == twin.envelope_header(kind, seq, stamped=True) + packed_body + twin.sender_tail(sender)
        assert twin.peek_envelope(stamped) == (kind, seq, offset, offset + len(packed_body))
        assert msgpack.unpackb(stamped, raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                               ext_hook=lambda code, data: None, timestamp=0)[3] == sender


@pytest.mark.parametrize("twin", TWINS)
@SETTINGS
@given(kind=kinds, seq=seqs)
def test_header_is_smallest_encoding(twin, kind, seq):
    header = twin.envelope_header(kind, seq)
    assert header == msgpack.packb([kind, seq, None])[:-1]
    assert twin.envelope_header(kind, seq, stamped=True) == msgpack.packb([kind, seq, None, ""])[:-2]


@pytest.mark.parametrize("twin", TWINS)
@SETTINGS
@given(sender=st.text(max_size=80).filter(lambda s: len(s.encode("utf-8", "surrogatepass")) <= 255)
       | st.sampled_from(["", "master", "x" * 31, "x" * 32, "x" * 255]))
def test_sender_tail_is_msgpack_str(twin, sender):
    try:
        expected = msgpack.packb(sender)
    except UnicodeEncodeError:  # a lone surrogate
        with pytest.raises(LocalProtocolError):
            twin.sender_tail(sender)
        return
    assert twin.sender_tail(sender) == expected


@pytest.mark.parametrize("twin", TWINS)
def test_sender_tail_refuses(twin):
    with pytest.raises(LocalProtocolError):
        twin.sender_tail("x" * 256)
    with pytest.raises(LocalProtocolError):
        twin.sender_tail("\u00e9" * 128)  # 256 bytes
    for bad in (b"master", None, 1):
        with pytest.raises(TypeError):
            twin.sender_tail(bad)
    with pytest.raises(LocalProtocolError):
        twin.build_envelope("k", 1, b"\xc0", "x" * 256)


@pytest.mark.parametrize("twin", TWINS)
def test_build_accepts_any_bytes_like_body(twin):
    body = msgpack.packb({"a": [1, 2]})
    expected = twin.envelope_header("op", 9) + body
    assert twin.build_envelope("op", 9, bytearray(body)) == expected
    assert twin.build_envelope("op", 9, memoryview(body)) == expected


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(
    "kind, seq, error",
    [
        ("", 0, LocalProtocolError),
        ("k" * 33, 0, LocalProtocolError),
        ("\u00e9" * 17, 0, LocalProtocolError),  # 17 characters, 34 bytes
        ("\ud800", 0, LocalProtocolError),  # lone surrogate: not encodable
        ("k", -1, LocalProtocolError),
        ("k", 2**64, LocalProtocolError),
        (b"k", 0, TypeError),
        (None, 0, TypeError),
        ("k", 1.0, TypeError),
        ("k", "1", TypeError),
        ("k", True, TypeError),
    ],
)
def test_bad_header_arguments(twin, kind, seq, error):
    for call in (lambda: twin.envelope_header(kind, seq),
                 lambda: twin.build_envelope(kind, seq, b"\xc0"),
                 lambda: twin.envelope_frame_header(kind, seq, 1, b"\xa0")):
        with pytest.raises(error) as info:
            call()
        assert type(info.value) is error


# -- frame header -----------------------------------------------------------------------------

def parse_frame_header(frame):
    """An independent reading of an unmasked server frame header: (opcode, fin, length, size)."""
    first, second = frame[0], frame[1]
    assert second & 0x80 == 0, "server frames are unmasked"
    assert first & 0x70 == 0, "no RSV bits"
    length = second & 0x7F
    if length == 126:
        length, size = int.from_bytes(frame[2:4], "big"), 4
        assert length >= 126, "minimal length encoding"
    elif length == 127:
        length, size = int.from_bytes(frame[2:10], "big"), 10
        assert 65536 <= length < 2**63, "minimal length encoding"
    else:
        size = 2
    return first & 0x0F, bool(first & 0x80), length, size


@pytest.mark.parametrize("twin", TWINS)
@SETTINGS
@given(kind=kinds, seq=seqs,
       body_length=st.integers(0, 2**40) | st.integers(0, 70_000)
       | st.sampled_from([0, 100, 118, 119, 120, 125, 126, 65_500, 65_535, 65_536, 2**63 - 100]))
def test_frame_header(twin, kind, seq, body_length):
    header = twin.envelope_header(kind, seq, stamped=True)
    tail = twin.sender_tail("master")
    assume(len(header) + body_length + len(tail) < 2**63)
    frame = twin.envelope_frame_header(kind, seq, body_length, tail)
    opcode, fin, length, size = parse_frame_header(frame)
    assert (opcode, fin) == (0x2, True)
    assert length == len(header) + body_length + len(tail)
    assert size == (2 if length < 126 else 4 if length < 65536 else 10)
    assert frame[size:] == header


@pytest.mark.parametrize("twin", TWINS)
def test_frame_header_refuses(twin):
    tail = twin.sender_tail("")
    with pytest.raises(LocalProtocolError):
        twin.envelope_frame_header("k", 1, -1, tail)
    with pytest.raises(LocalProtocolError):
        twin.envelope_frame_header("k", 1, 2**63, tail)
    with pytest.raises(LocalProtocolError):
        twin.envelope_frame_header("k", 1, 2**63 - 5, tail)  # its 4 header bytes and the tail push it over
    with pytest.raises(LocalProtocolError):
        twin.envelope_frame_header("k", 1, 10, b"")  # every delivered envelope has a sender
    with pytest.raises(TypeError):
        twin.envelope_frame_header("k", 1, 1.5, tail)
    with pytest.raises(TypeError):
        twin.envelope_frame_header("k", 1, 1, "master")


@pytest.mark.parametrize("twin", TWINS)
def test_rewriting_seq_keeps_the_body_bytes(twin):
    body = msgpack.packb({"dom": "x" * 70_000})
    for original in (twin.build_envelope("patch", 41, body), twin.build_envelope("patch", 41, body, "forged")):
        kind, seq, offset, body_end = twin.peek_envelope(original)
        view = memoryview(original)[offset:body_end]
        tail = twin.sender_tail("master")
        frame = twin.envelope_frame_header(kind, seq + 1, len(view), tail)
        wire = frame + bytes(view) + tail
        _, _, length, size = parse_frame_header(wire)
        assert length == len(wire) - size
        assert msgpack.unpackb(wire[size:]) == ["patch", 42, {"dom": "x" * 70_000}, "master"]


# -- peeking ----------------------------------------------------------------------------------

@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("case", ENVELOPE_CASES, ids=[c["why"][:50] for c in ENVELOPE_CASES])
def test_corpus(twin, case):
    got = outcome(twin, case["data"])
    expected = case["expected"]
    if expected[0] == "ok":
        assert got == expected
    else:
        assert got[0] == "error" and expected[1] in got[1]
    verdict = msgpack_verdict(case["data"])
    if verdict[0] == "too deep":
        assert got[0] == "ok"  # the documented difference
    else:
        assert verdict[0] == got[0], verdict
        if got[0] == "ok":
            assert verdict[1:] == got[1:3]
            # the body ends on an object boundary, and the rest is at most one object
            assert got[4] <= len(case["data"])


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("case", [c for c in ENVELOPE_CASES if c["expected"][0] == "ok"],
                         ids=lambda c: c["why"][:50])
def test_every_prefix_is_truncated_and_trailing_data_refused(twin, case):
    data = case["data"]
    for cut in range(len(data)):
        got = outcome(twin, data[:cut])
        assert got[0] == "error" and "truncated" in got[1], (cut, got)
    for extra in (b"\x00", b"\xc0", b"\xc1", data):
        got = outcome(twin, data + extra)
        assert got[0] == "error" and "trailing" in got[1], got


@pytest.mark.parametrize("twin", TWINS)
def test_any_bytes_like_input(twin):
    data = b"\x93\xa4ping\x05\x92\x01\x02"
    expected = ("ping", 5, 7, 10)
    assert twin.peek_envelope(bytearray(data)) == expected
    assert twin.peek_envelope(memoryview(data)) == expected
    assert twin.peek_envelope(memoryview(b"xx" + data)[2:]) == expected
    with pytest.raises(TypeError):
        twin.peek_envelope("not bytes")
    with pytest.raises(TypeError):
        twin.peek_envelope(12)
    with pytest.raises(BufferError):
        twin.peek_envelope(memoryview(data + data)[::2])


@pytest.mark.parametrize("twin", TWINS)
def test_large_bodies(twin):
    for size in (1024, 50 * 1024, 1024 * 1024, 5 * 1024 * 1024):
        body = msgpack.packb(b"\x00" * size)
        envelope = twin.build_envelope("blob", size, body)
        assert twin.peek_envelope(envelope) == ("blob", size, len(envelope) - len(body), len(envelope))
        with pytest.raises(EnvelopeError):
            twin.peek_envelope(envelope[:-1])
    many = msgpack.packb([[i, {"k": -i}] for i in range(100_000)])
    envelope = twin.build_envelope("many", 1, many)
    assert twin.peek_envelope(envelope)[2] == len(envelope) - len(many)


@pytest.mark.parametrize("twin", TWINS)
def test_deep_nesting_does_not_recurse(twin):
    depth = 50_000  # far beyond any recursion limit
    for opener in (b"\x91", b"\x81\xc0", b"\xdc\x00\x01", b"\xdf\x00\x00\x00\x01\x01"):
        envelope = b"\x93\xa1k\x01" + opener * depth + b"\xc0"
        assert twin.peek_envelope(envelope) == ("k", 1, 4, len(envelope))
        with pytest.raises(EnvelopeError, match="truncated"):
            twin.peek_envelope(envelope[:-1])


def mutate(data, draw):
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0x93, 0xC1, 0xCA, 0xCC, 0xD0,
                                              0xD9, 0xDC, 0xDD, 0xDE, 0xDF, 0xFF]))
        elif how == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif how == "delete" and data:
            del data[pos]
        elif how == "cut":
            del data[pos:]
    return bytes(data)


@SETTINGS
@given(kind=kinds, seq=seqs, body=bodies, data=st.data())
def test_corrupted_envelopes_agree_with_msgpack_and_between_twins(kind, seq, body, data):
    envelope = mutate(pure_twin.build_envelope(kind, seq, msgpack.packb(body)), data.draw)
    verdict = msgpack_verdict(envelope)
    assume(verdict[0] in ("ok", "error"))
    pure = outcome(pure_twin, envelope)
    fast = outcome(fast_twin, envelope)
    event(f"peek: {pure[0]}")
    assert pure == fast
    assert pure[0] == verdict[0], (envelope, pure, verdict)
    if pure[0] == "ok":
        assert pure[1:3] == verdict[1:]
        # the body offset is an object boundary: the rest is exactly one object
        msgpack.unpackb(envelope[pure[3]:pure[4]], raw=True, strict_map_key=False,
                        object_pairs_hook=list, ext_hook=lambda code, payload: (code, payload))


@SETTINGS
@given(st.binary(max_size=64) | st.binary(max_size=12).map(lambda b: b"\x93" + b))
def test_random_bytes_agree_with_msgpack_and_between_twins(data):
    verdict = msgpack_verdict(data)
    assume(verdict[0] in ("ok", "error"))
    pure = outcome(pure_twin, data)
    assert pure == outcome(fast_twin, data)
    assert pure[0] == verdict[0]


@SETTINGS
@given(kind=kinds, seq=seqs, body=bodies, extra=bodies, data=st.data())
def test_corrupted_stamped_envelopes_agree_between_twins(kind, seq, body, extra, data):
    envelope = pure_twin.envelope_header(kind, seq, stamped=True) + msgpack.packb(body) + msgpack.packb(extra)
    envelope = mutate(envelope, data.draw)
    verdict = msgpack_verdict(envelope)
    assume(verdict[0] in ("ok", "error"))
    pure = outcome(pure_twin, envelope)
    assert pure == outcome(fast_twin, envelope)
    assert pure[0] == verdict[0], (envelope, pure, verdict)


def test_constants():
    assert pure_twin.MAX_KIND_BYTES == fast_twin.MAX_KIND_BYTES == 32
    assert pure_twin.MAX_SENDER_BYTES == fast_twin.MAX_SENDER_BYTES == 255


# -- walking a buffer of envelopes (long-poll bodies) -----------------------------------------

@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("case", ENVELOPE_CASES, ids=[c["why"][:50] for c in ENVELOPE_CASES])
def test_next_envelope_agrees_with_peek_on_the_corpus(twin, case):
    data = case["data"]
    expected = case["expected"]
    for prefix in (b"", b"\x93\xa1k\x00\xc0"):  # alone, and after a good envelope
        for suffix in (b"", b"\x93\xa1k\x00\xc0", b"\xc1"):  # then the next one (or garbage) follows
            buffer = prefix + data + suffix
            try:
                got = ("ok",) + twin.next_envelope(buffer, len(prefix))
            except EnvelopeError as exc:
                got = ("error", str(exc))
            if expected[0] == "ok":
                _, kind, seq, offset, body_end = expected
                assert got == ("ok", kind, seq, offset + len(prefix), body_end + len(prefix), len(prefix + data))
            elif "trailing" in expected[1]:
                assert got[0] == "ok" and got[5] < len(prefix + data)  # an envelope ends before the rest
            elif not suffix:
                assert got[0] == "error" and expected[1] in got[1], got


@pytest.mark.parametrize("twin", TWINS)
def test_next_envelope_walks_a_body_and_every_cut_of_it_is_truncated(twin):
    envelopes = [twin.build_envelope("chat", 0, msgpack.packb({"t": "x" * n})) for n in (0, 1, 40, 300)]
    envelopes.append(twin.build_envelope("pointer", 0, msgpack.packb([1, 2]), "forged"))
    body = b"".join(envelopes)
    starts, offset = [], 0
    while offset < len(body):
        starts.append(offset)
        offset = twin.next_envelope(body, offset)[4]
    assert offset == len(body)
    assert [body[a:b] for a, b in zip(starts, starts[1:] + [len(body)])] == envelopes
    last = starts[-1]
    for cut in range(last, len(body)):
        with pytest.raises(EnvelopeError, match="truncated"):
            twin.next_envelope(body[:cut], last)


@pytest.mark.parametrize("twin", TWINS)
def test_next_envelope_refuses_bad_offsets(twin):
    data = twin.build_envelope("k", 1, b"\xc0")
    for offset in (-1, len(data) + 1):
        with pytest.raises(LocalProtocolError):
            twin.next_envelope(data, offset)
    with pytest.raises(EnvelopeError, match="truncated"):
        twin.next_envelope(data, len(data))
    for offset in (1.0, "0", True):
        with pytest.raises(TypeError):
            twin.next_envelope(data, offset)


@SETTINGS
@given(st.binary(max_size=48), st.integers(0, 8))
def test_next_envelope_twins_agree_on_random_bytes(data, offset):
    def run(twin):
        try:
            return ("ok",) + twin.next_envelope(data, offset)
        except (EnvelopeError, LocalProtocolError) as exc:
            return (type(exc).__name__, str(exc))

    assert run(pure_twin) == run(fast_twin)
