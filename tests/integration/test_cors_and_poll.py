"""Cross-origin API calls (CORS) and the long-poll edges that browser clients rely on."""

import json

import trio

import relay
from helpers import new_session, pack, recv_until, running_relay, unpack
from relay._accel import build_envelope


def header(headers, name):
    values = [value for key, value in headers if key == name]
    return values[0] if values else None


async def test_allowed_origin_gets_cors_headers_and_preflight():
    with trio.fail_after(10):
        async with running_relay(allowed_origins=["https://shop.example"]) as (_server, listening, _client):
            shop = relay.Client("127.0.0.1", listening.public_port, origin="https://shop.example")
            await shop.create_session()
            assert header(shop.last_headers, "access-control-allow-origin") == "https://shop.example"
            assert header(shop.last_headers, "access-control-allow-credentials") == "true"
            status, headers, _body = await shop.request(
                "OPTIONS", "/cobrowse/sessions", headers=[("access-control-request-method", "POST")])
            assert status == 204
            assert "POST" in header(headers, "access-control-allow-methods")
            assert header(headers, "access-control-allow-origin") == "https://shop.example"
            # A refused origin gets neither the answer nor CORS headers, preflight included.
            evil = relay.Client("127.0.0.1", listening.public_port, origin="https://evil.example")
            status, headers, _body = await evil.request("OPTIONS", "/cobrowse/sessions")
            assert status == 403
            assert header(headers, "access-control-allow-origin") is None
            # Same-origin and non-browser calls need no CORS headers.
            plain = relay.Client("127.0.0.1", listening.public_port)
            await plain.create_session()
            assert header(plain.last_headers, "access-control-allow-origin") is None


async def test_post_from_a_websocket_client_does_not_replace_its_socket():
    with trio.fail_after(10):
        async with running_relay() as (_server, _listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            master = await client.connect(created["session"], created["master_token"])
            slave = await client.connect(created["session"], joined["slave_token"])
            body = build_envelope("chat", 0, pack({"text": "by POST"}))
            status, _headers, data = await client.request(
                "POST", f"/cobrowse/poll/{created['session']}?token={joined['slave_token']}", body)
            assert status == 200 and b'"accepted":1' in data
            chat, _before = await recv_until(slave, lambda e: e.kind == "chat")
            assert unpack(chat.body) == {"text": "by POST"}
            # The slave's WebSocket is still the one attached: it receives the next mutation.
            await master.send("mutation", pack(b"m1"))
            mutation, _before = await recv_until(slave, lambda e: e.kind == "mutation")
            assert mutation.seq == chat.seq + 1
            await slave.close()
            await master.close()


async def test_waiting_long_poll_learns_the_close_code():
    with trio.fail_after(10):
        async with running_relay(poll_wait_s=5) as (_server, _listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            target = f"/cobrowse/poll/{created['session']}?token={joined['slave_token']}"
            status, _headers, _body = await client.request("GET", target)  # attach: hello and catch-up
            assert status == 200
            answers = []

            async def wait_for_news():
                status, _headers, body = await client.request("GET", target)
                answers.append((status, json.loads(body)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_news)
                await trio.sleep(0.3)
                # The same slave opens a WebSocket (its transport came back): the poller is replaced.
                slave = await client.connect(created["session"], joined["slave_token"])
            assert answers == [(410, {"error": "closed", "message": "replaced by a newer connection of this slave",
                                      "close_code": 4001})]
            await slave.close()
