"""``python -m benchmarks stall``: the longest time a flood keeps a relay node's trio loop from other work.

Runs the long-poll POST and WebSocket flood scenarios of scripts/flood.py, each against a fresh
node process, and reports per scenario the worst stall seen from outside: the largest of the
bystander session's worst latency (a mutation every 10 ms from its master to its slave, on other
connections) and the slowest ``GET /health``.  A node whose loop never blocks shows a few
milliseconds; one task that routes a whole flood without yielding shows as the time it took.

    python -m benchmarks stall [--seconds 4] [--scenario NAME ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from benchmarks._report import machine_description, print_table, save_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import flood  # noqa: E402  (scripts/flood.py: the harness this suite runs)

#: the scenarios whose stalls this suite measures: long-poll POSTs and WebSocket floods
STALL_SCENARIOS = ["poll-slave-pointer", "poll-master-mutation", "poll-slave-refused", "ws-slave-pointer",
                   "ws-master-mutation", "ws-slave-refused"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks stall", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="flood time per scenario (default 4)")
    parser.add_argument("--scenario", action="append", choices=list(flood.SCENARIOS_BY_NAME), metavar="NAME",
                        help=f"run only this scenario (repeatable; default: {', '.join(STALL_SCENARIOS)})")
    parser.add_argument("--json", metavar="PATH", help="where to save the results (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    names = args.scenario or STALL_SCENARIOS

    async def run_all():
        reports = []
        for name in names:
            report = await flood.run_scenario(flood.SCENARIOS_BY_NAME[name], args.seconds)
            print(flood.format_report(report), flush=True)
            reports.append(report)
        return reports

    reports = trio.run(run_all)
    rows = []
    results = []
    for report in reports:
        by = report["bystander"]
        stall = max(by["max_s"], report["health_max_s"])
        results.append({"scenario": report["scenario"], "worst_stall_s": stall, "bystander": by,
                        "health_max_s": report["health_max_s"], "implementation": report["implementation"],
                        "slowest_post_s": report["flooders"]["post_seconds_max"]})
        rows.append([report["scenario"], f"{stall * 1000:.0f}", f"{by['p99_s'] * 1000:.0f}",
                     f"{by['max_s'] * 1000:.0f}", f"{report['health_max_s'] * 1000:.0f}",
                     f"{report['flooders']['post_seconds_max'] * 1000:.0f}" if report["transport"] == "poll" else "-"])
    print_table(f"worst stall per scenario ({reports[0]['implementation'] if reports else ''})",
                ["scenario", "worst stall ms", "bystander p99 ms", "bystander max ms", "/health max ms",
                 "slowest POST ms"], rows)
    path = save_json("stall", {"machine": machine_description(), "seconds": args.seconds, "results": results},
                     args.json)
    print(f"saved {path}")
    return 0
