"""relay.ResendWindow (docs/protocol.md section 4b) without sockets, and ClientConnection's use of it
(and a slave's resume bookkeeping) over a local socket pair fed one byte at a time."""

from __future__ import annotations

import socket

import msgpack
import pytest
import trio

from relay import ResendWindow
from relay._accel import OP_BINARY, FrameDecoder, build_envelope, peek_envelope
from relay._client import ClientConnection
from relay._resend import DEFAULT_MAX_KEPT_BYTES, KEPT_MESSAGE_OVERHEAD_BYTES, NUMBERED_KINDS

TIMEOUT_S = 10


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def master_hello(held=None, **extra) -> dict:
    body = {"role": "master", "session": "s", "epoch": 1, "seq": 0, "catchup": "none", "mode": "write", "slaves": []}
    if held is not None:
        body["held"] = held
    body.update(extra)
    return body


def started(held: int = 0, **kwargs) -> ResendWindow:
    """A window after its first hello and the fresh snapshot that follows it (numbered held + 1)."""
    window = ResendWindow(**kwargs)
    assert window.on_hello(master_hello(held)) == (False, ())
    assert window.number("snapshot", pack("page")) == 0
    return window


def seqs(messages) -> list:
    return [message.seq for message in messages]


# ---------------------------------------------------------------------------- numbering


def test_nothing_is_numbered_or_kept_before_the_first_hello():
    window = ResendWindow()
    assert window.number("snapshot", pack("a")) == 0
    assert window.number("mutation", pack("b")) == 0
    assert window.kept == () and window.kept_bytes == 0


def test_a_first_hello_is_a_fresh_start_the_snapshot_goes_unnumbered_then_held_plus_two():
    window = ResendWindow()
    plan = window.on_hello(master_hello(0))
    assert plan.resumed is False and plan.resend == ()
    assert window.number("snapshot", pack("page")) == 0  # the relay numbers it 1
    assert window.number("mutation", pack("m")) == 2
    assert window.number("chat", pack({"text": "hi"})) == 3
    assert seqs(window.kept) == [1, 2, 3]


def test_a_new_page_with_the_sessions_token_continues_the_relays_numbering():
    window = ResendWindow()
    assert window.on_hello(master_hello(41)).resumed is False  # the relay holds 41 from an earlier page
    assert window.number("snapshot", pack("page")) == 0
    assert window.number("css", pack("c")) == 43
    assert seqs(window.kept) == [42, 43]


@pytest.mark.parametrize("kind", ["mode", "admit", "pointer", "control", "x-custom"])
def test_only_stream_kinds_are_numbered(kind):
    window = started()
    assert window.number(kind, pack({"slave": "s1", "mode": "write"})) == 0
    assert window.number("mutation", pack("m")) == 2  # the other kinds took no number
    assert seqs(window.kept) == [1, 2]
    assert NUMBERED_KINDS == {"snapshot", "mutation", "css", "navigate", "chat"}


def test_kept_messages_carry_kind_and_body_as_sent():
    window = started()
    body = bytearray(pack("navigate to x"))
    window.number("navigate", memoryview(body))
    body[:] = b"\x00" * len(body)  # the caller reuses its buffer: the window kept a copy
    assert window.kept[-1] == (2, "navigate", pack("navigate to x"))


# ---------------------------------------------------------------------------- hello: resume or start afresh


def test_a_hello_re_sends_everything_above_held_in_order():
    window = started()
    for index in range(2, 7):
        assert window.number("mutation", pack(index)) == index
    plan = window.on_hello(master_hello(3))
    assert plan.resumed is True
    assert seqs(plan.resend) == [4, 5, 6]
    assert [msgpack.unpackb(m.body) for m in plan.resend] == [4, 5, 6]
    assert window.number("mutation", pack(7)) == 7  # new messages go on from the last number


def test_a_hello_that_holds_everything_re_sends_nothing_and_resumes():
    window = started()
    window.number("mutation", pack(2))
    plan = window.on_hello(master_hello(2))
    assert plan == (True, ())
    assert window.kept == ()  # held by the relay: nothing left to keep


def test_the_unnumbered_snapshot_of_a_fresh_start_goes_again_with_its_number():
    window = ResendWindow()
    window.on_hello(master_hello(7))
    assert window.number("snapshot", pack("page")) == 0
    plan = window.on_hello(master_hello(7))  # it was lost with the connection
    assert plan.resumed is True and plan.resend == ((8, "snapshot", pack("page")),)


def test_the_same_node_after_a_broken_connection_gets_what_was_lost():
    window = started()
    for index in range(2, 5):
        window.number("mutation", pack(index))
    # The connection broke after the relay took 2; 3 and 4 were lost on the way.
    assert seqs(window.on_hello(master_hello(2)).resend) == [3, 4]
    # And again before any ack: still resumable, with nothing lost.
    assert seqs(window.on_hello(master_hello(3)).resend) == [4]


def test_held_beyond_what_was_sent_is_a_fresh_start():
    window = started()
    window.number("mutation", pack(2))
    plan = window.on_hello(master_hello(9))
    assert plan == (False, ())
    assert window.kept == () and window.kept_bytes == 0
    assert window.number("snapshot", pack("page")) == 0
    assert window.number("mutation", pack("m")) == 11


def test_a_fresh_start_whose_snapshot_was_never_sent_stays_a_fresh_start():
    window = ResendWindow()
    window.on_hello(master_hello(0))
    # The connection broke before the application sent its snapshot: the next hello must ask again.
    assert window.on_hello(master_hello(0)) == (False, ())
    assert window.number("snapshot", pack("page")) == 0


def test_a_hello_without_held_an_older_relay_stops_numbering():
    window = started()
    window.number("mutation", pack(2))
    assert window.on_hello(master_hello()) == (False, ())
    assert window.kept == ()
    assert window.number("snapshot", pack("page")) == 0
    assert window.number("mutation", pack("m")) == 0
    assert window.kept == ()
    # A numbering relay again (a cluster being upgraded): a fresh start from its held.
    assert window.on_hello(master_hello(5)).resumed is False
    assert window.number("snapshot", pack("page")) == 0
    assert window.number("mutation", pack("m")) == 7


# ---------------------------------------------------------------------------- ack


def test_an_ack_forgets_what_the_copy_holds():
    window = started()
    for index in range(2, 6):
        window.number("mutation", pack(index))
    before = window.kept_bytes
    window.on_ack({"seq": 17, "held": 3})
    assert seqs(window.kept) == [4, 5]
    assert window.kept_bytes < before
    window.on_ack({"seq": 12, "held": 2})  # an older ack changes nothing
    assert seqs(window.kept) == [4, 5]
    assert seqs(window.on_hello(master_hello(3)).resend) == [4, 5]


def test_a_hello_below_what_was_acked_cannot_be_resumed():
    # The copy held 3, but the new host's copy is older (held 2): 3 was forgotten, start afresh.
    window = started()
    for index in range(2, 6):
        window.number("mutation", pack(index))
    window.on_ack({"seq": 9, "held": 3})
    assert window.on_hello(master_hello(2)) == (False, ())


def test_an_ack_of_everything_leaves_nothing_and_still_resumes():
    window = started()
    window.number("mutation", pack(2))
    window.on_ack({"seq": 4, "held": 2})
    assert window.kept == () and window.kept_bytes == 0
    assert window.on_hello(master_hello(2)) == (True, ())


# ---------------------------------------------------------------------------- the byte bound


def cost(body: bytes, kind: str = "mutation") -> int:
    return len(body) + len(kind) + KEPT_MESSAGE_OVERHEAD_BYTES


def test_the_default_bound_is_32_mib():
    assert ResendWindow().max_kept_bytes == DEFAULT_MAX_KEPT_BYTES == 32 * 1024 * 1024


def test_past_its_bound_the_window_drops_the_oldest_and_a_hello_that_needs_them_starts_afresh():
    body = pack(b"x" * 1000)
    window = ResendWindow(max_kept_bytes=3 * cost(body))
    window.on_hello(master_hello(0))
    for expected in [0, 2, 3, 4, 5]:
        assert window.number("mutation", body) == expected
    assert seqs(window.kept) == [3, 4, 5]
    assert window.kept_bytes == 3 * cost(body) <= window.max_kept_bytes
    assert window.on_hello(master_hello(1)) == (False, ())  # 2 is gone


def test_past_its_bound_a_hello_that_needs_only_what_is_kept_resumes():
    body = pack(b"x" * 1000)
    window = ResendWindow(max_kept_bytes=3 * cost(body))
    window.on_hello(master_hello(0))
    for _ in range(5):
        window.number("mutation", body)
    assert seqs(window.on_hello(master_hello(2)).resend) == [3, 4, 5]


def test_a_message_larger_than_the_bound_is_not_kept():
    window = ResendWindow(max_kept_bytes=100)
    window.on_hello(master_hello(0))
    window.number("snapshot", pack("small"))
    assert window.number("snapshot", pack(b"y" * 200)) == 2  # still numbered and sent
    assert window.kept == () and window.kept_bytes == 0
    assert window.on_hello(master_hello(1)) == (False, ())
    assert window.on_hello(master_hello(2)).resumed is False  # (a fresh start: nothing sent since)


def test_a_zero_bound_keeps_nothing_and_resumes_only_what_the_relay_holds():
    window = ResendWindow(max_kept_bytes=0)
    window.on_hello(master_hello(0))
    window.number("snapshot", pack("page"))
    window.number("mutation", pack("m"))
    assert window.kept == ()
    assert window.on_hello(master_hello(2)) == (True, ())
    assert window.on_hello(master_hello(1)).resumed is False


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bound", [-1, 1.5, "32", True, None])
def test_a_bad_bound_is_refused(bound):
    with pytest.raises(ValueError, match="max_kept_bytes"):
        ResendWindow(max_kept_bytes=bound)


@pytest.mark.parametrize("held", [-1, 1.0, "3", True, [1]])
def test_a_bad_held_is_refused_by_name(held):
    with pytest.raises(ValueError, match="hello 'held'"):
        ResendWindow().on_hello(master_hello(held))
    with pytest.raises(ValueError, match="ack 'held'"):
        started().on_ack({"seq": 1, "held": held})


def test_an_ack_without_held_or_a_body_that_is_not_a_map_is_refused():
    with pytest.raises(ValueError, match="no 'held'"):
        started().on_ack({"seq": 1})
    with pytest.raises(ValueError, match="must be a map"):
        started().on_ack([1, 2])
    with pytest.raises(ValueError, match="must be a map"):
        ResendWindow().on_hello(b"hello")


# ---------------------------------------------------------------------------- ClientConnection, byte by byte


def server_frame(kind: str, seq: int, body, sender: str) -> bytes:
    """One unmasked binary frame as the relay sends it: [kind, seq, body, sender]."""
    payload = build_envelope(kind, seq, pack(body), sender)
    assert len(payload) < 126
    return bytes([0x80 | OP_BINARY, len(payload)]) + payload


class Relay:
    """The relay's end of a socket pair: writes frames one byte at a time, reads what the client sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.decoder = FrameDecoder(1 << 20)

    async def write_bytewise(self, *frames: bytes) -> None:
        for byte in b"".join(frames):
            await self.sock.send(bytes([byte]))
            await trio.sleep(0)

    async def read_envelopes(self, count: int) -> list:
        out = []
        while len(out) < count:
            while (event := self.decoder.next_event()) is not None:
                opcode, payload = event
                kind, seq, offset, end = peek_envelope(payload)
                out.append((kind, seq, msgpack.unpackb(bytes(payload)[offset:end])))
            if len(out) >= count:
                break
            data = await self.sock.recv(65536)
            assert data, "the client closed its end"
            self.decoder.feed(data)
        return out


async def pair():
    client_sock, relay_sock = socket.socketpair()
    client_sock.setblocking(False)
    return ClientConnection(client_sock, b"", 1 << 20), Relay(relay_sock)


async def test_a_master_connection_numbers_re_sends_and_trims_with_its_window():
    with trio.fail_after(TIMEOUT_S):
        connection, relay = await pair()
        connection.window = window = ResendWindow()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.write_bytewise, server_frame("hello", 0, master_hello(0), ""))
            hello = await connection.wait_for_hello()
        assert hello["held"] == 0 and connection.resumed is False and connection.role == "master"
        assert (await connection.receive()).kind == "hello"  # wait_for_hello kept it for the caller
        await connection.send("snapshot", pack("page"))
        await connection.send("mode", pack({"slave": "s1", "mode": "write"}))
        await connection.send("mutation", pack("m2"))
        await connection.send("mutation", pack("m3"))
        assert await relay.read_envelopes(4) == [("snapshot", 0, "page"), ("mode", 0, {"slave": "s1", "mode": "write"}),
                                                 ("mutation", 2, "m2"), ("mutation", 3, "m3")]
        await relay.write_bytewise(server_frame("ack", 0, {"seq": 5, "held": 1}, ""))
        ack = await connection.receive()
        assert (ack.kind, ack.decode()) == ("ack", {"seq": 5, "held": 1})  # still given to the caller
        assert seqs(window.kept) == [2, 3]
        # A second hello (as on a new connection) that holds 2: 3 goes again, before anything new.
        await relay.write_bytewise(server_frame("hello", 0, master_hello(2, epoch=2), ""))
        assert (await connection.receive()).kind == "hello"
        assert connection.resumed is True and connection.epoch == 2
        await connection.send("css", pack("c4"))
        assert await relay.read_envelopes(2) == [("mutation", 3, "m3"), ("css", 4, "c4")]
        connection.sock.close()
        relay.sock.close()


async def test_a_slave_connection_counts_master_messages_and_gives_its_resume_position():
    with trio.fail_after(TIMEOUT_S):
        connection, relay = await pair()
        hello = {"role": "slave", "session": "s", "epoch": 3, "seq": 10, "catchup": "full", "mode": "pointer",
                 "slave": "ab", "master_count": 4}
        await relay.write_bytewise(
            server_frame("hello", 0, hello, ""),
            server_frame("snapshot", 8, "page", "master"),
            server_frame("presence", 9, {"event": "joined", "slave": "cd"}, ""),
            server_frame("chat", 10, {"text": "hi"}, "cd"),
            server_frame("mutation", 11, "m", "master"),
            server_frame("mutation", 11, "m again", "master"),  # a repeat counts once
            server_frame("error", 0, {"code": "x", "message": "y"}, ""),
        )
        received = [await connection.receive() for _ in range(7)]
        assert [e.kind for e in received] == ["hello", "snapshot", "presence", "chat", "mutation", "mutation", "error"]
        assert connection.last_seq == 11 and connection.master_count == 6 and connection.resumed is False
        assert connection.resume_params() == {"after": 11, "epoch": 3, "master_count": 6}
        # A resume across epochs continues from the copy's end (below our last seq); the master's
        # re-send of the mutation we had is left out.
        await relay.write_bytewise(server_frame("hello", 0, dict(hello, epoch=4, catchup="resume", after=10,
                                                                 master_count=5), ""),
                                   server_frame("mutation", 11, "m", "master"),
                                   server_frame("css", 12, "c", "master"))
        await connection.receive()
        assert connection.resumed is True and connection.last_seq == 10 and connection.master_count == 5
        css = await connection.receive()
        assert (css.kind, css.seq) == ("css", 12) and connection.left_out == 1
        assert connection.resume_params() == {"after": 12, "epoch": 4, "master_count": 7}
        # A resync starts afresh: no position until the next stream message, the count from its body.
        await relay.write_bytewise(server_frame("resync", 0, {"epoch": 5, "seq": 2, "master_count": 1}, ""))
        await connection.receive()
        assert connection.resume_params() == {}
        await relay.write_bytewise(server_frame("snapshot", 2, "page", "master"))
        await connection.receive()
        assert connection.resume_params() == {"after": 2, "epoch": 5, "master_count": 2}
        assert connection.left_out == 1
        # An older relay says no master_count: the position goes without it.
        await relay.write_bytewise(server_frame("hello", 0, {"role": "slave", "epoch": 6, "catchup": "resume"}, ""),
                                   server_frame("mutation", 3, "m", "master"))
        await connection.receive()
        await connection.receive()
        assert connection.resume_params() == {"after": 3, "epoch": 6}
        connection.sock.close()
        relay.sock.close()


async def test_a_slave_resumed_past_the_copy_leaves_out_the_re_sends_it_had_applied():
    with trio.fail_after(TIMEOUT_S):
        connection, relay = await pair()
        hello = {"role": "slave", "session": "s", "epoch": 1, "seq": 0, "catchup": "full", "mode": "pointer",
                 "slave": "ab", "master_count": 0}
        await relay.write_bytewise(server_frame("hello", 0, hello, ""),
                                   *[server_frame("mutation", n, f"m{n}", "master") for n in range(1, 6)])
        for _ in range(6):
            await connection.receive()
        assert connection.resume_params() == {"after": 5, "epoch": 1, "master_count": 5}
        # The new host's copy ends at seq 3 (count 3): the master re-sends 4 and 5, which we have.
        await relay.write_bytewise(
            server_frame("hello", 0, dict(hello, epoch=2, catchup="resume", after=3, master_count=3), ""),
            server_frame("mutation", 4, "m4", "master"),
            server_frame("chat", 5, {"text": "new"}, "cd"),  # not the master's: applied
            server_frame("mutation", 6, "m5", "master"),
            server_frame("mutation", 7, "m6", "master"),
        )
        assert (await connection.receive()).kind == "hello"
        assert connection.resume_params() == {"after": 3, "epoch": 2, "master_count": 5}  # what it applied
        chat = await connection.receive()
        assert (chat.kind, chat.seq) == ("chat", 5)
        fresh = await connection.receive()
        assert (fresh.seq, fresh.decode()) == (7, "m6")
        assert connection.left_out == 2 and connection.master_count == 6
        assert connection.resume_params() == {"after": 7, "epoch": 2, "master_count": 6}
        # A resync ends a skip at once: what follows replaces the state.
        await relay.write_bytewise(
            server_frame("hello", 0, dict(hello, epoch=3, catchup="resume", after=5, master_count=4), ""),
            server_frame("resync", 0, {"epoch": 3, "seq": 9, "master_count": 2}, ""),
            server_frame("snapshot", 9, "page", "master"),
        )
        assert [(await connection.receive()).kind for _ in range(3)] == ["hello", "resync", "snapshot"]
        assert connection.left_out == 2 and connection.master_count == 3
        connection.sock.close()
        relay.sock.close()


async def test_a_new_connection_that_resumes_a_previous_one_continues_its_counts():
    with trio.fail_after(TIMEOUT_S):
        before, relay_before = await pair()
        hello = {"role": "slave", "session": "s", "epoch": 1, "seq": 0, "catchup": "full", "mode": "pointer",
                 "slave": "ab", "master_count": 0}
        await relay_before.write_bytewise(server_frame("hello", 0, hello, ""),
                                          *[server_frame("mutation", n, n, "master") for n in range(1, 4)])
        for _ in range(4):
            await before.receive()
        after, relay_after = await pair()
        after._continue_from(before)  # what Client.connect(..., resume=before) does
        assert after.resume_params() == {"after": 3, "epoch": 1, "master_count": 3}
        await relay_after.write_bytewise(
            server_frame("hello", 0, dict(hello, epoch=2, catchup="resume", after=1, master_count=1), ""),
            *[server_frame("mutation", n, n, "master") for n in range(2, 5)])
        await after.receive()
        fresh = await after.receive()
        assert (fresh.seq, fresh.decode()) == (4, 4) and after.left_out == 2
        for connection, relay in ((before, relay_before), (after, relay_after)):
            connection.sock.close()
            relay.sock.close()
