"""The Cassandra-style token ring: which node owns a session ID, and its replicas.

Tokens come from the partitioner (``murmur3`` or ``random``, bit-exact with Cassandra's).  A key
belongs to the node holding the first ring token at or after the key's token, wrapping around;
its replicas are that node and the next distinct nodes clockwise (SimpleStrategy), owner first.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Union

from relay._accel import murmur3_token, random_token

__all__ = ["Ring", "PARTITIONERS", "evenly_spaced_tokens"]

PARTITIONERS = {"murmur3": murmur3_token, "random": random_token}
MURMUR3_MIN = -(2**63)
RANDOM_MAX = 2**127


def evenly_spaced_tokens(nodes: int, partitioner: str = "murmur3") -> list:
    """DataStax's "calculating tokens for a single data center": one token per node."""
    if nodes < 1:
        raise ValueError("the number of nodes must be at least 1")
    if partitioner == "murmur3":
        return [(2**64 // nodes) * i + MURMUR3_MIN for i in range(nodes)]
    if partitioner == "random":
        return [i * RANDOM_MAX // nodes for i in range(nodes)]
    raise ValueError(f"unknown partitioner {partitioner!r} (murmur3 or random)")


class Ring:
    """``Ring({"CB_Server_1": [token, ...], ...}, partitioner="murmur3", replication_factor=1)``."""

    def __init__(self, tokens: dict, *, partitioner: str = "murmur3", replication_factor: int = 1) -> None:
        if partitioner not in PARTITIONERS:
            raise ValueError(f"unknown partitioner {partitioner!r} (murmur3 or random)")
        if not tokens:
            raise ValueError("a ring needs at least one node")
        if not 1 <= replication_factor <= len(tokens):
            raise ValueError("replication_factor must be between 1 and the number of nodes")
        entries = []
        seen = {}
        for node, node_tokens in tokens.items():
            if isinstance(node_tokens, int):
                node_tokens = [node_tokens]
            if not node_tokens:
                raise ValueError(f"node {node!r} has no token")
            for token in node_tokens:
                if token in seen:
                    raise ValueError(f"token {token} is given to both {seen[token]!r} and {node!r}")
                seen[token] = node
                entries.append((int(token), node))
        entries.sort()
        self.partitioner = partitioner
        self.replication_factor = replication_factor
        self.nodes = list(tokens)
        self._hash = PARTITIONERS[partitioner]
        self._tokens = [token for token, _node in entries]
        self._owners = [node for _token, node in entries]

    def token(self, key: Union[str, bytes]) -> int:
        return self._hash(key)

    def _index(self, key) -> int:
        index = bisect.bisect_left(self._tokens, self._hash(key))
        return 0 if index == len(self._tokens) else index

    def owner(self, session_id: Union[str, bytes]) -> str:
        return self._owners[self._index(session_id)]

    def replicas(self, session_id: Union[str, bytes]) -> list:
        return self.walk(self._index(session_id), self.replication_factor)

    def successors(self, session_id) -> list:
        """Every distinct node clockwise from the owner (the failover order)."""
        return self.walk(self._index(session_id), len(self.nodes))

    def walk(self, index: int, count: int) -> list:
        """Distinct nodes clockwise from ring position ``index``."""
        found = []
        owners = self._owners
        for step in range(len(owners)):
            node = owners[(index + step) % len(owners)]
            if node not in found:
                found.append(node)
                if len(found) == count:
                    break
        return found

    def entries(self) -> Iterable:
        """(token, node) in ring order."""
        return zip(self._tokens, self._owners)
