"""relay/_ring.py: the token ring against cassandra-driver's TokenMap (SimpleStrategy), the
allocator's balance and churn, both twins; and the ``ring`` command."""

from __future__ import annotations

import base64
import random

import pytest
from cassandra.connection import DefaultEndPoint
from cassandra.metadata import KeyspaceMetadata, MD5Token, Metadata, Murmur3Token
from cassandra.pool import Host
from cassandra.policies import SimpleConvictionPolicy

import relay._fastpath as fast_twin
import relay._purepath.tokens as pure_twin
from relay._cli import main as cli_main
from relay._ring import (
    RING_SPANS,
    TOKEN_RANGES,
    Ring,
    allocate_tokens,
    allocated_ring,
    balance,
    evenly_spaced_tokens,
)

PARTITIONERS = ["murmur3", "random"]
DRIVER_PARTITIONERS = {"murmur3": ("org.apache.cassandra.dht.Murmur3Partitioner", Murmur3Token),
                       "random": ("org.apache.cassandra.dht.RandomPartitioner", MD5Token)}
KEYSPACE = "relay"
#: The issue's bound on max/mean primary ownership with 16 tokens per node.
MAX_BALANCE_16_TOKENS = 1.03
RANDOM_RINGS = 60


def session_ids(count: int, seed: int = 0) -> list:
    """22-character URL-safe IDs, as relay mints them (16 random bytes)."""
    rng = random.Random(seed)
    return [base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode() for _ in range(count)]


class DriverRing:
    """cassandra-driver's token map for the same nodes and tokens, a SimpleStrategy keyspace with the same RF."""

    def __init__(self, ring: Ring, tokens: dict) -> None:
        class_name, self.token_class = DRIVER_PARTITIONERS[ring.partitioner]
        self.metadata = Metadata()
        self.names = {}
        token_strings = {}
        for index, node in enumerate(tokens):
            host = Host(DefaultEndPoint(f"127.0.{index // 250}.{index % 250 + 1}"), SimpleConvictionPolicy)
            self.metadata.add_or_return_host(host)
            self.names[host] = node
            node_tokens = tokens[node] if isinstance(tokens[node], (list, tuple)) else [tokens[node]]
            token_strings[host] = [str(token) for token in node_tokens]
        self.metadata.keyspaces[KEYSPACE] = KeyspaceMetadata(
            KEYSPACE, True, "SimpleStrategy", {"replication_factor": str(ring.replication_factor)})
        self.metadata.rebuild_token_map(class_name, token_strings)

    def replicas_of_token(self, token: int) -> tuple:
        found = self.metadata.token_map.get_replicas(KEYSPACE, self.token_class(token))
        assert found, "the driver answers [] for an unknown keyspace"
        return tuple(self.names[host] for host in found)

    def replicas(self, key: bytes) -> tuple:
        found = self.metadata.get_replicas(KEYSPACE, key)
        assert found
        return tuple(self.names[host] for host in found)


def random_tokens(rng: random.Random, partitioner: str, nodes: int, most_tokens: int) -> dict:
    low, high = TOKEN_RANGES[partitioner]
    tokens, used = {}, set()
    for index in range(nodes):
        mine = []
        for _ in range(rng.randint(1, most_tokens)):
            token = rng.choice([low, high, 0, 1, -1]) if rng.random() < 0.05 else rng.randint(low, high)
            if token in used or not low <= token <= high:
                continue
            used.add(token)
            mine.append(token)
        tokens[f"n{index}"] = mine or [next(t for t in range(low, high) if t not in used)]
        used.update(tokens[f"n{index}"])
    return tokens


def probe_tokens(ring: Ring, rng: random.Random) -> list:
    """On every ring token, one either side, the ends of the range, and some anywhere."""
    low, high = TOKEN_RANGES[ring.partitioner]
    probes = {low, high, low + 1, high - 1}
    for token, _node in ring.entries():
        probes.update((token - 1, token, token + 1))
    probes.update(rng.randint(low, high) for _ in range(50))
    return sorted(t for t in probes if low <= t <= high)


# ---------------------------------------------------------------------------- against the driver

@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_random_rings_match_the_driver_on_and_around_every_token(partitioner):
    rng = random.Random(f"rings/{partitioner}")
    keys = [key.encode() for key in session_ids(200, seed=1)] + [rng.randbytes(rng.randint(1, 40)) for _ in range(100)]
    for _ in range(RANDOM_RINGS):
        nodes = rng.randint(1, 8)
        tokens = random_tokens(rng, partitioner, nodes, most_tokens=rng.choice([1, 4, 16]))
        rf = rng.randint(1, nodes)
        ring = Ring(tokens, partitioner=partitioner, replication_factor=rf)
        driver = DriverRing(ring, tokens)
        for token in probe_tokens(ring, rng):
            assert ring.replicas_of_token(token) == driver.replicas_of_token(token), (tokens, rf, token)
            assert ring.owner_of_token(token) == ring.replicas_of_token(token)[0]
        for key in keys:
            assert ring.replicas(key) == driver.replicas(key), (tokens, rf, key)
            assert ring.owner(key) == driver.replicas(key)[0]


@pytest.mark.parametrize("partitioner", PARTITIONERS)
@pytest.mark.parametrize("nodes", [1, 2, 5, 12])
def test_allocated_vnode_rings_match_the_driver_for_every_replication_factor(partitioner, nodes):
    tokens = {}
    for index in range(nodes):
        tokens[f"CB_Server_{index + 1}"] = list(allocate_tokens(list(tokens.values()), 16, partitioner))
    rng = random.Random(nodes)
    ids = session_ids(300, seed=nodes)
    for rf in range(1, nodes + 1):
        ring = Ring(tokens, partitioner=partitioner, replication_factor=rf)
        driver = DriverRing(ring, tokens)
        for token in probe_tokens(ring, rng):
            assert ring.replicas_of_token(token) == driver.replicas_of_token(token)
        for session_id in ids:
            assert ring.replicas(session_id) == driver.replicas(session_id.encode())


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_successors_are_every_node_in_the_drivers_order_with_rf_n(partitioner):
    rng = random.Random(7)
    for _ in range(20):
        nodes = rng.randint(1, 9)
        tokens = random_tokens(rng, partitioner, nodes, most_tokens=8)
        ring = Ring(tokens, partitioner=partitioner, replication_factor=rng.randint(1, nodes))
        everyone = DriverRing(Ring(tokens, partitioner=partitioner, replication_factor=nodes), tokens)
        for token in probe_tokens(ring, rng):
            successors = ring.successors_of_token(token)
            assert successors == everyone.replicas_of_token(token)
            assert sorted(successors) == sorted(ring.nodes)
            assert successors[:ring.replication_factor] == ring.replicas_of_token(token)
        for session_id in session_ids(50, seed=nodes):
            assert ring.successors(session_id) == ring.successors_of_token(ring.token(session_id))


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_keys_exactly_on_ring_tokens_belong_to_that_token(partitioner):
    """Tokens chosen as the tokens of keys: each key is on a ring token, so its owner is that token's node."""
    keys = session_ids(40, seed=3)
    ring_tokens = {f"n{i}": [] for i in range(4)}
    for index, key in enumerate(keys):
        ring_tokens[f"n{index % 4}"].append(Ring({"x": 1}, partitioner=partitioner).token(key))
    ring = Ring(ring_tokens, partitioner=partitioner, replication_factor=2)
    driver = DriverRing(ring, ring_tokens)
    for index, key in enumerate(keys):
        assert ring.owner(key) == f"n{index % 4}"
        assert ring.replicas(key) == driver.replicas(key.encode())


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_the_empty_key_is_cassandras_minimum_token(partitioner):
    """Cassandra gives the empty key the minimum token (the driver gives it 0): it belongs to the
    smallest ring token's node."""
    tokens = {"a": evenly_spaced_tokens(3, partitioner)[1], "b": evenly_spaced_tokens(3, partitioner)[2],
              "c": TOKEN_RANGES[partitioner][1]}
    ring = Ring(tokens, partitioner=partitioner, replication_factor=2)
    minimum = -(2**63) if partitioner == "murmur3" else -1
    assert ring.token(b"") == ring.token("") == minimum
    assert ring.owner(b"") == "a" and ring.replicas(b"") == ("a", "b")
    assert ring.replicas(b"") == DriverRing(ring, tokens).replicas_of_token(minimum)


def test_both_twins_give_the_same_ring_answers():
    ring = allocated_ring([16] * 7, "murmur3", replication_factor=3)
    random_ring = allocated_ring([16] * 7, "random", replication_factor=3)
    for key in session_ids(2000, seed=11) + ["", "é", "\u20ac" * 9]:
        token = ring.token(key)
        assert pure_twin.murmur3_token(key) == fast_twin.murmur3_token(key) == token
        assert ring.replicas(key) == ring.replicas_of_token(pure_twin.murmur3_token(key))
        assert ring.replicas(key) == ring.replicas_of_token(fast_twin.murmur3_token(key))
        assert random_ring.replicas(key) == random_ring.replicas_of_token(pure_twin.random_token(key)) \
            == random_ring.replicas_of_token(fast_twin.random_token(key))


# ---------------------------------------------------------------------------- the ring itself

def test_lookups_return_cached_tuples():
    ring = allocated_ring([16] * 5, replication_factor=2)
    key = session_ids(1)[0]
    assert isinstance(ring.replicas(key), tuple) and ring.replicas(key) is ring.replicas(key)
    assert isinstance(ring.successors(key), tuple) and ring.successors(key) is ring.successors(key)
    assert ring.replicas(key)[0] == ring.owner(key)
    assert ring.nodes == ("node1", "node2", "node3", "node4", "node5")
    assert ring.partitioner == "murmur3" and ring.replication_factor == 2


def test_a_key_after_the_last_token_wraps_to_the_first():
    ring = Ring({"a": [-100], "b": [0], "c": [100]}, replication_factor=3)
    assert ring.replicas_of_token(101) == ring.replicas_of_token(2**63 - 1) == ("a", "b", "c")
    assert ring.replicas_of_token(-(2**63)) == ring.replicas_of_token(-100) == ("a", "b", "c")
    assert ring.replicas_of_token(-99) == ring.replicas_of_token(0) == ("b", "c", "a")
    assert ring.replicas_of_token(100) == ("c", "a", "b")


def test_entries_are_in_ring_order_and_a_lone_int_is_one_token():
    ring = Ring({"a": 5, "b": [-3, 9]})
    assert ring.entries() == ((-3, "b"), (5, "a"), (9, "b"))


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_shares_are_the_primary_ranges(partitioner):
    even = Ring({f"n{i}": t for i, t in enumerate(evenly_spaced_tokens(4, partitioner))}, partitioner=partitioner)
    assert even.shares() == {f"n{i}": 0.25 for i in range(4)}
    assert Ring({"solo": [7]}, partitioner=partitioner).shares() == {"solo": 1.0}
    rng = random.Random(partitioner)
    for _ in range(30):
        tokens = random_tokens(rng, partitioner, rng.randint(1, 6), 6)
        ring = Ring(tokens, partitioner=partitioner, replication_factor=1)
        span = RING_SPANS[partitioner]
        ordered = sorted((t, n) for n, ts in tokens.items() for t in ts)
        owned = dict.fromkeys(tokens, 0)
        for index, (token, node) in enumerate(ordered):
            owned[node] += (token - ordered[index - 1][0]) % span if len(ordered) > 1 else span
        assert ring.primary_ranges() == owned
        assert abs(sum(ring.shares().values()) - 1.0) < 1e-9
        rf = rng.randint(1, len(tokens))
        effective = Ring(tokens, partitioner=partitioner, replication_factor=rf).effective_shares()
        assert abs(sum(effective.values()) - rf) < 1e-9


@pytest.mark.parametrize("tokens, rf, message", [
    ({}, 1, "at least one node"),
    ({"a": 1}, 2, "replication_factor must be between 1 and the number of nodes (1)"),
    ({"a": 1, "b": 2}, 0, "replication_factor"),
    ({"a": []}, 1, "node 'a' has no token"),
    ({"a": [1], "b": [1]}, 1, "token 1 is given to both 'a' and 'b'"),
    ({"a": [2**63]}, 1, "not an integer in"),
    ({"a": ["1"]}, 1, "not an integer in"),
])
def test_bad_rings_are_refused(tokens, rf, message):
    with pytest.raises(ValueError) as info:
        Ring(tokens, replication_factor=rf)
    assert message in str(info.value)
    with pytest.raises(ValueError, match="unknown partitioner 'byteordered'"):
        Ring({"a": 1}, partitioner="byteordered")


# ---------------------------------------------------------------------------- the allocator

@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_sixteen_tokens_per_node_stay_within_three_percent_of_even(partitioner):
    tokens: list = []
    for nodes in range(1, 31):
        tokens.append(allocate_tokens(tokens, 16, partitioner))
        ring = Ring({f"n{i}": t for i, t in enumerate(tokens)}, partitioner=partitioner)
        assert balance(ring) <= MAX_BALANCE_16_TOKENS, (nodes, balance(ring))
        assert all(len(t) == 16 for t in tokens)


@pytest.mark.parametrize("partitioner", PARTITIONERS)
@pytest.mark.parametrize("nodes", [1, 2, 3, 7, 16, 17, 29])
def test_appending_a_node_moves_only_its_share_and_only_to_it(partitioner, nodes):
    before = allocated_ring([16] * nodes, partitioner)
    after = allocated_ring([16] * (nodes + 1), partitioner)
    new = f"node{nodes + 1}"
    for name in before.nodes:  # the earlier nodes keep their tokens
        assert [t for t, n in after.entries() if n == name] == [t for t, n in before.entries() if n == name]
    ids = session_ids(20000, seed=nodes)
    moved = [key for key in ids if before.owner(key) != after.owner(key)]
    assert all(after.owner(key) == new for key in moved)
    share = after.shares()[new]
    assert 0.9 / (nodes + 1) <= share <= MAX_BALANCE_16_TOKENS / (nodes + 1)
    # the keys that move are the new node's share (binomial: 5 standard deviations)
    deviation = 5 * (share * (1 - share) / len(ids)) ** 0.5
    assert abs(len(moved) / len(ids) - share) <= deviation


def test_the_allocator_is_deterministic_and_fills_rings_of_few_ranges():
    assert allocate_tokens([], 4, "murmur3") == tuple(evenly_spaced_tokens(4, "murmur3"))
    assert allocate_tokens([], 4, "random") == tuple(evenly_spaced_tokens(4, "random"))
    assert allocated_ring([16] * 9).entries() == allocated_ring([16] * 9).entries()
    # one single-token node, then 16 tokens: more tokens than the ring has ranges
    tokens = allocate_tokens([[0]], 16, "murmur3")
    assert len(set(tokens)) == 16 and 0 not in tokens
    ring = Ring({"single": [0], "vnodes": list(tokens)})
    assert abs(ring.shares()["vnodes"] - 0.5) < 0.03
    # mixed counts still give every node about its fair part of the ring
    mixed = allocated_ring([1, 16, 8, 16, 32, 16], "random")
    assert balance(mixed) < 1.1


@pytest.mark.parametrize("count, bound", [(8, 1.07), (32, 1.02), (256, 1.01)])
def test_other_token_counts_balance_as_documented(count, bound):
    """docs/ring.md's table: about 1 + 1/(2 * num_tokens) at most, once there are more nodes than tokens."""
    worst = max(balance(allocated_ring([count] * nodes)) for nodes in (2, 3, 5, 10, 20, 30))
    assert worst <= bound, worst


def test_bad_allocations_are_refused():
    for count in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="at least 1"):
            allocate_tokens([], count, "murmur3")
    with pytest.raises(ValueError, match="unknown partitioner"):
        allocate_tokens([], 4, "md5")


# ---------------------------------------------------------------------------- the ring command

def write_cluster(path, nodes: list, rf: int = 2, partitioner: str = "murmur3") -> None:
    lines = ['cluster_name = "demo"', f'partitioner = "{partitioner}"', f"replication_factor = {rf}",
             'state_store = "redis://127.0.0.1:6379/0"']
    for index, placement in enumerate(nodes):
        lines += ["[[nodes]]", f'name = "CB_Server_{index + 1}"', f'public = "10.0.0.{index + 1}:8700"',
                  f'private = "10.0.0.{index + 1}:8701"', placement]
    path.write_text("\n".join(lines) + "\n")


def run_ring(capsys, *args) -> list:
    assert cli_main(["ring", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_ring_summarises_vnode_nodes_per_node(tmp_path, capsys):
    path = tmp_path / "cluster.toml"
    write_cluster(path, ["num_tokens = 16"] * 3)
    header, columns, *rows = run_ring(capsys, "--cluster", str(path))
    assert "Cluster: demo" in header and "Replication factor: 2" in header and "Ring version: " in header
    assert columns.split() == ["Node", "Address", "Token(s)", "Owns", "Effective", "Replicas"]
    assert [row.split()[:4] for row in rows] == [[f"CB_Server_{i}", f"10.0.0.{i}:8700", "16", "tokens"]
                                                for i in (1, 2, 3)]
    owns = [float(row.split()[4].rstrip("%")) for row in rows]
    effective = [float(row.split()[5].rstrip("%")) for row in rows]
    assert abs(sum(owns) - 100) < 0.05 and abs(sum(effective) - 200) < 0.05
    assert max(owns) / (100 / 3) <= MAX_BALANCE_16_TOKENS
    balance_shown = float(header.rsplit(" ", 1)[1])
    assert abs(balance_shown - max(owns) / (100 / 3)) < 1e-3


def test_ring_lists_every_token_with_its_replicas(tmp_path, capsys):
    path = tmp_path / "cluster.toml"
    write_cluster(path, ["num_tokens = 4", "initial_token = [12345, 4611686018427387905]", "num_tokens = 4"])
    _header, columns, *rows = run_ring(capsys, "--cluster", str(path), "--tokens")
    assert columns.split() == ["Node", "Address", "Token", "Owns", "Replicas"]
    from relay._cluster import load_cluster
    ring = load_cluster(str(path)).ring
    assert len(rows) == 10
    for row, (token, node) in zip(rows, ring.entries()):
        name, address, shown_token, owns, replicas = row.split()
        assert (name, int(shown_token)) == (node, token)
        assert replicas.split(",") == list(ring.replicas_of_token(token))
        assert abs(float(owns.rstrip("%")) - 100 * ring.shares()[node]) < 0.006
    # single-token nodes: per token by default, and --summary gives one line per node
    write_cluster(path, [f"initial_token = {t}" for t in evenly_spaced_tokens(3, "murmur3")], rf=1)
    _header, columns, *rows = run_ring(capsys, "--cluster", str(path))
    assert columns.split()[2] == "Token" and len(rows) == 3
    _header, columns, *rows = run_ring(capsys, "--cluster", str(path), "--summary")
    assert columns.split()[2] == "Token(s)" and rows[0].split()[-1] == "CB_Server_1"


def test_ring_refuses_a_bad_file_with_the_reason(tmp_path, capsys):
    path = tmp_path / "cluster.toml"
    write_cluster(path, ["num_tokens = 4", "num_tokens = 4"], rf=3)
    assert cli_main(["ring", "--cluster", str(path)]) == 2
    assert "replication_factor must be an integer from 1 to the number of nodes (2), got 3" in capsys.readouterr().err
