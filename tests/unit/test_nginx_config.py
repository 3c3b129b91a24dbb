"""relay/_nginx.py: the text of the generated nginx.conf (real nginx runs it in tests/integration/test_nginx.py)."""

import re

import pytest

from relay._cluster import parse_cluster
from relay._config import ConfigError
from relay._nginx import nginx_config, upstream_name


def cluster_of(*names):
    nodes = []
    for index, name in enumerate(names):
        port = 8700 + 10 * index
        nodes.append({"name": name, "public": f"10.0.0.{index + 1}:{port}", "private": f"10.0.0.{index + 1}:{port + 1}",
                      "initial_token": index * 1000})
    return parse_cluster({"cluster_name": "cobrowse", "partitioner": "murmur3", "state_store": "redis://10.0.0.9:6379/0",
                          "nodes": nodes})


def block(text: str, opening: str) -> str:
    """The body of the first ``opening {...}`` block (no nested braces inside the ones we look at)."""
    start = text.index(opening + " {")
    return text[start:text.index("}", start)]


THREE = cluster_of("CB_Server_1", "CB_Server_2", "CB_Server_3")


def test_each_node_has_its_upstream_with_the_others_as_backups():
    text = nginx_config(THREE)
    for index, name in enumerate(["CB_Server_1", "CB_Server_2", "CB_Server_3"]):
        body = block(text, f"upstream {upstream_name(name)}")
        servers = re.findall(r"server (\S+) max_fails=1 fail_timeout=3s( backup)?;", body)
        assert servers[0] == (f"10.0.0.{index + 1}:{8700 + 10 * index}", "")
        # backups are given the same short fail_timeout (nginx's default, 10 s, left every server of an
        # upstream marked failed after a few quick kills: 502 for clients whose nodes were all up)
        assert sorted(address for address, kind in servers[1:] if kind == " backup") == sorted(
            f"10.0.0.{other + 1}:{8700 + 10 * other}" for other in range(3) if other != index)
        assert len(servers) == 3
    general = block(text, "upstream relay_cluster")
    assert sorted(re.findall(r"server (\S+) max_fails", general)) == ["10.0.0.1:8700", "10.0.0.2:8710", "10.0.0.3:8720"]
    assert "backup" not in general


def test_the_cookie_map_sends_each_node_name_to_its_upstream():
    text = nginx_config(THREE)
    body = block(text, "map $cookie_gcbSessionServer $relay_upstream")
    assert "default relay_cluster;" in body
    for name in ("CB_Server_1", "CB_Server_2", "CB_Server_3"):
        assert f"{name} {upstream_name(name)};" in body
    assert text.count("proxy_pass http://$relay_upstream;") == 3  # create, join, everything under /cobrowse/
    assert "$cookie_sticky" in nginx_config(THREE, cookie_name="sticky")


def test_forwarding_websocket_timeouts_buffers_and_limits():
    text = nginx_config(THREE, ping_interval_s=20, poll_wait_s=25)
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;", "proxy_set_header Host $relay_host;",
                 "proxy_set_header X-Forwarded-Proto $scheme;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_set_header X-Real-IP $remote_addr;", "proxy_next_upstream error timeout http_502 http_504;",
                 "proxy_connect_timeout 2s;", "proxy_read_timeout 75s;", "client_max_body_size 16m;",
                 "proxy_buffers 16 1m;", "limit_req_status 429;", "proxy_next_upstream_tries 3;"):
        assert line in text, line
    assert "default upgrade;" in block(text, "map $http_upgrade $connection_upgrade")
    assert re.search(r"limit_req_zone \$relay_limit_key zone=relay_creates:\S+ rate=30r/m;", text)
    assert re.search(r"limit_req_zone \$relay_limit_key zone=relay_joins:\S+ rate=120r/m;", text)
    assert "limit_req zone=relay_creates burst=" in block(text, "location = /cobrowse/sessions")
    assert "limit_req zone=relay_joins burst=" in block(text, "location ~ ^/cobrowse/sessions/[^/]+/join$")
    # The read timeout follows relay's own silences, and the generated file says why.
    assert "proxy_read_timeout 300s;" in nginx_config(THREE, ping_interval_s=100, poll_wait_s=25)
    assert "ping interval (20 s, ping_interval_s)" in text
    # Bodies and buffers follow relay's message limit.
    bigger = nginx_config(THREE, max_message_bytes=32 * 1024 * 1024, poll_body_bytes=32 * 1024 * 1024)
    assert "client_max_body_size 32m;" in bigger and "proxy_buffers 32 1m;" in bigger


def test_nothing_that_would_clash_with_the_command_line_or_need_another_file():
    text = nginx_config(THREE)
    for directive in ("user", "pid", "include", "daemon"):
        assert not re.search(rf"^\s*{directive}\s", text, re.M), directive
    assert not re.search(r"^error_log", text, re.M)  # -g gives it; a second top-level one would be a duplicate
    assert "listen 80;" in text and "server_name _;" in text
    assert "listen 127.0.0.1:8080;" in nginx_config(THREE, listen="127.0.0.1:8080")
    assert "listen [::1]:8080;" in nginx_config(THREE, listen="[::1]:8080")
    assert "access_log /srv/lb/access.log relay;" in nginx_config(THREE, runtime_dir="/srv/lb/")
    assert "proxy_temp_path /srv/lb/proxy_temp;" in nginx_config(THREE, runtime_dir="/srv/lb")


def test_tls_adds_an_https_listener():
    text = nginx_config(THREE, tls_cert="/etc/lb/cert.pem", tls_key="/etc/lb/key.pem", tls_listen=8443)
    assert "listen 80;" in text and "listen 8443 ssl;" in text
    assert "ssl_certificate /etc/lb/cert.pem;" in text and "ssl_certificate_key /etc/lb/key.pem;" in text


def test_sample_1_reaches_the_nodes_over_https_verified_when_asked():
    text = nginx_config(THREE, upstream_tls=True)
    assert "Sample 1" in text
    assert re.findall(r"proxy_pass (\w+)://", text) == ["https"] * 4
    assert "proxy_ssl_protocols TLSv1.2 TLSv1.3;" in text and "proxy_ssl_verify on;" not in text
    verified = nginx_config(THREE, upstream_tls=True, upstream_ca="/etc/lb/nodes-ca.pem",
                            upstream_tls_name="relay-nodes.internal")
    assert "proxy_ssl_trusted_certificate /etc/lb/nodes-ca.pem;" in verified and "proxy_ssl_verify on;" in verified
    assert "proxy_ssl_name relay-nodes.internal;" in verified and "proxy_ssl_server_name on;" in verified
    assert re.findall(r"proxy_pass (\w+)://", nginx_config(THREE)) == ["http"] * 4  # Sample 2, the default


@pytest.mark.parametrize("call, message", [
    (lambda: nginx_config(THREE, upstream_ca="/ca.pem", upstream_tls_name="n"), "need upstream_tls"),
    (lambda: nginx_config(THREE, upstream_tls=True, upstream_ca="/ca.pem"), "needs both the CA and the name"),
    (lambda: nginx_config(THREE, upstream_tls=True, upstream_ca="/ca.pem", upstream_tls_name="a;b"),
     "must be a DNS name"),
    (lambda: nginx_config(cluster_of("CB Server")), "cannot be used in an nginx map"),
    (lambda: nginx_config(cluster_of("cb_1", "CB_1")), "differ only in case"),
    (lambda: nginx_config(THREE, cookie_name="gcb-session"), "cannot be an nginx $cookie_ variable"),
    (lambda: nginx_config(THREE, listen=0), "between 1 and 65535"),
    (lambda: nginx_config(THREE, listen="nowhere"), "listen must be HOST:PORT"),
    (lambda: nginx_config(THREE, server_name="a;b"), "not a valid nginx server_name"),
    (lambda: nginx_config(THREE, tls_cert="/x.pem"), "needs both"),
    (lambda: nginx_config(THREE, runtime_dir="/tmp/a b"), "must not contain spaces"),
])
def test_what_nginx_could_not_take_is_refused_with_the_reason(call, message):
    with pytest.raises(ConfigError) as info:
        call()
    assert message in str(info.value)
