# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""relay's Cython fast path: the hot primitives, with the same API as relay._purepath.

See docs/fastpath.md.  Split by primitive into include files so that each stays readable.
"""

from relay._fastpath_api import FASTPATH_NAMES
from relay._errors import CookieError, EnvelopeError, LocalProtocolError, RemoteProtocolError

include "_fp_frames.pxi"
include "_fp_envelope.pxi"
include "_fp_cookie.pxi"
include "_fp_tokens.pxi"

__all__ = list(FASTPATH_NAMES)
