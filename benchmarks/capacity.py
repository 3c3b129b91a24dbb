"""How many sessions one node holds: the figure a deployment is sized by, against picows in the same run.

    python -m benchmarks capacity            # steps up to 5,120 sessions, 20 s each: 7-20 minutes
    python -m benchmarks capacity --quick    # 10 -> 640 sessions, 8 s each: under 3 minutes

A session is a master and two slaves; every master sends 20 mutations per second of 2 KiB and a
1 MiB snapshot every minute.  Sessions are added step by step to one running server (the ones
already there keep running, so memory grows as it would), and each step measures a window: the p99
from a master's send to a slave's receive, deliveries per second, the server's resident memory and
CPU, and the load generator's own CPU.  The capacity is the largest step whose p99 stays under
50 ms, bracketed by the first step above it.

The server runs in its own process pinned to core 0, the one load generator
(``benchmarks/loadgen/capacity.py``) in another pinned to core 1.  What is measured is a *target*
(``--target``, repeatable): a name from ``TARGETS``, whose ``start()`` starts its processes and says
where sessions are opened (a list of URLs, used in turn) and which processes are the server (their
CPU and memory summed).  ``relay`` (one node, the real CLI) and ``picows`` (its per-channel broadcast,
``benchmarks/servers/picows_server.py``) exist; a cluster of nodes behind nginx is one more entry.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, ContextManager, Optional

from benchmarks import _setup
from benchmarks._report import KIB, MIB, machine_description, print_table, save_json
from benchmarks._stats import format_ratio, paired_ratios, ratio_stats
from benchmarks.fanout import LOADGEN_CORE, SERVER_CORE, _child_setup, free_port, stop_server

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0
HOST = "127.0.0.1"
SLAVES_PER_SESSION = 2  # benchmarks/loadgen/capacity.py's
MUTATIONS_PER_S = 20.0
MUTATION_BYTES = 2 * KIB
SNAPSHOT_BYTES = MIB
SNAPSHOT_EVERY_S = 60.0
P99_LIMIT_MS = 50.0
# relay at its defaults but for what a load generator on one address needs: sessions created and
# joined without the per-client rate limits, and open joins (no master to admit slaves).
RELAY_FLAGS = ["--log-level", "warning", "--join-policy", "open",
               "--create-burst", "1000000", "--join-burst", "1000000"]
PEER_PACKAGES = ["picows", "uvloop", "trio"]

# What each mode runs.  A step adds sessions up to its count; the run of one target stops at the first
# step above the limit, when the load generator saturates, or when no new step may start (max_run_s).
PLANS = {
    "quick": {"steps": [10, 40, 160, 320, 640], "step_s": 8.0, "settle_s": 1.0, "grace_s": 1.0,
              "max_run_s": 55.0, "rounds": 1},
    "full": {"steps": [5, 10, 20, 40, 80, 160, 320, 480, 640, 960, 1280, 1920, 2560, 3840, 5120],
             "step_s": 20.0, "settle_s": 3.0, "grace_s": 1.0, "max_run_s": 600.0, "rounds": 1},
}


# ---------------------------------------------------------------------------------- targets

@dataclasses.dataclass(frozen=True)
class Endpoints:
    """A started target: where the load generator opens sessions, and which processes serve them."""

    urls: tuple  # ("127.0.0.1", port) pairs; sessions go to each in turn
    pids: tuple  # their CPU and resident memory are summed as the target's
    implementation: str = ""


@dataclasses.dataclass(frozen=True)
class Target:
    """Something whose capacity is measured.  ``protocol``: ``relay`` (sessions through relay's HTTP
    API and WebSocket) or ``plain`` (a peer: ``/sub/ID`` twice and ``/pub/ID`` per session).
    ``start()`` is a context manager that starts the target, yields its ``Endpoints`` and stops it."""

    name: str
    protocol: str
    start: Callable[[], ContextManager[Endpoints]]
    description: str


def _wait_for_line(path: Path, process: subprocess.Popen, name: str, stderr_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        text = path.read_text()
        if "\n" in text:
            return text.split("\n", 1)[0]
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"{name} did not start: {stderr_path.read_text()[-2000:]}")


@contextlib.contextmanager
def _server_process(name: str, command: list, port: int):
    """Run ``command`` pinned to the server's core until its first line (relay's banner, a peer's
    READY).  Output goes to files, not pipes: a chatty server must never block on a full pipe."""
    with tempfile.TemporaryDirectory(prefix=f"capacity-{name}-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr,
                                       preexec_fn=_child_setup(SERVER_CORE))
        try:
            banner = _wait_for_line(out, process, name, err)
            yield process, banner
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited during the run: {err.read_text()[-2000:]}")
        finally:
            stop_server(process)


@contextlib.contextmanager
def relay_node():
    port = free_port()
    # -I: relay as installed in this interpreter (compiled in place), not an uncompiled relay/ of the cwd.
    command = [sys.executable, "-I", "-m", "relay", "serve", *RELAY_FLAGS,
               "--listen", f"{HOST}:{port}", "--private-listen", f"{HOST}:{free_port()}"]
    with _server_process("relay", command, port) as (process, banner):
        # "relay 0.1.0 (Cython fast path): node relay-1 on http://..."
        implementation = banner.split(" (", 1)[-1].rsplit("): node ", 1)[0]
        yield Endpoints(((HOST, port),), (process.pid,), implementation)


@contextlib.contextmanager
def picows_server():
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.servers.picows_server", "--host", HOST, "--port", str(port)]
    with _server_process("picows", command, port) as (process, _banner):
        yield Endpoints(((HOST, port),), (process.pid,), "picows on uvloop")


CLUSTER_NODES = ("N1", "N2")
CLUSTER_LEASE_TTL_S = 5.0  # the production default: a loaded loop must not lose its lease


@contextlib.contextmanager
def cluster_behind_nginx():
    """redis-server, 2 relay nodes (``serve --cluster``) and Debian's nginx running the config of
    ``relay nginx-config``; sessions are created through nginx and pinned by the sticky cookie.  The
    target's CPU and memory are the nodes' and nginx's (Redis is reported by nobody: it is idle)."""
    sys.path.insert(0, str(ROOT / "tests"))  # the process harness the tests use
    from cluster_nodes import ClusterNodes
    from real_redis import RedisServer
    from relay._cluster import load_cluster
    from relay._nginx import nginx_config

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="capacity-cluster-") as folder:
        folder = Path(folder)
        os.chmod(folder, 0o755)  # nginx's workers (nobody, when run as root) use their folder here
        with RedisServer(folder / "redis") as redis, ClusterNodes(
                folder / "nodes", redis.url, names=CLUSTER_NODES, rf=2, lease_ttl_s=CLUSTER_LEASE_TTL_S,
                extra_args=[flag for flag in RELAY_FLAGS] + ["--trusted-proxies", HOST]) as nodes:
            nodes.start_all()
            port = free_port()
            runtime = folder / "nginx"
            runtime.mkdir()
            os.chmod(runtime, 0o777)
            config = runtime / "nginx.conf"
            config.write_text(nginx_config(load_cluster(str(nodes.file)), listen=f"{HOST}:{port}",
                                           runtime_dir=str(runtime), rate_limits=False))
            process = subprocess.Popen([nginx, "-p", f"{runtime}/", "-c", str(config), "-g",
                                        f"daemon off; pid {runtime}/nginx.pid; error_log {runtime}/error.log;"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while True:
                    try:
                        socket.create_connection((HOST, port), timeout=0.5).close()
                        break
                    except OSError:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"nginx did not start: {(runtime / 'error.log').read_text()[-2000:]}")
                        time.sleep(0.05)
                workers = [int(pid) for pid in
                           (Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split())]
                pids = tuple(p.pid for p in nodes.processes.values()) + (process.pid, *workers)
                yield Endpoints(((HOST, port),), pids, "2 relay nodes behind nginx")
            finally:
                process.terminate()
                process.wait(10)


#: Every target ``--target`` knows.  A cluster behind nginx is one more ``Target`` whose ``start()``
#: starts Redis, the nodes and nginx, and yields nginx's URL with the nodes' (and nginx's) pids.
TARGETS = {target.name: target for target in [
    Target("relay", "relay", relay_node, "one relay node (python -m relay serve), sessions over its HTTP API"),
    Target("picows", "plain", picows_server, "picows on uvloop: /pub/ID to the /sub/ID of the same ID"),
    Target("cluster", "relay", cluster_behind_nginx,
           "2 relay nodes (serve --cluster, redis-server) behind nginx (relay nginx-config), sticky cookie"),
]}
DEFAULT_TARGETS = ["relay", "picows"]


def parse_target(spec: str) -> Target:
    target = TARGETS.get(spec.strip())
    if target is None:
        raise argparse.ArgumentTypeError(f"unknown target {spec!r}: known targets are {', '.join(TARGETS)}")
    return target


# ---------------------------------------------------------------------------------- running

def loadgen_command(target: Target, endpoints: Endpoints, plan: dict) -> list:
    command = [sys.executable, "-m", "benchmarks.loadgen.capacity", "--protocol", target.protocol,
               "--steps", ",".join(str(n) for n in plan["steps"]),
               "--step-s", str(plan["step_s"]), "--settle-s", str(plan["settle_s"]),
               "--grace-s", str(plan["grace_s"]), "--max-run-s", str(plan["max_run_s"]),
               "--mutation-rate", str(MUTATIONS_PER_S), "--mutation-bytes", str(MUTATION_BYTES),
               "--snapshot-bytes", str(SNAPSHOT_BYTES), "--snapshot-every-s", str(SNAPSHOT_EVERY_S),
               "--p99-limit-ms", str(plan["p99_limit_ms"])]
    for host, port in endpoints.urls:
        command += ["--url", f"{host}:{port}"]
    for pid in endpoints.pids:
        command += ["--server-pid", str(pid)]
    return command


def run_target(target: Target, plan: dict, say=print) -> dict:
    """One curve: start the target, step the load generator through the plan, stop the target."""
    timeout_s = plan["max_run_s"] + plan["steps"][-1] / 20 + 120  # the last step's setup and window
    with target.start() as endpoints, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(loadgen_command(target, endpoints, plan), cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, preexec_fn=_child_setup(LOADGEN_CORE))
        watchdog = threading.Timer(timeout_s, process.kill)
        watchdog.start()
        result = None
        try:
            for line in process.stdout:
                if line.startswith("STEP "):
                    say(f"  {target.name:<8} {step_line(json.loads(line[5:]))}")
                elif line.startswith("RESULT "):
                    result = json.loads(line[7:])
            process.wait()
        finally:
            watchdog.cancel()
        if process.returncode != 0 or result is None:
            stderr.seek(0)
            raise RuntimeError(f"the load generator failed against {target.name} (exit {process.returncode}): "
                               f"{stderr.read()[-2000:]}")
    result["target"] = target.name
    result["implementation"] = endpoints.implementation
    return result


# ---------------------------------------------------------------------------------- analysis

def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _mib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def memory_per_session(step: dict, baseline: Optional[int]) -> Optional[float]:
    """Server RSS above the idle server's, per session."""
    if step.get("server_rss_bytes") is None or baseline is None:
        return None
    return (step["server_rss_bytes"] - baseline) / step["sessions"]


def cpu_per_delivery(step: dict) -> Optional[float]:
    """Server CPU seconds per delivered message: less sensitive than latency to other work on the machine."""
    if step.get("server_cpu_share") is None or not step["delivered_per_s"]:
        return None
    return step["server_cpu_share"] / step["delivered_per_s"]


def step_line(step: dict) -> str:
    return (f"{step['sessions']:>5} sessions: {step['delivered_per_s']:>8,.0f} deliveries/s, p50 "
            f"{_ms(step['latency_p50_s'])} ms, p99 {_ms(step['latency_p99_s'])} ms, max {_ms(step['latency_max_s'])} "
            f"ms, RSS {_mib(step['server_rss_bytes'])} MiB, server {100 * (step['server_cpu_share'] or 0):.0f}%, "
            f"loadgen {100 * step['loadgen_cpu_share']:.0f}%, other work {100 * (step.get('other_cpu_share') or 0):.0f}% "
            f"(setup {step['setup_s']:.1f} s{', re-measured' if step['windows'] > 1 else ''})")


def capacity_of(result: dict, limit_s: float) -> dict:
    """The largest step under the limit, the first above it, and a linear estimate between them.

    ``lower_bound`` when no step went above the limit (the run ended first: the node holds at least
    that many), or when the load generator was saturated (it, not the server, may be the limit)."""
    steps = result["steps"]
    passed = None
    failed = None
    for step in steps:
        p99 = step["latency_p99_s"]
        if p99 is not None and p99 <= limit_s and not step["undelivered"] > step["expected_deliveries"] * 0.01:
            passed = step
        else:
            failed = step
            break
    figure = {"limit_s": limit_s, "passed_sessions": passed["sessions"] if passed else 0,
              "failed_sessions": failed["sessions"] if failed else None, "estimate": None, "lower_bound": False,
              "note": ""}
    loadgen_busy = [s["sessions"] for s in steps if s["loadgen_cpu_share"] >= 0.9]
    if failed is None:
        figure["estimate"] = figure["passed_sessions"]
        figure["lower_bound"] = True
        figure["note"] = f"no step above the limit ({result.get('stopped_because', '')}): at least this many"
    elif passed is None:
        figure["note"] = f"the first step ({failed['sessions']} sessions) is already above the limit"
    else:
        # p99 grows steeply near saturation: a straight line between the two steps is an estimate,
        # the bracket is what was measured.
        low, high = passed["latency_p99_s"], failed["latency_p99_s"]
        share = (limit_s - low) / (high - low) if high > low else 0.0
        figure["estimate"] = passed["sessions"] + share * (failed["sessions"] - passed["sessions"])
        figure["note"] = (f"between {passed['sessions']} (p99 {_ms(low)} ms) and {failed['sessions']} "
                          f"(p99 {_ms(high)} ms); linear estimate")
    if loadgen_busy:
        figure["lower_bound"] = True
        figure["note"] += f"; the load generator was saturated at {loadgen_busy[0]} sessions (a lower bound)"
    return figure


def memory_curve(result: dict, limit_s: float) -> dict:
    """RSS per session at each step, and the slope of RSS over sessions (least squares) over the
    steps under the limit: what one more session costs."""
    baseline = result.get("baseline_rss_bytes")
    points = [(s["sessions"], s["server_rss_bytes"]) for s in result["steps"]
              if s["server_rss_bytes"] is not None and s["latency_p99_s"] is not None and s["latency_p99_s"] <= limit_s]
    slope = None
    if len(points) >= 2:
        slope = statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope
    return {"baseline_rss_bytes": baseline, "slope_bytes_per_session": slope,
            "per_session_bytes": {s["sessions"]: memory_per_session(s, baseline) for s in result["steps"]}}


def comparison(results: dict, limit_s: float) -> dict:
    """relay / picows: capacity (above 1: relay holds more sessions), and memory per session and server
    CPU per delivery (above 1: relay uses more) at the largest step both held under the limit, per round."""
    rounds = max(len(curves) for curves in results.values())
    relay, picows = results.get("relay", []), results.get("picows", [])
    capacity_ratios, memory_ratios, cpu_ratios, at_sessions = [], [], [], []
    for ours, theirs in zip(relay, picows):
        a, b = capacity_of(ours, limit_s), capacity_of(theirs, limit_s)
        capacity_ratios += paired_ratios([a["estimate"]], [b["estimate"]])
        common = {s["sessions"] for s in ours["steps"] if s["latency_p99_s"] is not None and s["latency_p99_s"] <= limit_s}
        common &= {s["sessions"] for s in theirs["steps"] if s["latency_p99_s"] is not None and s["latency_p99_s"] <= limit_s}
        if common:
            n = max(common)
            mine = memory_per_session(next(s for s in ours["steps"] if s["sessions"] == n), ours["baseline_rss_bytes"])
            other = memory_per_session(next(s for s in theirs["steps"] if s["sessions"] == n), theirs["baseline_rss_bytes"])
            memory_ratios += paired_ratios([mine], [other])
            cpu_ratios += paired_ratios([cpu_per_delivery(next(s for s in ours["steps"] if s["sessions"] == n))],
                                        [cpu_per_delivery(next(s for s in theirs["steps"] if s["sessions"] == n))])
            at_sessions.append(n)
    return {"rounds": rounds, "capacity": ratio_stats(capacity_ratios), "memory_per_session": ratio_stats(memory_ratios),
            "cpu_per_delivery": ratio_stats(cpu_ratios), "memory_at_sessions": at_sessions}


def report(results: dict, plan: dict) -> dict:
    limit_s = plan["p99_limit_ms"] / 1000
    figures = {}
    for name, curves in results.items():
        figures[name] = []
        for round_index, result in enumerate(curves):
            baseline = result.get("baseline_rss_bytes")
            rows = [[s["sessions"], f"{s['delivered_per_s']:,.0f}", _ms(s["latency_p50_s"]), _ms(s["latency_p99_s"]),
                     _ms(s["latency_max_s"]), s["undelivered"], _mib(s["server_rss_bytes"]),
                     "-" if memory_per_session(s, baseline) is None else f"{memory_per_session(s, baseline) / KIB:,.0f}",
                     f"{s['session_age_mean_s']:.0f}",
                     "-" if s["server_cpu_share"] is None else f"{100 * s['server_cpu_share']:.0f}",
                     "-" if cpu_per_delivery(s) is None else f"{cpu_per_delivery(s) * 1e6:.0f}",
                     f"{100 * s['loadgen_cpu_share']:.0f}", _ms(s["send_lag_p99_s"]),
                     "-" if s.get("other_cpu_share") is None else f"{100 * s['other_cpu_share']:.0f}",
                     "/".join(_ms(p) for p in s["window_p99s_s"]), f"{s['setup_s']:.1f}"]
                    for s in result["steps"]]
            print_table(f"{name} ({result['implementation']}), round {round_index + 1}: idle RSS {_mib(baseline)} MiB; "
                        f"stopped: {result['stopped_because']}",
                        ["sessions", "deliveries/s", "p50 ms", "p99 ms", "max ms", "late", "RSS MiB", "KiB/session",
                         "age s", "server %", "us/delivery", "loadgen %", "lag p99 ms", "other %", "p99 per window", "setup s"],
                        rows)
            capacity = capacity_of(result, limit_s)
            memory = memory_curve(result, limit_s)
            slope = memory["slope_bytes_per_session"]
            estimate = capacity["estimate"]
            print(f"capacity: {'at least ' if capacity['lower_bound'] else '~'}"
                  f"{'-' if estimate is None else f'{estimate:,.0f}'} sessions with p99 under {plan['p99_limit_ms']:g} ms "
                  f"({capacity['note']}); memory: {'-' if slope is None else f'{slope / KIB:,.0f} KiB'} per added "
                  f"session (slope over the steps under the limit)")
            figures[name].append({"capacity": capacity, "memory": memory})
    compared = None
    if "relay" in results and "picows" in results:
        compared = comparison(results, limit_s)
        print("\nrelay / picows (same run): capacity " + format_ratio(compared["capacity"])
              + " (above 1: relay holds more sessions); memory per session " + format_ratio(compared["memory_per_session"])
              + f" at {', '.join(str(n) for n in compared['memory_at_sessions']) or '-'} sessions (above 1: relay uses "
              "more: it keeps each session's latest snapshot and the mutations since for late joiners, picows keeps "
              "nothing); server CPU per delivery " + format_ratio(compared["cpu_per_delivery"])
              + " at the same step (above 1: relay spends more)")
        bounds = [name for name in ("relay", "picows") for f in figures[name] if f["capacity"]["lower_bound"]]
        if bounds:
            print(f"note: {', '.join(sorted(set(bounds)))}: the capacity is a lower bound, so is or may be the ratio")
    return {"figures": figures, "relay_vs_picows": compared}


# ---------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks capacity", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="10 -> 640 sessions, 8 s steps: under 3 minutes")
    parser.add_argument("--target", type=parse_target, action="append", default=None,
                        help=f"what to measure, repeatable (default: {' '.join(DEFAULT_TARGETS)}); known: {', '.join(TARGETS)}")
    parser.add_argument("--steps", default=None, help="comma-separated session counts (default: per mode)")
    parser.add_argument("--step-s", type=float, default=None, help="measured seconds per step (default: per mode)")
    parser.add_argument("--rounds", type=int, default=None, help="curves per target, the order rotating (default 1)")
    parser.add_argument("--p99-limit-ms", type=float, default=P99_LIMIT_MS)
    parser.add_argument("--max-run-s", type=float, default=None, help="per curve: no new step after this long")
    parser.add_argument("--no-install", action="store_true", help="do not install a missing picows (see setup)")
    parser.add_argument("--json", default=None, help="where to save the results (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    plan = dict(PLANS[mode], p99_limit_ms=args.p99_limit_ms)
    if args.steps:
        try:
            plan["steps"] = [int(n) for n in args.steps.split(",")]
        except ValueError:
            parser.error(f"--steps: expected comma-separated integers, got {args.steps!r}")
        if plan["steps"] != sorted(set(plan["steps"])) or plan["steps"][0] < 1:
            parser.error(f"--steps must be increasing positive counts, got {args.steps}")
    for key in ("step_s", "rounds", "max_run_s"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    targets = args.target or [TARGETS[name] for name in DEFAULT_TARGETS]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        parser.error(f"a target is named twice: {' '.join(names)}")
    if not args.no_install and any(t.protocol == "plain" for t in targets) and not _setup.ensure_peers():
        return 2
    print(f"{mode} run: {', '.join(names)}; sessions of 1 master + {SLAVES_PER_SESSION} slaves, "
          f"{MUTATIONS_PER_S:g} mutations/s of {MUTATION_BYTES // KIB} KiB and a {SNAPSHOT_BYTES // MIB} MiB snapshot "
          f"every {SNAPSHOT_EVERY_S:g} s per master; steps {','.join(map(str, plan['steps']))} of {plan['step_s']:g} s; "
          f"limit p99 {plan['p99_limit_ms']:g} ms (server on core {SERVER_CORE}, load generator on core {LOADGEN_CORE})")
    print(f"snapshots are not rate-scaled: each session sends one every {SNAPSHOT_EVERY_S:g} s in real time, the "
          f"sessions' phases staggered over the period, so a {plan['step_s']:g} s step holds about sessions x "
          f"{plan['step_s'] / SNAPSHOT_EVERY_S:.2f} snapshots: {SNAPSHOT_BYTES // MIB} MiB x sessions / "
          f"{SNAPSHOT_EVERY_S:g} s per second, as in production", flush=True)
    started = time.monotonic()
    results: dict = {t.name: [] for t in targets}
    for round_index in range(plan["rounds"]):
        shift = round_index % len(targets)
        for target in targets[shift:] + targets[:shift]:
            print(f"round {round_index + 1}/{plan['rounds']}: {target.name} ({target.description})", flush=True)
            results[target.name].append(run_target(target, plan))
    runtime = time.monotonic() - started
    analysis = report(results, plan)
    machine = machine_description(PEER_PACKAGES)
    machine["relay_server_implementation"] = "; ".join(sorted({r["implementation"] for r in results.get("relay", [])})) or None
    path = save_json("capacity", {
        "machine": machine,
        "settings": {"mode": mode, "targets": names, "plan": plan, "slaves_per_session": SLAVES_PER_SESSION,
                     "mutations_per_s": MUTATIONS_PER_S, "mutation_bytes": MUTATION_BYTES,
                     "snapshot_bytes": SNAPSHOT_BYTES, "snapshot_every_s": SNAPSHOT_EVERY_S,
                     "snapshot_scaling": "none: real period, phases staggered",
                     "relay_flags": RELAY_FLAGS, "server_core": SERVER_CORE, "loadgen_core": LOADGEN_CORE},
        "runtime_s": runtime,
        "results": results,
        **analysis,
    }, args.json)
    print(f"\nran {runtime:.0f} s; saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
