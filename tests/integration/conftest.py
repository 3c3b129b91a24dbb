"""Fixtures of the cluster tests: a redis-server, and a started cluster of relay node processes."""

from __future__ import annotations

import pytest

from cluster_nodes import ClusterNodes
from real_redis import RedisServer

CLUSTER_LEASE_TTL_S = 2.0  # short, so that failovers in tests take seconds


@pytest.fixture
def redis(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def start_cluster(tmp_path, redis):
    """``start_cluster(**ClusterNodes options)``: three nodes started and agreed on the live set; their
    logs are printed when the test fails, and every node is stopped at the end."""
    started = []

    def start(**options) -> ClusterNodes:
        options.setdefault("lease_ttl_s", CLUSTER_LEASE_TTL_S)
        nodes = ClusterNodes(tmp_path / f"nodes{len(started)}", redis.url, **options)
        started.append(nodes)
        nodes.start_all()
        return nodes

    try:
        yield start
    except BaseException:
        for nodes in started:
            print(nodes.logs())
        raise
    finally:
        for nodes in started:
            nodes.stop_all()
