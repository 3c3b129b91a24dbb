"""One server-side WebSocket connection after the handshake: frames in, frames out, keepalive, close.

The same class carries session traffic and the echo server (``python -m relay echo``), so a
conformance suite run against the echo server tests the session path.  What to do with a message
is the handler's business (:class:`MessageHandler`); this class owns the socket, the frame decoder,
the writer that drains the handler's :class:`~relay._outbox.Outbox` with scatter-gather sends, the
ping/idle timers and the closing handshake.
"""

from __future__ import annotations

import collections
import logging
import math
import socket
from typing import Optional, Protocol

import trio

from relay._accel import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    close_payload,
    encode_frame,
    frame_header,
    parse_close_payload,
)
from relay._closecodes import CloseCode
from relay._closing import ClosingHandshake, ConnectionState
from relay._errors import RemoteProtocolError
from relay._logging import log_event
from relay._netio import Broken, Yielder, _advance, close_socket, recv_into, send_buffers
from relay._outbox import WRITER_BATCH_FRAMES, Outbox, RawFrame

__all__ = ["MessageHandler", "WebSocketConnection", "EchoHandler", "CLOSE_HANDSHAKE_TIMEOUT_S"]

log = logging.getLogger("relay.ws")

_OPEN = ConnectionState.OPEN
# A message queued to an idle writer is sent at once by the task that queued it, unless the previous
# one was sent so less than this ago: then the writer is woken and sends what gathered in one batch.
EAGER_WRITE_GAP_S = 0.001


CLOSE_HANDSHAKE_TIMEOUT_S = 3.0  # after our close frame, how long we wait for the peer's
RECV_BUFFER_BYTES = 256 * 1024
MESSAGES_PER_TURN = 256  # messages handed on between two checkpoints: about a millisecond of routing
MAX_PENDING_CONTROL_FRAMES = 16  # pongs beyond this are dropped: only the latest ping needs one

# One receive buffer for the whole process: a reader consumes what it read (FrameDecoder.feed
# copies what it must keep) before its next await, and trio runs one task at a time.
_shared_receive_buffer = bytearray(RECV_BUFFER_BYTES)
_shared_receive_view = memoryview(_shared_receive_buffer)


class MessageHandler(Protocol):
    def on_message(self, opcode: int, payload: bytes) -> None:
        """A whole data message (OP_TEXT or OP_BINARY).  Must not block; may push to the outbox."""

    def on_close(self) -> None:
        """The connection is gone; called exactly once."""


class WebSocketConnection:
    """Runs one connection until it closes.

    The closing handshake is decided by ``closing`` (:class:`~relay._closing.ClosingHandshake`);
    this class only does what it allows, and reports what happened on the socket.
    """

    def __init__(self, sock: socket.socket, outbox: Outbox, handler: MessageHandler, *,
                 max_message_bytes: int, ping_interval_s: float, idle_timeout_s: float,
                 leftover: bytes = b"", connection_id: str = "") -> None:
        self.sock = sock
        self.outbox = outbox
        self.handler = handler
        self.decoder = FrameDecoder(max_message_bytes)
        self.ping_interval_s = ping_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.connection_id = connection_id
        self.leftover = leftover
        self.control: collections.deque = collections.deque()
        self.closing = ClosingHandshake()
        self.last_receive = trio.current_time()
        self.bytes_in = 0
        self.messages_in = 0
        self._wake = trio.Event()
        self._writer_waiting = False
        self._last_eager = -math.inf
        # What the kernel did not take of an eagerly sent message (its remaining views): the writer
        # sends it before anything else.  Not in the outbox, which a close or a resync may clear: the
        # rest of a frame begun on the wire must follow it, or the stream is broken (and a TLSStream
        # must be handed the same bytes again, as SSL_write requires).
        self._unsent: Optional[list] = None
        # Made here, not in run(): a close may be decided before run() starts (the session ended
        # while the 101 was on its way) or after its tasks are gone, and either must be harmless.
        self._cancel_scope = trio.CancelScope()
        outbox.wakeup = self._notify
        outbox.on_close = self._arm_close_deadline

    @property
    def close_code(self) -> Optional[int]:
        """The code we sent (or will send); None if no close was decided."""
        return self.closing.code

    @property
    def close_reason(self) -> str:
        return self.closing.reason

    @property
    def peer_close_code(self) -> Optional[int]:
        return self.closing.peer_code

    def _notify(self) -> None:
        # Called for every message queued to this connection: only a waiting writer needs the
        # (comparatively costly) Event.set.
        if self._writer_waiting:
            if self.closing.state is _OPEN and not self.control and self.outbox.close_code is None:
                now = trio.current_time()
                if now - self._last_eager >= EAGER_WRITE_GAP_S:
                    self._last_eager = now
                    if self._write_now():
                        return  # the kernel took it all: the writer sleeps on
            self._writer_waiting = False
            self._wake.set()

    def _write_now(self) -> bool:
        """Send the message just queued from the pushing task, with one non-blocking sendmsg, while
        the writer is idle: a message that comes alone (the common case below a few hundred
        messages a second per client) then costs no task switch.  Messages that come faster than
        EAGER_WRITE_GAP_S go to the writer, which sends them in batches.  Only in the OPEN state (no
        close frame is pending, so the closing handshake has nothing to count).  What the kernel
        does not take is left in ``_unsent``, for the writer to send first; True if nothing is left.
        ``sock`` may be a TLSStream: the same call encrypts (relay/_tls.py)."""
        outbox = self.outbox
        if len(outbox.queue) != 1:
            return False
        message = outbox.take_batch()[0]
        buffers = [message.head]
        if message.body:
            buffers.append(message.body)
        if message.tail:
            buffers.append(message.tail)
        try:
            sent = self.sock.sendmsg(buffers)
        except OSError:  # would block, or the connection is gone: the writer's own send tells
            sent = 0
        left = _advance(buffers, sent)
        if not left:
            return True
        self._unsent = left
        return False

    def _arm_close_deadline(self) -> None:
        """Once a close is decided, the connection ends within CLOSE_HANDSHAKE_TIMEOUT_S even if
        the peer stopped reading (a writer blocked on a full socket would otherwise wait forever).

        The deadline is the cancel scope's, not a task: this is called from outside the connection
        (a newer connection of the same client closing this one, the session ending) at any moment,
        including while the connection's own tasks are ending.  Starting a task then raised
        "Nursery is closed to new arrivals" into the caller, i.e. into the attach of the newer
        connection.  A deadline is a number: setting it never fails, and after run() it does nothing.
        (When it fires, run()'s finally reports connection_lost: CLOSED, as deadline_expired would.)
        """
        scope = self._cancel_scope
        scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_HANDSHAKE_TIMEOUT_S)

    async def run(self) -> None:
        try:
            if self.outbox.close_code is not None:  # closed before this connection hooked on_close
                self._arm_close_deadline()
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._keepalive)
        finally:
            self.closing.connection_lost()  # if it did not end by the handshake or the deadline
            self.outbox.wakeup = _nothing
            self.outbox.on_close = _nothing
            close_socket(self.sock)
            self.handler.on_close()

    def _finish(self) -> None:
        self._cancel_scope.cancel()

    # ------------------------------------------------------------------ closing

    def request_close(self, code: int, reason: str, *, discard_queued: bool) -> None:
        """Send a close frame (after the queue, unless discarded) and end the connection."""
        if discard_queued:
            self.outbox.clear()
        self.closing.request_close(code, reason, queued=len(self.outbox.queue))
        self._arm_close_deadline()
        self._notify()

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        decoder = self.decoder
        closing = self.closing
        sock = self.sock
        yielder = Yielder()
        try:
            if self.leftover:
                decoder.feed(self.leftover)
                self.leftover = b""
                while self._drain_events():
                    await trio.lowlevel.checkpoint()
            while True:
                # The rest of a large payload goes straight into the message being assembled;
                # anything else through the shared buffer (no per-connection buffer: idle
                # connections stay small).
                payload_view = decoder.payload_buffer() if closing.expects_frames else None
                if payload_view is not None:
                    n = await recv_into(sock, payload_view, yielder)
                    payload_view = None
                    if n == 0:
                        break
                    self.last_receive = trio.current_time()
                    decoder.payload_received(n)
                else:
                    n = await recv_into(sock, _shared_receive_view, yielder)
                    if n == 0:
                        break  # the peer closed TCP without (or after) a close frame
                    self.last_receive = trio.current_time()
                    if closing.expects_frames:
                        decoder.feed(_shared_receive_view[:n])
                self.bytes_in += n
                if closing.expects_frames:
                    # One read can hold thousands of tiny messages: route them a turn at a time.
                    while self._drain_events():
                        await trio.lowlevel.checkpoint()
                        yielder.waited()
                await yielder.account(n)
        except RemoteProtocolError as exc:
            log_event(log, logging.INFO, "ws.protocol_error", conn=self.connection_id, code=exc.close_code,
                      reason=exc.message)
            self.decoder = None
            # What the peer sent before the bad frame was valid: its consequences (already in
            # the outbox) still go out ahead of our close frame.  The discard below bounds how
            # long that may take (CLOSE_HANDSHAKE_TIMEOUT_S), so a peer that stops reading
            # cannot hold the connection open.
            closing.fail(exc.close_code, exc.message, queued=len(self.outbox.queue))
            self._arm_close_deadline()
            self._notify()
            if await self._discard_until_eof(yielder):
                closing.connection_lost()
            else:
                closing.deadline_expired()
            self._finish()
            return
        except Broken:
            pass
        closing.connection_lost()
        self._finish()

    def _drain_events(self) -> bool:
        """Hand the decoded events on, at most MESSAGES_PER_TURN of them; True when some are left."""
        decoder = self.decoder
        if decoder is None:
            return False
        handler = self.handler
        closing = self.closing
        for _ in range(MESSAGES_PER_TURN):
            event = decoder.next_event()
            if event is None:
                return False
            opcode, payload = event
            if opcode == OP_BINARY or opcode == OP_TEXT:
                self.messages_in += 1
                if closing.state is _OPEN:  # (closing.accepts_messages, without a call per message)
                    handler.on_message(opcode, payload)
            elif opcode == OP_PING:
                if len(self.control) < MAX_PENDING_CONTROL_FRAMES and closing.may_send_control:
                    self.control.append(encode_frame(OP_PONG, payload))
                    self._notify()
            elif opcode == OP_CLOSE:
                self._on_peer_close(payload)
                return False
            # OP_PONG: its arrival already refreshed last_receive.
        return True

    def _on_peer_close(self, payload: bytes) -> None:
        code, _reason = parse_close_payload(payload)
        if self.closing.peer_closed(code) is ConnectionState.CLOSED:
            self._finish()  # both close frames are out: the handshake is complete
            return
        # Our echo (RFC 6455 5.5.1) is due, and nothing else goes out.
        self.outbox.clear()
        self._arm_close_deadline()
        self._notify()

    async def _discard_until_eof(self, yielder: Yielder) -> bool:
        """Read and drop until EOF (True) or CLOSE_HANDSHAKE_TIMEOUT_S (False)."""
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S):
            while True:
                try:
                    n = await recv_into(self.sock, _shared_receive_view, yielder)
                except Broken:
                    return True
                if n == 0:
                    return True
                await yielder.account(n)
        return False

    # ------------------------------------------------------------------ writing

    async def _writer(self) -> None:
        outbox = self.outbox
        control = self.control
        closing = self.closing
        sock = self.sock
        yielder = Yielder()
        try:
            while closing.state is not ConnectionState.CLOSED:
                buffers = []
                if self._unsent is not None:
                    buffers.extend(self._unsent)
                    self._unsent = None
                if control:
                    closing.control_sent()
                    buffers.extend(control)
                    control.clear()
                if outbox.queue:
                    allowance = closing.data_allowance()
                    if allowance is None:
                        batch = outbox.take_batch()
                    else:
                        batch = outbox.take_batch(max_frames=min(allowance, WRITER_BATCH_FRAMES)) if allowance else []
                    closing.data_sent(len(batch))
                    if allowance is not None and not closing.data_allowance():
                        outbox.clear()  # pushed after the close was decided: never sent
                    for message in batch:
                        buffers.append(message.head)
                        # An empty iovec is never consumed by sendmsg: send_buffers would spin on it.
                        if message.body:
                            buffers.append(message.body)
                        if message.tail:
                            buffers.append(message.tail)
                elif outbox.closing and closing.state is _OPEN:
                    # The session asked to close after what it queued: that is all sent now.
                    closing.request_close(outbox.close_code, outbox.close_reason, queued=0)
                send_close = closing.close_frame_due(len(outbox.queue))
                if send_close:
                    code, reason = closing.close_frame()
                    buffers.append(encode_frame(OP_CLOSE, close_payload(code, reason)))
                if buffers:
                    await send_buffers(sock, buffers, yielder)
                if send_close:
                    if closing.close_written() is ConnectionState.CLOSE_SENT:
                        if closing.failed:
                            # We failed the connection: the peer's answer cannot be parsed, so
                            # waiting for it is pointless.  The server closes TCP first (RFC 6455
                            # 7.1.1); a half-close rather than close() lets the reader drain what
                            # is in flight, so no RST overtakes our close frame at the peer.
                            _shutdown_write(sock)
                        await trio.sleep(CLOSE_HANDSHAKE_TIMEOUT_S)
                        closing.deadline_expired()
                    self._finish()
                    return
                if not buffers and not control and not outbox.queue and self._unsent is None:
                    self._wake = trio.Event()
                    self._writer_waiting = True
                    await self._wake.wait()
        except Broken:
            closing.connection_lost()
            self._finish()

    # ------------------------------------------------------------------ keepalive

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self.ping_interval_s)
            idle = trio.current_time() - self.last_receive
            if idle >= self.idle_timeout_s:
                log_event(log, logging.INFO, "ws.idle_timeout", conn=self.connection_id, idle_s=round(idle, 1))
                self.request_close(CloseCode.GOING_AWAY, "idle timeout", discard_queued=True)
                return
            if self.closing.may_send_control and len(self.control) < MAX_PENDING_CONTROL_FRAMES:
                self.control.append(encode_frame(OP_PING, b"relay"))
                self._notify()


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _nothing() -> None:
    return None


class EchoHandler:
    """Sends every message back as it came (text as text, binary as binary): for conformance suites."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def on_message(self, opcode: int, payload: bytes) -> None:
        self.outbox.push(RawFrame(frame_header(opcode, len(payload)), payload))

    def on_close(self) -> None:
        return None
