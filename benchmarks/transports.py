"""``python -m benchmarks.transports``: long-polling against WebSocket for the same traffic.

The seed says co-browsing "still functions" without WebSocket, on transports "that perform
significantly slower": this measures how much.  One in-process node, 1 master and 4 slaves, all on
one transport: WebSocket through ``relay.Client``, or long-polling through the minimal kept-alive
client below (``relay.Client`` speaks the HTTP API and WebSocket only).  Two workloads: 1 KiB
mutations and 1 MiB snapshots.  The master keeps at most a window of messages in flight (so the
relay's slow-slave policy never drops any, and both transports carry exactly the same messages);
each body carries its send time, each slave notes when it arrives.  Rounds are interleaved (WebSocket,
long-polling, WebSocket...) and the ratios are of medians over rounds, measured in the same run.

    python -m benchmarks.transports [--rounds 3] [--small 2000] [--large 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field

import h11
import msgpack
import trio

import relay
from benchmarks._report import machine_description

SLAVES = 4
KIB = 1024
MIB = 1024 * 1024
WINDOWS = {KIB: 32, MIB: 2}  # messages in flight per workload: below every slave's queue bound
ROUND_TIMEOUT_S = 120
HTTP_READ_BYTES = 1024 * 1024


class KeptAliveHttp:
    """HTTP/1.1 requests one after the other on one connection: what a browser's fetch does."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> "KeptAliveHttp":
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def request(self, method: str, target: str, body: bytes = b"") -> bytes:
        headers = [("host", "relay"), ("content-length", str(len(body)))]
        if body:
            headers.append(("content-type", "application/msgpack"))
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        chunks, status = [], None
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(HTTP_READ_BYTES))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()
                if status not in (200, 204):
                    raise RuntimeError(f"{method} {target.split('?')[0]} answered {status}: {b''.join(chunks)[:200]!r}")
                return b"".join(chunks)
            else:
                raise RuntimeError(f"connection ended: {event!r}")

    async def aclose(self) -> None:
        await self.stream.aclose()


class LongPollPeer:
    """One participant on long-polling: POST envelopes, GET what is queued (with after=SEQ)."""

    def __init__(self, port: int, session: str, token: str) -> None:
        self.port, self.session, self.token = port, session, token
        self.last_seq = None
        self.epoch = None
        self.poster = None
        self.getter = None

    async def open(self) -> "LongPollPeer":
        self.poster = await KeptAliveHttp.open(self.port)
        self.getter = await KeptAliveHttp.open(self.port)
        return self

    async def send(self, kind: str, body: bytes) -> None:
        # [kind, 0, body] with the body's msgpack bytes as they are (fixarray of 3, kind, seq 0)
        envelope = b"\x93" + msgpack.packb(kind) + b"\x00" + body
        await self.poster.request("POST", f"/cobrowse/poll/{self.session}?token={self.token}", envelope)

    async def receive_batch(self) -> list:
        target = f"/cobrowse/poll/{self.session}?token={self.token}"
        if self.last_seq is not None and self.epoch is not None:
            target += f"&after={self.last_seq}&epoch={self.epoch}"
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * MIB)
        unpacker.feed(await self.getter.request("GET", target))
        envelopes = list(unpacker)
        for kind, seq, body, _sender in envelopes:
            if kind == "hello":
                self.epoch = body.get("epoch")
            if seq > 0 and kind not in ("pointer", "control"):
                self.last_seq = seq
        return envelopes

    async def aclose(self) -> None:
        for connection in (self.poster, self.getter):
            if connection is not None:
                await connection.aclose()


class WebSocketPeer:
    """One participant on relay.Client's WebSocket."""

    def __init__(self, connection) -> None:
        self.connection = connection

    async def send(self, kind: str, body: bytes) -> None:
        await self.connection.send(kind, body)

    async def receive_batch(self) -> list:
        envelope = await self.connection.receive()
        return [(envelope.kind, envelope.seq, msgpack.unpackb(bytes(envelope.body), raw=False), envelope.sender)]

    async def aclose(self) -> None:
        await self.connection.close()


def envelope_body(sequence: int, size: int) -> bytes:
    """A body of about ``size`` bytes that says when it was sent (the relay never decodes it)."""
    return msgpack.packb([sequence, time.perf_counter(), b"m" * (size - 24)])


@dataclass
class RoundResult:
    transport: str
    size: int
    messages: int
    seconds: float
    latencies_s: list = field(default_factory=list)

    @property
    def messages_per_s(self) -> float:
        return self.messages * SLAVES / self.seconds

    @property
    def mib_per_s(self) -> float:
        return self.messages * SLAVES * self.size / MIB / self.seconds


async def one_round(port: int, transport: str, size: int, count: int) -> RoundResult:
    client = relay.Client("127.0.0.1", port)
    created = await client.create_session()
    joined = [await client.join(created["session"], agent=f"bench-{i}") for i in range(SLAVES)]

    async def peer(token: str):
        if transport == "websocket":
            return WebSocketPeer(await client.connect(created["session"], token))
        return await LongPollPeer(port, created["session"], token).open()

    master = await peer(created["master_token"])
    slaves = [await peer(item["slave_token"]) for item in joined]
    window = WINDOWS[size]
    received = [0] * SLAVES
    progress = trio.Condition()
    latencies = []

    async def listen(index: int, slave) -> None:
        while received[index] < count:
            for kind, _seq, body, _sender in await slave.receive_batch():
                if kind == "mutation" or kind == "snapshot":
                    latencies.append(time.perf_counter() - body[1])
                    received[index] += 1
                    async with progress:
                        progress.notify_all()

    async def drain_master() -> None:
        while True:  # the master's own GET loop (hello, presence): a connected master polls too
            await master.receive_batch()

    kind = "mutation" if size <= KIB else "snapshot"
    started = time.perf_counter()
    with trio.fail_after(ROUND_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for index, slave in enumerate(slaves):
                nursery.start_soon(listen, index, slave)
            nursery.start_soon(drain_master)
            for sequence in range(count):
                async with progress:
                    while sequence - min(received) >= window:
                        await progress.wait()
                await master.send(kind, envelope_body(sequence, size))
            async with progress:
                while min(received) < count:
                    await progress.wait()
            nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    for item in slaves + [master]:
        await item.aclose()
    await client.end_session(created["session"], created["master_token"])
    return RoundResult(transport, size, count, elapsed, latencies)


def percentile(values: list, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(rounds: int, small: int, large: int) -> list:
    config = relay.Config(listen="127.0.0.1:0", private_listen="127.0.0.1:0", node_name="bench", log_level="error",
                          join_policy="open", create_burst=1000, join_burst=1000)
    results = []
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(relay.serve, config)
        for _ in range(rounds):
            for size, count in ((KIB, small), (MIB, large)):
                for transport in ("websocket", "long-polling"):  # interleaved: the same conditions
                    results.append(await one_round(listening.public_port, transport, size, count))
        nursery.cancel_scope.cancel()
    return results


def report(results: list) -> None:
    print(machine_description())
    print(f"1 master -> {SLAVES} slaves, one in-process node; medians over rounds (spread: min..max)\n")
    print(f"{'workload':<16} {'transport':<13} {'msgs/s':>10} {'MiB/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for size, name in ((KIB, "1 KiB mutation"), (MIB, "1 MiB snapshot")):
        summary = {}
        for transport in ("websocket", "long-polling"):
            runs = [r for r in results if r.size == size and r.transport == transport]
            if not runs:
                continue
            rates = [r.messages_per_s for r in runs]
            p50 = statistics.median(percentile(r.latencies_s, 0.50) for r in runs) * 1000
            p99 = statistics.median(percentile(r.latencies_s, 0.99) for r in runs) * 1000
            summary[transport] = (statistics.median(rates), p50, p99)
            print(f"{name:<16} {transport:<13} {statistics.median(rates):>10.0f} "
                  f"{statistics.median(r.mib_per_s for r in runs):>9.1f} {p50:>9.2f} {p99:>9.2f}"
                  f"   (msgs/s {min(rates):.0f}..{max(rates):.0f})")
        if len(summary) == 2:
            ws, lp = summary["websocket"], summary["long-polling"]
            print(f"{'':<16} ratio: WebSocket {ws[0] / lp[0]:.2f}x the throughput; long-polling "
                  f"{lp[1] / ws[1]:.2f}x the p50 and {lp[2] / ws[2]:.2f}x the p99 latency")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per transport and workload")
    parser.add_argument("--small", type=int, default=2000, help="1 KiB mutations per round")
    parser.add_argument("--large", type=int, default=40, help="1 MiB snapshots per round")
    options = parser.parse_args(argv)
    report(trio.run(run, options.rounds, options.small, options.large))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
