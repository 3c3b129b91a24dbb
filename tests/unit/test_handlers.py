"""The route handlers (relay/_api.py, relay/_longpoll.py) without a socket: a Request in, a Response out."""

from __future__ import annotations

import json

import h11
import msgpack
import pytest
import trio
import trio.testing

from relay._config import Config
from relay._errors import HTTPError
from relay._routes import Request
from relay._server import Server

ORIGIN_OK = "https://shop.example"


def make_server(**overrides) -> Server:
    settings = dict(listen="127.0.0.1:0", private_listen="127.0.0.1:0", node_name="unit-node",
                    allowed_origins=[ORIGIN_OK], poll_wait_s=5.0)
    settings.update(overrides)
    return Server(Config(**settings))


def request(method: str, path: str, *, query=None, params=None, body: bytes = b"", headers=()) -> Request:
    head = h11.Request(method=method, target=path, headers=[("host", "relay.test"), *headers])

    async def read_body(limit):
        if len(body) > limit:
            raise HTTPError(413, "body-too-large", f"request body over {limit} bytes")
        return body

    return Request(head, path, query or {}, params or {}, read_body=read_body)


async def call(server: Server, handler: str, *args, **kwargs):
    return await server._handlers[handler](request(*args, **kwargs))


async def refused(server: Server, handler: str, *args, **kwargs) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        await call(server, handler, *args, **kwargs)
    return info.value


async def test_create_join_and_end_a_session_through_the_handlers():
    server = make_server()
    created = await call(server, "create_session", "POST", "/cobrowse/sessions", body=b'{"chat": true}')
    assert created.status == 201 and ("set-cookie", server.config.set_cookie_value()) in created.headers
    session = json.loads(created.body)
    assert session["chat"] is True and session["node"] == "unit-node"
    sid = {"session": session["session"]}
    joined = await call(server, "join_session", "POST", "/x", params=sid, body=b'{"agent": "a1"}')
    slave = json.loads(joined.body)
    assert joined.status == 200 and slave["slave_token"]
    error = await refused(server, "end_session", "DELETE", "/x", params=sid, query={"token": slave["slave_token"]})
    assert (error.status, error.code) == (403, "master-only")
    ended = await call(server, "end_session", "DELETE", "/x", params=sid,
                       headers=[("authorization", f"Bearer {session['master_token']}")])
    assert ended.status == 204
    error = await refused(server, "join_session", "POST", "/x", params=sid, body=b"{}")
    assert (error.status, error.code) == (404, "unknown-session")


@pytest.mark.parametrize("body, code", [(b"[1]", "bad-json"), (b"{", "bad-json"), (b'{"chat": 1}', "bad-request"),
                                        (b"x" * (64 * 1024 + 1), "body-too-large")])
async def test_a_bad_create_body_is_refused_with_its_code(body, code):
    assert (await refused(make_server(), "create_session", "POST", "/cobrowse/sessions", body=body)).code == code


@pytest.mark.parametrize("origin, allowed", [(None, True), ("http://relay.test", True), (ORIGIN_OK, True),
                                             ("https://evil.example", False)])
def test_the_origin_check(origin, allowed):
    server = make_server()
    headers = [("origin", origin)] if origin else []
    if not allowed:
        with pytest.raises(HTTPError) as info:
            server.api.check_origin(request("GET", "/x", headers=headers))
        assert (info.value.status, info.value.code) == (403, "origin-not-allowed")
        return
    cors = dict(server.api.check_origin(request("GET", "/x", headers=headers)))
    assert cors.get("access-control-allow-origin") == (origin if origin == ORIGIN_OK else None)


async def test_admin_handlers():
    server = make_server()
    health = await call(server, "health", "GET", "/health")
    assert json.loads(health.body) == {"status": "ok", "node": "unit-node", "sessions": 0}
    assert (await call(server, "metrics", "GET", "/metrics")).content_type.startswith("text/plain")
    assert json.loads((await call(server, "sessions", "GET", "/sessions")).body)["sessions"] == []


async def test_long_poll_answers_the_queue_and_a_newer_get_releases_an_older_one():
    server = make_server()
    created = json.loads((await call(server, "create_session", "POST", "/cobrowse/sessions")).body)
    poll = dict(params={"session": created["session"]}, query={"token": created["master_token"]})
    first = await call(server, "poll_get", "GET", "/x", **poll)  # the master's hello is queued at once
    assert first.status == 200 and first.content_type == "application/msgpack"
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(first.body)
    assert [envelope[0] for envelope in unpacker][0] == "hello"
    answers = []

    async def get():
        answers.append(await call(server, "poll_get", "GET", "/x", **poll))

    with trio.fail_after(2):  # well before poll_wait_s: the first GET must be released, not time out
        async with trio.open_nursery() as nursery:
            nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # nothing queued: it waits
            nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            assert len(answers) == 1 and answers[0].status == 200 and answers[0].body == b""
            # A POST from the same token is delivered; the error it earns (a kind the master may
            # not send) is pushed on the peer's queue, and the push wakes the waiting GET.
            posted = await call(server, "poll_post", "POST", "/x", **poll,
                                body=msgpack.packb(["no-such-kind", 0, None]))
            assert json.loads(posted.body) == {"accepted": 1}
            await trio.testing.wait_all_tasks_blocked()
            assert len(answers) == 2 and answers[1].status == 200
            assert msgpack.unpackb(answers[1].body, raw=False)[0] == "error"
            nursery.cancel_scope.cancel()


async def test_a_malformed_long_poll_body_names_the_envelope():
    server = make_server()
    created = json.loads((await call(server, "create_session", "POST", "/cobrowse/sessions")).body)
    poll = dict(params={"session": created["session"]}, query={"token": created["master_token"]})
    error = await refused(server, "poll_post", "POST", "/x", **poll, body=msgpack.packb(["ping", 0, None]) + b"\x93")
    assert (error.status, error.code) == (400, "bad-envelope") and error.message.startswith("envelope 1:")
