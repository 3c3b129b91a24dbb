"""WebSocket frames (RFC 6455), pure-Python twin of relay/_fp_frames.pxi.

See docs/fastpath.md section 1.  Every rule, check order and error code here is mirrored by the
Cython twin; tests/unit/test_frames.py proves they agree on random and adversarial byte streams.

Check order inside a frame header (the first fault found wins, as soon as its bytes are there):
byte 0 (RSV bits, reserved opcode, fragmented control frame, continuation without a message,
new data frame inside a fragmented message), byte 1 (mask bit, control frame longer than 125, close
frame of 1 byte), extended length (non-minimal 16/64-bit length, 64-bit top bit, then 1009 for a
message that would exceed the limit), then the mask key.  A control frame's payload (at most 125
bytes) is validated once complete; a text message's UTF-8 is validated as its bytes arrive.
"""

from __future__ import annotations

import codecs
import operator
import os
import sys

from relay._closecodes import CloseCode
from relay._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_CONTROL_PAYLOAD",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "RECEIVE_BUFFER_BYTES",
    "PAYLOAD_BUFFER_MIN_BYTES",
    "FrameDecoder",
    "close_payload",
    "encode_client_frame",
    "encode_frame",
    "frame_header",
    "parse_close_payload",
    "unmask",
]

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
#: Size of the receive buffer that get_buffer() exposes for recv_into (allocated on first use).
RECEIVE_BUFFER_BYTES = 256 * 1024
PAYLOAD_BUFFER_MIN_BYTES = 64 * 1024
#: A close reason must leave room for the 2-byte code inside MAX_CONTROL_PAYLOAD.
MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD - 2
#: Largest header: 2 fixed bytes, 8 bytes of 64-bit length, 4 bytes of mask key.
MAX_HEADER_BYTES = 14

_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_KNOWN_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))


def _close_code_allowed_on_wire(code: int) -> bool:
    # RFC 6455 7.4 plus the IANA registry: 1012-1014 are registered (Autobahn 7.7.x accepts them),
    # 1004-1006 and 1015 must never appear in a close frame, 3000-4999 belong to applications.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _byte_view(data) -> memoryview:
    """A flat unsigned-byte view of any bytes-like object (``TypeError`` otherwise, as in C)."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _rotated_key(mask_key, offset: int) -> bytes:
    key = bytes(mask_key)
    return key[offset:] + key[:offset]


def _xor(data, key4: bytes) -> bytes:
    # One big-int XOR: linear time in C, no per-byte Python loop.
    n = len(data)
    if n == 0:
        return b""
    keystream = key4 * (n // 4 + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(keystream[:n], "little")
    return value.to_bytes(n, "little")


def unmask(data, mask_key) -> bytes:
    """XOR ``data`` with the 4-byte ``mask_key``, key offset 0 on the first byte."""
    view = _byte_view(data)
    key = bytes(_byte_view(mask_key))
    if len(key) != 4:
        raise ValueError("a mask key is exactly 4 bytes")
    return _xor(view, key)


def _check_opcode(opcode) -> int:
    opcode = operator.index(opcode)
    if opcode not in _KNOWN_OPCODES:
        raise LocalProtocolError(f"opcode {opcode} is not defined by RFC 6455")
    return opcode


def _header(opcode, length, fin, mask_bit: int) -> bytes:
    opcode = _check_opcode(opcode)
    length = operator.index(length)
    fin = bool(fin)
    if length < 0:
        raise LocalProtocolError("a frame length cannot be negative")
    if length >= 1 << 63:
        raise LocalProtocolError("a frame length must fit in 63 bits")
    if opcode >= OP_CLOSE:
        if length > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError(f"a control frame carries at most {MAX_CONTROL_PAYLOAD} bytes")
        if not fin:
            raise LocalProtocolError("a control frame cannot be fragmented")
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 1 << 16:
        return bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    return bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")


def frame_header(opcode, length, fin=True) -> bytes:
    """The 2, 4 or 10 byte header of an unmasked (server) frame, with minimal length encoding."""
    return _header(opcode, length, fin, 0)


def encode_frame(opcode, payload, fin=True) -> bytes:
    """One unmasked frame (header + payload) in one new ``bytes``."""
    view = _byte_view(payload)
    return _header(opcode, len(view), fin, 0) + view


def encode_client_frame(opcode, payload, mask_key=None, fin=True) -> bytes:
    """One masked (client) frame; ``mask_key`` is 4 bytes, random when ``None``."""
    view = _byte_view(payload)
    header = _header(opcode, len(view), fin, 0x80)
    key = os.urandom(4) if mask_key is None else bytes(_byte_view(mask_key))
    if len(key) != 4:
        raise ValueError("a mask key is exactly 4 bytes")
    return header + key + _xor(view, key)


def close_payload(code=None, reason="") -> bytes:
    """The payload of a close frame: ``b""`` without a code, else the code and UTF-8 reason."""
    if not isinstance(reason, str):
        raise TypeError("a close reason is a str")
    if code is None:
        if reason:
            raise LocalProtocolError("a close reason needs a close code")
        return b""
    code = operator.index(code)
    if not _close_code_allowed_on_wire(code):
        raise LocalProtocolError(f"close code {code} may not be sent")
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON_BYTES:
        raise LocalProtocolError(f"a close reason is at most {MAX_CLOSE_REASON_BYTES} UTF-8 bytes")
    return code.to_bytes(2, "big") + encoded


def _close_payload_fault(payload: bytes):
    """(close_code, reason) of what is wrong with a received close payload, or None."""
    if len(payload) == 1:
        return CloseCode.PROTOCOL_ERROR, "a close payload cannot be 1 byte"
    if len(payload) >= 2:
        code = int.from_bytes(payload[:2], "big")
        if not _close_code_allowed_on_wire(code):
            return CloseCode.PROTOCOL_ERROR, f"close code {code} is not allowed on the wire"
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            return CloseCode.INVALID_FRAME_PAYLOAD_DATA, "close reason is not valid UTF-8"
    return None


def parse_close_payload(payload):
    """``(code, reason)`` of a close payload, ``(None, "")`` when empty."""
    data = bytes(_byte_view(payload))
    fault = _close_payload_fault(data)
    if fault is not None:
        raise RemoteProtocolError(fault[1], close_code=fault[0])
    if not data:
        return None, ""
    return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8")


# Unicode 15, table 3-7: allowed range of the second byte after each lead byte.
def _second_byte_range(lead: int):
    if lead == 0xE0:
        return 0xA0, 0xBF
    if lead == 0xED:
        return 0x80, 0x9F
    if lead == 0xF0:
        return 0x90, 0xBF
    if lead == 0xF4:
        return 0x80, 0x8F
    return 0x80, 0xBF


class _Utf8Checker:
    """Incremental UTF-8 validation that fails on the first byte that cannot lead anywhere valid.

    CPython's incremental decoder already does that, except that it keeps a surrogate prefix
    (ED A0..BF) pending instead of refusing it at once; the pending tail is re-checked here.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, chunk) -> bool:
        try:
            self._decoder.decode(chunk, False)
        except UnicodeDecodeError:
            return False
        pending = self._decoder.getstate()[0]
        if len(pending) >= 2:
            low, high = _second_byte_range(pending[0])
            if not low <= pending[1] <= high:
                return False
        return True

    def finish(self) -> bool:
        try:
            self._decoder.decode(b"", True)
        except UnicodeDecodeError:
            return False
        return True


class FrameDecoder:
    """Sans-IO, incremental WebSocket frame decoder; see docs/fastpath.md section 1.

    ``feed`` and ``buffer_updated`` parse every complete frame at once (nothing is kept of the
    caller's bytes but a partial header) and queue the events for ``next_event``.  When a fault is
    found while earlier events are still queued, those events are returned first and the error is
    raised by the ``next_event`` call after them; otherwise the call that found it raises.
    """

    def __init__(self, max_message_size=DEFAULT_MAX_MESSAGE_BYTES, *, client_side=False):
        max_message_size = operator.index(max_message_size)
        if max_message_size < 0:
            raise ValueError("max_message_size cannot be negative")
        self._max_message_size = min(max_message_size, sys.maxsize)
        self._client_side = bool(client_side)
        self._header = bytearray()
        self._in_frame = False
        self._frame_opcode = 0
        self._frame_fin = False
        self._frame_remaining = 0
        self._mask_key = b""
        self._mask_offset = 0
        self._control_chunks = []
        self._message_opcode = 0
        self._message_chunks = []
        self._message_length = 0
        self._utf8 = None
        self._events = []
        self._events_head = 0
        self._error = None
        self._receive_buffer = None
        self._landing = None  # payload_buffer(): where the rest of the current frame lands
        self._payload_offered = 0

    # ---- public API ----

    def feed(self, data) -> None:
        """Append bytes (any bytes-like object; consumed at once, the caller may reuse it)."""
        self._payload_offered = 0
        if self._error is not None:
            raise self._error.with_traceback(None)
        self._consume_and_report(_byte_view(data))

    def get_buffer(self) -> memoryview:
        """A writable view of the decoder's receive buffer for ``sock.recv_into``.

        Valid only until the next call of any method of this decoder.
        """
        self._payload_offered = 0
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._receive_buffer is None:
            self._receive_buffer = bytearray(RECEIVE_BUFFER_BYTES)
        return memoryview(self._receive_buffer)

    def payload_buffer(self, min_bytes=PAYLOAD_BUFFER_MIN_BYTES):
        """A writable view for the rest of the current data frame's payload, when at least
        ``min_bytes`` of it are still to come; else ``None``.

        ``sock.recv_into(view)`` then ``payload_received(n)``.  (The pure twin lands the bytes in a
        buffer of its own and copies them; the Cython twin receives them in place.)  Valid only
        until the next call of any method of this decoder; do not keep it.
        """
        wanted = max(operator.index(min_bytes), 1)
        self._payload_offered = 0
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not self._in_frame or self._frame_opcode >= OP_CLOSE or self._frame_remaining < wanted:
            return None
        self._landing = bytearray(self._frame_remaining)
        self._payload_offered = self._frame_remaining
        return memoryview(self._landing)

    def payload_received(self, nbytes) -> None:
        """Take the ``nbytes`` bytes written at the start of the last ``payload_buffer`` view."""
        n = operator.index(nbytes)
        offered = self._payload_offered
        self._payload_offered = 0
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not 0 <= n <= offered:
            raise ValueError("nbytes does not fit the view given by payload_buffer()")
        landing, self._landing = self._landing, None
        if n == 0:
            return
        fault = self._take_payload(memoryview(landing)[:n])
        if fault is None:
            self._frame_remaining -= n
            if self._frame_remaining == 0:
                fault = self._finish_frame()
        self._report(fault)

    def buffer_updated(self, nbytes) -> None:
        """Parse the ``nbytes`` bytes written at the start of the last ``get_buffer`` view."""
        self._payload_offered = 0
        if self._error is not None:
            raise self._error.with_traceback(None)
        nbytes = operator.index(nbytes)
        if not 0 <= nbytes <= RECEIVE_BUFFER_BYTES or (nbytes and self._receive_buffer is None):
            raise ValueError("nbytes does not fit the buffer given by get_buffer()")
        if nbytes:
            self._consume_and_report(memoryview(self._receive_buffer)[:nbytes])

    def next_event(self):
        """The next ``(opcode, payload)`` event, or ``None`` when more bytes are needed."""
        self._payload_offered = 0
        events = self._events
        if self._events_head < len(events):
            event = events[self._events_head]
            self._events_head += 1
            if self._events_head == len(events):
                events.clear()
                self._events_head = 0
            return event
        if self._error is not None:
            raise self._error.with_traceback(None)
        return None

    # ---- internals ----

    def _consume_and_report(self, view: memoryview) -> None:
        self._report(self._consume(view))

    def _report(self, fault) -> None:
        if fault is not None:
            self._error = RemoteProtocolError(fault[1], close_code=fault[0])
            # release what an unfinished message holds: the decoder will never finish it
            self._message_chunks = []
            self._control_chunks = []
            if self._events_head == len(self._events):
                raise self._error.with_traceback(None)

    def _consume(self, view: memoryview):
        """Parse ``view``; return ``(close_code, reason)`` on the first fault, else None."""
        pos = 0
        end = len(view)
        while True:
            if not self._in_frame:
                if pos == end:
                    return None
                header = self._header
                if header:
                    # a header split across calls: take only what this header still needs
                    while pos < end:
                        needed = self._header_size(header) - len(header)
                        if needed <= 0:
                            break
                        header += view[pos : pos + needed]
                        pos += min(needed, end - pos)
                        result = self._check_header(header)
                        if isinstance(result, tuple):
                            return result
                    result = self._check_header(header)
                    if isinstance(result, tuple):
                        return result
                    if result == 0:
                        return None
                    self._begin_frame(bytes(header))
                    header.clear()
                else:
                    result = self._check_header(view[pos : pos + MAX_HEADER_BYTES])
                    if isinstance(result, tuple):
                        return result
                    if result == 0:
                        header += view[pos:end]
                        return None
                    self._begin_frame(bytes(view[pos : pos + result]))
                    pos += result
            take = min(end - pos, self._frame_remaining)
            if take:
                fault = self._take_payload(view[pos : pos + take])
                if fault is not None:
                    return fault
                pos += take
                self._frame_remaining -= take
            if self._frame_remaining:
                return None
            fault = self._finish_frame()
            if fault is not None:
                return fault

    @staticmethod
    def _header_size(header) -> int:
        if len(header) < 2:
            return 2
        length7 = header[1] & 0x7F
        size = 2 + (2 if length7 == 126 else 8 if length7 == 127 else 0)
        return size + (4 if header[1] & 0x80 else 0)

    def _check_header(self, header):
        """Check the bytes of a header seen so far.

        Returns a fault ``(close_code, reason)``, 0 if the header is incomplete, or its size.
        """
        available = len(header)
        if available == 0:
            return 0
        first = header[0]
        opcode = first & 0x0F
        fin = first & 0x80
        if first & 0x70:
            return CloseCode.PROTOCOL_ERROR, "RSV bit set but no extension was negotiated"
        if opcode not in _KNOWN_OPCODES:
            return CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode}"
        is_control = opcode >= OP_CLOSE
        if is_control and not fin:
            return CloseCode.PROTOCOL_ERROR, "fragmented control frame"
        if opcode == OP_CONTINUATION and not self._message_opcode:
            return CloseCode.PROTOCOL_ERROR, "continuation frame without a message to continue"
        if opcode in (OP_TEXT, OP_BINARY) and self._message_opcode:
            return CloseCode.PROTOCOL_ERROR, "new message inside a fragmented message"
        if available < 2:
            return 0
        second = header[1]
        masked = bool(second & 0x80)
        if masked == self._client_side:
            if self._client_side:
                return CloseCode.PROTOCOL_ERROR, "masked frame from the server"
            return CloseCode.PROTOCOL_ERROR, "unmasked frame from a client"
        length7 = second & 0x7F
        if is_control:
            if length7 > MAX_CONTROL_PAYLOAD:
                return CloseCode.PROTOCOL_ERROR, "control frame longer than 125 bytes"
            if opcode == OP_CLOSE and length7 == 1:
                return CloseCode.PROTOCOL_ERROR, "a close payload cannot be 1 byte"
        if length7 == 126:
            if available < 4:
                return 0
            length = int.from_bytes(header[2:4], "big")
            if length < 126:
                return CloseCode.PROTOCOL_ERROR, "16-bit length used for a length below 126"
            size = 4
        elif length7 == 127:
            if available < 10:
                return 0
            length = int.from_bytes(header[2:10], "big")
            if length >> 63:
                return CloseCode.PROTOCOL_ERROR, "64-bit length with the top bit set"
            if length < 1 << 16:
                return CloseCode.PROTOCOL_ERROR, "64-bit length used for a length below 65536"
            size = 10
        else:
            length = length7
            size = 2
        if not is_control and length > self._max_message_size - self._message_length:
            return CloseCode.MESSAGE_TOO_BIG, (
                f"message larger than the limit of {self._max_message_size} bytes"
            )
        if masked:
            size += 4
        return size if available >= size else 0

    def _begin_frame(self, header: bytes) -> None:
        first = header[0]
        second = header[1]
        length7 = second & 0x7F
        if length7 == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length7 == 127:
            length = int.from_bytes(header[2:10], "big")
        else:
            length = length7
        self._frame_opcode = opcode = first & 0x0F
        self._frame_fin = bool(first & 0x80)
        self._frame_remaining = length
        self._mask_key = header[-4:] if second & 0x80 else b""
        self._mask_offset = 0
        self._in_frame = True
        if opcode in (OP_TEXT, OP_BINARY):
            self._message_opcode = opcode
            self._message_length = 0
            self._message_chunks = []
            self._utf8 = _Utf8Checker() if opcode == OP_TEXT else None
        if opcode < OP_CLOSE:
            self._message_length += length
        else:
            self._control_chunks = []

    def _take_payload(self, chunk: memoryview):
        if self._mask_key:
            data = _xor(chunk, _rotated_key(self._mask_key, self._mask_offset))
            self._mask_offset = (self._mask_offset + len(chunk)) & 3
        else:
            data = bytes(chunk)
        if self._frame_opcode >= OP_CLOSE:
            self._control_chunks.append(data)
            return None
        self._message_chunks.append(data)
        if self._utf8 is not None and not self._utf8.feed(data):
            return CloseCode.INVALID_FRAME_PAYLOAD_DATA, "text message is not valid UTF-8"
        return None

    def _finish_frame(self):
        self._in_frame = False
        opcode = self._frame_opcode
        if opcode >= OP_CLOSE:
            payload = b"".join(self._control_chunks)
            self._control_chunks = []
            if opcode == OP_CLOSE:
                fault = _close_payload_fault(payload)
                if fault is not None:
                    return fault
            self._events.append((opcode, payload))
            return None
        if not self._frame_fin:
            return None
        if self._utf8 is not None and not self._utf8.finish():
            return CloseCode.INVALID_FRAME_PAYLOAD_DATA, "text message ends inside a UTF-8 sequence"
        payload = b"".join(self._message_chunks)
        self._events.append((self._message_opcode, payload))
        self._message_chunks = []
        self._message_opcode = 0
        self._message_length = 0
        self._utf8 = None
        return None
