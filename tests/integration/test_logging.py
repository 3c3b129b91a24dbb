"""Structured logs: one event per line, with ids, in text or JSON."""

import io
import json
import logging

import pytest
import trio

import relay
from helpers import new_session, pack, recv_until, running_relay
from relay._logging import configure_logging


@pytest.fixture
def captured():
    def capture(log_format):
        stream = io.StringIO()
        handler = configure_logging("info", log_format, stream)
        return stream, handler
    handlers = []
    yield lambda fmt: handlers.append(capture(fmt)) or handlers[-1][0]
    logger = logging.getLogger("relay")
    for _stream, handler in handlers:
        logger.removeHandler(handler)
    logger.propagate = True


async def run_a_session():
    async with running_relay() as (_server, _listening, client):
        created, (joined,) = await new_session(client, slaves=1)
        master = await client.connect(created["session"], created["master_token"])
        slave = await client.connect(created["session"], joined["slave_token"])
        await master.send("snapshot", pack(b"<p>private page</p>"))
        await recv_until(slave, lambda e: e.kind == "snapshot")
        await slave.close()
        await master.close()
        await client.end_session(created["session"], created["master_token"])
        with trio.fail_after(5):
            while _server.connections:
                await trio.sleep(0.01)
    return created


async def test_json_logs_are_one_event_per_line_with_ids(captured):
    stream = captured("json")
    with trio.fail_after(10):
        created = await run_a_session()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    names = [event["event"] for event in events]
    assert "session.created" in names and "session.ended" in names
    opened = [event for event in events if event["event"] == "ws.open"]
    assert {event["role"] for event in opened} == {"master", "slave"}
    assert all(event["session"] == created["session"] and event["conn"].startswith("c") for event in opened)
    closed = [event for event in events if event["event"] == "ws.closed"]
    assert len(closed) == 2 and all("code" in event for event in closed)
    assert "private page" not in stream.getvalue()


async def test_text_logs_are_key_value_lines(captured):
    stream = captured("text")
    with trio.fail_after(10):
        created = await run_a_session()
    lines = stream.getvalue().splitlines()
    created_lines = [line for line in lines if " session.created " in line]
    assert created_lines and f"session={created['session']}" in created_lines[0]
    assert all(line.split(" ")[1] in ("INFO", "WARNING", "ERROR") for line in lines)


def test_log_format_is_a_checked_setting():
    assert relay.Config(log_format="json").log_format == "json"
    with pytest.raises(relay.ConfigError):
        relay.Config(log_format="xml").validate()
