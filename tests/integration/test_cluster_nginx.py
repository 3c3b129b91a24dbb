"""The seed's validation procedure on a real cluster: Debian nginx running the config of
``relay nginx-config`` in front of three relay node processes and a redis-server, all on 127.0.0.1.

A master with no cookie creates a session and gets the cookie of the node that hosts it; a fresh
client joins by session ID and gets the same cookie value; messages flow.  A client with no cookie and
one with another node's cookie still reach the session.  kill -9 of the host: the clients reconnect
through nginx, the session continues on the next replica and the cookie moves there; `describe-cluster`
sees the cluster as it is.
"""

from __future__ import annotations

import json
import subprocess
import sys

import msgpack
import pytest
import trio

import relay
from real_nginx import RealNginx
from relay._cluster import load_cluster
from relay._nginx import nginx_config

pytestmark = pytest.mark.slow

LEASE_TTL_S = 2.0


@pytest.fixture
def cluster(start_cluster):
    return start_cluster(lease_ttl_s=LEASE_TTL_S, extra_args=["--trusted-proxies", "127.0.0.1", "--poll-wait-s", "2"])


def cookie_of(headers):
    values = [v.split(";")[0].split("=", 1)[1] for k, v in headers
              if k == "set-cookie" and v.startswith("gcbSessionServer=")]
    return values[-1] if values else None


class Browser:
    """One browser's cookie jar and origin (the page is served by nginx)."""

    def __init__(self, nginx) -> None:
        self.port = nginx.port
        self.cookie = None

    def client(self) -> relay.Client:
        return relay.Client("127.0.0.1", self.port, origin=f"http://127.0.0.1:{self.port}",
                            cookie=f"gcbSessionServer={self.cookie}" if self.cookie else None)

    def keep(self, headers) -> None:
        value = cookie_of(headers)
        if value is not None:
            self.cookie = value

    async def post(self, path: str, payload: dict) -> dict:
        client = self.client()
        status, headers, body = await client.request("POST", path, json.dumps(payload).encode(),
                                                     [("content-type", "application/json")])
        assert status in (200, 201), (status, body)
        self.keep(headers)
        return json.loads(body)

    async def connect(self, session_id: str, token: str, **resume):
        connection = await self.client().connect(session_id, token, **resume)
        self.keep(connection.response_headers)
        return connection

    async def connect_until_hello(self, session_id, token, budget_s=20.0, **resume):
        with trio.fail_after(budget_s):
            while True:
                try:
                    connection = await self.connect(session_id, token, **resume)
                    envelope = await connection.receive()
                    return connection, envelope.decode()
                except relay.HTTPStatusError as exc:
                    assert exc.status in (502, 503, 504), exc
                except relay.ConnectionClosed:
                    pass
                await trio.sleep(0.2)


async def receive_kind(connection, kind):
    for _ in range(100):
        envelope = await connection.receive()
        if envelope.kind == kind:
            return envelope
    raise AssertionError(f"no {kind}")


async def test_the_seeds_procedure_and_failover_through_nginx(cluster, tmp_path):
    file_cluster = load_cluster(str(cluster.file))
    async with RealNginx.running(lambda port, directory: nginx_config(
            file_cluster, listen=f"127.0.0.1:{port}", runtime_dir=directory, poll_wait_s=2.0)) as nginx:
        with trio.fail_after(90):
            customer = Browser(nginx)
            created = await customer.post("/cobrowse/sessions", {})
            host = customer.cookie
            assert host == created["node"] and host in cluster.names  # the cookie names the host
            session_id = created["session"]
            agent = Browser(nginx)  # a fresh browser, no cookie
            joined = await agent.post(f"/cobrowse/sessions/{session_id}/join", {"agent": "agent-1"})
            assert agent.cookie == host
            master = await customer.connect(session_id, created["master_token"])
            assert (await master.receive()).kind == "hello"
            slave = await agent.connect(session_id, joined["slave_token"])
            assert (await slave.receive()).kind == "hello"
            await master.send("snapshot", msgpack.packb("page 1"))
            assert (await receive_kind(slave, "snapshot")).decode() == "page 1"

            # No cookie, and another node's cookie: both still reach the session, and are pinned to its host.
            other = next(name for name in cluster.names if name != host)
            for cookie in (None, other):
                stray = Browser(nginx)
                stray.cookie = cookie
                extra = await stray.post(f"/cobrowse/sessions/{session_id}/join", {"agent": f"agent-{cookie}"})
                connection = await stray.connect(session_id, extra["slave_token"])
                assert stray.cookie == host
                assert (await connection.receive()).kind == "hello"
                assert (await receive_kind(connection, "snapshot")).decode() == "page 1"
                await connection.close()

            # describe-cluster: every node up and agreeing.
            described = subprocess.run([sys.executable, "-m", "relay", "describe-cluster", "--cluster", str(cluster.file)],
                                       capture_output=True, text=True, timeout=30)
            assert described.returncode == 0, described.stdout + described.stderr

            # kill -9 of the host: through nginx (whose cookie map points at the dead node), the clients
            # reach the next replica, which takes the session over; the cookie moves there.
            cluster.kill(host)
            master, hello = await customer.connect_until_hello(session_id, created["master_token"])
            assert hello["epoch"] == 2
            new_host = customer.cookie
            assert new_host != host and new_host in cluster.names
            live = [name for name in file_cluster.ring.successors(session_id) if name != host]
            assert new_host == live[0]  # the first live node in ring order after the dead host
            await master.send("snapshot", msgpack.packb("page 2"))
            slave, hello = await agent.connect_until_hello(session_id, joined["slave_token"], after=1, epoch=1)
            assert hello["epoch"] == 2 and hello["catchup"] == "resync"
            assert agent.cookie == new_host
            assert (await receive_kind(slave, "snapshot")).decode() == "page 2"

            described = subprocess.run([sys.executable, "-m", "relay", "describe-cluster", "--cluster", str(cluster.file)],
                                       capture_output=True, text=True, timeout=30)
            assert described.returncode == 1 and "DOWN" in described.stdout, described.stdout
