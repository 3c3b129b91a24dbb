"""Prometheus metrics of one relay server (its own registry, so several servers fit in one process)."""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Metrics:
    def __init__(self, sessions_callback) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.sessions = Gauge("relay_sessions", "Sessions hosted by this node", registry=registry)
        self.sessions.set_function(sessions_callback)
        self.connections = Gauge("relay_connections", "Open client connections",
                                 ["role", "transport"], registry=registry)
        self.messages_in = Counter("relay_messages_in", "Envelopes received from clients", ["role"],
                                   registry=registry)
        self.bytes_in = Counter("relay_bytes_in", "Envelope bytes received from clients", ["role"],
                                registry=registry)
        self.messages_published = Counter("relay_messages_published", "Messages given a seq or inbox seq",
                                          ["kind"], registry=registry)
        self.bytes_out = Counter("relay_bytes_out", "Bytes queued to clients (per receiver)", registry=registry)
        self.envelope_errors = Counter("relay_envelope_errors", "Malformed envelopes refused", registry=registry)
        self.closes = Counter("relay_closes", "WebSocket closes sent, by code", ["code"], registry=registry)
        self.handshake_failures = Counter("relay_handshake_failures", "Refused upgrades and API calls",
                                          ["reason"], registry=registry)
        self.resyncs = Counter("relay_resyncs", "Slaves resynced because they fell behind", registry=registry)
        self.slow_closed = Counter("relay_slow_slaves_closed", "Slaves closed with 1013", registry=registry)
        self.forwarded = Counter("relay_forwarded_requests", "Requests routed to another node", registry=registry)
        self.failovers = Counter("relay_failovers", "Sessions taken over from a dead node", registry=registry)
        self.tasks = Gauge("relay_trio_tasks", "trio tasks alive in this process (leak detection)",
                           registry=registry)
        self.tasks.set_function(count_trio_tasks)
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds, ...
        self._in_children = {}

    def message_in(self, role: str, size: int) -> None:
        children = self._in_children.get(role)
        if children is None:
            children = self._in_children[role] = (self.messages_in.labels(role), self.bytes_in.labels(role))
        children[0].inc()
        children[1].inc(size)

    def envelope_error(self) -> None:
        self.envelope_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def count_trio_tasks() -> int:
    """Every task under trio's root task (0 outside trio)."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return 0
    count = 0
    pending = [root]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count
