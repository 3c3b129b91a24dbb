"""The one load generator for every server of the fan-out benchmarks (its own process, its own core).

It speaks WebSocket with relay's Cython fast path (masked frames out, frames parsed in bulk in),
so that it is not the bottleneck.  Against relay it drives a real session (HTTP create, master,
slaves joining through the public endpoints); against a peer it connects ``/sub`` N times and
``/pub`` once.  Every timed message is the same envelope ``[kind, 0, bin]`` for every server, whose
body starts with a time stamp and the message index, so that receivers can compute latency and
check order.  Workloads (``--workload``):

* ``fanout``: ``--count`` messages of ``--size`` bytes from the publisher, as fast as a window of
  messages in flight allows; latency is from the publisher's send to the last subscriber's receive.
* ``mixed``: small mutations at a fixed rate with a large snapshot every few seconds; latency of each
  small message from its *scheduled* send time (so a publisher held up by a slow server counts),
  split by whether a snapshot was in flight (sent but not yet received by every subscriber).
* ``return``: every subscriber (relay: slave, as ``pointer`` events) sends to the publisher (master).
* ``idle``: ``--connections`` WebSocket connections that do nothing; the server's RSS growth per
  connection.  relay: sessions of one master and up to ``--session-slaves`` slaves.
* ``latejoin`` (relay only): a session holding a snapshot and ``--count`` mutations; the time from a
  new slave's join request until it has received the latest message.

    python -m benchmarks.loadgen --target relay --port 8700 --slaves 4 --size 1024 --count 20000

prints one JSON object (the figures, and ``latency_quantiles`` for CDF plots).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import resource
import struct
import sys
import time
from urllib.parse import urlencode

import msgpack
import trio

from relay._accel import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, encode_client_frame, peek_envelope
from relay._client import Client, ClientConnection
from relay._netio import Broken, Yielder, close_socket, recv_into, send_all

STAMP = struct.Struct("<qI")  # time (perf_counter_ns), message index
RECEIVE_BUFFER_BYTES = 1024 * 1024
IDLE_RECEIVE_BUFFER_BYTES = 4096  # idle connections only ever get small presence messages
BIN_HEADER_LENGTH = {0xC4: 2, 0xC5: 3, 0xC6: 5}
MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024
MAX_IN_FLIGHT_MESSAGES = 2000
PATCH_FRAME_FROM_BYTES = 64 * 1024
SKIM_FROM_BYTES = 64 * 1024  # subscribers skim frames (SkimReader) from this message size
MIN_TIMED_MESSAGES = 20  # even past --max-duration-s: enough for a median
# The first messages of a fan-out run are not timed: TCP windows, socket buffers and allocators
# reach their steady state over the first megabytes, and a sub-second sample would mostly
# measure that ramp.  Warm-up: this many bytes per publisher, within these message counts.
WARMUP_BYTES = 16 * 1024 * 1024
WARMUP_MESSAGES_MIN, WARMUP_MESSAGES_MAX = 10, 1000
TIMEOUT_S = 150.0
IDLE_CONNECT_CONCURRENCY = 32
IDLE_SETTLE_S = 1.0  # after the last connection: let presence traffic drain and RSS settle
# Quantiles kept for CDF plots: every percent, then the tail.
CDF_QUANTILES = [i / 100 for i in range(101)] + [0.995, 0.999, 0.9995, 0.9999]
SNAPSHOT_KIND = "snapshot"
MUTATION_KIND = "mutation"


# ---------------------------------------------------------------------------------- server probes

def server_cpu_seconds(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


def _status_kib(pid: int | None, field: str) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def server_peak_rss_bytes(pid: int | None) -> int | None:
    return _status_kib(pid, "VmHWM:")


def server_rss_bytes(pid: int | None) -> int | None:
    return _status_kib(pid, "VmRSS:")


def raise_fd_limit() -> int:
    """Up to the hard limit: 10,000 idle connections need more than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------- messages

def make_template(size: int, kind: str = MUTATION_KIND) -> tuple[bytearray, int]:
    """An envelope of ``size`` bytes in all whose body (a msgpack bin) starts with the stamp."""
    body_length = max(size - 16, STAMP.size)
    for _ in range(3):  # the bin and array headers depend on the length: converge on ``size``
        envelope = msgpack.packb([kind, 0, bytes(body_length)], use_bin_type=True)
        body_length += size - len(envelope)
        body_length = max(body_length, STAMP.size)
    envelope = bytearray(msgpack.packb([kind, 0, bytes(body_length)], use_bin_type=True))
    _kind, _seq, offset, _end = peek_envelope(bytes(envelope))
    return envelope, offset + BIN_HEADER_LENGTH[envelope[offset]]


class MaskedStamp:
    """Writes a stamp into an already masked client frame, masked as it would have been."""

    def __init__(self, mask: bytes, payload_start: int, stamp_offset: int) -> None:
        self.start = payload_start + stamp_offset  # where the stamp lies in the frame
        # The mask key bytes that fall on the stamp (RFC 6455: payload byte i ^ key[i % 4]).
        key = bytes(mask[(stamp_offset + i) % 4] for i in range(STAMP.size))
        self.key = int.from_bytes(key, "little")

    def write(self, frame: bytearray, time_ns: int, index: int) -> None:
        plain = int.from_bytes(STAMP.pack(time_ns, index), "little")
        frame[self.start:self.start + STAMP.size] = (plain ^ self.key).to_bytes(STAMP.size, "little")


def read_stamp(payload) -> tuple | None:
    """(kind, time_ns, index) of a timed message, or None for anything else (hello, presence...)."""
    try:
        kind, _seq, offset, _end = peek_envelope(payload)
    except Exception:
        return None
    header = BIN_HEADER_LENGTH.get(payload[offset])
    if header is None or len(payload) < offset + header + STAMP.size:
        return None
    sent, index = STAMP.unpack_from(payload, offset + header)
    return kind, sent, index


def quantiles(sorted_values, points=CDF_QUANTILES) -> list:
    return [_percentile(sorted_values, q) for q in points] if sorted_values else []


def _percentile(sorted_values, fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def latency_summary(latencies: list, prefix: str = "latency") -> dict:
    latencies = sorted(latencies)
    return {
        f"{prefix}_p50_s": _percentile(latencies, 0.50),
        f"{prefix}_p99_s": _percentile(latencies, 0.99),
        f"{prefix}_p999_s": _percentile(latencies, 0.999),
        f"{prefix}_max_s": latencies[-1] if latencies else None,
        f"{prefix}_samples": len(latencies),
        f"{prefix}_quantiles": quantiles(latencies),
    }


class Reader:
    """Frames from one connection, parsed in bulk; pings answered; a close raises ``Broken``."""

    def __init__(self, connection: ClientConnection, name: str, buffer_bytes: int = RECEIVE_BUFFER_BYTES) -> None:
        self.connection = connection
        self.name = name
        self.buffer = memoryview(bytearray(buffer_bytes))
        self.yielder = Yielder()
        self.pending = [event for event in connection.pending]
        connection.pending.clear()

    async def binary(self) -> list:
        """The next batch of binary payloads (possibly empty)."""
        connection = self.connection
        if self.pending:
            events, self.pending = self.pending, []
            n = 0
        else:
            # Straight into the decoder's buffer (no copy through ours): at 1 MiB and up, copies
            # are what would make the load generator, rather than the server, the bottleneck.
            decoder = connection.decoder
            n = await recv_into(connection.sock, decoder.get_buffer(), self.yielder)
            if n == 0:
                raise Broken(f"{self.name}: the server closed the connection")
            decoder.buffer_updated(n)
            events = []
            while (event := decoder.next_event()) is not None:
                events.append(event)
        payloads = []
        for opcode, payload in events:
            if opcode == OP_BINARY:
                payloads.append(payload)
            elif opcode == OP_PING:
                await send_all(connection.sock, encode_client_frame(OP_PONG, payload), self.yielder)
            elif opcode == OP_CLOSE:
                raise Broken(f"{self.name}: closed by the server ({bytes(payload[:2]).hex()})")
        await self.yielder.account(n)
        return payloads

    async def drain_forever(self) -> None:
        while True:
            await self.binary()


class RawConnection(ClientConnection):
    """A client connection whose bytes after the handshake are kept raw, for ``SkimReader``."""

    def __init__(self, sock, leftover: bytes, max_message_bytes: int) -> None:
        super().__init__(sock, b"", max_message_bytes)
        self.leftover = leftover


def _stamp_from_head(head) -> tuple | None:
    """(kind, time_ns, index) from the first bytes of an envelope ``[kind, seq, bin]``, or None."""
    try:
        if head[0] != 0x93:
            return None
        kind_length = head[1] - 0xA0
        if not 0 <= kind_length < 32:
            return None
        kind = bytes(head[2:2 + kind_length]).decode()
        at = 2 + kind_length
        marker = head[at]
        at += 1 if marker < 0x80 else {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}[marker]
        at += BIN_HEADER_LENGTH[head[at]]
        sent, index = STAMP.unpack_from(head, at)
        return kind, sent, index
    except (KeyError, IndexError, ValueError, struct.error):
        return None


class SkimReader:
    """Server frames parsed by their headers only: of each binary message, keeps the first
    ``HEAD_BYTES`` (envelope header and stamp) and lets the rest go by unread and uncopied, so that
    receiving 4 or 16 copies of a 5 MiB message costs the load generator little more than the
    kernel's copy.  For large messages only: per frame it is slower than the C decoder."""

    HEAD_BYTES = 64

    def __init__(self, connection: RawConnection, name: str, buffer_bytes: int = RECEIVE_BUFFER_BYTES) -> None:
        self.connection = connection
        self.name = name
        self.buffer = bytearray(buffer_bytes)
        self.view = memoryview(self.buffer)
        self.yielder = Yielder()
        self.leftover = bytes(connection.leftover)
        self.carry = b""  # bytes of an incomplete frame header
        self.fin = 0x80
        self.skip = 0  # payload bytes of the current frame still to go by
        self.head = None  # the current binary frame's first bytes, while shorter than HEAD_BYTES
        self.head_wanted = 0
        self.control = None  # (opcode, payload so far) of a control frame being read

    async def binary(self) -> list:
        if self.leftover:  # what came with the handshake response
            data, self.leftover = self.leftover, b""
            n = 0
        else:
            n = await recv_into(self.connection.sock, self.view, self.yielder)
            if n == 0:
                raise Broken(f"{self.name}: the server closed the connection")
            data = self.view[:n]
            if self.carry:  # at most a frame header's few bytes
                data, self.carry = self.carry + bytes(data), b""
        heads = []
        length = len(data)
        at = 0
        while at < length:
            if self.skip:
                take = min(self.skip, length - at)
                if self.head is not None and len(self.head) < self.head_wanted:
                    self.head += bytes(data[at:at + min(take, self.head_wanted - len(self.head))])
                if self.control is not None:
                    self.control[1].extend(data[at:at + take])
                at += take
                self.skip -= take
                if self.skip == 0:
                    await self._frame_done(heads)
                continue
            # A frame header: 2 bytes, then 2 or 8 bytes of length (server frames are unmasked).
            if length - at < 2:
                self.carry = bytes(data[at:])
                break
            first, second = data[at], data[at + 1] & 0x7F
            header = 2 + (2 if second == 126 else 8 if second == 127 else 0)
            if length - at < header:
                self.carry = bytes(data[at:])
                break
            if second == 126:
                payload = int.from_bytes(data[at + 2:at + 4], "big")
            elif second == 127:
                payload = int.from_bytes(data[at + 2:at + 10], "big")
            else:
                payload = second
            at += header
            opcode = first & 0x0F
            if opcode >= 0x8:
                self.control = (opcode, bytearray())
                self.head = None
            else:
                self.control = None
                if opcode != 0:  # a continuation frame keeps its message's head
                    self.head = b""
                    self.head_wanted = min(self.HEAD_BYTES, payload)
                self.fin = first & 0x80
            self.skip = payload
            if payload == 0:
                await self._frame_done(heads)
        await self.yielder.account(n)
        return heads

    async def _frame_done(self, heads: list) -> None:
        if self.control is not None:
            opcode, payload = self.control
            self.control = None
            if opcode == OP_PING:
                await send_all(self.connection.sock, encode_client_frame(OP_PONG, bytes(payload)), self.yielder)
            elif opcode == OP_CLOSE:
                raise Broken(f"{self.name}: closed by the server ({bytes(payload[:2]).hex()})")
            return
        if self.fin and self.head is not None:
            heads.append(self.head)
            self.head = None


# ---------------------------------------------------------------------------------- sessions

async def open_session(args, slaves: int, *, first_snapshot: bool = True, raw_subscribers: bool = False):
    """(publisher, [subscribers]) through relay's public endpoints, or a peer's /pub and /sub.
    ``raw_subscribers``: subscribers are ``RawConnection`` objects, for ``SkimReader``."""
    opener = RawConnection.open if raw_subscribers else ClientConnection.open
    if args.target == "relay":
        client = Client(args.host, args.port)
        created = await client.create_session()
        publisher = await client.connect(created["session"], created["master_token"])
        if first_snapshot:
            # A snapshot first, as a real master would: slaves then hold a consistent state.  Its
            # body is a msgpack str, so that receivers do not take it for a timed message.
            await publisher.send(SNAPSHOT_KIND, msgpack.packb("<html></html>"))
        subscribers = []
        for index in range(slaves):
            joined = await client.join(created["session"], agent=f"bench-{index}")
            target = f"/cobrowse/ws/{created['session']}?{urlencode({'token': joined['slave_token']})}"
            subscribers.append(await opener(args.host, args.port, target, headers=client._headers()))
        return publisher, subscribers
    subscribers = [await opener(args.host, args.port, "/sub", headers=[("host", args.host)])
                   for _ in range(slaves)]
    publisher = await ClientConnection.open(args.host, args.port, "/pub", headers=[("host", args.host)])
    await trio.sleep(0.2)  # let the server register every subscriber before the first message
    return publisher, subscribers


class Server:
    """CPU and memory of the server process around a measurement."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu_before = None

    def start(self) -> None:
        self.cpu_before = server_cpu_seconds(self.pid)

    def figures(self, messages: int, delivered_bytes: int) -> dict:
        cpu_after = server_cpu_seconds(self.pid)
        cpu = None if self.cpu_before is None or cpu_after is None else cpu_after - self.cpu_before
        return {
            "server_cpu_s": cpu,
            "server_cpu_s_per_message": None if cpu is None or not messages else cpu / messages,
            "server_cpu_s_per_mb": None if cpu is None or not delivered_bytes else cpu / (delivered_bytes / 1e6),
            "server_peak_rss_bytes": server_peak_rss_bytes(self.pid),
        }


# ---------------------------------------------------------------------------------- fan-out

class Fanout:
    def __init__(self, args) -> None:
        self.args = args
        self.slaves = args.slaves
        self.received = [0] * args.slaves
        self.out_of_order = 0
        self.progress = trio.Event()
        self.window = max(1, min(MAX_IN_FLIGHT_MESSAGES, args.window_bytes // max(args.size, 1)))
        self.warmup = max(WARMUP_MESSAGES_MIN, min(WARMUP_MESSAGES_MAX, WARMUP_BYTES // max(args.size, 1)))
        self.count = args.count + self.warmup
        self.receive_ns = [array.array("q", bytes(8 * self.count)) for _ in range(args.slaves)]
        self.send_ns = array.array("q", bytes(8 * self.count))

    async def subscriber(self, index: int, connection: ClientConnection) -> None:
        skim = isinstance(connection, RawConnection)
        reader = SkimReader(connection, f"subscriber {index}") if skim else Reader(connection, f"subscriber {index}")
        parse = _stamp_from_head if skim else read_stamp
        receive_ns = self.receive_ns[index]
        received = 0
        expected = 0
        clock = time.perf_counter_ns
        while True:  # until the publisher has seen every subscriber receive all it sent
            payloads = await reader.binary()
            now = clock()
            for payload in payloads:
                stamp = parse(payload)
                if stamp is None or stamp[0] != MUTATION_KIND:
                    continue
                message_index = stamp[2]
                if message_index != expected:
                    self.out_of_order += 1
                expected = message_index + 1
                receive_ns[message_index] = now
                received += 1
            self.received[index] = received
            self.progress.set()

    async def publisher(self, connection: ClientConnection, template: bytearray, stamp_offset: int,
                        done: trio.CancelScope) -> None:
        sock = connection.sock
        yielder = Yielder()
        mask = os.urandom(4)
        window = self.window
        clock = time.perf_counter_ns
        pack_into = STAMP.pack_into
        deadline = None  # the timed part starts after the warm-up
        sent = 0
        # Large messages: mask the frame once, then patch only the masked stamp for each message
        # (masking and copying megabytes per message would slow the load generator, not the server).
        frame = patch = None
        if len(template) >= PATCH_FRAME_FROM_BYTES:
            frame = bytearray(encode_client_frame(OP_BINARY, template, mask))
            patch = MaskedStamp(mask, len(frame) - len(template), stamp_offset)
        for index in range(self.count):
            while index - min(self.received) >= window:
                if self.progress.is_set():
                    self.progress = trio.Event()
                await self.progress.wait()
            now = clock()
            if index == self.warmup:
                deadline = now + int(self.args.max_duration_s * 1e9)
            elif deadline is not None and now > deadline and index >= self.warmup + MIN_TIMED_MESSAGES:
                break  # a slow server gets fewer messages, not more time
            self.send_ns[index] = now
            if frame is not None:
                patch.write(frame, now, index)
                await send_all(sock, frame, yielder)
            else:
                pack_into(template, stamp_offset, now, index)
                await send_all(sock, encode_client_frame(OP_BINARY, template, mask), yielder)
            sent = index + 1
        self.count = sent
        while min(self.received) < sent:
            if self.progress.is_set():
                self.progress = trio.Event()
            await self.progress.wait()
        done.cancel()

    async def main(self) -> dict:
        args = self.args
        template, stamp_offset = make_template(args.size)
        server = Server(args.server_pid)
        with trio.fail_after(args.timeout_s):
            publisher, subscribers = await open_session(args, self.slaves,
                                                        raw_subscribers=args.size >= SKIM_FROM_BYTES)
            server.start()
            started = time.perf_counter_ns()
            own_cpu_before = time.process_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(Reader(publisher, "publisher").drain_forever)
                async with trio.open_nursery() as work:
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.subscriber, index, subscriber)
                    work.start_soon(self.publisher, publisher, template, stamp_offset, work.cancel_scope)
                finished = max(max(times[:self.count]) for times in self.receive_ns)
                figures = server.figures(self.count, self.count * len(template) * self.slaves)
                own_cpu = time.process_time() - own_cpu_before
                nursery.cancel_scope.cancel()
        warmup = self.warmup
        timed = self.count - warmup
        first_send = self.send_ns[warmup]
        elapsed = (finished - first_send) / 1e9
        latencies = [(max(times[i] for times in self.receive_ns) - self.send_ns[i]) / 1e9
                     for i in range(warmup, self.count)]
        delivered_bytes = timed * len(template) * self.slaves
        return {
            "workload": "fanout",
            "target": args.target,
            "slaves": self.slaves,
            "size": len(template),
            "count": timed,
            "warmup_messages": warmup,
            "elapsed_s": elapsed,
            "setup_s": (self.send_ns[0] - started) / 1e9,
            "messages_per_s": timed / elapsed,
            "delivered_bytes_per_s": delivered_bytes / elapsed,
            **latency_summary(latencies),
            **figures,
            "out_of_order": self.out_of_order,
            # Near 1.0: the load generator, not the server, may be what limits the figure.
            "loadgen_cpu_share": own_cpu / ((time.perf_counter_ns() - started) / 1e9),
        }


# ---------------------------------------------------------------------------------- mixed trace

class Mixed:
    """Small mutations at ``--rate`` per second, a snapshot every ``--snapshot-every-s``."""

    def __init__(self, args) -> None:
        self.args = args
        self.slaves = args.slaves
        schedule = []  # (offset_s, kind, size)
        mutations = int(args.duration_s * args.rate)
        for i in range(mutations):
            schedule.append((i / args.rate, MUTATION_KIND, args.size))
        snapshot_sizes = [int(s) for s in args.snapshot_sizes.split(",")]
        t = args.snapshot_every_s / 2
        i = 0
        while t < args.duration_s:
            schedule.append((t, SNAPSHOT_KIND, snapshot_sizes[i % len(snapshot_sizes)]))
            t += args.snapshot_every_s
            i += 1
        schedule.sort(key=lambda item: item[0])
        self.schedule = schedule
        self.count = len(schedule)
        self.scheduled_ns = array.array("q", bytes(8 * self.count))
        self.sent_done_ns = array.array("q", bytes(8 * self.count))
        self.receive_ns = [array.array("q", bytes(8 * self.count)) for _ in range(self.slaves)]
        self.received = [0] * self.slaves

    async def subscriber(self, index: int, connection: ClientConnection) -> None:
        reader = Reader(connection, f"subscriber {index}")
        receive_ns = self.receive_ns[index]
        clock = time.perf_counter_ns
        while self.received[index] < self.count:
            payloads = await reader.binary()
            now = clock()
            for payload in payloads:
                stamp = read_stamp(payload)
                if stamp is None or stamp[0] not in (MUTATION_KIND, SNAPSHOT_KIND):
                    continue
                receive_ns[stamp[2]] = now
                self.received[index] += 1

    async def publisher(self, connection: ClientConnection) -> None:
        sock = connection.sock
        yielder = Yielder()
        mask = os.urandom(4)
        templates = {}
        for _offset, kind, size in self.schedule:
            if (kind, size) not in templates:
                templates[kind, size] = make_template(size, kind)
        clock = time.perf_counter_ns
        start_ns = clock() + 100_000_000
        trio_start = trio.current_time() + 0.1
        for index, (offset, kind, size) in enumerate(self.schedule):
            due_ns = start_ns + int(offset * 1e9)
            if clock() < due_ns:
                await trio.sleep_until(trio_start + offset)
            template, stamp_offset = templates[kind, size]
            STAMP.pack_into(template, stamp_offset, due_ns, index)
            self.scheduled_ns[index] = due_ns
            await send_all(sock, encode_client_frame(OP_BINARY, template, mask), yielder)
            self.sent_done_ns[index] = clock()

    async def main(self) -> dict:
        args = self.args
        server = Server(args.server_pid)
        with trio.fail_after(args.timeout_s):
            publisher, subscribers = await open_session(args, self.slaves)
            server.start()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(Reader(publisher, "publisher").drain_forever)
                async with trio.open_nursery() as work:
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.subscriber, index, subscriber)
                    work.start_soon(self.publisher, publisher)
                delivered = sum(size for _o, _k, size in self.schedule) * self.slaves
                figures = server.figures(self.count, delivered)
                nursery.cancel_scope.cancel()
        last = [max(times[i] for times in self.receive_ns) for i in range(self.count)]
        snapshots = [(self.scheduled_ns[i], last[i], size) for i, (_o, kind, size) in enumerate(self.schedule)
                     if kind == SNAPSHOT_KIND]
        largest = max(size for _s, _l, size in snapshots)
        small_all, small_in_flight, small_in_flight_largest = [], [], []
        for i, (_offset, kind, _size) in enumerate(self.schedule):
            if kind != MUTATION_KIND:
                continue
            latency = (last[i] - self.scheduled_ns[i]) / 1e9
            small_all.append(latency)
            for start, end, size in snapshots:
                if start <= self.scheduled_ns[i] <= end:
                    small_in_flight.append(latency)
                    if size == largest:
                        small_in_flight_largest.append(latency)
                    break
        return {
            "workload": "mixed",
            "target": args.target,
            "slaves": self.slaves,
            "size": args.size,
            "rate_per_s": args.rate,
            "count": self.count,
            "snapshot_sizes": sorted({size for _s, _l, size in snapshots}),
            "largest_snapshot_bytes": largest,
            "snapshot_delivery_s": [(end - start) / 1e9 for start, end, _size in snapshots],
            "publisher_lag_max_s": max((self.sent_done_ns[i] - self.scheduled_ns[i]) / 1e9 for i in range(self.count)),
            **latency_summary(small_all, "small_latency"),
            **latency_summary(small_in_flight, "small_in_flight_latency"),
            **latency_summary(small_in_flight_largest, "small_in_flight_largest_latency"),
            **figures,
        }


# ---------------------------------------------------------------------------------- return path

class ReturnPath:
    """Every subscriber sends ``--count / --slaves`` small messages to the publisher."""

    def __init__(self, args) -> None:
        self.args = args
        self.slaves = args.slaves
        self.per_slave = max(1, args.count // args.slaves)
        self.count = self.per_slave * self.slaves
        self.send_ns = array.array("q", bytes(8 * self.count))
        self.receive_ns = array.array("q", bytes(8 * self.count))
        self.received_from = [0] * self.slaves
        self.received = 0
        self.progress = trio.Event()
        self.window = max(1, min(MAX_IN_FLIGHT_MESSAGES // self.slaves, MAX_IN_FLIGHT_BYTES // max(args.size, 1)))

    async def master(self, connection: ClientConnection) -> None:
        reader = Reader(connection, "publisher")
        clock = time.perf_counter_ns
        per_slave = self.per_slave
        while self.received < self.count:
            payloads = await reader.binary()
            now = clock()
            for payload in payloads:
                stamp = read_stamp(payload)
                if stamp is None or stamp[0] != "pointer":
                    continue
                index = stamp[2]
                self.receive_ns[index] = now
                self.received_from[index // per_slave] += 1
                self.received += 1
            self.progress.set()

    async def slave(self, index: int, connection: ClientConnection) -> None:
        sock = connection.sock
        yielder = Yielder()
        mask = os.urandom(4)
        template, stamp_offset = make_template(self.args.size, "pointer")
        clock = time.perf_counter_ns
        first = index * self.per_slave
        for i in range(self.per_slave):
            while i - self.received_from[index] >= self.window:
                if self.progress.is_set():  # shared by every slave: renew it only once it has fired
                    self.progress = trio.Event()
                await self.progress.wait()
            now = clock()
            STAMP.pack_into(template, stamp_offset, now, first + i)
            self.send_ns[first + i] = now
            await send_all(sock, encode_client_frame(OP_BINARY, template, mask), yielder)

    async def main(self) -> dict:
        args = self.args
        server = Server(args.server_pid)
        with trio.fail_after(args.timeout_s):
            publisher, subscribers = await open_session(args, self.slaves)
            server.start()
            async with trio.open_nursery() as nursery:
                for index, subscriber in enumerate(subscribers):
                    nursery.start_soon(Reader(subscriber, f"subscriber {index}").drain_forever)
                async with trio.open_nursery() as work:
                    work.start_soon(self.master, publisher)
                    for index, subscriber in enumerate(subscribers):
                        work.start_soon(self.slave, index, subscriber)
                figures = server.figures(self.count, self.count * args.size)
                nursery.cancel_scope.cancel()
        elapsed = (max(self.receive_ns) - min(self.send_ns)) / 1e9
        latencies = [(self.receive_ns[i] - self.send_ns[i]) / 1e9 for i in range(self.count)]
        return {
            "workload": "return",
            "target": args.target,
            "slaves": self.slaves,
            "size": args.size,
            "count": self.count,
            "elapsed_s": elapsed,
            "messages_per_s": self.count / elapsed,
            "delivered_bytes_per_s": self.count * args.size / elapsed,
            **latency_summary(latencies),
            **figures,
        }


# ---------------------------------------------------------------------------------- idle connections

class Idle:
    def __init__(self, args) -> None:
        self.args = args
        self.connections: list = []
        self.opened = 0

    async def _open_peer(self, limiter, nursery) -> None:
        async with limiter:
            args = self.args
            connection = await ClientConnection.open(args.host, args.port, "/sub", headers=[("host", args.host)])
            self._keep(connection, nursery)

    async def _open_session(self, slaves: int, limiter, nursery) -> None:
        args = self.args
        async with limiter:
            client = Client(args.host, args.port)
            created = await client.create_session()
            master = await client.connect(created["session"], created["master_token"])
            await master.send(SNAPSHOT_KIND, msgpack.packb("<html></html>"))
        self._keep(master, nursery)
        for index in range(slaves):
            async with limiter:
                joined = await client.join(created["session"], agent=f"idle-{index}")
                self._keep(await client.connect(created["session"], joined["slave_token"]), nursery)

    def _keep(self, connection: ClientConnection, nursery) -> None:
        self.connections.append(connection)
        self.opened += 1
        reader = Reader(connection, "idle", IDLE_RECEIVE_BUFFER_BYTES)
        nursery.start_soon(reader.drain_forever)

    async def main(self) -> dict:
        args = self.args
        fd_limit = raise_fd_limit()
        total = args.connections
        if total + 100 > fd_limit:
            raise SystemExit(f"{total} connections need more file descriptors than the limit {fd_limit}")
        pid = args.server_pid
        await trio.sleep(0.3)
        rss_before = server_rss_bytes(pid)
        limiter = trio.CapacityLimiter(IDLE_CONNECT_CONCURRENCY)
        started = time.perf_counter()
        with trio.fail_after(TIMEOUT_S * 2):
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as opening:
                    if args.target == "relay":
                        per_session = args.session_slaves + 1
                        remaining = total
                        while remaining > 0:
                            members = min(per_session, remaining)
                            opening.start_soon(self._open_session, members - 1, limiter, nursery)
                            remaining -= members
                    else:
                        for _ in range(total):
                            opening.start_soon(self._open_peer, limiter, nursery)
                connect_s = time.perf_counter() - started
                await trio.sleep(IDLE_SETTLE_S)
                rss_after = server_rss_bytes(pid)
                peak = server_peak_rss_bytes(pid)
                nursery.cancel_scope.cancel()
        for connection in self.connections:
            close_socket(connection.sock)
        growth = None if rss_before is None or rss_after is None else rss_after - rss_before
        return {
            "workload": "idle",
            "target": args.target,
            "connections": self.opened,
            "session_slaves": args.session_slaves if args.target == "relay" else None,
            "connect_s": connect_s,
            "connections_per_s": self.opened / connect_s,
            "server_rss_before_bytes": rss_before,
            "server_rss_after_bytes": rss_after,
            "server_peak_rss_bytes": peak,
            "bytes_per_connection": None if growth is None else growth / self.opened,
        }


# ---------------------------------------------------------------------------------- late join

class LateJoin:
    """relay only: how long a new slave takes to be current in a session with a long history."""

    def __init__(self, args) -> None:
        self.args = args

    async def _current(self, connection: ClientConnection, last_index: int) -> int:
        """Read until the message ``last_index`` arrives; the bytes received on the way."""
        reader = Reader(connection, "late slave")
        received = 0
        while True:
            for payload in await reader.binary():
                received += len(payload)
                stamp = read_stamp(payload)
                if stamp is not None and stamp[2] == last_index:
                    return received

    async def main(self) -> dict:
        args = self.args
        if args.target != "relay":
            raise SystemExit("late join is relay-only: the peers have no catch-up")
        server = Server(args.server_pid)
        mask = os.urandom(4)
        with trio.fail_after(args.timeout_s):
            client = Client(args.host, args.port)
            created = await client.create_session()
            session = created["session"]
            master = await client.connect(session, created["master_token"])
            snapshot, snapshot_offset = make_template(args.snapshot_bytes, SNAPSHOT_KIND)
            STAMP.pack_into(snapshot, snapshot_offset, time.perf_counter_ns(), 0)
            frames = [encode_client_frame(OP_BINARY, snapshot, mask)]
            mutation, mutation_offset = make_template(args.size, MUTATION_KIND)
            for index in range(1, args.count + 1):
                STAMP.pack_into(mutation, mutation_offset, time.perf_counter_ns(), index)
                frames.append(encode_client_frame(OP_BINARY, mutation, mask))
            last_index = args.count
            async with trio.open_nursery() as nursery:
                nursery.start_soon(Reader(master, "master").drain_forever)
                # A slave present from the start: once it has everything, so has the history.
                joined = await client.join(session, agent="witness")
                witness = await client.connect(session, joined["slave_token"])
                for frame in frames:
                    await send_all(master.sock, frame, master.yielder)
                await self._current(witness, last_index)
                nursery.start_soon(Reader(witness, "witness").drain_forever)
                server.start()
                times, connect_times, caught_up_bytes = [], [], 0
                for attempt in range(args.joins):
                    started = time.perf_counter()
                    joined = await client.join(session, agent=f"late-{attempt}")
                    late = await client.connect(session, joined["slave_token"])
                    connected = time.perf_counter()
                    caught_up_bytes = await self._current(late, last_index)
                    finished = time.perf_counter()
                    close_socket(late.sock)
                    times.append(finished - started)
                    connect_times.append(connected - started)
                figures = server.figures(args.joins, caught_up_bytes * args.joins)
                nursery.cancel_scope.cancel()
        times.sort()
        return {
            "workload": "latejoin",
            "target": args.target,
            "snapshot_bytes": args.snapshot_bytes,
            "mutations": args.count,
            "mutation_bytes": args.size,
            "joins": args.joins,
            "late_join_s": times[len(times) // 2],
            "late_join_all_s": times,
            "join_and_connect_s": sorted(connect_times)[len(connect_times) // 2],
            "caught_up_bytes": caught_up_bytes,
            "catch_up_bytes_per_s": caught_up_bytes / times[len(times) // 2],
            **figures,
        }


WORKLOADS = {"fanout": Fanout, "mixed": Mixed, "return": ReturnPath, "idle": Idle, "latejoin": LateJoin}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), default="fanout")
    parser.add_argument("--target", choices=["relay", "plain"], required=True,
                        help="relay: a real session; plain: a peer broadcast server (/pub, /sub)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slaves", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="envelope bytes per (small) message")
    parser.add_argument("--count", type=int, default=10000, help="messages (latejoin: mutations in the history)")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--timeout-s", type=float, default=TIMEOUT_S)
    parser.add_argument("--window-bytes", type=int, default=MAX_IN_FLIGHT_BYTES,
                        help="fanout: bytes in flight (sent, not yet received by every subscriber) at most")
    parser.add_argument("--max-duration-s", type=float, default=3.0,
                        help="fanout: stop sending after this long even if --count is not reached")
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
