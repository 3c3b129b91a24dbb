"""The timing stamp inside every timed message's body, and the message templates that carry it.

Every timed message is the envelope ``[kind, 0, body]`` for every server, whose body is the msgpack
array ``[stamp, filler]``: ``stamp`` a 12-byte bin (send time from ``perf_counter_ns``, message
index), ``filler`` a bin that brings the envelope to the wanted size.  So the stamp always sits
``BODY_PREFIX`` bytes into the body, whatever the size, and finding it needs nothing but where the
body starts (``peek_envelope``, or msgpack's ``Unpacker`` on a message's first bytes).
"""

from __future__ import annotations

import struct

import msgpack

from benchmarks.loadgen.wire import peek_envelope

STAMP = struct.Struct("<qI")  # time (perf_counter_ns), message index
#: A body starts with these bytes when it carries a stamp: fixarray of 2, then bin 8 of STAMP.size.
BODY_PREFIX = msgpack.packb([b"x" * STAMP.size, b""])[:3]
SNAPSHOT_KIND = "snapshot"
MUTATION_KIND = "mutation"


def make_template(size: int, kind: str = MUTATION_KIND) -> tuple[bytearray, int]:
    """An envelope of ``size`` bytes in all (or the smallest possible) and the offset of its stamp."""
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_array_header(3) + packer.pack(kind) + packer.pack(0)
    filler = 0
    for _ in range(3):  # the filler's bin header depends on its length: converge on ``size``
        body = BODY_PREFIX + bytes(STAMP.size) + packer.pack(bytes(filler))
        filler = max(0, filler + size - len(head) - len(body))
    body = BODY_PREFIX + bytes(STAMP.size) + packer.pack(bytes(filler))
    envelope = bytearray(head + body)
    _kind, _seq, offset, end = peek_envelope(bytes(envelope))
    assert (offset, end) == (len(head), len(envelope)), "the template is not one envelope"
    return envelope, offset + len(BODY_PREFIX)


class MaskedStamp:
    """Writes a stamp into an already masked client frame, masked as it would have been."""

    def __init__(self, mask: bytes, payload_start: int, stamp_offset: int) -> None:
        self.start = payload_start + stamp_offset  # where the stamp lies in the frame
        # The mask key bytes that fall on the stamp (RFC 6455: payload byte i ^ key[i % 4]).
        key = bytes(mask[(stamp_offset + i) % 4] for i in range(STAMP.size))
        self.key = int.from_bytes(key, "little")

    def write(self, frame: bytearray, time_ns: int, index: int) -> None:
        plain = int.from_bytes(STAMP.pack(time_ns, index), "little")
        frame[self.start:self.start + STAMP.size] = (plain ^ self.key).to_bytes(STAMP.size, "little")


def _at(data, body_offset: int, kind: str) -> tuple | None:
    start = body_offset + len(BODY_PREFIX)
    if data[body_offset:start] != BODY_PREFIX or len(data) < start + STAMP.size:
        return None
    sent, index = STAMP.unpack_from(data, start)
    return kind, sent, index


def read_stamp(payload) -> tuple | None:
    """(kind, time_ns, index) of a timed message, or None for anything else (hello, presence...)."""
    try:
        kind, _seq, offset, _end = peek_envelope(payload)
    except Exception:  # not an envelope at all: not ours
        return None
    return _at(payload, offset, kind)


def stamp_from_head(head) -> tuple | None:
    """The same from a message's first bytes only (``SkimReader`` keeps no more)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(head)
    try:
        if unpacker.read_array_header() not in (3, 4):
            return None
        kind = unpacker.unpack()
        unpacker.skip()  # seq
        offset = unpacker.tell()
    except (msgpack.OutOfData, ValueError, TypeError):
        return None
    return _at(head, offset, kind) if isinstance(kind, str) else None
