"""relay against the fastest Python WebSocket servers and the kernel's limit, in one run.

    python -m benchmarks fanout            # the full suite: about 15 minutes on a 2-core VM
    python -m benchmarks fanout --quick    # about 2 minutes: the cases the targets need
    python -m benchmarks fanout --sweep    # about 5 minutes: 1 -> 4 from 1 KiB to 16 MiB vs picows

Every measurement starts the server in its own process pinned to core 0 and the one load generator
(benchmarks/loadgen/) in another pinned to core 1, runs one workload, and stops the server.  For
each case the servers take turns within every round (the order rotates) and the median of the
rounds is kept, so that a noisy phase of the machine hurts every server alike.  Figures are ratios
against relay measured in the same run, taken round by round, with their spread (benchmarks/_stats.py):
a verdict is PASS or MISS only when every round agrees; absolute numbers are for context only.  iperf3's
single loopback TCP stream, pinned the same way, is the kernel's ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _setup
from benchmarks._report import KIB, MIB, format_size, machine_description, print_table, save_json
from benchmarks._stats import (MIN_RATIO_ROUNDS, compare_ratios, format_ratio, paired_ratios, ratio_stats,
                               verdict as spread_verdict)

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_RUN = ROOT / "benchmarks" / "results" / "reference" / "fanout-20261125T224011Z.json"
REFERENCE_LABEL = "2026-11-25 (before the sender stamp)"
MAX_MESSAGE_BYTES = 32 * MIB  # relay's and the peers' (servers/_common.py): above the sweep's 16 MiB
SERVER_CORE = 0
LOADGEN_CORE = 1
START_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 300.0
IPERF3_INSTALL_HINT = "iperf3 not installed (Debian/Ubuntu: sudo apt-get install iperf3)"

# name -> (command line after "python", how the load generator talks to it)
SERVERS = {
    "relay": (["-m", "relay", "serve", "--log-level", "warning", "--join-policy", "open",
               "--create-burst", "1000000", "--join-burst", "1000000", "--slave-queue-bytes", "67108864",
               "--backlog-bytes", "33554432", "--history-hard-limit-bytes", "67108864",
               "--max-slaves-per-session", "64", "--max-message-bytes", str(32 * 1024 * 1024)], "relay"),
    "picows": (["-m", "benchmarks.servers.picows_server"], "plain"),
    "websockets": (["-m", "benchmarks.servers.websockets_server"], "plain"),
    "aiohttp": (["-m", "benchmarks.servers.aiohttp_server"], "plain"),
    "trio-websocket": (["-m", "benchmarks.servers.trio_websocket_server"], "plain"),
}
PEER_PACKAGES = ["picows", "uvloop", "websockets", "aiohttp", "trio-websocket", "trio", "matplotlib"]
SIZES = [KIB, 16 * KIB, 50 * KIB, MIB, 5 * MIB]
FANOUTS = [1, 4, 16]
SWEEP_SIZES = [KIB << shift for shift in range(15)]  # 1 KiB, 2 KiB, ... 16 MiB
SWEEP_SLAVES = 4
SWEEP_SERVERS = ["relay", "picows"]
# At least two 16 MiB messages in flight (16 MiB, the fan-out cases' window, would allow one: a
# ping-pong, not a throughput).  Below 16 KiB the 2,000-message cap of the load generator binds.
SWEEP_WINDOW_BYTES = 32 * MIB
SWEEP_BYTES_CAP = 4 * 1024 * MIB  # messages per sample at most: a cap, the sample stops on time first

# What each mode runs.  Counts are caps: a fan-out sample also stops after ``fanout_seconds``.
PLANS = {
    "quick": {
        "servers": ["relay", "picows", "trio-websocket"],
        "fanout_cases": [(4, KIB), (4, MIB)],
        "fanout_rounds": MIN_RATIO_ROUNDS, "fanout_seconds": 0.4,
        "mixed": {"duration_s": 2.5, "snapshot_every_s": 1.0}, "mixed_rounds": 3,
        "return_rounds": 1, "return_count": 4000,
        "idle_connections": 500, "idle_rounds": 3,
        "latejoin_rounds": 1, "latejoin_joins": 3,
        "iperf3_seconds": 1, "iperf3_rounds": 1,
    },
    "full": {
        "servers": list(SERVERS),
        "fanout_cases": [(slaves, size) for slaves in FANOUTS for size in SIZES],
        "fanout_rounds": MIN_RATIO_ROUNDS, "fanout_seconds": 0.8,
        "mixed": {"duration_s": 8.0, "snapshot_every_s": 2.0}, "mixed_rounds": 3,
        "return_rounds": 3, "return_count": 20000,
        "idle_connections": 10_000, "idle_rounds": 1,
        "latejoin_rounds": 3, "latejoin_joins": 5,
        "iperf3_seconds": 3, "iperf3_rounds": 3,
        "sweep": True,
    },
}
SWEEP_PLAN = {"sweep_rounds": MIN_RATIO_ROUNDS, "sweep_seconds": 0.4, "iperf3_seconds": 1, "iperf3_rounds": 1}
# Workloads of this script -> the load generator's (the sweep is fan-out cases of its own).
LOADGEN_WORKLOAD = {"sweep": "fanout"}
# Cases whose relay/peer ratio carries a verdict: at least MIN_RATIO_ROUNDS rounds.
RATIO_WORKLOADS = ("fanout", "sweep")
FANOUT_COUNT_CAP = {KIB: 60_000, 16 * KIB: 30_000, 50 * KIB: 12_000, MIB: 1_000, 5 * MIB: 200}
MIXED_SMALL_BYTES = KIB
MIXED_RATE_PER_S = 500
MIXED_SNAPSHOT_SIZES = [5 * MIB, MIB, 5 * MIB, 3 * MIB]  # in turn; the target looks at 5 MiB ones
RETURN_BYTES = 128  # a pointer move
LATEJOIN_SNAPSHOT_BYTES = 5 * MIB
LATEJOIN_MUTATIONS = 1000
LATEJOIN_MUTATION_BYTES = KIB


# ---------------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_setup(core: int):
    """Pin to one core and allow as many descriptors as the hard limit (10,000 idle connections)."""
    def setup():
        try:
            os.sched_setaffinity(0, {core})
        except (AttributeError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return setup


def _env() -> dict:
    return dict(os.environ)


# What the relay server processes said they run (their banner), for the report.
RELAY_IMPLEMENTATIONS: set[str] = set()


def start_server(name: str) -> tuple[subprocess.Popen, int]:
    args, _mode = SERVERS[name]
    port = free_port()
    if name == "relay":
        # -I: not the checkout's relay/ (cwd) but relay as installed in this interpreter.
        command = [sys.executable, "-I", *args, "--listen", f"127.0.0.1:{port}", "--private-listen", f"127.0.0.1:{free_port()}"]
    else:
        command = [sys.executable, *args, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_child_setup(SERVER_CORE), env=_env())
    deadline = time.monotonic() + START_TIMEOUT_S
    line = process.stdout.readline()  # relay prints its address, peers print READY: both mean listening
    if not line or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"{name} did not start: {process.stderr.read()[-2000:]}")
    if name == "relay":
        RELAY_IMPLEMENTATIONS.add(line.split(" (", 1)[-1].rsplit("): node ", 1)[0])
    return process, port


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_loadgen(name: str, workload: str, options: dict) -> dict:
    process, port = start_server(name)
    try:
        command = [sys.executable, "-m", "benchmarks.loadgen", "--workload", LOADGEN_WORKLOAD.get(workload, workload),
                   "--target", SERVERS[name][1],
                   "--port", str(port), "--server-pid", str(process.pid)]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              preexec_fn=_child_setup(LOADGEN_CORE), env=_env())
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed against {name}: {done.stderr.strip()[-1500:]}")
        return json.loads(done.stdout)
    finally:
        stop_server(process)


def _listening(port: int) -> bool:
    """Whether some socket listens on ``port`` (Linux /proc; elsewhere, assume it after a pause)."""
    try:
        with open("/proc/net/tcp") as tcp, open("/proc/net/tcp6") as tcp6:
            lines = tcp.readlines()[1:] + tcp6.readlines()[1:]
    except OSError:
        time.sleep(0.5)
        return True
    wanted = f":{port:04X}"
    return any(fields[1].endswith(wanted) and fields[3] == "0A" for fields in (line.split() for line in lines))


def run_iperf3(seconds: int) -> dict:
    """One TCP stream on loopback, server and client pinned like the WebSocket servers and loadgen."""
    if shutil.which("iperf3") is None:
        return {"error": IPERF3_INSTALL_HINT}
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, preexec_fn=_child_setup(SERVER_CORE))
    try:
        # "-1" serves exactly one client, so no probe connection (and its stdout is block-buffered):
        # wait until the kernel shows the port listening.
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.05)
        done = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                              capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=_child_setup(LOADGEN_CORE))
        report = json.loads(done.stdout or "{}")
        if "error" in report or done.returncode != 0:
            return {"error": f"iperf3 failed: {report.get('error', done.stderr.strip()[-500:])}"}
        received = report["end"]["sum_received"]
        return {"bytes_per_s": received["bits_per_second"] / 8, "seconds": received["seconds"]}
    finally:
        server.kill()
        server.wait()


# ---------------------------------------------------------------------------------- the plan

class Case:
    """One thing measured for every server (or for relay only), over several rounds."""

    def __init__(self, key: str, workload: str, servers: list, rounds: int, options: dict, estimate_s: float,
                 label: str) -> None:
        self.key = key
        self.workload = workload
        self.servers = servers
        self.rounds = rounds
        self.options = options
        self.estimate_s = estimate_s
        self.label = label


def sweep_cases(servers: list, rounds: int, seconds: float) -> list:
    """1 -> 4 at every power of two from 1 KiB to 16 MiB, relay against picows."""
    servers = [name for name in SWEEP_SERVERS if name in servers]
    return [Case(f"sweep/{SWEEP_SLAVES}/{size}", "sweep", servers, rounds,
                 {"slaves": SWEEP_SLAVES, "size": size, "count": max(100, min(60_000, SWEEP_BYTES_CAP // size)),
                  "max_duration_s": seconds, "window_bytes": SWEEP_WINDOW_BYTES},
                 seconds + 1.2 + size * 40 / 2e9, f"sweep 1 -> 4 {format_size(size)}")
            for size in SWEEP_SIZES]


def build_plan(plan: dict, servers: list) -> list:
    cases = []
    if "sweep_rounds" in plan:  # --sweep: the sweep alone, and iperf3 for scale
        cases = sweep_cases(servers, plan["sweep_rounds"], plan["sweep_seconds"])
        cases.append(Case("iperf3", "iperf3", ["iperf3"], plan["iperf3_rounds"], {"seconds": plan["iperf3_seconds"]},
                          plan["iperf3_seconds"] + 1.0, "iperf3 1 stream"))
        return cases
    fanout_seconds = plan["fanout_seconds"]
    for slaves, size in plan["fanout_cases"]:
        cases.append(Case(f"fanout/{slaves}/{size}", "fanout", servers, plan["fanout_rounds"],
                          {"slaves": slaves, "size": size, "count": FANOUT_COUNT_CAP.get(size, 1000),
                           "max_duration_s": fanout_seconds},
                          fanout_seconds + 1.2, f"1 -> {slaves} {format_size(size)}"))
    mixed = plan["mixed"]
    cases.append(Case("mixed", "mixed", servers, plan["mixed_rounds"],
                      {"slaves": 4, "size": MIXED_SMALL_BYTES, "rate": MIXED_RATE_PER_S,
                       "duration_s": mixed["duration_s"], "snapshot_every_s": mixed["snapshot_every_s"],
                       "snapshot_sizes": ",".join(str(s) for s in MIXED_SNAPSHOT_SIZES)},
                      mixed["duration_s"] + 1.5, "mixed trace"))
    cases.append(Case("return", "return", servers, plan["return_rounds"],
                      {"slaves": 4, "size": RETURN_BYTES, "count": plan["return_count"]}, 2.0,
                      "return path 4 -> 1"))
    cases.append(Case("idle", "idle", servers, plan["idle_rounds"],
                      {"connections": plan["idle_connections"], "session_slaves": 32},
                      plan["idle_connections"] / 400 + 3, f"{plan['idle_connections']} idle connections"))
    if "relay" in servers:
        cases.append(Case("latejoin", "latejoin", ["relay"], plan["latejoin_rounds"],
                          {"count": LATEJOIN_MUTATIONS, "size": LATEJOIN_MUTATION_BYTES,
                           "snapshot_bytes": LATEJOIN_SNAPSHOT_BYTES, "joins": plan["latejoin_joins"]},
                          3.0, "late join"))
    if plan.get("sweep"):
        cases += sweep_cases(servers, plan["fanout_rounds"], plan["fanout_seconds"] / 2)
    cases.append(Case("iperf3", "iperf3", ["iperf3"], plan["iperf3_rounds"], {"seconds": plan["iperf3_seconds"]},
                      plan["iperf3_seconds"] + 1.0, "iperf3 1 stream"))
    return cases


class Progress:
    """One line per measurement: position, elapsed time and an estimate of what is left."""

    def __init__(self, cases: list, stream=sys.stdout) -> None:
        self.total = sum(case.rounds * len(case.servers) for case in cases)
        self.remaining_estimate = sum(case.rounds * len(case.servers) * case.estimate_s for case in cases)
        self.spent_estimate = 0.0
        self.done = 0
        self.started = time.monotonic()
        self.stream = stream

    def begin(self, case: Case, name: str, round_index: int) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        # Scale the static estimate by how fast the run has gone so far.
        speed = elapsed / self.spent_estimate if self.spent_estimate else 1.0
        left = self.remaining_estimate * speed
        print(f"[{self.done:>3}/{self.total} {_mmss(elapsed)} elapsed, ~{_mmss(left)} left] "
              f"{case.label:<22} {name:<15} round {round_index + 1}/{case.rounds}",
              end="", flush=True, file=self.stream)

    def end(self, case: Case, text: str) -> None:
        self.spent_estimate += case.estimate_s
        self.remaining_estimate -= case.estimate_s
        print(f"  {text}", file=self.stream, flush=True)


def _mmss(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def _short(workload: str, sample: dict) -> str:
    if "error" in sample:
        return f"FAILED: {sample['error'].splitlines()[-1][:150]}"
    if workload in ("fanout", "sweep", "return"):
        return f"{sample['messages_per_s']:>9.0f} msg/s {sample['delivered_bytes_per_s'] / 1e6:8.1f} MB/s  " \
               f"p99 {sample['latency_p99_s'] * 1e3:7.1f} ms"
    if workload == "mixed":
        return f"small p99 {sample['small_latency_p99_s'] * 1e3:6.1f} ms, while a 5 MiB snapshot is in flight " \
               f"{_ms(sample['small_in_flight_largest_latency_p99_s'])} ms"
    if workload == "idle":
        return f"{sample['connections']} connections, {sample['bytes_per_connection'] / KIB:.1f} KiB each " \
               f"({sample['connect_s']:.1f} s to open)"
    if workload == "latejoin":
        return f"current after {sample['late_join_s'] * 1e3:.0f} ms ({sample['caught_up_bytes'] / MIB:.1f} MiB)"
    if workload == "iperf3":
        return f"{sample['bytes_per_s'] / 1e9:.2f} GB/s"
    return ""


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def run(cases: list, progress: Progress) -> dict:
    """samples[case.key][server] = [sample per round]; servers rotate within every round."""
    samples: dict = {case.key: {name: [] for name in case.servers} for case in cases}
    for case in cases:
        for round_index in range(case.rounds):
            shift = round_index % len(case.servers)
            for name in case.servers[shift:] + case.servers[:shift]:
                progress.begin(case, name, round_index)
                try:
                    if case.workload == "iperf3":
                        sample = run_iperf3(case.options["seconds"])
                    else:
                        sample = run_loadgen(name, case.workload, case.options)
                except Exception as exc:  # one failure must not lose the rest of a 15-minute run
                    sample = {"error": f"{type(exc).__name__}: {exc}"}
                samples[case.key][name].append(sample)
                progress.end(case, _short(case.workload, sample))
    return samples


# ---------------------------------------------------------------------------------- summaries

# The figure each workload's median is taken on, and whether more is better.
MEDIAN_KEY = {"fanout": ("messages_per_s", True), "sweep": ("messages_per_s", True), "return": ("messages_per_s", True),
              "mixed": ("small_in_flight_largest_latency_p99_s", False), "idle": ("bytes_per_connection", False),
              "latejoin": ("late_join_s", False), "iperf3": ("bytes_per_s", True)}


def median_sample(workload: str, runs: list) -> dict | None:
    """The median sample by the workload's main figure (whole sample, so its other figures belong with it)."""
    key, _higher = MEDIAN_KEY[workload]
    good = [s for s in runs if "error" not in s and s.get(key) is not None]
    if not good:
        return {"error": runs[-1].get("error", "no result")} if runs else None
    ordered = sorted(good, key=lambda s: s[key])
    median = dict(ordered[len(ordered) // 2])
    values = [s[key] for s in good]
    median["rounds"] = len(good)
    median["spread"] = max(values) / min(values) if min(values) > 0 else None
    return median


def summarize(cases: list, samples: dict) -> dict:
    return {case.key: {name: median_sample(case.workload, runs) for name, runs in samples[case.key].items()}
            for case in cases}


def round_ratios(cases: list, samples: dict) -> dict:
    """ratios[case.key][peer]: relay's advantage round by round (benchmarks/_stats.py), with spread."""
    ratios = {}
    for case in cases:
        if "relay" not in case.servers or case.workload not in MEDIAN_KEY:
            continue
        key, higher = MEDIAN_KEY[case.workload]
        figure = [s.get(key) if "error" not in s else None for s in samples[case.key]["relay"]]
        ratios[case.key] = {}
        for peer in case.servers:
            if peer != "relay":
                theirs = [s.get(key) if "error" not in s else None for s in samples[case.key][peer]]
                ratios[case.key][peer] = ratio_stats(paired_ratios(figure, theirs, higher_is_better=higher))
    return ratios


def advantage(workload: str, relay: dict | None, peer: dict | None) -> float | None:
    """How many times better relay is than the peer on the workload's main figure (>1: relay better)."""
    key, higher = MEDIAN_KEY[workload]
    if not relay or not peer or "error" in relay or "error" in peer:
        return None
    a, b = relay.get(key), peer.get(key)
    if not a or not b:
        return None
    return a / b if higher else b / a


def _fmt(value, scale=1.0, digits=1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def report(cases: list, summary: dict, servers: list, iperf3_bps: float | None) -> None:
    peers = [name for name in servers if name != "relay"]
    for slaves in sorted({case.options["slaves"] for case in cases if case.workload == "fanout"}):
        rows = []
        for case in cases:
            if case.workload != "fanout" or case.options["slaves"] != slaves:
                continue
            relay = summary[case.key].get("relay")
            for name in servers:
                r = summary[case.key][name]
                if r is None or "error" in r:
                    rows.append([format_size(case.options["size"]), name, "FAILED"] + [""] * 11)
                    continue
                ratio = advantage("fanout", relay, r)
                rows.append([
                    format_size(case.options["size"]), name, f"{r['messages_per_s']:.0f}",
                    f"{r['delivered_bytes_per_s'] / 1e6:.0f}",
                    _fmt(r["latency_p50_s"], 1e3), _fmt(r["latency_p99_s"], 1e3), _fmt(r["latency_p999_s"], 1e3),
                    _fmt(r["server_cpu_s_per_message"], 1e6), _fmt(r["server_cpu_s_per_mb"], 1e3, 2),
                    _fmt(r["server_peak_rss_bytes"], 1 / MIB, 0), _fmt(r["spread"], 1, 2),
                    _fmt(r.get("loadgen_cpu_share"), 100, 0),
                    "1.00" if name == "relay" else _fmt(ratio, 1, 2),
                ])
        print_table(f"Fan-out 1 -> {slaves}: median of rounds; latency from the master's send to the last slave's "
                    f"receive, with a window of messages in flight (so it includes queueing)",
                    ["size", "server", "msg/s", "MB/s out", "p50 ms", "p99 ms", "p99.9 ms", "cpu us/msg",
                     "cpu ms/MB", "peak MiB", "spread", "loadgen %", "relay/peer"], rows)

    by_key = {case.key: case for case in cases}
    if "mixed" in summary:
        rows = []
        for name in servers:
            r = summary["mixed"][name]
            if r is None or "error" in r:
                rows.append([name, "FAILED"] + [""] * 7)
                continue
            rows.append([name, _fmt(r["small_latency_p50_s"], 1e3), _fmt(r["small_latency_p99_s"], 1e3),
                         _fmt(r["small_in_flight_latency_p99_s"], 1e3),
                         _fmt(r["small_in_flight_largest_latency_p99_s"], 1e3),
                         _fmt(r["small_in_flight_largest_latency_p999_s"], 1e3),
                         _fmt(max(r["snapshot_delivery_s"]), 1e3), _fmt(r["server_peak_rss_bytes"], 1 / MIB, 0),
                         "1.00" if name == "relay" else _fmt(advantage("mixed", summary["mixed"].get("relay"), r), 1, 2)])
        options = by_key["mixed"].options
        print_table(f"Mixed trace 1 -> 4: {MIXED_RATE_PER_S} x {format_size(options['size'])} mutations/s, a "
                    f"{'/'.join(format_size(s) for s in MIXED_SNAPSHOT_SIZES)} snapshot every "
                    f"{options['snapshot_every_s']:g} s (latency from the scheduled send; relay/peer = peer's p99 "
                    f"over relay's, 5 MiB in flight)",
                    ["server", "p50 ms", "p99 ms", "p99 any snap", "p99 5MiB snap", "p99.9 5MiB", "snap max ms",
                     "peak MiB", "relay/peer"], rows)
    if "return" in summary:
        rows = []
        for name in servers:
            r = summary["return"][name]
            if r is None or "error" in r:
                rows.append([name, "FAILED"] + [""] * 6)
                continue
            rows.append([name, f"{r['messages_per_s']:.0f}", _fmt(r["latency_p50_s"], 1e3),
                         _fmt(r["latency_p99_s"], 1e3), _fmt(r["latency_p999_s"], 1e3),
                         _fmt(r["server_cpu_s_per_message"], 1e6),
                         "1.00" if name == "relay" else _fmt(advantage("return", summary["return"].get("relay"), r), 1, 2)])
        print_table(f"Return path: 4 slaves -> master, {RETURN_BYTES} B events (relay: pointer envelopes)",
                    ["server", "msg/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu us/msg", "relay/peer"], rows)
    if "idle" in summary:
        rows = []
        for name in servers:
            r = summary["idle"][name]
            if r is None or "error" in r:
                rows.append([name, "FAILED"] + [""] * 5)
                continue
            rows.append([name, str(r["connections"]), f"{r['bytes_per_connection'] / KIB:.1f}",
                         f"{r['server_rss_after_bytes'] / MIB:.0f}", f"{r['connections_per_s']:.0f}",
                         "1.00" if name == "relay" else _fmt(advantage("idle", summary["idle"].get("relay"), r), 1, 2)])
        print_table("Idle connections: server RSS growth per WebSocket connection (relay: sessions of 1 master + "
                    "32 slaves, HTTP join included; relay/peer = peer's bytes over relay's)",
                    ["server", "connections", "KiB/conn", "RSS MiB", "opened/s", "relay/peer"], rows)
    if "latejoin" in summary:
        r = summary["latejoin"]["relay"]
        rows = []
        if r and "error" not in r:
            rows.append(["relay", f"{r['late_join_s'] * 1e3:.0f}", f"{r['join_and_connect_s'] * 1e3:.1f}",
                         f"{r['caught_up_bytes'] / MIB:.1f}", f"{r['catch_up_bytes_per_s'] / 1e6:.0f}"])
        else:
            rows.append(["relay", "FAILED", "", "", ""])
        for name in peers:
            rows.append([name, "n/a: no catch-up", "", "", ""])
        print_table(f"Late join: a new slave in a session holding a {format_size(LATEJOIN_SNAPSHOT_BYTES)} snapshot and "
                    f"{LATEJOIN_MUTATIONS} x {format_size(LATEJOIN_MUTATION_BYTES)} mutations (join request to current)",
                    ["server", "ms", "join+connect ms", "MiB caught up", "MB/s"], rows)
    if iperf3_bps:
        print(f"\niperf3, one TCP stream on loopback (median): {iperf3_bps / 1e9:.2f} GB/s")


def ratio_table(cases: list, summary: dict, servers: list, iperf3_bps: float | None, ratios: dict) -> list:
    """Rows: every case; columns: relay's advantage over each peer (>1: relay better), the median of
    the per-round ratios with their range."""
    peers = [name for name in servers if name != "relay"]
    rows = []
    for case in cases:
        if case.workload in ("iperf3", "sweep"):  # the sweep has its own table
            continue
        if case.workload == "latejoin":
            r = summary[case.key].get("relay")
            value = "-" if not r or "error" in r else f"{r['late_join_s'] * 1e3:.0f} ms"
            rows.append([case.label, "relay only: " + value] + ["n/a"] * (len(peers) - 1))
            continue
        row = [case.label]
        for name in peers:
            row.append(format_ratio(ratios.get(case.key, {}).get(name)))
        rows.append(row)
    print_table("relay vs each peer, same run: median of the per-round ratios (min..max over rounds); x = how many "
                "times better relay is: throughput relay/peer, latency and memory peer/relay; >1: relay is better",
                ["case"] + [f"vs {p}" for p in peers], rows)
    if iperf3_bps:
        best = best_relay_bytes_per_s(summary, 4, MIB)
        if best:
            print(f"relay's best 1 -> 4 delivery at >= 1 MiB: {best / 1e9:.2f} GB/s = {100 * best / iperf3_bps:.0f}% "
                  f"of iperf3's single stream ({iperf3_bps / 1e9:.2f} GB/s)")
    return rows


def best_relay_bytes_per_s(summary: dict, slaves: int, min_size: int) -> float | None:
    best = None
    for key, by_server in summary.items():
        if not key.startswith(f"fanout/{slaves}/") or int(key.split("/")[2]) < min_size:
            continue
        r = by_server.get("relay")
        if r and "error" not in r:
            best = max(best or 0, r["delivered_bytes_per_s"])
    return best


def judge(summary: dict, iperf3: dict | None, ratios: dict) -> list:
    """The issue's targets (never asserted: the figures depend on the machine).  A ratio's verdict
    is PASS or MISS only when every round agrees, "within spread" otherwise (benchmarks/_stats.py)."""
    verdicts = []

    def add(label, value, minimum, shown, stats=None):
        if stats is not None:
            met = spread_verdict(stats, minimum)
        else:
            met = "?" if value is None else ("PASS" if value >= minimum else "MISS")
        verdicts.append({"target": label, "value": value, "minimum": minimum, "verdict": met,
                         "met": {"PASS": True, "MISS": False}.get(met), "shown": shown, "ratio": stats})

    def add_ratio(label, key, peer, minimum, shown=None):
        stats = ratios.get(key, {}).get(peer)
        text = format_ratio(stats) + (f"; {shown}" if shown else "")
        add(label, stats and stats["median"], minimum, text, stats or {})

    for size in (MIB, 5 * MIB):
        key = f"fanout/4/{size}"
        if key in summary and "picows" in summary[key]:
            add_ratio(f"1 -> 4, {format_size(size)}: relay >= 1.0x picows (msg/s)", key, "picows", 1.0)
    iperf3_bps = (iperf3 or {}).get("bytes_per_s")
    best = best_relay_bytes_per_s(summary, 4, MIB)
    if best is not None:
        share = best / iperf3_bps if iperf3_bps else None
        add("1 -> 4, >= 1 MiB: relay delivers >= 70% of iperf3's single stream", share, 0.70,
            (f"{best / 1e9:.2f} GB/s, iperf3: {(iperf3 or {}).get('error', 'not run')}" if share is None
             else f"{best / 1e9:.2f} of {iperf3_bps / 1e9:.2f} GB/s = {100 * share:.0f}%"))
    key = f"fanout/4/{KIB}"
    if key in summary:
        for peer, minimum in (("picows", 1.0), ("trio-websocket", 3.0)):
            if peer in summary[key]:
                add_ratio(f"1 -> 4, 1 KiB: relay >= {minimum:g}x {peer} (msg/s)", key, peer, minimum)
    if "mixed" in summary and "picows" in summary["mixed"]:
        relay, picows = summary["mixed"].get("relay") or {}, summary["mixed"]["picows"] or {}
        add_ratio("mixed trace: small-message p99 while a 5 MiB snapshot is in flight <= picows'", "mixed", "picows",
                  1.0, f"median rounds {_ms(relay.get('small_in_flight_largest_latency_p99_s'))} vs "
                       f"{_ms(picows.get('small_in_flight_largest_latency_p99_s'))} ms")
    if "idle" in summary and "picows" in summary["idle"]:
        relay, picows = summary["idle"].get("relay") or {}, summary["idle"]["picows"] or {}
        add_ratio("idle connections: relay's memory per connection <= picows'", "idle", "picows", 1.0,
                  f"{_fmt(relay.get('bytes_per_connection'), 1 / KIB)} vs "
                  f"{_fmt(picows.get('bytes_per_connection'), 1 / KIB)} KiB")
    short = [f"{format_size(int(key.split('/')[2]))}" for key, by_peer in ratios.items()
             if key.startswith("sweep/") and spread_verdict(by_peer.get("picows"), 1.0) != "PASS"]
    if any(key.startswith("sweep/") for key in ratios):
        add_ratio("sweep 1 -> 4, 1 KiB-16 MiB: relay >= 1.0x picows at every size (worst size shown)",
                  min((k for k in ratios if k.startswith("sweep/") and ratios[k].get("picows")),
                      key=lambda k: ratios[k]["picows"]["median"], default=""), "picows", 1.0,
                  f"not PASS at: {', '.join(short)}" if short else "every size PASS")
    print_table("Targets (relay / peer, same run; PASS/MISS only when every round agrees)",
                ["target", "measured: median (min..max)", "verdict"],
                [[v["target"], v["shown"], v["verdict"]] for v in verdicts])
    return verdicts


def sweep_table(cases: list, summary: dict, ratios: dict) -> list:
    """1 -> 4 by size, relay against picows: throughput, CPU per delivered message, ratio with spread."""
    rows = []
    for case in cases:
        if case.workload != "sweep":
            continue
        relay, picows = summary[case.key].get("relay"), summary[case.key].get("picows")
        stats = ratios.get(case.key, {}).get("picows")
        row = [format_size(case.options["size"])]
        for r in (relay, picows):
            if not r or "error" in r:
                row += ["FAILED", "", ""]
                continue
            cpu = r.get("server_cpu_s_per_message")
            row += [f"{r['messages_per_s']:.0f}", f"{r['delivered_bytes_per_s'] / 1e6:.0f}",
                    _fmt(None if cpu is None else cpu / case.options["slaves"], 1e6, 1)]
        cpu_ratio = None
        if relay and picows and "error" not in relay and "error" not in picows \
                and relay.get("server_cpu_s_per_message") and picows.get("server_cpu_s_per_message"):
            cpu_ratio = picows["server_cpu_s_per_message"] / relay["server_cpu_s_per_message"]
        row += [format_ratio(stats), _fmt(cpu_ratio, 1, 2), spread_verdict(stats, 1.0)]
        rows.append(row)
    if rows:
        print_table("Sweep 1 -> 4, relay vs picows, every power of two (msg/s sent by the master; MB/s delivered to "
                    "all slaves; cpu us per delivered message = server CPU / (messages x 4); relay/picows msg/s: "
                    "median (min..max) over rounds; cpu picows/relay of the median rounds)",
                    ["size", "relay msg/s", "relay MB/s", "relay cpu us", "picows msg/s", "picows MB/s",
                     "picows cpu us", "relay/picows", "cpu p/r", "verdict"], rows)
    return rows


def load_reference(path: Path = REFERENCE_RUN) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stamping_cost(cases: list, ratios: dict, reference: dict | None) -> list:
    """relay/picows now against the same ratio in the reference run, made before the relay stamped a
    sender on every envelope (a third iovec per message): the factor between the two medians, bounded
    by both runs' spreads.  Ratios, not absolute figures: the machine's load differs between runs."""
    if not reference:
        return []
    ref_cases = {c["key"]: c for c in reference.get("settings", {}).get("cases", [])}
    rows = []
    for case in cases:
        if case.workload != "fanout" or case.key not in ref_cases:
            continue
        runs = reference["samples"].get(case.key, {})
        if "relay" not in runs or "picows" not in runs:
            continue
        figure = lambda samples: [s.get("messages_per_s") if "error" not in s else None for s in samples]  # noqa: E731
        before = ratio_stats(paired_ratios(figure(runs["relay"]), figure(runs["picows"])))
        now = ratios.get(case.key, {}).get("picows")
        factor = compare_ratios(now, before)
        if factor is None:
            continue
        rows.append({"case": case.key, "label": case.label, "now": now, "reference": before, "factor": factor})
    if rows:
        print_table(f"Stamping's cost: relay/picows (msg/s) now vs the reference run of {REFERENCE_LABEL}; "
                    "factor = now / then (below 1: relay lost ground to picows), range from both spreads",
                    ["case", "now", "reference", "factor (range)", "verdict"],
                    [[r["label"], format_ratio(r["now"]), format_ratio(r["reference"]),
                      f"{r['factor']['median']:.2f} ({r['factor']['min']:.2f}..{r['factor']['max']:.2f})",
                      "within spread" if r["factor"]["within_spread"]
                      else ("slower" if r["factor"]["max"] < 1 else "faster")] for r in rows])
    return rows


# ---------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fanout", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="full (default, ~25 min): relay, picows, websockets, aiohttp, trio-websocket; fan-out 1 -> 1, 4, 16 at "
               "1 KiB, 16 KiB, 50 KiB, 1 MiB, 5 MiB (5 rounds); mixed trace (8 s, 3 rounds); return path (3 rounds); "
               "10,000 idle connections (1 round); late join (relay only, 3 rounds); the sweep; iperf3 3 s (3 rounds).\n"
               "--quick (~2 min): relay, picows, trio-websocket; fan-out 1 -> 4 at 1 KiB and 1 MiB (5 rounds); mixed "
               "trace (2.5 s, 3 rounds); return path (1); 500 idle connections (3); late join (1); iperf3 1 s (1).\n"
               "--sweep (~5 min): 1 -> 4 at every power of two from 1 KiB to 16 MiB, relay and picows, 5 rounds.\n"
               f"Ratios are taken round by round (at least {MIN_RATIO_ROUNDS} rounds for fan-out cases) and shown as "
               "median (min..max); a verdict is PASS/MISS only when every round agrees, else 'within spread'.\n"
               "First, missing peers (the bench extra, into a venv only) and iperf3 (Debian's, as root) are "
               "installed: see python -m benchmarks setup --help; --no-install skips that.\n"
               "Results: a table per workload, a ratio table, the sweep, stamping's cost against the reference run, "
               "verdicts per target, JSON and PNG plots under benchmarks/results/.")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes: the cases the targets need (see below)")
    parser.add_argument("--sweep", action="store_true", help="only the 1 KiB-16 MiB sweep, relay vs picows (see below)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install missing peers or iperf3 (see python -m benchmarks setup)")
    parser.add_argument("--servers", default=None, help=f"comma-separated, from: {', '.join(SERVERS)}")
    parser.add_argument("--workloads", default=None,
                        help="comma-separated, from: fanout, mixed, return, idle, latejoin, iperf3 (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds for every case (default: per mode)")
    parser.add_argument("--json", default=None, help="where to save the results (default: benchmarks/results/)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    if args.quick and args.sweep:
        parser.error("--quick and --sweep are separate runs: choose one")
    mode = "quick" if args.quick else "sweep" if args.sweep else "full"
    plan = dict(SWEEP_PLAN) if args.sweep else dict(PLANS[mode])
    default_servers = SWEEP_SERVERS if args.sweep else plan["servers"]
    servers = args.servers.split(",") if args.servers else default_servers
    unknown = [name for name in servers if name not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    if "relay" in servers:
        servers = ["relay"] + [name for name in servers if name != "relay"]
    cases = build_plan(plan, servers)
    if args.workloads:
        wanted = set(args.workloads.split(","))
        cases = [case for case in cases if case.workload in wanted]
    if args.rounds:
        for case in cases:
            case.rounds = args.rounds
            if case.workload in RATIO_WORKLOADS and case.rounds < MIN_RATIO_ROUNDS:
                case.rounds = MIN_RATIO_ROUNDS
        if args.rounds < MIN_RATIO_ROUNDS and any(c.workload in RATIO_WORKLOADS for c in cases):
            print(f"note: fan-out cases keep {MIN_RATIO_ROUNDS} rounds: fewer cannot give a ratio a spread", flush=True)
    if not args.no_install:
        if not _setup.ensure_peers() and any(name not in ("relay", "iperf3") for c in cases for name in c.servers):
            return 2
        if any(c.workload == "iperf3" for c in cases):
            _setup.ensure_iperf3()
    if shutil.which("iperf3") is None:
        print(f"note: {IPERF3_INSTALL_HINT}; the kernel's ceiling will be missing", flush=True)
    progress = Progress(cases)
    print(f"{mode} run: {progress.total} measurements, about {_mmss(progress.remaining_estimate)} "
          f"(server on core {SERVER_CORE}, load generator on core {LOADGEN_CORE})", flush=True)
    started = time.monotonic()
    samples = run(cases, progress)
    runtime = time.monotonic() - started
    summary = summarize(cases, samples)
    iperf3 = summary.get("iperf3", {}).get("iperf3")
    iperf3_bps = (iperf3 or {}).get("bytes_per_s")
    if iperf3 and "error" in iperf3:
        print(f"\niperf3: {iperf3['error']}")
    report(cases, summary, servers, iperf3_bps)
    per_round = round_ratios(cases, samples)
    ratios = ratio_table(cases, summary, servers, iperf3_bps, per_round)
    sweep = sweep_table(cases, summary, per_round)
    stamping = stamping_cost(cases, per_round, load_reference())
    verdicts = judge(summary, iperf3, per_round)
    print("\nThe machine is shared: compare ratios, and read 'within spread' as 'this run cannot tell'.")
    machine = machine_description(PEER_PACKAGES)
    machine["relay_server_implementation"] = "; ".join(sorted(RELAY_IMPLEMENTATIONS)) or None
    print(f"\nrelay server: {machine['relay_server_implementation']}")
    path = save_json("fanout", {
        "machine": machine,
        "settings": {"mode": mode, "servers": servers, "server_core": SERVER_CORE, "loadgen_core": LOADGEN_CORE,
                     "cases": [{"key": c.key, "workload": c.workload, "servers": c.servers, "rounds": c.rounds,
                                "options": c.options} for c in cases]},
        "runtime_s": runtime,
        "summary": summary,
        "samples": samples,
        "ratios": {"headers": ["case"] + [f"vs {p}" for p in servers if p != "relay"], "rows": ratios},
        "round_ratios": per_round,
        "sweep": sweep,
        "stamping_cost": {"reference": str(REFERENCE_RUN.relative_to(ROOT)), "cases": stamping},
        "targets": verdicts,
    }, args.json)
    print(f"\nran {_mmss(runtime)}; saved {path}")
    if not args.no_plots:
        try:
            from benchmarks.plots import plot_all
        except ImportError as exc:
            print(f"no plots: {exc} (pip install matplotlib)")
        else:
            for plot in plot_all(summary, cases, servers, iperf3_bps, machine, path.with_suffix("")):
                print(f"saved {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
