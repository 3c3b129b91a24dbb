"""Bad input gets its specific status or close code, and the session and other clients carry on."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket

import pytest
import trio

from relay._accel import OP_BINARY, OP_TEXT, build_envelope, encode_client_frame, encode_frame
from helpers import HTTPStatusError, RawSocket, State, new_session, pack, running_relay, ws_target

KiB = 1024
_marks = itertools.count()


@contextlib.asynccontextmanager
async def session_with_observer(**overrides):
    """A running relay with one session: master, an observer slave, and a spare slave join."""
    async with running_relay(**overrides) as (server, listening, client):
        created, (observer_join, bad_join) = await new_session(client, slaves=2)
        sid = created["session"]
        master = await client.connect(sid, created["master_token"])
        observer = await client.connect(sid, observer_join["slave_token"])
        state = State()
        state.apply(await observer.receive())  # hello
        await master.send("snapshot", pack("page"))
        yield dict(server=server, listening=listening, client=client, sid=sid, master=master,
                   observer=observer, state=state, bad_join=bad_join, created=created)
        await observer.close()
        await master.close()


async def carries_on(ctx) -> None:
    """The master's next mutation reaches the observer, in order, with no gap and no resync."""
    mark = pack(b"mark-%d" % next(_marks))
    await ctx["master"].send("mutation", mark)
    state = ctx["state"]
    while True:
        envelope = await ctx["observer"].receive()
        state.apply(envelope)  # asserts no gap and no duplicate
        if envelope.kind == "mutation" and bytes(envelope.body) == mark:
            break
    assert state.resyncs == 0


async def raw_http(port: int, data: bytes) -> bytes:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect(("127.0.0.1", port))
    await sock.send(data)
    response = b""
    while True:
        try:
            chunk = await sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        response += chunk
    sock.close()
    return response


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_garbage_instead_of_http_is_400():
    with trio.fail_after(5):
        async with session_with_observer() as ctx:
            response = await raw_http(ctx["listening"].public_port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
            assert status_of(response) == 400
            assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"] == "bad-request"
            await carries_on(ctx)


async def test_oversized_header_is_431():
    with trio.fail_after(5):
        async with session_with_observer(max_header_bytes=4 * KiB) as ctx:
            request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * KiB) + b"\r\n\r\n"
            assert status_of(await raw_http(ctx["listening"].public_port, request)) == 431
            await carries_on(ctx)


async def test_unknown_session_is_404_and_bad_tokens_are_403():
    with trio.fail_after(5):
        async with session_with_observer() as ctx:
            client = ctx["client"]
            with pytest.raises(HTTPStatusError) as info:
                await client.join("no-such-session")
            assert info.value.status == 404
            with pytest.raises(HTTPStatusError) as info:
                await client.connect("no-such-session", ctx["bad_join"]["slave_token"])
            assert info.value.status == 404
            with pytest.raises(HTTPStatusError) as info:
                await client.connect(ctx["sid"], "wrong-token")
            assert info.value.status == 403
            other = await client.create_session()
            with pytest.raises(HTTPStatusError) as info:  # a slave token of another session
                await client.connect(other["session"], ctx["bad_join"]["slave_token"])
            assert info.value.status == 403
            with pytest.raises(HTTPStatusError) as info:  # the master token of another session
                await client.connect(other["session"], ctx["created"]["master_token"])
            assert info.value.status == 403
            await carries_on(ctx)


async def test_slave_acting_as_master_gets_error_and_session_is_unaffected():
    with trio.fail_after(5):
        async with session_with_observer() as ctx:
            bad = await ctx["client"].connect(ctx["sid"], ctx["bad_join"]["slave_token"])
            session = ctx["server"].host.sessions[ctx["sid"]]
            snapshot_before = session.history[0]
            await bad.send("snapshot", pack("hijacked"))
            error = None
            while error is None:
                envelope = await bad.receive()
                if envelope.kind == "error":
                    error = envelope.decode()
            assert error["code"] == "not-allowed"
            assert session.history[0] is snapshot_before
            await carries_on(ctx)
            assert b"hijacked" not in b"".join(ctx["state"].mutations) and ctx["state"].snapshot == pack("page")
            await bad.close()


async def test_pointer_slave_control_refused_until_master_grants_write():
    with trio.fail_after(5):
        async with session_with_observer() as ctx:
            master = ctx["master"]
            bad = await ctx["client"].connect(ctx["sid"], ctx["bad_join"]["slave_token"])
            await bad.send("control", pack({"click": "#buy"}))
            while (envelope := await bad.receive()).kind != "error":
                pass
            assert envelope.decode()["code"] == "write-mode-required"
            await master.send("mode", pack({"slave": ctx["bad_join"]["slave"], "mode": "write"}))
            while True:  # the grant is announced to the slave
                envelope = await bad.receive()
                if envelope.kind == "presence" and envelope.decode().get("event") == "mode":
                    assert envelope.decode()["mode"] == "write"
                    break
            await bad.send("control", pack({"click": "#ok"}))
            kinds = []
            while True:
                envelope = await master.receive()
                kinds.append(envelope.kind)
                if envelope.kind == "control":
                    assert envelope.decode() == {"click": "#ok"}
                    break
            await carries_on(ctx)
            await bad.close()


@pytest.mark.parametrize(
    "name, frame, code",
    [
        ("malformed envelope", encode_client_frame(OP_BINARY, b"\x93\xa8mutation"), 1007),
        ("not an array", encode_client_frame(OP_BINARY, pack({"kind": "mutation"})), 1007),
        ("text frame", encode_client_frame(OP_TEXT, b'["chat", 0, "hi"]'), 1003),
        ("unmasked frame", encode_frame(OP_BINARY, build_envelope("chat", 0, pack("hi"))), 1002),
        # only the header of a frame over max_message_bytes: refused before any payload
        ("oversize message", encode_client_frame(OP_BINARY, b"x" * 10)[:1] + bytes([0xFF])
         + (1 << 20).to_bytes(8, "big") + b"\x00\x00\x00\x00", 1009),
    ],
)
async def test_bad_frames_get_their_close_code(name, frame, code):
    with trio.fail_after(5):
        async with session_with_observer(max_message_bytes=64 * KiB, slave_queue_bytes=256 * KiB) as ctx:
            bad = await RawSocket.open(ctx["listening"].public_port, ws_target(ctx["sid"], ctx["bad_join"]["slave_token"]))
            assert (await bad.receive()).kind == "hello"
            await bad.send_raw(frame)
            assert await bad.close_code() == code, name
            bad.close()
            await carries_on(ctx)
            assert ctx["server"].host.sessions[ctx["sid"]].master is not None


async def _raw_status(port: int, request: bytes) -> int:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    await sock.send(request)
    response = b""
    while b"\r\n" not in response:
        data = await sock.recv(4096)
        if not data:
            break
        response += data
    sock.close()
    return int(response.split(b" ", 2)[1])


async def test_fuzzer_findings_get_400_not_500():
    """Regression cases found by fuzz/fuzz_http.py: each used to raise inside the server (500)."""
    with trio.fail_after(10):
        async with running_relay() as (_server, listening, client):
            created, (joined,) = await new_session(client, slaves=1)
            port = listening.public_port
            sid, token = created["session"], joined["slave_token"]
            # Non-ASCII digits pass str.isdigit() but not int().
            status = await _raw_status(port, f"GET /cobrowse/poll/{sid}?token={token}&after=%C2%B2 HTTP/1.1\r\n"
                                             f"Host: a\r\n\r\n".encode())
            assert status == 400
            # A target that h11 accepts and urlsplit refuses.
            assert await _raw_status(port, b"GET //[x HTTP/1.1\r\nHost: a\r\n\r\n") == 400
            # obs-text in Upgrade: not a WebSocket upgrade, so the WebSocket endpoint answers 426.
            status = await _raw_status(port, f"GET /cobrowse/ws/{sid}?token={token} HTTP/1.1\r\nHost: a\r\n"
                                             f"Upgrade: websoc\xe4et\r\nConnection: Upgrade\r\n\r\n".encode("latin-1"))
            assert status == 426


async def test_join_with_an_oversized_or_mistyped_agent_id_is_refused():
    with trio.fail_after(10):
        async with running_relay() as (_server, _listening, client):
            created = await client.create_session()
            for payload in ({"agent": "a" * 257}, {"agent": 7}, {"join_token": ["x"]}):
                status, _headers, body = await client.request(
                    "POST", f"/cobrowse/sessions/{created['session']}/join", json.dumps(payload).encode())
                assert status == 400, payload
                assert json.loads(body)["error"] == "bad-request"
            assert (await client.join(created["session"], agent="a" * 256))["mode"] == "pointer"


def _envelope_errors(server) -> float:
    return server.metrics.registry.get_sample_value("relay_envelope_errors_total")


async def test_a_malformed_envelope_is_the_peers_fault_and_counted():
    with trio.fail_after(5):
        async with session_with_observer() as ctx:
            bad = await RawSocket.open(ctx["listening"].public_port, ws_target(ctx["sid"], ctx["bad_join"]["slave_token"]))
            assert (await bad.receive()).kind == "hello"
            before = _envelope_errors(ctx["server"])
            await bad.send_raw(encode_client_frame(OP_BINARY, b"\x93\xa8mutation"))
            assert await bad.close_code() == 1007
            assert _envelope_errors(ctx["server"]) == before + 1
            await carries_on(ctx)


async def test_relays_own_bug_while_routing_is_1011_and_logged_not_the_peers_bad_envelope(monkeypatch, caplog):
    from relay._errors import LocalProtocolError
    from relay._session import Session

    route = Session.from_slave

    def buggy_from_slave(self, peer, kind, body, now):
        if bytes(body) == pack("trigger the bug"):
            raise LocalProtocolError("a bug in relay's routing")
        return route(self, peer, kind, body, now)

    monkeypatch.setattr(Session, "from_slave", buggy_from_slave)
    with trio.fail_after(5):
        async with session_with_observer() as ctx:
            bad = await RawSocket.open(ctx["listening"].public_port, ws_target(ctx["sid"], ctx["bad_join"]["slave_token"]))
            assert (await bad.receive()).kind == "hello"
            before = _envelope_errors(ctx["server"])
            with caplog.at_level("ERROR", logger="relay"):
                await bad.send_raw(encode_client_frame(OP_BINARY, build_envelope("chat", 0, pack("trigger the bug"))))
                assert await bad.close_code() == 1011
            assert _envelope_errors(ctx["server"]) == before, "relay's bug is not the peer's bad envelope"
            [record] = [r for r in caplog.records if r.getMessage() == "internal.error"]
            assert record.name == "relay.endpoint" and record.exc_info[0] is LocalProtocolError
            assert record.relay_fields["session"] == ctx["sid"] and record.relay_fields["role"] == "slave"
            await carries_on(ctx)
