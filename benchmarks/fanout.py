"""Fan-out: 1 master -> N slaves through relay and through peer servers, interleaved, in one run.

    python -m benchmarks fanout [--quick] [--servers relay,trio-websocket,...] [--sizes 1024,1048576]
                                [--slaves 4] [--rounds 3] [--json PATH]

Each measurement starts the server in its own process pinned to core 0 and the load generator
(benchmarks/loadgen.py) in another pinned to core 1, runs a fixed number of messages, and stops
the server.  Servers take turns within every round (the order rotates), and the median of the
rounds is kept, so a noisy phase of the machine hurts every server alike.  Figures are ratios
relay / peer measured in the same run; absolute numbers are printed for context only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._report import format_size, machine_description, print_table, save_json

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
LOADGEN_CORE = 1
START_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 180.0

# name -> (command line after "python", how the load generator talks to it)
SERVERS = {
    "relay": (["-m", "relay", "serve", "--log-level", "warning", "--slave-queue-bytes", "67108864",
               "--backlog-bytes", "33554432", "--history-hard-limit-bytes", "67108864"], "relay"),
    "picows": (["-m", "benchmarks.servers.picows_server"], "plain"),
    "websockets": (["-m", "benchmarks.servers.websockets_server"], "plain"),
    "aiohttp": (["-m", "benchmarks.servers.aiohttp_server"], "plain"),
    "trio-websocket": (["-m", "benchmarks.servers.trio_websocket_server"], "plain"),
}
PEER_PACKAGES = ["picows", "uvloop", "websockets", "aiohttp", "trio-websocket", "trio"]

# Messages per measurement, by size: enough for about a second of relay's throughput.
QUICK_COUNTS = {1024: 10_000, 16 * 1024: 4_000, 50 * 1024: 2_000, 1024 * 1024: 150, 5 * 1024 * 1024: 40}
FULL_COUNTS = {1024: 30_000, 16 * 1024: 10_000, 50 * 1024: 5_000, 1024 * 1024: 400, 5 * 1024 * 1024: 100}

# Targets from the issues: (server, size, minimum ratio relay/peer on messages/s).
TARGETS = [
    ("trio-websocket", 1024, 2.5, "issue 3: >= 2.5x trio-websocket at 1 KiB"),
    ("trio-websocket", 1024 * 1024, 2.0, "issue 3: >= 2x trio-websocket at 1 MiB"),
    ("picows", 1024, 1.0, "issue 5: >= 1.0x picows at 1 KiB"),
    ("picows", 1024 * 1024, 1.0, "issue 5: >= 1.0x picows at 1 MiB"),
    ("trio-websocket", 1024, 3.0, "issue 5: >= 3x trio-websocket at 1 KiB"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pinned(core: int):
    def pin():
        try:
            os.sched_setaffinity(0, {core})
        except (AttributeError, OSError):
            pass
    return pin


def start_server(name: str) -> tuple[subprocess.Popen, int]:
    args, _mode = SERVERS[name]
    port = free_port()
    if name == "relay":
        command = [sys.executable, *args, "--listen", f"127.0.0.1:{port}", "--private-listen", f"127.0.0.1:{free_port()}"]
    else:
        command = [sys.executable, *args, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_pinned(SERVER_CORE), env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + START_TIMEOUT_S
    line = process.stdout.readline()  # relay prints its address, peers print READY: both mean listening
    if not line or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"{name} did not start: {process.stderr.read()[-2000:]}")
    return process, port


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(name: str, size: int, slaves: int, count: int) -> dict:
    process, port = start_server(name)
    try:
        command = [sys.executable, "-m", "benchmarks.loadgen", "--target", SERVERS[name][1], "--port", str(port),
                   "--slaves", str(slaves), "--size", str(size), "--count", str(count),
                   "--server-pid", str(process.pid)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              preexec_fn=_pinned(LOADGEN_CORE), env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed against {name}: {done.stderr[-3000:]}")
        return json.loads(done.stdout)
    finally:
        stop_server(process)


def summarize(samples: list) -> dict:
    """The median sample by messages/s (whole sample, so its latencies belong with it)."""
    ordered = sorted(samples, key=lambda s: s["messages_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["messages_per_s_samples"] = [s["messages_per_s"] for s in samples]
    median["messages_per_s_spread"] = (max(s["messages_per_s"] for s in samples) /
                                       min(s["messages_per_s"] for s in samples))
    return median


def run(servers: list, sizes: list, slaves: int, rounds: int, counts: dict, progress=print) -> dict:
    results: dict = {size: {name: [] for name in servers} for size in sizes}
    total = len(sizes) * rounds * len(servers)
    done = 0
    for size in sizes:
        for round_index in range(rounds):
            shift = round_index % len(servers)
            for name in servers[shift:] + servers[:shift]:
                done += 1
                progress(f"[{done}/{total}] {name:<15} {format_size(size):>7} x{slaves} round {round_index + 1}",
                         end="", flush=True)
                sample = measure(name, size, slaves, counts[size])
                results[size][name].append(sample)
                progress(f"  {sample['messages_per_s']:>10.0f} msg/s  p99 {sample['latency_p99_s'] * 1e3:7.1f} ms")
    return {size: {name: summarize(samples) for name, samples in by_server.items()}
            for size, by_server in results.items()}


def report(summary: dict, servers: list, slaves: int) -> list:
    rows = []
    for size, by_server in summary.items():
        relay = by_server.get("relay")
        for name in servers:
            result = by_server[name]
            ratio = relay["messages_per_s"] / result["messages_per_s"] if relay else None
            rows.append([
                format_size(size), name, f"{result['messages_per_s']:.0f}",
                f"{result['delivered_bytes_per_s'] / 1e9:.3f}",
                f"{result['latency_p50_s'] * 1e3:.1f}", f"{result['latency_p99_s'] * 1e3:.1f}",
                f"{result['latency_p999_s'] * 1e3:.1f}",
                "-" if result["server_cpu_s_per_message"] is None else f"{result['server_cpu_s_per_message'] * 1e6:.1f}",
                "-" if result["server_peak_rss_bytes"] is None else f"{result['server_peak_rss_bytes'] / 2**20:.0f}",
                f"{result['messages_per_s_spread']:.2f}",
                "1.00" if name == "relay" else (f"{ratio:.2f}" if ratio else "-"),
            ])
    print_table(f"Fan-out 1 -> {slaves}: median of rounds (relay/peer = relay's messages/s over the peer's)",
                ["size", "server", "msg/s", "GB/s out", "p50 ms", "p99 ms", "p99.9 ms", "cpu us/msg",
                 "peak MiB", "spread", "relay/peer"], rows)
    verdicts = []
    for peer, size, minimum, label in TARGETS:
        by_server = summary.get(size, {})
        if peer in by_server and "relay" in by_server:
            ratio = by_server["relay"]["messages_per_s"] / by_server[peer]["messages_per_s"]
            verdicts.append({"target": label, "ratio": ratio, "minimum": minimum, "met": ratio >= minimum})
    if verdicts:
        print_table("Targets", ["target", "ratio", "verdict"],
                    [[v["target"], f"{v['ratio']:.2f}", "PASS" if v["met"] else "MISS"] for v in verdicts])
    return verdicts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="relay vs trio-websocket, 1 KiB and 1 MiB, 3 rounds")
    parser.add_argument("--servers", default=None, help=f"comma-separated, from: {', '.join(SERVERS)}")
    parser.add_argument("--sizes", default=None, help="comma-separated message sizes in bytes")
    parser.add_argument("--slaves", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="where to save the results (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.quick:
        servers = ["relay", "trio-websocket"]
        sizes = [1024, 1024 * 1024]
        counts = QUICK_COUNTS
    else:
        servers = list(SERVERS)
        sizes = [1024, 16 * 1024, 50 * 1024, 1024 * 1024, 5 * 1024 * 1024]
        counts = FULL_COUNTS
    if args.servers:
        servers = args.servers.split(",")
    if args.sizes:
        sizes = [int(size) for size in args.sizes.split(",")]
    unknown = [name for name in servers if name not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    counts = {size: counts.get(size, max(40, int(20_000 * 1024 / size))) for size in sizes}
    if "relay" in servers:
        servers = ["relay"] + [name for name in servers if name != "relay"]
    summary = run(servers, sizes, args.slaves, args.rounds, counts)
    verdicts = report(summary, servers, args.slaves)
    path = save_json("fanout", {
        "machine": machine_description(PEER_PACKAGES),
        "settings": {"servers": servers, "sizes": sizes, "slaves": args.slaves, "rounds": args.rounds,
                     "counts": counts, "server_core": SERVER_CORE, "loadgen_core": LOADGEN_CORE},
        "results": {str(size): by_server for size, by_server in summary.items()},
        "targets": verdicts,
    }, args.json)
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
