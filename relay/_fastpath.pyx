# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""relay's Cython fast path: the hot primitives, with the same API as relay._purepath.

See docs/fastpath.md.  Split by primitive into include files so that each stays readable.
"""

from relay._errors import CookieError, EnvelopeError, LocalProtocolError, RemoteProtocolError

include "_fp_frames.pxi"
include "_fp_envelope.pxi"
include "_fp_cookie.pxi"
include "_fp_tokens.pxi"

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_CONTROL_PAYLOAD",
    "MAX_KIND_BYTES",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameDecoder",
    "build_envelope",
    "build_set_cookie",
    "close_payload",
    "encode_client_frame",
    "encode_frame",
    "envelope_frame_header",
    "envelope_header",
    "frame_header",
    "murmur3_token",
    "parse_close_payload",
    "parse_cookie",
    "peek_envelope",
    "random_token",
    "unmask",
]
