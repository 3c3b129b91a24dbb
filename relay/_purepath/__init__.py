"""The pure-Python twin of relay._fastpath: same names, same behaviour, same exceptions.

See docs/fastpath.md for the API.  Used when the extension was not built or RELAY_PUREPYTHON=1.
"""

from relay._fastpath_api import FASTPATH_NAMES
from relay._purepath.cookie import build_set_cookie, parse_cookie
from relay._purepath.envelope import (
    MAX_KIND_BYTES,
    MAX_SENDER_BYTES,
    build_envelope,
    envelope_frame_header,
    envelope_header,
    next_envelope,
    peek_envelope,
    sender_tail,
)
from relay._purepath.frames import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    close_payload,
    encode_client_frame,
    encode_frame,
    frame_header,
    parse_close_payload,
    unmask,
)
from relay._purepath.tokens import murmur3_token, random_token

__all__ = list(FASTPATH_NAMES)
