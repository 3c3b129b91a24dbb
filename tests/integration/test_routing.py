"""The route table on a live node: HEAD probes, 405 with Allow, a preflight only where the API is."""

import trio

import relay
from helpers import running_relay


def header(headers, name):
    return next((value for key, value in headers if key == name), None)


async def test_head_health_is_the_head_of_get_health():
    with trio.fail_after(10):
        async with running_relay() as (_server, listening, client):
            status, headers, body = await client.request("HEAD", "/health")
            assert status == 200 and body == b""
            assert int(header(headers, "content-length")) == len((await client.request("GET", "/health"))[2])
            private = relay.Client("127.0.0.1", listening.private_port)
            assert (await private.request("HEAD", "/health"))[0] == 200


async def test_a_wrong_method_is_405_with_allow_and_the_connection_carries_on():
    with trio.fail_after(10):
        async with running_relay() as (_server, listening, client):
            status, headers, body = await client.request("PUT", "/cobrowse/poll/S1")
            assert status == 405 and header(headers, "allow") == "GET, POST, OPTIONS"
            assert b'"method-not-allowed"' in body
            status, headers, _body = await client.request("GET", "/cobrowse/sessions")
            assert status == 405 and header(headers, "allow") == "POST, OPTIONS"
            private = relay.Client("127.0.0.1", listening.private_port)
            status, headers, _body = await private.request("POST", "/metrics")
            assert status == 405 and header(headers, "allow") == "GET, HEAD"
            assert (await client.request("GET", "/health"))[0] == 200


async def test_options_outside_the_api_is_not_a_preflight():
    with trio.fail_after(10):
        async with running_relay() as (_server, _listening, client):
            assert (await client.request("OPTIONS", "/cobrowse/nope"))[0] == 404
            status, headers, _body = await client.request("OPTIONS", "/cobrowse/client.js")
            assert status == 405 and header(headers, "allow") == "GET, HEAD"
            assert (await client.request("OPTIONS", "/cobrowse/sessions"))[0] == 204
