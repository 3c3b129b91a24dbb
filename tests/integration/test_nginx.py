"""relay behind a real Debian nginx, the seed's Sample 2 layout: one node, the config from nginx_config,
and every call made the way a browser makes it (Origin and Host of the load balancer).

nginx runs as a foreground process with its files in a temporary folder (tests/real_nginx.py); the
relay node runs in this process on a 127.0.0.1 port, and the cluster file names it as the only node.
"""

import contextlib
import http.client
import json
import pathlib
import re
import shutil
import ssl
import subprocess

import msgpack
import trio

import relay
from helpers import pack, recv_until, running_relay, unpack
from real_nginx import RealNginx, check_nginx_config, free_port
from relay._accel import build_envelope
from relay._cluster import load_cluster
from relay._nginx import nginx_config

NODE = "CB_Server_1"
LB = "127.0.0.1"  # nginx's address as relay sees it (the TCP peer of every proxied request)


def cookie_value(headers, name="gcbSessionServer"):
    for key, value in headers:
        if key.lower() == "set-cookie":
            match = re.match(rf"{name}=([^;]*)", value)
            if match:
                return match.group(1)
    return None


def write_cluster(path, nodes):
    """A cluster file of ``nodes`` [(name, public port, private port)], loaded the way the CLI loads it."""
    lines = ['cluster_name = "cobrowse"', 'partitioner = "murmur3"', "replication_factor = 1",
             'state_store = "redis://127.0.0.1:6379/0"']
    for index, (name, public, private) in enumerate(nodes):
        lines += ["[[nodes]]", f'name = "{name}"', f'public = "127.0.0.1:{public}"',
                  f'private = "127.0.0.1:{private}"', f"initial_token = {index * 1000}"]
    path.write_text("\n".join(lines) + "\n")
    return load_cluster(str(path))


@contextlib.asynccontextmanager
async def relay_behind_nginx(tmp_path, *, extra_nodes=(), nginx_options=None, **relay_settings):
    """(server, listening, nginx): one relay node named NODE and nginx in front of it."""
    settings = dict(node_name=NODE, trusted_proxies=[LB], poll_wait_s=2.0)
    settings.update(relay_settings)
    async with running_relay(**settings) as (server, listening, _direct):
        cluster = write_cluster(tmp_path / "cluster.toml",
                                [(NODE, listening.public_port, listening.private_port), *extra_nodes])
        options = dict(nginx_options or {})
        async with RealNginx.running(lambda port, directory: nginx_config(
                cluster, listen=f"127.0.0.1:{port}", runtime_dir=directory,
                ping_interval_s=server.config.ping_interval_s, poll_wait_s=server.config.poll_wait_s,
                **options)) as nginx:
            yield server, listening, nginx


def browser(nginx, **kwargs) -> relay.Client:
    """A client that talks to nginx as a page served by nginx does: Origin and Host are nginx's."""
    return relay.Client("127.0.0.1", nginx.port, origin=f"http://127.0.0.1:{nginx.port}", **kwargs)


async def test_the_seeds_validation_procedure_through_nginx(tmp_path):
    """Create with no cookie -> the node's cookie; a fresh client joins by ID -> the same cookie;
    a master -> slave message over WebSockets through nginx."""
    with trio.fail_after(20):
        async with relay_behind_nginx(tmp_path) as (_server, _listening, nginx):
            master_side = browser(nginx)
            status, headers, body = await master_side.request("POST", "/cobrowse/sessions", b"{}",
                                                              [("content-type", "application/json")])
            assert status == 201, body
            assert cookie_value(headers) == NODE
            created = json.loads(body)
            slave_side = browser(nginx)  # a fresh browser: no cookie
            status, headers, body = await slave_side.request(
                "POST", f"/cobrowse/sessions/{created['session']}/join", b'{"agent": "agent-7"}',
                [("content-type", "application/json")])
            assert status == 200, body
            assert cookie_value(headers) == NODE
            joined = json.loads(body)

            master = await browser(nginx, cookie=f"gcbSessionServer={NODE}").connect(
                created["session"], created["master_token"])
            slave = await browser(nginx, cookie=f"gcbSessionServer={NODE}").connect(
                created["session"], joined["slave_token"])
            await master.send("snapshot", pack(b"<html>page</html>"))
            await master.send("mutation", pack(b"m1"))
            mutation, before = await recv_until(slave, lambda e: e.kind == "mutation")
            assert unpack(mutation.body) == b"m1"
            assert [e.kind for e in before if e.kind == "snapshot"] == ["snapshot"]
            await slave.close()
            await master.close()
            # nginx really was in between: its access log has the calls and the upgrade (a request is
            # logged once its connection is done, so the test waits for the lines, bounded).
            with trio.fail_after(5):
                while '" 101 ' not in nginx.access_log():
                    await trio.sleep(0.02)
            log = nginx.access_log()
            assert '"POST /cobrowse/sessions HTTP/1.1" 201' in log
            assert f'"GET /cobrowse/ws/{created["session"]}?token=' in log and '" 101 ' in log


def envelopes(body: bytes) -> list:
    """A long-poll answer: the delivered envelopes, arrays [kind, seq, body, sender] one after another
    (the body is the sender's msgpack value, so it comes out decoded)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(body)
    items = list(unpacker)
    assert all(isinstance(item, list) and len(item) == 4 for item in items), items
    return items


async def test_long_poll_through_nginx(tmp_path):
    with trio.fail_after(20):
        async with relay_behind_nginx(tmp_path) as (_server, _listening, nginx):
            page = browser(nginx)
            created = await page.create_session()
            joined = await page.join(created["session"], agent="agent-1")
            master = await page.connect(created["session"], created["master_token"])
            target = f"/cobrowse/poll/{created['session']}?token={joined['slave_token']}"
            status, _headers, body = await page.request("GET", target)  # attach: hello and catch-up
            assert status == 200, body
            assert "hello" in [item[0] for item in envelopes(body)]

            async def master_sends_soon():
                await trio.sleep(0.3)  # while the next GET waits in relay, behind nginx
                await master.send("mutation", pack(b"by websocket"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(master_sends_soon)
                status, _headers, body = await page.request("GET", target)
            assert status == 200
            kinds = {item[0]: item for item in envelopes(body)}
            assert kinds["mutation"][2] == b"by websocket"
            # The other way: a long-poll POST through nginx reaches the master's WebSocket.
            status, _headers, body = await page.request(
                "POST", target, build_envelope("chat", 0, pack({"text": "by long-poll"})))
            assert status == 200 and json.loads(body)["accepted"] == 1
            chat, _before = await recv_until(master, lambda e: e.kind == "chat")
            assert unpack(chat.body) == {"text": "by long-poll"}
            await master.close()


async def test_a_cookie_naming_a_dead_node_falls_through_to_a_live_one(tmp_path):
    """The per-node upstream lists the other nodes as backups: CB_Server_2 is down (nothing listens
    on its port), so its clients reach CB_Server_1."""
    dead_public, dead_private = free_port(), free_port()
    with trio.fail_after(20):
        async with relay_behind_nginx(tmp_path, extra_nodes=[("CB_Server_2", dead_public, dead_private)]) as (
                _server, _listening, nginx):
            stale = browser(nginx, cookie="gcbSessionServer=CB_Server_2")
            status, headers, body = await stale.request("POST", "/cobrowse/sessions", b"{}")
            assert status == 201, body
            assert cookie_value(headers) == NODE  # the cookie moves to the node that answered
            # nginx did try the dead node first (it logs a request after its answer went out: wait for it)
            with trio.fail_after(5):
                while f"127.0.0.1:{dead_public}" not in nginx.access_log():
                    await trio.sleep(0.02)


async def test_nginx_limits_session_creates_per_client(tmp_path):
    """30 per minute with a burst of 10 (relay's own limit is looser: nginx answers first)."""
    with trio.fail_after(20):
        async with relay_behind_nginx(tmp_path) as (_server, listening, nginx):
            page = browser(nginx)
            statuses = [(await page.request("POST", "/cobrowse/sessions", b"{}"))[0] for _ in range(14)]
            assert statuses.count(429) >= 2 and set(statuses) == {201, 429}
            assert statuses[:11] == [201] * 11  # one at the rate, ten of burst
            # Joins have their own zone: the creates used up do not stop a join.
            created = json.loads((await relay.Client("127.0.0.1", listening.public_port).request(
                "POST", "/cobrowse/sessions", b"{}"))[2])
            status, _headers, _body = await page.request("POST", f"/cobrowse/sessions/{created['session']}/join",
                                                         b"{}")
            assert status == 200


async def test_an_origin_relay_does_not_allow_gets_a_403_that_says_what_to_configure(tmp_path):
    """relay does not trust nginx (trusted_proxies empty) and the page is on another origin."""
    with trio.fail_after(20):
        async with relay_behind_nginx(tmp_path, trusted_proxies=[]) as (_server, _listening, nginx):
            page = relay.Client("127.0.0.1", nginx.port, origin="http://lb.example")
            status, headers, body = await page.request("POST", "/cobrowse/sessions", b"{}")
            assert status == 403
            error = json.loads(body)
            assert error["error"] == "origin-not-allowed"
            message = error["message"]
            assert "origin 'http://lb.example' is not allowed" in message
            assert f"proxy ({LB}) that is not in trusted_proxies" in message
            assert "allowed_origins" in message
            assert cookie_value(headers) is None
            # The WebSocket handshake is refused the same way.
            with_trust = relay.Client("127.0.0.1", nginx.port, origin=f"http://127.0.0.1:{nginx.port}")
            created = await with_trust.create_session()  # same origin as nginx: Host is passed, no trust needed
            try:
                await page.connect(created["session"], created["master_token"])
            except relay.HTTPStatusError as refused:
                assert refused.status == 403 and "trusted_proxies" in refused.body["message"]
            else:
                raise AssertionError("a WebSocket from a refused origin was accepted")


def make_certificate(directory):
    cert, key = directory / "lb.crt", directory / "lb.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-subj", "/CN=127.0.0.1", "-days", "1"], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def https_post(port: int, path: str, origin: str) -> tuple:
    """A browser's POST over HTTPS to nginx (blocking: run it in a thread)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", path, body=b"{}", headers={"Origin": origin, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


async def test_tls_ended_at_nginx_is_believed_only_from_a_trusted_proxy(tmp_path):
    """Sample 2's SSL acceleration: the browser's origin is https://..., relay hears plain HTTP and
    learns the scheme from X-Forwarded-Proto, which it believes from nginx only when trusted."""
    cert, key = make_certificate(tmp_path)
    tls_port = free_port()
    origin = f"https://127.0.0.1:{tls_port}"
    for trusted, expected in (([LB], 201), ([], 403)):
        with trio.fail_after(30):
            async with relay_behind_nginx(tmp_path, trusted_proxies=trusted, nginx_options=dict(
                    tls_cert=cert, tls_key=key, tls_listen=f"127.0.0.1:{tls_port}")) as (_server, _listening, nginx):
                status, headers, body = await trio.to_thread.run_sync(https_post, tls_port, "/cobrowse/sessions", origin)
                assert status == expected, body
                if expected == 201:
                    assert cookie_value(headers) == NODE
                else:
                    message = json.loads(body)["message"]
                    assert "relay sees its own origin as 'http://127.0.0.1:" in message
                    assert "not in trusted_proxies" in message


SAMPLE_2 = """
events {
 worker_connections 1024;
}

http {
 include mime.types;
 default_type application/octet-stream;

 log_format main '$remote_addr - $remote_user [$time_local] "$request" '
 '$status $body_bytes_sent "$http_referer" '
 '"$http_user_agent" "$http_x_forwarded_for"';

 access_log logs/nginx_access.log main;
 error_log logs/nginx_error.log debug;

 upstream cobrowse_cluster {
 server NODE_ADDRESS;
 }

 map $cookie_gcbSessionServer $sticky_backend {
 default 0;
 .CB_Server_1 NODE_ADDRESS;
 }

 map $http_upgrade $connection_upgrade {
 default upgrade;
 '' close;
 }

 server {
 listen LB_PORT;

 location /cobrowse {
 # Allow websockets, see http://nginx.org/en/docs/http/websocket.html
 proxy_http_version 1.1;
 proxy_set_header Upgrade $http_upgrade;
 proxy_set_header Connection $connection_upgrade;

 # Increase buffer sizes to find room for DOM and CSS messages
 proxy_buffers 8 2m;
 proxy_buffer_size 10m;
 proxy_busy_buffers_size 10m;

 if ($sticky_backend) {
 proxy_pass http://$sticky_backend$uri?$args;
 }
 proxy_pass http://cobrowse_cluster;
 }

 }

}
"""


def seed_sample_2(port, directory, node_port):
    """The seed's Sample 2 as printed, with its HTTPS listener left out (no certificate here), the
    node's address filled in, and nginx's temporary files kept in the test's folder; mime.types and
    logs/ are where the sample expects them (beside the config, under the prefix)."""
    shutil.copy("/etc/nginx/mime.types", pathlib.Path(directory) / "mime.types")
    (pathlib.Path(directory) / "logs").mkdir(exist_ok=True)
    temp_paths = "".join(f"\n {kind}_temp_path {kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                          "scgi"))
    return (SAMPLE_2.replace("NODE_ADDRESS", f"127.0.0.1:{node_port}").replace("LB_PORT", f"127.0.0.1:{port}")
            .replace("default_type application/octet-stream;", "default_type application/octet-stream;" + temp_paths))


async def test_the_seeds_own_sample_2_needs_allowed_origins_and_the_403_says_so():
    """What a user who copies Sample 2 sees: nginx sends Host: cobrowse_cluster and no scheme, so a
    browser's origin is not relay's; the 403 names the fixes, and allowed_origins is one of them."""
    node_port = free_port()  # nginx needs the node's address before the node needs nginx's origin
    for allow, expected in ((False, 403), (True, 201)):
        with trio.fail_after(20):
            async with RealNginx.running(lambda port, directory: seed_sample_2(port, directory, node_port)) as nginx:
                origin = f"http://127.0.0.1:{nginx.port}"
                async with running_relay(node_name=NODE, trusted_proxies=[LB], listen=f"127.0.0.1:{node_port}",
                                         allowed_origins=[origin] if allow else []):
                    status, headers, body = await relay.Client("127.0.0.1", nginx.port, origin=origin).request(
                        "POST", "/cobrowse/sessions", b"{}")
                assert status == expected, body
                if expected == 403:
                    message = json.loads(body)["message"]
                    assert "relay sees its own origin as 'http://cobrowse_cluster'" in message
                    assert "proxy_set_header Host $http_host" in message and "allowed_origins" in message
                else:
                    assert cookie_value(headers) == NODE


def test_real_nginx_accepts_the_generated_configs(tmp_path):
    cluster = write_cluster(tmp_path / "cluster.toml", [("CB_Server_1", 8700, 8701), ("CB_Server_2", 8710, 8711),
                                                        ("CB_Server_3", 8720, 8721)])
    cert, key = make_certificate(tmp_path)
    for text in (nginx_config(cluster), nginx_config(cluster, listen="127.0.0.1:8080", server_name="lb.example"),
                 nginx_config(cluster, tls_cert=cert, tls_key=key, tls_listen=8443)):
        checked = check_nginx_config(text)
        assert checked.returncode == 0, checked.stderr + text
        assert "syntax is ok" in checked.stderr


def test_real_nginx_refuses_a_broken_config_so_the_check_above_can_fail(tmp_path):
    cluster = write_cluster(tmp_path / "cluster.toml", [("CB_Server_1", 8700, 8701)])
    broken = nginx_config(cluster).replace("proxy_connect_timeout 2s;", "proxy_connect_timeout two seconds;")
    checked = check_nginx_config(broken)
    assert checked.returncode != 0 and "proxy_connect_timeout" in checked.stderr


def test_the_nginx_config_command_prints_the_generator_s_text(tmp_path):
    import sys
    cluster = write_cluster(tmp_path / "cluster.toml", [("CB_Server_1", 8700, 8701), ("CB_Server_2", 8710, 8711)])
    node_config = tmp_path / "relay.toml"
    node_config.write_text("ping_interval_s = 40.0\nidle_timeout_s = 120.0\ncookie_name = \"sticky\"\n")

    def command(*args):
        return subprocess.run([sys.executable, "-m", "relay", "nginx-config", "--cluster", str(tmp_path / "cluster.toml"),
                               *args], capture_output=True, text=True, timeout=30,
                              cwd=pathlib.Path(__file__).resolve().parents[2])

    done = command("--listen", "8080", "--server-name", "lb.example")
    assert done.returncode == 0, done.stderr
    assert done.stdout == nginx_config(cluster, listen="8080", server_name="lb.example")
    assert check_nginx_config(done.stdout).returncode == 0
    # The nodes' own TOML file shapes it: their ping interval and cookie name.
    shaped = command("--config", str(node_config)).stdout
    assert "proxy_read_timeout 120s;" in shaped and "map $cookie_sticky $relay_upstream" in shaped
    refused = command("--listen", "http://x")
    assert refused.returncode == 2 and "relay: error: listen" in refused.stderr


async def test_large_messages_and_bodies_pass_nginx_and_relay_has_the_last_word_on_size(tmp_path):
    """A 12 MiB snapshot reaches a WebSocket slave and a long-poll slave through nginx's buffers; a
    long-poll body of relay's poll_body_bytes reaches relay (nginx buffers it in its temporary
    folder, as the worker user); one byte more and nginx answers 413 itself."""
    snapshot = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB
    with trio.fail_after(60):
        async with relay_behind_nginx(tmp_path) as (server, _listening, nginx):
            page = browser(nginx)
            created = await page.create_session()
            by_socket = await page.join(created["session"], agent="socket")
            by_poll = await page.join(created["session"], agent="poll")
            poll_target = f"/cobrowse/poll/{created['session']}?token={by_poll['slave_token']}"
            assert (await page.request("GET", poll_target))[0] == 200  # attach the long-poll slave
            master = await page.connect(created["session"], created["master_token"])
            slave = await page.connect(created["session"], by_socket["slave_token"])
            await master.send("snapshot", pack(snapshot))
            received, _before = await recv_until(slave, lambda e: e.kind == "snapshot")
            assert unpack(received.body) == snapshot
            got = []
            while not got:
                status, _headers, body = await page.request("GET", poll_target)
                assert status == 200
                got = [item for item in envelopes(body) if item[0] == "snapshot"]
            assert got[0][2] == snapshot
            limit = server.config.poll_body_bytes
            status, _headers, body = await page.request("POST", poll_target, b"\x00" * limit)
            assert status == 400 and json.loads(body)["error"]  # relay read it: not an envelope
            status, _headers, body = await page.request("POST", poll_target, b"\x00" * (limit + 1))
            assert status == 413 and b"nginx" in body  # nginx's own page, before relay sees a byte
            await slave.close()
            await master.close()
