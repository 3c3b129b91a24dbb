"""The one load generator for every server of the fan-out benchmarks (its own process, its own core).

It speaks WebSocket through relay's public client (``relay.Client``, ``relay.ClientConnection``:
masked frames out, frames parsed in bulk in by the Cython fast path), so that it is not the
bottleneck.  Against relay it drives a real session (HTTP create, master, slaves joining through
the public endpoints); against a peer it connects ``/sub`` N times and ``/pub`` once.  Every timed
message is the same envelope ``[kind, 0, body]`` for every server, whose body carries a time stamp
and the message index (``stamp.py``), so that receivers can compute latency and check order.

The package, by responsibility:

* ``fanout``, ``mixed``, ``returnpath``, ``idle``, ``latejoin``: one workload each (``--workload``);
* ``capacity``: many sessions added step by step on one server (``python -m benchmarks.loadgen.capacity``,
  its own options: several URLs and server processes, one JSON line per step);
* ``stamp``: the timing stamp inside bodies and the message templates;
* ``readers``: ``drain`` and ``SkimReader`` (frame headers only, for large messages);
* ``sessions``: connecting publisher and subscribers to relay or a peer;
* ``procstats``: the server's CPU and memory from ``/proc``; ``latency``: percentiles;
* ``wire``: the one import from below relay's public API (``relay._accel``), and why.

    python -m benchmarks.loadgen --target relay --port 8700 --slaves 4 --size 1024 --count 20000

prints one JSON object (the figures, and ``latency_quantiles`` for CDF plots).
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from benchmarks.loadgen.fanout import MAX_IN_FLIGHT_BYTES, Fanout
from benchmarks.loadgen.idle import Idle
from benchmarks.loadgen.latejoin import LateJoin
from benchmarks.loadgen.latency import CDF_QUANTILES
from benchmarks.loadgen.mixed import Mixed
from benchmarks.loadgen.procstats import raise_fd_limit
from benchmarks.loadgen.returnpath import ReturnPath

__all__ = ["CDF_QUANTILES", "WORKLOADS", "main", "parse_args"]

TIMEOUT_S = 150.0
WORKLOADS = {"fanout": Fanout, "mixed": Mixed, "return": ReturnPath, "idle": Idle, "latejoin": LateJoin}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), default="fanout")
    parser.add_argument("--target", choices=["relay", "plain"], required=True,
                        help="relay: a real session; plain: a peer broadcast server (/pub, /sub)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscriber-port", type=int, default=None,
                        help="relay: the port the subscribers connect to (another node of a cluster: forwarded)")
    parser.add_argument("--tls-ca", default=None, metavar="FILE",
                        help="speak https:// and wss://, trusting this CA (benchmarks/tls.py)")
    parser.add_argument("--slaves", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="envelope bytes per (small) message")
    parser.add_argument("--count", type=int, default=10000, help="messages (latejoin: mutations in the history)")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--timeout-s", type=float, default=TIMEOUT_S)
    parser.add_argument("--window-bytes", type=int, default=MAX_IN_FLIGHT_BYTES,
                        help="fanout: bytes in flight (sent, not yet received by every subscriber) at most")
    parser.add_argument("--max-duration-s", type=float, default=3.0,
                        help="fanout: stop sending after this long even if --count is not reached")
    parser.add_argument("--snapshot-every-bytes", type=int, default=0,
                        help="fanout: after this many bytes of mutations send the next message as a snapshot "
                             "(0: mutations only)")
    mixed = parser.add_argument_group("mixed")
    mixed.add_argument("--rate", type=float, default=500.0, help="small messages per second")
    mixed.add_argument("--duration-s", type=float, default=8.0)
    mixed.add_argument("--snapshot-every-s", type=float, default=2.0)
    mixed.add_argument("--snapshot-sizes", default=f"{5 * 2**20},{2**20},{5 * 2**20},{3 * 2**20}",
                       help="comma-separated snapshot sizes in bytes, used in turn")
    idle = parser.add_argument_group("idle")
    idle.add_argument("--connections", type=int, default=10_000)
    idle.add_argument("--session-slaves", type=int, default=32, help="relay: slaves per session")
    late = parser.add_argument_group("latejoin")
    late.add_argument("--snapshot-bytes", type=int, default=5 * 2**20)
    late.add_argument("--joins", type=int, default=5, help="late joiners, one after the other (median kept)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    result = trio.run(WORKLOADS[args.workload](args).main)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

