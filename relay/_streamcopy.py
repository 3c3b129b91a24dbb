"""The failover copy: each hosted session's stream, copied to Redis behind the fan-out (issue 11).

A takeover loads the copy (``load_stream``) and the session goes on from where the copy ends:
slaves resume, the master re-sends only what the copy had not got (docs/protocol.md 4b).

* **Never in the way.**  ``Session._publish`` only marks the session (``on_stream``, once until the
  next batch); :class:`StreamCopier` wakes, waits ``COPY_BATCH_S`` so that messages gather, and
  writes every marked session's new messages in one pipeline of fenced Lua scripts
  (relay/_statestore.py ``COPY_APPEND``).  No message waits for Redis before reaching the slaves.
* **What is copied** is the history itself (the latest snapshot and what followed, the same that
  catch-up serves): a new snapshot replaces the copy, so it is trimmed at each one.  Items are the
  delivered envelopes; one larger than ``COPY_INLINE_BYTES`` goes to its own key first, sent from
  the message's own buffers (relay/_blobwriter.py: never a copy in memory).
* **Acknowledgements.**  After a batch is in, the master gets one ``ack`` per session (the copy's
  last seq and the master's number as of it): it may forget what it kept up to there.
* **Bounded lag.**  While Redis is slow or away the copy falls behind.  Past ``copy_lag_bytes`` or
  ``copy_lag_s`` (Config) the copy is given up (``relay_copy_fallbacks``) and dropped from Redis: a
  takeover then starts an empty stream (the master sends a snapshot, slaves resync).  It is made
  again, whole, as soon as the history fits within the bound and Redis answers.
* **Fenced.**  Every write checks the session's host and epoch inside Redis: a node that lost the
  session (paused, cut off) can never write its copy again.
"""

from __future__ import annotations

import logging
from typing import Optional

import trio

from relay._accel import peek_envelope
from relay._closecodes import CloseCode
from relay._logging import log_event
from relay._session import MASTER_TAIL, RELAY_TAIL, Outgoing, Session, StreamState
from relay._statestore import BLOB_MARKER, COPY_NO_RECORD, WRITE_LOST, WRITE_OK, StoreUnavailable

__all__ = ["StreamCopier", "CopyCursor", "encode_item", "decode_item", "load_stream", "COPY_BATCH_S"]

log = logging.getLogger("relay.streamcopy")

COPY_BATCH_S = 0.05  # messages gather this long into one pipeline (and one ack per session)
COPY_RETRY_S = 0.5  # after Redis failed a batch
# Larger messages are written to their own key, from their own views (relay/_blobwriter.py); smaller
# ones go into the script's arguments (coredis copies those, which is cheap at this size).
COPY_INLINE_BYTES = 32 * 1024
COPY_ROUND_BYTES = 16 * 1024 * 1024  # one batch writes at most this much; the rest goes in the next
# What an item costs Redis besides its bytes (a list node, a script argument): counted against the
# round's budget, so that a flood of tiny messages cannot make one script run for long.
COPY_ITEM_OVERHEAD_BYTES = 64
COPY_SCRIPT_ITEMS = 4096  # items per session per script call


class CopyCursor:
    """How far a session's copy in Redis goes: ``base_seq`` (its first seq; None: nothing there),
    ``copied_seq``, the history bytes it holds, since when messages wait for it, and ``off`` (the
    reason it was given up, until it is made whole again)."""

    __slots__ = ("base_seq", "copied_seq", "copied_bytes", "waiting_since", "off", "drop_pending")

    def __init__(self) -> None:
        self.base_seq: Optional[int] = None
        self.copied_seq = 0
        self.copied_bytes = 0
        self.waiting_since: Optional[float] = None
        self.off: Optional[str] = None
        self.drop_pending = False


def encode_item(message: Outgoing) -> bytes:
    """A message as one item of the copy: the envelope exactly as delivered."""
    return b"".join(message.envelope())


def decode_item(data) -> Outgoing:
    """The message back from an item (EnvelopeError if it is not one).  The body is a view of
    ``data``, which it keeps alive."""
    kind, seq, body_offset, body_end = peek_envelope(data)
    view = memoryview(data)
    tail = bytes(view[body_end:])
    # Shared stamps are shared objects again: the session recognises the master's by identity.
    if tail == MASTER_TAIL:
        tail = MASTER_TAIL
    elif tail == RELAY_TAIL:
        tail = RELAY_TAIL
    return Outgoing(kind, seq, view[body_offset:body_end], tail)


def stream_from_copy(meta: dict, items: list) -> Optional[StreamState]:
    """The StreamState a takeover continues from, or None if the copy cannot be used."""
    try:
        messages = [decode_item(item) for item in items]
        seq = int(meta["seq"])
        if messages and (messages[-1].seq != seq or any(b.seq != a.seq + 1 for a, b in zip(messages, messages[1:]))):
            return None  # not consecutive: never continue from a copy with a hole
        return StreamState(seq=seq, base_count=int(meta["base_count"]), held=int(meta["held"]),
                           chat=bool(meta["chat"]), writer_epoch=int(meta["writer"]),
                           lineage={int(e): [int(v[0]), None if v[1] is None else int(v[1])]
                                    for e, v in dict(meta.get("lineage", {})).items()},
                           messages=messages)
    except Exception as exc:  # a malformed meta, or a corrupt item (EnvelopeError)
        log_event(log, logging.WARNING, "copy.unreadable", detail=repr(exc))
        return None


async def load_stream(store, session_id: str, previous_epoch: int) -> Optional[StreamState]:
    """The copy of a session whose host (at ``previous_epoch``) is gone, if it can be continued: it
    must have been written (or taken over) at that very epoch, so a host that took the session over
    and died before it said so leaves no doubt about which stream its slaves saw."""
    meta, items = await store.load_copy(session_id)
    if meta is None or int(meta.get("writer", -1)) != previous_epoch:
        return None
    return stream_from_copy(meta, items)


def stream_meta(session: Session, last: Outgoing) -> dict:
    """What the record says of the copy once the items up to ``last`` are in."""
    history = session.history
    return {
        "writer": session.epoch,
        "seq": last.seq,
        "base_count": session.history_base_count,
        "held": last.number,
        # chat_only changes only at a snapshot, and a snapshot starts the history.
        "chat": False if history and history[0].kind == "snapshot" else session.chat_only,
        "lineage": {str(e): v for e, v in session.lineage.items()},
    }


class StreamCopier:
    """Copies the streams of the sessions this node hosts (``watch``) to Redis, batched."""

    def __init__(self, store, node: str, config, metrics, *, on_lost, on_no_record, ttl_s: float) -> None:
        self.store = store
        self.node = node
        self.config = config
        self.metrics = metrics
        self._on_lost = on_lost  # (session) -> None: another node holds a newer epoch
        self._on_no_record = on_no_record  # (session) -> None: the record is gone; write it again
        self.ttl_s = ttl_s
        self._pending: dict = {}  # session id -> Session with news for the copy
        self._event = trio.Event()

    # ------------------------------------------------------------------ sessions

    def watch(self, session: Session, *, loaded: bool = False) -> None:
        """Copy this session's stream from now on; ``loaded``: Redis holds its history already
        (it was just taken over from the copy)."""
        cursor = CopyCursor()
        if loaded and session.history:
            cursor.base_seq = session.history[0].seq
            cursor.copied_seq = session.seq
            cursor.copied_bytes = session.history_bytes
        session.copy = cursor
        session.on_stream = self._marked
        session.copy_dirty = False
        if session.history and not loaded:
            self._marked(session)

    def _marked(self, session: Session) -> None:
        cursor = session.copy
        if cursor.waiting_since is None:
            cursor.waiting_since = trio.current_time()
        self._pending[session.id] = session
        self._event.set()

    def forget(self, session: Session) -> None:
        self._pending.pop(session.id, None)
        session.on_stream = None

    def rewrite(self, session: Session) -> None:
        """Write the whole history again (Redis lost the copy)."""
        if session.copy is not None:
            session.copy.base_seq = None
            self._marked(session)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        while True:
            await self._event.wait()
            await trio.sleep(COPY_BATCH_S)  # let messages gather into one pipeline
            self._event = trio.Event()
            pending, self._pending = self._pending, {}
            try:
                await self._write(list(pending.values()))
            except StoreUnavailable as exc:
                log_event(log, logging.DEBUG, "copy.store_unavailable", detail=str(exc))
                await self._retry_later(pending)
            except Exception:
                # relay's own bug, never a reason to stop the node: the sessions keep flowing, and
                # their copies fall past their bound if it happens again and again.
                log.exception("copy.internal_error")
                await self._retry_later(pending)

    async def _retry_later(self, pending: dict) -> None:
        for session in pending.values():
            if not session.ended and session.id not in self._pending:
                self._pending[session.id] = session
        await trio.sleep(COPY_RETRY_S)
        self._check_bounds(trio.current_time())
        self._event.set()

    def _check_bounds(self, now: float) -> None:
        """While Redis fails, give up the copies that waited past their bound."""
        for session in list(self._pending.values()):
            cursor = session.copy
            if cursor.off is None and cursor.waiting_since is not None and now - cursor.waiting_since > self.config.copy_lag_s:
                self._give_up(session, "time")

    def _give_up(self, session: Session, reason: str) -> None:
        cursor = session.copy
        cursor.off = reason
        cursor.base_seq = None
        cursor.drop_pending = True
        self.metrics.copy_fallbacks.labels(reason).inc()
        log_event(log, logging.WARNING, "copy.given_up", session=session.id, reason=reason,
                  detail="a takeover of this session would start from a snapshot; the copy restarts once it fits")

    def _plan(self, session: Session, now: float, budget: int):
        """(reset, messages, meta) to write for ``session`` now, or None.  Synchronous: what it reads
        of the session is consistent (no await in between)."""
        cursor = session.copy
        session.copy_dirty = False
        history = session.history
        if not session.history_complete:
            if cursor.off is None:
                self._give_up(session, "history-cut")
            return None
        if not history:
            return None
        base = history[0].seq
        reset = cursor.base_seq != base
        lag_bytes = session.history_bytes - (0 if reset else cursor.copied_bytes)
        if cursor.off is not None:
            if session.history_bytes > self.config.copy_lag_bytes:
                return None  # still too far behind: stay off until a snapshot makes it fit
            reset = True
        elif lag_bytes > self.config.copy_lag_bytes:
            self._give_up(session, "bytes")
            return None
        elif cursor.waiting_since is not None and now - cursor.waiting_since > self.config.copy_lag_s:
            self._give_up(session, "time")
            return None
        start = 0 if reset else cursor.copied_seq + 1 - base
        if start >= len(history):
            cursor.waiting_since = None
            return None
        messages = []
        size = 0
        for message in history[start:]:
            cost = message.size + COPY_ITEM_OVERHEAD_BYTES
            if messages and (size + cost > budget or len(messages) >= COPY_SCRIPT_ITEMS):
                break
            messages.append(message)
            size += cost
        if start + len(messages) < len(history):
            session.copy_dirty = True  # the rest goes in the next batch
            self._pending[session.id] = session
        return reset, messages, stream_meta(session, messages[-1])

    async def _write(self, sessions: list) -> None:
        now = trio.current_time()
        budget = COPY_ROUND_BYTES
        writes = []
        planned = []
        drops = []
        for session in sessions:
            if session.ended or session.copy is None:
                continue
            if budget <= 0:  # this round is full: the next one takes it
                self._pending[session.id] = session
                continue
            plan = self._plan(session, now, budget)
            if session.copy.drop_pending:  # given up now or before: its copy must go
                drops.append(session)
            if plan is None:
                continue
            reset, messages, meta = plan
            budget -= sum(m.size + COPY_ITEM_OVERHEAD_BYTES for m in messages)
            planned.append((session, session.epoch, reset, messages, meta, session.copy.waiting_since))
        for session in drops:
            if await self.store.drop_copy(session.id, self.node, session.epoch):
                session.copy.drop_pending = False
        blobs = []
        for session, epoch, reset, messages, meta, waited_since in planned:
            items = []
            for message in messages:
                if message.size > COPY_INLINE_BYTES:
                    key = self.store.blob_key(session.id, epoch, message.seq)
                    blobs.append((key, message.envelope()))
                    items.append(BLOB_MARKER + key.encode())
                else:
                    items.append(encode_item(message))
            writes.append((session.id, epoch, reset, meta, items))
        await self.store.write_blobs(blobs, self.ttl_s)  # before the items that name them
        if self._pending:
            self._event.set()
        if not writes:
            return
        results = await self.store.append_copies(self.node, writes, self.ttl_s)
        done = trio.current_time()
        for (session, epoch, reset, messages, meta, waited_since), result in zip(planned, results):
            if session.epoch != epoch or session.ended:
                continue
            cursor = session.copy
            if result == WRITE_LOST:
                log_event(log, logging.WARNING, "cluster.session_lost", session=session.id, epoch=epoch,
                          detail="another node holds a newer epoch (copy)")
                self._on_lost(session)
                continue
            if result == COPY_NO_RECORD:
                cursor.base_seq = None
                self._on_no_record(session)
                self._marked(session)
                continue
            if result != WRITE_OK:
                continue
            written = sum(m.cost for m in messages)
            cursor.base_seq = messages[0].seq if reset else cursor.base_seq
            cursor.copied_bytes = written if reset else cursor.copied_bytes + written
            cursor.copied_seq = messages[-1].seq
            if cursor.off is not None:
                log_event(log, logging.INFO, "copy.restarted", session=session.id, seq=cursor.copied_seq)
                cursor.off = None
            if session.copy_dirty:
                cursor.waiting_since = done  # more followed meanwhile
            else:
                cursor.waiting_since = None
            self.metrics.copy_writes.inc()
            self.metrics.copy_bytes.inc(sum(m.size for m in messages))
            if waited_since is not None:
                self.metrics.copy_lag.observe(done - waited_since)
            master = session.master
            if master is not None:
                master.push_within_bound(session.ack(cursor.copied_seq, messages[-1].number))


def end_lost(host):
    """``on_lost`` for a SessionHost: the session moved; end it here without announcing it."""
    def lost(session: Session) -> None:
        host.end(session, "moved to another node", code=CloseCode.SERVICE_RESTART, announce=False)
    return lost
