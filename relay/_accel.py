"""The one switch between the Cython fast path and its pure-Python twin.

Every hot primitive is imported from here, never from a twin directly.  ``RELAY_PUREPYTHON=1``
(any non-empty value but ``0``) forces the pure twin at run time; otherwise the compiled
``relay._fastpath`` is used when it was built.  See docs/fastpath.md for the API both share.
"""

from __future__ import annotations

import os

_forced_pure = os.environ.get("RELAY_PUREPYTHON", "") not in ("", "0")

if _forced_pure:
    from relay._purepath import *  # noqa: F401,F403
    from relay._purepath import __all__

    FASTPATH_ACTIVE = False
    WHY = "pure Python (RELAY_PUREPYTHON is set)"
else:
    try:
        from relay._fastpath import *  # noqa: F401,F403
        from relay._fastpath import __all__

        FASTPATH_ACTIVE = True
        WHY = "Cython fast path"
    except ImportError as exc:  # built without a compiler, or RELAY_PUREPYTHON at build time
        from relay._purepath import *  # noqa: F401,F403
        from relay._purepath import __all__

        FASTPATH_ACTIVE = False
        WHY = f"pure Python (relay._fastpath not importable: {exc})"


def fastpath_active() -> bool:
    """Whether the Cython fast path (rather than the pure-Python twin) is in use."""
    return FASTPATH_ACTIVE


def implementation() -> str:
    """A one-line description of the active implementation, for --version, logs and reports."""
    return WHY
