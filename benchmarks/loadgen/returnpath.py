"""``return``: every subscriber (relay: a slave, sending ``pointer`` events) sends to the publisher
(relay: the master)."""

from __future__ import annotations

import array
import os
import time

import trio

from relay import ClientConnection
from benchmarks.loadgen.fanout import MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_MESSAGES
from benchmarks.loadgen.latency import latency_summary
from benchmarks.loadgen.procstats import Server
from benchmarks.loadgen.readers import drain
from benchmarks.loadgen.sessions import open_session
from benchmarks.loadgen.stamp import STAMP, make_template, read_stamp
from benchmarks.loadgen.wire import OP_BINARY, encode_client_frame


class ReturnPath:
    """Every subscriber sends ``--count / --slaves`` small messages to the publisher."""

    def __init__(self, args) -> None:
        self.args = args
        self.slaves = args.slaves
        self.per_slave = max(1, args.count // args.slaves)
        self.count = self.per_slave * self.slaves
        self.send_ns = array.array("q", bytes(8 * self.count))
        self.receive_ns = array.array("q", bytes(8 * self.count))
        self.received_from = [0] * self.slaves
        self.received = 0
        self.progress = trio.Event()
        self.window = max(1, min(MAX_IN_FLIGHT_MESSAGES // self.slaves, MAX_IN_FLIGHT_BYTES // max(args.size, 1)))

    async def master(self, connection: ClientConnection) -> None:
        clock = time.perf_counter_ns
        per_slave = self.per_slave
        while self.received < self.count:
            payloads = await connection.receive_batch()
            now = clock()
            for payload in payloads:
                stamp = read_stamp(payload)
                if stamp is None or stamp[0] != "pointer":
                    continue
                index = stamp[2]
                self.receive_ns[index] = now
                self.received_from[index // per_slave] += 1
                self.received += 1
            self.progress.set()

    async def slave(self, index: int, connection: ClientConnection) -> None:
        mask = os.urandom(4)
        template, stamp_offset = make_template(self.args.size, "pointer")
        clock = time.perf_counter_ns
        first = index * self.per_slave
        for i in range(self.per_slave):
            while i - self.received_from[index] >= self.window:
                if self.progress.is_set():  # shared by every slave: renew it only once it has fired
                    self.progress = trio.Event()
                await self.progress.wait()
            now = clock()
            STAMP.pack_into(template, stamp_offset, now, first + i)
            self.send_ns[first + i] = now
            await connection.send_raw(encode_client_frame(OP_BINARY, template, mask))

    async def main(self) -> dict:
        args = self.args
        server = Server(args.server_pid)
        with trio.fail_after(args.timeout_s):
            publisher, subscribers = await open_session(args, self.slaves)
            server.start()
            async with trio.open_nursery() as nursery:
                for index, subscriber in enumerate(subscribers):
                    nursery.start_soon(drain, subscriber)
                async with trio.open_nursery() as work:
                    work.start_soon(self.master, publisher)
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.slave, index, subscriber)
                figures = server.figures(self.count, self.count * args.size)
                nursery.cancel_scope.cancel()
        elapsed = (max(self.receive_ns) - min(self.send_ns)) / 1e9
        latencies = [(self.receive_ns[i] - self.send_ns[i]) / 1e9 for i in range(self.count)]
        return {
            "workload": "return",
            "target": args.target,
            "slaves": self.slaves,
            "size": args.size,
            "count": self.count,
            "elapsed_s": elapsed,
            "messages_per_s": self.count / elapsed,
            "delivered_bytes_per_s": self.count * args.size / elapsed,
            **latency_summary(latencies),
            **figures,
        }


