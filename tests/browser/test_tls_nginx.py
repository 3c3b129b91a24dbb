"""The demo in Chromium over HTTPS through nginx in front of two relay nodes, in both of the seed's shapes:

- Sample 1 (its default): HTTPS from the browser to nginx and from nginx to the nodes, whose public
  listeners speak only TLS (``tls_cert_file``); nginx verifies them against the test CA.
- Sample 2: TLS ends at nginx, plain HTTP to the nodes.

In both, the nodes' private listeners speak mutual TLS (``private_tls_*``).  Everything is real:
Debian's nginx running ``relay nginx-config``, two ``relay serve --cluster`` processes, redis-server,
a test CA made with openssl, and Chromium, which trusts nginx's certificate by its key only
(``--ignore-certificate-errors-spki-list``), not every certificate.
"""

from __future__ import annotations

import pytest
import trio

from cluster_nodes import ClusterNodes
from conftest import ACTION_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS, LAUNCH_TIMEOUT_MS
from demo_pages import cookie, open_master, open_slave
from real_nginx import RealNginx, _make_dir, free_port
from real_redis import RedisServer
from relay._cluster import load_cluster
from relay._nginx import nginx_config
from tls_certs import TestCA, spki_hash

REPLICA_TIMEOUT_MS = 10_000


class Site:
    """What demo_pages needs of a node: the base URL (here nginx's HTTPS listener)."""

    def __init__(self, port: int) -> None:
        self.base = f"https://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory)
    return {"ca": ca, "node": ca.issue("node"), "lb": ca.issue("lb")}


@pytest.fixture(scope="module")
def tls_browser(pki, playwright):
    """A Chromium that trusts exactly nginx's key (the test CA is not installed anywhere)."""
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), timeout=LAUNCH_TIMEOUT_MS,
        args=CHROMIUM_ARGS + [f"--ignore-certificate-errors-spki-list={spki_hash(pki['lb'].cert)}"])
    try:
        yield browser
    finally:
        browser.close()


def _context(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    return context


@pytest.mark.parametrize("sample", [1, 2])
def test_the_demo_over_https_through_nginx(sample, tmp_path, pki, tls_browser):
    node, ca = pki["node"], pki["ca"]
    args = ["--trusted-proxies", "127.0.0.1", "--private-tls-cert-file", node.cert, "--private-tls-key-file",
            node.key, "--private-tls-ca-file", ca.cert]
    if sample == 1:
        args += ["--tls-cert-file", node.cert, "--tls-key-file", node.key]
    with RedisServer(tmp_path / "redis") as redis, ClusterNodes(
            tmp_path / "nodes", redis.url, names=("CB_Server_1", "CB_Server_2"), rf=2, extra_args=args,
            private_tls=ca.client_context(node)) as nodes:
        nodes.start_all()
        port, tls_port = free_port(), free_port()
        directory = _make_dir()
        upstream = dict(upstream_tls=True, upstream_ca=ca.cert, upstream_tls_name="localhost") if sample == 1 else {}
        text = nginx_config(load_cluster(str(nodes.file)), listen=f"127.0.0.1:{port}", tls_cert=pki["lb"].cert,
                            tls_key=pki["lb"].key, tls_listen=f"127.0.0.1:{tls_port}", runtime_dir=directory,
                            **upstream)
        assert ("proxy_pass https://" in text) == (sample == 1)
        nginx = RealNginx(directory, port, text)
        trio.run(nginx.start)
        customer, agent = _context(tls_browser), _context(tls_browser)
        try:
            site = Site(tls_port)
            master = open_master(customer, site)
            host = cookie(customer)
            assert host in nodes.names
            assert master.page.evaluate("location.protocol") == "https:"
            # Joined through the other node: the join and the agent's WebSocket are forwarded to the
            # host over the private listeners' mutual TLS.
            other = next(name for name in nodes.names if name != host)
            agent.add_cookies([{"name": "gcbSessionServer", "value": other, "url": site.base}])
            slave = open_slave(agent, site, master.session, "agent-1")
            master.page.evaluate("""() => { const p = document.createElement('p'); p.id = 'tls';
                                           p.textContent = 'over https'; document.body.append(p); }""")
            slave.wait_for_replica(master, REPLICA_TIMEOUT_MS)
            assert "over https" in slave.page.evaluate("relayDemo.replay.document.body.textContent")
            assert slave.page.evaluate("relayDemo.connection.transport") == "websocket"
        except BaseException:
            print(nodes.logs())
            print(nginx.error_log())
            raise
        finally:
            customer.close()
            agent.close()
            trio.run(nginx.stop)
        logs = nodes.logs()
        assert "tls.handshake_failed" not in logs and "internal.error" not in logs
