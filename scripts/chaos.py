"""Chaos: kill -9 the hosts of live sessions again and again; nothing may be lost or applied twice.

    .venv/bin/python scripts/chaos.py [--seconds 300] [--sessions 4] [--slaves 3] [--seed S] [--json out.json]

It starts Debian's redis-server, three relay nodes (tests/cluster_nodes.py, lease TTL 2 s) and nginx running
the config of ``relay nginx-config``, all on loopback ports with their files in a temporary folder.  Every
client goes through nginx with its own cookie jar (the sticky cookie the nodes set), as a browser does:

* each session's master is a ``relay.Client`` connection with a ``ResendWindow`` (docs/protocol.md 4b): it
  sends a snapshot (0.5-5 MiB, random), then mutations (200 B - 50 KB) at a steady rate and now and then a
  new snapshot; after each reconnect its window re-sends what the relay lacks, or it sends a fresh snapshot
  when the stream does not continue (``resumed`` False: counted as a snapshot it had to send again);
* each slave reconnects with ``resume=`` and keeps a digest of its page: a snapshot starts it, each mutation
  extends it.  Every message carries the master's own unique number, and every mutation the digest of the
  page it applies to, so a slave sees at once a message lost (the digest it extends is not its own), applied
  twice or out of order (a number not above the last one applied); seqs must go up within each epoch;
* a killer picks a random session, kill -9s its host, restarts the node after a moment, and waits until
  every client of the sessions that host had is back on the new epoch with a first new message.  Then the
  masters pause and every slave's digest must equal its master's (bounded waits: a timeout is a failure
  that says who is where).  Per kill it records the takeovers (from the copy or from an empty stream, by
  the nodes' ``/metrics``), the hellos, what the masters re-sent against what a full snapshot re-send
  would cost (the sessions' latest snapshot sizes), and the time from the kill to each slave's first new
  message.

It prints a summary (``--json FILE`` writes it with every kill's record) and exits 1 when a check failed,
with the details and the node logs.  tests/integration/test_chaos.py runs a short version.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import re
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import msgpack
import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the real components' helpers, shared with the tests

import relay  # noqa: E402
from relay import ConnectionClosed, EnvelopeError, HTTPStatusError, ResendWindow  # noqa: E402
from relay._netio import close_socket  # noqa: E402

from cluster_nodes import ClusterNodes  # noqa: E402
from real_nginx import RealNginx  # noqa: E402
from real_redis import RedisServer  # noqa: E402

LEASE_TTL_S = 2.0
SNAPSHOT_MIN_BYTES = 512 * 1024
SNAPSHOT_MAX_BYTES = 5 * 1024 * 1024
MUTATION_MIN_BYTES = 200
MUTATION_MAX_BYTES = 50_000
DEFAULT_MUTATIONS_PER_S = 10.0  # per session
DEFAULT_SNAPSHOT_EVERY_S = 30.0  # a master's new snapshot, on average (0: only the first one)
DEFAULT_KILL_GAP_S = (3.0, 8.0)  # between a round's end (everything converged) and the next kill
DEFAULT_RESTART_AFTER_S = (0.5, 3.0)  # kill -9 to the restart of the node
RECONNECT_DELAY_S = 0.2  # a client's pause between attempts (nginx answers 502/503 while a session moves)
CONNECT_ATTEMPT_S = 15.0  # one connect attempt through nginx, handshake and hello included
BACK_TIMEOUT_S = 30.0  # kill to every client of the killed host's sessions back with a new message
CONVERGE_TIMEOUT_S = 30.0  # masters paused to every slave's digest equal to its master's
POLL_S = 0.05
TRACE_LENGTH = 40  # envelopes a slave remembers for a failure's details
TRACE_IN_HELLO = 6  # of them, kept with each hello (what came just before it)
#: Statuses a client may get while its session moves (nginx's upstream errors, the nodes' "not yet").
RETRYABLE_STATUSES = frozenset({502, 503, 504})
#: Close codes that end a client for good: none of them may happen here.
FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 4001, 4002, 4403})
SNAPSHOT_SEED = b"snapshot"
DIGEST_BYTES = 16
COOKIE_NAME = "gcbSessionServer"


class ChaosFailure(Exception):
    """A check failed: the message says which client, where in its stream, and what it expected."""


def page_digest(previous: Optional[bytes], kind: str, body: bytes) -> bytes:
    """The page after applying ``body``: a snapshot starts a page, a mutation extends ``previous``."""
    seed = SNAPSHOT_SEED if kind == "snapshot" else previous
    return hashlib.blake2b(seed + body, digest_size=DIGEST_BYTES).digest()


def percentile(values: list, fraction: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class Browser:
    """One client's cookie jar: every request and WebSocket goes through nginx with the cookie it was given."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: Optional[str] = None

    def client(self) -> relay.Client:
        return relay.Client("127.0.0.1", self.port, origin=f"http://127.0.0.1:{self.port}",
                            cookie=f"{COOKIE_NAME}={self.cookie}" if self.cookie else None)

    def keep(self, headers) -> None:
        for name, value in headers:
            if name.lower() == "set-cookie" and value.startswith(COOKIE_NAME + "="):
                self.cookie = value.split(";")[0].split("=", 1)[1]

    async def post(self, path: str, payload: dict) -> dict:
        client = self.client()
        status, headers, body = await client.request("POST", path, json.dumps(payload).encode(),
                                                     [("content-type", "application/json")])
        self.keep(headers)
        if status not in (200, 201):
            raise HTTPStatusError(status, json.loads(body) if body else {}, headers)
        return json.loads(body)

    async def connect(self, session_id: str, token: str, **options):
        with trio.fail_after(CONNECT_ATTEMPT_S):
            connection = await self.client().connect(session_id, token, **options)
            try:
                self.keep(connection.response_headers)
                if connection.window is None:
                    await connection.wait_for_hello()  # a slave's: receive() still returns it first
            except BaseException:
                close_socket(connection.sock)
                raise
        return connection


@dataclass
class Hello:
    at: float
    epoch: int
    continued: bool  # a master's hello.resumed; a slave's catchup == "resume"
    detail: dict


@dataclass
class Config:
    seconds: float
    sessions: int
    slaves: int
    seed: int
    kills: Optional[int] = None  # stop after this many kills (None: as many as fit in ``seconds``)
    mutations_per_s: float = DEFAULT_MUTATIONS_PER_S
    snapshot_every_s: float = DEFAULT_SNAPSHOT_EVERY_S
    kill_gap_s: tuple = DEFAULT_KILL_GAP_S
    restart_after_s: tuple = DEFAULT_RESTART_AFTER_S
    folder: Optional[str] = None  # keep the files there (else a temporary folder, removed)
    failover_copy: bool = True  # False: the nodes run without the copy (every takeover starts an empty stream)


class Run:
    """What every client shares: stop and pause, the failures, the random source."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.failures: list = []
        self.stopping = False
        self.paused = False
        self.resume_event = trio.Event()
        self.failed = trio.Event()
        self.started = time.monotonic()

    def fail(self, message: str) -> None:
        self.failures.append(f"[{time.monotonic() - self.started:7.2f} s] {message}")
        self.failed.set()

    def pause(self) -> None:
        self.paused = True
        self.resume_event = trio.Event()

    def resume(self) -> None:
        self.paused = False
        self.resume_event.set()

    def random_bytes(self, size: int) -> bytes:
        return self.rng.randbytes(size)


class Reconnecting:
    """What masters and slaves share: why their reconnect attempts failed (``self.retries``)."""

    def _retried(self, exc) -> None:
        """Why a reconnect attempt failed (the longest absences are printed with their reasons)."""
        if len(self.retries) < 50:
            self.retries.append((round(time.monotonic() - self.run.started, 2), str(exc)[:120]))


class Master(Reconnecting):
    """A session's master: numbered messages with a ResendWindow, reconnecting through nginx."""

    def __init__(self, run: Run, browser: Browser, name: str) -> None:
        self.run = run
        self.browser = browser
        self.name = name
        self.session = ""
        self.token = ""
        self.window = ResendWindow()
        self.connection = None
        self.epoch: Optional[int] = None
        self.digest: Optional[bytes] = None  # the page as the master has it: what every slave must reach
        self.uid = 0  # the master's own unique message number (never reused, unlike the window's numbers)
        self.snapshot_bytes = 0  # the latest snapshot's body: what a full re-send costs
        self.hellos: list = []
        self.snapshot_wanted = False  # the relay asked for one (resync "backlog")
        self.parked = False
        self.connected = trio.Event()
        self.sent_messages = 0
        self.sent_bytes = 0
        self.resent_messages = 0
        self.resent_bytes = 0
        self.snapshots_resent = 0  # after a hello that did not continue the stream, or among the re-sends
        self.snapshots_avoided = 0  # hellos after which the stream continued without a snapshot again
        self.connects = 0
        self.lost_at: Optional[float] = None
        self.away_s: list = []
        self.away_log: list = []  # (lost at, s away, why the attempts meanwhile failed)
        self.retries: list = []
        self.snapshots_resent_bytes = 0
        self.next_snapshot_at = math.inf

    def session_id(self) -> str:
        return self.session

    async def create(self) -> None:
        created = await self.browser.post("/cobrowse/sessions", {})
        self.session, self.token = created["session"], created["master_token"]

    def _plan_snapshot(self) -> None:
        every = self.run.config.snapshot_every_s
        self.next_snapshot_at = time.monotonic() + every * self.run.rng.uniform(0.5, 1.5) if every > 0 else math.inf

    def _body(self, kind: str) -> bytes:
        self.uid += 1
        rng = self.run.rng
        if kind == "snapshot":
            size = rng.randint(SNAPSHOT_MIN_BYTES, SNAPSHOT_MAX_BYTES)
            return msgpack.packb({"u": self.uid, "pad": self.run.random_bytes(size)})
        size = int(math.exp(rng.uniform(math.log(MUTATION_MIN_BYTES), math.log(MUTATION_MAX_BYTES))))
        return msgpack.packb({"u": self.uid, "prev": self.digest, "pad": self.run.random_bytes(size)})

    async def send(self, connection, kind: str) -> None:
        """Send one message; the page changes when the window took it (numbered and kept: it reaches the
        relay now, or again after the next hello, or a fresh snapshot replaces the page)."""
        if kind == "mutation" and self.digest is None:
            kind = "snapshot"
        body = self._body(kind)
        before = self.window.last_number
        try:
            await connection.send(kind, body)
        finally:
            if self.window.last_number > before:
                self.digest = page_digest(self.digest, kind, body)
                self.sent_messages += 1
                self.sent_bytes += len(body)
                if kind == "snapshot":
                    self.snapshot_bytes = len(body)
                    self.snapshot_wanted = False
                    self._plan_snapshot()

    async def connect(self) -> None:
        kept = self.window.kept
        connection = await self.browser.connect(self.session, self.token, window=self.window)
        hello = connection.hello
        self.connection, self.epoch = connection, connection.epoch
        self.hellos.append(Hello(time.monotonic(), connection.epoch, connection.resumed, dict(hello)))
        if connection.resumed:
            resent = [message for message in kept if message.seq > hello["held"]]
            self.resent_messages += len(resent)
            self.resent_bytes += sum(len(message.body) for message in resent)
            # A stream that continues from an older point (an empty one: no copy) replays a snapshot.
            snapshots = [message for message in resent if message.kind == "snapshot"]
            self.snapshots_resent += len(snapshots)
            self.snapshots_resent_bytes += sum(len(message.body) for message in snapshots)
            if not snapshots:
                self.snapshots_avoided += 1
        else:
            first = len(self.hellos) == 1
            await self.send(connection, "snapshot")
            if not first:
                self.snapshots_resent += 1
                self.snapshots_resent_bytes += self.snapshot_bytes
        self.connects += 1
        if self.lost_at is not None:
            self.away_s.append(time.monotonic() - self.lost_at)
            self.away_log.append((round(self.lost_at - self.run.started, 2), round(self.away_s[-1], 2), self.retries))
            self.retries = []
            self.lost_at = None
        self.connected.set()

    async def live(self) -> None:
        while not self.run.stopping:
            try:
                await self.connect()
            except HTTPStatusError as exc:
                if exc.status not in RETRYABLE_STATUSES:
                    self.run.fail(f"{self.name} (session {self.session_id()}, cookie {self.browser.cookie}): connect answered {exc}")
                    return
                self._retried(exc)
                await trio.sleep(RECONNECT_DELAY_S)
                continue
            except (ConnectionClosed, OSError, trio.TooSlowError) as exc:
                self._retried(exc)
                await trio.sleep(RECONNECT_DELAY_S)
                continue
            except EnvelopeError as exc:
                self.run.fail(f"{self.name}: the relay's hello is bad: {exc}")
                return
            await self._serve(self.connection)
            self.lost_at = time.monotonic()
            close_socket(self.connection.sock)
            await trio.sleep(RECONNECT_DELAY_S)

    async def _serve(self, connection) -> None:
        closed = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive, connection, closed)
            await self._send_loop(connection, closed)
            nursery.cancel_scope.cancel()

    async def _receive(self, connection, closed: trio.Event) -> None:
        try:
            while True:
                envelope = await connection.receive()  # acks trim the window inside
                if envelope.kind == "resync" and envelope.sender == "":
                    self.snapshot_wanted = True  # the backlog passed its bound: the relay wants a snapshot
        except ConnectionClosed as exc:
            if exc.code in FINAL_CLOSE_CODES:
                self.run.fail(f"{self.name}: closed for good: {exc.code} {exc.reason}")
        except EnvelopeError as exc:
            self.run.fail(f"{self.name}: bad envelope from the relay: {exc}")
        finally:
            closed.set()

    async def _send_loop(self, connection, closed: trio.Event) -> None:
        interval = 1.0 / self.run.config.mutations_per_s
        while not closed.is_set() and not self.run.stopping:
            if self.run.paused:
                self.parked = True
                await _first_of(self.run.resume_event.wait, closed.wait)
                self.parked = False
                continue
            kind = "snapshot" if self.snapshot_wanted or time.monotonic() >= self.next_snapshot_at else "mutation"
            try:
                await self.send(connection, kind)
            except ConnectionClosed:
                return
            with trio.move_on_after(interval):
                await closed.wait()


async def _first_of(*waits) -> None:
    async with trio.open_nursery() as nursery:
        async def one(wait):
            await wait()
            nursery.cancel_scope.cancel()
        for wait in waits:
            nursery.start_soon(one, wait)


class Slave(Reconnecting):
    """A slave with resume=: its page's digest, and every check of what it receives."""

    def __init__(self, run: Run, browser: Browser, master: Master, name: str) -> None:
        self.run = run
        self.browser = browser
        self.master = master
        self.name = name
        self.token = ""
        self.connection = None
        self.epoch: Optional[int] = None
        self.digest: Optional[bytes] = None
        self.last_uid: Optional[int] = None
        self.last_seq: dict = {}  # epoch -> the last seq received in it
        self.hellos: list = []
        self.applied = 0
        self.applied_bytes = 0
        self.replaced = 0  # states replaced after the first (a resync or a hello that is not a resume)
        self.replaced_at_uid: Optional[int] = None  # the last message applied before the state was replaced
        self.snapshots_again = 0  # replaced states that started again from a snapshot this slave had had
        self.replaced_by_newer = 0  # replaced states that started from a snapshot it had not had yet
        self.connects = 0
        self.lost_at: Optional[float] = None  # when its latest connection closed
        self.away_s: list = []  # connection closed to the next one open (a kill of its host or of a forwarder)
        self.away_log: list = []  # (lost at, s away, why the attempts meanwhile failed)
        self.retries: list = []
        self.left_out = 0  # master re-sends the client left out (already applied before a failover)
        self.kill_mark: Optional[tuple] = None  # (kill time, epoch before the kill): waiting for a new message
        self.first_new_message_s: Optional[float] = None
        self.trace: deque = deque(maxlen=TRACE_LENGTH)  # what it received last, for a failure's details
        self.asked: dict = {}  # the resume parameters of the latest connect (after, epoch, master_count)

    def session_id(self) -> str:
        return self.master.session

    async def join(self) -> None:
        joined = await self.browser.post(f"/cobrowse/sessions/{self.master.session}/join", {"agent": self.name})
        self.token = joined["slave_token"]

    def where(self) -> str:
        return (f"{self.name} epoch {self.epoch} last seq {self.last_seq.get(self.epoch)} last uid {self.last_uid} "
                f"digest {self.digest.hex() if self.digest else None} (master uid {self.master.uid} digest "
                f"{self.master.digest.hex() if self.master.digest else None}); hellos "
                f"{[(h.epoch, h.detail.get('catchup'), h.detail.get('after'), h.detail.get('master_count')) for h in self.hellos[-3:]]}"
                f"; received (epoch, seq, kind, sender, master uid, client's master_count, left_out, skip_through): {list(self.trace)}")

    def _replace_state(self) -> None:
        if self.digest is not None:  # a page to replace (a resync hello and its resync count once)
            self.replaced += 1
            self.replaced_at_uid = self.last_uid
        self.digest = None
        self.last_uid = None

    def note(self, envelope, connection) -> None:
        kind, seq, sender = envelope.kind, envelope.seq, envelope.sender
        self.epoch = connection.epoch
        self.trace.append((connection.epoch, seq, kind, sender[:8], _uid_of(envelope), connection.master_count,
                           connection.left_out, connection._skip_through))
        if sender == "" and seq == 0 and kind == "hello":
            body = connection.hello
            detail = dict(body, asked=self.asked, trace=list(self.trace)[-TRACE_IN_HELLO:])
            self.hellos.append(Hello(time.monotonic(), connection.epoch, body.get("catchup") == "resume", detail))
            if body.get("catchup") != "resume":
                self._replace_state()
                self.last_seq.pop(connection.epoch, None)  # a full catch-up replays the history
            return
        if sender == "" and seq == 0 and kind == "resync":
            self._replace_state()
            self.last_seq.pop(connection.epoch, None)
            return
        if seq > 0 and kind not in ("pointer", "control"):
            last = self.last_seq.get(connection.epoch)
            if last is not None and seq <= last:
                raise ChaosFailure(f"{self.name}: seq {seq} ({kind} from {sender!r}) after seq {last} in epoch "
                                   f"{connection.epoch}: duplicated or out of order; {self.where()}")
            self.last_seq[connection.epoch] = seq
        if seq > 0 and sender == "master" and kind in ("snapshot", "mutation"):
            self._apply(kind, seq, bytes(envelope.body))

    def _apply(self, kind: str, seq: int, body: bytes) -> None:
        message = msgpack.unpackb(body)
        uid = message["u"]
        if self.last_uid is not None and uid <= self.last_uid:
            raise ChaosFailure(f"{self.name}: applies master message {uid} (seq {seq}) after {self.last_uid}: "
                               f"applied twice or out of order; {self.where()}")
        if kind == "mutation" and message["prev"] != self.digest:
            raise ChaosFailure(f"{self.name}: mutation {uid} (seq {seq}) extends page "
                               f"{message['prev'].hex() if message['prev'] else None}, not this slave's: a message "
                               f"before it was lost, or applied out of order; {self.where()}")
        if self.replaced_at_uid is not None:
            # The first message after a replaced state: a snapshot it had had already (sent again for
            # nothing), or a newer one (the master's new snapshot was in the way of a resume).
            if uid <= self.replaced_at_uid:
                self.snapshots_again += 1
            else:
                self.replaced_by_newer += 1
            self.replaced_at_uid = None
        self.digest = page_digest(self.digest, kind, body)
        self.last_uid = uid
        self.applied += 1
        self.applied_bytes += len(body)
        if self.kill_mark is not None and self.epoch is not None and self.epoch > self.kill_mark[1]:
            self.first_new_message_s = time.monotonic() - self.kill_mark[0]
            self.kill_mark = None

    async def live(self) -> None:
        while not self.run.stopping:
            try:
                options = {"resume": self.connection} if self.connection is not None else {}
                self.asked = self.connection.resume_params() if self.connection is not None else {}
                connection = await self.browser.connect(self.master.session, self.token, **options)
            except HTTPStatusError as exc:
                if exc.status not in RETRYABLE_STATUSES:
                    self.run.fail(f"{self.name} (session {self.session_id()}, cookie {self.browser.cookie}): connect answered {exc}")
                    return
                self._retried(exc)
                await trio.sleep(RECONNECT_DELAY_S)
                continue
            except (ConnectionClosed, OSError, trio.TooSlowError) as exc:
                self._retried(exc)
                await trio.sleep(RECONNECT_DELAY_S)
                continue
            self.connection = connection
            self.connects += 1
            if self.lost_at is not None:
                self.away_s.append(time.monotonic() - self.lost_at)
                self.away_log.append((round(self.lost_at - self.run.started, 2), round(self.away_s[-1], 2), self.retries))
                self.retries = []
                self.lost_at = None
            try:
                while True:
                    self.note(await connection.receive(), connection)
            except ConnectionClosed as exc:
                if exc.code in FINAL_CLOSE_CODES:
                    self.run.fail(f"{self.name}: closed for good: {exc.code} {exc.reason}")
                    return
            except (ChaosFailure, EnvelopeError) as exc:
                self.run.fail(str(exc))
                return
            finally:
                self.lost_at = time.monotonic()
                self.left_out += connection.left_out
                connection.left_out = 0
                close_socket(connection.sock)
            await trio.sleep(RECONNECT_DELAY_S)


def _uid_of(envelope) -> Optional[int]:
    if envelope.sender != "master" or envelope.kind not in ("snapshot", "mutation"):
        return None
    try:
        return msgpack.unpackb(envelope.body)["u"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Session:
    master: Master
    slaves: list = field(default_factory=list)


async def scrape(cluster: ClusterNodes, name: str) -> dict:
    """A node's private /metrics, as {sample: value} ({} when it does not answer)."""
    try:
        with trio.fail_after(5):
            status, _headers, body = await relay.Client("127.0.0.1", cluster.private(name)).request("GET", "/metrics")
    except (OSError, trio.TooSlowError, ConnectionClosed):
        return {}
    if status != 200:
        return {}
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            try:
                values[sample] = float(value)
            except ValueError:
                pass
    return values


COUNTERS = ("relay_takeovers_total", "relay_takeovers_from_copy_total", "relay_repeats_dropped_total",
            "relay_number_gaps_total")


class Chaos:
    def __init__(self, config: Config, report=print) -> None:
        self.config = config
        self.report = report
        self.run = Run(config)
        self.sessions: list = []
        self.kills: list = []
        self.cluster: Optional[ClusterNodes] = None

    # ------------------------------------------------------------------ the cluster

    def hosts(self) -> dict:
        """{session id: (node, epoch)} from the running nodes' /cluster."""
        found = {}
        for name in list(self.cluster.processes):
            for session_id, epoch in ((self.cluster.view(name) or {}).get("epochs") or {}).items():
                found[session_id] = (name, epoch)
        return found

    async def counters(self, names) -> dict:
        result = {}
        for name in names:
            metrics = await scrape(self.cluster, name)
            result[name] = {counter: metrics.get(counter, 0.0) for counter in COUNTERS}
        return result

    # ------------------------------------------------------------------ waiting

    async def wait_until(self, timeout_s: float, ready, what) -> float:
        """Poll ``ready()`` until true; a ChaosFailure with ``what()`` when it is not within the bound."""
        start = time.monotonic()
        while not ready():
            if self.run.failed.is_set():
                raise ChaosFailure("stopped: a client failed")
            if time.monotonic() - start > timeout_s:
                raise ChaosFailure(f"not within {timeout_s} s: {what()}")
            await trio.sleep(POLL_S)
        return time.monotonic() - start

    def all_converged(self) -> bool:
        return all(s.master.parked and all(slave.digest == s.master.digest for slave in s.slaves)
                   for s in self.sessions)

    def not_converged(self) -> str:
        lines = []
        for s in self.sessions:
            for slave in s.slaves:
                if not s.master.parked or slave.digest != s.master.digest:
                    lines.append(f"master {s.master.name} parked={s.master.parked} epoch {s.master.epoch}; {slave.where()}")
        return "digests differ: " + " | ".join(lines)

    async def converge(self) -> float:
        """Masters paused: until every slave's digest is its master's."""
        self.run.pause()
        try:
            return await self.wait_until(CONVERGE_TIMEOUT_S, self.all_converged, self.not_converged)
        finally:
            self.run.resume()

    # ------------------------------------------------------------------ the killer

    async def kill_round(self, index: int) -> dict:
        rng = self.run.rng
        hosts = self.hosts()
        target = rng.choice(self.sessions)
        if target.master.session not in hosts:
            raise ChaosFailure(f"no node hosts session {target.master.session}: {hosts}")
        node = hosts[target.master.session][0]
        affected = [s for s in self.sessions if hosts.get(s.master.session, ("",))[0] == node]
        old_epoch = {s.master.session: hosts[s.master.session][1] for s in affected}
        survivors = [name for name in self.cluster.processes if name != node]
        before = await self.counters(survivors)
        masters_before = {s.master.name: (s.master.resent_messages, s.master.resent_bytes, s.master.snapshots_resent,
                                          len(s.master.hellos), s.master.snapshots_avoided) for s in affected}
        slaves_before = {slave.name: (len(slave.hellos), slave.replaced, slave.snapshots_again)
                         for s in affected for slave in s.slaves}
        full_bytes = sum(s.master.snapshot_bytes for s in affected)
        killed_at = time.monotonic()
        for s in affected:
            for slave in s.slaves:
                slave.first_new_message_s = None
                slave.kill_mark = (killed_at, old_epoch[s.master.session])
        self.cluster.kill(node)
        restart_after = rng.uniform(*self.config.restart_after_s)
        await trio.sleep(restart_after)
        try:
            await trio.to_thread.run_sync(self.cluster.start, node)
        except RuntimeError as exc:
            raise ChaosFailure(f"{node} did not restart: {exc}") from None

        def back() -> bool:
            return all((s.master.epoch or 0) > old_epoch[s.master.session]
                       and all(slave.first_new_message_s is not None for slave in s.slaves) for s in affected)

        def not_back() -> str:
            return "not back after the kill of " + node + ": " + " | ".join(
                f"master {s.master.name} epoch {s.master.epoch} (was {old_epoch[s.master.session]}); "
                + "; ".join(slave.where() for slave in s.slaves if slave.first_new_message_s is None)
                for s in affected)

        await self.wait_until(BACK_TIMEOUT_S - (time.monotonic() - killed_at), back, not_back)
        back_s = time.monotonic() - killed_at
        converge_s = await self.converge()
        now_hosts = self.hosts()
        after = await self.counters(list(self.cluster.processes))
        delta = {counter: sum(after[name][counter] - before.get(name, {}).get(counter, 0.0) for name in after)
                 for counter in COUNTERS}
        record = {
            "kill": index, "node": node, "at_s": round(killed_at - self.run.started, 2),
            "restart_after_s": round(restart_after, 2), "sessions": len(affected),
            "new_hosts": [now_hosts.get(s.master.session, ("?",))[0] for s in affected],
            "takeovers": int(delta["relay_takeovers_total"]),
            "takeovers_from_copy": int(delta["relay_takeovers_from_copy_total"]),
            "repeats_dropped": int(delta["relay_repeats_dropped_total"]),
            "number_gaps": int(delta["relay_number_gaps_total"]),
            "masters_resumed": 0, "snapshots_avoided": 0, "snapshots_resent": 0, "resent_messages": 0, "resent_bytes": 0,
            "full_snapshot_bytes": full_bytes, "slaves_resumed": 0, "slaves_replaced": 0, "slave_snapshots_again": 0,
            "first_message_s": [], "back_s": round(back_s, 3), "converge_s": round(converge_s, 3),
            "master_hellos": [], "slave_catchups": [], "slave_hellos_not_resumed": [],
        }
        for s in affected:
            m = s.master
            messages, nbytes, snapshots, hello_count, avoided = masters_before[m.name]
            record["snapshots_avoided"] += m.snapshots_avoided - avoided
            hello_count_m = hello_count
            new_hellos = m.hellos[hello_count:]
            record["masters_resumed"] += sum(1 for h in new_hellos if h.continued)
            record["master_hellos"] += [{"epoch": h.epoch, "resumed": h.continued, "held": h.detail.get("held")}
                                        for h in new_hellos]
            record["snapshots_resent"] += m.snapshots_resent - snapshots
            record["resent_messages"] += m.resent_messages - messages
            record["resent_bytes"] += m.resent_bytes - nbytes
            for slave in s.slaves:
                hello_count, replaced, again = slaves_before[slave.name]
                record["slave_snapshots_again"] += slave.snapshots_again - again
                new_hellos = slave.hellos[hello_count:]
                record["slaves_resumed"] += sum(1 for h in new_hellos if h.continued)
                record["slave_catchups"] += [h.detail.get("catchup") for h in new_hellos]
                record["slave_hellos_not_resumed"] += [
                    {"slave": slave.name, "after_kill_s": round(h.at - killed_at, 3),
                     "master_hellos_after_kill_s": [round(mh.at - killed_at, 3) for mh in m.hellos[hello_count_m:]],
                     **{key: h.detail.get(key) for key in ("epoch", "catchup", "after", "master_count", "asked",
                                                           "trace")}}
                    for h in new_hellos if not h.continued]
                record["slaves_replaced"] += slave.replaced - replaced
                record["first_message_s"].append(round(slave.first_new_message_s, 3))
        return record

    async def killer(self) -> None:
        config = self.config
        index = 0
        while time.monotonic() - self.run.started < config.seconds and (config.kills is None or index < config.kills):
            await trio.sleep(self.run.rng.uniform(*config.kill_gap_s))
            index += 1
            record = await self.kill_round(index)
            self.kills.append(record)
            self.report(f"kill {index}: {record['node']} ({record['sessions']} sessions) takeovers "
                        f"{record['takeovers']} from copy {record['takeovers_from_copy']}; masters resumed "
                        f"{record['masters_resumed']}, snapshots avoided {record['snapshots_avoided']}, re-sent "
                        f"{record['snapshots_resent']}; re-sent "
                        f"{record['resent_messages']} messages {record['resent_bytes']} B (full "
                        f"{record['full_snapshot_bytes']} B); first message {record['first_message_s']} s; "
                        f"back {record['back_s']} s, converged {record['converge_s']} s")

    # ------------------------------------------------------------------ the run

    async def start_sessions(self, port: int) -> None:
        for i in range(self.config.sessions):
            master = Master(self.run, Browser(port), f"m{i}")
            await master.create()
            session = Session(master)
            for j in range(self.config.slaves):
                slave = Slave(self.run, Browser(port), master, f"m{i}.s{j}")
                await slave.join()
                session.slaves.append(slave)
            self.sessions.append(session)

    async def clients(self, nursery) -> None:
        for session in self.sessions:
            nursery.start_soon(session.master.live)
            with trio.fail_after(CONNECT_ATTEMPT_S):
                await session.master.connected.wait()
            for slave in session.slaves:
                nursery.start_soon(slave.live)

    async def main(self, folder: Path) -> dict:
        with RedisServer(folder / "redis") as redis, \
                ClusterNodes(folder / "nodes", redis.url, lease_ttl_s=LEASE_TTL_S,
                             extra_args=["--trusted-proxies", "127.0.0.1",
                                         "--failover-copy", "true" if self.config.failover_copy else "false"]) as cluster:
            self.cluster = cluster
            await trio.to_thread.run_sync(cluster.start_all)
            async with RealNginx.running(lambda port, directory: nginx_conf(cluster, port, directory)) as nginx:
                self.report(f"redis {redis.port}, nodes {cluster.ports}, nginx {nginx.port}; folder {folder}")
                try:
                    await self._drive(nginx.port)
                finally:
                    self.run.stopping = True
                crashes = node_log_errors(folder / "nodes")
                for line in crashes:
                    self.run.fail(f"node log: {line}")
                summary = self.summary()
                # nginx's own reasons for its 502s (e.g. "no live upstreams"), counted.
                reasons = collections.Counter(
                    re.sub(r"^\S+ \S+ \[\w+\] \d+#\d+: \*\d+ ", "", line).split(", client:")[0]
                    + " (upstream " + (re.findall(r'upstream: "([^"]+)"', line) or re.findall(r'upstream: (\S+)', line) or ["?"])[0].split("/cobrowse")[0] + ")"
                    for line in nginx.error_log().splitlines() if "[error]" in line)
                summary["nginx_errors"] = dict(reasons.most_common(8))
                if self.run.failures:
                    summary["node_logs"] = cluster.logs()
                    summary["nginx_error_log"] = nginx.error_log()[-4000:]
                    # What nginx answered besides 101/200/201 (the node behind it is in $upstream_addr).
                    summary["nginx_refusals"] = [line for line in nginx.access_log().splitlines()
                                                 if not any(f'" {ok} ' in line for ok in (101, 200, 201))][-80:]
                return summary

    async def _drive(self, port: int) -> None:
        async with trio.open_nursery() as nursery:
            async def watch_failures():
                await self.run.failed.wait()
                nursery.cancel_scope.cancel()
            nursery.start_soon(watch_failures)
            try:
                await self.start_sessions(port)
                await self.clients(nursery)
                await self.converge()
                self.report(f"{len(self.sessions)} sessions x {self.config.slaves} slaves converged; killing")
                await self.killer()
                await self.converge()
            except ChaosFailure as exc:
                self.run.fail(str(exc))
            except (HTTPStatusError, OSError, trio.TooSlowError) as exc:
                self.run.fail(f"setup: {exc!r}")
            nursery.cancel_scope.cancel()

    def summary(self) -> dict:
        kills = self.kills
        first = [s for k in kills for s in k["first_message_s"]]
        total = {key: sum(k[key] for k in kills) for key in (
            "takeovers", "takeovers_from_copy", "masters_resumed", "snapshots_avoided", "snapshots_resent", "resent_messages",
            "resent_bytes", "full_snapshot_bytes", "slaves_resumed", "repeats_dropped",
            "number_gaps")}
        masters = [s.master for s in self.sessions]
        slaves = [slave for s in self.sessions for slave in s.slaves]
        away = [round(a, 3) for client in masters + slaves for a in client.away_s]
        longest = sorted(((entry, client.name) for client in masters + slaves for entry in client.away_log),
                         key=lambda item: -item[0][1])[:5]
        return {
            "ok": not self.run.failures,
            "failures": list(self.run.failures),
            "config": {"seconds": self.config.seconds, "sessions": self.config.sessions, "slaves": self.config.slaves,
                       "seed": self.config.seed, "mutations_per_s": self.config.mutations_per_s,
                       "snapshot_every_s": self.config.snapshot_every_s, "failover_copy": self.config.failover_copy},
            "elapsed_s": round(time.monotonic() - self.run.started, 1),
            "kills": len(kills),
            **total,
            "resent_vs_full": (round(total["resent_bytes"] / total["full_snapshot_bytes"], 5)
                               if total["full_snapshot_bytes"] else None),
            "first_message_s": {"p50": percentile(first, 0.5), "p90": percentile(first, 0.9),
                                "max": max(first) if first else None, "samples": len(first)},
            "messages_sent": sum(m.sent_messages for m in masters),
            "bytes_sent": sum(m.sent_bytes for m in masters),
            "snapshots_resent_bytes": sum(m.snapshots_resent_bytes for m in masters),
            "messages_applied": sum(slave.applied for slave in slaves),
            "left_out": sum(slave.left_out for slave in slaves),
            # The whole run's (kills and between them: a slave that cannot keep up is resynced too).
            "slaves_replaced": sum(slave.replaced for slave in slaves),
            "slave_snapshots_again": sum(slave.snapshots_again for slave in slaves),
            "replaced_by_newer_snapshot": sum(slave.replaced_by_newer for slave in slaves),
            # Every reconnect, also of sessions whose host lived (their connection went through a
            # node that was killed): how long clients were away.
            "away_s": {"p50": percentile(away, 0.5), "p90": percentile(away, 0.9), "max": max(away) if away else None,
                       "samples": len(away),
                       "longest": [{"client": name, "lost_at_s": entry[0], "away_s": entry[1], "attempts": entry[2]}
                                   for entry, name in longest]},
            "master_connects": sum(m.connects for m in masters),
            "slave_connects": sum(slave.connects for slave in slaves),
            "per_kill": kills,
        }


def nginx_conf(cluster: ClusterNodes, port: int, directory: str) -> str:
    """What ``relay nginx-config`` prints for the cluster file (no per-client limits: every client is 127.0.0.1)."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "nginx-config", "--cluster", str(cluster.file), "--listen", f"127.0.0.1:{port}",
         "--runtime-dir", directory, "--no-rate-limits"],
        check=True, capture_output=True, text=True, timeout=30).stdout


def node_log_errors(folder: Path) -> list:
    """Lines of the nodes' logs that say a node failed (an error, a traceback)."""
    found = []
    for path in sorted(folder.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"level": "error"' in line or '"level": "critical"' in line or line.startswith("Traceback"):
                found.append(f"{path.name}: {line[:2000]}")
    return found


async def chaos(config: Config, report=print) -> dict:
    engine = Chaos(config, report)
    if config.folder:
        folder = Path(config.folder)
        folder.mkdir(parents=True, exist_ok=True)
        return await engine.main(folder)
    folder = Path(tempfile.mkdtemp(prefix="relay-chaos-"))
    try:
        return await engine.main(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def format_summary(summary: dict) -> str:
    first = summary["first_message_s"]
    ratio = summary["resent_vs_full"]
    lines = [
        f"{'OK' if summary['ok'] else 'FAILED'}: {summary['kills']} kills in {summary['elapsed_s']} s "
        f"({summary['config']['sessions']} sessions x {summary['config']['slaves']} slaves, seed {summary['config']['seed']})",
        f"  takeovers {summary['takeovers']}, from the copy {summary['takeovers_from_copy']}",
        f"  masters resumed {summary['masters_resumed']}, full snapshots avoided {summary['snapshots_avoided']}, "
        f"snapshots re-sent "
        f"{summary['snapshots_resent']}; slaves resumed {summary['slaves_resumed']}, states replaced "
        f"{summary['slaves_replaced']} in the whole run (from a snapshot they had had {summary['slave_snapshots_again']}, "
        f"from the master's newer one {summary['replaced_by_newer_snapshot']}); connects: masters "
        f"{summary['master_connects']}, slaves {summary['slave_connects']}",
        f"  re-sent {summary['resent_messages']} messages, {summary['resent_bytes']} B against "
        f"{summary['full_snapshot_bytes']} B for full snapshots"
        + (f" ({ratio:.2%})" if ratio is not None else ""),
        f"  kill to first new message at a slave: p50 {first['p50']} s, p90 {first['p90']} s, max {first['max']} s "
        f"({first['samples']} slaves)",
        f"  clients away (connection closed to the next one open, every reconnect): p50 {summary['away_s']['p50']} s, "
        f"p90 {summary['away_s']['p90']} s, max {summary['away_s']['max']} s ({summary['away_s']['samples']})",
        f"  sent {summary['messages_sent']} messages ({summary['bytes_sent']} B), applied {summary['messages_applied']} "
        f"at slaves; re-sends left out by slaves {summary['left_out']}; repeats dropped by nodes "
        f"{summary['repeats_dropped']}, number gaps {summary['number_gaps']}",
    ]
    for failure in summary["failures"]:
        lines.append("  FAILURE " + failure)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to keep killing (default 300)")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--slaves", type=int, default=3, help="slaves per session")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    parser.add_argument("--kills", type=int, default=None, help="stop after this many kills")
    parser.add_argument("--rate", type=float, default=DEFAULT_MUTATIONS_PER_S, help="mutations per second per session")
    parser.add_argument("--snapshot-every-s", type=float, default=DEFAULT_SNAPSHOT_EVERY_S,
                        help="a master's new snapshot about this often (0: only the first)")
    parser.add_argument("--no-copy", action="store_true",
                        help="run the nodes without the failover copy (the baseline: every takeover starts afresh)")
    parser.add_argument("--folder", default=None, help="keep the run's files (logs) in this folder")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the summary and every kill's record")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.slaves < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--sessions and --slaves must be at least 1, --rate and --seconds positive")
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"seed {seed}")
    config = Config(seconds=args.seconds, sessions=args.sessions, slaves=args.slaves, seed=seed, kills=args.kills,
                    mutations_per_s=args.rate, snapshot_every_s=args.snapshot_every_s, folder=args.folder,
                    failover_copy=not args.no_copy)
    summary = trio.run(chaos, config)
    print(format_summary(summary))
    if not summary["ok"] and "node_logs" in summary:
        print(summary["node_logs"][-20000:])
        print("--- nginx answers other than 101/200/201 (last 80) ---")
        print("\n".join(summary["nginx_refusals"]))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
