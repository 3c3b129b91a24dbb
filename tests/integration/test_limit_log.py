"""Every limit hit writes a log line (SPEC 6), rate-limited so that an attacker cannot flood the log.

Found by an outside attack (issue "Hardening 2"): 431, 408, 413, 429 and the session-limit 503 wrote
no line, and a slow slave closed with 1013 was logged as ``code=-`` and missing from relay_closes_total.
"""

from __future__ import annotations

import logging

import trio

from relay._logging import LimitLog
from helpers import expect_close, new_session, pack, running_relay


def limit_lines(caplog) -> list:
    return [r for r in caplog.records if r.name == "relay.limits" and r.getMessage() == "limit.hit"]


def fields(record) -> dict:
    return record.__dict__["relay_fields"]


async def raw(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(data)
        received = b""
        with trio.move_on_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received
    finally:
        await stream.aclose()


async def test_each_limit_status_writes_a_limit_line(caplog):
    caplog.set_level(logging.WARNING, logger="relay.limits")
    with trio.fail_after(30):
        async with running_relay(max_header_bytes=1024, handshake_timeout_s=0.3, poll_body_bytes=1024,
                                 max_sessions=1, max_slaves_per_session=1) as (server, listening, client):
            port = listening.public_port
            assert b" 431 " in await raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 4096 + b"\r\n\r\n")
            assert b" 408 " in await raw(port, b"GET /heal")
            created, (joined,) = await new_session(client, slaves=1)
            status, _h, _b = await client.request("POST", f"/cobrowse/poll/{created['session']}?token="
                                                  f"{joined['slave_token']}", b"\x00" * 4096)
            assert status == 413
            status, _h, _b = await client.request("POST", f"/cobrowse/sessions/{created['session']}/join", b"{}")
            assert status == 429
            status, _h, _b = await client.request("POST", "/cobrowse/sessions", b"{}")
            assert status == 503
    seen = {(fields(r)["limit"], fields(r).get("status")) for r in limit_lines(caplog)}
    assert {("max_header_bytes", 431), ("handshake_timeout_s", 408), ("body-too-large", 413),
            ("too-many-slaves", 429), ("too-many-sessions", 503)} <= seen, seen


async def test_a_slow_slave_closed_with_1013_is_logged_and_counted(caplog):
    caplog.set_level(logging.INFO)
    with trio.fail_after(30):
        async with running_relay(slave_queue_bytes=256 * 1024, max_message_bytes=64 * 1024,
                                 backlog_bytes=64 * 1024, history_hard_limit_bytes=128 * 1024) as (server, listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, joined["slave_token"])  # and never reads
            body = pack(b"m" * 60_000)
            for _ in range(400):
                await master.send("mutation", body)
                if server.host.sessions[sid].stats["slow_closed"]:
                    break
            assert server.host.sessions[sid].stats["slow_closed"] == 1
            assert await expect_close(slave) == 1013
            await trio.sleep(0.5)
            await master.close()
            metrics = server.metrics.render().decode()
    closed = [r for r in caplog.records if r.getMessage() == "ws.closed" and fields(r)["role"] == "slave"]
    assert [fields(r)["code"] for r in closed] == [1013]
    assert 'relay_closes_total{code="1013"} 1.0' in metrics
    assert any(fields(r)["limit"] == "slave_queue_bytes" for r in limit_lines(caplog))


def test_limit_lines_are_rate_limited_and_say_what_they_held_back(caplog):
    caplog.set_level(logging.WARNING, logger="relay.test-limits")
    now = [100.0]
    log = LimitLog(logging.getLogger("relay.test-limits"), per_second=5, clock=lambda: now[0])
    logged = sum(log.hit("max_header_bytes", status=431) for _ in range(10_000))
    assert logged == 5
    now[0] += 1.5
    assert log.hit("max_header_bytes", status=431)
    assert log.hit("max_connections", status=503)  # each limit has its own budget
    records = [r for r in caplog.records if r.name == "relay.test-limits"]
    assert len(records) == 7
    assert fields(records[5])["suppressed"] == 9_995
