"""The failover copy's cost and what it buys (issue 11), measured in one run on this machine.

    python -m benchmarks failover_copy            # 5 rounds per size, 20 kills per mode: ~10 minutes
    python -m benchmarks failover_copy --quick    # 5 rounds of 1 s, 5 kills per mode: ~4 minutes

* **The copy's cost.** Fan-out 1 -> 4 at 1 KiB, 64 KiB and 1 MiB on a 1-node cluster with its
  redis-server, ``--failover-copy true`` against ``--failover-copy false``: both nodes (each with
  its own Redis) run for the whole run, and their rounds alternate (the order flips every round).
  The master's stream is the load generator's fan-out with a snapshot after every
  ``SNAPSHOT_EVERY_BYTES`` of mutations (what a real master does when the relay asks for one), so
  that the history, and so the copy, stays bounded as in production.  Reported: messages/s, the
  copy's cost (1 - on/off, per round), the node's CPU per delivered message, Redis's CPU (its
  /proc/PID/stat around each round) and the bytes the copy wrote (the node's private /metrics:
  ``relay_copy_bytes_total``, which must grow in every "on" round and stay still in every "off" one).
* **Failover.** nginx (``relay nginx-config``) in front of 3 nodes and redis-server; per kill a new
  session: a master with a ``relay.ResendWindow`` sends a ``SNAPSHOT_BYTES`` snapshot, then a
  ``MUTATION_BYTES`` mutation every ``MUTATION_INTERVAL_S``; ``SLAVES`` slaves, which reconnect with
  ``resume=``.  kill -9 of the host; the time from the kill to the first message the master sent
  after the kill at every slave (the slowest slave counts), the bytes the master sent again (its
  window's re-sends, and a new snapshot when the stream could not continue), whether the slaves
  lost or repeated a mutation; the node restarts before the next kill.  With the copy (the stream
  continues) against without it (the snapshot-and-resync failover of the cluster issue).

Processes: the node measured is pinned to core 0 and the load generator to core 1; redis-server is
not pinned (it shares both cores, as in the issue's setting).  Results go to
benchmarks/results/failover_copy-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks._report import machine_description, print_table, save_json
from benchmarks._stats import MIN_RATIO_ROUNDS, format_ratio, paired_ratios, ratio_stats, verdict
from benchmarks.loadgen.procstats import machine_cpu_seconds, server_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PROFILE_HOOK = ROOT / "benchmarks" / "profile_hook"
sys.path.insert(0, str(ROOT / "tests"))  # the process harness the tests use

from cluster_nodes import ClusterNodes  # noqa: E402
from real_redis import RedisServer  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
SIZES = [KIB, 64 * KIB, MIB]
FANOUT_SLAVES = 4
#: A snapshot after this many bytes of mutations: relay's default backlog_bytes, past which a relay
#: asks the master for one.
SNAPSHOT_EVERY_BYTES = 8 * MIB
#: The issue's targets: the copy may cost at most this share of the throughput, by size.
COST_TARGETS = {KIB: 0.15, MIB: 0.10}
NODE_CORE, LOADGEN_CORE = 0, 1
LOADGEN_TIMEOUT_S = 120.0
WARMUP_ROUND_S = 0.3  # one untimed round per node before the measured ones
SETTLE_POLL_S = 0.1  # after a round, until the copy wrote its last batch
SETTLE_MAX_S = 5.0
NODE_ARGS = ["--log-level", "warning", "--slave-queue-bytes", str(64 * MIB), "--backlog-bytes", str(32 * MIB),
             "--history-hard-limit-bytes", str(64 * MIB)]
PLANS = {"quick": {"rounds": MIN_RATIO_ROUNDS, "seconds": 1.0, "kills": 5},
         "full": {"rounds": 7, "seconds": 2.0, "kills": 20}}

# Failover.
FAILOVER_LEASE_TTL_S = 2.0
FAILOVER_NODES = ("N1", "N2", "N3")
SLAVES = 3
SNAPSHOT_BYTES = 2 * MIB
MUTATION_BYTES = KIB
MUTATION_INTERVAL_S = 0.02
STEADY_S = (0.8, 1.3)  # the kill comes at a random moment in this range after the mutations start
AFTER_NEW_S = 0.3  # the stream runs on this long after every slave got a new message
FAILOVER_BUDGET_S = 30.0
RETRY_S = 0.1  # a client's delay before it tries again (503 while the dead host's lease runs)


# ----------------------------------------------------------------------------- the copy's cost

def private_metrics(port: int) -> dict:
    """The node's private /metrics as {sample name with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def copy_counters(port: int) -> dict:
    metrics = private_metrics(port)
    return {"writes": metrics.get("relay_copy_writes_total", 0.0), "bytes": metrics.get("relay_copy_bytes_total", 0.0),
            "fallbacks": sum(v for k, v in metrics.items() if k.startswith("relay_copy_fallbacks_total"))}


def settle(port: int) -> dict:
    """The copy counters once they stopped moving (the copier wrote its last batch)."""
    deadline = time.monotonic() + SETTLE_MAX_S
    before = copy_counters(port)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)
        now = copy_counters(port)
        if now == before:
            return now
        before = now
    return before


class CopyTarget:
    """A 1-node cluster with its own redis-server, the copy on or off."""

    def __init__(self, folder: Path, copy: bool, profile: Path | None = None) -> None:
        """``profile``: a folder; the node samples its CPU (benchmarks/profile_hook) into on.json / off.json."""
        self.copy = copy
        self.profile = profile
        self.label = "copy on" if copy else "copy off"
        self.redis = RedisServer(folder / "redis")
        self.folder = folder

    def __enter__(self) -> "CopyTarget":
        self.redis.start()
        self.nodes = ClusterNodes(self.folder / "node", self.redis.url, names=("A",), rf=1,
                                  extra_args=NODE_ARGS + ["--failover-copy", "true" if self.copy else "false"])
        saved = dict(os.environ)
        if self.profile is not None:  # benchmarks/profile_hook: the node samples its own CPU
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROFILE_HOOK), os.environ.get("PYTHONPATH")]))
            os.environ["RELAY_SAMPLE_PROFILE"] = str(self.profile / ("on.json" if self.copy else "off.json"))
        try:
            self.nodes.start_all()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        os.sched_setaffinity(self.nodes.processes["A"].pid, {NODE_CORE})
        return self

    def reset_profile(self) -> None:
        self.nodes.signal("A", signal.SIGUSR2)

    def dump_profile(self) -> None:
        self.nodes.signal("A", signal.SIGUSR1)
        time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        self.nodes.stop_all()
        self.redis.kill()

    @property
    def node_pid(self) -> int:
        return self.nodes.processes["A"].pid

    def round(self, size: int, seconds: float) -> dict:
        private = self.nodes.private("A")
        counters_before = copy_counters(private)
        redis_before = server_cpu_seconds(self.redis.process.pid)
        node_before = server_cpu_seconds(self.node_pid)
        machine_before = machine_cpu_seconds()
        children_before = children_cpu_seconds()
        started = time.monotonic()
        command = [sys.executable, "-m", "benchmarks.loadgen", "--workload", "fanout", "--target", "relay",
                   "--port", str(self.nodes.public("A")), "--slaves", str(FANOUT_SLAVES), "--size", str(size),
                   "--count", "200000", "--max-duration-s", str(seconds), "--server-pid", str(self.node_pid),
                   "--snapshot-every-bytes", str(SNAPSHOT_EVERY_BYTES)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=LOADGEN_TIMEOUT_S,
                              preexec_fn=lambda: os.sched_setaffinity(0, {LOADGEN_CORE}))
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr.strip()[-1500:]}")
        result = json.loads(done.stdout)
        counters_after = settle(private)
        wall = time.monotonic() - started
        redis_cpu = server_cpu_seconds(self.redis.process.pid) - redis_before
        node_cpu = server_cpu_seconds(self.node_pid) - node_before
        loadgen_cpu = children_cpu_seconds() - children_before
        machine_after = machine_cpu_seconds()
        # What else ran meanwhile (other helpers, the idle node of the other kind), in cores.
        other = (machine_after["busy"] - machine_before["busy"] - node_cpu - redis_cpu - loadgen_cpu) / wall
        sent = result["count"] + result["warmup_messages"]
        stream_bytes = sent * result["size"]
        copied = counters_after["bytes"] - counters_before["bytes"]
        return {
            "messages_per_s": result["messages_per_s"],
            "deliveries_per_s": result["messages_per_s"] * FANOUT_SLAVES,
            "latency_p99_s": result["latency_p99_s"],
            # Over the load generator's timed span (from its own /proc reading of the node).
            "node_cpu_s_per_delivery": result["server_cpu_s_per_message"] / FANOUT_SLAVES,
            # Over the whole round: session set-up, the stream, the copy's last batch.
            "node_cpu_s_round": node_cpu,
            "redis_cpu_s_round": redis_cpu,
            "redis_cpu_s_per_delivery": redis_cpu / (sent * FANOUT_SLAVES),
            "redis_cpu_share": redis_cpu / wall,
            "round_wall_s": wall,
            "other_cores": other,
            "steal_cores": (machine_after["steal"] - machine_before["steal"]) / wall,
            "loadgen_cpu_share": result["loadgen_cpu_share"],
            "messages_sent": sent,
            "snapshots_sent": result["snapshots_sent"],
            "stream_bytes": stream_bytes,
            "copy_writes": counters_after["writes"] - counters_before["writes"],
            "copy_bytes": copied,
            "copy_fallbacks": counters_after["fallbacks"] - counters_before["fallbacks"],
            # The share of the stream the copy wrote: messages that a later snapshot replaced before
            # the next batch are never written (the copy is the history, docs/cluster.md).
            "copied_share": copied / stream_bytes,
            "copy_bytes_per_s": copied / stream_bytes * result["messages_per_s"] * result["size"],
            "out_of_order": result["out_of_order"],
        }


def children_cpu_seconds() -> float:
    """CPU of this process's children that ended (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_copy_cost(folder: Path, plan: dict, profile: Path | None = None, sizes=tuple(SIZES)) -> list:
    rows = []
    with CopyTarget(folder / "on", True, profile) as on, CopyTarget(folder / "off", False, profile) as off:
        for target in (on, off):  # first imports, first Redis calls, allocator: not in any round
            target.round(min(sizes), WARMUP_ROUND_S)
            if profile is not None:
                target.reset_profile()
        for size in sizes:
            rounds = {"copy on": [], "copy off": []}
            for index in range(plan["rounds"]):
                order = [on, off] if index % 2 == 0 else [off, on]
                for target in order:
                    sample = target.round(size, plan["seconds"])
                    rounds[target.label].append(sample)
                    print(f"  {size // KIB:>5} KiB round {index + 1} {target.label:<8} "
                          f"{sample['messages_per_s']:>9,.0f} msg/s  copied {sample['copy_bytes'] / MIB:7.1f} MiB "
                          f"({sample['copied_share']:.0%})  redis {sample['redis_cpu_s_round']:.2f} s CPU", flush=True)
            check_copy_ran(size, rounds)
            ratio = ratio_stats(paired_ratios([r["messages_per_s"] for r in rounds["copy on"]],
                                              [r["messages_per_s"] for r in rounds["copy off"]]))
            cpu_ratio = ratio_stats(paired_ratios([r["node_cpu_s_per_delivery"] for r in rounds["copy on"]],
                                                  [r["node_cpu_s_per_delivery"] for r in rounds["copy off"]]))
            # The node's and Redis's CPU together: what the copy costs the machine per delivered message.
            total_ratio = ratio_stats(paired_ratios(
                [r["node_cpu_s_per_delivery"] + r["redis_cpu_s_per_delivery"] for r in rounds["copy on"]],
                [r["node_cpu_s_per_delivery"] + r["redis_cpu_s_per_delivery"] for r in rounds["copy off"]]))
            target = COST_TARGETS.get(size)
            rows.append({"size": size, "rounds": rounds, "on_over_off": ratio, "cpu_on_over_off": cpu_ratio,
                         "node_and_redis_cpu_on_over_off": total_ratio,
                         "cost_target": target,
                         "verdict": verdict(ratio, 1.0 - target) if target is not None else None})
        if profile is not None:
            on.dump_profile()
            off.dump_profile()
    return rows


def check_copy_ran(size: int, rounds: dict) -> None:
    """The copy must have written in every "on" round, and never in an "off" one: otherwise the
    comparison measures nothing."""
    for sample in rounds["copy on"]:
        if sample["copy_bytes"] <= 0 or sample["copy_writes"] <= 0:
            raise RuntimeError(f"{size} B: the copy wrote nothing in a 'copy on' round: {sample}")
    for sample in rounds["copy off"]:
        if sample["copy_bytes"] != 0:
            raise RuntimeError(f"{size} B: the copy wrote in a 'copy off' round: {sample}")


def median_of(samples: list, key: str) -> float:
    return statistics.median(s[key] for s in samples)


def spread_of(samples: list, key: str) -> str:
    values = [s[key] for s in samples]
    low, high = min(values), max(values)
    return f"{high / low:.2f}x" if low > 0 else "-"


def print_copy_cost(rows: list) -> None:
    table = []
    for row in rows:
        on, off = row["rounds"]["copy on"], row["rounds"]["copy off"]
        ratio = row["on_over_off"]
        cost = {k: 1.0 - ratio[k] for k in ("median", "min", "max")}
        table.append([
            f"{row['size'] // KIB} KiB",
            f"{median_of(off, 'messages_per_s'):,.0f} ({spread_of(off, 'messages_per_s')})",
            f"{median_of(on, 'messages_per_s'):,.0f} ({spread_of(on, 'messages_per_s')})",
            format_ratio(ratio),
            f"{cost['median']:+.1%} ({cost['max']:+.1%}..{cost['min']:+.1%})",
            f"{median_of(off, 'node_cpu_s_per_delivery') * 1e6:.1f}",
            f"{median_of(on, 'node_cpu_s_per_delivery') * 1e6:.1f}",
            f"{median_of(off, 'redis_cpu_share'):.1%}",
            f"{median_of(on, 'redis_cpu_share'):.1%}",
            f"{median_of(on, 'redis_cpu_s_per_delivery') * 1e6:.1f}",
            f"{median_of(on, 'copy_bytes_per_s') / 1e6:.1f} ({median_of(on, 'copied_share'):.0%})",
            f"{median_of(on, 'loadgen_cpu_share'):.0%}",
            f"{median_of(on + off, 'other_cores'):.2f} ({min(s['other_cores'] for s in on + off):.2f}.."
            f"{max(s['other_cores'] for s in on + off):.2f})",
        ])
    print_table("the copy's cost: fan-out 1 -> 4 on one node, --failover-copy true vs false (median round, spread)",
                ["size", "off msg/s", "on msg/s", "on / off", "cost", "off node us/dlv", "on node us/dlv",
                 "off redis %", "on redis %", "on redis us/dlv", "copied MB/s (share)", "loadgen %", "other cores"], table)
    print_table("the copy's CPU: on / off per delivered message, per round (median, range)",
                ["size", "node CPU on/off", "node + redis CPU on/off"],
                [[f"{row['size'] // KIB} KiB", format_ratio(row["cpu_on_over_off"]),
                  format_ratio(row["node_and_redis_cpu_on_over_off"])] for row in rows])
    print("  node us/dlv: the node's CPU per delivered message (the load generator's timed span); redis %: its CPU over "
          "the round, in % of one core; copied: relay_copy_bytes_total per second of stream, and the share of the "
          "stream's bytes written (messages a later snapshot replaced before the next batch are not); other cores: "
          "the machine's CPU over the round that was neither the node, Redis nor the load generator (other work: noise)")
    for row in rows:
        if row["cost_target"] is not None:
            print(f"  target: the copy costs at most {row['cost_target']:.0%} at {row['size'] // KIB} KiB "
                  f"(on/off >= {1 - row['cost_target']:.2f}): {row['verdict']}")


#: What a sampled stack is counted as: the first rule whose text is in the stack (outermost first).
PROFILE_CATEGORIES = [
    ("the copier (relay/_streamcopy.py: plan, items, the Lua and blob calls)", "relay/_streamcopy.py:"),
    ("the Redis client's own tasks (coredis writer/reader, anyio: copy, lease, records)", "coredis/"),
    ("anyio (only coredis uses it)", "anyio/"),
    ("the cluster node (lease renewals, session records)", "relay/_clusternode.py:"),
    ("fan-out: reading the master, routing (_reader, on_message, _publish)", "relay/_websocket.py:_reader"),
    ("fan-out: writing to the slaves and the master (_writer)", "relay/_websocket.py:_writer"),
    ("HTTP, handshakes, session set-up", "relay/_http.py:"),
    ("trio's scheduler and I/O wait (epoll)", "trio/_run.py:"),
]


COPY_NEEDLES = ("relay/_streamcopy.py:", "coredis/", "anyio/")


def profile_categories(path: Path) -> tuple:
    """({category: CPU seconds}, {leaf function: CPU seconds}) of a sampled profile."""
    data = json.loads(path.read_text())
    interval = 1.0 if data.get("unit") == "cpu_s" else data["interval_s"]  # CPU seconds already, or counts
    categories, leaves, copy_leaves = {}, {}, {}
    for stack, count in data["stacks"].items():
        name = next((label for label, needle in PROFILE_CATEGORIES if needle in stack), "other")
        categories[name] = categories.get(name, 0.0) + count * interval
        leaf = stack.rsplit(";", 1)[-1]
        leaves[leaf] = leaves.get(leaf, 0.0) + count * interval
        if any(needle in stack for needle in COPY_NEEDLES):
            # the last two frames: a C call's time lands on its caller
            tail = ";".join(stack.rsplit(";", 2)[-2:])
            copy_leaves[tail] = copy_leaves.get(tail, 0.0) + count * interval
    return categories, leaves, copy_leaves


def print_profile(folder: Path, rows: list) -> dict:
    """Where each node's CPU went (sampled), per delivered message, copy on against copy off."""
    deliveries = {label: sum(r["messages_sent"] * FANOUT_SLAVES for row in rows for r in row["rounds"][label])
                  for label in ("copy on", "copy off")}
    on, on_leaves, on_copy = profile_categories(folder / "on.json")
    off, off_leaves, _ = profile_categories(folder / "off.json")
    names = [label for label, _ in PROFILE_CATEGORIES] + ["other"]
    table = []
    for name in names + ["all"]:
        a = sum(on.values()) if name == "all" else on.get(name, 0.0)
        b = sum(off.values()) if name == "all" else off.get(name, 0.0)
        per_on, per_off = a / deliveries["copy on"] * 1e6, b / deliveries["copy off"] * 1e6
        table.append([name, f"{a:.2f}", f"{b:.2f}", f"{per_on:.2f}", f"{per_off:.2f}", f"{per_on - per_off:+.2f}"])
    print_table(f"where the nodes' CPU went (sampled every 1 ms of CPU, every measured round and the settling after it; "
                f"sizes {', '.join(str(r['size']) for r in rows)})",
                ["part", "on CPU s", "off CPU s", "on us/dlv", "off us/dlv", "on - off us/dlv"], table)
    extra = sorted(((on_leaves.get(k, 0.0) / deliveries["copy on"] - off_leaves.get(k, 0.0) / deliveries["copy off"]) * 1e6, k)
                   for k in set(on_leaves) | set(off_leaves))
    print_table("the functions the copy adds most to (on - off, CPU per delivered message, where the sample landed)",
                ["function", "on - off us/dlv", "on CPU s", "off CPU s"],
                [[k, f"{d:+.3f}", f"{on_leaves.get(k, 0.0):.2f}", f"{off_leaves.get(k, 0.0):.2f}"]
                 for d, k in reversed(extra[-15:])])
    top = sorted(on_copy.items(), key=lambda item: -item[1])[:15]
    print_table("the 'copy on' node: the copier's and the Redis client's stacks, by their last two frames",
                ["frames", "CPU s", "us/dlv"],
                [[k, f"{v:.3f}", f"{v / deliveries['copy on'] * 1e6:.2f}"] for k, v in top])
    return {"deliveries": deliveries, "on": on, "off": off}


# ----------------------------------------------------------------------------- failover

def find_host(nodes: ClusterNodes, session_id: str) -> str:
    for name in nodes.processes:
        if session_id in (nodes.view(name) or {}).get("epochs", {}):
            return name
    raise RuntimeError(f"no node hosts {session_id}")


async def one_failover(nodes: ClusterNodes, nginx_port: int, rng: random.Random) -> dict:
    import msgpack
    import trio

    import relay

    client = relay.Client("127.0.0.1", nginx_port)
    created = await client.create_session()
    cookies = [value.split(";", 1)[0] for name, value in client.last_headers if name == "set-cookie"]
    client.cookie = cookies[-1] if cookies else None
    session_id = created["session"]
    host = await trio.to_thread.run_sync(find_host, nodes, session_id)
    snapshot_filler = os.urandom(SNAPSHOT_BYTES)
    mutation_filler = os.urandom(MUTATION_BYTES)
    state = {"killed_at": None, "reconnects": 0, "resent_bytes": 0, "resent_messages": 0, "snapshots_resent": 0,
             "resumed": []}
    first_new = [None] * SLAVES  # seconds from the kill to each slave's first message sent after it
    first_new_mutation = [None] * SLAVES
    lost = [0] * SLAVES
    redelivered = [0] * SLAVES  # bytes of messages sent before the kill that a slave got after it
    repeated = [0] * SLAVES
    all_new = trio.Event()

    def snapshot_body() -> bytes:
        return msgpack.packb([-1, time.monotonic(), snapshot_filler])

    async def connect(token, **kwargs):
        while True:
            try:
                return await client.connect(session_id, token, **kwargs)
            except (relay.HTTPStatusError, relay.ConnectionClosed, OSError):
                await trio.sleep(RETRY_S)

    async def master(task_status=trio.TASK_STATUS_IGNORED):
        connection = await connect(created["master_token"], window=relay.ResendWindow())
        await connection.send("snapshot", snapshot_body())
        task_status.started()
        index = 0
        while True:
            async with trio.open_nursery() as nursery:
                async def read():
                    try:
                        while True:
                            await connection.receive()  # acks and hellos: the window's bookkeeping
                    except (relay.ConnectionClosed, OSError):
                        nursery.cancel_scope.cancel()

                async def write():
                    nonlocal index
                    try:
                        while True:
                            index += 1  # numbered and kept by the window even if the send fails
                            await connection.send("mutation", msgpack.packb([index, time.monotonic(),
                                                                             mutation_filler]))
                            await trio.sleep(MUTATION_INTERVAL_S)
                    except (relay.ConnectionClosed, OSError):
                        nursery.cancel_scope.cancel()

                nursery.start_soon(read)
                nursery.start_soon(write)
            previous = connection
            kept = previous.window.kept  # before the hello: what may have to go again
            connection = await connect(created["master_token"], resume=previous)
            state["reconnects"] += 1
            state["resumed"].append(connection.resumed)
            if connection.resumed:
                # Without acks (no copy) the window still holds the first snapshot and everything
                # since: a new stream that holds nothing gets all of it again.
                resent = [m for m in kept if m.seq > connection.hello["held"]]
                state["resent_messages"] += len(resent)
                state["resent_bytes"] += sum(len(m.body) for m in resent)
                state["snapshots_resent"] += sum(m.kind == "snapshot" for m in resent)
            else:
                body = snapshot_body()
                await connection.send("snapshot", body)
                state["snapshots_resent"] += 1
                state["resent_messages"] += 1
                state["resent_bytes"] += len(body)

    async def slave(number: int, task_status=trio.TASK_STATUS_IGNORED):
        joined = await client.join(session_id, agent=f"bench-{number}")
        connection = await connect(joined["slave_token"])
        task_status.started()
        expected = None  # the next mutation index; None: after a snapshot, any
        while True:
            try:
                while True:
                    envelope = await connection.receive()
                    if envelope.kind not in ("snapshot", "mutation") or envelope.sender != "master":
                        continue
                    index, sent_at, _ = msgpack.unpackb(envelope.body)
                    killed_at = state["killed_at"]
                    if killed_at is not None and sent_at > killed_at and first_new[number] is None:
                        first_new[number] = time.monotonic() - killed_at
                    if killed_at is not None and sent_at <= killed_at and first_new[number] is None:
                        redelivered[number] += len(envelope.body)
                    if envelope.kind == "snapshot":
                        expected = None
                        continue
                    if killed_at is not None and sent_at > killed_at and first_new_mutation[number] is None:
                        first_new_mutation[number] = time.monotonic() - killed_at
                        if all(t is not None for t in first_new_mutation):
                            all_new.set()
                    if expected is not None and index < expected:
                        repeated[number] += 1
                        continue
                    if expected is not None and index > expected:
                        lost[number] += index - expected
                    expected = index + 1
            except (relay.ConnectionClosed, OSError):
                connection = await connect(joined["slave_token"], resume=connection)


    with trio.fail_after(FAILOVER_BUDGET_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(master)
            for number in range(SLAVES):
                await nursery.start(slave, number)
            await trio.sleep(rng.uniform(*STEADY_S))
            state["killed_at"] = time.monotonic()
            nodes.kill(host)
            await all_new.wait()
            await trio.sleep(AFTER_NEW_S)
            nursery.cancel_scope.cancel()
    return {"killed": host, "failover_s": max(first_new), "failover_per_slave_s": first_new,
            "first_new_mutation_s": max(first_new_mutation), "master_reconnects": state["reconnects"],
            "resumed": state["resumed"], "resent_bytes": state["resent_bytes"],
            "resent_messages": state["resent_messages"], "snapshots_resent": state["snapshots_resent"],
            "mutations_lost_per_slave": lost, "redelivered_bytes_per_slave": redelivered, "mutations_repeated_per_slave": repeated}


def measure_failover(folder: Path, copy: bool, kills: int, seed: int) -> dict:
    import trio

    from real_nginx import RealNginx
    from relay._cluster import load_cluster
    from relay._nginx import nginx_config

    rng = random.Random(seed)
    samples = []
    label = "copy on" if copy else "copy off"
    with RedisServer(folder / "redis") as redis, ClusterNodes(
            folder / "nodes", redis.url, names=FAILOVER_NODES, lease_ttl_s=FAILOVER_LEASE_TTL_S,
            extra_args=NODE_ARGS + ["--trusted-proxies", "127.0.0.1",
                                    "--failover-copy", "true" if copy else "false"]) as nodes:
        nodes.start_all()
        cluster = load_cluster(str(nodes.file))

        async def run():
            async with RealNginx.running(lambda port, directory: nginx_config(
                    cluster, listen=f"127.0.0.1:{port}", runtime_dir=directory, rate_limits=False)) as nginx:
                for _ in range(kills):
                    sample = await one_failover(nodes, nginx.port, rng)
                    samples.append(sample)
                    await trio.to_thread.run_sync(restart, nodes, sample["killed"])
                    print(f"  {label} kill {len(samples)}: {sample['killed']}: every slave has a new message after "
                          f"{sample['failover_s']:.2f} s; master re-sent {sample['resent_bytes'] / KIB:,.1f} KiB "
                          f"({sample['resent_messages']} messages, {sample['snapshots_resent']} snapshots), a slave "
                          f"got {max(sample['redelivered_bytes_per_slave']) / KIB:,.1f} KiB again; "
                          f"lost {sum(sample['mutations_lost_per_slave'])}, "
                          f"repeated {sum(sample['mutations_repeated_per_slave'])}", flush=True)
        trio.run(run)
    return {"copy": copy, "kills": len(samples), "samples": samples,
            "time_s": distribution([s["failover_s"] for s in samples]),
            "first_new_mutation_s": distribution([s["first_new_mutation_s"] for s in samples]),
            "resent_bytes": distribution([s["resent_bytes"] for s in samples]),
            "redelivered_bytes": distribution([max(s["redelivered_bytes_per_slave"]) for s in samples]),
            "snapshots_resent": sum(s["snapshots_resent"] for s in samples),
            "mutations_lost": sum(sum(s["mutations_lost_per_slave"]) for s in samples),
            "mutations_repeated": sum(sum(s["mutations_repeated_per_slave"]) for s in samples)}


def restart(nodes: ClusterNodes, name: str) -> None:
    nodes.start(name)
    nodes.wait_agreed()


def distribution(values: list) -> dict:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def print_failover(on: dict, off: dict) -> None:
    def row(result):
        t, b, r = result["time_s"], result["resent_bytes"], result["redelivered_bytes"]
        return [result and ("copy on" if result["copy"] else "copy off (snapshot + resync)"), result["kills"],
                f"{t['p50']:.2f}", f"{t['p90']:.2f}", f"{t['max']:.2f}",
                f"{b['p50'] / KIB:,.1f}", f"{b['p90'] / KIB:,.1f}", f"{b['max'] / KIB:,.1f}",
                f"{r['p50'] / KIB:,.1f}", f"{r['max'] / KIB:,.1f}", result["snapshots_resent"], result["mutations_lost"], result["mutations_repeated"]]

    print_table(f"failover: kill -9 of the host behind nginx (3 nodes, lease_ttl_s {FAILOVER_LEASE_TTL_S}); "
                f"time to the first new message at every slave, bytes the master sent again",
                ["failover", "kills", "p50 s", "p90 s", "max s", "re-sent p50 KiB", "p90 KiB", "max KiB",
                 "slave again p50 KiB", "max KiB", "snapshots", "lost", "repeated"], [row(on), row(off)])
    print("  re-sent: bytes the master sent again (bodies); slave again: bytes of messages sent before the kill that "
          "a slave received after it (bodies, the slave that got most); snapshots: snapshots the master sent again; "
          "lost / repeated: mutations a slave never got / got twice (after a snapshot, none is expected)")
    for key in ("p50", "p90", "max"):
        time_ratio = on["time_s"][key] / off["time_s"][key]
        bytes_ratio = (on["resent_bytes"][key] / off["resent_bytes"][key]) if off["resent_bytes"][key] else float("nan")
        print(f"  {key}: time on/off {time_ratio:.2f}x, bytes re-sent on/off {bytes_ratio:.4f}x")


# ----------------------------------------------------------------------------- main

def main(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks failover_copy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s rounds, 5 kills per mode")
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds per size (at least {MIN_RATIO_ROUNDS})")
    parser.add_argument("--kills", type=int, default=None, help="failover samples per mode (default 20; --quick 5)")
    parser.add_argument("--skip-cost", action="store_true", help="the failover only")
    parser.add_argument("--skip-failover", action="store_true", help="the copy's cost only")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a folder: both nodes sample their CPU (benchmarks/profile_hook) into on.json and "
                             "off.json, and the run prints where the copy's CPU goes")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="the copy's cost: comma-separated message sizes in bytes")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",") if v]
    plan = dict(PLANS["quick" if args.quick else "full"])
    if args.rounds is not None:
        plan["rounds"] = max(MIN_RATIO_ROUNDS, args.rounds)
    if args.kills is not None:
        plan["kills"] = args.kills
    if shutil.which("redis-server") is None:
        print("redis-server is not installed: run scripts/system-deps", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    cost = failover = profile = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="relay-bench-copy-") as tmp:
        folder = Path(tmp)
        if not args.skip_cost:
            print("the copy's cost: fan-out 1 -> 4, copy on and off in alternating rounds", flush=True)
            cost = measure_copy_cost(folder / "cost", plan, args.profile, sizes)
            print_copy_cost(cost)
            if args.profile is not None:
                profile = print_profile(args.profile, cost)
        if not args.skip_failover:
            if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
                print("nginx is not installed (scripts/system-deps): the failover is left out", file=sys.stderr)
            else:
                print(f"\nfailover: {plan['kills']} kills -9 per mode", flush=True)
                on = measure_failover(folder / "fo-on", True, plan["kills"], 20261202)
                off = measure_failover(folder / "fo-off", False, plan["kills"], 20261202)
                failover = {"on": on, "off": off}
                print_failover(on, off)
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    path = save_json("failover_copy", {"machine": machine_description(["coredis", "trio"]), "plan": plan,
                                       "load_average": {"before": load, "after": load_after},
                                       "settings": {"snapshot_every_bytes": SNAPSHOT_EVERY_BYTES,
                                                    "snapshot_bytes": SNAPSHOT_BYTES,
                                                    "mutation_bytes": MUTATION_BYTES,
                                                    "mutation_interval_s": MUTATION_INTERVAL_S,
                                                    "lease_ttl_s": FAILOVER_LEASE_TTL_S, "slaves": SLAVES,
                                                    "node_args": NODE_ARGS},
                                       "copy_cost": cost, "failover": failover, "profile": profile})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
