"""``latejoin`` (relay only): a session holding a snapshot and ``--count`` mutations; the time from a
new slave's join request until it has received the latest message."""

from __future__ import annotations

import os
import time

import trio

from relay import Client, ClientConnection
from benchmarks.loadgen.procstats import Server
from benchmarks.loadgen.readers import drain
from benchmarks.loadgen.stamp import MUTATION_KIND, SNAPSHOT_KIND, STAMP, make_template, read_stamp
from benchmarks.loadgen.wire import OP_BINARY, encode_client_frame


class LateJoin:
    """relay only: how long a new slave takes to be current in a session with a long history."""

    def __init__(self, args) -> None:
        self.args = args

    async def _current(self, connection: ClientConnection, last_index: int) -> int:
        """Read until the message ``last_index`` arrives; the bytes received on the way."""
        received = 0
        while True:
            for payload in await connection.receive_batch():
                received += len(payload)
                stamp = read_stamp(payload)
                if stamp is not None and stamp[2] == last_index:
                    return received

    async def main(self) -> dict:
        args = self.args
        if args.target != "relay":
            raise SystemExit("late join is relay-only: the peers have no catch-up")
        server = Server(args.server_pid)
        mask = os.urandom(4)
        with trio.fail_after(args.timeout_s):
            client = Client(args.host, args.port)
            created = await client.create_session()
            session = created["session"]
            master = await client.connect(session, created["master_token"])
            snapshot, snapshot_offset = make_template(args.snapshot_bytes, SNAPSHOT_KIND)
            STAMP.pack_into(snapshot, snapshot_offset, time.perf_counter_ns(), 0)
            frames = [encode_client_frame(OP_BINARY, snapshot, mask)]
            mutation, mutation_offset = make_template(args.size, MUTATION_KIND)
            for index in range(1, args.count + 1):
                STAMP.pack_into(mutation, mutation_offset, time.perf_counter_ns(), index)
                frames.append(encode_client_frame(OP_BINARY, mutation, mask))
            last_index = args.count
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, master)
                # A slave present from the start: once it has everything, so has the history.
                joined = await client.join(session, agent="witness")
                witness = await client.connect(session, joined["slave_token"])
                for frame in frames:
                    await master.send_raw(frame)
                await self._current(witness, last_index)
                nursery.start_soon(drain, witness)
                server.start()
                times, connect_times, caught_up_bytes = [], [], 0
                for attempt in range(args.joins):
                    started = time.perf_counter()
                    joined = await client.join(session, agent=f"late-{attempt}")
                    late = await client.connect(session, joined["slave_token"])
                    connected = time.perf_counter()
                    caught_up_bytes = await self._current(late, last_index)
                    finished = time.perf_counter()
                    late.sock.close()  # not read any more: no close handshake needed
                    times.append(finished - started)
                    connect_times.append(connected - started)
                figures = server.figures(args.joins, caught_up_bytes * args.joins)
                nursery.cancel_scope.cancel()
        times.sort()
        return {
            "workload": "latejoin",
            "target": args.target,
            "snapshot_bytes": args.snapshot_bytes,
            "mutations": args.count,
            "mutation_bytes": args.size,
            "joins": args.joins,
            "late_join_s": times[len(times) // 2],
            "late_join_all_s": times,
            "join_and_connect_s": sorted(connect_times)[len(connect_times) // 2],
            "caught_up_bytes": caught_up_bytes,
            "catch_up_bytes_per_s": caught_up_bytes / times[len(times) // 2],
            **figures,
        }


