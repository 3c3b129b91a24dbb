# WebSocket frames (RFC 6455): the Cython twin of relay/_purepath/frames.py.
#
# See docs/fastpath.md section 1.  The check order, error codes and the timing of every error are
# those of the pure twin (read its module docstring); tests/unit/test_frames.py proves they agree.
#
# Speed design: feed() never copies the caller's bytes into a buffer.  Payload bytes are unmasked
# straight from the caller's buffer (or from the recv_into buffer) into the bytes object that
# becomes the event's payload, allocated once at its final size when the message is one frame
# (geometric growth, then one shrink, for fragmented messages).  Only a partial header (< 14
# bytes) and control payloads (<= 125 bytes) are buffered.

from cpython.buffer cimport PyBUF_SIMPLE, PyObject_GetBuffer, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import operator as _operator
import os as _os
import sys as _sys

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* XOR n bytes of src with the 4-byte key, starting at key offset `offset`, into dst (dst may
       equal src).  8-byte words, four per iteration: gcc -O3 turns this into SSE2/AVX code. */
    static void relay_frames_unmask(unsigned char *dst, const unsigned char *src, size_t n,
                                    const unsigned char *key, unsigned int offset)
    {
        unsigned char k8[8];
        uint64_t kw;
        size_t i = 0;
        for (int j = 0; j < 8; j++) k8[j] = key[(offset + j) & 3];
        memcpy(&kw, k8, 8);
        for (; i + 32 <= n; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, src + i, 8); memcpy(&b, src + i + 8, 8);
            memcpy(&c, src + i + 16, 8); memcpy(&d, src + i + 24, 8);
            a ^= kw; b ^= kw; c ^= kw; d ^= kw;
            memcpy(dst + i, &a, 8); memcpy(dst + i + 8, &b, 8);
            memcpy(dst + i + 16, &c, 8); memcpy(dst + i + 24, &d, 8);
        }
        for (; i + 8 <= n; i += 8) {
            uint64_t a;
            memcpy(&a, src + i, 8);
            a ^= kw;
            memcpy(dst + i, &a, 8);
        }
        for (; i < n; i++) dst[i] = src[i] ^ k8[i & 7];
    }

    /* Incremental UTF-8 validation (Unicode table 3-7), failing on the first byte that cannot be
       part of valid UTF-8.  The state packs the continuation bytes still expected (bits 16-17)
       and the allowed range of the next one (low byte in bits 0-7, high in bits 8-15); 0 means
       "between characters".  ASCII runs are skipped 8 bytes at a time. */
    #define RELAY_UTF8_CONT(need, lo, hi) (((uint32_t)(need) << 16) | ((uint32_t)(hi) << 8) | (uint32_t)(lo))

    static int relay_frames_utf8_check(uint32_t *state_io, const unsigned char *p, size_t n)
    {
        uint32_t state = *state_io;
        size_t i = 0;
        while (i < n) {
            if (state == 0) {
                while (i + 8 <= n) {
                    uint64_t w;
                    memcpy(&w, p + i, 8);
                    if (w & 0x8080808080808080ULL) break;
                    i += 8;
                }
                if (i >= n) break;
                unsigned char b = p[i++];
                if (b < 0x80) continue;
                if (b >= 0xC2 && b <= 0xDF) state = RELAY_UTF8_CONT(1, 0x80, 0xBF);
                else if (b == 0xE0) state = RELAY_UTF8_CONT(2, 0xA0, 0xBF);
                else if (b == 0xED) state = RELAY_UTF8_CONT(2, 0x80, 0x9F);
                else if (b >= 0xE1 && b <= 0xEF) state = RELAY_UTF8_CONT(2, 0x80, 0xBF);
                else if (b == 0xF0) state = RELAY_UTF8_CONT(3, 0x90, 0xBF);
                else if (b >= 0xF1 && b <= 0xF3) state = RELAY_UTF8_CONT(3, 0x80, 0xBF);
                else if (b == 0xF4) state = RELAY_UTF8_CONT(3, 0x80, 0x8F);
                else { *state_io = state; return 0; }
            } else {
                unsigned char b = p[i++];
                if (b < (state & 0xFF) || b > ((state >> 8) & 0xFF)) { *state_io = state; return 0; }
                uint32_t need = (state >> 16) - 1;
                state = need ? RELAY_UTF8_CONT(need, 0x80, 0xBF) : 0;
            }
        }
        *state_io = state;
        return 1;
    }

    static int relay_frames_close_code_allowed(unsigned int code)
    {
        return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
            || (code >= 3000 && code <= 4999);
    }
    """
    void relay_frames_unmask(unsigned char *dst, const unsigned char *src, size_t n,
                             const unsigned char *key, unsigned int offset) nogil
    int relay_frames_utf8_check(uint32_t *state_io, const unsigned char *p, size_t n) nogil
    int relay_frames_close_code_allowed(unsigned int code) nogil


OP_CONTINUATION = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

# Equal to relay._config.DEFAULT_MAX_MESSAGE_BYTES (tests/unit/test_config.py), spelled here so that this
# twin imports standalone.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_CONTROL_PAYLOAD = 125
RECEIVE_BUFFER_BYTES = 256 * 1024
PAYLOAD_BUFFER_MIN_BYTES = 64 * 1024
MAX_CLOSE_REASON_BYTES = 123

cdef enum:
    _MAX_HEADER_BYTES = 14
    _MAX_CONTROL = 125
    _RECEIVE_BUFFER_BYTES = 256 * 1024
    # CloseCode.PROTOCOL_ERROR, INVALID_FRAME_PAYLOAD_DATA, MESSAGE_TOO_BIG (relay/_closecodes.py),
    # as C constants for _fail; RemoteProtocolError turns them into CloseCode members.
    _CLOSE_PROTOCOL_ERROR = 1002
    _CLOSE_INVALID_PAYLOAD = 1007
    _CLOSE_MESSAGE_TOO_BIG = 1009

cdef object _FRAMES_LENGTH_LIMIT = 0x8000000000000000  # 2**63: the 64-bit length's top bit

cdef object _frames_pyop_text = 1
cdef object _frames_pyop_binary = 2


cdef inline bint _frames_known_opcode(int opcode) noexcept nogil:
    return opcode <= 2 or 8 <= opcode <= 10


cdef inline Py_ssize_t _frames_header_size(const unsigned char* h, Py_ssize_t available) noexcept:
    cdef unsigned char length7
    cdef Py_ssize_t size
    if available < 2:
        return 2
    length7 = h[1] & 0x7F
    size = 4 if length7 == 126 else (10 if length7 == 127 else 2)
    return size + 4 if h[1] & 0x80 else size


cdef class _FramesBytesLike:
    """A flat read-only view of any bytes-like argument, released when this object dies."""
    cdef Py_buffer view
    cdef bint held
    cdef const unsigned char* ptr
    cdef Py_ssize_t size

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


cdef inline _FramesBytesLike _frames_bytes_like(object data):
    cdef _FramesBytesLike holder = _FramesBytesLike.__new__(_FramesBytesLike)
    PyObject_GetBuffer(data, &holder.view, PyBUF_SIMPLE)
    holder.held = True
    holder.ptr = <const unsigned char*>holder.view.buf
    holder.size = holder.view.len
    return holder


cdef int _frames_check_opcode(object opcode) except -1:
    cdef object value = _operator.index(opcode)
    if value < 0 or value > 15 or not _frames_known_opcode(<int>value):
        raise LocalProtocolError(f"opcode {value} is not defined by RFC 6455")
    return <int>value


cdef Py_ssize_t _frames_write_header(unsigned char* out, object opcode, object length, object fin,
                                     bint masked, uint64_t* length_out) except -1:
    """Check the arguments and write the header (without mask key); returns its size."""
    cdef int op = _frames_check_opcode(opcode)
    cdef object length_value = _operator.index(length)
    cdef bint final = bool(fin)
    cdef uint64_t n
    cdef unsigned char mask_bit = 0x80 if masked else 0
    cdef int i
    if length_value < 0:
        raise LocalProtocolError("a frame length cannot be negative")
    if length_value >= _FRAMES_LENGTH_LIMIT:
        raise LocalProtocolError("a frame length must fit in 63 bits")
    n = length_value
    if op >= 8:
        if n > _MAX_CONTROL:
            raise LocalProtocolError(f"a control frame carries at most {_MAX_CONTROL} bytes")
        if not final:
            raise LocalProtocolError("a control frame cannot be fragmented")
    length_out[0] = n
    out[0] = (0x80 if final else 0) | op
    if n < 126:
        out[1] = mask_bit | <unsigned char>n
        return 2
    if n < 65536:
        out[1] = mask_bit | 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>n
        return 4
    out[1] = mask_bit | 127
    for i in range(8):
        out[2 + i] = <unsigned char>(n >> (56 - 8 * i))
    return 10


def frame_header(opcode, length, fin=True):
    """The 2, 4 or 10 byte header of an unmasked (server) frame, with minimal length encoding."""
    cdef unsigned char out[_MAX_HEADER_BYTES]
    cdef uint64_t n
    cdef Py_ssize_t size = _frames_write_header(out, opcode, length, fin, False, &n)
    return PyBytes_FromStringAndSize(<char*>out, size)


def encode_frame(opcode, payload, fin=True):
    """One unmasked frame (header + payload) in one new ``bytes``."""
    cdef _FramesBytesLike data = _frames_bytes_like(payload)
    cdef unsigned char header[_MAX_HEADER_BYTES]
    cdef uint64_t n
    cdef Py_ssize_t size = _frames_write_header(header, opcode, data.size, fin, False, &n)
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, size + data.size)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(frame)
    memcpy(out, header, size)
    memcpy(out + size, data.ptr, data.size)
    return frame


def encode_client_frame(opcode, payload, mask_key=None, fin=True):
    """One masked (client) frame; ``mask_key`` is 4 bytes, random when ``None``."""
    cdef _FramesBytesLike data = _frames_bytes_like(payload)
    cdef unsigned char header[_MAX_HEADER_BYTES]
    cdef uint64_t n
    cdef Py_ssize_t size = _frames_write_header(header, opcode, data.size, fin, True, &n)
    cdef _FramesBytesLike key
    if mask_key is None:
        mask_key = _os.urandom(4)
    key = _frames_bytes_like(mask_key)
    if key.size != 4:
        raise ValueError("a mask key is exactly 4 bytes")
    memcpy(header + size, key.ptr, 4)
    size += 4
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, size + data.size)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(frame)
    memcpy(out, header, size)
    relay_frames_unmask(out + size, data.ptr, data.size, key.ptr, 0)
    return frame


def unmask(data, mask_key):
    """XOR ``data`` with the 4-byte ``mask_key``, key offset 0 on the first byte."""
    cdef _FramesBytesLike src = _frames_bytes_like(data)
    cdef _FramesBytesLike key = _frames_bytes_like(mask_key)
    if key.size != 4:
        raise ValueError("a mask key is exactly 4 bytes")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, src.size)
    relay_frames_unmask(<unsigned char*>PyBytes_AS_STRING(out), src.ptr, src.size, key.ptr, 0)
    return out


def close_payload(code=None, reason=""):
    """The payload of a close frame: ``b""`` without a code, else the code and UTF-8 reason."""
    if not isinstance(reason, str):
        raise TypeError("a close reason is a str")
    if code is None:
        if reason:
            raise LocalProtocolError("a close reason needs a close code")
        return b""
    code = _operator.index(code)
    if not (0 <= code <= 0xFFFF and relay_frames_close_code_allowed(<unsigned int>code)):
        raise LocalProtocolError(f"close code {code} may not be sent")
    cdef bytes encoded = (<str>reason).encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON_BYTES:
        raise LocalProtocolError(f"a close reason is at most {MAX_CLOSE_REASON_BYTES} UTF-8 bytes")
    return code.to_bytes(2, "big") + encoded


cdef object _frames_close_fault(const unsigned char* p, Py_ssize_t n):
    """``(close_code, reason)`` of what is wrong with a received close payload, or None."""
    cdef unsigned int code
    if n == 1:
        return (_CLOSE_PROTOCOL_ERROR, "a close payload cannot be 1 byte")
    if n >= 2:
        code = (p[0] << 8) | p[1]
        if not relay_frames_close_code_allowed(code):
            return (_CLOSE_PROTOCOL_ERROR, f"close code {code} is not allowed on the wire")
        try:
            (<const char*>p)[2:n].decode("utf-8")
        except UnicodeDecodeError:
            return (_CLOSE_INVALID_PAYLOAD, "close reason is not valid UTF-8")
    return None


def parse_close_payload(payload):
    """``(code, reason)`` of a close payload, ``(None, "")`` when empty."""
    cdef _FramesBytesLike data = _frames_bytes_like(payload)
    cdef object fault = _frames_close_fault(data.ptr, data.size)
    if fault is not None:
        raise RemoteProtocolError(fault[1], close_code=fault[0])
    if data.size == 0:
        return (None, "")
    return ((data.ptr[0] << 8) | data.ptr[1], (<const char*>data.ptr)[2:data.size].decode("utf-8"))


cdef class FrameDecoder:
    """Sans-IO, incremental WebSocket frame decoder; see docs/fastpath.md section 1.

    ``feed`` and ``buffer_updated`` parse every complete frame at once (nothing is kept of the
    caller's bytes but a partial header) and queue the events for ``next_event``.  When a fault is
    found while earlier events are still queued, those events are returned first and the error is
    raised by the ``next_event`` call after them; otherwise the call that found it raises.
    """

    cdef Py_ssize_t max_message_size
    cdef bint client_side
    # partial header carried between calls
    cdef unsigned char header[_MAX_HEADER_BYTES]
    cdef Py_ssize_t header_length
    # the frame whose payload is being read
    cdef bint in_frame
    cdef int frame_opcode
    cdef bint frame_fin
    cdef bint frame_masked
    cdef uint64_t frame_remaining
    cdef unsigned char mask_key[4]
    cdef unsigned int mask_offset
    cdef unsigned char control[_MAX_CONTROL]
    cdef Py_ssize_t control_length
    # the data message being reassembled: an owned bytes object, filled in place, not yet shared
    cdef int message_opcode
    cdef PyObject* message
    cdef Py_ssize_t message_length
    cdef Py_ssize_t message_capacity
    cdef uint32_t utf8_state
    # output
    cdef list events
    cdef Py_ssize_t events_head
    cdef object error
    cdef bytearray receive_buffer
    cdef Py_ssize_t payload_offered  # length of the last payload_buffer() view, 0 when none is valid

    def __cinit__(self):
        self.message = NULL

    def __init__(self, max_message_size=DEFAULT_MAX_MESSAGE_BYTES, *, client_side=False):
        max_message_size = _operator.index(max_message_size)
        if max_message_size < 0:
            raise ValueError("max_message_size cannot be negative")
        self.max_message_size = min(max_message_size, _sys.maxsize)
        self.client_side = bool(client_side)
        self.events = []

    def __dealloc__(self):
        Py_XDECREF(self.message)
        self.message = NULL

    # ---- public API ----

    def feed(self, data):
        """Append bytes (any bytes-like object; consumed at once, the caller may reuse it)."""
        cdef Py_buffer view
        cdef int status
        self.payload_offered = 0
        if self.error is not None:
            raise self.error.with_traceback(None)
        if type(data) is bytes:
            status = self._consume(<const unsigned char*>PyBytes_AS_STRING(data), len(<bytes>data))
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                status = self._consume(<const unsigned char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
        if status < 0:
            self._report()

    def get_buffer(self):
        """A writable view of the decoder's receive buffer for ``sock.recv_into``.

        Valid only until the next call of any method of this decoder.
        """
        self.payload_offered = 0
        if self.error is not None:
            raise self.error.with_traceback(None)
        if self.receive_buffer is None:
            self.receive_buffer = bytearray(_RECEIVE_BUFFER_BYTES)
        return memoryview(self.receive_buffer)

    def payload_buffer(self, min_bytes=PAYLOAD_BUFFER_MIN_BYTES):
        """A writable view of the rest of the current data frame's payload, where the message is
        being assembled, when at least ``min_bytes`` of it are still to come; else ``None``.

        ``sock.recv_into(view)`` then ``payload_received(n)`` unmasks (and checks) those bytes in
        place: a large message is received with no intermediate copy.  The view points into
        memory the decoder owns: it is valid only until the next call of any method of this
        decoder (the message may move when a fragment makes it grow); do not keep it.
        """
        cdef Py_ssize_t wanted = _operator.index(min_bytes)
        self.payload_offered = 0
        if self.error is not None:
            raise self.error.with_traceback(None)
        if wanted < 1:
            wanted = 1
        if (not self.in_frame or self.frame_opcode >= 8 or self.message == NULL
                or self.frame_remaining < <uint64_t>wanted):
            return None
        self.payload_offered = <Py_ssize_t>self.frame_remaining
        return PyMemoryView_FromMemory(PyBytes_AS_STRING(<object>self.message) + self.message_length,
                                       self.payload_offered, PyBUF_WRITE)

    def payload_received(self, nbytes):
        """Take the ``nbytes`` bytes written at the start of the last ``payload_buffer`` view."""
        cdef Py_ssize_t n = _operator.index(nbytes)
        cdef Py_ssize_t offered = self.payload_offered
        cdef unsigned char* dest
        self.payload_offered = 0
        if self.error is not None:
            raise self.error.with_traceback(None)
        if n < 0 or n > offered:
            raise ValueError("nbytes does not fit the view given by payload_buffer()")
        if n == 0:
            return
        dest = <unsigned char*>PyBytes_AS_STRING(<object>self.message) + self.message_length
        if self._take_payload(dest, n) < 0:
            self._report()
            return
        self.frame_remaining -= n
        if self.frame_remaining == 0:
            if self._finish_frame() < 0:
                self._report()

    def buffer_updated(self, nbytes):
        """Parse the ``nbytes`` bytes written at the start of the last ``get_buffer`` view."""
        self.payload_offered = 0
        if self.error is not None:
            raise self.error.with_traceback(None)
        nbytes = _operator.index(nbytes)
        if not 0 <= nbytes <= _RECEIVE_BUFFER_BYTES or (nbytes and self.receive_buffer is None):
            raise ValueError("nbytes does not fit the buffer given by get_buffer()")
        if nbytes:
            if self._consume(<const unsigned char*>PyByteArray_AS_STRING(self.receive_buffer),
                             <Py_ssize_t>nbytes) < 0:
                self._report()

    def next_event(self):
        """The next ``(opcode, payload)`` event, or ``None`` when more bytes are needed."""
        cdef object event
        cdef Py_ssize_t pending = len(self.events)
        self.payload_offered = 0
        if self.events_head < pending:
            event = self.events[self.events_head]
            self.events_head += 1
            if self.events_head == pending:
                del self.events[:]
                self.events_head = 0
            return event
        if self.error is not None:
            raise self.error.with_traceback(None)
        return None

    # ---- internals ----

    cdef int _fail(self, int close_code, str reason) except -2:
        self.error = RemoteProtocolError(reason, close_code=close_code)
        return -1

    cdef _report(self):
        """After a fault: free what an unfinished message holds; raise unless events are queued."""
        Py_XDECREF(self.message)
        self.message = NULL
        if self.events_head == len(self.events):
            raise self.error.with_traceback(None)

    cdef int _consume(self, const unsigned char* p, Py_ssize_t n) except -2:
        """Parse n bytes at p; -1 after a fault (stored in self.error), else 0."""
        cdef Py_ssize_t size, needed, take
        while True:
            if not self.in_frame:
                if n == 0:
                    return 0
                if self.header_length:
                    # a header split across calls: take only what this header still needs
                    while n > 0:
                        needed = _frames_header_size(self.header, self.header_length) - self.header_length
                        if needed <= 0:
                            break
                        take = needed if needed < n else n
                        memcpy(self.header + self.header_length, p, take)
                        self.header_length += take
                        p += take
                        n -= take
                        size = self._check_header(self.header, self.header_length)
                        if size < 0:
                            return -1
                    size = self._check_header(self.header, self.header_length)
                    if size < 0:
                        return -1
                    if size == 0:
                        return 0
                    self._begin_frame(self.header)
                    self.header_length = 0
                else:
                    size = self._check_header(p, n if n < _MAX_HEADER_BYTES else _MAX_HEADER_BYTES)
                    if size < 0:
                        return -1
                    if size == 0:
                        memcpy(self.header, p, n)
                        self.header_length = n
                        return 0
                    self._begin_frame(p)
                    p += size
                    n -= size
            if self.frame_remaining:
                take = n if <uint64_t>n < self.frame_remaining else <Py_ssize_t>self.frame_remaining
                if take:
                    if self._take_payload(p, take) < 0:
                        return -1
                    p += take
                    n -= take
                    self.frame_remaining -= take
                if self.frame_remaining:
                    return 0
            if self._finish_frame() < 0:
                return -1

    cdef Py_ssize_t _check_header(self, const unsigned char* h, Py_ssize_t available) except -2:
        """Check the header bytes seen so far: -1 after a fault, 0 if incomplete, else its size."""
        cdef unsigned char first, second, length7
        cdef int opcode
        cdef bint is_control, masked
        cdef uint64_t length
        cdef Py_ssize_t size
        cdef int i
        if available == 0:
            return 0
        first = h[0]
        opcode = first & 0x0F
        if first & 0x70:
            return self._fail(_CLOSE_PROTOCOL_ERROR, "RSV bit set but no extension was negotiated")
        if not _frames_known_opcode(opcode):
            return self._fail(_CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
        is_control = opcode >= 8
        if is_control and not (first & 0x80):
            return self._fail(_CLOSE_PROTOCOL_ERROR, "fragmented control frame")
        if opcode == 0 and not self.message_opcode:
            return self._fail(_CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue")
        if (opcode == 1 or opcode == 2) and self.message_opcode:
            return self._fail(_CLOSE_PROTOCOL_ERROR, "new message inside a fragmented message")
        if available < 2:
            return 0
        second = h[1]
        masked = (second & 0x80) != 0
        if masked == self.client_side:
            if self.client_side:
                return self._fail(_CLOSE_PROTOCOL_ERROR, "masked frame from the server")
            return self._fail(_CLOSE_PROTOCOL_ERROR, "unmasked frame from a client")
        length7 = second & 0x7F
        if is_control:
            if length7 > _MAX_CONTROL:
                return self._fail(_CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
            if opcode == 8 and length7 == 1:
                return self._fail(_CLOSE_PROTOCOL_ERROR, "a close payload cannot be 1 byte")
        if length7 == 126:
            if available < 4:
                return 0
            length = (<uint64_t>h[2] << 8) | h[3]
            if length < 126:
                return self._fail(_CLOSE_PROTOCOL_ERROR, "16-bit length used for a length below 126")
            size = 4
        elif length7 == 127:
            if available < 10:
                return 0
            length = 0
            for i in range(2, 10):
                length = (length << 8) | h[i]
            if length >> 63:
                return self._fail(_CLOSE_PROTOCOL_ERROR, "64-bit length with the top bit set")
            if length < 65536:
                return self._fail(_CLOSE_PROTOCOL_ERROR, "64-bit length used for a length below 65536")
            size = 10
        else:
            length = length7
            size = 2
        if not is_control and length > <uint64_t>(self.max_message_size - self.message_length):
            return self._fail(_CLOSE_MESSAGE_TOO_BIG,
                              f"message larger than the limit of {self.max_message_size} bytes")
        if masked:
            size += 4
        return size if available >= size else 0

    cdef int _begin_frame(self, const unsigned char* h) except -1:
        """Set up the frame whose complete, already checked header is at h."""
        cdef unsigned char length7 = h[1] & 0x7F
        cdef uint64_t length
        cdef Py_ssize_t offset, needed, capacity
        cdef int opcode = h[0] & 0x0F
        cdef int i
        if length7 == 126:
            length = (<uint64_t>h[2] << 8) | h[3]
            offset = 4
        elif length7 == 127:
            length = 0
            for i in range(2, 10):
                length = (length << 8) | h[i]
            offset = 10
        else:
            length = length7
            offset = 2
        self.frame_opcode = opcode
        self.frame_fin = (h[0] & 0x80) != 0
        self.frame_remaining = length
        self.frame_masked = (h[1] & 0x80) != 0
        if self.frame_masked:
            memcpy(self.mask_key, h + offset, 4)
        self.mask_offset = 0
        self.in_frame = True
        if opcode >= 8:
            self.control_length = 0
            return 0
        if opcode != 0:
            self.message_opcode = opcode
            self.message_length = 0
            self.message_capacity = 0
            self.utf8_state = 0
        needed = self.message_length + <Py_ssize_t>length
        if needed > self.message_capacity or (self.frame_fin and needed != self.message_capacity):
            # a final frame gives the exact size; otherwise grow geometrically up to the limit
            capacity = needed
            if not self.frame_fin and capacity < 2 * self.message_capacity:
                capacity = 2 * self.message_capacity
                if capacity > self.max_message_size:
                    capacity = self.max_message_size
            self._resize_message(capacity)
        return 0

    cdef int _resize_message(self, Py_ssize_t capacity) except -1:
        cdef object created
        if self.message == NULL:
            created = PyBytes_FromStringAndSize(NULL, capacity)
            Py_INCREF(created)  # the decoder owns this reference until the message is complete
            self.message = <PyObject*>created
        else:
            _PyBytes_Resize(&self.message, capacity)
        self.message_capacity = capacity
        return 0

    cdef int _take_payload(self, const unsigned char* p, Py_ssize_t n) except -2:
        cdef unsigned char* dest
        if self.frame_opcode >= 8:
            dest = self.control + self.control_length
            self.control_length += n
        else:
            dest = <unsigned char*>PyBytes_AS_STRING(<object>self.message) + self.message_length
            self.message_length += n
        if self.frame_masked:
            relay_frames_unmask(dest, p, n, self.mask_key, self.mask_offset)
            self.mask_offset = (self.mask_offset + <unsigned int>n) & 3
        elif dest != p:  # p == dest: payload_received() on bytes already in place
            memcpy(dest, p, n)
        if self.frame_opcode < 8 and self.message_opcode == 1:
            if not relay_frames_utf8_check(&self.utf8_state, dest, n):
                return self._fail(_CLOSE_INVALID_PAYLOAD, "text message is not valid UTF-8")
        return 0

    cdef int _finish_frame(self) except -2:
        cdef object fault, payload
        cdef int opcode = self.frame_opcode
        self.in_frame = False
        if opcode >= 8:
            if opcode == 8:
                fault = _frames_close_fault(self.control, self.control_length)
                if fault is not None:
                    return self._fail(fault[0], fault[1])
            self.events.append((opcode, PyBytes_FromStringAndSize(<char*>self.control,
                                                                   self.control_length)))
            return 0
        if not self.frame_fin:
            return 0
        if self.message_opcode == 1 and self.utf8_state != 0:
            return self._fail(_CLOSE_INVALID_PAYLOAD, "text message ends inside a UTF-8 sequence")
        if self.message == NULL:
            payload = b""
        else:
            payload = <object>self.message
            Py_XDECREF(self.message)
            self.message = NULL
        self.events.append((_frames_pyop_text if self.message_opcode == 1 else _frames_pyop_binary,
                            payload))
        self.message_opcode = 0
        self.message_length = 0
        self.message_capacity = 0
        return 0
