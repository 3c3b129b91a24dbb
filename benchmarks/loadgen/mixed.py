"""``mixed``: small mutations at a fixed rate with a large snapshot every few seconds; the latency of
each small message from its *scheduled* send time (so a publisher held up by a slow server counts),
split by whether a snapshot was in flight (sent but not yet received by every subscriber)."""

from __future__ import annotations

import array
import os
import time

import trio

from relay import ClientConnection
from benchmarks.loadgen.latency import latency_summary
from benchmarks.loadgen.procstats import Server
from benchmarks.loadgen.readers import drain
from benchmarks.loadgen.sessions import open_session
from benchmarks.loadgen.stamp import MUTATION_KIND, SNAPSHOT_KIND, STAMP, make_template, read_stamp
from benchmarks.loadgen.wire import OP_BINARY, encode_client_frame


class Mixed:
    """Small mutations at ``--rate`` per second, a snapshot every ``--snapshot-every-s``."""

    def __init__(self, args) -> None:
        self.args = args
        self.slaves = args.slaves
        schedule = []  # (offset_s, kind, size)
        mutations = int(args.duration_s * args.rate)
        for i in range(mutations):
            schedule.append((i / args.rate, MUTATION_KIND, args.size))
        snapshot_sizes = [int(s) for s in args.snapshot_sizes.split(",")]
        t = args.snapshot_every_s / 2
        i = 0
        while t < args.duration_s:
            schedule.append((t, SNAPSHOT_KIND, snapshot_sizes[i % len(snapshot_sizes)]))
            t += args.snapshot_every_s
            i += 1
        schedule.sort(key=lambda item: item[0])
        self.schedule = schedule
        self.count = len(schedule)
        self.scheduled_ns = array.array("q", bytes(8 * self.count))
        self.sent_done_ns = array.array("q", bytes(8 * self.count))
        self.receive_ns = [array.array("q", bytes(8 * self.count)) for _ in range(self.slaves)]
        self.received = [0] * self.slaves

    async def subscriber(self, index: int, connection: ClientConnection) -> None:
        receive_ns = self.receive_ns[index]
        clock = time.perf_counter_ns
        while self.received[index] < self.count:
            payloads = await connection.receive_batch()
            now = clock()
            for payload in payloads:
                stamp = read_stamp(payload)
                if stamp is None or stamp[0] not in (MUTATION_KIND, SNAPSHOT_KIND):
                    continue
                receive_ns[stamp[2]] = now
                self.received[index] += 1

    async def publisher(self, connection: ClientConnection) -> None:
        mask = os.urandom(4)
        templates = {}
        for _offset, kind, size in self.schedule:
            if (kind, size) not in templates:
                templates[kind, size] = make_template(size, kind)
        clock = time.perf_counter_ns
        start_ns = clock() + 100_000_000
        trio_start = trio.current_time() + 0.1
        for index, (offset, kind, size) in enumerate(self.schedule):
            due_ns = start_ns + int(offset * 1e9)
            if clock() < due_ns:
                await trio.sleep_until(trio_start + offset)
            template, stamp_offset = templates[kind, size]
            STAMP.pack_into(template, stamp_offset, due_ns, index)
            self.scheduled_ns[index] = due_ns
            await connection.send_raw(encode_client_frame(OP_BINARY, template, mask))
            self.sent_done_ns[index] = clock()

    async def main(self) -> dict:
        args = self.args
        server = Server(args.server_pid)
        with trio.fail_after(args.timeout_s):
            publisher, subscribers = await open_session(args, self.slaves)
            server.start()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, publisher)
                async with trio.open_nursery() as work:
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.subscriber, index, subscriber)
                    work.start_soon(self.publisher, publisher)
                delivered = sum(size for _o, _k, size in self.schedule) * self.slaves
                figures = server.figures(self.count, delivered)
                nursery.cancel_scope.cancel()
        last = [max(times[i] for times in self.receive_ns) for i in range(self.count)]
        snapshots = [(self.scheduled_ns[i], last[i], size) for i, (_o, kind, size) in enumerate(self.schedule)
                     if kind == SNAPSHOT_KIND]
        largest = max(size for _s, _l, size in snapshots)
        small_all, small_in_flight, small_in_flight_largest = [], [], []
        for i, (_offset, kind, _size) in enumerate(self.schedule):
            if kind != MUTATION_KIND:
                continue
            latency = (last[i] - self.scheduled_ns[i]) / 1e9
            small_all.append(latency)
            for start, end, size in snapshots:
                if start <= self.scheduled_ns[i] <= end:
                    small_in_flight.append(latency)
                    if size == largest:
                        small_in_flight_largest.append(latency)
                    break
        return {
            "workload": "mixed",
            "target": args.target,
            "slaves": self.slaves,
            "size": args.size,
            "rate_per_s": args.rate,
            "count": self.count,
            "snapshot_sizes": sorted({size for _s, _l, size in snapshots}),
            "largest_snapshot_bytes": largest,
            "snapshot_delivery_s": [(end - start) / 1e9 for start, end, _size in snapshots],
            "publisher_lag_max_s": max((self.sent_done_ns[i] - self.scheduled_ns[i]) / 1e9 for i in range(self.count)),
            **latency_summary(small_all, "small_latency"),
            **latency_summary(small_in_flight, "small_in_flight_latency"),
            **latency_summary(small_in_flight_largest, "small_in_flight_largest_latency"),
            **figures,
        }


