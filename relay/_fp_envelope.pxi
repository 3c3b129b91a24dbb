# Envelope framing (docs/fastpath.md, section 2); twin of relay/_purepath/envelope.py.
#
# A client sends the msgpack array [kind, seq, body] (a fourth element is allowed and ignored); the
# relay delivers [kind, seq, body, sender], sender being its own stamp.  The relay reads kind and seq
# and forwards body untouched, so the body is only walked to prove it is one well-formed msgpack
# object: lengths and counts are read, nothing is decoded, nothing is built, nothing recurses.

from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8

cdef extern from "Python.h":
    const char* _env_utf8 "PyUnicode_AsUTF8AndSize" (object text, Py_ssize_t* size) except NULL
    bint _env_is_bool "PyBool_Check" (object value)
    bint _env_is_int "PyLong_Check" (object value)

MAX_KIND_BYTES = 32
MAX_SENDER_BYTES = 255  # a str8 at most: "master", a slave id, or "" for the relay itself
cdef Py_ssize_t _ENV_MAX_KIND_BYTES = 32
cdef Py_ssize_t _ENV_MAX_SENDER_BYTES = 255
cdef Py_ssize_t _ENV_FIXSTR_MAX_BYTES = 31
# The longest frame payload RFC 6455 can express (the 64-bit length's top bit must be 0).
cdef uint64_t _ENV_MAX_FRAME_PAYLOAD_BYTES = 0x7fffffffffffffffULL
# The header is at most: 10 (frame) + 1 (array) + 2 + 32 (kind) + 9 (seq) bytes.
cdef enum:
    _ENV_MAX_FRAME_AND_HEADER_BYTES = 64


cdef inline uint64_t _env_uint(const unsigned char* p, int width) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(width):
        value = (value << 8) | p[i]
    return value


cdef inline void _env_put_uint(unsigned char* out, uint64_t value, int width) noexcept nogil:
    cdef int i
    for i in range(width):
        out[width - 1 - i] = <unsigned char>(value >> (8 * i))


cdef Py_ssize_t _env_write_header(unsigned char* out, object kind, object seq, bint stamped) except -1:
    """Write the envelope header for (kind, seq) at ``out``; return its length."""
    cdef Py_ssize_t kind_length
    cdef const char* kind_bytes
    cdef uint64_t seq_value
    cdef Py_ssize_t pos
    if not PyUnicode_Check(kind):
        raise TypeError(f"kind must be str, not {type(kind).__name__}")
    if not _env_is_int(seq) or _env_is_bool(seq):
        raise TypeError(f"seq must be int, not {type(seq).__name__}")
    try:
        kind_bytes = _env_utf8(kind, &kind_length)
    except UnicodeEncodeError:
        raise LocalProtocolError("envelope kind is not encodable as UTF-8") from None
    if kind_length < 1 or kind_length > _ENV_MAX_KIND_BYTES:
        raise LocalProtocolError(
            f"envelope kind must be 1 to {MAX_KIND_BYTES} UTF-8 bytes, got {kind_length}"
        )
    try:
        seq_value = seq
    except OverflowError:
        raise LocalProtocolError(f"envelope seq {seq} is outside 0..2**64-1") from None
    out[0] = 0x94 if stamped else 0x93
    if kind_length <= _ENV_FIXSTR_MAX_BYTES:
        out[1] = 0xa0 | <unsigned char>kind_length
        pos = 2
    else:
        out[1] = 0xd9
        out[2] = <unsigned char>kind_length
        pos = 3
    memcpy(out + pos, kind_bytes, kind_length)
    pos += kind_length
    if seq_value < 0x80:
        out[pos] = <unsigned char>seq_value
        return pos + 1
    if seq_value <= 0xff:
        out[pos] = 0xcc
        _env_put_uint(out + pos + 1, seq_value, 1)
        return pos + 2
    if seq_value <= 0xffff:
        out[pos] = 0xcd
        _env_put_uint(out + pos + 1, seq_value, 2)
        return pos + 3
    if seq_value <= 0xffffffffULL:
        out[pos] = 0xce
        _env_put_uint(out + pos + 1, seq_value, 4)
        return pos + 5
    out[pos] = 0xcf
    _env_put_uint(out + pos + 1, seq_value, 8)
    return pos + 9


def envelope_header(kind, seq, *, stamped=False):
    """The bytes that precede the body: ``0x93`` (``0x94`` when ``stamped``: a sender follows the
    body), ``kind`` as fixstr/str8, ``seq`` as the smallest msgpack unsigned int.
    ``LocalProtocolError`` for an empty or too long kind or a seq outside 0..2**64-1."""
    cdef unsigned char out[_ENV_MAX_FRAME_AND_HEADER_BYTES]
    cdef Py_ssize_t length = _env_write_header(out, kind, seq, stamped)
    return PyBytes_FromStringAndSize(<char*>out, length)


def sender_tail(sender):
    """The last element of a delivered envelope: ``sender`` as a msgpack str (fixstr or str8).

    Built once per participant and sent after every body it sends.  ``LocalProtocolError`` past
    MAX_SENDER_BYTES UTF-8 bytes or for text that is not encodable."""
    cdef Py_ssize_t length
    cdef const char* encoded
    cdef bytes result
    cdef unsigned char* out
    if not PyUnicode_Check(sender):
        raise TypeError(f"sender must be str, not {type(sender).__name__}")
    try:
        encoded = _env_utf8(sender, &length)
    except UnicodeEncodeError:
        raise LocalProtocolError("sender is not encodable as UTF-8") from None
    if length > _ENV_MAX_SENDER_BYTES:
        raise LocalProtocolError(f"sender must be at most {MAX_SENDER_BYTES} UTF-8 bytes, got {length}")
    if length <= _ENV_FIXSTR_MAX_BYTES:
        result = PyBytes_FromStringAndSize(NULL, 1 + length)
        out = <unsigned char*>PyBytes_AS_STRING(result)
        out[0] = 0xa0 | <unsigned char>length
        memcpy(out + 1, encoded, length)
    else:
        result = PyBytes_FromStringAndSize(NULL, 2 + length)
        out = <unsigned char*>PyBytes_AS_STRING(result)
        out[0] = 0xd9
        out[1] = <unsigned char>length
        memcpy(out + 2, encoded, length)
    return result


def build_envelope(kind, seq, body, sender=None):
    """``envelope_header(kind, seq) + body``, or with ``sender`` (a str) the stamped form
    ``[kind, seq, body, sender]``; ``body`` is one packed msgpack object, trusted."""
    cdef unsigned char out[_ENV_MAX_FRAME_AND_HEADER_BYTES]
    cdef bytes tail = sender_tail(sender) if sender is not None else b""
    cdef Py_ssize_t header_length = _env_write_header(out, kind, seq, sender is not None)
    cdef Py_ssize_t tail_length = len(tail)
    cdef Py_buffer view
    cdef bytes result
    cdef char* dest
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        result = PyBytes_FromStringAndSize(NULL, header_length + view.len + tail_length)
        dest = PyBytes_AS_STRING(result)
        memcpy(dest, out, header_length)
        memcpy(dest + header_length, view.buf, view.len)
        if tail_length:
            memcpy(dest + header_length + view.len, PyBytes_AS_STRING(tail), tail_length)
    finally:
        PyBuffer_Release(&view)
    return result


def envelope_frame_header(kind, seq, body_length, sender_tail):
    """The unmasked FIN binary WebSocket frame header of a stamped envelope, then its header.

    Send it, the body and ``sender_tail`` back to back (``sendmsg([header, body, tail])``): the
    body is never copied.  The frame's length counts all three.
    """
    cdef unsigned char header[_ENV_MAX_FRAME_AND_HEADER_BYTES]
    cdef unsigned char out[_ENV_MAX_FRAME_AND_HEADER_BYTES + 10]
    cdef Py_ssize_t header_length, frame_length, tail_length
    cdef uint64_t payload_length
    cdef Py_buffer tail_view
    if not _env_is_int(body_length) or _env_is_bool(body_length):
        raise TypeError(f"body_length must be int, not {type(body_length).__name__}")
    if body_length < 0:
        raise LocalProtocolError(f"negative body length {body_length}")
    PyObject_GetBuffer(sender_tail, &tail_view, PyBUF_SIMPLE)
    tail_length = tail_view.len
    PyBuffer_Release(&tail_view)
    if tail_length == 0:
        raise LocalProtocolError("a stamped envelope needs a sender (an empty str packs as 0xa0)")
    header_length = _env_write_header(header, kind, seq, True)
    if body_length > _ENV_MAX_FRAME_PAYLOAD_BYTES - <uint64_t>(header_length + tail_length):
        raise LocalProtocolError(
            f"frame payload of {header_length + body_length + tail_length} bytes is too long")
    payload_length = <uint64_t>body_length + <uint64_t>(header_length + tail_length)
    out[0] = 0x82
    if payload_length < 126:
        out[1] = <unsigned char>payload_length
        frame_length = 2
    elif payload_length <= 0xffff:
        out[1] = 126
        _env_put_uint(out + 2, payload_length, 2)
        frame_length = 4
    else:
        out[1] = 127
        _env_put_uint(out + 2, payload_length, 8)
        frame_length = 10
    memcpy(out + frame_length, header, header_length)
    return PyBytes_FromStringAndSize(<char*>out, frame_length + header_length)


cdef Py_ssize_t _env_skip_one_object(const unsigned char* p, Py_ssize_t pos,
                                     Py_ssize_t end) except -1:
    """The offset just past the one msgpack object at ``pos``; walks with a pending-object count."""
    cdef uint64_t pending = 1
    cdef uint64_t length
    cdef unsigned char marker
    cdef int width
    while pending:
        # Every pending object needs at least one byte: refuse count bombs before walking them.
        if pending > <uint64_t>(end - pos):
            raise EnvelopeError("truncated envelope body")
        pending -= 1
        marker = p[pos]
        pos += 1
        if marker < 0x80 or marker >= 0xe0:  # positive / negative fixint
            continue
        if marker < 0x90:  # fixmap
            pending += 2 * (marker & 0x0f)
            continue
        if marker < 0xa0:  # fixarray
            pending += marker & 0x0f
            continue
        if marker < 0xc0:  # fixstr
            length = marker & 0x1f
        elif marker == 0xc0 or marker == 0xc2 or marker == 0xc3:  # nil, false, true
            continue
        elif marker == 0xc1:
            raise EnvelopeError("reserved byte 0xc1 in the envelope body")
        elif marker <= 0xc6 or (0xd9 <= marker <= 0xdb):  # bin8/16/32, str8/16/32
            width = 1 << ((marker - 0xc4) if marker <= 0xc6 else (marker - 0xd9))
            if width > end - pos:
                raise EnvelopeError("truncated envelope body")
            length = _env_uint(p + pos, width)
            pos += width
        elif marker <= 0xc9:  # ext8/16/32: the type byte is not counted in the length
            width = 1 << (marker - 0xc7)
            if width > end - pos:
                raise EnvelopeError("truncated envelope body")
            length = _env_uint(p + pos, width) + 1
            pos += width
        elif marker == 0xca:  # float32
            length = 4
        elif marker == 0xcb:  # float64
            length = 8
        elif marker <= 0xcf:  # uint8..64
            length = 1 << (marker - 0xcc)
        elif marker <= 0xd3:  # int8..64
            length = 1 << (marker - 0xd0)
        elif marker <= 0xd8:  # fixext 1/2/4/8/16, plus the type byte
            length = (1 << (marker - 0xd4)) + 1
        else:  # array16/32, map16/32
            width = 2 if (marker == 0xdc or marker == 0xde) else 4
            if width > end - pos:
                raise EnvelopeError("truncated envelope body")
            length = _env_uint(p + pos, width)
            pos += width
            pending += length if marker <= 0xdd else 2 * length
            continue
        if length > <uint64_t>(end - pos):
            raise EnvelopeError("truncated envelope body")
        pos += <Py_ssize_t>length
    return pos


cdef tuple _env_peek(const unsigned char* p, Py_ssize_t end, bint whole):
    """(kind, seq, body_offset, body_end) of the envelope that is all of p[0:end] (``whole``), or
    (kind, seq, body_offset, body_end, envelope_end) of the one that starts at p[0]."""
    cdef Py_ssize_t pos
    cdef uint64_t count
    cdef Py_ssize_t kind_length
    cdef unsigned char marker
    cdef int width
    cdef uint64_t seq
    cdef bint negative = False
    cdef long long signed_seq
    cdef object kind
    if end == 0:
        raise EnvelopeError("truncated envelope: empty message")
    marker = p[0]
    if marker == 0x93 or marker == 0x94:
        count = marker & 0x0f
        pos = 1
    elif marker == 0xdc or marker == 0xdd:
        width = 2 if marker == 0xdc else 4
        if end < 1 + width:
            raise EnvelopeError("truncated envelope: array header cut short")
        count = _env_uint(p + 1, width)
        if count != 3 and count != 4:
            raise EnvelopeError("envelope is not an array of 3 or 4")
        pos = 1 + width
    else:
        raise EnvelopeError("envelope is not an array of 3 or 4")

    # kind
    if pos >= end:
        raise EnvelopeError("truncated envelope: no kind")
    marker = p[pos]
    if 0xa0 <= marker <= 0xbf:
        kind_length = marker & 0x1f
        pos += 1
    elif 0xd9 <= marker <= 0xdb:
        width = 1 << (marker - 0xd9)
        if width >= end - pos:
            raise EnvelopeError("truncated envelope: kind length cut short")
        if _env_uint(p + pos + 1, width) > <uint64_t>(end - pos - 1 - width):
            raise EnvelopeError("truncated envelope: kind cut short")
        kind_length = <Py_ssize_t>_env_uint(p + pos + 1, width)
        pos += 1 + width
    elif marker == 0xc1:
        raise EnvelopeError("reserved byte 0xc1 as the envelope kind")
    else:
        raise EnvelopeError("bad envelope kind: not a msgpack str")
    if kind_length > end - pos:
        raise EnvelopeError("truncated envelope: kind cut short")
    if kind_length < 1 or kind_length > _ENV_MAX_KIND_BYTES:
        raise EnvelopeError(f"bad envelope kind: {kind_length} bytes, not 1 to {MAX_KIND_BYTES}")
    try:
        kind = PyUnicode_DecodeUTF8(<const char*>(p + pos), kind_length, NULL)
    except UnicodeDecodeError:
        raise EnvelopeError("bad envelope kind: not valid UTF-8")
    pos += kind_length

    # seq
    if pos >= end:
        raise EnvelopeError("truncated envelope: no seq")
    marker = p[pos]
    if marker < 0x80:
        seq = marker
        pos += 1
    elif 0xcc <= marker <= 0xd3:  # uint8..64, int8..64
        width = 1 << ((marker - 0xcc) if marker <= 0xcf else (marker - 0xd0))
        if width >= end - pos:
            raise EnvelopeError("truncated envelope: seq cut short")
        seq = _env_uint(p + pos + 1, width)
        if marker >= 0xd0 and (p[pos + 1] & 0x80):
            negative = True
        pos += 1 + width
    elif marker >= 0xe0:
        raise EnvelopeError(f"bad envelope seq: negative ({<int>marker - 0x100})")
    elif marker == 0xc1:
        raise EnvelopeError("reserved byte 0xc1 as the envelope seq")
    else:
        raise EnvelopeError("bad envelope seq: not a msgpack int")
    if negative:
        signed_seq = <long long>seq if width == 8 else <long long>seq - (1LL << (8 * width))
        raise EnvelopeError(f"bad envelope seq: negative ({signed_seq})")

    if pos >= end:
        raise EnvelopeError("truncated envelope: no body")
    cdef Py_ssize_t body_end = _env_skip_one_object(p, pos, end)
    cdef Py_ssize_t last = body_end
    if count == 4:
        if body_end >= end:
            raise EnvelopeError("truncated envelope: no fourth element")
        last = _env_skip_one_object(p, body_end, end)
    if not whole:
        return (kind, seq, pos, body_end, last)
    if last != end:
        raise EnvelopeError(f"trailing bytes after the envelope: {end - last}")
    return (kind, seq, pos, body_end)


def peek_envelope(data):
    """Check that ``data`` is exactly one envelope, ``[kind, seq, body]`` or
    ``[kind, seq, body, extra]``; return ``(kind, seq, body_offset, body_end)``, where
    ``data[body_offset:body_end]`` is the body (``body_end == len(data)`` for three elements).

    A fourth element must be one well-formed msgpack object too.  Nothing of the body is copied or decoded, and the buffer of ``data`` is released before this
    returns, so nothing here outlives the call.  Raises ``EnvelopeError`` (close code 1007).
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _env_peek(<const unsigned char*>view.buf, view.len, True)
    finally:
        PyBuffer_Release(&view)


def next_envelope(data, offset):
    """The envelope that starts at ``data[offset]`` in a buffer of envelopes back to back (a
    long-poll body): ``(kind, seq, body_offset, body_end, end)``, offsets into ``data``, ``end``
    where the next envelope starts.  The same checks as ``peek_envelope`` but for trailing bytes;
    ``EnvelopeError`` (1007) naming the fault, "truncated" when the buffer ends inside it."""
    cdef Py_buffer view
    cdef Py_ssize_t start
    cdef tuple found
    if not _env_is_int(offset) or _env_is_bool(offset):
        raise TypeError(f"offset must be int, not {type(offset).__name__}")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or offset > view.len:
            raise LocalProtocolError(f"offset {offset} is outside the buffer of {view.len} bytes")
        start = offset
        found = _env_peek(<const unsigned char*>view.buf + start, view.len - start, False)
        return (found[0], found[1], <Py_ssize_t>found[2] + start, <Py_ssize_t>found[3] + start,
                <Py_ssize_t>found[4] + start)
    finally:
        PyBuffer_Release(&view)
