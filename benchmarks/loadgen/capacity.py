"""``capacity``: sessions of one master and two slaves, added step by step to one running server.

Every master sends ``--mutation-rate`` mutations per second of ``--mutation-bytes`` and a snapshot of
``--snapshot-bytes`` every ``--snapshot-every-s``, open loop (on a schedule, whatever the server does).
The sessions' phases are staggered (golden-ratio offsets within the mutation period and within the
snapshot period) so that the load is steady at every session count, also when a step is shorter than
the snapshot period.  At each step of ``--steps`` the missing sessions are added (the others keep
running), the traffic settles, then a window of ``--step-s`` is measured:

* latency master -> slave of every delivery of a message sent in the window: the master's message
  carries its send time (``time.monotonic_ns``) and index in its body (``stamp.py``), the slave takes
  the time when the read that completed the message returned; a delivery still missing
  ``--grace-s`` after the window counts with the time waited (a lower bound, above any sane limit);
* deliveries per second, the server processes' CPU share and resident memory (``VmRSS``) at the
  window's end, the load generator's own CPU share and how late its sends were against the schedule,
  and what else ran on the machine meanwhile (``/proc/stat``: other processes, the hypervisor's steal).

A window whose p99 is above ``--p99-limit-ms`` is measured once more (same sessions) and the lower p99
kept: on a shared machine other work only ever adds latency.  Both p99s are in the step's figures.

It stops after the first step whose p99 is above ``--p99-limit-ms``, when the load generator itself
was saturated, or after ``--max-run-s``.

Cheap on purpose (it shares a 2-core machine with the server): one process, one trio task sending for
every master from a heap of due times (non-blocking ``send``, a writer task only for a socket that is
backed up), and one task receiving for every connection from a private ``epoll`` set (one trio wakeup
per batch of ready sockets, no per-connection task).  Frames are parsed by each connection's own
``ClientConnection.decoder`` (relay's Cython decoder, read straight into its buffer as
``receive_batch`` does); the rest goes through ``relay.Client`` and ``benchmarks/loadgen/wire.py``.

    python -m benchmarks.loadgen.capacity --protocol relay --url 127.0.0.1:8700 --server-pid PID \\
        --steps 5,10,20 --step-s 20

prints ``STEP {json}`` when a step is done and ``RESULT {json}`` at the end, one line each.
"""

from __future__ import annotations

import argparse
import array
import heapq
import json
import os
import select
import sys
import time

import trio

from relay import Client, ClientConnection
from relay import ConnectionClosed, HTTPStatusError

if sys.version_info < (3, 11):  # pragma: no cover (trio brings the backport)
    from exceptiongroup import ExceptionGroup
from benchmarks.loadgen.procstats import (machine_cpu_seconds, raise_fd_limit, server_cpu_seconds, server_peak_rss_bytes,
                                          server_rss_bytes)
from benchmarks.loadgen.stamp import MUTATION_KIND, SNAPSHOT_KIND, STAMP, MaskedStamp, make_template, read_stamp
from benchmarks.loadgen.wire import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, encode_client_frame

SLAVES_PER_SESSION = 2
SETUP_CONCURRENCY = 16  # sessions being opened at once
SETUP_TIMEOUT_S = 300.0
MIN_SEND_SLEEP_S = 0.0005  # the sender sleeps at least this long: due messages go out in batches
EPOLL_BATCH = 512  # ready sockets handled per wakeup of the receiver
#: At or above this share of a core, the load generator may be what limits the step: stop there.
LOADGEN_SATURATED_SHARE = 0.90
NS = 1_000_000_000
GOLDEN = 0.6180339887498949  # session i's mutation phase: frac(i * GOLDEN) of the period
SILVER = 0.4142135623730951  # session i's snapshot phase: frac(i * SILVER) of the snapshot period
MUTATION, SNAPSHOT = 0, 1


class Window:
    """What one step measures: deliveries of the messages sent between ``start_ns`` and ``end_ns``."""

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.latencies_ns = array.array("q")  # every delivery, mutations and snapshots
        self.snapshot_latencies_ns = array.array("q")
        self.lag_ns = array.array("q")  # send time - scheduled time, per message sent
        self.sent = [0, 0]  # mutations, snapshots
        self.delivered_bytes = 0
        self.out_of_order = 0
        self.lost_connections = 0

    def holds(self, sent_ns: int) -> bool:
        return self.start_ns <= sent_ns < self.end_ns


class Peer:
    """One connection the receiver reads: a master (whose input is only drained) or a slave."""

    __slots__ = ("connection", "sock", "decoder", "session", "is_slave", "last_index", "alive")

    def __init__(self, connection: ClientConnection, session: "Session", is_slave: bool) -> None:
        self.connection = connection
        self.sock = connection.sock
        self.decoder = connection.decoder
        self.session = session
        self.is_slave = is_slave
        self.last_index = -1
        self.alive = True


class Session:
    __slots__ = ("index", "master", "slaves", "next_index", "outbox", "alive", "opened_ns")

    def __init__(self, index: int) -> None:
        self.index = index
        self.opened_ns = 0
        self.master: ClientConnection | None = None
        self.slaves: list = []
        self.next_index = 0  # the stamp's message index, per session: slaves check their order
        self.outbox: bytearray | None = None  # what the master's socket could not take yet
        self.alive = True


def percentile(sorted_values, fraction: float):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))]


def parse_url(text: str) -> tuple:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class Capacity:
    def __init__(self, args) -> None:
        self.args = args
        self.urls = args.url
        self.pids = args.server_pid or []
        self.mask = os.urandom(4)
        self.mutation_template, self.mutation_stamp_at = make_template(args.mutation_bytes, MUTATION_KIND)
        snapshot, snapshot_stamp_at = make_template(args.snapshot_bytes, SNAPSHOT_KIND)
        # Masked once; each send patches only the masked stamp (masking 1 MiB per send would cost
        # the load generator more than the server).
        self.snapshot_frame = bytearray(encode_client_frame(OP_BINARY, snapshot, self.mask))
        self.snapshot_patch = MaskedStamp(self.mask, len(self.snapshot_frame) - len(snapshot), snapshot_stamp_at)
        self.period_ns = (int(NS / args.mutation_rate), int(args.snapshot_every_s * NS))
        self.sessions: list = []
        self.peers: dict = {}  # fd -> Peer
        self.epoll = select.epoll()
        self.schedule: list = []  # heap of (due_ns, session index, MUTATION or SNAPSHOT)
        self.epoch_ns = time.monotonic_ns()
        self.window: Window | None = None
        self.nursery = None
        self.wakeup = trio.Event()  # the sender sleeps on it while nothing is scheduled

    # ------------------------------------------------------------------ sending

    def _send(self, session: Session, kind: int, due_ns: int) -> None:
        now = time.monotonic_ns()
        index = session.next_index
        session.next_index = index + 1
        if kind == MUTATION:
            STAMP.pack_into(self.mutation_template, self.mutation_stamp_at, now, index)
            frame = encode_client_frame(OP_BINARY, self.mutation_template, self.mask)
        else:
            self.snapshot_patch.write(self.snapshot_frame, now, index)
            frame = self.snapshot_frame
        window = self.window
        if window is not None and window.holds(now):
            window.sent[kind] += 1
            window.lag_ns.append(now - due_ns)
        self._write(session, frame)

    def _write(self, session: Session, frame) -> None:
        if session.outbox is not None:  # backed up: queue behind what waits
            session.outbox += frame
            return
        try:
            sent = session.master.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._session_lost(session)
            return
        if sent < len(frame):
            session.outbox = bytearray(memoryview(frame)[sent:])  # a copy: the snapshot frame is shared
            self.nursery.start_soon(self._flush, session)

    async def _flush(self, session: Session) -> None:
        sock = session.master.sock
        while session.outbox:
            await trio.lowlevel.wait_writable(sock)
            try:
                sent = sock.send(session.outbox)
            except BlockingIOError:
                continue
            except OSError:
                self._session_lost(session)
                return
            del session.outbox[:sent]
        session.outbox = None

    def _schedule(self, session: Session) -> None:
        """Its first mutation and snapshot at its phases of the common timeline, from now on."""
        now = time.monotonic_ns()
        phases = ((session.index * GOLDEN) % 1.0, (session.index * SILVER) % 1.0)
        for kind in (MUTATION, SNAPSHOT):
            period = self.period_ns[kind]
            due = self.epoch_ns + int(phases[kind] * period)
            if due < now:
                due += ((now - due) // period + 1) * period
            heapq.heappush(self.schedule, (due, session.index, kind))
        self.wakeup.set()

    async def sender(self) -> None:
        heap = self.schedule
        sessions = self.sessions
        clock = time.monotonic_ns
        periods = self.period_ns
        while True:
            if not heap:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
                continue
            now = clock()
            while heap and heap[0][0] <= now:
                due, index, kind = heapq.heappop(heap)
                session = sessions[index]
                if not session.alive:
                    continue
                self._send(session, kind, due)
                heapq.heappush(heap, (due + periods[kind], index, kind))
                now = clock()
            if heap:
                await trio.sleep(max(MIN_SEND_SLEEP_S, (heap[0][0] - clock()) / NS))

    # ------------------------------------------------------------------ receiving

    async def receiver(self) -> None:
        epoll = self.epoll
        peers = self.peers
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _mask in epoll.poll(0, EPOLL_BATCH):
                peer = peers.get(fd)
                if peer is not None:
                    self._read(peer)

    def _read(self, peer: Peer) -> None:
        decoder = peer.decoder
        try:
            received = peer.sock.recv_into(decoder.get_buffer())
        except BlockingIOError:
            return
        except OSError:
            received = 0
        if received == 0:
            self._peer_lost(peer)
            return
        decoder.buffer_updated(received)
        now = time.monotonic_ns()
        while (event := decoder.next_event()) is not None:
            self._event(peer, event, now)

    def _event(self, peer: Peer, event, now: int) -> None:
        opcode, payload = event
        if opcode == OP_BINARY:
            if peer.is_slave:
                self._delivered(peer, payload, now)
        elif opcode == OP_PING:
            try:
                peer.sock.send(encode_client_frame(OP_PONG, payload))  # a few bytes: never backed up
            except OSError:
                pass
        elif opcode == OP_CLOSE:
            self._peer_lost(peer)

    def _delivered(self, peer: Peer, payload, now: int) -> None:
        stamp = read_stamp(payload)
        if stamp is None:  # hello, presence...
            return
        kind, sent_ns, index = stamp
        window = self.window
        if index <= peer.last_index and window is not None:
            window.out_of_order += 1
        peer.last_index = index
        if window is not None and window.holds(sent_ns):
            window.latencies_ns.append(now - sent_ns)
            window.delivered_bytes += len(payload)
            if kind == SNAPSHOT_KIND:
                window.snapshot_latencies_ns.append(now - sent_ns)

    def _register(self, connection: ClientConnection, session: Session, is_slave: bool) -> None:
        peer = Peer(connection, session, is_slave)
        now = time.monotonic_ns()
        for event in connection.pending:  # frames that came with the handshake's response
            self._event(peer, event, now)
        connection.pending = []
        self.peers[peer.sock.fileno()] = peer
        self.epoll.register(peer.sock.fileno(), select.EPOLLIN)

    def _peer_lost(self, peer: Peer) -> None:
        if not peer.alive:
            return
        peer.alive = False
        if self.window is not None:
            self.window.lost_connections += 1
        fd = peer.sock.fileno()
        if fd >= 0:
            self.peers.pop(fd, None)
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass
        if not peer.is_slave:
            peer.session.alive = False

    def _session_lost(self, session: Session) -> None:
        session.alive = False

    # ------------------------------------------------------------------ sessions

    async def _open(self, session: Session, limiter: trio.CapacityLimiter) -> None:
        host, port = self.urls[session.index % len(self.urls)]
        async with limiter:
            if self.args.protocol == "relay":
                client = Client(host, port)
                created = await _create_retrying(client)
                # Keep the sticky cookie, as a browser does: behind nginx it pins the session to its host.
                cookies = [v.split(";", 1)[0] for k, v in client.last_headers if k == "set-cookie"]
                if cookies:
                    client.cookie = cookies[-1]
                master = await client.connect(created["session"], created["master_token"])
                # The first snapshot, as a master sends its page when it connects: slaves joining
                # get it as their catch-up.
                await master.send_raw(self._stamped_snapshot(session))
                slaves = []
                for number in range(SLAVES_PER_SESSION):
                    joined = await client.join(created["session"], agent=f"capacity-{session.index}-{number}")
                    slaves.append(await client.connect(created["session"], joined["slave_token"]))
            else:  # a peer: /sub/ID, then /pub/ID and its first snapshot
                headers = [("host", host)]
                name = f"s{session.index}"
                slaves = [await ClientConnection.open(host, port, f"/sub/{name}", headers=headers)
                          for _ in range(SLAVES_PER_SESSION)]
                master = await ClientConnection.open(host, port, f"/pub/{name}", headers=headers)
                await trio.sleep(0.05)  # the peer registers the publisher in its own time
                await master.send_raw(self._stamped_snapshot(session))
        session.master, session.slaves = master, slaves
        session.opened_ns = time.monotonic_ns()
        self._register(master, session, False)
        for slave in slaves:
            self._register(slave, session, True)
        self._schedule(session)

    def _stamped_snapshot(self, session: Session) -> bytes:
        index = session.next_index
        session.next_index += 1
        self.snapshot_patch.write(self.snapshot_frame, time.monotonic_ns(), index)
        return bytes(self.snapshot_frame)

    async def add_sessions(self, count: int) -> None:
        limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)
        with trio.fail_after(SETUP_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    session = Session(len(self.sessions))
                    self.sessions.append(session)
                    nursery.start_soon(self._open, session, limiter)

    # ------------------------------------------------------------------ steps

    def _server_cpu_s(self):
        values = [server_cpu_seconds(pid) for pid in self.pids]
        return None if not values or None in values else sum(values)

    def _server_rss(self, peak: bool = False):
        read = server_peak_rss_bytes if peak else server_rss_bytes
        values = [read(pid) for pid in self.pids]
        return None if not values or None in values else sum(values)

    async def step(self, sessions: int) -> dict:
        """Add sessions up to ``sessions``, let them settle, measure a window; a window above the limit
        is measured once more and the lower p99 kept (other work on the machine only adds latency),
        both windows reported."""
        args = self.args
        setup_started = time.monotonic()
        await self.add_sessions(sessions - len(self.sessions))
        setup_s = time.monotonic() - setup_started
        await trio.sleep(args.settle_s)
        windows = [await self.measure(sessions, setup_s)]
        if (windows[0]["latency_p99_s"] or 0.0) > args.p99_limit_ms / 1000:
            windows.append(await self.measure(sessions, setup_s))
        best = min(windows, key=lambda w: w["latency_p99_s"] or 0.0)
        return {**best, "windows": len(windows), "window_p99s_s": [w["latency_p99_s"] for w in windows]}

    async def measure(self, sessions: int, setup_s: float) -> dict:
        args = self.args
        start = time.monotonic_ns()
        window = Window(start, start + int(args.step_s * NS))
        cpu_before, own_before, machine_before = self._server_cpu_s(), time.process_time(), machine_cpu_seconds()
        self.window = window
        await trio.sleep(args.step_s)
        wall = (time.monotonic_ns() - start) / NS
        cpu_after, own_after, machine_after = self._server_cpu_s(), time.process_time(), machine_cpu_seconds()
        rss = self._server_rss()
        await trio.sleep(args.grace_s)  # deliveries of what was sent at the window's end
        waited_until = time.monotonic_ns()
        self.window = None
        server_cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / wall
        own_cpu = (own_after - own_before) / wall
        summary = self._summary(sessions, window, wall, setup_s, rss, server_cpu, own_cpu, waited_until)
        if machine_before and machine_after:
            busy = (machine_after["busy"] - machine_before["busy"]) / wall
            # What else ran on the machine meanwhile, in cores: the figures are only as quiet as that.
            summary["other_cpu_share"] = max(0.0, busy - own_cpu - (server_cpu or 0.0))
            summary["steal_share"] = (machine_after["steal"] - machine_before["steal"]) / wall
        return summary

    def _summary(self, sessions: int, window: Window, wall: float, setup_s: float, rss, server_cpu,
                 own_cpu: float, waited_until: int) -> dict:
        expected = (window.sent[MUTATION] + window.sent[SNAPSHOT]) * SLAVES_PER_SESSION
        latencies = sorted(window.latencies_ns)
        undelivered = max(0, expected - len(latencies))
        # A missing delivery counts with the time waited for it (at least --grace-s): a lower bound.
        latencies += [waited_until - window.end_ns] * undelivered
        lags = sorted(window.lag_ns)
        snapshots = sorted(window.snapshot_latencies_ns)

        def seconds(value):
            return None if value is None else value / NS

        return {
            "sessions": sessions,
            "live_sessions": sum(1 for s in self.sessions if s.alive),
            # relay keeps each session's latest snapshot and the mutations since: its memory grows
            # with a session's age up to the snapshot period, so the ages say what RSS means.
            "session_age_mean_s": sum(window.end_ns - s.opened_ns for s in self.sessions) / len(self.sessions) / NS,
            "setup_s": setup_s,
            "window_s": wall,
            "sent_mutations": window.sent[MUTATION],
            "sent_snapshots": window.sent[SNAPSHOT],
            "expected_deliveries": expected,
            "delivered": len(latencies) - undelivered,
            "undelivered": undelivered,
            "delivered_per_s": (len(latencies) - undelivered) / wall,
            "delivered_bytes_per_s": window.delivered_bytes / wall,
            "latency_p50_s": seconds(percentile(latencies, 0.50)),
            "latency_p90_s": seconds(percentile(latencies, 0.90)),
            "latency_p99_s": seconds(percentile(latencies, 0.99)),
            "latency_p999_s": seconds(percentile(latencies, 0.999)),
            "latency_max_s": seconds(latencies[-1] if latencies else None),
            "snapshot_latency_p50_s": seconds(percentile(snapshots, 0.50)),
            "snapshot_latency_max_s": seconds(snapshots[-1] if snapshots else None),
            "send_lag_p99_s": seconds(percentile(lags, 0.99)),
            "send_lag_max_s": seconds(lags[-1] if lags else None),
            "out_of_order": window.out_of_order,
            "lost_connections": window.lost_connections,
            "server_rss_bytes": rss,
            "server_peak_rss_bytes": self._server_rss(peak=True),
            "server_cpu_share": server_cpu,
            "loadgen_cpu_share": own_cpu,
            "loadgen_rss_bytes": server_rss_bytes(os.getpid()),
        }

    async def main(self) -> dict:
        args = self.args
        started = time.monotonic()
        await trio.sleep(0.3)
        result = {"protocol": args.protocol, "urls": [f"{h}:{p}" for h, p in self.urls],
                  "baseline_rss_bytes": self._server_rss(), "steps": [], "stopped_because": "last step"}
        limit_s = args.p99_limit_ms / 1000
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.receiver)
            nursery.start_soon(self.sender)
            for sessions in args.steps:
                if sessions <= len(self.sessions):
                    continue
                if time.monotonic() - started > args.max_run_s:
                    result["stopped_because"] = f"--max-run-s {args.max_run_s:g} reached"
                    break
                try:
                    step = await self.step(sessions)
                except (*OPEN_FAILURES, ExceptionGroup) as exc:
                    if isinstance(exc, ExceptionGroup):
                        failures, others = exc.split(OPEN_FAILURES)
                        if others is not None:
                            raise
                        exc = failures.exceptions[0]
                        while isinstance(exc, ExceptionGroup):
                            exc = exc.exceptions[0]
                    # The server refused or dropped sessions: this step is past what it holds.
                    result["stopped_because"] = f"opening sessions failed at {sessions}: {exc!r}"
                    break
                result["steps"].append(step)
                print("STEP " + json.dumps(step), flush=True)
                if step["latency_p99_s"] is not None and step["latency_p99_s"] > limit_s:
                    result["stopped_because"] = f"p99 above {args.p99_limit_ms:g} ms"
                    break
                if step["loadgen_cpu_share"] >= LOADGEN_SATURATED_SHARE:
                    result["stopped_because"] = "load generator saturated"
                    break
            nursery.cancel_scope.cancel()
        return result


# What opening sessions may meet from a server past its capacity (the step then ends the curve).
OPEN_FAILURES = (HTTPStatusError, ConnectionClosed, OSError, trio.TooSlowError)
CREATE_RETRIES = 5  # a node under load may answer 503 with Retry-After: a client retries, so does this one


async def _create_retrying(client: Client) -> dict:
    for attempt in range(CREATE_RETRIES):
        try:
            return await client.create_session()
        except HTTPStatusError as exc:
            if exc.status != 503 or attempt == CREATE_RETRIES - 1:
                raise
            retry_after = dict(exc.headers).get("retry-after", "1")
            await trio.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 1.0)
    raise AssertionError("unreachable")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.capacity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["relay", "plain"], required=True,
                        help="relay: sessions through relay's HTTP API; plain: a peer's /pub/ID and /sub/ID")
    parser.add_argument("--url", type=parse_url, action="append", required=True,
                        help="HOST:PORT where sessions are opened (repeat: sessions go to each in turn)")
    parser.add_argument("--server-pid", type=int, action="append",
                        help="a process whose CPU and memory are the server's (repeat: summed)")
    parser.add_argument("--steps", type=lambda text: [int(n) for n in text.split(",")], required=True,
                        help="comma-separated session counts, increasing")
    parser.add_argument("--step-s", type=float, default=20.0, help="measured window per step")
    parser.add_argument("--settle-s", type=float, default=2.0, help="after adding sessions, before measuring")
    parser.add_argument("--grace-s", type=float, default=1.0,
                        help="after the window: deliveries still missing then count as late")
    parser.add_argument("--mutation-rate", type=float, default=20.0, help="mutations per second per session")
    parser.add_argument("--mutation-bytes", type=int, default=2048)
    parser.add_argument("--snapshot-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--snapshot-every-s", type=float, default=60.0)
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--max-run-s", type=float, default=1e9, help="no new step after this long")
    args = parser.parse_args(argv)
    if args.steps != sorted(set(args.steps)) or args.steps[0] < 1:
        parser.error(f"--steps must be increasing positive counts, got {args.steps}")
    if args.mutation_rate <= 0 or args.snapshot_every_s <= 0:
        parser.error("--mutation-rate and --snapshot-every-s must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit()
    needed = args.steps[-1] * (SLAVES_PER_SESSION + 1) + 100
    if needed > fd_limit:
        raise SystemExit(f"{args.steps[-1]} sessions need {needed} file descriptors; the limit is {fd_limit}")
    result = trio.run(Capacity(args).main)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
