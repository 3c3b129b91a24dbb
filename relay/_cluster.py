"""The cluster file (SPEC 5): every node of a cluster reads the same one.

    cluster_name = "cobrowse"
    partitioner = "murmur3"          # or "random"
    replication_factor = 2
    state_store = "redis://10.0.0.9:6379/0"
    # or: state_store = { sentinels = ["10.0.0.9:26379", "10.0.0.10:26379"], service = "relay", db = 0 }
    lease_ttl_s = 5.0                # optional

    [[nodes]]
    name = "CB_Server_1"
    public = "10.0.0.1:8700"
    private = "10.0.0.1:8701"
    initial_token = -9223372036854775808     # one token, or a list; or num_tokens = 16

Nodes with ``num_tokens`` get their tokens from ``relay._ring.allocate_tokens``, in file order:
a node's tokens depend only on the nodes above it, so appending a node changes no other node's.
A file that cannot work is refused with a ConfigError that names the problem.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from relay._config import ConfigError, parse_hostport
from relay._ring import PARTITIONERS, TOKEN_RANGES, Ring, allocate_tokens

__all__ = ["Cluster", "NodeSpec", "StateStore", "load_cluster", "parse_cluster", "parse_state_store",
           "DEFAULT_LEASE_TTL_S", "MIN_LEASE_TTL_S", "MAX_LEASE_TTL_S", "MAX_NUM_TOKENS"]

DEFAULT_LEASE_TTL_S = 5.0
MIN_LEASE_TTL_S = 1.0
MAX_LEASE_TTL_S = 60.0
#: Cassandra allows more, but past a few hundred tokens per node balance gains nothing here.
MAX_NUM_TOKENS = 1024
DEFAULT_REDIS_PORT = 6379
#: Hex digits of the SHA-256 kept as the ring version: short enough to read, 64 bits to disagree.
RING_VERSION_HEX_DIGITS = 16

TOP_LEVEL_KEYS = ("cluster_name", "partitioner", "replication_factor", "state_store", "lease_ttl_s", "nodes")
NODE_KEYS = ("name", "public", "private", "initial_token", "num_tokens")
SENTINEL_KEYS = ("sentinels", "service", "db")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    public: str  # HOST:PORT as written in the file
    private: str
    tokens: tuple  # sorted


@dataclass(frozen=True)
class StateStore:
    """Where the cluster's Redis is: one server (host, port), or Sentinels and a service name."""

    host: Optional[str]  # None with Sentinels: they say which server is the primary
    port: Optional[int]
    db: int = 0
    sentinels: tuple = ()  # ((host, port), ...)
    service: Optional[str] = None

    def __str__(self) -> str:
        if self.sentinels:
            return f"sentinels {', '.join(_join_hostport(*s) for s in self.sentinels)} service {self.service} db {self.db}"
        return f"redis://{_join_hostport(self.host, self.port)}/{self.db}"


@dataclass(frozen=True)
class Cluster:
    name: str
    partitioner: str
    replication_factor: int
    nodes: dict  # name -> NodeSpec, in file order
    ring: Ring
    state_store: StateStore
    ring_version: str  # differs between two files that would route differently
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S


def load_cluster(path: str) -> Cluster:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read cluster file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cluster file {path} is not valid TOML: {exc}") from None
    try:
        return parse_cluster(data)
    except ConfigError as exc:
        raise ConfigError(f"cluster file {path}: {exc}") from None


def parse_cluster(data: dict) -> Cluster:
    _refuse_unknown_keys(data, TOP_LEVEL_KEYS, "the cluster file")
    name = data.get("cluster_name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("cluster_name must be a non-empty string")
    partitioner = data.get("partitioner", "murmur3")
    if partitioner not in PARTITIONERS:
        raise ConfigError(f"unknown partitioner {partitioner!r}: murmur3 or random")
    if "state_store" not in data:
        raise ConfigError('state_store is required: "redis://HOST:PORT/DB", or '
                          '{ sentinels = ["HOST:PORT", ...], service = "NAME", db = 0 }')
    state_store = parse_state_store(data["state_store"])
    lease_ttl_s = _lease_ttl(data.get("lease_ttl_s", DEFAULT_LEASE_TTL_S))
    nodes_data = data.get("nodes")
    if not isinstance(nodes_data, list) or not nodes_data:
        raise ConfigError("a cluster needs at least one [[nodes]] table")

    nodes: dict = {}
    token_holder: dict = {}
    for index, entry in enumerate(nodes_data):
        spec = _parse_node(entry, index, partitioner, [n.tokens for n in nodes.values()])
        if spec.name in nodes:
            raise ConfigError(f"two nodes are named {spec.name!r}")
        for token in spec.tokens:  # before the next node's tokens are allocated around these
            if token in token_holder:
                raise ConfigError(f"token {token} is given to both {token_holder[token]!r} and {spec.name!r}")
            token_holder[token] = spec.name
        nodes[spec.name] = spec
    _refuse_shared_addresses(nodes)

    rf = data.get("replication_factor", 1)
    if isinstance(rf, bool) or not isinstance(rf, int) or not 1 <= rf <= len(nodes):
        raise ConfigError(f"replication_factor must be an integer from 1 to the number of nodes ({len(nodes)}), "
                          f"got {rf!r}")
    ring = Ring({n: spec.tokens for n, spec in nodes.items()}, partitioner=partitioner, replication_factor=rf)
    return Cluster(name, partitioner, rf, nodes, ring, state_store, ring_version(name, partitioner, rf, nodes),
                   lease_ttl_s)


def ring_version(name: str, partitioner: str, replication_factor: int, nodes: dict) -> str:
    """A digest of everything that decides where a session lives and how nodes reach each other."""
    canonical = [name, partitioner, replication_factor,
                 [[spec.name, spec.public, spec.private, [str(t) for t in spec.tokens]] for spec in nodes.values()]]
    digest = hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()
    return digest[:RING_VERSION_HEX_DIGITS]


def _parse_node(entry, index: int, partitioner: str, previous: list) -> NodeSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"nodes[{index}] must be a table ([[nodes]])")
    node_name = entry.get("name")
    if not isinstance(node_name, str) or not node_name.strip():
        raise ConfigError(f"nodes[{index}] needs a name (a non-empty string)")
    _refuse_unknown_keys(entry, NODE_KEYS, f"node {node_name!r}")
    for key in ("public", "private"):
        address = entry.get(key)
        if not isinstance(address, str):
            raise ConfigError(f"node {node_name!r} needs {key} = \"HOST:PORT\"")
        _cluster_address(address, f"node {node_name!r} {key}")
    if "initial_token" in entry and "num_tokens" in entry:
        raise ConfigError(f"node {node_name!r} has both initial_token and num_tokens: give one")
    low, high = TOKEN_RANGES[partitioner]
    if "initial_token" in entry:
        given = entry["initial_token"]
        tokens = given if isinstance(given, list) else [given]
        if not tokens:
            raise ConfigError(f"node {node_name!r} has an empty initial_token list")
        for token in tokens:
            if isinstance(token, bool) or not isinstance(token, int):
                raise ConfigError(f"node {node_name!r}: initial_token {token!r} is not an integer")
            if not low <= token <= high:
                raise ConfigError(f"node {node_name!r}: initial_token {token} is out of the {partitioner} range "
                                  f"[{low}, {high}]")
        if len(set(tokens)) != len(tokens):
            raise ConfigError(f"node {node_name!r} lists a token twice in initial_token")
    elif "num_tokens" in entry:
        count = entry["num_tokens"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NUM_TOKENS:
            raise ConfigError(f"node {node_name!r}: num_tokens must be an integer from 1 to {MAX_NUM_TOKENS}, "
                              f"got {count!r}")
        try:
            tokens = allocate_tokens(previous, count, partitioner)
        except ValueError as exc:
            raise ConfigError(f"node {node_name!r}: {exc}") from None
    else:
        raise ConfigError(f"node {node_name!r} needs initial_token (one token or a list) or num_tokens")
    return NodeSpec(node_name, entry["public"], entry["private"], tuple(sorted(tokens)))


def _cluster_address(text: str, setting: str) -> tuple:
    host, port = parse_hostport(text, setting=setting)
    if port == 0:
        raise ConfigError(f"{setting} needs a fixed port, not 0: the other nodes and nginx connect to it")
    return host.lower(), port


def _refuse_shared_addresses(nodes: dict) -> None:
    """No HOST:PORT may serve two listeners: two nodes, or a node's public and another's private."""
    seen: dict = {}
    for spec in nodes.values():
        for key in ("public", "private"):
            address = _cluster_address(getattr(spec, key), f"node {spec.name!r} {key}")
            if address in seen:
                other_name, other_key = seen[address]
                if other_name == spec.name:
                    raise ConfigError(f"node {spec.name!r} has the same public and private address {spec.public}")
                raise ConfigError(f"node {spec.name!r} {key} {getattr(spec, key)} is also node {other_name!r} "
                                  f"{other_key}: every listener needs its own address")
            seen[address] = (spec.name, key)


def _lease_ttl(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not MIN_LEASE_TTL_S <= value <= MAX_LEASE_TTL_S:
        raise ConfigError(f"lease_ttl_s must be a number of seconds from {MIN_LEASE_TTL_S:g} to {MAX_LEASE_TTL_S:g}, "
                          f"got {value!r}")
    return float(value)


def parse_state_store(value) -> StateStore:
    """``"redis://HOST:PORT/DB"`` or ``{sentinels = ["HOST:PORT", ...], service = "NAME", db = 0}``."""
    if isinstance(value, str):
        return _parse_redis_url(value)
    if isinstance(value, dict):
        return _parse_sentinels(value)
    raise ConfigError(f'state_store must be "redis://HOST:PORT/DB" or a table of sentinels and service, got {value!r}')


def _parse_redis_url(url: str) -> StateStore:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number, an unclosed [v6
        raise ConfigError(f"state_store {url!r} is not a redis:// URL: {exc}") from None
    if parts.scheme != "redis":
        raise ConfigError(f"state_store {url!r} must start with redis:// (rediss:// and unix sockets are not supported)")
    if not host:
        raise ConfigError(f"state_store {url!r} has no host: redis://HOST:PORT/DB")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"state_store {url!r}: credentials in the URL are not supported")
    if parts.query or parts.fragment:
        raise ConfigError(f"state_store {url!r}: no ?query or #fragment is supported")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(f"state_store {url!r}: the database must be a number (redis://HOST:PORT/0)")
    if port == 0:
        raise ConfigError(f"state_store {url!r} needs a real port")
    return StateStore(host, port or DEFAULT_REDIS_PORT, int(path or 0))


def _parse_sentinels(table: dict) -> StateStore:
    _refuse_unknown_keys(table, SENTINEL_KEYS, "state_store")
    addresses = table.get("sentinels")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
        raise ConfigError('state_store.sentinels must be a non-empty list of "HOST:PORT"')
    sentinels = tuple(_cluster_address(address, "state_store.sentinels") for address in addresses)
    if len(set(sentinels)) != len(sentinels):
        raise ConfigError("state_store.sentinels lists an address twice")
    service = table.get("service")
    if not isinstance(service, str) or not service.strip():
        raise ConfigError("state_store.service must name the Sentinel service (its `sentinel monitor NAME`)")
    db = table.get("db", 0)
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise ConfigError(f"state_store.db must be a database number (0 or more), got {db!r}")
    return StateStore(None, None, db, sentinels, service)


def _refuse_unknown_keys(table: dict, known: tuple, where: str) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        raise ConfigError(f"{where} has unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))} (known: {', '.join(known)})")


def _join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
