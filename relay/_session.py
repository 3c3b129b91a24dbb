"""One co-browse session: roles, sequencing, history for catch-up, fan-out and slow-slave policy.

This module is transport-agnostic and does no I/O.  A transport (WebSocket or long-poll) attaches
a :class:`Peer` to the session, hands it the envelopes its client sent, and drains the peer's
outbound queue.  The session decides everything else from an envelope's kind alone; DOM, CSS,
pointer and control bodies are never decoded.

Two streams leave a session:

* the **session stream**: every message that slaves receive (snapshot, mutation, css, navigate,
  chat, presence).  It is numbered by the session's ``seq``, gap-free, and kept since the latest
  snapshot as the **history** that late joiners and resuming slaves replay.  Slaves receive every
  message of it (their own chat too: that is how a sender learns its message's seq); the master
  receives the ones it did not send.
* the master's **inbox**: pointer and control events from slaves, numbered by their own counter.

Per-connection messages from the relay (hello, resync, error) carry seq 0: they are outside both
streams.  A message is built once (:class:`Outgoing`) and the same object is queued for every
receiver; its body is a view of the sender's payload, never copied.

Every delivered envelope is stamped ``[kind, seq, body, sender]`` (SPEC 4): ``sender`` is the
participant id the relay gave the sender (``"master"``, a slave's id, ``""`` for the relay's own
messages), packed once per participant and sent after the body as its own buffer, so stamping
costs one iovec, never a copy; whatever a client put in a fourth element is dropped at the peek.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import secrets
from typing import Callable, NamedTuple, Optional

import msgpack

from relay._accel import envelope_frame_header, sender_tail
from relay._closecodes import CloseCode
from relay._config import Config
from relay._fence import UNFENCED
from relay._buckets import TokenBucket
from relay._outbox import MESSAGE_OVERHEAD_BYTES, Outbox

__all__ = [
    "Outgoing",
    "Peer",
    "Role",
    "Session",
    "SlaveRecord",
    "SessionEnded",
]

# Kinds (SPEC 4).
BROADCAST_FROM_MASTER = frozenset({"snapshot", "mutation", "css", "navigate"})
# What a master numbers (docs/protocol.md 4b): the kinds that enter the session stream.
NUMBERED_FROM_MASTER = BROADCAST_FROM_MASTER | {"chat"}
SHARING_KINDS = frozenset({"mutation", "css", "navigate"})  # refused in a chat-only session
TO_MASTER_ANY_MODE = frozenset({"pointer"})
TO_MASTER_WRITE_MODE = frozenset({"control"})

# Refused envelopes (a kind the role may not send, an unknown kind) are answered with an error, at
# most REFUSAL_BURST at once and REFUSALS_PER_S in the long run (a token bucket per connection); a
# client past that is closed (1008): refusals cost the relay an answer each, so they are rationed.
REFUSAL_BURST = 64
REFUSALS_PER_S = 8.0

# Every connection of a participant is announced (presence) and replays its catch-up: a client that
# reconnects in a loop would flood everyone's queue and the history.  Reloads, failovers and flaky
# networks reconnect at once, and must never be refused; a loop past RECONNECT_BURST at once and
# RECONNECTS_PER_S after is (HTTP 429 with Retry-After).  The burst costs the others about 1 KiB each.
RECONNECT_BURST = 500
RECONNECTS_PER_S = 2.0

# The most a frame header, an envelope header and a sender stamp add to a body: 10 (frame) + 1
# (array) + 1 + 32 (kind, at most MAX_KIND_BYTES) + 9 (seq) + 5 (bin header) + 1 + 64 (sender).
ENVELOPE_HEAD_MAX_BYTES = 123
# Earlier epochs a stream remembers (Session.lineage): slaves may resume from that many takeovers back.
LINEAGE_EPOCHS = 8
SLAVE_ID_BYTES = 8
TOKEN_BYTES = 32  # 256-bit role tokens

# Participant ids as stamped on delivered envelopes (a slave's is its slave_id).
MASTER_SENDER = "master"
RELAY_SENDER = ""
MASTER_TAIL = sender_tail(MASTER_SENDER)
RELAY_TAIL = sender_tail(RELAY_SENDER)


def token_digest(token: str) -> bytes:
    """What a session keeps of a role token (and what the cluster's state store holds): its SHA-256.
    A 256-bit random token needs no salt or slow hash; the raw token is only ever in the answer to
    the create or join that made it."""
    return hashlib.sha256(token.encode()).digest()


@dataclasses.dataclass
class StreamState:
    """The session stream as the failover copy keeps it: the history (snapshot and what followed),
    the last ``seq``, the master count before the history (``base_count``), the master's latest
    message number (``held``), whether the session is still chat-only, the epoch that wrote it and
    the earlier epochs it continues (``lineage``, see :attr:`Session.lineage`)."""

    seq: int
    base_count: int
    held: int
    chat: bool
    writer_epoch: int
    lineage: dict
    messages: list


class Role(str, enum.Enum):
    MASTER = "master"
    SLAVE = "slave"


class SessionEnded(Exception):
    """The session is over; no peer can attach any more."""


def pack_body(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Outgoing:
    """One envelope ready to send: ``head + body + tail`` is the whole WebSocket frame.

    ``head`` is the unmasked frame header followed by the envelope header; ``body`` is a view of
    the sender's payload (it keeps that payload alive, so it stays valid as long as this object);
    ``tail`` is the sender's stamp (shared by every message of that sender).
    ``envelope()`` gives the parts without the WebSocket header, for long-polling.
    """

    __slots__ = ("kind", "seq", "head", "ws_header_length", "body", "tail", "size", "cost", "count", "number")

    def __init__(self, kind: str, seq: int, body, tail: bytes) -> None:
        body_length = len(body)
        head = envelope_frame_header(kind, seq, body_length, tail)
        self.kind = kind
        self.seq = seq
        self.head = head
        self.body = body
        self.tail = tail
        self.size = len(head) + body_length + len(tail)
        self.cost = self.size + MESSAGE_OVERHEAD_BYTES  # what bounds count (relay._outbox)
        # The 7-bit length field says how long the frame header is: 126 -> 16-bit, 127 -> 64-bit.
        self.ws_header_length = _WS_HEADER_LENGTH[head[1] & 0x7F]
        # Stream messages only (set by Session._publish): the session's count of master messages and
        # the master's own message number ("held"), both as of this message (docs/protocol.md 4b).
        self.count = 0
        self.number = 0

    def envelope(self) -> tuple:
        return (memoryview(self.head)[self.ws_header_length:], self.body, self.tail)

    def __repr__(self) -> str:
        return f"<Outgoing {self.kind} seq={self.seq} {self.size}B>"


_WS_HEADER_LENGTH = [2] * 126 + [4, 10]


def relay_message(kind: str, body_obj, seq: int = 0) -> Outgoing:
    """A message written by the relay itself (hello, presence, resync, error): sender ``""``."""
    return Outgoing(kind, seq, pack_body(body_obj), RELAY_TAIL)


class Peer(Outbox):
    """One client endpoint in a session: an :class:`Outbox` with the client's role.

    The slow-slave policy of :meth:`Session._deliver_past_bound` applies to slaves; what goes to a
    master past its bound (events, chat, presence) is dropped instead, so that neither a master that
    stops reading nor slaves that flood it can grow memory, and no slave can get it closed.
    """

    __slots__ = ("role", "slave", "transport", "session", "connection_id", "last_seen", "poll_event",
                 "refusals", "skip_through")

    def __init__(self, role: Role, *, transport: str, limit: int, connection_id: str = "") -> None:
        super().__init__(limit)
        self.role = role
        self.slave: Optional[SlaveRecord] = None
        self.transport = transport  # "ws" or "poll": for metrics and logs
        self.session: Optional[Session] = None
        self.connection_id = connection_id
        self.last_seen = 0.0
        self.poll_event = None  # long-poll only: wakes the GET that waits for this peer
        self.refusals = TokenBucket(REFUSAL_BURST, REFUSALS_PER_S)
        # A slave that resumed past the failover copy already has the master messages counted up to
        # this; it leaves the master's re-sends of them out itself.  Until the stream is past them,
        # a divergence (the master could not re-send) resyncs it (0: nothing to watch).
        self.skip_through = 0

    def allow_refusal(self, now: float) -> bool:
        """Take one refusal from this client's allowance (a token bucket); False when it is spent."""
        return self.refusals.take(now)


class SlaveRecord:
    """A slave that joined: its token and mode outlive any one connection."""

    __slots__ = ("slave_id", "token", "digest", "agent_id", "mode", "peer", "tail", "idle_since", "admitted",
                 "joined_at", "connects")

    def __init__(self, slave_id: str, token: Optional[str], agent_id: Optional[str], now: float = 0.0, *,
                 admitted: bool = True, digest: Optional[bytes] = None) -> None:
        self.slave_id = slave_id
        self.token = token  # None when the record was restored from the cluster's state store
        self.digest = digest if digest is not None else token_digest(token)
        self.agent_id = agent_id
        self.tail = sender_tail(slave_id)  # its stamp on everything it sends
        self.idle_since: Optional[float] = now  # not connected since (None while it is)
        self.admitted = admitted  # False: waiting for the master (join_policy "approve")
        self.joined_at = now
        self.connects = TokenBucket(RECONNECT_BURST, RECONNECTS_PER_S)
        self.mode = "pointer"
        self.peer: Optional[Peer] = None


class Session:
    """State and routing of one session.  Every method is synchronous and does no I/O."""

    def __init__(self, session_id: str, config: Config, *, chat: bool = False, now: float = 0.0,
                 epoch: int = 1, observer: Optional[Callable] = None) -> None:
        self.id = session_id
        self.config = config
        self.epoch = epoch
        self.seq = 0
        self.inbox_seq = 0
        self.chat_only = chat
        self.master_token: Optional[str] = secrets.token_urlsafe(TOKEN_BYTES)  # None once restored elsewhere
        self.master_digest = token_digest(self.master_token)
        self.master: Optional[Peer] = None
        self.master_ever_connected = False
        self.master_left_at: Optional[float] = now  # no master yet: the grace period runs
        self.slaves: dict = {}  # slave_id -> SlaveRecord
        self.slaves_by_digest: dict = {}  # token digest -> SlaveRecord
        # Called (with the session) when a participant fact that a new host would need changes: a
        # join, a release, an admission, a mode.  The cluster copies them to its state store.
        self.on_change: Optional[Callable] = None
        self.fence = UNFENCED  # a cluster node's lease (relay/_fence.py): checked once per received message
        self.history: list = []  # Outgoing, consecutive seqs, since the latest snapshot
        self.history_bytes = 0
        self.history_complete = True  # False after the hard limit cut it: wait for a snapshot
        # Master messages (docs/protocol.md 4b): how many the stream has had (slaves count them too),
        # the count before history[0], and the master's own number of the latest one taken.
        self.master_count = 0
        self.history_base_count = 0
        self.held = 0
        # Earlier epochs this one continues (a takeover that loaded the failover copy): epoch ->
        # [the copy's last seq of that epoch, the master count from which this stream may differ
        # from what that epoch's slaves saw beyond it (None: not yet)].
        self.lineage: dict = {}
        self._open_lineage = False  # some lineage entry has no divergence point yet
        self._skipping = 0  # slave peers with a skip_through
        # The failover copy (relay/_streamcopy.py): called once when the stream has news for it.
        self.on_stream: Optional[Callable] = None
        self.copy_dirty = False
        self.copy = None  # the copier's cursor
        self.acked_held = 0  # the master's number in the last ack_held
        self.snapshot_requested = False
        self.created_at = now
        self.last_activity = now
        self.ended: Optional[str] = None
        self._observer = observer  # (session, kind, seq, size) -> None: the on_message hook
        self.published = collections.Counter()  # kind -> messages given a seq or an inbox seq
        self.stats = collections.Counter()  # rare events, by name (see relay._metrics.SESSION_STATS)
        self.messages_out = 0  # messages queued to receivers, one per receiver
        self.bytes_out = 0
        self._slave_peers: list = []  # the connected slaves' peers, in join order: the fan-out list
        self._master_connects = TokenBucket(RECONNECT_BURST, RECONNECTS_PER_S)

    # ------------------------------------------------------------------ membership

    def add_slave(self, agent_id: Optional[str], now: float = 0.0, *, admitted: bool = True) -> SlaveRecord:
        """A slave joins: its token, and whether it sees the session at once or waits for the master."""
        if self.ended:
            raise SessionEnded(self.ended)
        record = SlaveRecord(secrets.token_hex(SLAVE_ID_BYTES), secrets.token_urlsafe(TOKEN_BYTES), agent_id, now,
                             admitted=admitted)
        self.slaves[record.slave_id] = record
        self.slaves_by_digest[record.digest] = record
        self._changed()
        return record

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # ------------------------------------------------------------------ the facts a new host needs

    def participants_record(self) -> dict:
        """The participants as the cluster's state store keeps them (token digests, never tokens)."""
        return {
            "chat": self.chat_only,
            "master": self.master_digest.hex(),
            "slaves": [{"id": r.slave_id, "digest": r.digest.hex(), "agent": r.agent_id, "mode": r.mode,
                        "admitted": r.admitted} for r in self.slaves.values()],
        }

    @classmethod
    def restore(cls, session_id: str, config: Config, record: dict, *, epoch: int, now: float = 0.0,
                observer: Optional[Callable] = None, stream=None) -> "Session":
        """The session as a new host takes it over: the same participants and tokens, a new epoch.
        With ``stream`` (a :class:`StreamState` loaded from the failover copy) the stream goes on
        where the copy ends; without it the stream is empty (the master sends a snapshot, slaves
        resync).  ValueError if ``record`` is not one that :meth:`participants_record` made."""
        try:
            session = cls(session_id, config, chat=bool(record.get("chat", False)), now=now, epoch=epoch,
                          observer=observer)
            session.master_token = None
            session.master_digest = bytes.fromhex(record["master"])
            for entry in record.get("slaves", []):
                slave = SlaveRecord(str(entry["id"]), None, entry.get("agent"), now,
                                    admitted=bool(entry.get("admitted", True)), digest=bytes.fromhex(entry["digest"]))
                if entry.get("mode") in ("pointer", "write"):
                    slave.mode = entry["mode"]
                session.slaves[slave.slave_id] = slave
                session.slaves_by_digest[slave.digest] = slave
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"unreadable session record: {exc!r}") from None
        if stream is not None:
            session._continue(stream)
        return session

    def _continue(self, stream: "StreamState") -> None:
        """Take the stream over from the failover copy: its history, numbering and counts."""
        self.history = list(stream.messages)
        self.history_bytes = sum(message.cost for message in self.history)
        self.history_complete = True
        self.seq = stream.seq
        self.history_base_count = stream.base_count
        count = stream.base_count
        for message in self.history:
            if message.tail is MASTER_TAIL:
                count += 1
            message.count = count
        self.master_count = count
        self.held = stream.held
        if self.history:  # what an ack of the whole copy says (earlier messages' numbers are not kept)
            self.history[-1].number = stream.held
        self.chat_only = stream.chat
        lineage = {int(e): list(entry) for e, entry in stream.lineage.items()}
        lineage[stream.writer_epoch] = [stream.seq, None]
        # A slave away for longer than LINEAGE_EPOCHS takeovers resyncs: the record stays small.
        self.lineage = {e: lineage[e] for e in sorted(lineage)[-LINEAGE_EPOCHS:]}
        self._open_lineage = any(entry[1] is None for entry in self.lineage.values())

    def slave_slots_used(self) -> int:
        """Slaves that hold a place: connected, or joined / gone less than the grace ago (they may
        still connect or come back with their token).  Released records hold none."""
        return len(self.slaves)

    def release_idle_slaves(self, now: float, grace_s: float) -> list:
        """Forget slaves not connected for ``grace_s``: their tokens stop working and their places
        are free (a page reload joins again or resumes within the grace).  Returns those released."""
        released = [record for record in self.slaves.values()
                    if record.peer is None and record.idle_since is not None and now - record.idle_since >= grace_s]
        for record in released:
            self._release(record)
        return released

    def refuse_unadmitted(self, now: float, timeout_s: float) -> list:
        """Slaves still waiting for the master's answer after ``timeout_s``: closed (4403), released."""
        late = [record for record in self.slaves.values()
                if not record.admitted and now - record.joined_at >= timeout_s]
        for record in late:
            self._refuse(record, "the master did not admit this slave in time")
        return late

    def _release(self, record: SlaveRecord) -> None:
        self.slaves.pop(record.slave_id, None)
        self.slaves_by_digest.pop(record.digest, None)
        self._changed()

    def _refuse(self, record: SlaveRecord, reason: str) -> None:
        peer = record.peer
        self._release(record)
        if peer is not None:
            record.peer = None
            peer.session = None
            peer.clear()
            peer.close(CloseCode.JOIN_REFUSED, reason)
        if self.master is not None:
            self.master.push_within_bound(relay_message(
                "presence", {"event": "join-withdrawn", "slave": record.slave_id, "agent": record.agent_id}))

    def admit(self, slave_id, allow) -> Optional[Outgoing]:
        """The master's answer to a join request; an error message for the master, or None."""
        record = self.slaves.get(slave_id) if isinstance(slave_id, str) else None
        if record is None:
            return _error("unknown-slave", "no such slave in this session")
        if not isinstance(allow, bool):
            return _error("bad-admit", "admit body must be a map with 'slave' and 'admit' (true or false)")
        if record.admitted:
            return None  # already in: a repeated answer changes nothing
        if not allow:
            self._refuse(record, "refused by the master")
            return None
        record.admitted = True
        self._changed()
        peer = record.peer
        if peer is not None:
            self._let_in(record, peer, None, None)
        return None

    def role_of_token(self, token: Optional[str]):
        """(Role, SlaveRecord | None) for a token of this session, or (None, None)."""
        if not token:
            return None, None
        # Digests are compared, never tokens: a lookup by digest leaks nothing about how much of a
        # guessed token matched (changing one character changes the whole digest).
        digest = token_digest(token)
        if secrets.compare_digest(digest, self.master_digest):
            return Role.MASTER, None
        record = self.slaves_by_digest.get(digest)
        if record is not None:
            return Role.SLAVE, record
        return None, None

    def attach_master(self, peer: Peer, now: float) -> None:
        if self.ended:
            raise SessionEnded(self.ended)
        previous = self.master
        if previous is not None:
            previous.close(CloseCode.REPLACED, "replaced by a newer master connection")
        reconnect = self.master_ever_connected
        self.master = peer
        peer.session = self
        self.master_ever_connected = True
        self.master_left_at = None
        self.last_activity = now
        peer.push(relay_message("hello", self._hello(Role.MASTER, None, "none")))
        if reconnect:
            self._broadcast_presence({"event": "master-reconnected"})

    def attach_slave(self, record: SlaveRecord, peer: Peer, now: float, *, after: Optional[int] = None,
                     epoch: Optional[int] = None, master_count: Optional[int] = None) -> None:
        """Connect a slave and queue its catch-up before any live traffic."""
        if self.ended:
            raise SessionEnded(self.ended)
        previous = record.peer
        if previous is not None:
            previous.close(CloseCode.REPLACED, "replaced by a newer connection of this slave")
        if previous in self._slave_peers:
            self._slave_peers.remove(previous)
            self._stop_skipping(previous)
        record.peer = peer
        record.idle_since = None
        peer.slave = record
        peer.session = self
        self.last_activity = now
        if not record.admitted:
            # Nothing of the session until the master says so (SPEC 6, join_policy "approve").
            peer.push(relay_message("hello", self._hello(Role.SLAVE, record, "none")))
            if self.master is not None:
                self.master.push_within_bound(relay_message("presence", self._join_request(record)))
            return
        self._let_in(record, peer, after, epoch, master_count)

    def _let_in(self, record: SlaveRecord, peer: Peer, after: Optional[int], epoch: Optional[int],
                master_count: Optional[int] = None) -> None:
        """Put an admitted slave in the fan-out: hello, its catch-up, then live traffic.  A slave
        admitted while it waited gets a second hello: what follows it replaces its (empty) state."""
        self._slave_peers.append(peer)
        catch_up = self._catch_up(after, epoch, master_count)
        catchup = catch_up.how
        hello = self._hello(Role.SLAVE, record, catchup)
        hello["master_count"] = catch_up.master_count
        if catch_up.after is not None:
            hello["after"] = catch_up.after
        peer.push(relay_message("hello", hello))
        if catchup == "resync":
            peer.push(relay_message("resync", {"epoch": self.epoch, "seq": self.seq,
                                               "master_count": catch_up.master_count}))
        for message in catch_up.messages:
            peer.push(message)
        if catch_up.skip > self.master_count:  # the master has not re-sent all it has yet
            peer.skip_through = catch_up.skip
            self._skipping += 1
        peer.resync_pending = catchup != "resume"  # overflowing a catch-up means "cannot keep up"
        self._broadcast_presence({"event": "joined", "slave": record.slave_id, "agent": record.agent_id,
                                  "mode": record.mode})

    @staticmethod
    def _join_request(record: SlaveRecord) -> dict:
        return {"event": "join-request", "slave": record.slave_id, "agent": record.agent_id}

    def detach(self, peer: Peer, now: float) -> None:
        """A peer's connection is gone (or a long-poll client went silent)."""
        if peer.session is not self:
            return
        peer.session = None
        if peer is self.master:
            self.master = None
            self.master_left_at = now
            if not self.ended:
                self._broadcast_presence({"event": "master-left"})
        elif peer.slave is not None and peer.slave.peer is peer:
            record = peer.slave
            record.peer = None
            record.idle_since = now
            if not record.admitted:
                # Never seen by the slaves: only the master, which was asked, hears of it.
                if self.master is not None and not self.ended:
                    self.master.push_within_bound(relay_message(
                        "presence", {"event": "join-withdrawn", "slave": record.slave_id, "agent": record.agent_id}))
                return
            self._slave_peers.remove(peer)
            self._stop_skipping(peer)
            if not self.ended:
                self._broadcast_presence({"event": "left", "slave": record.slave_id, "agent": record.agent_id})

    def allow_connection(self, role: Role, record: Optional[SlaveRecord], now: float) -> Optional[float]:
        """None when this participant may connect (again) now, else the seconds to wait (HTTP 429)."""
        bucket = self._master_connects if role is Role.MASTER else record.connects
        if bucket.take(now):
            return None
        self.stats["reconnects_refused"] += 1
        return max(1.0, bucket.retry_after_s())

    def current_peer(self, role: Role, record: Optional[SlaveRecord]) -> Optional[Peer]:
        """The connection (either transport) that a token of this role has now, if any."""
        return self.master if role is Role.MASTER else record.peer

    def poll_peers(self) -> list:
        return [peer for peer in self.peers() if peer.transport == "poll"]

    def slaves_connected(self) -> int:
        return sum(1 for record in self.slaves.values() if record.peer is not None)

    def end(self, reason: str, *, code: int = CloseCode.SESSION_ENDED, announce: bool = True) -> None:
        """End the session here: tell every peer (unless ``announce`` is False: a node shutting
        down, after which the session may go on elsewhere), then close them with ``code``."""
        if self.ended:
            return
        if announce:
            self._broadcast_presence({"event": "ended", "reason": reason})
        self.ended = reason
        for peer in self.peers():
            peer.close(code, f"session ended: {reason}" if announce else reason)
        self.history.clear()
        self.history_bytes = 0

    # ------------------------------------------------------------------ traffic

    def from_master(self, peer: Peer, kind: str, body, now: float, number: int = 0) -> Optional[Outgoing]:
        """Route one envelope from the master.  Returns an error message for the sender, or None.

        ``number`` is the master's own number of a stream message (its envelope's seq; 0:
        unnumbered): a number already held is a re-send, dropped (docs/protocol.md 4b)."""
        if peer is not self.master or self.ended:
            return relay_message("error", {"code": "not-master", "message": "this connection is not the session's master"})
        self.last_activity = now
        if kind in NUMBERED_FROM_MASTER:
            if number:
                if number <= self.held:
                    self.stats["repeats_dropped"] += 1
                    return None
                if number > self.held + 1:
                    self.stats["number_gaps"] += 1
                    self._diverged()  # what was between is lost: nobody may skip it
                self.held = number
            else:
                self.held += 1
                if self._open_lineage:
                    self._diverged()  # not a re-send of anything: beyond the copy, the streams differ
        if kind in BROADCAST_FROM_MASTER:
            if kind == "snapshot":
                self.chat_only = False
            elif self.chat_only:
                return _error("chat-only", f"{kind} refused: this chat session has no page shared yet (send a snapshot)")
            self._publish(kind, body, MASTER_TAIL, from_master=True)
            return None
        if kind == "chat":
            self._publish(kind, body, MASTER_TAIL, from_master=True)
            return None
        if kind == "mode":
            return self._set_mode(body)
        if kind == "admit":
            try:
                request = msgpack.unpackb(body, raw=False)
                slave_id, allow = request["slave"], request["admit"]
            except Exception:
                return _error("bad-admit", "admit body must be a map with 'slave' and 'admit' (true or false)")
            return self.admit(slave_id, allow)
        return _error("unknown-kind", f"the master may not send {kind!r}")

    def from_slave(self, peer: Peer, kind: str, body, now: float) -> Optional[Outgoing]:
        """Route one envelope from a slave.  Returns an error message for the sender, or None."""
        record = peer.slave
        if record is None or record.peer is not peer or self.ended:
            return _error("not-attached", "this connection is not attached to the session")
        if not record.admitted:
            return _error("not-admitted", "the master has not admitted this slave yet")
        self.last_activity = now
        if kind in TO_MASTER_ANY_MODE or kind in TO_MASTER_WRITE_MODE:
            if kind in TO_MASTER_WRITE_MODE and record.mode != "write":
                self.stats["refused"] += 1
                return _error("write-mode-required", f"{kind} events need write mode, granted by the master")
            self._to_master(kind, body, record.tail)
            return None
        if kind == "chat":
            self._publish(kind, body, record.tail)
            return None
        if kind in BROADCAST_FROM_MASTER or kind == "mode":
            self.stats["refused"] += 1
            return _error("not-allowed", f"a slave may not send {kind!r}")
        return _error("unknown-kind", f"unknown kind {kind!r}")

    def _publish(self, kind: str, body, tail: bytes, *, from_master: bool = False) -> Outgoing:
        """Give the next seq, keep in history, queue for every receiver: built once, shared.
        ``tail`` is the sender's stamp; the master does not receive back what it sent."""
        self.seq += 1
        message = Outgoing(kind, self.seq, body, tail)
        if from_master:
            self.master_count += 1
        message.count = self.master_count
        message.number = self.held
        self._remember(message)
        if not self.copy_dirty and self.on_stream is not None:
            self.copy_dirty = True
            self.on_stream(self)
        size = message.size
        cost = message.cost
        receivers = 0
        if self._skipping and from_master:
            self._passed(message.count)
        for peer in self._slave_peers:
            # The common case inline (this loop runs for every slave of every message).
            if peer.close_code is None and peer.queued_bytes + cost <= peer.limit:
                peer.queue.append(message)
                peer.queued_bytes += cost
                peer.wakeup()
                receivers += 1
            elif self._deliver_past_bound(peer, message):
                receivers += 1
        master = self.master
        if master is not None and not from_master:
            # What the master receives (chat, presence) must not grow without bound if it stops
            # reading; it is never closed for that (slaves could then push it out with chat).
            if master.push_within_bound(message):
                receivers += 1
            else:
                self.stats["dropped_to_master"] += 1
        self.messages_out += receivers
        self.bytes_out += receivers * size
        self.published[kind] += 1
        if self._observer is not None:
            self._observer(self, kind, message.seq, message.size)
        return message

    def _passed(self, count: int) -> None:
        """The stream reached master count ``count``: slaves that had up to there have it all again."""
        for peer in self._slave_peers:
            if peer.skip_through and peer.skip_through <= count:
                self._stop_skipping(peer)

    def _stop_skipping(self, peer: Peer) -> None:
        if peer.skip_through:
            peer.skip_through = 0
            self._skipping -= 1

    def _diverged(self) -> None:
        """The master's stream stops being a re-send of what earlier epochs' slaves saw: from the next
        master message on, a slave that resumes from such an epoch past the copy must resync."""
        point = self.master_count + 1
        for entry in self.lineage.values():
            if entry[1] is None:
                entry[1] = point
        self._open_lineage = False
        if not self._skipping:
            return
        for peer in list(self._slave_peers):
            if peer.skip_through >= point:
                self._stop_skipping(peer)
                self.stats["resyncs"] += 1
                self._resync_peer(peer, "diverged")

    def _to_master(self, kind: str, body, tail: bytes) -> None:
        master = self.master
        # Events are about the page as it is now: with no master, or one that does not read, they
        # are worth nothing later, and they must not grow memory.  (The envelope header is at most
        # ENVELOPE_HEAD_MAX_BYTES: the check needs no message built for an event it drops.)
        if master is None or master.queued_bytes + len(body) + ENVELOPE_HEAD_MAX_BYTES + MESSAGE_OVERHEAD_BYTES > master.limit:
            self.stats["dropped_to_master"] += 1
            return
        self.inbox_seq += 1
        message = Outgoing(kind, self.inbox_seq, body, tail)
        master.push(message)
        self.messages_out += 1
        self.bytes_out += message.size
        self.published[kind] += 1
        if self._observer is not None:
            self._observer(self, kind, message.seq, message.size)

    def _remember(self, message: Outgoing) -> None:
        if message.kind == "snapshot":
            self.history = [message]
            self.history_base_count = message.count - 1
            self.history_bytes = message.cost
            self.history_complete = True
            self.snapshot_requested = False
            return
        if not self.history_complete:
            return  # nothing consistent to add to until the next snapshot
        self.history.append(message)
        self.history_bytes += message.cost
        snapshot_bytes = self.history[0].cost if self.history[0].kind == "snapshot" else 0
        backlog = self.history_bytes - snapshot_bytes
        if backlog > self.config.backlog_bytes and not self.snapshot_requested and self.master is not None:
            self.snapshot_requested = True
            self.stats["snapshot_requests"] += 1
            self.master.push(relay_message("resync", {"reason": "backlog", "epoch": self.epoch, "seq": self.seq}))
        if self.history_bytes > self.config.history_hard_limit_bytes:
            # Too much to replay: late joiners will wait for the snapshot asked for above.
            self.history = []
            self.history_bytes = 0
            self.history_complete = False
            self.stats["history_cut"] += 1

    def _deliver_past_bound(self, peer: Peer, message: Outgoing) -> bool:
        """A slave that is closing, or whose queue would pass its byte bound: resync it (the
        catch-up includes ``message``), or close it with 1013 if it is already catching up.
        Returns whether ``message`` was queued for it."""
        if peer.closing:
            return False
        if peer.resync_pending:
            self.stats["slow_closed"] += 1
            self.stats["dropped_stale"] += len(peer.queue)
            peer.clear()
            peer.close(CloseCode.TRY_AGAIN_LATER, "slave cannot keep up with the session")
            return False
        # ``message`` is already in the history, so the catch-up below includes it.
        self.stats["resyncs"] += 1
        self._resync_peer(peer, "slow")
        if peer.queued_bytes > peer.limit:
            self.stats["slow_closed"] += 1
            self.stats["dropped_stale"] += len(peer.queue)
            peer.clear()
            peer.close(CloseCode.TRY_AGAIN_LATER, "slave cannot keep up with the session")
            return False
        return True

    def _resync_peer(self, peer: Peer, reason: str) -> None:
        """Drop what is queued for a slave and queue ``resync``, the latest snapshot and what followed."""
        self.stats["dropped_stale"] += len(peer.queue)
        peer.clear()
        self._stop_skipping(peer)
        peer.push(relay_message("resync", {"epoch": self.epoch, "seq": self.seq, "reason": reason,
                                           "master_count": self.history_base_count}))
        for item in self._catch_up(None, None).messages:
            peer.push(item)
        peer.resync_pending = True

    def ack_held(self) -> None:
        """Without a failover copy (one node, or ``failover_copy = false``), ack what the session
        holds, at most once per sweep and only when it grew: a master's re-send window then keeps no
        more than a sweep's worth of messages (a reconnect to this node needs nothing older)."""
        if self.master is not None and self.held > self.acked_held:
            self.acked_held = self.held
            self.master.push_within_bound(self.ack(self.seq, self.held))

    def ack(self, seq: int, held: int) -> Outgoing:
        """The master's ``ack`` (docs/protocol.md 4b): the failover copy holds the stream up to ``seq``
        and the master's messages numbered up to ``held``."""
        return relay_message("ack", {"seq": seq, "held": held})

    def _set_mode(self, body) -> Optional[Outgoing]:
        try:
            request = msgpack.unpackb(body, raw=False)
            slave_id = request["slave"]
            mode = request["mode"]
        except Exception:
            return _error("bad-mode", "mode body must be a map with 'slave' and 'mode'")
        if mode not in ("pointer", "write"):
            return _error("bad-mode", "mode must be 'pointer' or 'write'")
        record = self.slaves.get(slave_id) if isinstance(slave_id, str) else None
        if record is None:
            return _error("unknown-slave", "no such slave in this session")
        record.mode = mode
        self._changed()
        self._broadcast_presence({"event": "mode", "slave": record.slave_id, "agent": record.agent_id, "mode": mode})
        return None

    def _broadcast_presence(self, event: dict) -> None:
        self._publish("presence", pack_body(event), RELAY_TAIL)

    # ------------------------------------------------------------------ catch-up

    def _catch_up(self, after: Optional[int], epoch: Optional[int], master_count: Optional[int] = None) -> "CatchUp":
        """What a slave that knows the stream up to ``after`` (None: nothing) of ``epoch`` receives."""
        history = self.history
        skip = 0
        if after is not None and epoch is not None and epoch != self.epoch:
            entry = self.lineage.get(epoch)
            if entry is None:
                after = -1  # another stream: nothing it has can be continued
            elif after > entry[0]:
                # It saw messages of ``epoch`` that the copy had not got: they are gone, except the
                # master's, which the master re-sends; it is left out of what it already has.
                diverged_at = entry[1]
                if master_count is None or (diverged_at is not None and master_count >= diverged_at):
                    after = -1
                else:
                    after, skip = entry[0], master_count
        if after is not None and after >= 0:
            if after == self.seq:
                return CatchUp("resume", [], after, self._count_at(after), skip)
            if history and self.history_complete and history[0].seq <= after + 1 <= self.seq:
                return CatchUp("resume", history[after + 1 - history[0].seq:], after, self._count_at(after), skip)
            if skip and history and self.history_complete and history[0].kind == "snapshot" and history[0].count <= skip:
                # The history starts at a snapshot it already has (re-sent): it leaves that out too.
                return CatchUp("resume", list(history), history[0].seq - 1, self.history_base_count, skip)
        if not self.history_complete:
            return CatchUp("pending", [], None, self.master_count, 0)
        how = "full" if after is None else "resync"
        return CatchUp(how, list(history), None, self.history_base_count, 0)

    def _count_at(self, seq: int) -> int:
        """The master count as of stream message ``seq`` (the live count for the latest)."""
        history = self.history
        if seq >= self.seq or not history:
            return self.master_count
        index = seq - history[0].seq
        if index < 0:
            return self.history_base_count
        return history[index].count

    def _hello(self, role: Role, record: Optional[SlaveRecord], catchup: str) -> dict:
        hello = {
            "role": role.value,
            "session": self.id,
            "epoch": self.epoch,
            "seq": self.seq,
            "catchup": catchup,
            "chat": self.chat_only,
        }
        if record is not None:
            hello["slave"] = record.slave_id
            hello["mode"] = record.mode
        else:
            hello["mode"] = "write"
            hello["held"] = self.held  # the master re-sends what it numbered beyond this (docs/protocol.md 4b)
            hello["slaves"] = [
                {"slave": r.slave_id, "agent": r.agent_id, "mode": r.mode}
                for r in self.slaves.values() if r.peer is not None and r.admitted
            ]
            # Join requests still unanswered (asked while the master was away, or again after a reload).
            hello["pending"] = [{"slave": r.slave_id, "agent": r.agent_id}
                                for r in self.slaves.values() if not r.admitted]
        if record is not None:
            hello["admitted"] = record.admitted
        return hello

    def peers(self):
        if self.master is not None:
            yield self.master
        for record in self.slaves.values():
            if record.peer is not None:
                yield record.peer

    def describe(self) -> dict:
        """For the admin endpoint: counts only, no content."""
        return {
            "session": self.id,
            "epoch": self.epoch,
            "seq": self.seq,
            "chat": self.chat_only,
            "master_connected": self.master is not None,
            "slaves": len(self.slaves),
            "slaves_connected": self.slaves_connected(),
            "history_messages": len(self.history),
            "history_bytes": self.history_bytes,
        }


class CatchUp(NamedTuple):
    """A slave's catch-up: ``how`` (full, resume, resync, pending), the ``messages`` to queue, the
    seq they continue from (``after``, resume only), the master count before them and the slave's
    own count when it is ahead of that (``skip``: it leaves out re-sends up to there; 0: none)."""

    how: str
    messages: list
    after: Optional[int]
    master_count: int
    skip: int


def _error(code: str, message: str) -> Outgoing:
    return relay_message("error", {"code": code, "message": message})
