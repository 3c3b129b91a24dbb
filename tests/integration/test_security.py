"""Security controls (SPEC 6), each tested from the attacker's side."""

import base64
import logging

import pytest
import trio

import relay
from helpers import HTTPStatusError, new_session, pack, recv_until, running_relay, test_config, unpack
from relay._errors import CookieError
from relay._server import Server


async def status_of(coroutine) -> int:
    try:
        await coroutine
    except HTTPStatusError as exc:
        return exc.status
    return 200


# ---------------------------------------------------------------- origins (cross-site WebSocket hijacking)

async def test_foreign_origin_is_refused_on_api_and_upgrade():
    with trio.fail_after(10):
        async with running_relay() as (_server, listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            evil = relay.Client("127.0.0.1", listening.public_port, origin="https://evil.example")
            assert await status_of(evil.create_session()) == 403
            assert await status_of(evil.join(created["session"])) == 403
            assert await status_of(evil.connect(created["session"], joined["slave_token"])) == 403
            # The same requests without Origin (non-browser clients) and from the relay's own origin pass.
            own = relay.Client("127.0.0.1", listening.public_port,
                               origin=f"http://127.0.0.1:{listening.public_port}")
            connection = await own.connect(created["session"], joined["slave_token"])
            assert (await connection.receive()).kind == "hello"
            await connection.close()


async def test_configured_origin_is_allowed_and_others_still_refused():
    with trio.fail_after(10):
        async with running_relay(allowed_origins=["https://shop.example"]) as (_server, listening, _client):
            shop = relay.Client("127.0.0.1", listening.public_port, origin="https://shop.example")
            assert "session" in await shop.create_session()
            other = relay.Client("127.0.0.1", listening.public_port, origin="https://shop.example.evil")
            assert await status_of(other.create_session()) == 403


# ---------------------------------------------------------------- tokens

async def test_guessed_swapped_and_foreign_tokens_are_refused():
    with trio.fail_after(10):
        async with running_relay() as (_server, _listening, client):
            a, (a_slave,) = await new_session(client, slaves=1)
            b, (b_slave,) = await new_session(client, slaves=1)
            guess = base64.urlsafe_b64encode(b"\0" * 32).decode().rstrip("=")
            assert await status_of(client.connect(a["session"], guess)) == 403
            assert await status_of(client.connect(a["session"], "")) == 403
            # A token of session B opens nothing in session A, whatever its role.
            assert await status_of(client.connect(a["session"], b["master_token"])) == 403
            assert await status_of(client.connect(a["session"], b_slave["slave_token"])) == 403
            # A slave token cannot end the session (master only).
            assert await status_of(client.end_session(a["session"], a_slave["slave_token"])) == 403
            assert await status_of(client.end_session(a["session"], b["master_token"])) == 403
            # Long-polling checks the same tokens.
            status, _headers, _body = await client.request(
                "GET", f"/cobrowse/poll/{a['session']}?token={b_slave['slave_token']}")
            assert status == 403


async def test_tokens_are_compared_in_constant_time(monkeypatch):
    import relay._session as session_module

    compared = []
    real = session_module.secrets.compare_digest

    def spy(left, right):
        compared.append((left, right))
        return real(left, right)

    monkeypatch.setattr(session_module.secrets, "compare_digest", spy)
    session = session_module.Session("s", test_config())
    record = session.add_slave("agent")
    assert session.role_of_token(session.master_token)[0] is session_module.Role.MASTER
    assert session.role_of_token(record.token)[1] is record
    assert session.role_of_token("x" * len(session.master_token)) == (None, None)
    assert len(compared) >= 3


async def test_session_ids_and_tokens_are_unguessable():
    with trio.fail_after(10):
        async with running_relay() as (_server, _listening, client):
            created = [await client.create_session() for _ in range(20)]
    ids = {c["session"] for c in created}
    assert len(ids) == 20
    for c in created:
        assert len(base64.urlsafe_b64decode(c["session"] + "==")) >= 16  # 128 bits
        assert len(base64.urlsafe_b64decode(c["master_token"] + "==")) >= 32


# ---------------------------------------------------------------- roles

async def test_pointer_mode_slave_cannot_forge_input_events():
    with trio.fail_after(10):
        async with running_relay() as (_server, _listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            master = await client.connect(created["session"], created["master_token"])
            slave = await client.connect(created["session"], joined["slave_token"])
            await slave.send("control", pack({"click": "#buy-now"}))
            await slave.send("snapshot", pack(b"<html>forged</html>"))
            await slave.send("pointer", pack({"x": 1}))
            errors = []
            while len(errors) < 2:
                envelope = await slave.receive()
                if envelope.kind == "error":
                    errors.append(unpack(envelope.body)["code"])
            assert errors == ["write-mode-required", "not-allowed"]
            # The master sees the pointer event and nothing forged.
            event, before = await recv_until(master, lambda e: e.kind == "pointer")
            assert all(e.kind not in ("control", "snapshot") for e in before)
            await slave.close()
            await master.close()


# ---------------------------------------------------------------- admin endpoints

async def test_admin_paths_are_not_reachable_on_the_public_listener():
    with trio.fail_after(10):
        async with running_relay() as (_server, listening, client):
            for path in ("/metrics", "/sessions"):
                status, _headers, _body = await client.request("GET", path)
                assert status == 404, path
                private = relay.Client("127.0.0.1", listening.private_port)
                status, _headers, body = await private.request("GET", path)
                assert status == 200, path
            # The private listener does not serve the client API.
            status, _headers, _body = await private.request("POST", "/cobrowse/sessions", b"{}")
            assert status == 404


# ---------------------------------------------------------------- cookies

@pytest.mark.parametrize("node_name", ["CB;Server", "CB\r\nSet-Cookie: x=1", "CB\x01", "CB Server", ""])
def test_node_names_that_would_inject_into_the_cookie_are_refused(node_name):
    with pytest.raises(relay.ConfigError):
        relay.Config(node_name=node_name).validate()


@pytest.mark.parametrize("cookie_name", ["gcb;Session", "gcb\r\nX: y", "gcb=x", "gcb\x7f"])
def test_cookie_names_that_would_inject_are_refused(cookie_name):
    with pytest.raises((relay.ConfigError, CookieError)):
        Server(test_config(cookie_name=cookie_name))


async def test_cookie_attributes_follow_the_configuration():
    with trio.fail_after(10):
        async with running_relay(cookie_same_site="None", cookie_partitioned=True,
                                 node_name="CB_Server_7") as (_server, _listening, client):
            await client.create_session()
            cookies = [value for name, value in client.last_headers if name == "set-cookie"]
    assert len(cookies) == 1
    parts = [part.strip() for part in cookies[0].split(";")]
    assert parts[0] == "gcbSessionServer=CB_Server_7"
    assert {"Path=/", "HttpOnly", "SameSite=None", "Secure", "Partitioned"} <= set(parts)


# ---------------------------------------------------------------- join tickets

async def test_join_tickets_admit_only_the_session_agent_and_time_they_name():
    secret = b"s" * 32
    clock = [1_000_000.0]
    authorizer = relay.TicketAuthorizer(secret, clock=lambda: clock[0])
    with trio.fail_after(10):
        async with running_relay(authorize_join=authorizer) as (_server, _listening, client):
            a = await client.create_session()
            b = await client.create_session()
            good = relay.make_join_ticket(secret, a["session"], "agent-1", ttl_s=60, now=clock[0])
            assert (await client.join(a["session"], agent="agent-1", join_token=good))["mode"] == "pointer"
            assert await status_of(client.join(b["session"], agent="agent-1", join_token=good)) == 403
            assert await status_of(client.join(a["session"], agent="agent-2", join_token=good)) == 403
            assert await status_of(client.join(a["session"], agent="agent-1")) == 403
            forged = relay.make_join_ticket(b"x" * 32, a["session"], "agent-1", ttl_s=60, now=clock[0])
            assert await status_of(client.join(a["session"], agent="agent-1", join_token=forged)) == 403
            tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
            assert await status_of(client.join(a["session"], agent="agent-1", join_token=tampered)) == 403
            clock[0] += 61
            assert await status_of(client.join(a["session"], agent="agent-1", join_token=good)) == 403


# ---------------------------------------------------------------- logs

async def test_no_session_content_in_logs(caplog):
    marker = b"SECRET-CARD-4111111111111111"
    caplog.set_level(logging.DEBUG, logger="relay")
    with trio.fail_after(10):
        async with running_relay(log_level="debug") as (_server, _listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            master = await client.connect(created["session"], created["master_token"])
            slave = await client.connect(created["session"], joined["slave_token"])
            await master.send("snapshot", pack(b"<input value='" + marker + b"'>"))
            await master.send("chat", pack({"text": marker.decode()}))
            await slave.send("bogus-kind", pack(marker))
            await recv_until(slave, lambda e: e.kind == "chat")
            await slave.send_raw(b"\x82\x85" + b"\0\0\0\0" + marker[:5])  # malformed envelope -> 1007
            await slave.close()
            await master.close()
            await client.end_session(created["session"], created["master_token"])
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "expected some log lines at debug level"
    assert marker.decode() not in text
    assert created["master_token"] not in text and joined["slave_token"] not in text
