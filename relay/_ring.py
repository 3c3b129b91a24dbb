"""The Cassandra-style token ring: which node owns a session ID, its replicas, and where tokens go.

Tokens come from the partitioner (``murmur3`` or ``random``, bit-exact with Cassandra's).  A key
belongs to the node holding the first ring token at or after the key's token, wrapping around;
its replicas are that node and the next distinct nodes clockwise (SimpleStrategy), owner first.

Lookups are one bisect over the sorted tokens and one index into tables built once per ring (the
owner, the replicas and, on first use, every distinct node in ring order for each position), so a
lookup allocates nothing.  ``allocate_tokens`` places a node's ``num_tokens`` given the nodes before
it in the cluster file; docs/ring.md explains how and how even it is.
"""

from __future__ import annotations

from bisect import bisect_left
from fractions import Fraction
from typing import Mapping, Sequence, Union

from relay._accel import murmur3_token, random_token

__all__ = ["Ring", "PARTITIONERS", "TOKEN_RANGES", "RING_SPANS", "evenly_spaced_tokens", "allocate_tokens"]

PARTITIONERS = {"murmur3": murmur3_token, "random": random_token}
MURMUR3_MIN = -(2**63)
MURMUR3_MAX = 2**63 - 1
RANDOM_MAX = 2**127
#: The tokens a node may hold, per partitioner (Cassandra's Murmur3Partitioner and RandomPartitioner).
TOKEN_RANGES = {"murmur3": (MURMUR3_MIN, MURMUR3_MAX), "random": (0, RANDOM_MAX)}
#: The size of the ring each share is a fraction of (what ``nodetool ring`` divides by).
RING_SPANS = {"murmur3": 2**64, "random": RANDOM_MAX}

Key = Union[str, bytes, bytearray, memoryview]


def _check_partitioner(partitioner: str) -> None:
    if partitioner not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {partitioner!r} (murmur3 or random)")


def evenly_spaced_tokens(nodes: int, partitioner: str = "murmur3") -> list:
    """DataStax's "calculating tokens for a single data center": one token per node."""
    _check_partitioner(partitioner)
    if nodes < 1:
        raise ValueError("the number of nodes must be at least 1")
    if partitioner == "murmur3":
        return [(2**64 // nodes) * i + MURMUR3_MIN for i in range(nodes)]
    return [i * RANDOM_MAX // nodes for i in range(nodes)]


class Ring:
    """``Ring({"CB_Server_1": [token, ...], ...}, partitioner="murmur3", replication_factor=1)``.

    A node's tokens are a list or one int.  ``nodes`` keeps the order given (the cluster file's).
    """

    def __init__(self, tokens: Mapping[str, Union[int, Sequence[int]]], *, partitioner: str = "murmur3",
                 replication_factor: int = 1) -> None:
        _check_partitioner(partitioner)
        if not tokens:
            raise ValueError("a ring needs at least one node")
        if isinstance(replication_factor, bool) or not isinstance(replication_factor, int) \
                or not 1 <= replication_factor <= len(tokens):
            raise ValueError(f"replication_factor must be between 1 and the number of nodes ({len(tokens)}), "
                             f"got {replication_factor!r}")
        low, high = TOKEN_RANGES[partitioner]
        holder: dict = {}
        for node, node_tokens in tokens.items():
            if isinstance(node_tokens, int):
                node_tokens = [node_tokens]
            if not node_tokens:
                raise ValueError(f"node {node!r} has no token")
            for token in node_tokens:
                if isinstance(token, bool) or not isinstance(token, int) or not low <= token <= high:
                    raise ValueError(f"node {node!r}: token {token!r} is not an integer in [{low}, {high}] "
                                     f"({partitioner})")
                if token in holder:
                    raise ValueError(f"token {token} is given to both {holder[token]!r} and {node!r}")
                holder[token] = node
        self.partitioner = partitioner
        self.replication_factor = replication_factor
        self.nodes = tuple(tokens)
        self._hash = PARTITIONERS[partitioner]
        self._tokens = sorted(holder)
        owners = [holder[token] for token in self._tokens]
        self._entries = tuple(zip(self._tokens, owners))
        # The tables have one more slot than there are tokens: bisect answers len(tokens) for a key
        # after the last token, and that slot repeats position 0 (the wrap), so lookups never branch.
        self._owner_at = owners + owners[:1]
        replicas = _clockwise_table(owners, replication_factor)
        self._replicas_at = replicas + replicas[:1]
        # Every node, for failover beyond RF: built per position when first asked (a table of
        # positions x nodes would be large for big vnode rings, and it is needed on failover only).
        self._successors_at: list = [None] * len(self._owner_at)

    # ------------------------------------------------------------------ lookups by key

    def token(self, key: Key) -> int:
        """The partitioner's token of ``key`` (str keys hash as UTF-8)."""
        return self._hash(key)

    def owner(self, key: Key) -> str:
        return self._owner_at[bisect_left(self._tokens, self._hash(key))]

    def replicas(self, key: Key) -> tuple:
        """The owner, then the next replication_factor - 1 distinct nodes clockwise."""
        return self._replicas_at[bisect_left(self._tokens, self._hash(key))]

    def successors(self, key: Key) -> tuple:
        """Every distinct node in ring order from the owner: the failover order beyond the replicas."""
        return self._successors(bisect_left(self._tokens, self._hash(key)))

    # ------------------------------------------------------------------ lookups by token

    def owner_of_token(self, token: int) -> str:
        return self._owner_at[bisect_left(self._tokens, token)]

    def replicas_of_token(self, token: int) -> tuple:
        return self._replicas_at[bisect_left(self._tokens, token)]

    def successors_of_token(self, token: int) -> tuple:
        return self._successors(bisect_left(self._tokens, token))

    def _successors(self, position: int) -> tuple:
        found = self._successors_at[position]
        if found is None:
            found = self._successors_at[position] = _walk(self._owner_at, position % len(self._tokens),
                                                          len(self.nodes))
        return found

    # ------------------------------------------------------------------ the ring as a whole

    def entries(self) -> tuple:
        """((token, node), ...) in ring order."""
        return self._entries

    def primary_ranges(self) -> dict:
        """{node: key-space size owned as primary}: the sum of (previous token, token] over its tokens."""
        span = RING_SPANS[self.partitioner]
        owned = dict.fromkeys(self.nodes, 0)
        tokens = self._tokens
        for position, (token, node) in enumerate(self._entries):
            owned[node] += _range_length(tokens[position - 1], token, span, len(tokens))
        return owned

    def shares(self) -> dict:
        """{node: fraction of the ring owned as primary}, in ``nodes`` order; they sum to 1."""
        span = RING_SPANS[self.partitioner]
        return {node: size / span for node, size in self.primary_ranges().items()}

    def effective_shares(self) -> dict:
        """{node: fraction of the ring it holds as one of the replicas}; they sum to replication_factor."""
        span = RING_SPANS[self.partitioner]
        held = dict.fromkeys(self.nodes, 0)
        tokens = self._tokens
        for position, token in enumerate(tokens):
            size = _range_length(tokens[position - 1], token, span, len(tokens))
            for node in self._replicas_at[position]:
                held[node] += size
        return {node: size / span for node, size in held.items()}

    def __repr__(self) -> str:
        return (f"Ring({len(self.nodes)} nodes, {len(self._tokens)} tokens, partitioner={self.partitioner!r}, "
                f"replication_factor={self.replication_factor})")


def _range_length(previous: int, token: int, span: int, ring_size: int) -> int:
    """The size of (previous, token] on a ring of ``span``; a lone token owns the whole ring."""
    if ring_size == 1:
        return span
    return (token - previous) % span


def _walk(owners: Sequence[str], position: int, count: int) -> tuple:
    """The first ``count`` distinct nodes clockwise from ``position`` (fewer if the ring has fewer)."""
    found: list = []
    size = len(owners)
    for step in range(size):
        node = owners[(position + step) % size]
        if node not in found:
            found.append(node)
            if len(found) == count:
                break
    return tuple(found)


def _clockwise_table(owners: list, count: int) -> list:
    """``_walk(owners, i, count)`` for every position i, in one backward sweep.

    The distinct nodes from position i are the owner of i followed by those from i + 1 without it:
    so each entry derives from the next one in O(count), not from a walk around the ring.
    """
    size = len(owners)
    table: list = [()] * size
    table[size - 1] = _walk(owners, size - 1, count)
    for position in range(size - 2, -1, -1):
        node, following = owners[position], table[position + 1]
        if following[0] == node:
            table[position] = following  # shared: the same tuple object
        else:
            table[position] = ((node,) + tuple(other for other in following if other != node))[:count]
    return table


# ---------------------------------------------------------------------------- the allocator

#: How far apart the allocator leaves the loads of the nodes it takes from, as a fraction of the
#: ideal share divided by num_tokens.  A node joining takes from at most num_tokens nodes; with
#: more nodes than that, the ones it leaves alone must already be below the new average, so the
#: loads are kept deliberately staggered (Cassandra's NoReplicationTokenAllocator does the same).
#: 0.9 is the best of the values tried for 16 tokens and 2..64 nodes (docs/ring.md).
STAGGER = Fraction(9, 10)


def allocate_tokens(previous: Sequence[Sequence[int]], count: int, partitioner: str = "murmur3") -> tuple:
    """``count`` tokens for a node joining after the nodes holding ``previous`` (their token lists).

    Deterministic (integer arithmetic only): every node computes the same ring from the same file,
    and the earlier nodes' tokens never change.  The first node gets evenly spaced tokens.  Each
    later node takes from the most loaded nodes (at most ``count`` of them, and only those above the
    average they would share with the new node), splitting their largest ranges, so that those
    nodes end near that average, staggered slightly (``STAGGER``); the new node gets the lowest
    target.  Sorted.
    """
    _check_partitioner(partitioner)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of tokens must be at least 1, got {count!r}")
    nodes = [list(tokens) for tokens in previous]
    if not any(nodes):
        return tuple(evenly_spaced_tokens(count, partitioner))
    span = RING_SPANS[partitioner]
    ranges = _ranges_by_node(nodes, span)
    loads = [sum(length for length, _end in node_ranges) for node_ranges in ranges]

    # The water level: the most loaded nodes, while each is above the average it would share with
    # the nodes before it and the new one.
    touched, total = [], 0
    for node in sorted(range(len(nodes)), key=lambda index: (-loads[index], index))[:count]:
        if loads[node] * (len(touched) + 2) <= total + loads[node]:
            break
        touched.append(node)
        total += loads[node]
    average = Fraction(total, len(touched) + 1)
    spread = average * STAGGER * min(Fraction(1), Fraction(count, len(nodes))) / count

    new: list = []
    for rank, node in enumerate(touched):
        target = average + spread / 2 - rank * spread / len(touched)
        tokens_here = count // len(touched) + (rank < count % len(touched))
        new += _split_largest(ranges[node], tokens_here, loads[node] - target, span)
    low = TOKEN_RANGES[partitioner][0]
    new = sorted((token - low) % span + low for token in new)
    taken = {token for tokens in nodes for token in tokens}
    if len(set(new)) != count or taken.intersection(new):
        raise ValueError(f"no room on the ring for {count} more tokens")  # only with adjacent tokens
    return tuple(new)


def _ranges_by_node(nodes: list, span: int) -> list:
    """For each node, its ranges as (length, end token)."""
    holder = sorted((token, index) for index, tokens in enumerate(nodes) for token in tokens)
    ranges: list = [[] for _ in nodes]
    for position, (token, index) in enumerate(holder):
        ranges[index].append((_range_length(holder[position - 1][0], token, span, len(holder)), token))
    return ranges


def _split_largest(node_ranges: list, tokens: int, give: Fraction, span: int) -> list:
    """Tokens that take about ``give`` from a node's largest ranges, in proportion to their sizes.

    A new token t in the range (start, end] takes (start, t] from its owner.  With more tokens than
    ranges, a range takes several, spread over the part it gives away.
    """
    largest = sorted(node_ranges, key=lambda r: (-r[0], r[1]))
    per_range = [tokens // len(largest) + (i < tokens % len(largest)) for i in range(len(largest))]
    chosen = [(length, end, many) for (length, end), many in zip(largest, per_range) if many]
    work = sum(length for length, _end, _many in chosen)
    ratio = min(max(give / work, Fraction(0)), Fraction(1))
    placed = []
    for length, end, many in chosen:
        take = min(max(int(length * ratio), many), length - 1)
        start = end - length
        placed += [start + take * (i + 1) // many for i in range(many)]
    return placed


def balance(ring: Ring) -> float:
    """Max over mean of the primary shares: 1.0 is perfectly even."""
    shares = ring.shares()
    return max(shares.values()) * len(shares)


def allocated_ring(counts: Sequence[int], partitioner: str = "murmur3", *, prefix: str = "node",
                   replication_factor: int = 1) -> Ring:
    """A ring of ``len(counts)`` nodes with the allocator's tokens (``counts[i]`` for node i)."""
    tokens: dict = {}
    for index, count in enumerate(counts):
        tokens[f"{prefix}{index + 1}"] = allocate_tokens(list(tokens.values()), count, partitioner)
    return Ring(tokens, partitioner=partitioner, replication_factor=replication_factor)
