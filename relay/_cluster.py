"""The cluster file: cluster name, partitioner, replication factor and the nodes (SPEC 5).

    cluster_name = "cobrowse"
    partitioner = "murmur3"          # or "random"
    replication_factor = 2

    [[nodes]]
    name = "CB_Server_1"
    public = "10.0.0.1:8700"
    private = "10.0.0.1:8701"
    initial_token = -9223372036854775808     # one token, or a list; or num_tokens = 16

Only the parsing and the ring live here for now; node-to-node routing and failover come with the
cluster work.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from relay._config import ConfigError, parse_hostport
from relay._ring import PARTITIONERS, Ring

__all__ = ["Cluster", "NodeSpec", "load_cluster", "parse_cluster"]

MURMUR3_RANGE = (-(2**63), 2**63 - 1)
RANDOM_RANGE = (0, 2**127)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    public: str
    private: str
    tokens: tuple


@dataclass(frozen=True)
class StateStore:
    host: str
    port: int
    db: int = 0
    sentinels: tuple = ()
    service: object = None


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: dict
    ring: Ring
    state_store: object = None
    ring_version: str = ""
    lease_ttl_s: float = 5.0


def load_cluster(path: str) -> Cluster:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read cluster file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cluster file {path} is not valid TOML: {exc}") from None
    return parse_cluster(data)


def parse_cluster(data: dict) -> Cluster:
    name = data.get("cluster_name")
    if not isinstance(name, str) or not name:
        raise ConfigError("cluster_name must be a non-empty string")
    partitioner = data.get("partitioner", "murmur3")
    if partitioner not in PARTITIONERS:
        raise ConfigError("partitioner must be murmur3 or random")
    nodes_data = data.get("nodes")
    if not isinstance(nodes_data, list) or not nodes_data:
        raise ConfigError("a cluster needs at least one [[nodes]] entry")
    low, high = MURMUR3_RANGE if partitioner == "murmur3" else RANDOM_RANGE
    nodes = {}
    for entry in nodes_data:
        node_name = entry.get("name")
        if not isinstance(node_name, str) or not node_name or node_name in nodes:
            raise ConfigError(f"every node needs a unique name (got {node_name!r})")
        for key in ("public", "private"):
            parse_hostport(str(entry.get(key, "")), setting=f"{node_name}.{key}")
        if "initial_token" in entry:
            tokens = entry["initial_token"]
            tokens = tuple(tokens) if isinstance(tokens, list) else (tokens,)
            if not tokens or not all(isinstance(t, int) and low <= t <= high for t in tokens):
                raise ConfigError(f"{node_name}.initial_token must be integers in [{low}, {high}]")
        elif "num_tokens" in entry:
            count = entry["num_tokens"]
            if not isinstance(count, int) or not 1 <= count <= 1024:
                raise ConfigError(f"{node_name}.num_tokens must be between 1 and 1024")
            # Deterministic per node name, so that every node computes the same ring.
            rng = random.Random(f"{name}/{node_name}")
            tokens = tuple(rng.randint(low, high) for _ in range(count))
        else:
            raise ConfigError(f"{node_name} needs initial_token or num_tokens")
        nodes[node_name] = NodeSpec(node_name, entry["public"], entry["private"], tokens)
    rf = data.get("replication_factor", 1)
    if not isinstance(rf, int) or not 1 <= rf <= len(nodes):
        raise ConfigError("replication_factor must be between 1 and the number of nodes")
    try:
        ring = Ring({n: list(spec.tokens) for n, spec in nodes.items()}, partitioner=partitioner,
                    replication_factor=rf)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    import hashlib
    import json
    from urllib.parse import urlsplit
    store = data.get("state_store", "redis://127.0.0.1:6379/0")
    parts = urlsplit(store)
    state_store = StateStore(parts.hostname, parts.port or 6379, int((parts.path or "/0").strip("/") or 0))
    version = hashlib.sha256(json.dumps([name, partitioner, rf, [[n, s.public, s.private, list(s.tokens)] for n, s in nodes.items()]]).encode()).hexdigest()[:16]
    return Cluster(name, nodes, ring, state_store, version, float(data.get("lease_ttl_s", 5.0)))
