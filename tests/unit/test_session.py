"""relay._session.Session without sockets: Peers are fed envelopes directly and their queues read."""

from __future__ import annotations

import msgpack
import pytest

from relay._closecodes import CloseCode
from relay._config import Config
from relay._session import Peer, Role, Session, SessionEnded

KiB = 1024


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def config(**overrides) -> Config:
    return Config(**overrides)


def drain(peer: Peer) -> list:
    """Everything queued for ``peer`` as (kind, seq, body bytes), as the writer would send it."""
    out = []
    while peer.queue:
        for message in peer.take_batch():
            out.append((message.kind, message.seq, bytes(message.body)))
    return out


def kinds(messages) -> list:
    return [kind for kind, _seq, _body in messages]


def make_session(**overrides):
    session = Session("s1", config(**overrides), now=0.0)
    master = Peer(Role.MASTER, transport="ws", limit=session.config.slave_queue_bytes)
    session.attach_master(master, 0.0)
    return session, master


def add_slave(session, *, after=None, limit=None):
    record = session.add_slave("agent")
    peer = Peer(Role.SLAVE, transport="ws", limit=limit or session.config.slave_queue_bytes)
    session.attach_slave(record, peer, 0.0, after=after)
    return record, peer


def apply(state, messages):
    """snapshot replaces, mutation appends; resync clears."""
    for kind, _seq, body in messages:
        if kind in ("snapshot", "resync"):
            state[:] = [body] if kind == "snapshot" else []
        elif kind == "mutation":
            state.append(body)
    return state


def test_hello_then_live_stream_in_order():
    session, master = make_session()
    record, slave = add_slave(session)
    hello = drain(slave)
    assert hello[0][0] == "hello"
    greeting = msgpack.unpackb(hello[0][2])
    assert greeting["role"] == "slave" and greeting["mode"] == "pointer" and greeting["catchup"] == "full"
    session.from_master(master, "snapshot", pack(b"<html>"), 1.0)
    for i in range(5):
        assert session.from_master(master, "mutation", pack(i), 1.0) is None
    got = [m for m in drain(slave) if m[0] in ("snapshot", "mutation")]
    seqs = [seq for _k, seq, _b in got]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    assert [msgpack.unpackb(b) for k, s, b in got[1:]] == list(range(5))
    # the master does not get its own broadcasts back
    assert "mutation" not in kinds(drain(master))


def test_late_joiner_gets_latest_snapshot_and_after():
    session, master = make_session()
    session.from_master(master, "snapshot", pack("old"), 1.0)
    session.from_master(master, "mutation", pack("m-old"), 1.0)
    session.from_master(master, "snapshot", pack("new"), 1.0)
    session.from_master(master, "mutation", pack("m1"), 1.0)
    _record, slave = add_slave(session)
    got = drain(slave)
    assert got[0][0] == "hello"
    assert apply([], got) == [pack("new"), pack("m1")]


def test_resume_exactly_what_was_missed_and_resync_when_history_is_gone():
    session, master = make_session()
    session.from_master(master, "snapshot", pack("s"), 1.0)
    record, slave = add_slave(session)
    session.from_master(master, "mutation", pack(1), 1.0)
    seen = drain(slave)
    last = seen[-1][1]
    session.detach(slave, 2.0)
    session.from_master(master, "mutation", pack(2), 2.0)
    session.from_master(master, "mutation", pack(3), 2.0)
    again = Peer(Role.SLAVE, transport="ws", limit=session.config.slave_queue_bytes)
    session.attach_slave(record, again, 3.0, after=last)
    got = drain(again)
    assert msgpack.unpackb(got[0][2])["catchup"] == "resume"
    assert [s for k, s, b in got[1:]] == list(range(last + 1, session.seq + 1))  # no gap, no duplicate
    assert [b for k, s, b in got if k == "mutation"] == [pack(2), pack(3)]
    # A new snapshot drops the history the slave would need: resync.
    session.detach(again, 4.0)
    last = got[-1][1]
    session.from_master(master, "mutation", pack(4), 4.0)
    session.from_master(master, "snapshot", pack("s2"), 4.0)
    session.from_master(master, "mutation", pack(5), 4.0)
    third = Peer(Role.SLAVE, transport="ws", limit=session.config.slave_queue_bytes)
    session.attach_slave(record, third, 5.0, after=last)
    got = drain(third)
    assert msgpack.unpackb(got[0][2])["catchup"] == "resync"
    assert got[1][0] == "resync"
    assert apply([], got) == [pack("s2"), pack(5)]


def test_slave_may_not_send_master_kinds_and_control_needs_write_mode():
    session, master = make_session()
    record, slave = add_slave(session)
    drain(master)
    error = session.from_slave(slave, "snapshot", pack("evil"), 1.0)
    assert error is not None and error.kind == "error"
    assert session.history == [] or all(m.kind != "snapshot" for m in session.history)
    assert session.from_slave(slave, "control", pack("click"), 1.0).kind == "error"
    assert "control" not in kinds(drain(master))
    assert session.from_slave(slave, "pointer", pack("xy"), 1.0) is None
    assert "pointer" in kinds(drain(master))
    assert session.from_master(master, "mode", pack({"slave": record.slave_id, "mode": "write"}), 1.0) is None
    assert record.mode == "write"
    assert session.from_slave(slave, "control", pack("click"), 1.0) is None
    assert ("control", 2, pack("click")) in drain(master)  # inbox numbering: pointer was 1


def test_master_bad_mode_and_unknown_kind_are_errors():
    session, master = make_session()
    assert session.from_master(master, "mode", b"\xc1", 1.0).kind == "error"
    assert session.from_master(master, "mode", pack({"slave": "nobody", "mode": "write"}), 1.0).kind == "error"
    assert session.from_master(master, "hello", pack({}), 1.0).kind == "error"


def test_chat_session_refuses_mutation_until_snapshot():
    session = Session("c", config(), chat=True)
    master = Peer(Role.MASTER, transport="ws", limit=1 << 20)
    session.attach_master(master, 0.0)
    assert session.from_master(master, "chat", pack("hi"), 1.0) is None
    error = session.from_master(master, "mutation", pack(1), 1.0)
    assert error is not None and msgpack.unpackb(error.body)["code"] == "chat-only"
    assert session.from_master(master, "snapshot", pack("page"), 1.0) is None
    assert session.from_master(master, "mutation", pack(1), 1.0) is None


def test_second_master_replaces_first_and_ending_closes_everyone():
    session, first = make_session()
    second = Peer(Role.MASTER, transport="ws", limit=1 << 20)
    _record, slave = add_slave(session)
    session.attach_master(second, 1.0)
    assert first.close_code == CloseCode.REPLACED
    assert session.from_master(first, "mutation", pack(1), 1.0).kind == "error"
    drain(slave)
    session.end("ended by the master")
    assert second.close_code == CloseCode.SESSION_ENDED and slave.close_code == CloseCode.SESSION_ENDED
    presence = [msgpack.unpackb(b) for k, s, b in drain(slave) if k == "presence"]
    assert presence[-1]["event"] == "ended"
    with pytest.raises(SessionEnded):
        session.add_slave(None)


def test_master_reconnect_is_announced():
    session, master = make_session()
    _record, slave = add_slave(session)
    session.detach(master, 1.0)
    assert session.master_left_at == 1.0
    session.attach_master(Peer(Role.MASTER, transport="ws", limit=1 << 20), 2.0)
    events = [msgpack.unpackb(b)["event"] for k, s, b in drain(slave) if k == "presence"]
    assert events[-2:] == ["master-left", "master-reconnected"]
    assert session.master_left_at is None


def test_slow_slave_is_resynced_then_closed_and_queue_stays_bounded():
    limit = 64 * KiB
    session, master = make_session(slave_queue_bytes=limit, max_message_bytes=16 * KiB,
                                   backlog_bytes=1 << 30, history_hard_limit_bytes=1 << 30)
    _r1, fast = add_slave(session, limit=limit)
    _r2, slow = add_slave(session, limit=limit)
    drain(slow)  # its writer sent the hello, then the client stopped reading
    session.from_master(master, "snapshot", pack(b"s" * 1000), 1.0)
    fast_state = apply([], drain(fast))
    payload = pack(b"m" * 1000)
    resynced = False
    for i in range(500):
        if i == 25:  # a fresh checkpoint, so that the resync fits in the slow slave's queue
            session.from_master(master, "snapshot", pack(b"t" * 1000), 1.0)
        session.from_master(master, "mutation", payload, 1.0)
        assert slow.queued_bytes <= limit
        if any(m.kind == "resync" for m in slow.queue):
            resynced = True
        apply(fast_state, drain(fast))
        if slow.closing:
            break
    assert resynced
    assert slow.close_code == CloseCode.TRY_AGAIN_LATER
    assert slow.queued_bytes == 0
    # the fast slave lost nothing
    assert session.stats["resyncs"] == 1 and session.stats["slow_closed"] == 1
    assert fast_state[0] == pack(b"t" * 1000)
    assert fast_state.count(payload) == sum(1 for m in session.history if m.kind == "mutation")


def test_slow_slave_that_catches_up_after_resync_stays():
    limit = 64 * KiB
    session, master = make_session(slave_queue_bytes=limit, max_message_bytes=16 * KiB)
    _r, slave = add_slave(session, limit=limit)
    hello = drain(slave)  # its writer sent the hello, then the client stopped reading
    session.from_master(master, "snapshot", pack(b"s" * 100), 1.0)
    payload = pack(b"m" * 1000)
    for _ in range(36):  # the slave does not read: 36 KiB queued (57 KiB with what each costs)
        session.from_master(master, "mutation", payload, 1.0)
    session.from_master(master, "snapshot", pack(b"t" * 100), 1.0)
    for _ in range(38):  # overflows once: resynced from the second snapshot, which fits
        session.from_master(master, "mutation", payload, 1.0)
        assert slave.queued_bytes <= limit
    assert session.stats["resyncs"] == 1 and not slave.closing
    state = apply([], drain(slave))  # it read everything: the resync is over
    assert not slave.resync_pending
    for _ in range(10):
        session.from_master(master, "mutation", payload, 1.0)
    apply(state, drain(slave))
    assert not slave.closing
    assert state == [pack(b"t" * 100)] + [payload] * 48


def test_backlog_asks_master_for_snapshot_and_hard_limit_makes_joiners_wait():
    session, master = make_session(backlog_bytes=10 * KiB, history_hard_limit_bytes=20 * KiB,
                                   max_message_bytes=8 * KiB, slave_queue_bytes=8 * KiB)
    session.from_master(master, "snapshot", pack("s"), 1.0)
    drain(master)
    for _ in range(12):
        session.from_master(master, "mutation", pack(b"x" * 1000), 1.0)
    asked = [msgpack.unpackb(b) for k, s, b in drain(master) if k == "resync"]
    assert len(asked) == 1 and asked[0]["reason"] == "backlog"
    for _ in range(20):
        session.from_master(master, "mutation", pack(b"x" * 1000), 1.0)
    assert not session.history_complete
    _r, late = add_slave(session)
    got = drain(late)
    assert msgpack.unpackb(got[0][2])["catchup"] == "pending"
    session.from_master(master, "snapshot", pack("fresh"), 1.0)
    assert apply([], drain(late)) == [pack("fresh")]


def test_to_master_events_dropped_when_master_queue_full():
    session, master = make_session()
    master.limit = 1000
    _record, slave = add_slave(session)
    for _ in range(100):
        session.from_slave(slave, "pointer", pack(b"p" * 100), 1.0)
    assert master.queued_bytes <= 1000 + 200  # hello and presence are not dropped
    assert session.stats["dropped_to_master"] > 0


def test_chat_flood_to_a_master_that_does_not_read_stays_bounded():
    from relay._session import Peer, Role, Session

    config = Config(max_message_bytes=4096, slave_queue_bytes=8192)
    session = Session("flood", config)
    master = Peer(Role.MASTER, transport="ws", limit=config.slave_queue_bytes)
    session.attach_master(master, 0.0)
    record = session.add_slave("agent")
    slave = Peer(Role.SLAVE, transport="ws", limit=config.slave_queue_bytes)
    session.attach_slave(record, slave, 0.0)
    body = memoryview(msgpack.packb(b"x" * 1000))
    for _ in range(100):
        assert session.from_slave(slave, "chat", body, 1.0) is None
        slave.take_batch()  # the slave reads; the master never does
    assert master.queued_bytes <= config.slave_queue_bytes
    assert master.close_code is None
    assert session.stats["dropped_to_master"] > 0
