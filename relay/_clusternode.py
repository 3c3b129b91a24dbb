"""This node's part in a cluster (SPEC 5): its lease, the live set, where a session lives, takeovers.

Facts shared by the nodes live in Redis (relay/_statestore.py); this module decides with them.

* **Lease.**  The node renews its lease every ``ttl / LEASE_RENEWALS_PER_TTL``.  While renewals
  succeed, :class:`Fence` ``valid_until`` is the start of the last successful renewal plus the TTL:
  before that moment no other node can have taken a session of ours over (its takeover needs our
  lease gone).  Past it, every session here stops (1012) before it serves another message: the
  fan-out checks the fence (relay/_endpoint.py), so a node that was paused longer than its lease
  (SIGSTOP, a VM freeze) serves nothing stale when it continues.
* **Redis down.**  When a renewal fails, the node asks its live peers (``GET /cluster`` on their
  private listeners) whether Redis is down for them too.  If at least one answers and every one
  that answers says so, nobody can take a session over (takeovers need Redis), so the fence is
  extended and running sessions keep flowing; otherwise this node may be the one cut off, and it
  lets the fence lapse.  A node takes a session over only after it has reached Redis without
  failure for a whole TTL, so that a host that was cut off with it has renewed its lease first.
* **Where a session lives** (:meth:`ClusterNode.locate`): here; at its recorded host while that
  host is live (forward); else at the first live node of the ring's successors of the session ID,
  which takes it over by a compare-and-set that raises the epoch (relay/_statestore.py).
* **Participants** are copied to Redis when they change (joins, admissions, modes), fenced by the
  epoch, batched every ``PUBLISH_INTERVAL_S``; a write that finds a newer epoch ends the session here.
* **The stream** is copied by relay/_streamcopy.py (``failover_copy``); a takeover continues it
  from the copy when the copy was written (or taken over) at the epoch it replaces.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import secrets
import string
from dataclasses import dataclass
from typing import Optional

import h11
import trio

from relay._closecodes import CloseCode
from relay._config import ConfigError
from relay._errors import HTTPError
from relay._fence import Fence
from relay._forward import connect
from relay._host import SESSION_ID_BYTES
from relay._logging import log_event
from relay._netio import Broken, Yielder, close_socket, recv, send_all
from relay._session import Session
from relay._statestore import REDIS_CALL_TIMEOUT_S, Claim, WRITE_LOST, WRITE_RECREATED, StateStore, StoreUnavailable
from relay._streamcopy import StreamCopier, end_lost, load_stream, stream_meta

__all__ = ["ClusterNode", "ClusterRefused", "Forward", "query_peer"]

log = logging.getLogger("relay.cluster")

LEASE_RENEWALS_PER_TTL = 4  # renewals per lease TTL: three may fail before the lease lapses
PUBLISH_INTERVAL_S = 0.05  # participant changes reach Redis within this (batched in one pipeline)
PUBLISH_RETRY_S = 0.5  # after a failed write
SESSION_RECORD_TTL_S = 300.0  # a session's record outlives its host by this, refreshed while hosted
RECORD_REFRESH_S = 60.0
PEER_QUERY_TIMEOUT_S = 0.5
# A peer asked whether it reaches Redis pings it now, this long at most (its own flag may be up to a
# renewal old: it must not say "ok" for a Redis that stopped answering a moment ago), and answers
# from that ping for PEER_PING_REUSE_S (every node asks at once when Redis stops).
PEER_PING_TIMEOUT_S = 0.3
PEER_PING_REUSE_S = 0.1
PEER_ANSWER_BYTES = 1024 * 1024
MAX_PENDING_CLAIMS = 10_000  # takeovers claimed whose copy is still to be loaded (ClusterNode._claimed)
STORE_RETRY_AFTER_S = 1  # Retry-After of a 503 while Redis is unreachable
STORE_UNREACHABLE = "the cluster's state store cannot be reached; retry"
SESSION_ID_CHARS = len(base64.urlsafe_b64encode(bytes(SESSION_ID_BYTES)).rstrip(b"="))
SESSION_ID_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


class ClusterRefused(ConfigError):
    """This node may not join the cluster (another ring version, cluster name, or its name is live)."""


@dataclass(frozen=True)
class Forward:
    """The session lives on ``node``; send the request to its private ``address``."""

    node: str
    address: str


class ClusterNode:
    peer_tls = None  # the client context for peers' private listeners when they speak TLS (set by the Server)

    def __init__(self, cluster, config, host, metrics) -> None:
        self.cluster = cluster
        self.config = config
        self.host = host
        self.metrics = metrics
        self.me = config.node_name
        if self.me not in cluster.nodes:
            raise ClusterRefused(f"node {self.me!r} is not in the cluster file (its nodes: {', '.join(cluster.nodes)})")
        self.ring = cluster.ring
        self.ttl_s = float(getattr(cluster, "lease_ttl_s", 5.0))
        self.renew_interval_s = self.ttl_s / LEASE_RENEWALS_PER_TTL
        self.ring_version = getattr(cluster, "ring_version", "")
        self.instance = secrets.token_hex(8)
        self.fence = Fence(on_lapse=self._fence_lapsed)
        self.live: set = set()
        self.store_ok = False
        self._healthy_since: Optional[float] = None  # trio time since which Redis answered every call
        self._dirty: set = set()
        self._dirty_event = trio.Event()
        self._ended: list = []  # (session_id, epoch) to delete from Redis
        self._locks: dict = {}
        # session id -> (epoch we claimed, the epoch it replaced): a takeover whose claim went in but
        # whose copy could not be loaded yet; the next request finishes it (bounded: one per session
        # this node claimed, and dropped when the session is hosted).
        self._claimed: dict = {}
        self._store: Optional[StateStore] = None
        self.copier: Optional[StreamCopier] = None
        self.degraded = False  # Redis down for every live peer too: the fence is extended
        self._pinged: tuple = (-math.inf, False)  # (when, reached): the last ping for a peer's question

    # ------------------------------------------------------------------ lifecycle

    def lease(self) -> dict:
        spec = self.cluster.nodes[self.me]
        return {"name": self.me, "public": spec.public, "private": spec.private, "cluster": self.cluster.name,
                "ring_version": self.ring_version, "instance": self.instance}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        store_spec = getattr(self.cluster, "state_store", None)
        options = {}
        if store_spec is not None:
            if getattr(store_spec, "sentinels", ()):
                options = dict(sentinels=tuple(store_spec.sentinels), service=store_spec.service, db=store_spec.db)
            else:
                options = dict(host=store_spec.host, port=store_spec.port, db=store_spec.db)
        async with StateStore(self.cluster.name, metrics=self.metrics, **options) as store:
            self._store = store
            if self.config.failover_copy:
                self.copier = StreamCopier(store, self.me, self.config, self.metrics, on_lost=end_lost(self.host),
                                           on_no_record=self._changed, ttl_s=SESSION_RECORD_TTL_S)
            await self._join()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._lease_loop)
                nursery.start_soon(self._publish_loop)
                if self.copier is not None:
                    nursery.start_soon(self.copier.run)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        try:
                            await store.drop_lease(self.me, self.instance)
                        except StoreUnavailable:
                            pass

    async def _join(self) -> None:
        """Take this node's lease, refusing to join a cluster that disagrees (SPEC 5)."""
        deadline = trio.current_time() + self.ttl_s + 1.0
        while True:
            started = trio.current_time()
            try:
                leases = await self._store.leases(list(self.cluster.nodes))
            except StoreUnavailable as exc:
                log_event(log, logging.WARNING, "cluster.store_unreachable", detail=str(exc),
                          hint="the node starts, but hosts nothing until Redis answers")
                return
            for name, lease in leases.items():
                if name == self.me:
                    continue
                if lease.get("cluster") != self.cluster.name:
                    raise ClusterRefused(f"node {name} is live in cluster {lease.get('cluster')!r}, "
                                         f"this node's file says {self.cluster.name!r}")
                if lease.get("ring_version") != self.ring_version:
                    raise ClusterRefused(f"node {name} runs ring version {lease.get('ring_version')}, this node's "
                                         f"cluster file has {self.ring_version}: every node must read the same file")
            own = leases.get(self.me)
            if own is None or own.get("instance") == self.instance:
                result = await self._store.renew_lease(self.me, self.lease(), self.ttl_s)
                if result != 0:
                    self._renewed(started, leases.keys() | {self.me})
                    return
            if trio.current_time() > deadline:
                raise ClusterRefused(f"a node named {self.me} is already live (lease held at {own.get('public')}): "
                                     "two live nodes may not share a name")
            # Our own name, from a previous run killed a moment ago: its lease lapses within a TTL.
            await trio.sleep(self.renew_interval_s)

    def _renewed(self, started: float, live) -> None:
        self.fence.valid_until = started + self.ttl_s
        self.live = set(live)
        if not self.store_ok:
            self._healthy_since = started
        self.store_ok = True
        self.degraded = False

    async def _lease_loop(self) -> None:
        while True:
            await trio.sleep(self.renew_interval_s)
            started = trio.current_time()
            if started > self.fence.valid_until and self.host.sessions:
                self._stop_hosting("lease lapsed")
            try:
                # A renewal may take up to half a TTL: a Redis that stopped answering is noticed, and
                # the peers asked, before the lease runs out, while a renewal that is only slow (a busy
                # machine) still counts (the fence runs from its start).  Shorter made a loaded node
                # give its sessions up for nothing (the chaos test, under load).
                timeout_s = min(self.ttl_s / 2, REDIS_CALL_TIMEOUT_S)
                result = await self._store.renew_lease(self.me, self.lease(), self.ttl_s, timeout_s)
                leases = await self._store.leases(list(self.cluster.nodes))
            except StoreUnavailable as exc:
                self.metrics.lease_renewals.labels("failed").inc()
                if self.store_ok:
                    log_event(log, logging.WARNING, "cluster.store_unreachable", detail=str(exc))
                self.store_ok = False
                self._healthy_since = None
                await self._maybe_degrade()
                continue
            if result == 0:
                self.metrics.lease_renewals.labels("lost").inc()
                log_event(log, logging.ERROR, "cluster.name_taken", node=self.me,
                          detail="another process holds this node's lease")
                self._stop_hosting("another process took this node's name")
                self.fence.valid_until = -math.inf
                continue
            if trio.current_time() > self.fence.valid_until and self.host.sessions:
                # The renewal answered after the lease ran out (a pause, a stall): others may have
                # taken our sessions over meanwhile.
                self._stop_hosting("lease lapsed")
            if result == 2 and self.store_ok:
                # Redis lost our lease (restarted empty, or failed over): write our sessions again.
                log_event(log, logging.WARNING, "cluster.lease_retaken", node=self.me)
                self._dirty.update(self.host.sessions)
                self._dirty_event.set()
            was_ok = self.store_ok
            self.metrics.lease_renewals.labels("ok").inc()
            self._renewed(started, leases.keys())
            if not was_ok:
                log_event(log, logging.INFO, "cluster.store_back", node=self.me)
                self._dirty.update(self.host.sessions)  # the copy may have missed changes
                self._dirty_event.set()

    async def _maybe_degrade(self) -> None:
        """Redis did not answer: keep serving only if every live peer that answers cannot reach it either."""
        peers = [name for name in self.live if name != self.me]
        answers = {}

        async def ask(name):
            try:
                answers[name] = await query_peer(self.cluster.nodes[name].private, tls=self.peer_tls)
            except (OSError, Broken, ValueError, h11.ProtocolError, trio.TooSlowError):
                pass

        async with trio.open_nursery() as nursery:
            for name in peers:
                nursery.start_soon(ask, name)
        down_for_all = bool(answers) and all(a.get("state_store") == "unreachable" for a in answers.values())
        if down_for_all:
            if not self.degraded:
                log_event(log, logging.WARNING, "cluster.store_down_everywhere", node=self.me, peers=sorted(answers),
                          detail="running sessions keep flowing; creates and takeovers wait for Redis")
            self.degraded = True
            self.fence.valid_until = trio.current_time() + self.ttl_s
        else:
            self.degraded = False

    def _fence_lapsed(self) -> None:
        if self.host.sessions:
            self._stop_hosting("lease lapsed")

    def _stop_hosting(self, reason: str) -> None:
        count = len(self.host.sessions)
        self.host.end_all(reason, code=CloseCode.SERVICE_RESTART, announce=False)
        log_event(log, logging.WARNING, "cluster.stopped_hosting", node=self.me, reason=reason, sessions=count)

    # ------------------------------------------------------------------ participants in Redis

    def adopt(self, session: Session, *, loaded: bool = False) -> None:
        """Watch a session hosted here: its participant changes and its stream are copied to Redis
        (``loaded``: Redis holds its stream already, it was just taken over from the copy)."""
        session.fence = self.fence
        session.on_change = self._changed
        if self.copier is not None:
            self.copier.watch(session, loaded=loaded)

    def _changed(self, session: Session) -> None:
        self._dirty.add(session.id)
        self._dirty_event.set()

    def session_ended(self, session: Session, announce: bool) -> None:
        """A session ended here; if it really ended (not a shutdown or a lost lease), forget it in Redis."""
        self._dirty.discard(session.id)
        if self.copier is not None:
            self.copier.forget(session)
        if announce:
            self._ended.append((session.id, session.epoch))
            self._dirty_event.set()

    async def _publish_loop(self) -> None:
        last_refresh = trio.current_time()
        while True:
            with trio.move_on_after(RECORD_REFRESH_S / 4):
                await self._dirty_event.wait()
            await trio.sleep(PUBLISH_INTERVAL_S)  # let changes gather into one pipeline
            self._dirty_event = trio.Event()
            refresh = trio.current_time() - last_refresh >= RECORD_REFRESH_S
            if not await self._publish(refresh):
                await trio.sleep(PUBLISH_RETRY_S)
                self._dirty_event.set()
            elif refresh:
                last_refresh = trio.current_time()

    async def _publish(self, refresh: bool) -> bool:
        """One batch of fenced writes; False if Redis did not take it (it is kept for the next)."""
        dirty, self._dirty = self._dirty, set()
        ended, self._ended = self._ended, []
        writes = []
        for session_id, session in list(self.host.sessions.items()):
            if session_id in dirty:
                writes.append((session_id, session.epoch, session.participants_record()))
            elif refresh:
                writes.append((session_id, session.epoch, None))
        try:
            results = await self._store.write_sessions(self.me, writes, SESSION_RECORD_TTL_S)
            for session_id, epoch in ended:
                await self._store.end_session(session_id, self.me, epoch)
        except StoreUnavailable:
            self._dirty |= dirty
            self._ended = ended + self._ended
            return False
        for (session_id, epoch, _record), result in zip(writes, results):
            session = self.host.sessions.get(session_id)
            if result == WRITE_RECREATED and session is not None and self.copier is not None:
                self.copier.rewrite(session)  # Redis lost everything: the copy too
            if result == WRITE_LOST and session is not None and session.epoch == epoch:
                log_event(log, logging.WARNING, "cluster.session_lost", session=session_id, epoch=epoch,
                          detail="another node holds a newer epoch")
                self.host.end(session, "moved to another node", code=CloseCode.SERVICE_RESTART, announce=False)
        return True

    # ------------------------------------------------------------------ create, locate, take over

    def check_can_host(self) -> None:
        """HTTPError 503 unless this node holds a valid lease and reaches Redis (a create needs both)."""
        if not self.store_ok or trio.current_time() > self.fence.valid_until:
            raise _cannot_create()

    async def record_new(self, session: Session) -> None:
        """Record a session just created here (epoch 1); HTTPError 503 if Redis cannot take it.
        (The create checked ``check_can_host`` before minting the session.)"""
        try:
            created = await self._store.create_session(session.id, self.me, session.participants_record(),
                                                       SESSION_RECORD_TTL_S)
        except StoreUnavailable:
            raise _cannot_create() from None
        if not created:  # an ID collision (2**-128) or a record that outlived its session
            raise HTTPError(503, "session-id-taken", "retry", [("retry-after", "0")])
        self.adopt(session)

    async def persist(self, session: Session) -> None:
        """Write a session's participants now (after a join), best effort: on failure it stays queued."""
        if session.id in self._dirty:
            self._dirty.discard(session.id)
            try:
                results = await self._store.write_sessions(
                    self.me, [(session.id, session.epoch, session.participants_record())], SESSION_RECORD_TTL_S)
            except StoreUnavailable:
                self._changed(session)
                return
            if results and results[0] == WRITE_LOST:
                self.host.end(session, "moved to another node", code=CloseCode.SERVICE_RESTART, announce=False)
                raise HTTPError(503, "session-moved", "the session moved to another node; retry",
                                [("retry-after", "1")])

    async def locate(self, session_id: str, *, forwarded: bool):
        """The local Session (hosted here, or taken over now), or a :class:`Forward`; HTTPError 404
        for an unknown session, 503 with Retry-After while it cannot be placed."""
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = trio.Lock()
        try:
            async with lock:
                return await self._locate(session_id, forwarded)
        finally:
            # Released to a waiter, the lock is held again at once: only a lock that nobody holds or
            # waits for may go, or a newcomer would make a second one and locate beside the holder.
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(session_id, None)

    def _unavailable(self, message: str) -> HTTPError:
        return HTTPError(503, "session-unavailable", message, [("retry-after", str(STORE_RETRY_AFTER_S))])

    async def _locate(self, session_id: str, forwarded: bool):
        session = self.host.get(session_id)
        if session is None and not is_session_id(session_id):
            # Not an ID any node mints: answered without asking Redis (a flood of made-up IDs costs
            # the state store nothing).
            raise HTTPError(404, "unknown-session", "no such session (unknown or ended)")
        if session is not None:
            if trio.current_time() <= self.fence.valid_until:
                return session
            self._stop_hosting("lease lapsed")
        try:
            facts = await self._store.session(session_id)
        except StoreUnavailable:
            raise self._unavailable(STORE_UNREACHABLE) from None
        if facts is None:
            raise HTTPError(404, "unknown-session", "no such session (unknown or ended)")
        if facts.host != self.me and facts.host not in self.live:
            # Our live set is at most one renewal old: look again before deciding the host is gone.
            try:
                self.live = set(await self._store.leases(list(self.cluster.nodes)))
            except StoreUnavailable:
                raise self._unavailable(STORE_UNREACHABLE) from None
        if facts.host != self.me and facts.host in self.live:
            return self._forward_to(facts.host, forwarded)
        if facts.host == self.me:
            # This node hosted it before it restarted: it takes it back itself (a new epoch), so that the
            # session stays where its clients' cookies point, even if the ring now gives its ID elsewhere.
            successor = self.me
        else:  # its host is gone: the first live successor in ring order takes it
            successor = next((node for node in self.ring.successors(session_id) if node in self.live), None)
        if successor is None:
            raise self._unavailable("no live node can host this session now; retry")
        if successor != self.me:
            return self._forward_to(successor, forwarded)
        now = trio.current_time()
        if now > self.fence.valid_until or (facts.host != self.me and (
                self._healthy_since is None or now - self._healthy_since < self.ttl_s)):
            # A host cut off with us has not had a whole TTL to renew its lease yet.  (When the host
            # is this node's name, that host is this process or its dead predecessor, whose lease
            # _join saw lapse: nobody else can be serving the session, no need to wait.)
            raise self._unavailable("the cluster is recovering its state store; retry")
        claimed = self._claimed.get(session_id)
        if claimed is not None and claimed[0] == facts.epoch and trio.current_time() - claimed[2] < SESSION_RECORD_TTL_S:
            # We won this epoch a moment ago but could not load the copy then (Redis too busy): go on
            # with that claim, not a new one (another epoch would make the copy look foreign).
            claim, previous_epoch = Claim(True, facts.epoch), claimed[1]
        else:
            try:
                claim = await self._store.take_over(session_id, facts.epoch, self.me)
            except StoreUnavailable:
                raise self._unavailable(STORE_UNREACHABLE) from None
            if not claim.taken:
                if claim.host and claim.host != self.me and claim.host in self.live:
                    return self._forward_to(claim.host, forwarded)
                raise self._unavailable("the session is moving; retry")
            previous_epoch = facts.epoch
            if len(self._claimed) >= MAX_PENDING_CLAIMS:
                self._claimed.pop(next(iter(self._claimed)))  # the oldest: its clients gave up long ago
            self._claimed[session_id] = (claim.epoch, previous_epoch, trio.current_time())
        stream = None
        try:
            if self.copier is not None:
                stream = await load_stream(self._store, session_id, previous_epoch)
            session = Session.restore(session_id, self.config, facts.record, epoch=claim.epoch,
                                      now=trio.current_time(), observer=self.host.observer,
                                      stream=stream if stream is not None and stream.messages else None)
            if self.copier is not None:
                # Say at once which stream this epoch continues, before anyone sees it: a takeover
                # after us must know whether our slaves saw the copy's stream or an empty one.
                if session.history:
                    result = await self._store.append_copies(
                        self.me, [(session_id, claim.epoch, False, stream_meta(session, session.history[-1]), [])],
                        SESSION_RECORD_TTL_S)
                    if result[0] == WRITE_LOST:
                        raise self._unavailable("the session is moving; retry")
                else:
                    await self._store.drop_copy(session_id, self.me, claim.epoch)
        except StoreUnavailable:
            raise self._unavailable(STORE_UNREACHABLE) from None
        except ValueError as exc:
            log_event(log, logging.ERROR, "cluster.record_unreadable", session=session_id, detail=str(exc))
            raise HTTPError(404, "unknown-session", "the session's record cannot be read") from None
        self._claimed.pop(session_id, None)
        existing = self.host.get(session_id)
        if existing is not None:  # (never with the lock above; a second Session would orphan clients)
            return existing
        self.host.add(session)
        self.adopt(session, loaded=bool(session.history))
        self.metrics.failovers.inc()
        if session.history:
            self.metrics.takeovers_from_copy.inc()
        log_event(log, logging.INFO, "cluster.took_over", session=session_id, epoch=claim.epoch,
                  previous_host=facts.host, continued_seq=session.seq if session.history else None)
        return session

    def _forward_to(self, node: str, forwarded: bool):
        if forwarded:  # never a second hop: the entry node's view was stale, the client retries
            raise self._unavailable(f"the session lives on {node}; retry")
        return Forward(node, self.cluster.nodes[node].private)

    # ------------------------------------------------------------------ the node's view

    async def describe_now(self) -> dict:
        """``describe()``, with whether Redis answers *now* (a ping, reused for PEER_PING_REUSE_S)."""
        view = self.describe()
        when, reached = self._pinged
        now = trio.current_time()
        if now - when > PEER_PING_REUSE_S and self._store is not None:
            try:
                await self._store.ping(PEER_PING_TIMEOUT_S)
                reached = True
            except StoreUnavailable:
                reached = False
            self._pinged = (trio.current_time(), reached)
        view["state_store"] = "ok" if reached and self.store_ok else "unreachable"
        return view

    def describe(self) -> dict:
        return {
            "node": self.me,
            "cluster_name": self.cluster.name,
            "partitioner": self.ring.partitioner,
            "ring_version": self.ring_version,
            "state_store": "ok" if self.store_ok else "unreachable",
            "degraded": self.degraded,
            "live": sorted(self.live),
            "lease_valid_s": max(0.0, round(self.fence.valid_until - trio.current_time(), 3))
            if math.isfinite(self.fence.valid_until) else 0.0,
            "sessions_hosted": len(self.host.sessions),
            "epochs": {sid: s.epoch for sid, s in self.host.sessions.items()},
        }


def _cannot_create() -> HTTPError:
    return HTTPError(503, "cluster-unavailable", STORE_UNREACHABLE, [("retry-after", str(STORE_RETRY_AFTER_S))])


def is_session_id(text: str) -> bool:
    """Whether ``text`` has the shape of the IDs SessionHost.mint_id makes (URL-safe base64, no padding)."""
    return len(text) == SESSION_ID_CHARS and all(c in SESSION_ID_ALPHABET for c in text)


async def query_peer(address: str, *, tls=None) -> dict:
    """``GET /cluster`` of a peer's private listener, as JSON (bounded in time and size; over TLS
    with the ``tls`` client context when the private listeners speak it)."""
    with trio.fail_after(PEER_QUERY_TIMEOUT_S):
        sock = await connect(address, PEER_QUERY_TIMEOUT_S, tls=tls)
        try:
            yielder = Yielder()
            await send_all(sock, b"GET /cluster HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n", yielder)
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="GET", target="/cluster", headers=[("host", "relay"), ("connection", "close")]))
            conn.send(h11.EndOfMessage())
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await recv(sock, 65536, yielder)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > PEER_ANSWER_BYTES:
                        raise ValueError("peer answer too large")
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            return json.loads(bytes(body))
        finally:
            close_socket(sock)
