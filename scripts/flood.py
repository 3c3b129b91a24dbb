"""Flood harness: one relay node process, one flood per scenario, memory and loop responsiveness watched.

    python scripts/flood.py [--seconds 30] [--scenario NAME ...] [--json FILE] [--list]

Each scenario starts a fresh node (``python -m relay serve`` on loopback port 0, with the small limits
of ATTACK_LIMITS so that a bound that holds is reached within a second and a bound that leaks is
obvious), creates an attack session and a bystander session, then floods one path for its share of
``--seconds`` (count-bounded too) while it samples:

* the node's resident memory (VmRSS in /proc/PID/status) every RSS_SAMPLE_S;
* a **bystander** session on other connections: its master sends a small timestamped mutation every
  BYSTANDER_INTERVAL_S to its slave; the latency of each (a message never delivered counts as
  "sent until the end"); a frozen trio loop shows as latency, whichever task froze it;
* ``GET /health`` on the private listener, one after the other.

Flooders run in threads on blocking sockets: one pre-built buffer of masked frames (or one long-poll
body) is sent in a loop, so the harness's own loop stays free to measure.  A flooder that the node
closes reconnects (a persistent attacker).  The clients that are meant not to read (a master that
never reads, slaves that never read, long-poll clients that POST and never GET) read nothing until
the flood is over.

Per scenario it reports RSS before/peak/after against the budget (docs/memory.md), bystander
p50/p99/max latency, /health max latency, the close codes and HTTP statuses the flooders saw, and
the node's own counters from /metrics (closes by code, resyncs, drops, flood closes).  A scenario
fails when its peak RSS passes the limit, the bystander's p99 passes BYSTANDER_P99_LIMIT_S, or the
node did not answer what the spec says (see Scenario.expect).  Exit status 1 if any failed.

Loopback only.  A node whose RSS passes ABORT_RSS_BYTES is stopped at once (a leak must not take
the machine with it); the scenario then fails with ``aborted``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import msgpack
import trio

import relay
from relay._client import ConnectionClosed
from relay._accel import OP_BINARY, OP_CLOSE, FrameDecoder, build_envelope, encode_client_frame, parse_close_payload

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * KiB

# Small limits: a bound that holds is reached within a second, one that leaks is far past its budget.
ATTACK_LIMITS = {
    "slave_queue_bytes": 4 * MiB,
    "history_hard_limit_bytes": 8 * MiB,
    "backlog_bytes": 4 * MiB,
    "max_message_bytes": 1 * MiB,
    "poll_body_bytes": 16 * MiB,  # the default: 1.5 M empty pointer envelopes fit in one POST
}

# The budget (docs/memory.md): per session, slave_queue_bytes per connected client plus
# history_hard_limit_bytes; per connection a constant plus one message being assembled; per
# long-poll POST being read or routed, POST_BODY_COPIES bodies; per node a baseline.
PER_CONNECTION_BYTES = 64 * KiB  # objects of one connection: socket, HTTP state, decoder, peer
POST_BODY_COPIES = 3  # h11's receive buffer, the joined body, msgpack's copy of it
BASELINE_BYTES = 60 * MiB  # an idle node: interpreter, trio, modules, the shared receive buffer
BUDGET_MARGIN = 1.5  # allocator slack (freed memory kept by malloc, fragmentation)
ABORT_RSS_BYTES = 1536 * MiB  # far past any budget here: stop the node before it takes the machine

BYSTANDER_INTERVAL_S = 0.010
BYSTANDER_P99_LIMIT_S = 1.0  # generous: a correctness check that the loop is not frozen
HEALTH_TIMEOUT_S = 10.0
RSS_SAMPLE_S = 0.02
WARMUP_S = 0.5
SETTLE_S = 1.5  # after the flood: late bystander messages arrive, queues drain, RSS settles
NODE_START_TIMEOUT_S = 20.0
SOCKET_TIMEOUT_S = 0.5  # flooder sockets: how often a blocked send checks the deadline
POST_ANSWER_TIMEOUT_S = 60.0  # a long-poll POST may be routed for a long time on a slow node
VICTIM_RCVBUF_BYTES = 4096  # clients that never read: the node's queue fills, not the kernel's buffer
FLOOD_CHUNK_BYTES = 1 * MiB  # one pre-built buffer of frames, sent again and again
MAX_ENVELOPES_PER_FLOODER = 200_000_000  # the count bound (the time bound comes first on loopback)
LONG_POLL_ENVELOPES = 1_500_000  # envelopes per long-poll POST (fewer if poll_body_bytes says so)
FAT_SENDER_BYTES = 16 * KiB  # a client's own fourth element, dropped by the relay at the peek
NIL = b"\xc0"  # an empty body: msgpack nil
TINY = msgpack.packb(b"x" * 8)


# ---------------------------------------------------------------------------------------------- scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One flood.  ``sender`` floods ``kind`` envelopes on ``transport``; ``victims`` are the
    session's other clients, which never read; ``expect`` names what the node must do."""

    name: str
    transport: str  # "ws" or "poll"
    sender: str  # "master" or "slave"
    kind: str
    body: bytes
    flooders: int
    victims: tuple  # roles of the non-reading clients of the attack session ("master", "slave")
    expect: str  # "drops", "resync" (1013/resync of non-reading slaves), "1008", "429", "413", "bounded" (memory only)
    sender_tail: bytes = b""  # a fourth element the client adds (the relay drops it at the peek)
    padding: Optional[tuple] = None  # (kind, body, count): envelopes added after each one (long-poll)
    reads: bool = False  # the flooders read (and discard) what they get, so slowness never closes them
    description: str = ""


SCENARIOS = [
    Scenario("ws-slave-pointer", "ws", "slave", "pointer", NIL, 2, ("master",), "drops",
             description="slaves flood empty pointer events to a master that never reads"),
    Scenario("ws-slave-chat", "ws", "slave", "chat", TINY, 2, ("master", "slave"), "drops", reads=True,
             description="two slaves flood tiny chat (reading their echoes); the master and another slave never read"),
    Scenario("ws-master-mutation", "ws", "master", "mutation", NIL, 1, ("slave", "slave"), "resync",
             description="the master floods empty mutations to slaves that never read"),
    Scenario("ws-master-chat", "ws", "master", "chat", TINY, 1, ("slave", "slave"), "resync",
             description="the master floods tiny chat to slaves that never read"),
    Scenario("ws-slave-refused", "ws", "slave", "snapshot", NIL, 2, ("master",), "1008",
             description="slaves flood snapshots (refused for a slave), reconnecting when closed"),
    Scenario("ws-master-unknown", "ws", "master", "bogus", NIL, 1, ("slave",), "1008",
             description="the master floods an unknown kind, reconnecting when closed"),
    Scenario("ws-slave-chat-fat-sender", "ws", "slave", "chat", NIL, 1, ("master", "slave"), "bounded",
             sender_tail=msgpack.packb(b"s" * FAT_SENDER_BYTES),
             description="a slave floods empty chat with a 16 KiB forged fourth element (dropped at the peek)"),
    Scenario("poll-slave-pointer", "poll", "slave", "pointer", NIL, 1, ("master",), "413",
             description="a slave POSTs 1.5 M empty pointer events at once, never GETs; the master never reads"),
    Scenario("poll-master-mutation", "poll", "master", "mutation", NIL, 1, ("slave", "slave"), "413",
             description="the master POSTs ~1.4 M empty mutations at once, never GETs; slaves never read"),
    Scenario("poll-slave-refused", "poll", "slave", "snapshot", NIL, 1, ("master",), "429",
             description="a slave POSTs 1.5 M snapshots (refused for a slave), never GETs"),
    Scenario("poll-master-unknown", "poll", "master", "bogus", NIL, 1, ("slave",), "429",
             description="the master POSTs 1.5 M envelopes of an unknown kind, never GETs"),
    Scenario("poll-slave-chat-padded", "poll", "slave", "chat", NIL, 2, ("master", "slave"), "drops",
             padding=("pointer", msgpack.packb(b"p" * (900 * KiB)), 18),
             description="slaves POST one empty chat and 18 large pointer events (dropped) per POST"),
]
SCENARIOS_BY_NAME = {s.name: s for s in SCENARIOS}


def envelope_frame(kind: str, body: bytes, tail: bytes = b"") -> bytes:
    """One masked client frame carrying ``[kind, 0, body]`` (or a 4-element one with ``tail``)."""
    envelope = build_envelope(kind, 0, body)
    if tail:
        envelope = b"\x94" + envelope[1:] + tail  # fixarray of 4: the client's own fourth element
    return encode_client_frame(OP_BINARY, envelope)


def poll_body(scenario: Scenario, poll_body_bytes: int) -> bytes:
    """The body of one long-poll POST of ``scenario``: as many envelopes as fit (up to LONG_POLL_ENVELOPES)."""
    envelope = build_envelope(scenario.kind, 0, scenario.body)
    if scenario.padding is not None:
        kind, body, count = scenario.padding
        return envelope + build_envelope(kind, 0, body) * count
    count = min(LONG_POLL_ENVELOPES, poll_body_bytes // len(envelope))
    return envelope * count


# ---------------------------------------------------------------------------------------------- the node


@dataclasses.dataclass
class Node:
    process: subprocess.Popen
    public_port: int
    private_port: int
    stderr_path: str
    implementation: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.stderr_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_LISTENING = re.compile(r"on http://([^:/\s]+):(\d+)/.*\(private ([^\s]+):(\d+)\)")


def start_node(limits: dict, extra_args: tuple = ()) -> Node:
    """A relay node process on loopback port 0; its first stdout line names the bound ports."""
    args = [sys.executable, "-m", "relay", "serve", "--listen", "127.0.0.1:0", "--private-listen", "127.0.0.1:0",
            "--log-level", "warning", "--join-policy", "open",  # the slaves are in at once: floods need no admission
            "--create-burst", "100000", "--join-burst", "100000"]  # the harness makes its sessions from one address
    for name, value in limits.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    args += list(extra_args)
    fd, stderr_path = tempfile.mkstemp(prefix="relay-flood-", suffix=".log")
    with os.fdopen(fd, "wb") as stderr:
        process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    line = _readline_with_timeout(process, NODE_START_TIMEOUT_S)
    match = _LISTENING.search(line)
    if match is None:
        process.kill()
        process.wait()
        raise RuntimeError(f"the node did not start: {line!r}\n{Path(stderr_path).read_text(errors='replace')}")
    implementation = re.search(r"\(([^)]*)\): node", line)
    return Node(process, int(match.group(2)), int(match.group(4)), stderr_path,
                implementation.group(1) if implementation else "")


def _readline_with_timeout(process: subprocess.Popen, timeout_s: float) -> str:
    result = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0].decode(errors="replace") if result else ""


def stop_node(node: Node) -> None:
    if node.process.poll() is None:
        node.process.terminate()
        try:
            node.process.wait(5)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
    node.process.stdout.close()
    try:
        os.unlink(node.stderr_path)
    except OSError:
        pass


def rss_bytes(pid: int) -> Optional[int]:
    """VmRSS of a process (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


async def scrape_metrics(port: int) -> dict:
    """The node's /metrics as {sample name with labels: value}."""
    status, _headers, body = await relay.Client("127.0.0.1", port).request("GET", "/metrics")
    if status != 200:
        return {}
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def node_outcome(metrics: dict) -> dict:
    """What the node says it did: closes by code and the session counters of relay._metrics."""
    closes = {}
    for name, value in metrics.items():
        match = re.match(r'relay_closes_total\{code="(\d+)"\}', name)
        if match and value:
            closes[match.group(1)] = int(value)
    counters = {}
    for key in ("resyncs", "slow_closed", "dropped_to_master", "dropped_stale", "history_cut", "flood_closed",
                "refusals_dropped", "refused"):
        counters[key] = int(metrics.get(f"relay_{key}_total", 0))
    return {"closes": closes, **counters}


def budget(limits: dict, clients_per_session: list, connections: int, posts_in_flight: int) -> dict:
    """The memory a node may use for this traffic (docs/memory.md), and the limit a run is held to."""
    sessions = sum(clients * limits["slave_queue_bytes"] + limits["history_hard_limit_bytes"]
                   for clients in clients_per_session)
    per_connection = connections * (PER_CONNECTION_BYTES + limits["max_message_bytes"])
    posts = posts_in_flight * POST_BODY_COPIES * limits["poll_body_bytes"]
    total = sessions + per_connection + posts
    return {"budget_bytes": total, "limit_bytes": int(BUDGET_MARGIN * total + BASELINE_BYTES)}


# ---------------------------------------------------------------------------------------------- blocking clients (threads)


def _connect_blocking(port: int, rcvbuf: Optional[int] = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5.0)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ws_open_blocking(port: int, target: str, rcvbuf: Optional[int] = None) -> tuple:
    """A WebSocket on a blocking socket: (socket, bytes that came after the 101 response)."""
    sock = _connect_blocking(port, rcvbuf)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        sock.close()
        raise ConnectionError(f"handshake answered {status}")
    return sock, rest


def drain_close_code(sock: socket.socket, leftover: bytes = b"", timeout_s: float = 1.0) -> str:
    """Read what the node sent and return its close code ("none": TCP ended without a close frame,
    "open": the connection was still open, "reset": reset before a close frame was read)."""
    decoder = FrameDecoder(64 * MiB, client_side=True)
    deadline = time.monotonic() + timeout_s
    data = leftover
    try:
        while True:
            if data:
                decoder.feed(data)
                while True:
                    event = decoder.next_event()
                    if event is None:
                        break
                    if event[0] == OP_CLOSE:
                        code = parse_close_payload(event[1])[0]
                        return str(code)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "open"
            sock.settimeout(remaining)
            data = sock.recv(1 * MiB)
            if not data:
                return "none"
    except socket.timeout:
        return "open"
    except ConnectionError:
        return "reset"
    except Exception as exc:  # a frame the decoder refuses: report it, the harness goes on
        return f"undecodable ({exc.__class__.__name__})"


@dataclasses.dataclass
class FloodStats:
    envelopes_sent: int = 0
    bytes_sent: int = 0
    connections: int = 0
    close_codes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    http_statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    post_seconds_max: float = 0.0
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _discard(sock: socket.socket) -> None:
    """Read and drop everything until the connection ends (a flooder that keeps up with its echoes)."""
    buffer = bytearray(1 * MiB)
    try:
        while sock.recv_into(buffer):
            pass
    except OSError:
        pass


def ws_flooder(port: int, target: str, frame: bytes, stats: FloodStats, stop: threading.Event,
               deadline: float, reads: bool = False) -> None:
    """Send ``frame`` again and again (one pre-built chunk per send) until the deadline, the count
    bound or ``stop``; reconnect when the node closes the connection."""
    reps = max(1, FLOOD_CHUNK_BYTES // len(frame))
    chunk = memoryview(frame * reps)
    sent_envelopes = 0
    while not stop.is_set() and time.monotonic() < deadline and sent_envelopes < MAX_ENVELOPES_PER_FLOODER:
        try:
            sock, leftover = ws_open_blocking(port, target)
        except (OSError, ConnectionError) as exc:
            with stats.lock:
                stats.errors[f"connect: {exc.__class__.__name__}"] += 1
            time.sleep(0.05)
            continue
        with stats.lock:
            stats.connections += 1
        sock.settimeout(SOCKET_TIMEOUT_S)
        reader = None
        if reads:
            reader = threading.Thread(target=_discard, args=(sock,), daemon=True)
            reader.start()
        closed_by_node = False
        try:
            while not stop.is_set() and time.monotonic() < deadline and sent_envelopes < MAX_ENVELOPES_PER_FLOODER:
                try:
                    sent = sock.send(chunk)
                except socket.timeout:
                    continue  # the node is not reading this fast: its bounds decide what happens
                with stats.lock:
                    stats.bytes_sent += sent
                    stats.envelopes_sent += sent // len(frame)
                sent_envelopes += sent // len(frame)
                if sent < len(chunk):
                    rest = chunk[sent:]
                    while rest and not stop.is_set() and time.monotonic() < deadline:
                        try:
                            n = sock.send(rest)
                        except socket.timeout:
                            continue
                        rest = rest[n:]
        except OSError:
            closed_by_node = True
        if reader is not None:
            sock.shutdown(socket.SHUT_RDWR)  # the reader consumed the close frame: only the node knows it
            reader.join(5)
            code = "read"
        else:
            code = drain_close_code(sock, leftover, timeout_s=1.0 if closed_by_node else 0.2)
        with stats.lock:
            stats.close_codes[code] += 1
        sock.close()


def poll_flooder(port: int, target: str, body: bytes, stats: FloodStats, stop: threading.Event,
                 deadline: float, reads: bool = False) -> None:
    """POST ``body`` again and again (one connection each, never a GET), reading each answer."""
    head = (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    count = body_envelopes(body)
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            sock = _connect_blocking(port)
            sock.settimeout(POST_ANSWER_TIMEOUT_S)
            sock.sendall(head)
            sock.sendall(body)
            answer = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            sock.close()
        except (OSError, ConnectionError) as exc:
            with stats.lock:
                stats.errors[f"post: {exc.__class__.__name__}"] += 1
            time.sleep(0.05)
            continue
        elapsed = time.monotonic() - started
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "no-answer"
        with stats.lock:
            stats.connections += 1
            stats.http_statuses[status] += 1
            stats.post_seconds_max = max(stats.post_seconds_max, elapsed)
            stats.bytes_sent += len(body)
            stats.envelopes_sent += count


def body_envelopes(body: bytes) -> int:
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(body))
    unpacker.feed(body)
    return sum(1 for _ in unpacker)


# ---------------------------------------------------------------------------------------------- measurements (trio)


def percentile(values: list, fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Bystander:
    """A session of its own: the master sends a timestamped mutation every BYSTANDER_INTERVAL_S,
    its slave records how long each took.  Latency is measured only for what is sent in the
    window (``measuring``); anything still missing at the end counts as "sent until then"."""

    def __init__(self) -> None:
        self.sent: dict = {}
        self.latencies: list = []
        self.measuring = False
        self.errors: list = []

    async def run(self, client: relay.Client, task_status=trio.TASK_STATUS_IGNORED) -> None:
        created = await client.create_session()
        joined = await client.join(created["session"], agent="bystander")
        master = await client.connect(created["session"], created["master_token"])
        slave = await client.connect(created["session"], joined["slave_token"])
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain, master)
                nursery.start_soon(self._receive, slave)
                nursery.start_soon(self._send, master)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await master.close()
                    await slave.close()

    async def _send(self, master) -> None:
        number = 0
        while True:
            number += 1
            now = time.perf_counter()
            if self.measuring:
                self.sent[number] = now
            await master.send("mutation", msgpack.packb([number, now]))
            await trio.sleep(BYSTANDER_INTERVAL_S)

    async def _receive(self, slave) -> None:
        try:
            while True:
                envelope = await slave.receive()
                if envelope.kind == "mutation":
                    number, sent_at = envelope.decode()
                    if self.sent.pop(number, None) is not None:
                        self.latencies.append(time.perf_counter() - sent_at)
        except ConnectionClosed as closed:
            self.errors.append(f"bystander slave closed: {closed.code}")

    async def _drain(self, master) -> None:
        try:
            while True:
                await master.receive()
        except ConnectionClosed as closed:
            self.errors.append(f"bystander master closed: {closed.code}")

    def summary(self) -> dict:
        now = time.perf_counter()
        latencies = self.latencies + [now - sent_at for sent_at in self.sent.values()]
        return {"messages": len(latencies), "lost": len(self.sent), "p50_s": percentile(latencies, 0.50),
                "p99_s": percentile(latencies, 0.99), "max_s": max(latencies, default=0.0)}


async def watch_health(port: int, times: list) -> None:
    client = relay.Client("127.0.0.1", port)
    while True:
        started = time.perf_counter()
        with trio.move_on_after(HEALTH_TIMEOUT_S):
            try:
                await client.request("GET", "/health")
            except (OSError, relay.RelayError):
                pass
        times.append(time.perf_counter() - started)
        await trio.sleep(0.02)


# ---------------------------------------------------------------------------------------------- one scenario


async def run_scenario(scenario: Scenario, seconds: float, limits: Optional[dict] = None,
                       extra_args: tuple = ()) -> dict:
    """Run one scenario against a fresh node; returns its report (see ``check`` for the verdict)."""
    limits = dict(ATTACK_LIMITS if limits is None else limits)
    node = await trio.to_thread.run_sync(start_node, limits, extra_args)
    try:
        return await _run_on_node(node, scenario, seconds, limits)
    finally:
        await trio.to_thread.run_sync(stop_node, node)


async def _run_on_node(node: Node, scenario: Scenario, seconds: float, limits: dict) -> dict:
    client = relay.Client("127.0.0.1", node.public_port)
    created = await client.create_session(chat=False)
    sid = created["session"]
    # Flooding slaves each have their token; victims are the master and/or other slaves.
    flooder_tokens = []
    if scenario.sender == "master":
        flooder_tokens = [created["master_token"]] * scenario.flooders
    else:
        for n in range(scenario.flooders):
            flooder_tokens.append((await client.join(sid, agent=f"flooder-{n}"))["slave_token"])
    victim_tokens = []
    for n, role in enumerate(scenario.victims):
        victim_tokens.append(created["master_token"] if role == "master"
                             else (await client.join(sid, agent=f"victim-{n}"))["slave_token"])
    victims = []
    for token in victim_tokens:
        victims.append(await trio.to_thread.run_sync(
            ws_open_blocking, node.public_port, f"/cobrowse/ws/{sid}?token={token}", VICTIM_RCVBUF_BYTES))

    stop = threading.Event()
    stats = FloodStats()
    rss_samples: list = []
    health_times: list = []
    bystander = Bystander()
    aborted = []

    async def sample_rss() -> None:
        while True:
            value = rss_bytes(node.pid)
            if value is None:
                aborted.append("the node process is gone")
                stop.set()
                return
            rss_samples.append(value)
            if value > ABORT_RSS_BYTES and not aborted:
                aborted.append(f"RSS passed {ABORT_RSS_BYTES // MiB} MiB: node stopped")
                stop.set()
                node.process.kill()
                return
            await trio.sleep(RSS_SAMPLE_S)

    report: dict = {"scenario": scenario.name, "description": scenario.description, "transport": scenario.transport,
                    "sender": scenario.sender, "kind": scenario.kind, "expect": scenario.expect,
                    "limits": limits, "implementation": node.implementation}
    async with trio.open_nursery() as nursery:
        await nursery.start(bystander.run, client)
        await trio.sleep(WARMUP_S)
        report["rss_before_bytes"] = rss_bytes(node.pid)
        nursery.start_soon(sample_rss)
        nursery.start_soon(watch_health, node.private_port, health_times)
        bystander.measuring = True
        started = time.monotonic()
        deadline = started + seconds
        if scenario.transport == "ws":
            frame = envelope_frame(scenario.kind, scenario.body, scenario.sender_tail)
            work = [(ws_flooder, f"/cobrowse/ws/{sid}?token={token}", frame) for token in flooder_tokens]
        else:
            body = poll_body(scenario, limits["poll_body_bytes"])
            report["envelopes_per_post"] = body_envelopes(body)
            report["post_body_bytes"] = len(body)
            work = [(poll_flooder, f"/cobrowse/poll/{sid}?token={token}", body) for token in flooder_tokens]
        async with trio.open_nursery() as flooders:
            for function, target, payload in work:
                flooders.start_soon(trio.to_thread.run_sync, function, node.public_port, target, payload, stats,
                                    stop, deadline, scenario.reads)
        report["flood_s"] = round(time.monotonic() - started, 3)
        bystander.measuring = False
        await trio.sleep(SETTLE_S)
        report["rss_after_bytes"] = rss_bytes(node.pid)
        if not aborted:
            with trio.move_on_after(10):
                report["node"] = node_outcome(await scrape_metrics(node.private_port))
        nursery.cancel_scope.cancel()
    victim_codes = collections.Counter()
    for sock, leftover in victims:
        victim_codes[await trio.to_thread.run_sync(drain_close_code, sock, leftover, 0.5)] += 1
        sock.close()
    clients = [1 + scenario.flooders * (scenario.sender == "slave") + len(scenario.victims), 2]
    connections = scenario.flooders + len(scenario.victims) + 3  # + bystander master, slave, /health
    posts = scenario.flooders if scenario.transport == "poll" else 0
    report.update(budget(limits, clients, connections, posts))
    report.update({
        "rss_peak_bytes": max(rss_samples, default=report["rss_before_bytes"] or 0),
        "bystander": bystander.summary(),
        "bystander_errors": bystander.errors,
        "health_max_s": max(health_times, default=0.0),
        "health_requests": len(health_times),
        "flooders": {"envelopes_sent": stats.envelopes_sent, "bytes_sent": stats.bytes_sent,
                     "connections": stats.connections, "close_codes": dict(stats.close_codes),
                     "http_statuses": dict(stats.http_statuses), "post_seconds_max": round(stats.post_seconds_max, 3),
                     "errors": dict(stats.errors)},
        "victim_close_codes": dict(victim_codes),
        "aborted": aborted[0] if aborted else None,
    })
    report.setdefault("node", {})
    report["failures"] = check(report)
    return report


def check(report: dict) -> list:
    """Why a scenario failed (empty: it passed): memory, the bystander, and what the node answered."""
    failures = []
    if report["aborted"]:
        failures.append(f"aborted: {report['aborted']}")
    if report["rss_peak_bytes"] > report["limit_bytes"]:
        failures.append(f"RSS peak {report['rss_peak_bytes'] / MiB:.0f} MiB over the limit "
                        f"{report['limit_bytes'] / MiB:.0f} MiB (budget {report['budget_bytes'] / MiB:.0f} MiB)")
    by = report["bystander"]
    if by["p99_s"] > BYSTANDER_P99_LIMIT_S:
        failures.append(f"bystander p99 {by['p99_s']:.3f} s over {BYSTANDER_P99_LIMIT_S} s (max {by['max_s']:.3f} s)")
    if by["messages"] == 0:
        failures.append("the bystander sent nothing during the flood")
    node = report["node"]
    expect = report["expect"]
    statuses = report["flooders"]["http_statuses"]
    if report["flooders"]["envelopes_sent"] == 0:
        failures.append("the flooders sent nothing")
    if not node:
        failures.append("no /metrics from the node after the flood")
    elif expect == "drops":
        if node.get("dropped_to_master", 0) == 0:
            failures.append("expected events dropped for the non-reading master (relay_dropped_to_master)")
        if node.get("flood_closed", 0):
            failures.append("an allowed flood was closed as a refusal flood")
    elif expect == "resync":
        if node.get("resyncs", 0) + node.get("slow_closed", 0) == 0:
            failures.append("expected resyncs or 1013 for the non-reading slaves")
    elif expect == "1008":
        # relay_closes counts a close once its connection ended; the flooder may have seen it before.
        seen = node.get("closes", {}).get("1008", 0) + report["flooders"].get("close_codes", {}).get("1008", 0)
        if seen == 0 or node.get("flood_closed", 0) == 0:
            failures.append(f"expected 1008 closes for the refusal flood, node closes {node.get('closes')}, "
                            f"flooders saw {report['flooders'].get('close_codes')}")
    elif expect == "429":
        if statuses.get("429", 0) == 0 or node.get("flood_closed", 0) == 0:
            failures.append(f"expected 429 for the refusal-flood POSTs, got {statuses}")
    elif expect == "413":
        # a POST of ~1.5 M envelopes is cut at MAX_ENVELOPES_PER_POST (relay/_longpoll.py), the rest unrouted
        if statuses.get("413", 0) == 0:
            failures.append(f"expected 413 too-many-envelopes for the huge POSTs, got {statuses}")
    # "bounded": what counts is the memory budget and the bystander, checked above for every scenario
    if report["transport"] == "poll" and expect != "429":
        # 413: a POST of more than MAX_ENVELOPES_PER_POST envelopes (relay/_longpoll.py) is cut there
        if set(statuses) - {"200", "413"}:
            failures.append(f"allowed POSTs answered {statuses}")
    return failures


# ---------------------------------------------------------------------------------------------- CLI


def format_report(report: dict) -> str:
    mib = lambda value: f"{(value or 0) / MiB:.0f}"  # noqa: E731
    by = report["bystander"]
    fl = report["flooders"]
    lines = [
        f"{report['scenario']}: {'FAIL' if report['failures'] else 'ok'} ({report['description']})",
        f"  rss MiB before/peak/after {mib(report['rss_before_bytes'])}/{mib(report['rss_peak_bytes'])}/"
        f"{mib(report['rss_after_bytes'])}, budget {mib(report['budget_bytes'])}, limit {mib(report['limit_bytes'])}",
        f"  bystander p50/p99/max {by['p50_s'] * 1000:.1f}/{by['p99_s'] * 1000:.1f}/{by['max_s'] * 1000:.1f} ms "
        f"({by['messages']} messages, {by['lost']} never delivered); /health max {report['health_max_s'] * 1000:.1f} ms "
        f"({report['health_requests']} requests)",
        f"  flooders: {fl['envelopes_sent']} envelopes, {fl['bytes_sent'] / MiB:.0f} MiB, {fl['connections']} connections "
        f"in {report['flood_s']} s; close codes {fl['close_codes']}, HTTP {fl['http_statuses']}"
        + (f", slowest POST {fl['post_seconds_max']} s" if fl["http_statuses"] else "")
        + (f", errors {fl['errors']}" if fl["errors"] else ""),
        f"  node: {report['node']}; victims' close codes {report['victim_close_codes']}",
    ]
    lines += [f"  FAIL: {failure}" for failure in report["failures"]]
    return "\n".join(lines)


async def run_all(names: list, seconds_each: float, report: Callable = print) -> list:
    results = []
    for name in names:
        result = await run_scenario(SCENARIOS_BY_NAME[name], seconds_each)
        report(format_report(result))
        results.append(result)
    return results


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Flood a relay node process on every path and check its bounds.")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="flood time in all, shared by the scenarios (at least 1.5 s each; default 30)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS_BY_NAME), metavar="NAME",
                        help="run only this scenario (repeatable; --list shows them)")
    parser.add_argument("--json", metavar="FILE", help="write every report as JSON to FILE")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:<26} expect {scenario.expect:<7} {scenario.description}")
        return 0
    names = args.scenario or list(SCENARIOS_BY_NAME)
    seconds_each = max(1.5, args.seconds / len(names))
    print(f"relay flood: {len(names)} scenario(s), {seconds_each:.1f} s of flood each, limits {ATTACK_LIMITS}",
          flush=True)
    results = trio.run(run_all, names, seconds_each, lambda text: print(text, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    failed = [r["scenario"] for r in results if r["failures"]]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
