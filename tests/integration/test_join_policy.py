"""Joins need consent (SPEC 6): approve (the default), ticket, open; slave records are released.

Found by an outside attack (issue "Hardening 2"): a session ID alone was enough to receive the whole
page, one ticket let the same agent join six times, and 32 joins locked the real agents out.
"""

from __future__ import annotations

import logging

import pytest
import trio

import relay
from relay._config import JOIN_TICKET_SECRET_ENV
from helpers import HTTPStatusError, expect_close, pack, recv_until, running_relay, test_config

SECRET = b"0123456789abcdef0123456789abcdef"


async def next_presence(conn, event: str):
    envelope, _ = await recv_until(conn, lambda e: e.kind == "presence" and e.decode().get("event") == event)
    return envelope


async def admit(master, slave_id: str, allow: bool) -> None:
    await master.send("admit", pack({"slave": slave_id, "admit": allow}))


def test_the_default_policy_is_approve():
    assert relay.Config().join_policy == "approve"


async def test_an_unadmitted_slave_sees_nothing_until_the_master_admits_it():
    with trio.fail_after(20):
        async with running_relay(join_policy="approve") as (server, listening, client):
            created = await client.create_session()
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            await master.send("snapshot", pack("<p>secret page</p>"))
            await master.send("chat", pack("private words"))
            joined = await client.join(sid, agent="agent-7")
            assert joined["admitted"] is False
            slave = await client.connect(sid, joined["slave_token"])
            hello = await slave.receive()
            assert hello.kind == "hello" and hello.decode()["admitted"] is False
            assert hello.decode()["catchup"] == "none"

            request = await next_presence(master, "join-request")
            assert request.sender == "" and request.seq == 0
            assert request.decode() == {"event": "join-request", "slave": joined["slave"], "agent": "agent-7"}
            # Still nothing for the waiting slave, live or not; what it sends is refused.
            await master.send("mutation", pack("more of the page"))
            await slave.send("chat", pack("let me in"))
            error = await slave.receive()
            assert error.kind == "error" and error.decode()["code"] == "not-admitted"

            await admit(master, joined["slave"], True)
            second = await slave.receive()
            assert second.kind == "hello" and second.decode()["admitted"] is True
            assert second.decode()["catchup"] == "full"
            snapshot = await slave.receive()
            assert snapshot.kind == "snapshot" and snapshot.decode() == "<p>secret page</p>"
            rest = [await slave.receive() for _ in range(3)]
            assert [e.kind for e in rest] == ["chat", "mutation", "presence"]
            assert rest[2].decode()["event"] == "joined"
            await master.send("mutation", pack("live"))
            live, _ = await recv_until(slave, lambda e: e.kind == "mutation" and e.decode() == "live")
            assert live.sender == "master"
            await master.close()
            await slave.close()


async def test_a_refused_slave_is_closed_with_4403_and_released():
    with trio.fail_after(20):
        async with running_relay(join_policy="approve") as (server, listening, client):
            created = await client.create_session()
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            joined = await client.join(sid, agent="mallory")
            slave = await client.connect(sid, joined["slave_token"])
            await next_presence(master, "join-request")
            await admit(master, joined["slave"], False)
            assert await expect_close(slave) == 4403
            assert joined["slave"] not in server.host.sessions[sid].slaves
            with pytest.raises(HTTPStatusError) as info:
                await client.connect(sid, joined["slave_token"])
            assert info.value.status == 403
            await master.close()


async def test_an_unanswered_slave_is_refused_after_the_admit_timeout():
    with trio.fail_after(20):
        async with running_relay(join_policy="approve", admit_timeout_s=1.0) as (server, listening, client):
            created = await client.create_session()
            sid = created["session"]
            master = await client.connect(sid, created["master_token"])
            joined = await client.join(sid, agent="agent-1")
            slave = await client.connect(sid, joined["slave_token"])
            started = trio.current_time()
            assert await expect_close(slave) == 4403
            assert 0.9 <= trio.current_time() - started < 5
            withdrawn = await next_presence(master, "join-withdrawn")
            assert withdrawn.decode()["slave"] == joined["slave"]
            await master.close()


async def test_a_master_that_reconnects_is_told_of_pending_requests():
    with trio.fail_after(20):
        async with running_relay(join_policy="approve") as (server, listening, client):
            created = await client.create_session()
            sid = created["session"]
            joined = await client.join(sid, agent="agent-2")  # while no master is connected
            slave = await client.connect(sid, joined["slave_token"])
            master = await client.connect(sid, created["master_token"])
            hello = await master.receive()
            assert hello.kind == "hello"
            assert hello.decode()["pending"] == [{"slave": joined["slave"], "agent": "agent-2"}]
            assert hello.decode()["slaves"] == []
            await admit(master, joined["slave"], True)
            second = await slave.receive()
            while second.kind != "hello" or not second.decode()["admitted"]:
                second = await slave.receive()
            await master.close()
            await slave.close()


async def test_the_authorization_hook_decides_before_the_policy():
    with trio.fail_after(20):
        async with running_relay(join_policy="approve",
                                 authorize_join=lambda request: request.agent_id == "known") as (_s, _l, client):
            created = await client.create_session()
            assert (await client.join(created["session"], agent="known"))["admitted"] is True
            with pytest.raises(HTTPStatusError) as info:
                await client.join(created["session"], agent="stranger")
            assert info.value.status == 403


async def test_a_ticket_admits_the_agent_it_names_once():
    with trio.fail_after(20):
        async with running_relay(join_policy="ticket", join_ticket_secret=SECRET.decode()) as (_s, _l, client):
            created = await client.create_session()
            sid = created["session"]
            ticket = relay.make_join_ticket(SECRET, sid, "agent-9")
            for refused in ({}, {"join_token": ticket}, {"agent": "agent-8", "join_token": ticket},
                            {"agent": "agent-9", "join_token": relay.make_join_ticket(SECRET, sid, "agent-9", ttl_s=-1)},
                            {"agent": "agent-9", "join_token": relay.make_join_ticket(b"x" * 32, sid, "agent-9")}):
                with pytest.raises(HTTPStatusError) as info:
                    await client.join(sid, **refused)
                assert info.value.status == 403, refused
            joined = await client.join(sid, agent="agent-9", join_token=ticket)
            assert joined["admitted"] is True
            for _ in range(5):  # the same ticket, again: refused every time
                with pytest.raises(HTTPStatusError) as info:
                    await client.join(sid, agent="agent-9", join_token=ticket)
                assert info.value.status == 403


def test_the_ticket_policy_needs_a_secret_from_the_file_or_the_environment(monkeypatch):
    monkeypatch.delenv(JOIN_TICKET_SECRET_ENV, raising=False)
    with pytest.raises(relay.ConfigError, match="join_ticket_secret"):
        test_config(join_policy="ticket").validate()
    with pytest.raises(relay.ConfigError, match="at least 16 bytes"):
        test_config(join_policy="ticket", join_ticket_secret="short").validate()
    monkeypatch.setenv(JOIN_TICKET_SECRET_ENV, SECRET.decode())
    config = test_config(join_policy="ticket")
    config.validate()
    assert config.ticket_secret() == SECRET
    with pytest.raises(relay.ConfigError, match="join_policy"):
        test_config(join_policy="anyone").validate()


async def test_the_open_policy_admits_at_once_and_warns_at_start(caplog):
    with trio.fail_after(20):
        with caplog.at_level(logging.WARNING, logger="relay.server"):
            async with running_relay(join_policy="open") as (_s, _l, client):
                created = await client.create_session()
                assert (await client.join(created["session"], agent="a"))["admitted"] is True
    assert any("join_policy_open" in record.getMessage() for record in caplog.records)


async def test_slave_records_are_released_so_joins_cannot_lock_the_session():
    with trio.fail_after(30):
        async with running_relay(join_policy="open", max_slaves_per_session=4,
                                 slave_grace_s=0.5) as (server, listening, client):
            created = await client.create_session()
            sid = created["session"]
            for round_ in range(3):  # joins and reloads, again and again
                for i in range(4):
                    joined = await client.join(sid, agent=f"agent-{round_}-{i}")
                    conn = await client.connect(sid, joined["slave_token"])
                    await conn.close()
                with pytest.raises(HTTPStatusError) as info:
                    await client.join(sid, agent="one too many")
                assert info.value.status == 429 and dict(info.value.headers).get("retry-after")
                await trio.sleep(2.0)  # past slave_grace_s and a sweep: the places are free again
            assert server.host.sessions[sid].slave_slots_used() == 0
