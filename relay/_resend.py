"""A master's numbered messages and its re-send window (docs/protocol.md section 4b), sans-IO.

A master numbers the stream kinds it sends (``snapshot``, ``mutation``, ``css``, ``navigate``,
``chat``) 1, 2, 3, ... for the whole life of the session and keeps every message it sent since the
relay's last ``ack`` (the failover copy holds what was acked).  After each ``hello`` the relay says
the number of the latest master message it holds (``held``); the window then either gives back the
messages numbered above it, to send again in order before anything new (the stream continues:
``resumed``), or, when it no longer holds all of them, starts afresh: it forgets what it kept, the
next message goes unnumbered (the relay gives it ``held + 1``: the application's fresh snapshot)
and what follows is numbered from ``held + 2``::

    window = ResendWindow()
    plan = window.on_hello(hello_body)          # each hello of the master's connection
    for message in plan.resend:                 # before anything new
        send(message.kind, message.seq, message.body)
    if not plan.resumed:
        send("snapshot", window.number("snapshot", body), body)
    send("mutation", window.number("mutation", body), body)
    window.on_ack(ack_body)                     # the relay's "ack": forget what the copy holds

It keeps packed bodies (bytes), bounded by ``max_kept_bytes``: past it the oldest are dropped, and a
hello that would need one of them is a fresh start.  ``relay.ClientConnection`` uses one for a
master (``Client.connect(..., window=ResendWindow())``); client.js has the same logic.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, NamedTuple, Optional

__all__ = ["ResendWindow", "KeptMessage", "HelloPlan", "NUMBERED_KINDS", "DEFAULT_MAX_KEPT_BYTES"]

#: The kinds a master numbers: its session-stream messages (``mode`` and ``admit`` are not).
NUMBERED_KINDS = frozenset({"snapshot", "mutation", "css", "navigate", "chat"})
#: What a window keeps for re-sending, by default: packed bodies and kinds, plus the overhead below.
DEFAULT_MAX_KEPT_BYTES = 32 * 1024 * 1024
#: What one kept message costs beyond its kind and body (its record), so that a flood of empty
#: bodies is bounded too.
KEPT_MESSAGE_OVERHEAD_BYTES = 64


class KeptMessage(NamedTuple):
    """A numbered message the relay may not hold yet: send it again as ``[kind, seq, body]``."""

    seq: int
    kind: str
    body: bytes


class HelloPlan(NamedTuple):
    """What a master does after a ``hello``: send ``resend`` again, in order, before anything new.

    ``resumed``: the stream continues (nothing lost, nothing to re-snapshot); False: a fresh start,
    the application sends its snapshot (unnumbered, as ``number`` says)."""

    resumed: bool
    resend: tuple[KeptMessage, ...]


def _count(body: Mapping, key: str, what: str) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"the relay's {what} {key!r} must be a non-negative integer, not {value!r}")
    return value


class ResendWindow:
    """A master's message numbers and the messages it keeps until the relay acks them.

    Numbering starts with the first ``hello`` that carries ``held``: before it, and after a hello
    without ``held`` (a relay that predates numbering), ``number`` gives 0 and keeps nothing.
    """

    def __init__(self, max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES) -> None:
        if isinstance(max_kept_bytes, bool) or not isinstance(max_kept_bytes, int) or max_kept_bytes < 0:
            raise ValueError(f"max_kept_bytes must be a non-negative int, not {max_kept_bytes!r}")
        self.max_kept_bytes = max_kept_bytes
        self.numbering = False  # a hello with "held" was seen, and the last one had it
        self.last_number = 0  # the number of the latest message given one (sent or about to be)
        self._unnumbered_next = False  # a fresh start: the next message goes with seq 0
        self._kept: deque[KeptMessage] = deque()
        self.kept_bytes = 0

    # ------------------------------------------------------------------ sending

    def number(self, kind: str, body: bytes | bytearray | memoryview) -> int:
        """The seq to send ``[kind, seq, body]`` with; a numbered kind is kept for re-sending.

        0 for kinds that are not numbered, before numbering started, and for the first message
        after a fresh start (which the relay numbers ``held + 1`` itself: it is kept as that)."""
        if not self.numbering or kind not in NUMBERED_KINDS:
            return 0
        self.last_number += 1
        self._keep(KeptMessage(self.last_number, kind, bytes(body)))
        if self._unnumbered_next:
            self._unnumbered_next = False
            return 0
        return self.last_number

    def _keep(self, message: KeptMessage) -> None:
        self._kept.append(message)
        self.kept_bytes += self._cost(message)
        while self.kept_bytes > self.max_kept_bytes and self._kept:
            # The oldest cannot be re-sent any more: a hello that needs it is a fresh start.
            self.kept_bytes -= self._cost(self._kept.popleft())

    @staticmethod
    def _cost(message: KeptMessage) -> int:
        return len(message.body) + len(message.kind) + KEPT_MESSAGE_OVERHEAD_BYTES

    @property
    def kept(self) -> tuple[KeptMessage, ...]:
        """What would be sent again now, oldest first."""
        return tuple(self._kept)

    @property
    def first_kept(self) -> int:
        """The lowest number this window can still send again (``last_number + 1``: none kept)."""
        return self._kept[0].seq if self._kept else self.last_number + 1

    # ------------------------------------------------------------------ receiving

    def on_ack(self, body: Mapping[str, Any]) -> None:
        """The relay's ``ack`` ``{"seq": S, "held": N}``: forget the messages numbered up to N."""
        if not isinstance(body, Mapping):
            raise ValueError(f"the relay's ack body must be a map, not {type(body).__name__}")
        held = _count(body, "held", "ack")
        if held is None:
            raise ValueError("the relay's ack has no 'held'")
        self._forget_through(held)

    def _forget_through(self, number: int) -> None:
        while self._kept and self._kept[0].seq <= number:
            self.kept_bytes -= self._cost(self._kept.popleft())

    def on_hello(self, body: Mapping[str, Any]) -> HelloPlan:
        """A master ``hello``: what to send again (``resumed``), or a fresh start."""
        if not isinstance(body, Mapping):
            raise ValueError(f"the relay's hello body must be a map, not {type(body).__name__}")
        held = _count(body, "held", "hello")
        if held is None:
            # A relay from before numbered messages: as then, no numbers and a fresh snapshot.
            self.numbering = False
            self._start_over(0)
            return HelloPlan(False, ())
        if (self.numbering and not self._unnumbered_next
                and held <= self.last_number and self.first_kept <= held + 1):
            self._forget_through(held)
            return HelloPlan(True, tuple(self._kept))
        # Dropped past the bound, a page that never connected, the relay holds more than we ever
        # sent, or the fresh start's snapshot was never sent: we cannot continue the numbering.
        self.numbering = True
        self._start_over(held)
        self._unnumbered_next = True
        return HelloPlan(False, ())

    def _start_over(self, held: int) -> None:
        self._kept.clear()
        self.kept_bytes = 0
        self.last_number = held
        self._unnumbered_next = False
