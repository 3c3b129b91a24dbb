"""``python -m benchmarks longpoll``: what keep-alive saves a long-polling client.

A long-poll slave receives a master's stream as fast as it can ask for it: each GET answers what is
queued.  Measured in one run, interleaved, against one in-process node: GET cycles per second and
messages per second when every GET opens a new TCP connection (as before keep-alive worked for
GETs) and when all GETs share one kept-alive connection.

    python -m benchmarks longpoll [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import h11
import msgpack
import trio

import relay
from benchmarks._report import machine_description

MESSAGE = msgpack.packb(b"m" * 200)  # a small mutation (SPEC 4: 200 B to 50 KB)


async def _get_fresh(client: relay.Client, target: str) -> bytes:
    _status, _headers, body = await client.request("GET", target)
    return body


class KeptAlive:
    """GETs one after the other on one HTTP/1.1 connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def get(self, target: str) -> bytes:
        data = self.conn.send(h11.Request(method="GET", target=target, headers=[("host", "relay")]))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()
                return body
            elif isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise RuntimeError(f"GET answered {event.status_code}")
            else:
                raise RuntimeError(f"connection ended: {event!r}")


def _count_envelopes(body: bytes) -> int:
    unpacker = msgpack.Unpacker()
    unpacker.feed(body)
    return sum(1 for _ in unpacker)


async def _round(mode: str, seconds: float, port: int, client: relay.Client) -> dict:
    created = await client.create_session()
    joined = await client.join(created["session"], agent="poller")
    master = await client.connect(created["session"], created["master_token"])
    target = f"/cobrowse/poll/{created['session']}?token={joined['slave_token']}"
    kept = KeptAlive(await trio.open_tcp_stream("127.0.0.1", port)) if mode == "kept-alive" else None
    cycles = messages = 0
    async with trio.open_nursery() as nursery:
        async def produce():
            while True:
                await master.send("mutation", MESSAGE)
                await trio.sleep(0)

        nursery.start_soon(produce)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            body = await (kept.get(target) if kept is not None else _get_fresh(client, target))
            cycles += 1
            messages += _count_envelopes(body)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    await master.close()
    if kept is not None:
        await kept.stream.aclose()
    return {"cycles_per_s": cycles / elapsed, "messages_per_s": messages / elapsed}


async def _run(seconds: float, rounds: int) -> dict:
    config = relay.Config(listen="127.0.0.1:0", private_listen="127.0.0.1:0", log_level="warning",
                          join_policy="open", poll_wait_s=1.0, create_burst=10_000, join_burst=10_000)
    results: dict = {"new connection per GET": [], "kept-alive": []}
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(relay.serve, config)
        client = relay.Client("127.0.0.1", listening.public_port)
        for index in range(rounds):
            order = ["new connection per GET", "kept-alive"][::1 if index % 2 == 0 else -1]  # interleaved
            for mode in order:
                results[mode].append(await _round(mode, seconds, listening.public_port, client))
        nursery.cancel_scope.cancel()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks longpoll", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round per mode (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args(argv)
    results = trio.run(_run, args.seconds, args.rounds)
    machine = machine_description()
    print(f"long-poll GET cycles, one slave, a master streaming 200 B mutations in the same process "
          f"({machine['cpu_count']} cores, {relay.implementation()})")
    print(f"{'mode':<24} {'GET cycles/s':>14} {'messages/s':>12}")
    medians = {}
    for mode, rows in results.items():
        cycles = statistics.median(r["cycles_per_s"] for r in rows)
        messages = statistics.median(r["messages_per_s"] for r in rows)
        medians[mode] = cycles
        print(f"{mode:<24} {cycles:>14,.0f} {messages:>12,.0f}")
    ratios = [kept["cycles_per_s"] / fresh["cycles_per_s"]
              for kept, fresh in zip(results["kept-alive"], results["new connection per GET"])]
    print(f"keep-alive / new connection: {statistics.median(ratios):.2f}x GET cycles "
          f"({min(ratios):.2f}..{max(ratios):.2f} over {len(ratios)} rounds); a faster cycle answers smaller "
          f"batches, so messages/s follows the producer, not the transport")
    return 0


if __name__ == "__main__":
    sys.exit(main())
