"""Type stubs of relay._fastpath, the Cython fast path (same API as relay._purepath; docs/fastpath.md).

Every name of relay._fastpath_api.FASTPATH_NAMES is here, with the pure twin's parameters and
docstrings; tests/tooling/test_stubs.py keeps them so.
"""

from typing import Final, TypeAlias

# Anything with the buffer protocol (bytes, bytearray, memoryview, ...).
_BytesLike: TypeAlias = bytes | bytearray | memoryview

DEFAULT_MAX_MESSAGE_BYTES: Final = 16777216
MAX_CONTROL_PAYLOAD: Final = 125
MAX_KIND_BYTES: Final = 32
MAX_SENDER_BYTES: Final = 255
OP_BINARY: Final = 2
OP_CLOSE: Final = 8
OP_CONTINUATION: Final = 0
OP_PING: Final = 9
OP_PONG: Final = 10
OP_TEXT: Final = 1

class FrameDecoder:
    """Sans-IO, incremental WebSocket frame decoder; see docs/fastpath.md section 1.

    ``feed`` and ``buffer_updated`` parse every complete frame at once (nothing is kept of the
    caller's bytes but a partial header) and queue the events for ``next_event``.  When a fault is
    found while earlier events are still queued, those events are returned first and the error is
    raised by the ``next_event`` call after them; otherwise the call that found it raises."""

    def __init__(self, max_message_size: int = 16777216, *, client_side: bool = False) -> None: ...
    def feed(self, data: _BytesLike) -> None:
        """Append bytes (any bytes-like object; consumed at once, the caller may reuse it)."""
    def get_buffer(self) -> memoryview:
        """A writable view of the decoder's receive buffer for ``sock.recv_into``.

        Valid only until the next call of any method of this decoder."""
    def buffer_updated(self, nbytes: int) -> None:
        """Parse the ``nbytes`` bytes written at the start of the last ``get_buffer`` view."""
    def payload_buffer(self, min_bytes: int = 65536) -> memoryview | None:
        """A writable view for the rest of the current data frame's payload, when at least
        ``min_bytes`` of it are still to come; else ``None``.

        ``sock.recv_into(view)`` then ``payload_received(n)``.  (The pure twin lands the bytes in a
        buffer of its own and copies them; the Cython twin receives them in place.)  Valid only
        until the next call of any method of this decoder; do not keep it."""
    def payload_received(self, nbytes: int) -> None:
        """Take the ``nbytes`` bytes written at the start of the last ``payload_buffer`` view."""
    def next_event(self) -> tuple[int, bytes] | None:
        """The next ``(opcode, payload)`` event, or ``None`` when more bytes are needed."""

def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The 2, 4 or 10 byte header of an unmasked (server) frame, with minimal length encoding."""

def encode_frame(opcode: int, payload: _BytesLike, fin: bool = True) -> bytes:
    """One unmasked frame (header + payload) in one new ``bytes``."""

def encode_client_frame(opcode: int, payload: _BytesLike, mask_key: _BytesLike | None = None,
                        fin: bool = True) -> bytes:
    """One masked (client) frame; ``mask_key`` is 4 bytes, random when ``None``."""

def close_payload(code: int | None = None, reason: str = "") -> bytes:
    """The payload of a close frame: ``b""`` without a code, else the code and UTF-8 reason."""

def parse_close_payload(payload: _BytesLike) -> tuple[int | None, str]:
    """``(code, reason)`` of a close payload, ``(None, "")`` when empty."""

def unmask(data: _BytesLike, mask_key: _BytesLike) -> bytes:
    """XOR ``data`` with the 4-byte ``mask_key``, key offset 0 on the first byte."""

# Envelopes: a client's [kind, seq, body]; the relay's stamped [kind, seq, body, sender].
def envelope_header(kind: str, seq: int, *, stamped: bool = False) -> bytes:
    """The bytes that precede the body: ``0x93`` (``0x94`` when ``stamped``: a sender follows the
    body), ``kind`` as fixstr/str8, ``seq`` as the smallest msgpack unsigned int.
    ``LocalProtocolError`` for an empty or too long kind or a seq outside 0..2**64-1."""

def build_envelope(kind: str, seq: int, body: _BytesLike, sender: str | None = None) -> bytes:
    """``envelope_header(kind, seq) + body``, or with ``sender`` (a str) the stamped form
    ``[kind, seq, body, sender]``; ``body`` is one packed msgpack object, trusted."""

def envelope_frame_header(kind: str, seq: int, body_length: int, sender_tail: _BytesLike) -> bytes:
    """The unmasked FIN binary WebSocket frame header of a stamped envelope, then its header.

    Send it, the body and ``sender_tail`` back to back (``sendmsg([header, body, tail])``): the
    body is never copied.  The frame's length counts all three."""

def sender_tail(sender: str) -> bytes:
    """The last element of a delivered envelope: ``sender`` as a msgpack str (fixstr or str8).

    Built once per participant and sent after every body it sends.  ``LocalProtocolError`` past
    MAX_SENDER_BYTES UTF-8 bytes or for text that is not encodable."""

def next_envelope(data: _BytesLike, offset: int) -> tuple[str, int, int, int, int]:
    """The envelope that starts at ``data[offset]`` in a buffer of envelopes back to back (a
    long-poll body): ``(kind, seq, body_offset, body_end, end)``, offsets into ``data``, ``end``
    where the next envelope starts.  The same checks as ``peek_envelope`` but for trailing bytes;
    ``EnvelopeError`` (1007) naming the fault, "truncated" when the buffer ends inside it."""

def peek_envelope(data: _BytesLike) -> tuple[str, int, int, int]:
    """Check that ``data`` is exactly one envelope, ``[kind, seq, body]`` or
    ``[kind, seq, body, extra]``; return ``(kind, seq, body_offset, body_end)``, where
    ``data[body_offset:body_end]`` is the body (``body_end == len(data)`` for three elements).

    A fourth element must be one well-formed msgpack object too; the relay ignores a client's and
    reads its own stamp from it on the client side.  Nothing of the body is copied or decoded, so
    no view into ``data`` outlives this call.  Raises ``EnvelopeError`` (close code 1007) naming
    the fault."""

def parse_cookie(header: str | bytes | list[str | bytes] | tuple[str | bytes, ...], name: str) -> str | None:
    """The value nginx gives for ``$cookie_<name>``, or ``None``.

    ``header`` is one Cookie header value (``str``, or ``bytes`` read as latin-1) or a list/tuple
    of them in the order they arrived.  The value is returned verbatim: quotes, commas and
    trailing spaces kept, nothing unescaped.  The first matching cookie wins."""

def build_set_cookie(name: str, value: str, *, path: str | None = "/", domain: str | None = None,
                     max_age: int | None = None, secure: bool = False, http_only: bool = True,
                     same_site: str | None = None, partitioned: bool = False) -> str:
    """The value of a ``Set-Cookie`` header; ``CookieError`` for anything that could inject."""

def murmur3_token(key: str | _BytesLike) -> int:
    """Murmur3Partitioner's token: h1 of MurmurHash3_x64_128 (seed 0) as a signed 64-bit int."""

def random_token(key: str | _BytesLike) -> int:
    """RandomPartitioner's token: abs() of the MD5 digest read as a signed big-endian int."""
