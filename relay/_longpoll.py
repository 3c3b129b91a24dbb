"""Long-polling (SPEC 3): the transport beside :class:`relay._websocket.WebSocketConnection`.

Both transports drain the same :class:`relay._session.Peer` queues and deliver through
:func:`relay._endpoint.deliver_envelope`.  Where a WebSocket peer lives as long as its socket, a
long-poll peer lives across requests: a GET takes what is queued (or waits up to ``poll_wait_s`` for
something) and answers it as the concatenated envelopes; a POST carries envelopes in.  The peer is
found again by its token (``Session.current_peer``) and detached once it is closed and drained.

This module owns the peer's ``wakeup`` hook (set once, when it makes the peer): nothing else wakes a
waiting GET.  The handlers follow the contract of relay/_routes.py.
"""

from __future__ import annotations

from typing import Optional

import trio

from relay._accel import next_envelope
from relay._api import ApiContext, allow_connection, authenticate, resume_params, session_or_404
from relay._endpoint import deliver_envelope
from relay._errors import EnvelopeError, FloodError, HTTPError
from relay._routes import Request, Response
from relay._session import Peer, Role, Session

__all__ = ["LongPollTransport", "split_envelopes"]

CONTENT_TYPE = "application/msgpack"
# The work one POST may ask for: envelopes, besides poll_body_bytes.  A browser batches what it sent
# since its last POST (a few to a few hundred); this is far above that and far below a stall.
MAX_ENVELOPES_PER_POST = 4096
ENVELOPES_PER_TURN = 128  # envelopes routed between two checkpoints (about a millisecond)


def split_envelopes(body: bytes):
    """Yield each envelope of a long-poll body as a view, with the checks of ``peek_envelope``
    (``next_envelope`` walks it without building any object, so a body costs what its bytes cost)."""
    if not body:
        raise EnvelopeError("empty long-poll body: send one or more envelopes")
    view = memoryview(body)
    start = 0
    while start < len(body):
        end = next_envelope(view, start)[4]
        yield view[start:end]
        start = end


class _Waiter:
    """The GET waiting on one long-poll peer (at most one: a newer GET releases an older one).

    Its :meth:`wake` is the peer's ``wakeup`` hook, which the queue calls on every push and close.
    """

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: Optional[trio.Event] = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()

    async def wait(self, timeout_s: float) -> None:
        """Until the peer is woken or ``timeout_s`` passed; an older GET still waiting returns now."""
        self.wake()
        event = self.event = trio.Event()
        with trio.move_on_after(timeout_s):
            await event.wait()
        if self.event is event:
            self.event = None


class LongPollTransport:
    """The handlers ``poll_get`` and ``poll_post`` of one node."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.config = context.config

    def handlers(self) -> dict:
        return {"poll_get": self.poll_get, "poll_post": self.poll_post}

    def _peer(self, session: Session, role: Role, record, after: Optional[int], epoch: Optional[int],
              master_count: Optional[int] = None) -> Peer:
        """The long-poll peer of this token, attaching a new one when there is none (or on resume)."""
        current = session.current_peer(role, record)
        now = trio.current_time()
        if current is not None and current.transport == "poll" and not current.closing:
            if after is None or after >= current.last_seq_sent or role is Role.MASTER:
                current.last_seen = now
                return current
        allow_connection(session, role, record, now)
        peer = Peer(role, transport="poll", limit=self.config.slave_queue_bytes)
        waiter = peer.poll_event = _Waiter()
        peer.wakeup = waiter.wake
        peer.last_seen = now
        if role is Role.MASTER:
            session.attach_master(peer, now)
        else:
            session.attach_slave(record, peer, now, after=after, epoch=epoch, master_count=master_count)
        return peer

    async def poll_get(self, request: Request) -> Response:
        """What is queued for this client, waiting up to ``poll_wait_s`` when nothing is; 410 once closed."""
        session = session_or_404(self.context.host, request.params["session"])
        role, record = authenticate(session, request.query.get("token"))
        after, epoch, master_count = resume_params(request.query)
        peer = self._peer(session, role, record, after, epoch, master_count)
        waiter = peer.poll_event
        if not peer.queue and not peer.closing:
            await waiter.wait(self.config.poll_wait_s)
        else:
            waiter.wake()  # an older GET for this peer returns now, empty
        peer.last_seen = trio.current_time()
        batch = peer.take_batch(max_bytes=self.config.max_message_bytes)
        if not batch and peer.closing:
            session.detach(peer, trio.current_time())
            if peer.close_code is not None:  # counted as a WebSocket close would be
                self.context.metrics.closes.labels(str(int(peer.close_code))).inc()
            raise HTTPError(410, "closed", peer.close_reason or "this long-poll client was closed",
                            details={"close_code": peer.close_code})
        parts = []
        for message in batch:
            parts.extend(message.envelope())  # head, body, sender tail
        return Response(200, b"".join(parts), content_type=CONTENT_TYPE,
                        headers=[("x-relay-seq", str(peer.last_seq_sent))])

    async def poll_post(self, request: Request) -> Response:
        """Envelopes from this client, one after the other in the body, each delivered as if it came
        on a WebSocket; 400 names the first malformed one (those before it were delivered)."""
        session = session_or_404(self.context.host, request.params["session"])
        role, record = authenticate(session, request.query.get("token"))
        body = await request.read_body(self.config.poll_body_bytes)
        current = session.current_peer(role, record)
        if current is not None and not current.closing:
            peer = current  # a client that receives on a WebSocket may still send by POST
        else:
            peer = self._peer(session, role, record, None, None)
        metrics = self.context.metrics
        count = 0
        try:
            for envelope in split_envelopes(body):
                if count == MAX_ENVELOPES_PER_POST:
                    raise HTTPError(413, "too-many-envelopes",
                                    f"a long-poll POST carries at most {MAX_ENVELOPES_PER_POST} envelopes; "
                                    f"the first {count} were delivered", details={"accepted": count})
                if count and count % ENVELOPES_PER_TURN == 0:
                    await trio.lowlevel.checkpoint()  # one request must not hold the loop
                    if peer.closing:  # closed meanwhile (replaced, session ended): the rest has nowhere to go
                        break
                metrics.message_in(role.value, len(envelope))
                deliver_envelope(session, peer, envelope, trio.current_time())
                count += 1
        except FloodError as exc:
            raise HTTPError(429, "too-many-refusals", f"envelope {count}: {exc}; this client was closed",
                            details={"accepted": count, "close_code": int(exc.close_code)}) from None
        except EnvelopeError as exc:
            metrics.envelope_error()
            raise HTTPError(400, "bad-envelope", f"envelope {count}: {exc}") from None
        return Response.json(200, {"accepted": count})
