"""Soak: waves of sessions joining, sending and leaving a relay process; nothing may leak.

    python scripts/soak.py [--seconds 120] [--sessions-per-wave 50] [--slaves 3] [--messages 40]

A relay node runs in its own process.  Each wave runs many sessions at once: create, a master and
slaves connect, the master sends a snapshot and mutations that every slave must receive in order,
a slave leaves and comes back with ``after=SEQ``, then the master ends the session.  Between waves
the node's private ``/metrics`` gives its resident memory, open file descriptors and trio tasks.
The first wave warms allocators and caches and sets the baseline; at the end the node must be
back to it: the same descriptors and tasks, and memory within a tolerance (CPython's allocator
keeps some arenas).  Prints the figures and exits non-zero on a leak.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import trio

import relay

ROOT = Path(__file__).resolve().parent.parent
MEMORY_TOLERANCE_BYTES = 16 * 1024 * 1024
SETTLE_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def scrape(port: int) -> dict:
    client = relay.Client("127.0.0.1", port)
    status, _headers, body = await client.request("GET", "/metrics")
    assert status == 200, status
    values = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
    return values


def figures(metrics: dict) -> dict:
    connections = sum(v for k, v in metrics.items() if k.startswith("relay_connections{"))
    return {
        "rss_bytes": int(metrics["process_resident_memory_bytes"]),
        "open_fds": int(metrics["process_open_fds"]),
        "tasks": int(metrics["relay_trio_tasks"]),
        "sessions": int(metrics["relay_sessions"]),
        "connections": int(connections),
    }


async def one_session(client: relay.Client, slaves: int, messages: int, index: int) -> int:
    created = await client.create_session()
    session = created["session"]
    master = await client.connect(session, created["master_token"])
    joined = [await client.join(session, agent=f"soak-{index}-{n}") for n in range(slaves)]
    connections = [await client.connect(session, j["slave_token"]) for j in joined]
    await master.send("snapshot", msgpack.packb(b"<html>" + b"x" * 20_000 + b"</html>"))
    for n in range(messages):
        await master.send("mutation", msgpack.packb(b"m" * (200 + 37 * n)))
    received = 0
    last_seq = 0
    for connection in connections:
        mutations = 0
        while mutations < messages:
            envelope = await connection.receive()
            if envelope.kind == "mutation":
                mutations += 1
                received += 1
            last_seq = max(last_seq, envelope.seq)
    # One slave leaves and resumes where it was.
    await connections[0].close()
    connections[0] = await client.connect(session, joined[0]["slave_token"], after=last_seq)
    hello = await connections[0].receive()
    assert hello.kind == "hello" and hello.decode()["catchup"] == "resume", hello.decode()
    await client.end_session(session, created["master_token"])
    for connection in connections + [master]:
        await connection.close()
    return received


async def wave(port: int, sessions: int, slaves: int, messages: int) -> int:
    client = relay.Client("127.0.0.1", port)
    totals = []

    async def run(index):
        totals.append(await one_session(client, slaves, messages, index))

    async with trio.open_nursery() as nursery:
        for index in range(sessions):
            nursery.start_soon(run, index)
    return sum(totals)


async def settle(private_port: int) -> dict:
    """Wait until the node has no session and no connection left, then read its figures."""
    with trio.fail_after(SETTLE_TIMEOUT_S):
        while True:
            current = figures(await scrape(private_port))
            # The scrape itself is one connection.
            if current["sessions"] == 0 and current["connections"] == 0:
                await trio.sleep(0.5)
                return figures(await scrape(private_port))
            await trio.sleep(0.2)


async def soak(seconds: float, sessions: int, slaves: int, messages: int, report=print) -> dict:
    public_port, private_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--listen", f"127.0.0.1:{public_port}",
         "--private-listen", f"127.0.0.1:{private_port}", "--log-level", "warning",
         "--max-connections", "100000", "--join-policy", "open", "--create-burst", "1000000",
         "--join-burst", "1000000"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdout.readline()  # listening
        started = time.monotonic()
        total_messages = await wave(public_port, sessions, slaves, messages)
        baseline = await settle(private_port)
        report(f"baseline after warm-up wave: {baseline}")
        waves = 1
        total_sessions = sessions
        peak_rss = baseline["rss_bytes"]
        while time.monotonic() - started < seconds:
            total_messages += await wave(public_port, sessions, slaves, messages)
            waves += 1
            total_sessions += sessions
            current = figures(await scrape(private_port))
            peak_rss = max(peak_rss, current["rss_bytes"])
            report(f"wave {waves}: {total_sessions} sessions, {total_messages} messages delivered, "
                   f"rss {current['rss_bytes'] / 2**20:.1f} MiB")
        final = await settle(private_port)
        result = {
            "seconds": time.monotonic() - started,
            "waves": waves,
            "sessions": total_sessions,
            "slaves_per_session": slaves,
            "messages_delivered": total_messages,
            "baseline": baseline,
            "final": final,
            "peak_rss_bytes": peak_rss,
            "rss_growth_bytes": final["rss_bytes"] - baseline["rss_bytes"],
            "leaks": [],
        }
        if final["open_fds"] != baseline["open_fds"]:
            result["leaks"].append(f"file descriptors: {baseline['open_fds']} -> {final['open_fds']}")
        if final["tasks"] != baseline["tasks"]:
            result["leaks"].append(f"trio tasks: {baseline['tasks']} -> {final['tasks']}")
        if result["rss_growth_bytes"] > MEMORY_TOLERANCE_BYTES:
            result["leaks"].append(f"memory: grew {result['rss_growth_bytes'] / 2**20:.1f} MiB")
        return result
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--sessions-per-wave", type=int, default=50)
    parser.add_argument("--slaves", type=int, default=3)
    parser.add_argument("--messages", type=int, default=40)
    args = parser.parse_args(argv)
    result = trio.run(soak, args.seconds, args.sessions_per_wave, args.slaves, args.messages)
    print(result)
    if result["leaks"]:
        print("LEAKS:", "; ".join(result["leaks"]))
        return 1
    print(f"no leak: {result['sessions']} sessions in {result['waves']} waves, "
          f"rss {result['baseline']['rss_bytes'] / 2**20:.1f} -> {result['final']['rss_bytes'] / 2**20:.1f} MiB "
          f"(peak {result['peak_rss_bytes'] / 2**20:.1f}), fds {result['final']['open_fds']}, "
          f"tasks {result['final']['tasks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
