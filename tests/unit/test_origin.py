"""Api.check_origin behind a load balancer: forwarded headers count only from trusted proxies, and
the 403 says what to configure."""

from __future__ import annotations

import h11
import pytest

from relay._config import Config
from relay._errors import HTTPError
from relay._routes import Request
from relay._server import Server

PROXY = "10.1.0.5"
STRANGER = "203.0.113.9"


def api(**overrides):
    settings = dict(listen="127.0.0.1:0", private_listen="127.0.0.1:0", node_name="unit-node")
    settings.update(overrides)
    return Server(Config(**settings)).api


def request(peer_ip, headers):
    head = h11.Request(method="POST", target="/cobrowse/sessions", headers=headers)
    return Request(head, "/cobrowse/sessions", {}, {}, peer_ip=peer_ip)


def refusal(api_, peer_ip, headers) -> str:
    with pytest.raises(HTTPError) as info:
        api_.check_origin(request(peer_ip, headers))
    assert (info.value.status, info.value.code) == (403, "origin-not-allowed")
    return info.value.message


BEHIND_TLS = [("host", "lb.example"), ("origin", "https://lb.example"), ("x-forwarded-proto", "https")]


def test_x_forwarded_proto_counts_from_a_trusted_proxy():
    assert api(trusted_proxies=[PROXY]).check_origin(request(PROXY, BEHIND_TLS)) == []
    assert api(trusted_proxies=["10.1.0.0/16"]).check_origin(request(PROXY, BEHIND_TLS)) == []


def test_x_forwarded_proto_from_anyone_else_is_ignored():
    message = refusal(api(trusted_proxies=[PROXY]), STRANGER, BEHIND_TLS)
    assert f"came through a proxy ({STRANGER}) that is not in trusted_proxies" in message
    assert "relay sees its own origin as 'http://lb.example'" in message
    # No trusted proxies at all: the same.
    assert "not in trusted_proxies" in refusal(api(), PROXY, BEHIND_TLS)
    # Without an Origin that matches, the plain-HTTP own origin still works for anyone.
    assert api().check_origin(request(STRANGER, [("host", "lb.example"), ("origin", "http://lb.example")])) == []


def test_x_forwarded_host_counts_from_a_trusted_proxy_only():
    headers = [("host", "10.0.0.1:8700"), ("origin", "https://shop.example"), ("x-forwarded-host", "shop.example"),
               ("x-forwarded-proto", "https")]
    assert api(trusted_proxies=[PROXY]).check_origin(request(PROXY, headers)) == []
    assert "own origin as 'http://10.0.0.1:8700'" in refusal(api(trusted_proxies=[PROXY]), STRANGER, headers)


@pytest.mark.parametrize("proto, allowed", [("https, http", True), ("HTTPS", True), ("ftp", False), ("", False)])
def test_the_client_facing_scheme_is_the_first_and_only_http_or_https(proto, allowed):
    headers = [("host", "lb.example"), ("origin", "https://lb.example"), ("x-forwarded-proto", proto)]
    if allowed:
        assert api(trusted_proxies=[PROXY]).check_origin(request(PROXY, headers)) == []
    else:
        refusal(api(trusted_proxies=[PROXY]), PROXY, headers)


def test_a_direct_refusal_says_what_to_configure():
    message = refusal(api(), STRANGER, [("host", "relay.example:8700"), ("origin", "http://lb.example")])
    assert message.startswith("origin 'http://lb.example' is not allowed (relay sees its own origin as "
                              "'http://relay.example:8700'): add it to allowed_origins (--allowed-origins)")
    assert "proxy_set_header Host $http_host" in message and "X-Forwarded-Proto" in message
    assert "trusted_proxies (--trusted-proxies)" in message


def test_allowed_origins_still_answer_with_cors_headers_whoever_forwards():
    headers = [("host", "10.0.0.1:8700"), ("origin", "https://shop.example"), ("x-forwarded-proto", "https")]
    cors = dict(api(allowed_origins=["https://shop.example"]).check_origin(request(STRANGER, headers)))
    assert cors["access-control-allow-origin"] == "https://shop.example"
