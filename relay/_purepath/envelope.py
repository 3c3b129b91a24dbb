"""Envelope framing, pure-Python twin of relay/_fp_envelope.pxi (see docs/fastpath.md, section 2).

A client sends the msgpack array ``[kind, seq, body]`` (a fourth element is allowed and ignored);
the relay delivers ``[kind, seq, body, sender]``, ``sender`` being its own stamp of who sent it.
The relay reads ``kind`` and ``seq`` and forwards ``body`` untouched, so the body (and a client's
fourth element) is only walked to prove it is one well-formed msgpack object: lengths and counts
are read, nothing is decoded, nothing is built, nothing recurses (a hostile body nested a million
deep costs a counter, not a Python stack).
"""

from __future__ import annotations

from relay._errors import EnvelopeError, LocalProtocolError

__all__ = [
    "MAX_KIND_BYTES",
    "MAX_SENDER_BYTES",
    "build_envelope",
    "envelope_frame_header",
    "envelope_header",
    "next_envelope",
    "peek_envelope",
    "sender_tail",
]

MAX_KIND_BYTES = 32
MAX_SENDER_BYTES = 255  # a str8 at most: "master", a slave id, or "" for the relay itself
MAX_SEQ = 2**64 - 1

# The longest unmasked frame payload length RFC 6455 can express (the 64-bit field's top bit is 0).
_MAX_FRAME_PAYLOAD_BYTES = 2**63 - 1
_FIN_BINARY = 0x82
_FRAME_LENGTH_16 = 126
_FRAME_LENGTH_64 = 127

_FIXARRAY_3 = 0x93
_FIXARRAY_4 = 0x94
_FIXSTR_MAX_BYTES = 31
_STR8 = 0xD9
_UINT8, _UINT16, _UINT32, _UINT64 = 0xCC, 0xCD, 0xCE, 0xCF
_RESERVED = 0xC1

# Payload sizes of the fixed-width markers: nil, false, true, float32/64, (u)int8..64.
_FIXED_WIDTH = {
    0xC0: 0, 0xC2: 0, 0xC3: 0,
    0xCA: 4, 0xCB: 8,
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
    # fixext 1/2/4/8/16: one type byte plus the data.
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}
# Length-prefixed markers: width of the big-endian length field.  str8/16/32, bin8/16/32.
_SIZED = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}
# ext8/16/32: the length field is followed by a type byte that the length does not count.
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
# array16/32, map16/32: width of the count field and how many objects each entry holds.
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _encode_kind(kind) -> bytes:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be str, not {type(kind).__name__}")
    try:
        encoded = kind.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("envelope kind is not encodable as UTF-8") from None
    if not 1 <= len(encoded) <= MAX_KIND_BYTES:
        raise LocalProtocolError(
            f"envelope kind must be 1 to {MAX_KIND_BYTES} UTF-8 bytes, got {len(encoded)}"
        )
    return encoded


def _encode_seq(seq) -> bytes:
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise TypeError(f"seq must be int, not {type(seq).__name__}")
    if seq < 0 or seq > MAX_SEQ:
        raise LocalProtocolError(f"envelope seq {seq} is outside 0..2**64-1")
    if seq < 0x80:
        return bytes((seq,))
    if seq <= 0xFF:
        return bytes((_UINT8, seq))
    if seq <= 0xFFFF:
        return bytes((_UINT16,)) + seq.to_bytes(2, "big")
    if seq <= 0xFFFFFFFF:
        return bytes((_UINT32,)) + seq.to_bytes(4, "big")
    return bytes((_UINT64,)) + seq.to_bytes(8, "big")


def envelope_header(kind: str, seq: int, *, stamped: bool = False) -> bytes:
    """The bytes that precede the body: ``0x93`` (``0x94`` when ``stamped``: a sender follows the
    body), ``kind`` as fixstr/str8, ``seq`` as the smallest msgpack unsigned int.
    ``LocalProtocolError`` for an empty or too long kind or a seq outside 0..2**64-1."""
    encoded = _encode_kind(kind)
    array = _FIXARRAY_4 if stamped else _FIXARRAY_3
    if len(encoded) <= _FIXSTR_MAX_BYTES:
        kind_header = bytes((array, 0xA0 | len(encoded)))
    else:
        kind_header = bytes((array, _STR8, len(encoded)))
    return kind_header + encoded + _encode_seq(seq)


def sender_tail(sender: str) -> bytes:
    """The last element of a delivered envelope: ``sender`` as a msgpack str (fixstr or str8).

    Built once per participant and sent after every body it sends.  ``LocalProtocolError`` past
    MAX_SENDER_BYTES UTF-8 bytes or for text that is not encodable."""
    if not isinstance(sender, str):
        raise TypeError(f"sender must be str, not {type(sender).__name__}")
    try:
        encoded = sender.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("sender is not encodable as UTF-8") from None
    if len(encoded) > MAX_SENDER_BYTES:
        raise LocalProtocolError(f"sender must be at most {MAX_SENDER_BYTES} UTF-8 bytes, got {len(encoded)}")
    if len(encoded) <= _FIXSTR_MAX_BYTES:
        return bytes((0xA0 | len(encoded),)) + encoded
    return bytes((_STR8, len(encoded))) + encoded


def build_envelope(kind: str, seq: int, body, sender=None) -> bytes:
    """``envelope_header(kind, seq) + body``, or with ``sender`` (a str) the stamped form
    ``[kind, seq, body, sender]``; ``body`` is one packed msgpack object, trusted."""
    if sender is None:
        return envelope_header(kind, seq) + bytes(body)
    tail = sender_tail(sender)
    return envelope_header(kind, seq, stamped=True) + bytes(body) + tail


def envelope_frame_header(kind: str, seq: int, body_length: int, sender_tail) -> bytes:
    """The unmasked FIN binary WebSocket frame header of a stamped envelope, then its header.

    Send it, the body and ``sender_tail`` back to back (``sendmsg([header, body, tail])``): the
    body is never copied.  The frame's length counts all three.
    """
    if not isinstance(body_length, int) or isinstance(body_length, bool):
        raise TypeError(f"body_length must be int, not {type(body_length).__name__}")
    if body_length < 0:
        raise LocalProtocolError(f"negative body length {body_length}")
    tail_length = len(_byte_view(sender_tail))
    if tail_length == 0:
        raise LocalProtocolError("a stamped envelope needs a sender (an empty str packs as 0xa0)")
    header = envelope_header(kind, seq, stamped=True)
    payload_length = len(header) + body_length + tail_length
    if payload_length > _MAX_FRAME_PAYLOAD_BYTES:
        raise LocalProtocolError(f"frame payload of {payload_length} bytes is too long")
    if payload_length < _FRAME_LENGTH_16:
        frame = bytes((_FIN_BINARY, payload_length))
    elif payload_length <= 0xFFFF:
        frame = bytes((_FIN_BINARY, _FRAME_LENGTH_16)) + payload_length.to_bytes(2, "big")
    else:
        frame = bytes((_FIN_BINARY, _FRAME_LENGTH_64)) + payload_length.to_bytes(8, "big")
    return frame + header


def _byte_view(data):
    """Index-able bytes of ``data`` without copying; the same refusals as PyBUF_SIMPLE."""
    if isinstance(data, bytes):
        return data
    view = memoryview(data)  # TypeError for anything that is not bytes-like, as in the Cython twin
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _uint(data, start: int, width: int) -> int:
    return int.from_bytes(data[start : start + width], "big")


def peek_envelope(data) -> tuple[str, int, int, int]:
    """Check that ``data`` is exactly one envelope, ``[kind, seq, body]`` or
    ``[kind, seq, body, extra]``; return ``(kind, seq, body_offset, body_end)``, where
    ``data[body_offset:body_end]`` is the body (``body_end == len(data)`` for three elements).

    A fourth element must be one well-formed msgpack object too; the relay ignores a client's and
    reads its own stamp from it on the client side.  Nothing of the body is copied or decoded, so
    no view into ``data`` outlives this call.  Raises ``EnvelopeError`` (close code 1007) naming
    the fault.
    """
    data = _byte_view(data)
    kind, seq, pos, body_end, last = _peek_at(data, 0)
    if last != len(data):
        raise EnvelopeError(f"trailing bytes after the envelope: {len(data) - last}")
    return kind, seq, pos, body_end


def next_envelope(data, offset: int) -> tuple[str, int, int, int, int]:
    """The envelope that starts at ``data[offset]`` in a buffer of envelopes back to back (a
    long-poll body): ``(kind, seq, body_offset, body_end, end)``, offsets into ``data``, ``end``
    where the next envelope starts.  The same checks as ``peek_envelope`` but for trailing bytes;
    ``EnvelopeError`` (1007) naming the fault, "truncated" when the buffer ends inside it."""
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise TypeError(f"offset must be int, not {type(offset).__name__}")
    data = _byte_view(data)
    if offset < 0 or offset > len(data):
        raise LocalProtocolError(f"offset {offset} is outside the buffer of {len(data)} bytes")
    return _peek_at(data, offset)


def _peek_at(data, start: int) -> tuple[str, int, int, int, int]:
    end = len(data)
    if start >= end:
        raise EnvelopeError("truncated envelope: empty message")
    marker = data[start]
    if marker == _FIXARRAY_3 or marker == _FIXARRAY_4:
        count, pos = marker & 0x0F, start + 1
    elif marker == 0xDC and end - start >= 3 and _uint(data, start + 1, 2) in (3, 4):
        count, pos = _uint(data, start + 1, 2), start + 3
    elif marker == 0xDD and end - start >= 5 and _uint(data, start + 1, 4) in (3, 4):
        count, pos = _uint(data, start + 1, 4), start + 5
    elif marker in (0xDC, 0xDD) and end - start < (3 if marker == 0xDC else 5):
        raise EnvelopeError("truncated envelope: array header cut short")
    else:
        raise EnvelopeError("envelope is not an array of 3 or 4")

    kind, pos = _peek_kind(data, pos, end)
    seq, pos = _peek_seq(data, pos, end)
    if pos >= end:
        raise EnvelopeError("truncated envelope: no body")
    body_end = _skip_one_object(data, pos, end)
    last = body_end
    if count == 4:
        if body_end >= end:
            raise EnvelopeError("truncated envelope: no fourth element")
        last = _skip_one_object(data, body_end, end)
    return kind, seq, pos, body_end, last


def _peek_kind(data, pos: int, end: int) -> tuple[str, int]:
    if pos >= end:
        raise EnvelopeError("truncated envelope: no kind")
    marker = data[pos]
    if 0xA0 <= marker <= 0xBF:
        length = marker & 0x1F
        pos += 1
    elif marker in (0xD9, 0xDA, 0xDB):
        width = _SIZED[marker]
        if pos + 1 + width > end:
            raise EnvelopeError("truncated envelope: kind length cut short")
        length = _uint(data, pos + 1, width)
        pos += 1 + width
    elif marker == _RESERVED:
        raise EnvelopeError("reserved byte 0xc1 as the envelope kind")
    else:
        raise EnvelopeError("bad envelope kind: not a msgpack str")
    if pos + length > end:
        raise EnvelopeError("truncated envelope: kind cut short")
    if not 1 <= length <= MAX_KIND_BYTES:
        raise EnvelopeError(f"bad envelope kind: {length} bytes, not 1 to {MAX_KIND_BYTES}")
    try:
        kind = bytes(data[pos : pos + length]).decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("bad envelope kind: not valid UTF-8") from None
    return kind, pos + length


def _peek_seq(data, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise EnvelopeError("truncated envelope: no seq")
    marker = data[pos]
    if marker < 0x80:
        return marker, pos + 1
    if 0xCC <= marker <= 0xD3:  # uint8..64, int8..64
        width = _FIXED_WIDTH[marker]
        if pos + 1 + width > end:
            raise EnvelopeError("truncated envelope: seq cut short")
        seq = int.from_bytes(data[pos + 1 : pos + 1 + width], "big", signed=marker >= 0xD0)
        if seq < 0:
            raise EnvelopeError(f"bad envelope seq: negative ({seq})")
        return seq, pos + 1 + width
    if marker >= 0xE0:
        raise EnvelopeError(f"bad envelope seq: negative ({marker - 0x100})")
    if marker == _RESERVED:
        raise EnvelopeError("reserved byte 0xc1 as the envelope seq")
    raise EnvelopeError("bad envelope seq: not a msgpack int")


def _skip_one_object(data, pos: int, end: int) -> int:
    """The offset just past the one msgpack object at ``pos``; walks with a pending-object count."""
    pending = 1
    while pending:
        # Every pending object needs at least one byte: refuse count bombs before walking them.
        if pending > end - pos:
            raise EnvelopeError("truncated envelope body")
        pending -= 1
        marker = data[pos]
        pos += 1
        if marker < 0x80 or marker >= 0xE0:  # positive / negative fixint
            continue
        if marker < 0x90:  # fixmap
            pending += 2 * (marker & 0x0F)
            continue
        if marker < 0xA0:  # fixarray
            pending += marker & 0x0F
            continue
        if marker < 0xC0:  # fixstr
            pos += marker & 0x1F
            if pos > end:
                raise EnvelopeError("truncated envelope body")
            continue
        width = _FIXED_WIDTH.get(marker)
        if width is not None:
            pos += width
            if pos > end:
                raise EnvelopeError("truncated envelope body")
            continue
        width = _SIZED.get(marker)
        if width is not None:
            if pos + width > end:
                raise EnvelopeError("truncated envelope body")
            pos += width + _uint(data, pos, width)
            if pos > end:
                raise EnvelopeError("truncated envelope body")
            continue
        width = _EXT.get(marker)
        if width is not None:
            if pos + width > end:
                raise EnvelopeError("truncated envelope body")
            pos += width + 1 + _uint(data, pos, width)
            if pos > end:
                raise EnvelopeError("truncated envelope body")
            continue
        if marker == _RESERVED:
            raise EnvelopeError("reserved byte 0xc1 in the envelope body")
        width, per_entry = _CONTAINERS[marker]
        if pos + width > end:
            raise EnvelopeError("truncated envelope body")
        pending += per_entry * _uint(data, pos, width)
        pos += width
    return pos
