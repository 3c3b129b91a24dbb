"""/metrics on the private listener: what an operator sees after some traffic."""

import trio

import relay
from helpers import expect_close, new_session, pack, recv_until, running_relay
from test_server import scrape_metrics


async def test_metrics_count_connections_messages_bytes_closes_and_refusals():
    with trio.fail_after(15):
        async with running_relay() as (_server, listening, client):
            created, (joined, polled) = await new_session(client, slaves=2)
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            slave = await client.connect(sid, joined["slave_token"])
            status, _headers, _body = await client.request("GET", f"/cobrowse/poll/{sid}?token={polled['slave_token']}")
            assert status == 200
            await master.send("snapshot", pack(b"s" * 1000))
            for n in range(10):
                await master.send("mutation", pack(b"m" * 100))
            await slave.send("pointer", pack({"x": n}))
            await recv_until(master, lambda e: e.kind == "pointer")
            await recv_until(slave, lambda e: e.kind == "mutation" and e.seq == 13)
            evil = relay.Client("127.0.0.1", listening.public_port, origin="https://evil.example")
            for _ in range(2):
                try:
                    await evil.create_session()
                except relay._client.HTTPStatusError:
                    pass
            metrics = await scrape_metrics(listening.private_port)
            assert metrics["relay_sessions"] == 1
            assert metrics['relay_connections{role="master",transport="ws"}'] == 1
            assert metrics['relay_connections{role="slave",transport="ws"}'] == 1
            assert metrics['relay_connections{role="slave",transport="poll"}'] == 1
            assert metrics['relay_messages_in_total{role="master"}'] == 11
            assert metrics['relay_messages_in_total{role="slave"}'] == 1
            assert metrics['relay_messages_published_total{kind="mutation"}'] == 10
            assert metrics['relay_messages_published_total{kind="pointer"}'] == 1
            # One per receiver: first join (the slave itself and the master), second join (both slaves
            # and the master), the snapshot and 10 mutations (2 slaves each), the pointer (the master).
            expected_out = 2 + 3 + 11 * 2 + 1
            assert metrics["relay_messages_out_total"] == expected_out
            assert metrics['relay_handshake_failures_total{reason="origin-not-allowed"}'] == 2
            assert metrics["relay_trio_tasks"] > 0 and metrics["process_open_fds"] > 0
            await client.end_session(sid, created["master_token"])
            assert await expect_close(slave) == 4002
            assert await expect_close(master) == 4002
            with trio.fail_after(5):
                while (await scrape_metrics(listening.private_port)).get('relay_closes_total{code="4002"}', 0) < 1:
                    await trio.sleep(0.05)
            metrics = await scrape_metrics(listening.private_port)
            assert metrics["relay_sessions"] == 0
            # Counts of ended sessions are kept.
            assert metrics["relay_messages_out_total"] >= expected_out
