"""``fanout``: ``--count`` messages of ``--size`` bytes from the publisher to ``--slaves`` subscribers,
as fast as a window of messages in flight allows; latency is from the publisher's send to the last
subscriber's receive.

``--snapshot-every-bytes B``: after every B bytes of mutations the next timed message goes as a
``snapshot`` of the same size, as a real master's stream does (it answers the relay's backlog
request with one): a relay's history, and its failover copy in a cluster, then stay bounded.  Those
snapshots are timed and counted like the mutations."""

from __future__ import annotations

import array
import os
import time

import trio

from relay import ClientConnection
from benchmarks.loadgen.latency import latency_summary
from benchmarks.loadgen.procstats import Server
from benchmarks.loadgen.readers import SkimReader, drain
from benchmarks.loadgen.sessions import open_session
from benchmarks.loadgen.stamp import (MUTATION_KIND, SNAPSHOT_KIND, STAMP, MaskedStamp, make_template, read_stamp,
                                      stamp_from_head)
from benchmarks.loadgen.wire import OP_BINARY, encode_client_frame

MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024
MAX_IN_FLIGHT_MESSAGES = 2000
PATCH_FRAME_FROM_BYTES = 64 * 1024
SKIM_FROM_BYTES = 64 * 1024  # subscribers skim frames (SkimReader) from this message size
MIN_TIMED_MESSAGES = 20  # even past --max-duration-s: enough for a median
# The first messages of a fan-out run are not timed: TCP windows, socket buffers and allocators
# reach their steady state over the first megabytes, and a sub-second sample would mostly
# measure that ramp.  Warm-up: this many bytes per publisher, within these message counts.
WARMUP_BYTES = 16 * 1024 * 1024
WARMUP_MESSAGES_MIN, WARMUP_MESSAGES_MAX = 10, 1000
TIMED_KINDS = (MUTATION_KIND, SNAPSHOT_KIND)  # the initial snapshot carries no stamp: never timed


class Fanout:
    def __init__(self, args) -> None:
        self.args = args
        self.slaves = args.slaves
        self.received = [0] * args.slaves
        self.out_of_order = 0
        self.progress = trio.Event()
        self.window = max(1, min(MAX_IN_FLIGHT_MESSAGES, args.window_bytes // max(args.size, 1)))
        self.warmup = max(WARMUP_MESSAGES_MIN, min(WARMUP_MESSAGES_MAX, WARMUP_BYTES // max(args.size, 1)))
        self.count = args.count + self.warmup
        self.receive_ns = [array.array("q", bytes(8 * self.count)) for _ in range(args.slaves)]
        self.send_ns = array.array("q", bytes(8 * self.count))
        # Every how many messages one is a snapshot (0: never).
        every_bytes = getattr(args, "snapshot_every_bytes", 0) or 0
        self.snapshot_every = max(2, every_bytes // max(args.size, 1) + 1) if every_bytes > 0 else 0
        self.snapshots_sent = 0

    async def subscriber(self, index: int, connection: ClientConnection) -> None:
        skim = self.args.size >= SKIM_FROM_BYTES
        receive = SkimReader(connection, f"subscriber {index}").binary if skim else connection.receive_batch
        parse = stamp_from_head if skim else read_stamp
        receive_ns = self.receive_ns[index]
        received = 0
        expected = 0
        clock = time.perf_counter_ns
        while True:  # until the publisher has seen every subscriber receive all it sent
            payloads = await receive()
            now = clock()
            for payload in payloads:
                stamp = parse(payload)
                if stamp is None or stamp[0] not in TIMED_KINDS:
                    continue
                message_index = stamp[2]
                if message_index != expected:
                    self.out_of_order += 1
                expected = message_index + 1
                receive_ns[message_index] = now
                received += 1
            self.received[index] = received
            self.progress.set()

    async def publisher(self, connection: ClientConnection, template: bytearray, stamp_offset: int,
                        done: trio.CancelScope, snapshot_template: bytearray) -> None:
        send = connection.send_raw
        mask = os.urandom(4)
        window = self.window
        clock = time.perf_counter_ns
        pack_into = STAMP.pack_into
        deadline = None  # the timed part starts after the warm-up
        sent = 0
        # Large messages: mask the frame once, then patch only the masked stamp for each message
        # (masking and copying megabytes per message would slow the load generator, not the server).
        frame = patch = snapshot_frame = None
        if len(template) >= PATCH_FRAME_FROM_BYTES:
            frame = bytearray(encode_client_frame(OP_BINARY, template, mask))
            snapshot_frame = bytearray(encode_client_frame(OP_BINARY, snapshot_template, mask))
            patch = MaskedStamp(mask, len(frame) - len(template), stamp_offset)
        every = self.snapshot_every
        for index in range(self.count):
            while index - min(self.received) >= window:
                if self.progress.is_set():
                    self.progress = trio.Event()
                await self.progress.wait()
            now = clock()
            if index == self.warmup:
                deadline = now + int(self.args.max_duration_s * 1e9)
            elif deadline is not None and now > deadline and index >= self.warmup + MIN_TIMED_MESSAGES:
                break  # a slow server gets fewer messages, not more time
            self.send_ns[index] = now
            snapshot = every and index % every == every - 1
            if snapshot:
                self.snapshots_sent += 1
            if frame is not None:
                out = snapshot_frame if snapshot else frame
                patch.write(out, now, index)
                await send(out)
            else:
                body = snapshot_template if snapshot else template
                pack_into(body, stamp_offset, now, index)
                await send(encode_client_frame(OP_BINARY, body, mask))
            sent = index + 1
        self.count = sent
        while min(self.received) < sent:
            if self.progress.is_set():
                self.progress = trio.Event()
            await self.progress.wait()
        done.cancel()

    async def main(self) -> dict:
        args = self.args
        template, stamp_offset = make_template(args.size)
        snapshot_template, snapshot_offset = make_template(args.size, SNAPSHOT_KIND)
        # Same length of kind name: the stamp sits at the same place, and one MaskedStamp serves both.
        assert (len(snapshot_template), snapshot_offset) == (len(template), stamp_offset)
        server = Server(args.server_pid)
        with trio.fail_after(args.timeout_s):
            publisher, subscribers = await open_session(args, self.slaves,
                                                        raw_subscribers=args.size >= SKIM_FROM_BYTES)
            server.start()
            started = time.perf_counter_ns()
            own_cpu_before = time.process_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, publisher)
                async with trio.open_nursery() as work:
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.subscriber, index, subscriber)
                    work.start_soon(self.publisher, publisher, template, stamp_offset, work.cancel_scope,
                                    snapshot_template)
                finished = max(max(times[:self.count]) for times in self.receive_ns)
                figures = server.figures(self.count, self.count * len(template) * self.slaves)
                own_cpu = time.process_time() - own_cpu_before
                nursery.cancel_scope.cancel()
        warmup = self.warmup
        timed = self.count - warmup
        first_send = self.send_ns[warmup]
        elapsed = (finished - first_send) / 1e9
        latencies = [(max(times[i] for times in self.receive_ns) - self.send_ns[i]) / 1e9
                     for i in range(warmup, self.count)]
        delivered_bytes = timed * len(template) * self.slaves
        return {
            "workload": "fanout",
            "target": args.target,
            "slaves": self.slaves,
            "size": len(template),
            "count": timed,
            "warmup_messages": warmup,
            "elapsed_s": elapsed,
            "setup_s": (self.send_ns[0] - started) / 1e9,
            "messages_per_s": timed / elapsed,
            "delivered_bytes_per_s": delivered_bytes / elapsed,
            **latency_summary(latencies),
            **figures,
            "out_of_order": self.out_of_order,
            "snapshots_sent": self.snapshots_sent,
            # Near 1.0: the load generator, not the server, may be what limits the figure.
            "loadgen_cpu_share": own_cpu / ((time.perf_counter_ns() - started) / 1e9),
        }


