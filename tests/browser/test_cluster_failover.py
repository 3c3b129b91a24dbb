"""The demo in Chromium through nginx in front of two relay nodes (with redis-server): the host is
killed (-9) and the agent's page recovers by itself, with the master's current page, on the other node.

Everything is real: Debian's nginx running the config of ``relay nginx-config``, two ``relay serve
--cluster`` processes, redis-server, and the demo pages loaded from nginx's address.
"""

from __future__ import annotations

import trio

from cluster_nodes import ClusterNodes
from demo_pages import cookie, open_master, open_slave, save_side_by_side
from real_nginx import RealNginx, _make_dir, free_port
from real_redis import RedisServer
from relay._cluster import load_cluster
from relay._nginx import nginx_config

LEASE_TTL_S = 2.0
RECOVERY_TIMEOUT_MS = 30_000  # lease TTL + the pages' reconnect backoff, with room for a loaded machine


class NginxBase:
    """What demo_pages needs of a node: the base URL (here nginx's)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"


def test_the_agents_page_recovers_by_itself_when_the_host_is_killed(tmp_path, new_context, artifacts):
    with RedisServer(tmp_path / "redis") as redis, ClusterNodes(
            tmp_path / "nodes", redis.url, names=("CB_Server_1", "CB_Server_2"), rf=2, lease_ttl_s=LEASE_TTL_S,
            extra_args=["--trusted-proxies", "127.0.0.1"]) as nodes:
        nodes.start_all()
        port = free_port()
        directory = _make_dir()
        nginx = RealNginx(directory, port, nginx_config(load_cluster(str(nodes.file)), listen=f"127.0.0.1:{port}",
                                                        runtime_dir=directory))
        trio.run(nginx.start)
        try:
            site = NginxBase(port)
            customer, agent = new_context(), new_context()  # two browsers, two cookie jars
            master = open_master(customer, site)
            host = cookie(customer)
            assert host in nodes.names  # the seed's procedure: the cookie names the host
            slave = open_slave(agent, site, master.session, "agent-1")
            assert cookie(agent) == host
            master.page.evaluate("""() => { const p = document.createElement('p'); p.id = 'before';
                                           p.textContent = 'before the failover'; document.body.append(p); }""")
            slave.wait_for_replica(master, 5_000)
            for page in (master.page, slave.page):
                page.evaluate("() => { window.hellos = []; relayDemo.connection.on('hello', h => hellos.push(h)); }")
            snapshots_before = slave.page.evaluate("relayDemo.received.snapshot")
            # Wait for the relay's ack: the failover copy holds the page (relay/_streamcopy.py).
            master.page.wait_for_function("relayDemo.connection._window.kept.length === 0", timeout=5_000)

            nodes.kill(host)
            # Both pages reconnect by themselves. The new host continues the stream from the failover
            # copy (docs/protocol.md 4b): the master's hello is resumed, it sends no snapshot again, and
            # the slave resumes where it was.  Then the page goes on changing.
            master.page.wait_for_function(
                "relayDemo.connection.state === 'open' && relayDemo.connection.epoch === 2", timeout=RECOVERY_TIMEOUT_MS)
            master.page.evaluate("""() => { const p = document.createElement('p'); p.id = 'after';
                                           p.textContent = 'after the failover'; document.body.append(p); }""")
            slave.page.wait_for_function("relayDemo.connection.state === 'open' && relayDemo.connection.epoch === 2",
                                         timeout=RECOVERY_TIMEOUT_MS)
            slave.wait_for_replica(master, RECOVERY_TIMEOUT_MS)
            other = next(name for name in nodes.names if name != host)
            assert cookie(customer) == other and cookie(agent) == other  # the cookie moved with the session
            assert "after the failover" in slave.page.evaluate("relayDemo.replay.document.body.textContent")
            master_hello = master.page.evaluate("hellos[hellos.length - 1]")
            slave_hello = slave.page.evaluate("hellos[hellos.length - 1]")
            assert master_hello["epoch"] == 2 and master_hello["resumed"] is True, master_hello
            assert slave_hello["epoch"] == 2 and slave_hello["catchup"] == "resume", slave_hello
            assert slave.page.evaluate("relayDemo.received.snapshot") == snapshots_before  # no page sent again
            save_side_by_side(customer, master.page, slave.page, artifacts / "cluster-failover.png", scale=0.5)
        except BaseException:
            print(nodes.logs())
            print(nginx.error_log())
            raise
        finally:
            trio.run(nginx.stop)
