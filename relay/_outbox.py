"""A byte-bounded queue of ready-to-send messages, drained by one transport writer.

Every queued item has ``head``, ``body`` and ``tail`` (sent back to back, as iovecs of one
sendmsg; an empty one is skipped), ``size`` (their total length on the wire), ``cost`` (what it
holds in memory: ``size`` plus MESSAGE_OVERHEAD_BYTES) and ``seq``.  Queues are bounded by cost,
not by wire size: an empty message is 14 bytes on the wire and about 550 in memory, so a byte
bound on wire sizes alone let a flood of tiny messages take gigabytes.  The queue itself never drops anything: the policy for
a full queue belongs to whoever pushes (see Session._publish and _deliver_past_bound).
"""

from __future__ import annotations

import collections
from typing import Callable, Optional

__all__ = ["Outbox", "RawFrame", "MESSAGE_OVERHEAD_BYTES", "WRITER_BATCH_BYTES", "WRITER_BATCH_FRAMES"]

# What one queued message costs besides its bytes: the message object, its header bytes, the view
# of the received payload and that payload's own object header, the queue slot.  Measured with
# tracemalloc on CPython 3.11 for an empty-bodied envelope received from a WebSocket (about 590
# bytes in all for 20 on the wire, with the master count and number a stream message carries),
# rounded up; tests/unit/test_memory_bounds.py measures it again.
MESSAGE_OVERHEAD_BYTES = 608

WRITER_BATCH_BYTES = 4 * 1024 * 1024  # the most one writer takes from a queue for one send
WRITER_BATCH_FRAMES = 256  # three iovecs each, below IOV_MAX (1024)


class RawFrame:
    """A frame that is not an envelope (echo server, control frames): ``head + body``."""

    __slots__ = ("head", "body", "tail", "size", "cost", "seq", "kind")

    def __init__(self, head: bytes, body) -> None:
        self.head = head
        self.body = body
        self.tail = b""
        self.size = len(head) + len(body)
        self.cost = self.size + MESSAGE_OVERHEAD_BYTES
        self.seq = 0
        self.kind = ""


def _nothing() -> None:
    return None


class Outbox:
    """The outbound queue of one client endpoint.

    The transport sets ``wakeup`` to a callable that wakes its writer, calls :meth:`take_batch`
    when it can send, and closes the connection with ``close_code`` once the queue is drained
    after :meth:`close` was called.
    """

    __slots__ = ("queue", "queued_bytes", "limit", "wakeup", "on_close", "close_code", "close_reason",
                 "resync_pending", "last_seq_sent")

    def __init__(self, limit: int) -> None:
        self.queue: collections.deque = collections.deque()
        self.queued_bytes = 0
        self.limit = limit
        self.wakeup: Callable[[], None] = _nothing
        self.on_close: Callable[[], None] = _nothing  # the transport's reaction to close()
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.resync_pending = False  # a resync is still queued: overflowing now means "cannot keep up"
        self.last_seq_sent = 0

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def push(self, message) -> None:
        """Queue ``message`` whatever the bound (the caller applies the policy)."""
        self.queue.append(message)
        self.queued_bytes += message.cost
        self.wakeup()

    def push_within_bound(self, message) -> bool:
        """Queue ``message`` only if the queue stays within its bound; whether it was queued."""
        if self.queued_bytes + message.cost > self.limit:
            return False
        self.push(message)
        return True

    def take_batch(self, max_bytes: int = WRITER_BATCH_BYTES, max_frames: int = WRITER_BATCH_FRAMES) -> list:
        """Remove and return the queued messages for one send (at least one if any is queued)."""
        queue = self.queue
        if not queue:
            return []
        if len(queue) == 1:
            message = queue.popleft()
            batch = [message]
            released = message.cost
        else:
            batch = []
            taken = 0
            released = 0
            while queue and len(batch) < max_frames:
                message = queue[0]
                if batch and taken + message.size > max_bytes:
                    break
                batch.append(queue.popleft())
                taken += message.size
                released += message.cost
        self.queued_bytes -= released
        if not queue:
            self.resync_pending = False
        seq = batch[-1].seq
        if seq > self.last_seq_sent:
            self.last_seq_sent = seq
        return batch

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0

    def close(self, code: int, reason: str) -> None:
        """Ask the transport to close after sending what is queued (the first reason wins)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.on_close()
        self.wakeup()
