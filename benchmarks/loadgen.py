"""The one load generator for every server of the fan-out benchmarks (its own process, its own core).

It speaks WebSocket with relay's Cython fast path (masked frames out, frames parsed in bulk in),
so that it is not the bottleneck.  Against relay it drives a real session (HTTP create, master,
slaves joining through the public endpoints); against a peer it connects ``/sub`` N times and
``/pub`` once.  Every message is the same envelope bytes ``["mutation", 0, bin]`` for every
server, whose body starts with the send time and the message index, so that each subscriber can
compute latency and check order.

    python -m benchmarks.loadgen --target relay --port 8700 --slaves 4 --size 1024 --count 20000

prints one JSON object: messages/s and bytes/s delivered, latency percentiles from the publisher's
send to the last subscriber's receive, and the server's CPU time over the run (``--server-pid``).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import struct
import sys
import time

import msgpack
import trio

from relay._accel import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, encode_client_frame, peek_envelope
from relay._client import Client, ClientConnection
from relay._netio import Broken, Yielder, recv_into, send_all

STAMP = struct.Struct("<qI")  # send time (perf_counter_ns), message index
RECEIVE_BUFFER_BYTES = 1024 * 1024
BIN_HEADER_LENGTH = {0xC4: 2, 0xC5: 3, 0xC6: 5}
MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024
MAX_IN_FLIGHT_MESSAGES = 2000
TIMEOUT_S = 120.0


def server_cpu_seconds(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


def server_peak_rss_bytes(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def make_template(size: int, kind: str = "mutation") -> tuple[bytearray, int]:
    """An envelope of ``size`` bytes in all whose body (a msgpack bin) starts with the stamp."""
    body_length = max(size - 16, STAMP.size)
    for _ in range(3):  # the bin and array headers depend on the length: converge on ``size``
        envelope = msgpack.packb([kind, 0, bytes(body_length)], use_bin_type=True)
        body_length += size - len(envelope)
        body_length = max(body_length, STAMP.size)
    envelope = bytearray(msgpack.packb([kind, 0, bytes(body_length)], use_bin_type=True))
    _kind, _seq, offset = peek_envelope(bytes(envelope))
    return envelope, offset + BIN_HEADER_LENGTH[envelope[offset]]


class Run:
    def __init__(self, args) -> None:
        self.args = args
        self.count = args.count
        self.slaves = args.slaves
        self.received = [0] * args.slaves
        self.receive_ns = [array.array("q", bytes(8 * args.count)) for _ in range(args.slaves)]
        self.send_ns = array.array("q", bytes(8 * args.count))
        self.out_of_order = 0
        self.progress = trio.Event()
        self.window = max(1, min(MAX_IN_FLIGHT_MESSAGES, MAX_IN_FLIGHT_BYTES // max(args.size, 1)))

    async def connect(self):
        args = self.args
        if args.target == "relay":
            client = Client(args.host, args.port)
            created = await client.create_session()
            subscribers = []
            for index in range(self.slaves):
                joined = await client.join(created["session"], agent=f"bench-{index}")
                subscribers.append(await client.connect(created["session"], joined["slave_token"]))
            publisher = await client.connect(created["session"], created["master_token"])
            # A snapshot first, as a real master would: slaves then hold a consistent state.
            await publisher.send("snapshot", msgpack.packb(b"<html></html>"))
        else:
            subscribers = [await ClientConnection.open(args.host, args.port, "/sub", headers=[("host", args.host)])
                           for _ in range(self.slaves)]
            publisher = await ClientConnection.open(args.host, args.port, "/pub", headers=[("host", args.host)])
            await trio.sleep(0.2)  # let the server register every subscriber before the first message
        return publisher, subscribers

    async def subscriber(self, index: int, connection: ClientConnection) -> None:
        sock = connection.sock
        decoder = connection.decoder
        buffer = memoryview(bytearray(RECEIVE_BUFFER_BYTES))
        yielder = Yielder()
        receive_ns = self.receive_ns[index]
        received = 0
        expected = 0
        count = self.count
        clock = time.perf_counter_ns
        unpack_from = STAMP.unpack_from
        pending = list(connection.pending)
        connection.pending.clear()
        while received < count:
            n = 0
            if pending:
                events = pending
                pending = []
            else:
                n = await recv_into(sock, buffer, yielder)
                if n == 0:
                    raise Broken(f"subscriber {index} lost its connection after {received} messages")
                decoder.feed(buffer[:n])
                events = []
                while True:
                    event = decoder.next_event()
                    if event is None:
                        break
                    events.append(event)
            now = clock()
            for opcode, payload in events:
                if opcode == OP_BINARY:
                    kind, _seq, offset = peek_envelope(payload)
                    if kind != "mutation":
                        continue
                    _sent, message_index = unpack_from(payload, offset + BIN_HEADER_LENGTH[payload[offset]])
                    if message_index != expected:
                        self.out_of_order += 1
                    expected = message_index + 1
                    receive_ns[message_index] = now
                    received += 1
                elif opcode == OP_PING:
                    await send_all(sock, encode_client_frame(OP_PONG, payload), yielder)
                elif opcode == OP_CLOSE:
                    raise Broken(f"subscriber {index} closed by the server after {received} messages")
            self.received[index] = received
            self.progress.set()
            await yielder.account(n)

    async def publisher(self, connection: ClientConnection, template: bytearray, stamp_offset: int) -> None:
        sock = connection.sock
        yielder = Yielder()
        mask = os.urandom(4)
        window = self.window
        clock = time.perf_counter_ns
        pack_into = STAMP.pack_into
        for index in range(self.count):
            while index - min(self.received) >= window:
                self.progress = trio.Event()
                await self.progress.wait()
            now = clock()
            pack_into(template, stamp_offset, now, index)
            self.send_ns[index] = now
            await send_all(sock, encode_client_frame(OP_BINARY, template, mask), yielder)

    async def drain(self, connection: ClientConnection) -> None:
        """Read what the server sends the publisher (hello, presence), answering pings."""
        sock = connection.sock
        yielder = Yielder()
        buffer = memoryview(bytearray(65536))
        while True:
            n = await recv_into(sock, buffer, yielder)
            if n == 0:
                return
            connection.decoder.feed(buffer[:n])
            while (event := connection.decoder.next_event()) is not None:
                if event[0] == OP_PING:
                    await send_all(sock, encode_client_frame(OP_PONG, event[1]), yielder)
            await yielder.account(n)

    async def main(self) -> dict:
        args = self.args
        template, stamp_offset = make_template(args.size)
        with trio.fail_after(TIMEOUT_S):
            publisher, subscribers = await self.connect()
            cpu_before = server_cpu_seconds(args.server_pid)
            started = time.perf_counter_ns()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.drain, publisher)
                async with trio.open_nursery() as work:
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.subscriber, index, subscriber)
                    work.start_soon(self.publisher, publisher, template, stamp_offset)
                finished = max(max(times) for times in self.receive_ns)
                cpu_after = server_cpu_seconds(args.server_pid)
                nursery.cancel_scope.cancel()
        first_send = self.send_ns[0]
        elapsed = (finished - first_send) / 1e9
        latencies = sorted(
            (max(times[i] for times in self.receive_ns) - self.send_ns[i]) / 1e9 for i in range(self.count))
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        delivered_bytes = self.count * len(template) * self.slaves
        return {
            "target": args.target,
            "slaves": self.slaves,
            "size": len(template),
            "count": self.count,
            "elapsed_s": elapsed,
            "setup_s": (first_send - started) / 1e9,
            "messages_per_s": self.count / elapsed,
            "delivered_bytes_per_s": delivered_bytes / elapsed,
            "latency_p50_s": _percentile(latencies, 0.50),
            "latency_p99_s": _percentile(latencies, 0.99),
            "latency_p999_s": _percentile(latencies, 0.999),
            "server_cpu_s": cpu,
            "server_cpu_s_per_message": None if cpu is None else cpu / self.count,
            "server_cpu_s_per_mb": None if cpu is None else cpu / (delivered_bytes / 1e6),
            "server_peak_rss_bytes": server_peak_rss_bytes(args.server_pid),
            "out_of_order": self.out_of_order,
        }


def _percentile(sorted_values: list, fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["relay", "plain"], required=True,
                        help="relay: a real session; plain: a peer broadcast server (/pub, /sub)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slaves", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="envelope bytes per message")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--server-pid", type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = trio.run(Run(args).main)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
