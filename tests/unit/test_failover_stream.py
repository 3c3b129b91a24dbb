"""A takeover from the failover copy, without sockets or Redis: numbered master messages, acks,
slaves resuming across epochs (behind the copy, ahead of it), divergence (docs/protocol.md 4b)."""

from __future__ import annotations

import msgpack
import pytest

from relay._config import Config
from relay._session import MASTER_TAIL, Peer, Role, Session
from relay._streamcopy import decode_item, encode_item, stream_from_copy, stream_meta


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Slave:
    """A slave as client.js models it: page state, last seq per epoch, master count."""

    def __init__(self, session: Session, record=None) -> None:
        self.record = record or session.add_slave("agent")
        self.page: list = []
        self.seq = None
        self.epoch = None
        self.count = None
        self.skip_until = 0  # after a resume past the copy: master messages it has already
        self.hellos: list = []
        self.seen: list = []  # (epoch, seq) of every stream message received
        self.applied: list = []  # (epoch, seq) of every stream message applied
        self.skipped = 0

    def connect(self, session: Session, *, resume: bool = True) -> Peer:
        peer = Peer(Role.SLAVE, transport="ws", limit=session.config.slave_queue_bytes)
        record = session.slaves[self.record.slave_id]
        if resume and self.seq is not None:
            session.attach_slave(record, peer, 0.0, after=self.seq, epoch=self.epoch, master_count=self.count)
        else:
            session.attach_slave(record, peer, 0.0)
        return peer

    def read(self, peer: Peer) -> None:
        while peer.queue:
            for message in peer.take_batch():
                body = msgpack.unpackb(bytes(message.body), raw=False)
                if message.kind == "hello":
                    self.hellos.append(body)
                    self.epoch = body["epoch"]
                    resumed = body["catchup"] == "resume"
                    ahead = resumed and self.count is not None and self.count > body["master_count"]
                    self.skip_until = self.count if ahead else 0
                    self.count = body["master_count"]
                    self.seq = body["after"] if body["catchup"] == "resume" else None
                    continue
                if message.kind == "resync":
                    self.count = body["master_count"]
                    self.skip_until = 0
                    self.seq = None
                    self.page = []
                    continue
                if message.seq == 0:
                    continue
                assert self.seq is None or message.seq == self.seq + 1, (self.seq, message)
                self.seq = message.seq
                self.seen.append((self.epoch, message.seq))
                if message.tail == MASTER_TAIL:
                    self.count += 1
                    if self.count <= self.skip_until:
                        self.skipped += 1
                        continue  # a re-send of what it applied before the failover
                self.applied.append((self.epoch, message.seq))
                if message.kind == "snapshot":
                    self.page = [body]
                elif message.kind == "mutation":
                    self.page.append(body)


class Master:
    """A numbering master: keeps what it sent until acked, re-sends after a hello."""

    def __init__(self) -> None:
        self.number = 0
        self.kept: list = []  # (number, kind, body)
        self.page: list = []

    def connect(self, session: Session) -> Peer:
        peer = Peer(Role.MASTER, transport="ws", limit=session.config.slave_queue_bytes)
        session.attach_master(peer, 0.0)
        hello = next(msgpack.unpackb(bytes(m.body)) for m in peer.take_batch() if m.kind == "hello")
        held = hello["held"]
        self.kept = [k for k in self.kept if k[0] > held]
        if self.kept and self.kept[0][0] != held + 1 or held > self.number:
            raise AssertionError("this test's master never loses what it keeps")
        for number, kind, body in self.kept:
            assert session.from_master(peer, kind, pack(body), 0.0, number) is None
        return peer

    def send(self, session: Session, peer: Peer, kind: str, body) -> None:
        self.number += 1
        self.kept.append((self.number, kind, body))
        if kind == "snapshot":
            self.page = [body]
        else:
            self.page.append(body)
        assert session.from_master(peer, kind, pack(body), 0.0, self.number) is None

    def acked(self, held: int) -> None:
        self.kept = [k for k in self.kept if k[0] > held]


def copy_of(session: Session):
    """What the failover copy holds now: the history as items, and the record's meta."""
    items = [encode_item(m) for m in session.history]
    return stream_meta(session, session.history[-1]), items


def take_over(session: Session, meta: dict, items: list) -> Session:
    stream = stream_from_copy(meta, items)
    assert stream is not None
    return Session.restore(session.id, session.config, session.participants_record(), epoch=session.epoch + 1,
                           stream=stream)


def open_session():
    session = Session("s1", Config(), now=0.0)
    master = Master()
    return session, master, master.connect(session)


def test_items_round_trip_with_the_sender_stamp():
    session, master, peer = open_session()
    master.send(session, peer, "snapshot", "page")
    original = session.history[-1]
    item = encode_item(original)
    back = decode_item(item)
    assert (back.kind, back.seq, bytes(back.body), back.head) == (original.kind, original.seq, bytes(original.body),
                                                                   original.head)
    assert back.tail is MASTER_TAIL
    with pytest.raises(Exception):
        decode_item(item + b"\x00")  # trailing data
    for cut in range(len(item)):
        with pytest.raises(Exception):
            decode_item(item[:cut])


def test_a_repeated_number_is_dropped_and_the_hello_says_what_is_held():
    session, master, peer = open_session()
    master.send(session, peer, "snapshot", "page")
    master.send(session, peer, "mutation", 1)
    assert session.held == 2 and session.seq == 2
    assert session.from_master(peer, "mutation", pack(1), 0.0, 2) is None  # a re-send
    assert session.seq == 2 and session.stats["repeats_dropped"] == 1
    again = Peer(Role.MASTER, transport="ws", limit=1 << 20)
    session.attach_master(again, 0.0)
    hello = msgpack.unpackb(bytes(again.queue[0].body))
    assert hello["held"] == 2
    # unnumbered messages get the next number
    assert session.from_master(again, "mutation", pack(2), 0.0, 0) is None
    assert session.held == 3


def test_slaves_behind_and_ahead_of_the_copy_end_equal_to_the_master_with_no_duplicate():
    session, master, peer = open_session()
    behind, ahead, late = Slave(session), Slave(session), Slave(session)
    behind_peer, ahead_peer = behind.connect(session), ahead.connect(session)
    master.send(session, peer, "snapshot", "page")
    for n in range(5):
        master.send(session, peer, "mutation", n)
    behind.read(behind_peer)  # it has seq 1..6, then loses its connection
    session.detach(behind_peer, 0.0)
    for n in range(5, 8):
        master.send(session, peer, "mutation", n)
    meta, items = copy_of(session)  # the copy holds up to here (and the master was acked)
    master.acked(meta["held"])
    for n in range(8, 12):  # beyond the copy: the host dies before copying these
        master.send(session, peer, "mutation", n)
    ahead.read(ahead_peer)
    assert ahead.page == master.page

    new = take_over(session, meta, items)
    new_master_peer = master.connect(new)  # re-sends 9..12 (numbers), nothing twice
    assert new.held == master.number and new.seq == meta["seq"] + 4
    peers = [(behind, behind.connect(new)), (ahead, ahead.connect(new)), (late, late.connect(new, resume=False))]
    for n in range(12, 15):
        master.send(new, new_master_peer, "mutation", n)
    for slave, p in peers:
        slave.read(p)
        assert slave.page == master.page
        assert slave.hellos[-1]["epoch"] == 2
    assert behind.hellos[-1]["catchup"] == "resume" and ahead.hellos[-1]["catchup"] == "resume"
    assert late.hellos[-1]["catchup"] == "full"
    for slave in (behind, ahead):
        assert len(set(slave.seen)) == len(slave.seen)
    # the ahead slave received the re-sent 9..12 but left them out: it had them
    assert ahead.skipped == 4 and behind.skipped == 0
    assert ahead.page == master.page and len(ahead.page) == 1 + 15


def test_an_ahead_slave_that_connects_before_the_master_re_sends_skips_the_re_sends_live():
    session, master, peer = open_session()
    ahead = Slave(session)
    ahead_peer = ahead.connect(session)
    master.send(session, peer, "snapshot", "page")
    meta, items = copy_of(session)
    master.acked(meta["held"])
    for n in range(4):
        master.send(session, peer, "mutation", n)
    ahead.read(ahead_peer)
    new = take_over(session, meta, items)
    p = ahead.connect(new)  # before the master is back
    ahead.read(p)
    assert ahead.hellos[-1]["catchup"] == "resume" and ahead.hellos[-1]["after"] == meta["seq"]
    assert new._skipping == 1
    m = master.connect(new)
    master.send(new, m, "mutation", 4)
    ahead.read(p)
    assert ahead.page == master.page and ahead.skipped == 4
    assert new._skipping == 0  # past the re-sends: nothing left to watch


def test_an_unnumbered_master_after_a_takeover_resyncs_the_slaves_that_were_ahead():
    session, master, peer = open_session()
    ahead = Slave(session)
    ahead_peer = ahead.connect(session)
    master.send(session, peer, "snapshot", "page")
    meta, items = copy_of(session)
    for n in range(3):
        master.send(session, peer, "mutation", n)
    ahead.read(ahead_peer)
    other = Slave(session)  # joined, never connected yet
    new = take_over(session, meta, items)
    p = ahead.connect(new)
    ahead.read(p)
    fresh = Peer(Role.MASTER, transport="ws", limit=1 << 20)
    new.attach_master(fresh, 0.0)
    # a master that lost what it kept sends a fresh snapshot, unnumbered
    assert new.from_master(fresh, "snapshot", pack("page 2"), 0.0, 0) is None
    ahead.read(p)
    assert ahead.page == ["page 2"]
    assert new.stats["resyncs"] == 1
    # and a slave of epoch 1 that comes later past the copy is resynced too
    other.seq, other.epoch, other.count = meta["seq"] + 3, 1, 4
    q = other.connect(new)
    other.read(q)
    assert other.hellos[-1]["catchup"] == "resync" and other.page == ["page 2"]


def test_a_slave_of_an_unknown_epoch_or_without_a_count_resyncs():
    session, master, peer = open_session()
    master.send(session, peer, "snapshot", "page")
    meta, items = copy_of(session)
    master.send(session, peer, "mutation", 0)
    new = take_over(session, meta, items)
    master.connect(new)
    for epoch, count in ((7, 2), (1, None)):
        slave = Slave(new)  # (joined the new host: a record it knows)
        slave.seq, slave.epoch, slave.count = meta["seq"] + 1, epoch, count
        p = slave.connect(new)
        slave.read(p)
        assert slave.hellos[-1]["catchup"] == "resync"
        assert slave.page == master.page


def test_a_copy_with_a_hole_is_not_continued():
    session, master, peer = open_session()
    master.send(session, peer, "snapshot", "page")
    for n in range(3):
        master.send(session, peer, "mutation", n)
    meta, items = copy_of(session)
    assert stream_from_copy(meta, items[:2] + items[3:]) is None
    assert stream_from_copy(dict(meta, seq=meta["seq"] + 1), items) is None
    assert stream_from_copy({"seq": 1}, items) is None


def test_a_slave_away_for_two_takeovers_resumes_and_the_lineage_stays_bounded():
    session, master, peer = open_session()
    sleeper = Slave(session)
    p = sleeper.connect(session)
    master.send(session, peer, "snapshot", "page")
    master.send(session, peer, "mutation", 0)
    sleeper.read(p)  # it has epoch 1 up to here, then is away
    current, current_peer = session, peer
    for n in range(1, 11):
        master.send(current, current_peer, "mutation", n)
        meta, items = copy_of(current)
        master.acked(meta["held"])
        current = take_over(current, meta, items)
        current_peer = master.connect(current)
        if n == 2:
            back = sleeper.connect(current)  # two takeovers later
            sleeper.read(back)
            assert sleeper.hellos[-1]["catchup"] == "resume" and sleeper.page == master.page
            session.detach(back, 0.0)
    assert current.epoch == 11
    from relay._session import LINEAGE_EPOCHS
    assert len(current.lineage) == LINEAGE_EPOCHS
    late = Slave(current)
    q = late.connect(current)
    late.read(q)
    assert late.page == master.page
