"""The one switch between the Cython fast path and its pure-Python twin.

Every hot primitive is imported from here, never from a twin directly.  ``RELAY_PUREPYTHON=1``
(any non-empty value but ``0``) forces the pure twin at run time; otherwise the compiled
``relay._fastpath`` is used when it was built.  See docs/fastpath.md for the API both share.

When the pure twin is used only because this ``relay/`` has no compiled extension while another
entry of ``sys.path`` holds a compiled build (typically ``python -m relay`` started in a checkout
after ``pip install .``: the checkout's ``relay/`` shadows the installed one), ``SHADOWED_BUILD``
names that build, so that the CLI and the node's start-up can say so loudly.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from typing import Iterable, Optional

_forced_pure = os.environ.get("RELAY_PUREPYTHON", "") not in ("", "0")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def find_shadowed_build(package_dir: str, path_entries: Iterable[str]) -> Optional[str]:
    """The compiled ``relay._fastpath`` Python would import if ``package_dir`` were not on the path.

    ``path_entries`` is searched as ``sys.path`` is, minus the entry holding ``package_dir``;
    returns the extension's file, or None when the relay found there is not compiled (or is
    ``package_dir`` itself).  Only files are looked at: nothing is imported.
    """
    def real(path: str) -> str:
        return os.path.realpath(path or os.curdir)  # "" in sys.path is the current directory

    package_dir = real(package_dir)
    own_entry = os.path.dirname(package_dir)
    others = [entry for entry in path_entries if isinstance(entry, str) and real(entry) != own_entry]
    finder = importlib.machinery.PathFinder
    package = finder.find_spec("relay", others)
    locations = list(package.submodule_search_locations or []) if package is not None else []
    if not locations or any(real(location) == package_dir for location in locations):
        return None
    extension = finder.find_spec("relay._fastpath", locations)
    if extension is None or not isinstance(extension.loader, importlib.machinery.ExtensionFileLoader):
        return None
    return extension.origin


SHADOWED_BUILD: Optional[str] = None

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
        SHADOWED_BUILD = find_shadowed_build(_PACKAGE_DIR, sys.path)
        WHY = f"pure Python (relay._fastpath not importable: {exc})"
        if SHADOWED_BUILD is not None:
            WHY = f"pure Python (this tree has no compiled relay._fastpath; it shadows the compiled {SHADOWED_BUILD})"


def fastpath_active() -> bool:
    """Whether the Cython fast path (rather than the pure-Python twin) is in use."""
    return FASTPATH_ACTIVE


def implementation() -> str:
    """A one-line description of the active implementation, for --version, logs and reports."""
    return WHY


# How to run the compiled build instead of a shadowing source tree: one line, for logs.
SHADOWED_BUILD_HINT = ("run the installed build with the console script `relay serve` (it does not put the "
                       "current directory on sys.path), or compile this tree in place with `pip install -e .`")


def shadowed_build_warning() -> Optional[str]:
    """The multi-line warning for a shadowed compiled build (see ``SHADOWED_BUILD``), or None."""
    if SHADOWED_BUILD is None:
        return None
    return (
        "WARNING: relay is running its pure-Python twin, not the Cython fast path.\n"
        f"WARNING:   it was imported from {_PACKAGE_DIR}, a source tree without a compiled relay._fastpath,\n"
        f"WARNING:   which shadows the compiled build installed at {SHADOWED_BUILD}\n"
        "WARNING:   (Python was started in the checkout, or the checkout is on PYTHONPATH / sys.path).\n"
        "WARNING:   To use the compiled build: `relay serve` (the console script), or run from outside the\n"
        "WARNING:   checkout; or compile this tree in place: `pip install -e .`.\n"
        "WARNING:   RELAY_PUREPYTHON=1 selects the pure twin on purpose (and silences this).\n"
    )


def print_shadowed_build_warning(stream=None) -> None:
    """Write ``shadowed_build_warning()`` to ``stream`` (default stderr) when there is one."""
    text = shadowed_build_warning()
    if text is not None:
        print(text, end="", file=sys.stderr if stream is None else stream, flush=True)
