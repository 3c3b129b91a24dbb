"""benchmarks/loadgen/stamp.py: the timing stamp survives the relay's stamping of the envelope."""

from __future__ import annotations

import os

import pytest

from relay._accel import OP_BINARY, FrameDecoder, encode_client_frame, envelope_frame_header, peek_envelope, sender_tail
from benchmarks.loadgen.stamp import STAMP, MaskedStamp, make_template, read_stamp, stamp_from_head


@pytest.mark.parametrize("size", [64, 1024, 65535, 65536, 5 * 2**20])
def test_templates_have_the_size_asked_and_carry_the_stamp(size):
    template, offset = make_template(size)
    assert len(template) == size
    STAMP.pack_into(template, offset, 123456789, 42)
    assert read_stamp(bytes(template)) == ("mutation", 123456789, 42)
    assert stamp_from_head(bytes(template[:64])) == ("mutation", 123456789, 42)


def test_the_stamp_is_found_in_an_envelope_as_the_relay_delivers_it():
    template, offset = make_template(4096, "pointer")
    STAMP.pack_into(template, offset, 7, 9)
    _kind, _seq, body_offset, body_end = peek_envelope(bytes(template))
    body = bytes(template[body_offset:body_end])
    tail = sender_tail("slave-3")
    frame = envelope_frame_header("pointer", 2**40, len(body), tail) + body + tail
    decoder = FrameDecoder(1 << 20, client_side=True)
    decoder.feed(frame)
    opcode, payload = decoder.next_event()
    assert opcode == OP_BINARY
    assert read_stamp(payload) == ("pointer", 7, 9)
    assert stamp_from_head(bytes(payload[:64])) == ("pointer", 7, 9)


def test_other_messages_carry_no_stamp():
    import msgpack
    hello = msgpack.packb(["hello", 0, msgpack.packb({"slave": "s1"}), ""])
    assert read_stamp(hello) is None and stamp_from_head(hello[:64]) is None
    assert read_stamp(b"not msgpack") is None and stamp_from_head(b"\x93") is None


def test_a_masked_stamp_patch_equals_masking_the_stamped_message():
    mask = os.urandom(4)
    template, offset = make_template(70_000)
    frame = bytearray(encode_client_frame(OP_BINARY, template, mask))
    MaskedStamp(mask, len(frame) - len(template), offset).write(frame, 555, 17)
    STAMP.pack_into(template, offset, 555, 17)
    assert frame == encode_client_frame(OP_BINARY, template, mask)
