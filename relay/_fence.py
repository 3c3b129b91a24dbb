"""Until when this node may serve a session: the lease fence of a cluster node (relay/_clusternode.py).

The fan-out checks it once per received message (relay/_endpoint.py): a node whose lease ran out
(it was paused, or cut off from the cluster's state store) stops its sessions before it serves
another message, since another node may have taken them over.  A single node is never fenced.
"""

from __future__ import annotations

import math

__all__ = ["Fence", "UNFENCED"]


class Fence:
    """``valid_until`` is a trio clock time; ``lapsed()`` stops every session of the node."""

    __slots__ = ("valid_until", "_on_lapse")

    def __init__(self, valid_until: float = -math.inf, on_lapse=None) -> None:
        self.valid_until = valid_until
        self._on_lapse = on_lapse

    def lapsed(self) -> None:
        if self._on_lapse is not None:
            self._on_lapse()


UNFENCED = Fence(math.inf)
