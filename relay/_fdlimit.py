"""The process's file-descriptor limit: every connection holds one descriptor.

``raise_fd_limit()`` lifts the soft limit to the hard one (the CLI does it at start: the process is
relay's own; an embedder decides for its process), and ``fd_limit_warning(config)`` says when the
limit is still too low for ``max_connections`` (the node logs it at start).
"""

from __future__ import annotations

from typing import Optional

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None

__all__ = ["raise_fd_limit", "fd_limit_warning", "FD_HEADROOM"]

# Descriptors besides client connections: listeners, the trio wakeup pipe, log files, DNS, Redis...
FD_HEADROOM = 64


def raise_fd_limit() -> Optional[tuple[int, int]]:
    """Raise the soft RLIMIT_NOFILE to the hard one; the (soft, hard) limits after that, or None."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard_target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        hard_target = hard
    if soft != resource.RLIM_INFINITY and soft < hard_target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard_target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fd_limit_warning(max_connections: int) -> Optional[str]:
    """A sentence for the log when the soft limit cannot hold ``max_connections``, else None."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= max_connections + FD_HEADROOM:
        return None
    return (f"the file descriptor limit is {soft} (hard {hard}): below max_connections {max_connections} "
            f"+ {FD_HEADROOM}; past it new connections fail (EMFILE). Raise it (ulimit -n, LimitNOFILE=) "
            f"or lower max_connections")
