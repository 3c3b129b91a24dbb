"""WebSocket frame codec (docs/fastpath.md section 1), both twins.

The two twins are imported directly and must agree (hypothesis differential tests); wsproto's
FrameProtocol is an independent oracle on valid streams; tests/corpus/frames.py holds the
checked-in bad inputs.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

import relay._accel as active
import relay._fastpath as fast_twin
import relay._purepath.frames as pure_twin
from relay._errors import LocalProtocolError, RemoteProtocolError
from helpers import load_corpus




CASES = load_corpus("frames").CASES

TWINS = [pytest.param(pure_twin, id="pure"), pytest.param(fast_twin, id="cython")]
MIB = 1024 * 1024
HYPOTHESIS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---------------------------------------------------------------- helpers


def run(twin, chunks, *, mode="feed", **decoder_args):
    """Feed ``chunks`` one by one; return the trace of events and of where an error came out."""
    decoder = twin.FrameDecoder(**decoder_args)
    trace = []
    for chunk in chunks:
        try:
            if mode == "feed":
                decoder.feed(chunk)
            elif mode == "payload":
                # Whatever part of the chunk belongs to a data frame's payload goes in place
                # (payload_buffer); the rest (headers, control frames) through feed.
                while chunk:
                    view = decoder.payload_buffer(1)
                    if view is None:
                        decoder.feed(chunk)
                        break
                    taken = min(len(view), len(chunk))
                    view[:taken] = chunk[:taken]
                    del view
                    decoder.payload_received(taken)
                    chunk = chunk[taken:]
            else:
                view = decoder.get_buffer()
                assert len(view) >= max(1, len(chunk))
                view[: len(chunk)] = chunk
                decoder.buffer_updated(len(chunk))
        except RemoteProtocolError as exc:
            trace.append(("raised by feed", exc.close_code))
            return trace
        while True:
            try:
                event = decoder.next_event()
            except RemoteProtocolError as exc:
                trace.append(("raised by next_event", exc.close_code))
                return trace
            if event is None:
                break
            assert type(event) is tuple and type(event[1]) is bytes
            trace.append(event)
    return trace


def outcome(trace):
    """(events, close code or None) of a trace, whatever call raised."""
    events = [item for item in trace if not isinstance(item[0], str)]
    errors = [item[1] for item in trace if isinstance(item[0], str)]
    return events, (errors[0] if errors else None)


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    pieces, start = [], 0
    for cut in cuts + [len(data)]:
        pieces.append(data[start:cut])
        start = cut
    return pieces


def byte_by_byte(data):
    return [data[i : i + 1] for i in range(len(data))]


def reference_unmask(data, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def wsproto_messages(data):
    """Events that wsproto's server-side frame decoder finds in ``data`` (valid streams only)."""
    protocol = FrameProtocol(client=False, extensions=[])
    protocol.receive_bytes(data)
    events, parts = [], []
    for frame in protocol.received_frames():
        if frame.opcode in (Opcode.PING, Opcode.PONG):
            events.append((int(frame.opcode), bytes(frame.payload)))
        elif frame.opcode is Opcode.CLOSE:
            code, reason = frame.payload
            # wsproto reports an empty close payload as 1005 (no status received)
            events.append((8, ("close", None if code == 1005 else int(code), reason)))
        else:
            if frame.opcode is not Opcode.CONTINUATION:
                message_opcode = int(frame.opcode)
            payload = frame.payload
            parts.append(payload.encode("utf-8") if isinstance(payload, str) else bytes(payload))
            if frame.message_finished:
                events.append((message_opcode, b"".join(parts)))
                parts = []
    return events


# ---------------------------------------------------------------- corpus


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte", "recv_into", "payload in place", "trailing garbage"])
@pytest.mark.parametrize("case", CASES, ids=[c["description"] for c in CASES])
def test_corpus(twin, mode, case):
    args = {}
    if "max_message_size" in case:
        args["max_message_size"] = case["max_message_size"]
    if "client_side" in case:
        args["client_side"] = case["client_side"]
    data = case["data"]
    if mode == "whole":
        trace = run(twin, [data], **args)
    elif mode == "byte-by-byte":
        trace = run(twin, byte_by_byte(data), **args)
    elif mode == "recv_into":
        trace = run(twin, split(data, [3, 17, 100, 70000]), mode="recv_into", **args)
    elif mode == "payload in place":
        trace = run(twin, split(data, [3, 9, 17, 100, 70000]), mode="payload", **args)
    else:
        # the start of a frame that never completes must not change anything before it
        trace = run(twin, [data + b"\x82"], **args)
    events, close_code = outcome(trace)
    assert events == case["events"]
    assert close_code == case["close_code"]


def test_corpus_cases_are_well_formed():
    assert len(CASES) >= 40
    for case in CASES:
        assert set(case) <= {"description", "data", "events", "close_code", "max_message_size",
                             "client_side"}
        assert isinstance(case["data"], bytes) and case["data"]
        assert case["close_code"] in (None, 1002, 1007, 1009)


# ---------------------------------------------------------------- incremental behaviour


@pytest.mark.parametrize("twin", TWINS)
def test_trailing_half_frame_then_rest(twin):
    first = twin.encode_client_frame(twin.OP_TEXT, b"first", mask_key=b"abcd")
    second = twin.encode_client_frame(twin.OP_BINARY, os.urandom(1000), mask_key=b"wxyz")
    half = len(second) // 2
    decoder = twin.FrameDecoder()
    decoder.feed(first + second[:half])
    assert decoder.next_event() == (twin.OP_TEXT, b"first")
    assert decoder.next_event() is None
    decoder.feed(second[half:])
    assert decoder.next_event() == (twin.OP_BINARY, reference_unmask(second[8:], b"wxyz"))
    assert decoder.next_event() is None


@pytest.mark.parametrize("twin", TWINS)
def test_header_split_at_every_position(twin):
    payload = bytes(range(256)) * 300
    frame = twin.encode_client_frame(twin.OP_BINARY, payload, mask_key=b"\x01\x02\x03\x04")
    for cut in range(0, 16):
        decoder = twin.FrameDecoder()
        decoder.feed(frame[:cut])
        assert decoder.next_event() is None
        decoder.feed(frame[cut:])
        assert decoder.next_event() == (twin.OP_BINARY, payload)


@pytest.mark.parametrize("twin", TWINS)
def test_feed_accepts_bytes_like_and_copies(twin):
    frame = bytearray(twin.encode_client_frame(twin.OP_BINARY, b"payload", mask_key=b"kkkk"))
    decoder = twin.FrameDecoder()
    decoder.feed(memoryview(frame)[:5])
    decoder.feed(frame[5:])
    frame[:] = b"\x00" * len(frame)  # the caller reuses its buffer
    assert decoder.next_event() == (twin.OP_BINARY, b"payload")
    with pytest.raises(TypeError):
        decoder.feed("not bytes")


@pytest.mark.parametrize("twin", TWINS)
def test_recv_into_path_large_message(twin):
    payload = os.urandom(MIB)
    frame = twin.encode_client_frame(twin.OP_BINARY, payload)
    decoder = twin.FrameDecoder()
    position, events = 0, []
    while position < len(frame):
        view = decoder.get_buffer()
        assert len(view) >= 1
        n = min(len(view), len(frame) - position)
        view[:n] = frame[position : position + n]
        position += n
        decoder.buffer_updated(n)
        while (event := decoder.next_event()) is not None:
            events.append(event)
    assert events == [(twin.OP_BINARY, payload)]


@pytest.mark.parametrize("twin", TWINS)
def test_buffer_updated_rejects_more_than_the_view(twin):
    decoder = twin.FrameDecoder()
    view = decoder.get_buffer()
    with pytest.raises(ValueError):
        decoder.buffer_updated(len(view) + 1)
    with pytest.raises(ValueError):
        decoder.buffer_updated(-1)


@pytest.mark.parametrize("twin", TWINS)
def test_many_small_frames_in_one_feed(twin):
    payloads = [os.urandom(random.randrange(0, 2000)) for _ in range(200)]
    stream = b"".join(twin.encode_client_frame(twin.OP_BINARY, p) for p in payloads)
    assert outcome(run(twin, [stream])) == ([(2, p) for p in payloads], None)


# ---------------------------------------------------------------- limits and errors


@pytest.mark.parametrize("twin", TWINS)
def test_1009_from_the_header_before_any_payload(twin):
    header = bytearray(twin.frame_header(twin.OP_BINARY, 20 * MIB))
    header[1] |= 0x80
    decoder = twin.FrameDecoder(max_message_size=16 * MIB)
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.feed(bytes(header) + b"mask")
    assert caught.value.close_code == 1009
    # even before the mask key: the length is enough
    decoder = twin.FrameDecoder(max_message_size=16 * MIB)
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.feed(bytes(header))
    assert caught.value.close_code == 1009


@pytest.mark.parametrize("twin", TWINS)
def test_1009_on_the_fragment_that_overflows(twin):
    decoder = twin.FrameDecoder(max_message_size=16 * MIB)
    first = twin.encode_client_frame(twin.OP_BINARY, b"x" * (10 * MIB), fin=False)
    decoder.feed(first)
    assert decoder.next_event() is None
    second = bytearray(twin.frame_header(twin.OP_CONTINUATION, 6 * MIB + 1))
    second[1] |= 0x80
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.feed(bytes(second))
    assert caught.value.close_code == 1009


@pytest.mark.parametrize("twin", TWINS)
def test_message_of_exactly_the_limit_passes(twin):
    payload = os.urandom(1000)
    decoder = twin.FrameDecoder(max_message_size=1000)
    decoder.feed(twin.encode_client_frame(twin.OP_BINARY, payload))
    assert decoder.next_event() == (twin.OP_BINARY, payload)


@pytest.mark.parametrize("twin", TWINS)
def test_dead_decoder_keeps_raising(twin):
    decoder = twin.FrameDecoder()
    bad = bytes((0xC1, 0x80)) + b"mask"  # RSV1
    with pytest.raises(RemoteProtocolError) as first:
        decoder.feed(bad)
    assert first.value.close_code == 1002
    good = twin.encode_client_frame(twin.OP_TEXT, b"fine")
    for call in (
        lambda: decoder.feed(good),
        decoder.next_event,
        decoder.get_buffer,
        lambda: decoder.buffer_updated(0),
        decoder.next_event,
        lambda: decoder.feed(b""),
    ):
        with pytest.raises(RemoteProtocolError) as again:
            call()
        assert type(again.value) is RemoteProtocolError
        assert again.value.close_code == 1002


@pytest.mark.parametrize("twin", TWINS)
def test_queued_events_come_before_the_error(twin):
    decoder = twin.FrameDecoder()
    decoder.feed(twin.encode_client_frame(twin.OP_TEXT, b"a") + b"\x83\x80mask")
    assert decoder.next_event() == (twin.OP_TEXT, b"a")
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as caught:
            decoder.next_event()
        assert caught.value.close_code == 1002
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"")


@pytest.mark.parametrize("twin", TWINS)
def test_invalid_utf8_fails_mid_frame(twin):
    header = bytearray(twin.frame_header(twin.OP_TEXT, 1000))
    header[1] |= 0x80
    key = b"\x00\x00\x00\x00"
    for bad_start in (b"ok\xc0", b"\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xff", b"\xf0\x80"):
        decoder = twin.FrameDecoder()
        with pytest.raises(RemoteProtocolError) as caught:
            decoder.feed(bytes(header) + key + bad_start)
        assert caught.value.close_code == 1007, bad_start
    decoder = twin.FrameDecoder()
    decoder.feed(bytes(header) + key + "€".encode()[:2])  # a valid prefix: keep waiting
    assert decoder.next_event() is None


def utf8_prefix_is_valid(data: bytes) -> bool:
    """Can ``data`` be extended into valid UTF-8?  Oracle: CPython's strict, whole decoder."""
    tails = [b""] + [bytes(t) for t in _CONTINUATION_TAILS]
    for tail in tails:
        try:
            (data + tail).decode("utf-8")
            return True
        except UnicodeDecodeError:
            pass
    return False


_CONTINUATION_CHOICES = (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF)
_CONTINUATION_TAILS = [(a,) for a in _CONTINUATION_CHOICES] + [
    (a, b) for a in _CONTINUATION_CHOICES for b in (0x80,)
] + [(a, 0x80, 0x80) for a in _CONTINUATION_CHOICES]


@pytest.mark.parametrize("twin", TWINS)
def test_utf8_every_two_byte_prefix_and_lead_continuation_pairs(twin):
    samples = [bytes((a, b)) for a in range(0x80, 0x100) for b in range(0x100)]
    samples += [bytes((a, b, c)) for a in (0xE0, 0xED, 0xF0, 0xF4, 0xF1) for b in
                (0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0) for c in (0x41, 0x80, 0xBF, 0xC0)]
    for sample in samples:
        frame = twin.encode_client_frame(twin.OP_TEXT, sample, fin=False, mask_key=b"\x5a\xa5\x0f\xf0")
        events, close_code = outcome(run(twin, [frame]))
        expected = None if utf8_prefix_is_valid(sample) else 1007
        assert (events, close_code) == ([], expected), sample


# ---------------------------------------------------------------- close codes


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_codes(twin, code):
    payload = twin.close_payload(code, "reason ✓")
    assert payload == code.to_bytes(2, "big") + "reason ✓".encode()
    assert twin.parse_close_payload(payload) == (code, "reason ✓")
    decoder = twin.FrameDecoder()
    decoder.feed(twin.encode_client_frame(twin.OP_CLOSE, payload))
    assert decoder.next_event() == (twin.OP_CLOSE, payload)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_codes(twin, code):
    with pytest.raises(LocalProtocolError):
        twin.close_payload(code)
    payload = code.to_bytes(2, "big") + b"x"
    with pytest.raises(RemoteProtocolError) as caught:
        twin.parse_close_payload(payload)
    assert caught.value.close_code == 1002
    decoder = twin.FrameDecoder()
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.feed(twin.encode_client_frame(twin.OP_CLOSE, payload))
    assert caught.value.close_code == 1002


@pytest.mark.parametrize("twin", TWINS)
def test_close_payload_rules(twin):
    assert twin.close_payload() == b""
    assert twin.parse_close_payload(b"") == (None, "")
    assert twin.close_payload(1000, "é" * 61 + "x") == b"\x03\xe8" + ("é" * 61 + "x").encode()
    with pytest.raises(LocalProtocolError):
        twin.close_payload(1000, "x" * 124)
    with pytest.raises(LocalProtocolError):
        twin.close_payload(None, "reason without code")
    with pytest.raises(RemoteProtocolError) as caught:
        twin.parse_close_payload(b"\x03")
    assert caught.value.close_code == 1002
    with pytest.raises(RemoteProtocolError) as caught:
        twin.parse_close_payload(b"\x03\xe8\xc3")
    assert caught.value.close_code == 1007


# ---------------------------------------------------------------- encoder


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(
    "length, expected",
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**63 - 1, b"\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ],
)
def test_frame_header_minimal_lengths(twin, length, expected):
    assert twin.frame_header(twin.OP_BINARY, length) == expected


@pytest.mark.parametrize("twin", TWINS)
def test_frame_header_errors(twin):
    assert twin.frame_header(twin.OP_TEXT, 3, fin=False) == b"\x01\x03"
    assert twin.frame_header(twin.OP_PING, 125) == b"\x89\x7d"
    for args in [(3, 0), (11, 0), (16, 0), (-1, 0), (twin.OP_TEXT, -1), (twin.OP_PING, 126),
                 (twin.OP_TEXT, 2**63)]:
        with pytest.raises(LocalProtocolError):
            twin.frame_header(*args)
    with pytest.raises(LocalProtocolError):
        twin.frame_header(twin.OP_CLOSE, 2, fin=False)
    with pytest.raises(LocalProtocolError):
        twin.encode_frame(twin.OP_PONG, b"x" * 126)
    with pytest.raises(LocalProtocolError):
        twin.encode_client_frame(twin.OP_PING, b"x", fin=False)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_encode_frame_read_by_wsproto_client(twin, size):
    payload = os.urandom(size)
    frame = twin.encode_frame(twin.OP_BINARY, bytearray(payload))
    assert type(frame) is bytes
    assert frame == twin.frame_header(twin.OP_BINARY, size) + payload
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(frame)
    frames = list(protocol.received_frames())
    assert b"".join(bytes(f.payload) for f in frames) == payload
    assert frames[-1].message_finished


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("size", [0, 5, 125, 126, 65536])
def test_encode_client_frame_read_by_wsproto_server(twin, size):
    payload = os.urandom(size)
    key = os.urandom(4)
    frame = twin.encode_client_frame(twin.OP_BINARY, payload, mask_key=key)
    header = twin.frame_header(twin.OP_BINARY, size)
    assert frame == bytes((header[0], header[1] | 0x80)) + header[2:] + key + reference_unmask(payload, key)
    assert wsproto_messages(frame) == [(2, payload)]
    random_keyed = twin.encode_client_frame(twin.OP_BINARY, payload)
    assert wsproto_messages(random_keyed) == [(2, payload)]
    with pytest.raises(ValueError):
        twin.encode_client_frame(twin.OP_BINARY, payload, mask_key=b"abc")


@pytest.mark.parametrize("twin", TWINS)
@given(data=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
@HYPOTHESIS
def test_unmask_matches_reference(twin, data, key):
    assert twin.unmask(data, key) == reference_unmask(data, key)
    assert twin.unmask(bytearray(data), memoryview(key)) == reference_unmask(data, key)


@pytest.mark.parametrize("twin", TWINS)
def test_unmask_large_and_odd_sizes(twin):
    for size in (MIB + 3, 1031, 4099):
        data = os.urandom(size)
        assert twin.unmask(data, b"\x12\x34\x56\x78") == reference_unmask(data, b"\x12\x34\x56\x78")
    with pytest.raises(ValueError):
        twin.unmask(b"abc", b"12345")


# ---------------------------------------------------------------- valid streams vs wsproto

SAFE_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999]


@st.composite
def valid_streams(draw):
    """Messages (text/binary, fragmented at random) with control frames between fragments."""
    frames, expected = [], []
    for _ in range(draw(st.integers(1, 5))):
        opcode = draw(st.sampled_from([1, 2]))
        if opcode == 1:
            payload = draw(st.text(max_size=200)).encode("utf-8")
        else:
            payload = draw(st.binary(max_size=300))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        pieces = split(payload, cuts)
        for index, piece in enumerate(pieces):
            frame_opcode = opcode if index == 0 else 0
            fin = index == len(pieces) - 1
            frames.append((frame_opcode, piece, fin))
            if draw(st.integers(0, 3)) == 0:
                frames.append((draw(st.sampled_from([9, 10])), draw(st.binary(max_size=125)), True))
    if draw(st.booleans()):
        # wsproto (rightly) reads nothing after a close frame, so a close only ends a stream
        reason = draw(st.text(max_size=20)).encode()
        while len(reason) > 123:
            reason = reason[:-1]
        body = draw(st.sampled_from([b""] + [c.to_bytes(2, "big") for c in SAFE_CLOSE_CODES]))
        frames.append((8, body + reason if body else b"", True))
    keys = draw(st.lists(st.binary(min_size=4, max_size=4), min_size=len(frames),
                         max_size=len(frames)))
    return frames, keys


def build(twin, frames, keys):
    return b"".join(twin.encode_client_frame(op, payload, mask_key=key, fin=fin)
                    for (op, payload, fin), key in zip(frames, keys))


def normalize_close(events, twin):
    return [(op, ("close",) + twin.parse_close_payload(p)) if op == 8 else (op, p)
            for op, p in events]


@given(stream=valid_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
@HYPOTHESIS
def test_valid_streams_agree_with_wsproto(stream, cuts):
    frames, keys = stream
    data = build(pure_twin, frames, keys)
    assert build(fast_twin, frames, keys) == data
    oracle = wsproto_messages(data)
    for twin in (pure_twin, fast_twin):
        for chunks, mode in ((split(data, cuts), "feed"), ([data], "feed"),
                             (split(data, cuts), "recv_into")):
            events, close_code = outcome(run(twin, chunks, mode=mode))
            assert close_code is None
            assert normalize_close(events, twin) == oracle


@given(stream=valid_streams())
@settings(max_examples=40, deadline=None)
def test_valid_streams_byte_by_byte(stream):
    frames, keys = stream
    data = build(pure_twin, frames, keys)
    whole = run(fast_twin, [data])
    assert run(fast_twin, byte_by_byte(data)) == whole
    assert run(pure_twin, byte_by_byte(data)) == whole


# ---------------------------------------------------------------- adversarial differential


@st.composite
def adversarial_frames(draw):
    """One frame whose header fields and payload are drawn with a bias towards the edges."""
    first = draw(st.one_of(
        st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A]),
        st.integers(0, 255),
    ))
    masked = draw(st.sampled_from([True, True, True, False]))
    encoding = draw(st.sampled_from(["7", "7", "16", "64"]))
    payload = draw(st.one_of(
        st.binary(max_size=140),
        st.text(max_size=60).map(lambda s: s.encode()),
        st.sampled_from([b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82",
                         b"\x03\xe8", b"\x03\xed", b"\x03", b"\x0b\xb8ok", b"\x03\xe8\xff"]),
    ))
    if encoding == "7":
        declared = len(payload) if len(payload) < 126 else 125
        length_bytes = bytes((declared,))
    elif encoding == "16":
        declared = draw(st.one_of(st.integers(0, 300), st.integers(120, 130), st.just(len(payload))))
        length_bytes = b"\x7e" + declared.to_bytes(2, "big")
    else:
        declared = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(65530, 70000),
                                  st.just(len(payload))))
        length_bytes = b"\x7f" + declared.to_bytes(8, "big")
    if masked:
        length_bytes = bytes((length_bytes[0] | 0x80,)) + length_bytes[1:]
    key = draw(st.binary(min_size=4, max_size=4)) if masked else b""
    body = reference_unmask(payload, key) if masked else payload
    return bytes((first,)) + length_bytes + key + body[: min(len(body), declared)]


@given(
    frames=st.lists(adversarial_frames(), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    max_message_size=st.sampled_from([0, 5, 100, 200, 70_000, 16 * MIB]),
    client_side=st.sampled_from([False, False, False, True]),
    mode=st.sampled_from(["feed", "recv_into", "payload"]),
)
@HYPOTHESIS
def test_twins_agree_on_adversarial_streams(frames, cuts, max_message_size, client_side, mode):
    data = b"".join(frames)
    args = dict(max_message_size=max_message_size, client_side=client_side)
    pure = run(pure_twin, split(data, cuts), mode=mode, **args)
    fast = run(fast_twin, split(data, cuts), mode=mode, **args)
    assert pure == fast
    # however the bytes are split, the events and the close code are the same
    assert outcome(run(fast_twin, [data], **args)) == outcome(fast)


@given(data=st.binary(max_size=64), client_side=st.booleans())
@HYPOTHESIS
def test_twins_agree_on_random_bytes(data, client_side):
    for chunks in ([data], byte_by_byte(data)):
        assert run(pure_twin, chunks, client_side=client_side) == run(
            fast_twin, chunks, client_side=client_side
        )


@given(
    opcode=st.integers(-2, 17),
    length=st.one_of(st.integers(-3, 70000), st.integers(2**63 - 2, 2**63 + 1)),
    fin=st.booleans(),
    reason=st.text(max_size=130),
    code=st.one_of(st.none(), st.integers(-1, 70000)),
)
@HYPOTHESIS
def test_twins_agree_on_encoder_arguments(opcode, length, fin, reason, code):
    def attempt(function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (LocalProtocolError, ValueError, OverflowError, UnicodeEncodeError) as exc:
            return type(exc)

    for name, args in (("frame_header", (opcode, length, fin)),
                       ("close_payload", (code, reason))):
        assert attempt(getattr(pure_twin, name), *args) == attempt(getattr(fast_twin, name), *args)
    small = max(0, min(length, 200))
    payload = bytes(small)
    assert attempt(pure_twin.encode_frame, opcode, payload, fin) == attempt(
        fast_twin.encode_frame, opcode, payload, fin)
    assert attempt(pure_twin.encode_client_frame, opcode, payload, b"abcd", fin) == attempt(
        fast_twin.encode_client_frame, opcode, payload, b"abcd", fin)


def test_twins_export_the_same_frame_names():
    names = ["DEFAULT_MAX_MESSAGE_BYTES", "MAX_CONTROL_PAYLOAD", "OP_BINARY", "OP_CLOSE",
             "OP_CONTINUATION", "OP_PING", "OP_PONG", "OP_TEXT", "FrameDecoder", "close_payload",
             "encode_client_frame", "encode_frame", "frame_header", "parse_close_payload", "unmask"]
    for name in names:
        assert hasattr(pure_twin, name) and hasattr(fast_twin, name), name
        if not callable(getattr(pure_twin, name)):
            assert getattr(pure_twin, name) == getattr(fast_twin, name), name
    assert pure_twin.DEFAULT_MAX_MESSAGE_BYTES == 16 * MIB
    assert pure_twin.MAX_CONTROL_PAYLOAD == 125


def test_active_implementation_decodes_frames():
    decoder = active.FrameDecoder(max_message_size=10)
    decoder.feed(active.encode_client_frame(active.OP_TEXT, "ünï".encode(), fin=False)
                 + active.encode_client_frame(active.OP_PING, b"?")
                 + active.encode_client_frame(active.OP_CONTINUATION, b"code"))
    assert decoder.next_event() == (active.OP_PING, b"?")
    assert decoder.next_event() == (active.OP_TEXT, "ünïcode".encode())
    assert decoder.next_event() is None
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.feed(active.encode_client_frame(active.OP_BINARY, b"x" * 11))
    assert caught.value.close_code == 1009


@pytest.mark.parametrize("twin", TWINS)
def test_payload_buffer_receives_a_large_message_in_place(twin):
    payload = bytes(range(256)) * 4096  # 1 MiB
    frame = twin.encode_client_frame(twin.OP_BINARY, payload, b"\x01\x02\x03\x04")
    decoder = twin.FrameDecoder()
    assert decoder.payload_buffer() is None  # no frame started
    decoder.feed(frame[:14 + 1000])
    view = decoder.payload_buffer()
    assert len(view) == len(payload) - 1000
    assert decoder.payload_buffer(len(view) + 1) is None  # less than asked for is left
    view = decoder.payload_buffer()
    view[:] = frame[14 + 1000:]
    decoder.payload_received(len(view))
    assert decoder.next_event() == (twin.OP_BINARY, payload)
    assert decoder.payload_buffer(1) is None


@pytest.mark.parametrize("twin", TWINS)
def test_payload_received_checks_its_argument_and_the_view_lifetime(twin):
    frame = twin.encode_client_frame(twin.OP_BINARY, b"x" * 200_000, b"abcd")
    decoder = twin.FrameDecoder()
    decoder.feed(frame[:100])
    view = decoder.payload_buffer()
    with pytest.raises(ValueError):
        decoder.payload_received(len(view) + 1)
    view = decoder.payload_buffer()
    decoder.feed(b"")  # any other call ends the view's validity
    with pytest.raises(ValueError):
        decoder.payload_received(1)
    decoder.payload_received(0)


@pytest.mark.parametrize("twin", TWINS)
def test_payload_in_place_fails_fast_on_bad_utf8_and_size(twin):
    text = "é".encode() * 40_000
    bad = text[:1000] + b"\xff" + text[1001:]
    frame = twin.encode_client_frame(twin.OP_TEXT, bad, b"abcd")
    decoder = twin.FrameDecoder()
    decoder.feed(frame[:14])
    view = decoder.payload_buffer()
    view[:2000] = frame[14:2014]
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.payload_received(2000)
    assert caught.value.close_code == 1007
    with pytest.raises(RemoteProtocolError):
        decoder.payload_buffer()
