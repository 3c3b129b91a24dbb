"""relay/_cluster.py: the cluster file (SPEC 5), what it gives and what it refuses, with the reason."""

from __future__ import annotations

import copy

import pytest

from relay._cluster import DEFAULT_LEASE_TTL_S, StateStore, load_cluster, parse_cluster
from relay._config import ConfigError
from relay._ring import balance, evenly_spaced_tokens


def node(index: int, **placement) -> dict:
    entry = {"name": f"CB_Server_{index}", "public": f"10.0.0.{index}:8700", "private": f"10.0.0.{index}:8701"}
    entry.update(placement or {"num_tokens": 16})
    return entry


def cluster_data(nodes: int = 3, **top) -> dict:
    data = {"cluster_name": "cobrowse", "partitioner": "murmur3", "replication_factor": 2,
            "state_store": "redis://10.0.0.9:6379/0", "nodes": [node(i + 1) for i in range(nodes)]}
    data.update(top)
    return data


def refused(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_cluster(data)
    return str(info.value)


def test_a_good_file_gives_everything_the_node_needs():
    cluster = parse_cluster(cluster_data(lease_ttl_s=2))
    assert (cluster.name, cluster.partitioner, cluster.replication_factor) == ("cobrowse", "murmur3", 2)
    assert list(cluster.nodes) == ["CB_Server_1", "CB_Server_2", "CB_Server_3"]
    spec = cluster.nodes["CB_Server_2"]
    assert (spec.name, spec.public, spec.private) == ("CB_Server_2", "10.0.0.2:8700", "10.0.0.2:8701")
    assert len(spec.tokens) == 16 and list(spec.tokens) == sorted(spec.tokens)
    assert cluster.ring.nodes == tuple(cluster.nodes) and cluster.ring.replication_factor == 2
    assert balance(cluster.ring) <= 1.03
    assert cluster.state_store == StateStore("10.0.0.9", 6379, 0)
    assert cluster.lease_ttl_s == 2.0 and isinstance(cluster.lease_ttl_s, float)
    assert len(cluster.ring_version) == 16 and int(cluster.ring_version, 16) >= 0


def test_defaults_and_single_or_listed_initial_tokens():
    data = {"cluster_name": "c", "state_store": "redis://127.0.0.1",
            "nodes": [node(1, initial_token=-5), node(2, initial_token=[7, 3])]}
    cluster = parse_cluster(data)
    assert (cluster.partitioner, cluster.replication_factor, cluster.lease_ttl_s) == ("murmur3", 1, DEFAULT_LEASE_TTL_S)
    assert cluster.nodes["CB_Server_1"].tokens == (-5,) and cluster.nodes["CB_Server_2"].tokens == (3, 7)
    assert cluster.state_store == StateStore("127.0.0.1", 6379, 0)


@pytest.mark.parametrize("partitioner", ["murmur3", "random"])
def test_appending_a_node_keeps_every_earlier_nodes_tokens(partitioner):
    data = cluster_data(5, partitioner=partitioner)
    data["nodes"][2] = node(3, initial_token=evenly_spaced_tokens(7, partitioner)[3])  # a mixed file
    before = parse_cluster(data)
    data["nodes"].append(node(6, num_tokens=16))
    after = parse_cluster(data)
    for name, spec in before.nodes.items():
        assert after.nodes[name].tokens == spec.tokens
    assert len(after.nodes["CB_Server_6"].tokens) == 16
    assert after.ring_version != before.ring_version
    assert parse_cluster(copy.deepcopy(data)).ring_version == after.ring_version  # stable


@pytest.mark.parametrize("change", [
    lambda d: d.update(cluster_name="other"),
    lambda d: d.update(partitioner="random"),
    lambda d: d.update(replication_factor=1),
    lambda d: d["nodes"][0].update(name="Renamed"),
    lambda d: d["nodes"][1].update(public="10.0.0.2:9700"),
    lambda d: d["nodes"][2].update(private="10.0.0.3:9701"),
    lambda d: d["nodes"][0].update(num_tokens=8),
    lambda d: d["nodes"].reverse(),
])
def test_the_ring_version_changes_with_anything_that_routes_differently(change):
    data = cluster_data()
    version = parse_cluster(data).ring_version
    change(data)
    assert parse_cluster(data).ring_version != version
    # and nothing else moves it: the state store and the lease are not the ring
    assert parse_cluster({**data, "state_store": "redis://10.9.9.9:1/2", "lease_ttl_s": 9.5}).ring_version \
        == parse_cluster(data).ring_version


# ---------------------------------------------------------------------------- the state store

@pytest.mark.parametrize("value, expected", [
    ("redis://10.0.0.9:6380/3", StateStore("10.0.0.9", 6380, 3)),
    ("redis://redis.internal/", StateStore("redis.internal", 6379, 0)),
    ("redis://[::1]:6379/1", StateStore("::1", 6379, 1)),
    ({"sentinels": ["10.0.0.7:26379", "10.0.0.8:26379"], "service": "relay"},
     StateStore(None, None, 0, (("10.0.0.7", 26379), ("10.0.0.8", 26379)), "relay")),
    ({"sentinels": ["[::1]:26379"], "service": "relay", "db": 2}, StateStore(None, None, 2, (("::1", 26379),), "relay")),
])
def test_state_store_forms(value, expected):
    store = parse_cluster(cluster_data(state_store=value)).state_store
    assert store == expected
    assert str(store).startswith("redis://" if isinstance(value, str) else "sentinels ")


@pytest.mark.parametrize("value, message", [
    ("http://10.0.0.9:6379/0", "must start with redis://"),
    ("rediss://10.0.0.9:6379/0", "must start with redis://"),
    ("redis://:6379/0", "has no host"),
    ("redis://user:secret@10.0.0.9:6379/0", "credentials in the URL are not supported"),
    ("redis://10.0.0.9:6379/zero", "the database must be a number"),
    ("redis://10.0.0.9:6379/0?timeout=1", "no ?query"),
    ("redis://10.0.0.9:port/0", "is not a redis:// URL"),
    ("redis://10.0.0.9:0/0", "needs a real port"),
    (6379, "state_store must be"),
    ({"sentinels": [], "service": "relay"}, "non-empty list"),
    ({"sentinels": ["10.0.0.7"], "service": "relay"}, "must be HOST:PORT"),
    ({"sentinels": ["10.0.0.7:26379", "10.0.0.7:26379"], "service": "relay"}, "lists an address twice"),
    ({"sentinels": ["10.0.0.7:26379"]}, "state_store.service must name"),
    ({"sentinels": ["10.0.0.7:26379"], "service": "relay", "db": -1}, "state_store.db"),
    ({"sentinels": ["10.0.0.7:26379"], "service": "relay", "password": "x"}, "unknown key 'password'"),
])
def test_bad_state_stores_are_refused(value, message):
    assert message in refused(cluster_data(state_store=value))


def test_the_state_store_is_required():
    data = cluster_data()
    del data["state_store"]
    message = refused(data)
    assert "state_store is required" in message and "redis://HOST:PORT/DB" in message and "sentinels" in message


# ---------------------------------------------------------------------------- refusals

def with_nodes(*nodes, **top) -> dict:
    data = cluster_data(**top)
    data["nodes"] = list(nodes)
    return data


@pytest.mark.parametrize("data, message", [
    (with_nodes(node(1), node(1, num_tokens=4)), "two nodes are named 'CB_Server_1'"),
    (with_nodes(node(1, initial_token=10), node(2, initial_token=[5, 10])),
     "token 10 is given to both 'CB_Server_1' and 'CB_Server_2'"),
    (with_nodes(node(1, initial_token=5), node(2, initial_token=5), node(3, num_tokens=4)),
     "token 5 is given to both 'CB_Server_1' and 'CB_Server_2'"),
    (with_nodes(node(1, initial_token=[4, 4])), "lists a token twice"),
    (with_nodes(node(1), {**node(2), "public": "10.0.0.1:8700"}),
     "node 'CB_Server_2' public 10.0.0.1:8700 is also node 'CB_Server_1' public"),
    (with_nodes(node(1), {**node(2), "private": "10.0.0.1:8700"}),
     "node 'CB_Server_2' private 10.0.0.1:8700 is also node 'CB_Server_1' public"),
    (with_nodes(node(1), {**node(2), "public": "10.0.0.1:8701"}),
     "node 'CB_Server_2' public 10.0.0.1:8701 is also node 'CB_Server_1' private"),
    (with_nodes({**node(1), "private": "10.0.0.1:8700"}), "has the same public and private address"),
    (with_nodes(node(1), {**node(2), "public": "HOST.example:1", "private": "host.EXAMPLE:1"}),
     "has the same public and private address"),
    (with_nodes(node(1), {**node(2), "public": "10.0.0.2:0"}), "needs a fixed port, not 0"),
    (with_nodes({**node(1), "public": "10.0.0.1"}), "must be HOST:PORT"),
    (with_nodes({"name": "x", "private": "10.0.0.1:1", "num_tokens": 1}), "node 'x' needs public"),
    (cluster_data(partitioner="byteordered"), "unknown partitioner 'byteordered': murmur3 or random"),
    (cluster_data(replication_factor=4), "replication_factor must be an integer from 1 to the number of nodes (3), got 4"),
    (cluster_data(replication_factor=0), "got 0"),
    (cluster_data(replication_factor=True), "got True"),
    (cluster_data(replication_factor="2"), "got '2'"),
    (cluster_data(seeds=["10.0.0.1"], snitch="simple"), "the cluster file has unknown keys 'seeds', 'snitch'"),
    (with_nodes({**node(1), "rack": "r1"}), "node 'CB_Server_1' has unknown key 'rack'"),
    (with_nodes(node(1, initial_token=2**63)), "initial_token 9223372036854775808 is out of the murmur3 range"),
    (with_nodes(node(1, initial_token=-1), partitioner="random"), "initial_token -1 is out of the random range"),
    (with_nodes(node(1, initial_token=2**127 + 1), partitioner="random"), "out of the random range"),
    (with_nodes(node(1, initial_token="0")), "initial_token '0' is not an integer"),
    (with_nodes(node(1, initial_token=[])), "empty initial_token list"),
    (with_nodes(node(1, initial_token=0, num_tokens=16)), "has both initial_token and num_tokens"),
    (with_nodes({"name": "x", "public": "10.0.0.1:1", "private": "10.0.0.1:2"}), "needs initial_token"),
    (with_nodes(node(1, num_tokens=0)), "num_tokens must be an integer from 1 to 1024, got 0"),
    (with_nodes(node(1, num_tokens=1025)), "got 1025"),
    (with_nodes(node(1, num_tokens=16.0)), "got 16.0"),
    (with_nodes({"public": "10.0.0.1:1", "private": "10.0.0.1:2", "num_tokens": 1}), "nodes[0] needs a name"),
    (with_nodes("CB_Server_1"), "nodes[0] must be a table"),
    (cluster_data(nodes=0), "at least one [[nodes]] table"),
    (cluster_data(cluster_name=""), "cluster_name must be a non-empty string"),
    (cluster_data(lease_ttl_s=0.5), "lease_ttl_s must be a number of seconds from 1 to 60, got 0.5"),
    (cluster_data(lease_ttl_s=61), "got 61"),
    (cluster_data(lease_ttl_s="5"), "got '5'"),
])
def test_a_bad_file_is_refused_with_a_message_naming_the_problem(data, message):
    assert message in refused(data)


def test_load_cluster_names_the_file(tmp_path):
    missing = tmp_path / "none.toml"
    with pytest.raises(ConfigError, match="cannot read cluster file"):
        load_cluster(str(missing))
    broken = tmp_path / "broken.toml"
    broken.write_text("cluster_name = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_cluster(str(broken))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('cluster_name = "c"\n[[nodes]]\nname = "a"\npublic = "h:1"\nprivate = "h:2"\nnum_tokens = 4\n')
    with pytest.raises(ConfigError) as info:
        load_cluster(str(wrong))
    assert str(info.value).startswith(f"cluster file {wrong}: state_store is required")
    good = tmp_path / "good.toml"
    good.write_text(wrong.read_text().replace('cluster_name = "c"', 'cluster_name = "c"\nstate_store = "redis://h/0"'))
    assert load_cluster(str(good)).nodes["a"].tokens == tuple(evenly_spaced_tokens(4))
