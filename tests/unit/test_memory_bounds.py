"""Queues and histories are bounded by what their messages cost in memory, and refusals are rationed.

Found by an outside attack (issue "Hardening 2"): empty messages were counted as their 14 wire
bytes while each held about 550 bytes, and refused envelopes were answered without any bound.
"""

from __future__ import annotations

import collections
import tracemalloc

import msgpack
import pytest

from relay._accel import OP_BINARY, FrameDecoder, build_envelope, encode_client_frame, peek_envelope
from relay._config import Config
from relay._endpoint import deliver_envelope
from relay._errors import FloodError
from relay._outbox import MESSAGE_OVERHEAD_BYTES
from relay._session import MASTER_TAIL, REFUSAL_BURST, REFUSALS_PER_S, Outgoing, Peer, Role, Session

KiB = 1024
MiB = 1024 * KiB
EMPTY_POINTER = build_envelope("pointer", 0, b"\xc0")
EMPTY_CHAT = build_envelope("chat", 0, b"\xc0")


def received(envelope: bytes, count: int) -> list:
    """``count`` payloads as the WebSocket reader hands them over (one bytes object each)."""
    decoder = FrameDecoder()
    decoder.feed(encode_client_frame(OP_BINARY, envelope) * count)
    out = []
    while (event := decoder.next_event()) is not None:
        out.append(event[1])
    return out


def make_session(**overrides):
    session = Session("s1", Config(**overrides), now=0.0)
    master = Peer(Role.MASTER, transport="ws", limit=session.config.slave_queue_bytes)
    session.attach_master(master, 0.0)
    record = session.add_slave("agent")
    slave = Peer(Role.SLAVE, transport="ws", limit=session.config.slave_queue_bytes)
    session.attach_slave(record, slave, 0.0)
    return session, master, slave


def test_the_overhead_constant_covers_what_a_queued_message_really_costs():
    count = 20_000
    payloads = received(EMPTY_POINTER, count)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        queue = collections.deque()
        for payload in payloads:
            kind, _seq, start, end = peek_envelope(payload)
            queue.append(Outgoing(kind, 1, memoryview(payload)[start:end], MASTER_TAIL))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload_bytes = sum(payload.__sizeof__() for payload in payloads)  # allocated before tracing
    per_message = (held + payload_bytes) / count
    wire = queue[0].size
    assert per_message <= wire + MESSAGE_OVERHEAD_BYTES, per_message
    assert per_message >= 0.6 * (wire + MESSAGE_OVERHEAD_BYTES), "the constant is far above the real cost"


def test_a_master_that_does_not_read_holds_no_more_messages_than_its_bound_pays_for():
    limit = 1 * MiB
    session, master, slave = make_session(slave_queue_bytes=limit, max_message_bytes=512 * KiB)
    master.clear()
    for payload in received(EMPTY_POINTER, 20_000):
        deliver_envelope(session, slave, payload, 1.0)
    assert master.queued_bytes <= limit
    # what the queue holds, at what each message costs, fits in the bound
    assert len(master.queue) * (master.queue[0].size + MESSAGE_OVERHEAD_BYTES) <= limit
    assert len(master.queue) < 2_000  # was 20,000 (14 "bytes" each)
    assert session.stats["dropped_to_master"] > 18_000


def test_a_history_of_empty_chats_is_cut_by_what_it_costs():
    hard_limit = 2 * MiB
    session, master, slave = make_session(backlog_bytes=1 * MiB, history_hard_limit_bytes=hard_limit,
                                          slave_queue_bytes=64 * MiB)
    deliver_envelope(session, master, build_envelope("snapshot", 0, msgpack.packb("page")), 0.0)
    for payload in received(EMPTY_CHAT, 20_000):
        deliver_envelope(session, master, payload, 1.0)
        assert session.history_bytes <= hard_limit
        assert len(session.history) * MESSAGE_OVERHEAD_BYTES <= hard_limit
    assert session.stats["history_cut"] >= 1


@pytest.mark.parametrize("role", ["master", "slave"])
@pytest.mark.parametrize("kind", ["snapshot", "no-such-kind", "mode"])
def test_a_client_that_floods_refused_envelopes_is_closed_with_1008(role, kind):
    session, master, slave = make_session()
    peer = master if role == "master" else slave
    if role == "master" and kind in ("snapshot", "mode"):
        kind = "control"  # a kind the master may not send ("mode" with a bad body is also refused)
    peer.clear()
    payload = build_envelope(kind, 0, b"\xc0")
    refused = 0
    with pytest.raises(FloodError) as info:
        for _ in range(1_000_000):
            deliver_envelope(session, peer, payload, 5.0)  # the same instant: no refill
            refused += 1
    assert info.value.close_code == 1008 and info.value.http_status == 429
    assert refused == REFUSAL_BURST
    assert peer.close_code == 1008
    assert len(peer.queue) <= REFUSAL_BURST
    assert peer.queued_bytes <= peer.limit
    assert session.stats["flood_closed"] == 1


def test_refusals_within_the_rate_are_answered_forever():
    session, master, slave = make_session()
    slave.clear()
    payload = build_envelope("control", 0, b"\xc0")  # pointer mode: refused with write-mode-required
    now = 0.0
    for _ in range(10 * REFUSAL_BURST):
        now += 1.0 / REFUSALS_PER_S
        deliver_envelope(session, slave, payload, now)
        slave.clear()  # it reads its answers
    assert not slave.closing


def test_refusal_answers_never_pass_the_queue_bound():
    limit = 64 * KiB
    session, master, slave = make_session(slave_queue_bytes=limit, max_message_bytes=32 * KiB)
    payload = build_envelope("snapshot", 0, b"\xc0")
    now = 0.0
    for _ in range(2_000):
        now += 1.0  # slow enough never to be closed, and the slave never reads
        deliver_envelope(session, slave, payload, now)
        assert slave.queued_bytes <= limit
    assert not slave.closing
    assert session.stats["refusals_dropped"] > 1_000
