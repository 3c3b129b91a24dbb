"""The cluster's costs, measured in one run on this machine (docs/cluster.md).

    python -m benchmarks cluster            # hop costs (5 rounds) and failover over 20 kills: ~5 minutes
    python -m benchmarks cluster --quick    # 3 rounds, 5 kills: ~1.5 minutes

* **forward hop**: fan-out 1 -> 4 (1 KiB and 64 KiB) with the slaves connected to another node of the
  cluster, which forwards their WebSockets to the host over the private listeners, against the same
  slaves connected to the host directly; rounds alternate, the ratio is taken per round.
* **load balancer hop** (when Debian's nginx is installed): the same fan-out through nginx (the config
  of ``relay nginx-config``) in front of 2 nodes, with the sticky cookie, against 1 node direct.
* **failover**: a session on a random node of 3, its master sending a mutation every 20 ms; kill -9 of
  the host; the time until the slave receives the first message from the new host (the master and the
  slave reconnect through the surviving nodes, as clients behind nginx do), then the node restarts.

The nodes are real processes (``relay serve --cluster``) beside a real redis-server, started with the
same harness as the tests (tests/cluster_nodes.py, tests/real_redis.py).  Results go to
benchmarks/results/cluster-*.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import machine_description, print_table, save_json
from benchmarks._stats import format_ratio, paired_ratios, ratio_stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the process harness the tests use

from cluster_nodes import ClusterNodes  # noqa: E402
from real_redis import RedisServer  # noqa: E402

KIB = 1024
HOP_SIZES = [KIB, 64 * KIB]
HOP_SLAVES = 4
LOADGEN_TIMEOUT_S = 120.0
FAILOVER_LEASE_TTL_S = 2.0
FAILOVER_BUDGET_S = 30.0
MUTATION_INTERVAL_S = 0.02
PLANS = {"quick": {"rounds": 3, "kills": 5, "seconds": 1.0}, "full": {"rounds": 5, "kills": 20, "seconds": 2.0}}
NODE_ARGS = ["--log-level", "warning", "--slave-queue-bytes", str(64 * 1024 * 1024),
             "--backlog-bytes", str(32 * 1024 * 1024), "--history-hard-limit-bytes", str(64 * 1024 * 1024)]


def loadgen_command(port: int, size: int, seconds: float, *, subscriber_port: int | None = None) -> list:
    """One fan-out 1 -> HOP_SLAVES of the load generator against a session created on ``port``."""
    command = [sys.executable, "-m", "benchmarks.loadgen", "--workload", "fanout", "--target", "relay",
               "--port", str(port), "--slaves", str(HOP_SLAVES), "--size", str(size), "--count", "200000",
               "--max-duration-s", str(seconds)]
    if subscriber_port is not None:
        command += ["--subscriber-port", str(subscriber_port)]
    return command


def run_loadgen(port: int, size: int, seconds: float, *, subscriber_port: int | None = None) -> dict:
    done = subprocess.run(loadgen_command(port, size, seconds, subscriber_port=subscriber_port), cwd=ROOT,
                          capture_output=True, text=True, timeout=LOADGEN_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout)


def measure_forward_hop(folder: Path, plan: dict) -> list:
    rows = []
    with RedisServer(folder / "redis") as redis, ClusterNodes(folder / "hop", redis.url, names=("A", "B"), rf=2,
                                                              extra_args=NODE_ARGS) as nodes:
        nodes.start_all()
        host, entry = nodes.public("A"), nodes.public("B")
        for size in HOP_SIZES:
            direct, forwarded = [], []
            for round_index in range(plan["rounds"]):
                order = [("direct", None), ("forwarded", entry)]
                if round_index % 2:
                    order.reverse()
                for label, subscriber_port in order:
                    result = run_loadgen(host, size, plan["seconds"], subscriber_port=subscriber_port)
                    (direct if label == "direct" else forwarded).append(result)
            ratio = ratio_stats(paired_ratios([r["messages_per_s"] for r in forwarded],
                                              [r["messages_per_s"] for r in direct]))
            rows.append({"size": size, "direct": direct, "forwarded": forwarded, "throughput_ratio": ratio})
    return rows


LB_SESSIONS = 2  # load generators in parallel, one session each: with 2 nodes behind nginx, one per node


async def _parallel_loadgens(ports: list, size: int, seconds: float) -> list:
    import trio

    results = [None] * len(ports)

    async def one(index, port):
        done = await trio.run_process(loadgen_command(port, size, seconds), cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr.decode()[-1500:]}")
        results[index] = json.loads(done.stdout)

    async with trio.open_nursery() as nursery:
        for index, port in enumerate(ports):
            nursery.start_soon(one, index, port)
    return results


def measure_lb_hop(folder: Path, plan: dict) -> list:
    """LB_SESSIONS sessions at once: through nginx to 2 nodes, against 1 node without nginx."""
    import trio

    from real_nginx import RealNginx
    from relay._cluster import load_cluster
    from relay._nginx import nginx_config

    rows = []
    with RedisServer(folder / "redis-lb") as redis, ClusterNodes(folder / "lb", redis.url, names=("A", "B"), rf=2,
                                                                 extra_args=NODE_ARGS + ["--trusted-proxies",
                                                                                         "127.0.0.1"]) as nodes:
        nodes.start_all()
        cluster = load_cluster(str(nodes.file))

        async def run():
            async with RealNginx.running(lambda port, directory: nginx_config(
                    cluster, listen=f"127.0.0.1:{port}", runtime_dir=directory, rate_limits=False)) as nginx:
                for size in HOP_SIZES:
                    single, balanced = [], []
                    for round_index in range(plan["rounds"]):
                        order = [("single", [nodes.public("A")] * LB_SESSIONS), ("nginx", [nginx.port] * LB_SESSIONS)]
                        if round_index % 2:
                            order.reverse()
                        for label, ports in order:
                            results = await _parallel_loadgens(ports, size, plan["seconds"])
                            total = sum(r["messages_per_s"] for r in results)
                            p99 = max(r["latency_p99_s"] for r in results)
                            (single if label == "single" else balanced).append({"messages_per_s": total,
                                                                                  "latency_p99_s": p99})
                    ratio = ratio_stats(paired_ratios([r["messages_per_s"] for r in balanced],
                                                      [r["messages_per_s"] for r in single]))
                    rows.append({"size": size, "single": single, "nginx_2_nodes": balanced, "throughput_ratio": ratio})
        trio.run(run)
    return rows


async def _one_failover(nodes: ClusterNodes, rng: random.Random) -> dict:
    import msgpack
    import trio

    import relay

    names = list(nodes.processes)
    creator = rng.choice(names)
    client = relay.Client("127.0.0.1", nodes.public(creator))
    created = await client.create_session()
    session_id = created["session"]
    joined = await client.join(session_id)
    others = [name for name in names if name != creator]
    killed_at = None
    first_new = trio.Event()
    result = {}

    async def open_until_hello(token, prefer, **resume):
        attempt = 0
        while True:
            name = prefer[attempt % len(prefer)]
            attempt += 1
            try:
                connection = await relay.Client("127.0.0.1", nodes.public(name)).connect(session_id, token, **resume)
                hello = (await connection.receive()).decode()
                return connection, hello
            except (relay.HTTPStatusError, relay.ConnectionClosed, OSError):
                await trio.sleep(0.1)

    async def master_loop(task_status=trio.TASK_STATUS_IGNORED):
        prefer = [creator]
        started = False
        while True:
            connection, hello = await open_until_hello(created["master_token"], prefer)
            prefer = others
            try:
                await connection.send("snapshot", msgpack.packb(f"page at epoch {hello['epoch']}"))
                if not started:
                    started = True
                    task_status.started()
                while True:
                    await connection.send("mutation", msgpack.packb(time.monotonic()))
                    await trio.sleep(MUTATION_INTERVAL_S)
            except (relay.ConnectionClosed, OSError):
                continue

    async def slave_loop(task_status=trio.TASK_STATUS_IGNORED):
        prefer = [creator]
        seq = epoch = None
        started = False
        while True:
            connection, hello = await open_until_hello(joined["slave_token"], prefer, after=seq, epoch=epoch)
            prefer = others
            if not started:
                started = True
                task_status.started()
            try:
                while True:
                    envelope = await connection.receive()
                    if envelope.seq:
                        seq = envelope.seq
                    epoch = hello["epoch"]
                    if hello["epoch"] > 1 and envelope.kind in ("snapshot", "mutation") and not first_new.is_set():
                        result["failover_s"] = time.monotonic() - killed_at
                        result["new_host_epoch"] = hello["epoch"]
                        first_new.set()
            except (relay.ConnectionClosed, OSError):
                continue

    with trio.fail_after(FAILOVER_BUDGET_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(master_loop)
            await nursery.start(slave_loop)
            await trio.sleep(0.3)
            killed_at = time.monotonic()
            nodes.kill(creator)
            await first_new.wait()
            nursery.cancel_scope.cancel()
    result["killed"] = creator
    return result


def measure_failover(folder: Path, plan: dict) -> dict:
    import trio

    rng = random.Random(20261202)
    samples = []
    with RedisServer(folder / "redis-failover") as redis, ClusterNodes(
            folder / "failover", redis.url, lease_ttl_s=FAILOVER_LEASE_TTL_S, extra_args=NODE_ARGS) as nodes:
        nodes.start_all()
        for _ in range(plan["kills"]):
            sample = trio.run(_one_failover, nodes, rng)
            samples.append(sample)
            nodes.start(sample["killed"])
            nodes.wait_agreed()
            print(f"  kill {len(samples)}: {sample['killed']} -> first new message after {sample['failover_s']:.2f} s",
                  flush=True)
    times = sorted(s["failover_s"] for s in samples)
    return {"lease_ttl_s": FAILOVER_LEASE_TTL_S, "kills": len(samples), "samples": samples,
            "p50_s": statistics.median(times), "p90_s": times[int(0.9 * (len(times) - 1))],
            "min_s": times[0], "max_s": times[-1]}


def print_hop_table(title: str, rows: list, base: tuple, hop: tuple) -> None:
    """``base`` and ``hop``: (key of the rounds in each row, column label)."""
    def median(row, key, figure):
        return statistics.median(r[figure] for r in row[key])

    print_table(title, ["size", f"{base[1]} msg/s", f"{hop[1]} msg/s", f"{hop[1]} / {base[1]}", f"{base[1]} p99 ms",
                        f"{hop[1]} p99 ms"],
                [[f"{row['size'] // KIB} KiB", f"{median(row, base[0], 'messages_per_s'):,.0f}",
                  f"{median(row, hop[0], 'messages_per_s'):,.0f}", format_ratio(row["throughput_ratio"]),
                  f"{median(row, base[0], 'latency_p99_s') * 1000:.1f}",
                  f"{median(row, hop[0], 'latency_p99_s') * 1000:.1f}"] for row in rows])


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, 5 kills")
    parser.add_argument("--kills", type=int, default=None, help="failover samples (default 20; --quick 5)")
    parser.add_argument("--skip-failover", action="store_true", help="the hops only")
    args = parser.parse_args(argv)
    plan = dict(PLANS["quick" if args.quick else "full"])
    if args.kills is not None:
        plan["kills"] = args.kills
    if shutil.which("redis-server") is None:
        print("redis-server is not installed: run scripts/system-deps", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="relay-bench-cluster-") as tmp:
        folder = Path(tmp)
        hop = measure_forward_hop(folder, plan)
        print_hop_table("forward hop: fan-out 1 -> 4, slaves through another node vs direct to the host",
                        hop, ("direct", "direct"), ("forwarded", "forwarded"))
        lb = None
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
            lb = measure_lb_hop(folder, plan)
            print_hop_table(f"load balancer hop: {LB_SESSIONS} sessions of 1 -> 4 at once, nginx + 2 nodes vs 1 node direct",
                            lb, ("single", "1 node"), ("nginx_2_nodes", "nginx+2"))
        else:
            print("\nnginx is not installed (scripts/system-deps): the load balancer hop is left out")
        failover = None
        if not args.skip_failover:
            print(f"\nfailover: {plan['kills']} kills -9 of a session's host (lease_ttl_s {FAILOVER_LEASE_TTL_S})",
                  flush=True)
            failover = measure_failover(folder, plan)
            print_table("failover: kill -9 to the slave's first message from the new host",
                        ["kills", "p50 s", "p90 s", "min s", "max s", "lease_ttl_s"],
                        [[failover["kills"], f"{failover['p50_s']:.2f}", f"{failover['p90_s']:.2f}",
                          f"{failover['min_s']:.2f}", f"{failover['max_s']:.2f}", failover["lease_ttl_s"]]])
    path = save_json("cluster", {"machine": machine_description(["coredis", "trio"]), "plan": plan,
                                 "forward_hop": hop, "lb_hop": lb, "failover": failover})
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
