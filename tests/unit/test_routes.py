"""The route table of relay/_routes.py, sans-IO: every route, 405 with Allow, 404, listener separation."""

import h11
import pytest

from relay._errors import HTTPError
from relay._routes import FORWARDED, PRIVATE, PUBLIC, STATIC_FILES, Request, Route, RouteTable, parse_target, relay_routes

TABLE = RouteTable(relay_routes(demo_pages=True))

# (listener, method, path) -> (handler, params): every route a node has.
EXPECTED = [
    (PUBLIC, b"GET", "/health", "health", {}),
    (PRIVATE, b"GET", "/health", "health", {}),
    (PUBLIC, b"HEAD", "/health", "health", {}),
    (PRIVATE, b"HEAD", "/health", "health", {}),
    (PRIVATE, b"GET", "/metrics", "metrics", {}),
    (PRIVATE, b"GET", "/sessions", "sessions", {}),
    (PRIVATE, b"GET", "/cluster", "cluster", {}),
    (PRIVATE, b"HEAD", "/metrics", "metrics", {}),
    (PRIVATE, b"HEAD", "/sessions", "sessions", {}),
    (PRIVATE, b"HEAD", "/cluster", "cluster", {}),
    (PUBLIC, b"POST", "/cobrowse/sessions", "create_session", {}),
    (PUBLIC, b"POST", "/cobrowse/sessions/S1/join", "join_session", {"session": "S1"}),
    (PUBLIC, b"DELETE", "/cobrowse/sessions/S1", "end_session", {"session": "S1"}),
    (PUBLIC, b"GET", "/cobrowse/ws/S1", "websocket", {"session": "S1"}),
    (PUBLIC, b"GET", "/cobrowse/poll/S1", "poll_get", {"session": "S1"}),
    (PUBLIC, b"POST", "/cobrowse/poll/S1", "poll_post", {"session": "S1"}),
    (PUBLIC, b"OPTIONS", "/cobrowse/sessions", "preflight", {}),
    (PUBLIC, b"OPTIONS", "/cobrowse/sessions/S1/join", "preflight", {"session": "S1"}),
    (PUBLIC, b"OPTIONS", "/cobrowse/sessions/S1", "preflight", {"session": "S1"}),
    (PUBLIC, b"OPTIONS", "/cobrowse/ws/S1", "preflight", {"session": "S1"}),
    (PUBLIC, b"OPTIONS", "/cobrowse/poll/S1", "preflight", {"session": "S1"}),
] + [(PUBLIC, method, path, "static", {}) for path in STATIC_FILES for method in (b"GET", b"HEAD")]
# A request forwarded by a peer node (on the private listener, with x-relay-forwarded-by) reaches the
# routes of one session, and nothing else.
EXPECTED += [(FORWARDED, method, path, handler, params) for listener, method, path, handler, params in list(EXPECTED)
             if listener == PUBLIC and params]


@pytest.mark.parametrize("listener, method, path, handler, params", EXPECTED)
def test_every_route_matches_its_handler_and_params(listener, method, path, handler, params):
    match = TABLE.match(listener, method, path)
    assert match.route.handler == handler
    assert match.params == params


def test_the_table_has_no_route_beyond_the_expected_ones():
    listed = {(listener, route.method, route.handler) for route in TABLE.routes for listener in route.listeners}
    expected = {(listener, method, handler) for listener, method, _path, handler, _params in EXPECTED}
    assert listed == expected


def test_only_the_client_api_is_origin_checked():
    cors = {route.handler for route in TABLE.routes if route.cors}
    assert cors == {"create_session", "join_session", "end_session", "websocket", "poll_get", "poll_post", "preflight"}


def _error(listener, method, path) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        TABLE.match(listener, method, path)
    return info.value


@pytest.mark.parametrize("listener, method, path, allow", [
    (PUBLIC, b"POST", "/health", "GET, HEAD"),
    (PRIVATE, b"DELETE", "/health", "GET, HEAD"),
    (PRIVATE, b"POST", "/metrics", "GET, HEAD"),
    (PRIVATE, b"PUT", "/sessions", "GET, HEAD"),
    (PUBLIC, b"GET", "/cobrowse/sessions", "POST, OPTIONS"),
    (PUBLIC, b"GET", "/cobrowse/sessions/S1/join", "POST, OPTIONS"),
    (PUBLIC, b"POST", "/cobrowse/sessions/S1", "DELETE, OPTIONS"),
    (PUBLIC, b"POST", "/cobrowse/ws/S1", "GET, OPTIONS"),
    (PUBLIC, b"DELETE", "/cobrowse/poll/S1", "GET, POST, OPTIONS"),
    (PUBLIC, b"POST", "/cobrowse/client.js", "GET, HEAD"),
    (PUBLIC, b"OPTIONS", "/cobrowse/master.html", "GET, HEAD"),  # a page is not the API: no preflight
])
def test_a_wrong_method_is_405_with_the_methods_of_the_path(listener, method, path, allow):
    error = _error(listener, method, path)
    assert (error.status, error.code) == (405, "method-not-allowed")
    assert error.headers == [("allow", allow)]


@pytest.mark.parametrize("path", [
    "", "/", "*", "/nope", "/cobrowse", "/cobrowse/", "/cobrowse/nope", "/cobrowse/ws", "/cobrowse/ws/",
    "/cobrowse/ws/S1/", "/cobrowse/ws/S1/x", "/cobrowse//ws/S1", "//cobrowse/ws/S1", "/cobrowse/sessions/",
    "/cobrowse/sessions//join", "/cobrowse/sessions/S1/leave", "/cobrowse/sessions/S1/join/x", "/health/",
    "/HEALTH", "/cobrowse/poll", "/cobrowse/client.js/x", "/static/client.js",
])
@pytest.mark.parametrize("listener", [PUBLIC, PRIVATE])
@pytest.mark.parametrize("method", [b"GET", b"POST", b"OPTIONS"])
def test_unknown_paths_are_404(listener, method, path):
    error = _error(listener, method, path)
    assert (error.status, error.code) == (404, "not-found")
    assert error.headers == []


@pytest.mark.parametrize("path", ["/metrics", "/sessions"])
@pytest.mark.parametrize("method", [b"GET", b"POST", b"OPTIONS"])
def test_private_paths_are_never_matched_on_the_public_listener(method, path):
    """404, not 405: the public side does not learn that the path exists."""
    assert _error(PUBLIC, method, path).status == 404


@pytest.mark.parametrize("method, path", [(method, path) for _l, method, path, _h, _p in EXPECTED
                                          if _l == PUBLIC and path != "/health"])
def test_the_client_api_and_pages_are_not_served_on_the_private_listener(method, path):
    assert _error(PRIVATE, method, path).status == 404


def test_without_demo_pages_the_pages_are_404():
    table = RouteTable(relay_routes(demo_pages=False))
    for path in STATIC_FILES:
        assert pytest.raises(HTTPError, table.match, PUBLIC, b"GET", path).value.status == 404
    assert table.match(PUBLIC, b"GET", "/cobrowse/ws/S1").route.handler == "websocket"


def test_a_duplicate_route_is_refused_at_construction():
    with pytest.raises(ValueError, match="two routes for GET /x on public"):
        RouteTable([Route((PUBLIC,), b"GET", "/x", "a"), Route((PUBLIC,), b"GET", "/x", "b")])
    with pytest.raises(ValueError, match="must start with '/'"):
        RouteTable([Route((PUBLIC,), b"GET", "x", "a")])


def test_parse_target_splits_path_and_first_query_values():
    assert parse_target(b"/cobrowse/ws/S1?token=a&after=3&token=b") == ("/cobrowse/ws/S1", {"token": "a", "after": "3"})
    assert parse_target(b"http://relay.test/health")[0] == "/health"  # absolute form
    with pytest.raises(HTTPError) as info:
        parse_target(b"//[x")
    assert (info.value.status, info.value.code) == (400, "bad-request")


async def test_request_reads_header_values_and_its_body_through_the_given_reader():
    head = h11.Request(method="POST", target="/x", headers=[("Host", "h"), ("X-A", "1"), ("X-A", "2")])
    limits = []

    async def read_body(limit):
        limits.append(limit)
        return b"body"

    request = Request(head, "/x", {}, {}, read_body=read_body)
    assert request.method == b"POST"
    assert request.header(b"x-a") == "1" and request.header(b"x-b") is None
    assert await request.read_body(10) == b"body" and limits == [10]
    assert await Request(head, "/x", {}, {}).read_body(10) == b""


@pytest.mark.parametrize("method, path", [(b"POST", "/cobrowse/sessions"), (b"GET", "/metrics"),
                                          (b"GET", "/cobrowse/client.js"), (b"GET", "/cluster")])
def test_a_forwarded_request_reaches_nothing_but_a_session(method, path):
    assert _error(FORWARDED, method, path).status == 404
