"""Per-client limits on creating sessions and joining (issue "Hardening 2"): one connection created
10,000 sessions in 2.3 s and every later create got 503."""

from __future__ import annotations

import json

import trio

from helpers import new_session, running_relay


async def post(port: int, path: str, *, source: str = "127.0.0.1", forwarded_for: str = "") -> tuple:
    """POST {} from a chosen loopback source address; (status, headers, body)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    extra = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    await sock.send((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n{extra}"
                     f"Connection: close\r\n\r\n{{}}").encode())
    data = b""
    while chunk := await sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_a_client_that_creates_sessions_in_a_loop_gets_429_and_others_do_not():
    with trio.fail_after(60):
        async with running_relay(create_burst=30, create_rate_per_min=60) as (server, listening, client):
            port = listening.public_port
            statuses = [(await post(port, "/cobrowse/sessions"))[0] for _ in range(200)]
            assert statuses[:30] == [201] * 30
            assert statuses.count(429) >= 165
            status, headers, body = await post(port, "/cobrowse/sessions")
            assert status == 429 and int(headers["retry-after"]) >= 1
            assert json.loads(body)["error"] == "too-many-creates"
            assert (await post(port, "/cobrowse/sessions", source="127.0.0.2"))[0] == 201
            assert len(server.host.sessions) <= 33  # the node is not filled


async def test_forwarded_for_is_believed_only_from_trusted_proxies():
    with trio.fail_after(60):
        async with running_relay(create_burst=2, create_rate_per_min=1,
                                 trusted_proxies=["127.0.0.3"]) as (server, listening, client):
            port = listening.public_port
            # from an untrusted peer, a forged X-Forwarded-For changes nothing
            forged = [(await post(port, "/cobrowse/sessions", source="127.0.0.4", forwarded_for=f"198.51.100.{i}"))[0]
                      for i in range(4)]
            assert forged == [201, 201, 429, 429]
            # through the trusted proxy each client has its own budget
            for client_address in ("203.0.113.1", "203.0.113.2"):
                through = [(await post(port, "/cobrowse/sessions", source="127.0.0.3",
                                       forwarded_for=client_address))[0] for _ in range(3)]
                assert through == [201, 201, 429]


async def test_joins_are_limited_per_client_too():
    with trio.fail_after(60):
        async with running_relay(join_burst=5, join_rate_per_min=1, max_slaves_per_session=100) as (server, listening, client):
            created, _ = await new_session(client)
            path = f"/cobrowse/sessions/{created['session']}/join"
            statuses = [(await post(listening.public_port, path))[0] for _ in range(8)]
            assert statuses == [200] * 5 + [429] * 3
            assert (await post(listening.public_port, path, source="127.0.0.5"))[0] == 200
