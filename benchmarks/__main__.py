"""``python -m benchmarks``: list the suites; ``python -m benchmarks SUITE [options]``: run one."""

from __future__ import annotations

import importlib
import sys

#: suite name -> (module with a ``main(argv) -> int``, what it measures)
SUITES = {
    "fastpath": ("benchmarks.fastpath",
                 "relay's Cython and pure twins vs wsproto, websockets, SimpleCookie and "
                 "cassandra-driver: frame decoding, unmasking, frame encoding, cookies, tokens"),
    "fanout": ("benchmarks.fanout",
               "relay vs picows, websockets, aiohttp (uvloop), trio-websocket and iperf3: fan-out "
               "1 -> 1/4/16, mixed trace, return path, idle connections, late join, a 1 KiB-16 MiB sweep "
               "(--quick: ~2 min, --sweep: the sweep only); installs what it needs first (see setup)"),
    "capacity": ("benchmarks.capacity",
                 "sessions one node holds (1 master + 2 slaves, 20 x 2 KiB/s, 1 MiB/min) with p99 under 50 ms, "
                 "and its memory, as sessions are added, vs picows (--quick: < 3 min)"),
    "setup": ("benchmarks._setup",
              "install what fanout measures against when missing: the bench extra (into a venv only) "
              "and Debian's iperf3 (as root)"),
    "longpoll": ("benchmarks.longpoll",
                 "long-poll GET cycles per second with a new connection per GET against one kept-alive "
                 "connection (~20 s)"),
    "cluster": ("benchmarks.cluster",
                "a cluster of relay nodes with redis-server: the forwarded hop against a direct connection, "
                "and failover time over 20 kills -9 (--quick: ~1.5 min)"),
    "failover_copy": ("benchmarks.failover_copy",
                      "the failover copy (issue 11): fan-out 1 -> 4 with --failover-copy true vs false (throughput, "
                      "node and Redis CPU), and failover over 20 kills -9 behind nginx with the copy vs snapshot-and-"
                      "resync (time, bytes re-sent): ~10 min (--quick ~4 min)"),
    "transports": ("benchmarks.transports",
                   "long-polling vs WebSocket for the same traffic (1 KiB mutations, 1 MiB snapshots), "
                   "1 master -> 4 slaves: throughput and p50/p99 latency, ratios (~1 min)"),
    "ring": ("benchmarks.ring",
             "token ring lookups (owner, replicas, successors) vs cassandra-driver's TokenMap, the token "
             "allocator's balance and churn vs seeded random placement (~5 s; --quick ~2 s)"),
    "tls": ("benchmarks.tls",
            "fan-out 1 -> 4 over TLS (WSS) at 1 KiB, 64 KiB and 1 MiB: relay against picows over TLS and "
            "against relay's own plaintext; throughput and server CPU per delivered message (~3 min)"),
    "stall": ("benchmarks.stall",
              "the worst stall of a node's loop under long-poll and WebSocket floods (scripts/flood.py)"),
}


def print_suites() -> None:
    print("usage: python -m benchmarks SUITE [--help | suite options]\n\nsuites:")
    for name, (_, description) in SUITES.items():
        print(f"  {name:<10} {description}")
    print("\nResults are saved under benchmarks/results/ (see benchmarks/README.md).")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "list"):
        print_suites()
        return 0
    name, *rest = argv
    if name not in SUITES:
        print(f"unknown suite {name!r}\n", file=sys.stderr)
        print_suites()
        return 2
    return importlib.import_module(SUITES[name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
