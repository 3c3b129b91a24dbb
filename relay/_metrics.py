"""Prometheus metrics of one relay server (its own registry, so several servers fit in one process).

Counters touched once per message are plain integers here, turned into Prometheus samples only
when ``/metrics`` is scraped: a prometheus_client ``Counter.labels(...).inc()`` takes a lock and a
dict lookup, which at tens of thousands of messages a second was a sixth of the relay's CPU.
Per-session figures (resyncs, drops, queue depth) are read from the sessions at scrape time.
"""

from __future__ import annotations

import collections
from typing import Callable

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "SESSION_STATS"]

# Session.stats keys exported as counters: name -> help.
SESSION_STATS = {
    "resyncs": "Slaves resynced from the latest snapshot because they fell behind",
    "slow_closed": "Slaves closed with 1013 because they could not keep up after a resync",
    "refused": "Envelopes refused for the sender's role or mode (answered with an error envelope)",
    "dropped_to_master": "Slave events dropped because no master was connected or it did not read",
    "dropped_stale": "Queued messages dropped from slow slaves' queues (replaced by a resync)",
    "snapshot_requests": "Fresh snapshots asked of masters because the backlog passed backlog_bytes",
    "history_cut": "Histories cut at history_hard_limit_bytes (late joiners wait for a snapshot)",
    "refusals_dropped": "Error answers to refused envelopes dropped because the sender's queue was full",
    "flood_closed": "Clients closed (1008, or 429 on long-poll) for sending too many refused envelopes",
    "reconnects_refused": "Connections refused (429) because their participant reconnected too often",
    "repeats_dropped": "Master messages dropped because the relay held their number already (re-sends)",
    "number_gaps": "Master messages whose number skipped some (those between were lost)",
}


class Metrics:
    def __init__(self, sessions: Callable[[], collections.abc.Iterable], ended_stats: collections.Counter,
                 ended_published: collections.Counter) -> None:
        """``sessions()`` gives the live sessions; ``ended_*`` accumulate the counts of ended ones."""
        self._sessions = sessions
        self._ended_stats = ended_stats
        self._ended_published = ended_published
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.envelope_errors = Counter("relay_envelope_errors", "Malformed envelopes refused", registry=registry)
        self.closes = Counter("relay_closes", "WebSocket closes sent, by code", ["code"], registry=registry)
        self.handshake_failures = Counter("relay_handshake_failures", "Refused upgrades and API calls, by reason",
                                          ["reason"], registry=registry)
        # The cluster (SPEC 5): routing to the host, takeovers, the lease, the state store.
        self.forwarded = Counter("relay_forwarded_requests", "Requests forwarded to the session's host, by kind",
                                 ["kind"], registry=registry)
        self.forwarded_bytes = Counter("relay_forwarded_bytes", "Bytes moved on forwarded connections, by direction",
                                       ["direction"], registry=registry)
        self.forward_failures = Counter("relay_forward_failures", "Forwards refused because the host could not be "
                                        "reached (answered 503)", registry=registry)
        self.failovers = Counter("relay_takeovers", "Sessions taken over from a node that left the cluster",
                                 registry=registry)
        self.takeovers_from_copy = Counter("relay_takeovers_from_copy", "Takeovers that continued the stream "
                                           "from the failover copy (the others started an empty stream)",
                                           registry=registry)
        self.copy_writes = Counter("relay_copy_writes", "Batches of a session stream written to the failover copy",
                                   registry=registry)
        self.copy_bytes = Counter("relay_copy_bytes", "Bytes of session streams written to the failover copy",
                                  registry=registry)
        self.copy_fallbacks = Counter("relay_copy_fallbacks", "Failover copies given up because they lagged past "
                                      "their bound (by reason: bytes, time, history-cut); such a session fails over "
                                      "with a snapshot and resyncs", ["reason"], registry=registry)
        self.copy_lag = Histogram("relay_copy_lag_seconds", "How long a stream message waited before the failover "
                                  "copy held it (per batch, its oldest message)",
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=registry)
        self.lease_renewals = Counter("relay_lease_renewals", "Lease renewals, by result (ok, failed, lost)",
                                      ["result"], registry=registry)
        self.redis_calls = Counter("relay_redis_calls", "Round trips to the state store, by operation",
                                   ["operation"], registry=registry)
        self.redis_errors = Counter("relay_redis_errors", "Failed or timed-out state store calls, by operation",
                                    ["operation"], registry=registry)
        self.tasks = Gauge("relay_trio_tasks", "trio tasks alive in this process (leak detection)",
                           registry=registry)
        self.tasks.set_function(count_trio_tasks)
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds, ...
        registry.register(_HotCollector(self))
        # Hot-path counts: role -> [messages, bytes].
        self.received = {"master": [0, 0], "slave": [0, 0]}

    def message_in(self, role: str, size: int) -> None:
        counts = self.received[role]
        counts[0] += 1
        counts[1] += size

    def envelope_error(self) -> None:
        self.envelope_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HotCollector:
    """Turns the plain counters and the sessions' figures into samples at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        metrics = self.metrics
        sessions = list(metrics._sessions())
        received = CounterMetricFamily("relay_messages_in", "Envelopes received from clients", labels=["role"])
        received_bytes = CounterMetricFamily("relay_bytes_in", "Envelope bytes received from clients",
                                             labels=["role"])
        for role, (count, size) in metrics.received.items():
            received.add_metric([role], count)
            received_bytes.add_metric([role], size)
        yield received
        yield received_bytes
        by_kind = collections.Counter(metrics._ended_published)
        for session in sessions:
            by_kind.update(session.published)
        published = CounterMetricFamily("relay_messages_published",
                                        "Messages given a seq (session stream) or an inbox seq", labels=["kind"])
        for kind, count in sorted(by_kind.items()):
            published.add_metric([kind], count)
        yield published
        totals = collections.Counter(metrics._ended_stats)
        queued = 0
        clients = collections.Counter({(role, transport): 0 for role in ("master", "slave")
                                       for transport in ("ws", "poll")})
        for session in sessions:
            totals.update(session.stats)
            totals["messages_out"] += session.messages_out
            totals["bytes_out"] += session.bytes_out
            for peer in session.peers():
                queued += peer.queued_bytes
                clients[(peer.role.value, peer.transport)] += 1
        connections = GaugeMetricFamily("relay_connections", "Clients attached to sessions",
                                        labels=["role", "transport"])
        for (role, transport), count in sorted(clients.items()):
            connections.add_metric([role, transport], count)
        yield connections
        yield CounterMetricFamily("relay_messages_out", "Messages queued to receivers (one per receiver)",
                                  value=totals["messages_out"])
        yield CounterMetricFamily("relay_bytes_out", "Bytes queued to receivers (per receiver)",
                                  value=totals["bytes_out"])
        for key, help_text in SESSION_STATS.items():
            yield CounterMetricFamily(f"relay_{key}", help_text, value=totals[key])
        yield GaugeMetricFamily("relay_sessions", "Sessions hosted by this node", value=len(sessions))
        yield GaugeMetricFamily("relay_queued_bytes", "Bytes waiting in client queues (fan-out queue depth)",
                                value=queued)


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
