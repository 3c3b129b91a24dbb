"""The checks of scripts/chaos.py's slaves can fail: a lost, repeated or reordered message, a seq that
does not go up within an epoch, and a state replaced by a resync (which may replay what came before)."""

from types import SimpleNamespace

import msgpack
import pytest

import chaos
from relay import Envelope


class FakeRun:
    def fail(self, message):  # pragma: no cover - the checks raise, they do not call fail
        raise AssertionError(message)


def make_slave():
    master = SimpleNamespace(uid=0, digest=None)
    return chaos.Slave(FakeRun(), browser=None, master=master, name="s")


def connection(epoch, hello=None):
    return SimpleNamespace(epoch=epoch, hello=hello, master_count=None, left_out=0, _skip_through=None)


class Page:
    """What a master sends: bodies with its numbers and the digest each mutation extends."""

    def __init__(self):
        self.uid = 0
        self.digest = None

    def body(self, kind):
        self.uid += 1
        fields = {"u": self.uid, "pad": b"x" * self.uid}
        if kind == "mutation":
            fields["prev"] = self.digest
        body = msgpack.packb(fields)
        self.digest = chaos.page_digest(self.digest, kind, body)
        return body


#: A hello as receive() returns it; the slave reads its body from the connection (``connection.hello``).
HELLO = Envelope("hello", 0, memoryview(msgpack.packb({})), "")


def deliver(slave, conn, kind, seq, body, sender="master"):
    slave.note(Envelope(kind, seq, memoryview(body), sender), conn)


def started(page):
    slave = make_slave()
    conn = connection(1, {"catchup": "full"})
    slave.note(HELLO, conn)
    bodies = [page.body("snapshot"), page.body("mutation"), page.body("mutation")]
    for seq, body in enumerate(bodies, start=1):
        deliver(slave, conn, "snapshot" if seq == 1 else "mutation", seq, body)
    return slave, conn, bodies


def test_a_slave_that_gets_every_message_once_has_the_masters_page():
    page = Page()
    slave, _conn, _bodies = started(page)
    assert slave.digest == page.digest and slave.applied == 3


def test_a_message_applied_twice_fails():
    page = Page()
    slave, conn, bodies = started(page)
    with pytest.raises(chaos.ChaosFailure, match="applied twice"):
        deliver(slave, conn, "mutation", 4, bodies[2])


def test_a_lost_message_fails_at_the_next_one():
    page = Page()
    slave, conn, _bodies = started(page)
    page.body("mutation")  # never delivered
    with pytest.raises(chaos.ChaosFailure, match="lost"):
        deliver(slave, conn, "mutation", 5, page.body("mutation"))


def test_a_seq_that_does_not_go_up_within_an_epoch_fails_and_a_new_epoch_may_go_lower():
    page = Page()
    slave, conn, _bodies = started(page)
    with pytest.raises(chaos.ChaosFailure, match="duplicated or out of order"):
        deliver(slave, conn, "presence", 3, msgpack.packb({"event": "joined"}), sender="")
    resumed = connection(2, {"catchup": "resume"})
    slave.note(HELLO, resumed)
    deliver(slave, resumed, "mutation", 2, page.body("mutation"))  # the copy ended at 1: lower is fine
    assert slave.digest == page.digest


def test_a_resync_replaces_the_state_and_the_next_snapshot_starts_it_again():
    page = Page()
    slave, conn, bodies = started(page)
    slave.note(Envelope("resync", 0, memoryview(msgpack.packb({})), ""), conn)
    assert slave.digest is None and slave.replaced == 1
    with pytest.raises(chaos.ChaosFailure, match="lost"):
        deliver(slave, conn, "mutation", 4, page.body("mutation"))  # no snapshot to apply it to


def test_a_replaced_state_tells_a_snapshot_sent_again_from_a_newer_one():
    page = Page()
    slave, conn, bodies = started(page)
    slave.note(Envelope("resync", 0, memoryview(msgpack.packb({})), ""), conn)
    deliver(slave, conn, "snapshot", 4, bodies[0])  # the one it had: sent again for nothing
    assert slave.snapshots_again == 1 and slave.replaced_by_newer == 0
    slave.note(Envelope("resync", 0, memoryview(msgpack.packb({})), ""), conn)
    deliver(slave, conn, "snapshot", 5, page.body("snapshot"))
    assert slave.snapshots_again == 1 and slave.replaced_by_newer == 1 and slave.digest == page.digest
