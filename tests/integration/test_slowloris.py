"""Slow and greedy clients: the handshake timeout and the connection limit protect real clients."""

import resource
import socket

import trio

from helpers import running_relay

TRICKLERS = 1000
HANDSHAKE_TIMEOUT_S = 1.5


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def _connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect(("127.0.0.1", port))
    return sock


async def test_trickling_connections_are_closed_while_real_clients_get_through():
    _raise_fd_limit(4 * TRICKLERS)
    with trio.fail_after(60):
        async with running_relay(handshake_timeout_s=HANDSHAKE_TIMEOUT_S) as (server, listening, client):
            tricklers = [await _connect(listening.public_port) for _ in range(TRICKLERS)]
            request = b"GET /cobrowse/ws/x?token=y HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 1000
            closed = [False] * TRICKLERS
            latencies = []

            async def trickle():
                # One byte per connection per round, forever: never a complete request head.
                for position in range(len(request)):
                    for index, sock in enumerate(tricklers):
                        if not closed[index]:
                            try:
                                await sock.send(request[position:position + 1])
                            except OSError:
                                closed[index] = True
                    await trio.sleep(0.2)

            async def watch(index, sock):
                while True:
                    try:
                        data = await sock.recv(4096)
                    except OSError:
                        break
                    if not data:
                        break
                closed[index] = True

            async def real_clients():
                for _ in range(20):
                    started = trio.current_time()
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):  # never starved behind the tricklers
                        created = await client.create_session()
                    assert "session" in created
                    latencies.append(trio.current_time() - started)
                    await trio.sleep(0.1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                for index, sock in enumerate(tricklers):
                    nursery.start_soon(watch, index, sock)
                await real_clients()
                with trio.fail_after(HANDSHAKE_TIMEOUT_S * 4):
                    while not all(closed):
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            for sock in tricklers:
                sock.close()
            assert len(latencies) == 20
            assert all(closed)
            with trio.fail_after(5):
                while server.connections:
                    await trio.sleep(0.05)


async def test_connections_over_the_limit_get_a_clear_refusal():
    with trio.fail_after(20):
        async with running_relay(max_connections=20, handshake_timeout_s=5) as (server, listening, client):
            idle = [await _connect(listening.public_port) for _ in range(20)]
            with trio.fail_after(5):
                while server.connections < 20:
                    await trio.sleep(0.01)
            extra = await _connect(listening.public_port)
            response = b""
            while True:
                data = await extra.recv(4096)
                if not data:
                    break
                response += data
            assert response.startswith(b"HTTP/1.1 503 ")
            assert b'"error":"overloaded"' in response
            for sock in idle:
                sock.close()
            extra.close()
            # Once the idle connections are gone, real clients are served again.
            with trio.fail_after(5):
                while server.connections:
                    await trio.sleep(0.01)
            assert "session" in await client.create_session()
