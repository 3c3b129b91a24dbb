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
from relay._errors import RemoteProtocolError
from relay._logging import log_event
from relay._netio import Broken, Yielder, close_socket, recv_into, send_buffers
from relay._outbox import WRITER_BATCH_FRAMES, Outbox, RawFrame

__all__ = ["MessageHandler", "WebSocketConnection", "EchoHandler", "CLOSE_HANDSHAKE_TIMEOUT_S"]

log = logging.getLogger("relay.ws")

CLOSE_HANDSHAKE_TIMEOUT_S = 3.0  # after our close frame, how long we wait for the peer's
RECV_BUFFER_BYTES = 256 * 1024
MAX_PENDING_CONTROL_FRAMES = 16  # pongs beyond this are dropped: only the latest ping needs one

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005

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
    """Runs one connection until it closes.  ``stats`` counts frames and bytes for metrics."""

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
        self.close_sent = False
        self.close_received = False
        self.close_code: Optional[int] = None  # the code we sent (or will send)
        self.close_reason = ""
        # Once a close is requested: how many of the queued messages still go out before the close
        # frame (None: no close requested).  Counted, so that a busy session that keeps pushing
        # cannot postpone the close frame, and nothing pushed after the decision is sent.
        self._messages_before_close: Optional[int] = None
        self.peer_close_code: Optional[int] = None
        self.last_receive = trio.current_time()
        self.bytes_in = 0
        self.messages_in = 0
        self._wake = trio.Event()
        self._writer_waiting = False
        self._deadline_armed = False
        self._nursery: Optional[trio.Nursery] = None
        self._cancel_scope: Optional[trio.CancelScope] = None
        outbox.wakeup = self._notify
        outbox.on_close = self._arm_close_deadline

    def _notify(self) -> None:
        # Called for every message queued to this connection: only a waiting writer needs the
        # (comparatively costly) Event.set.
        if self._writer_waiting:
            self._writer_waiting = False
            self._wake.set()

    def _arm_close_deadline(self) -> None:
        """Once a close is decided, the connection ends within CLOSE_HANDSHAKE_TIMEOUT_S even if
        the peer stopped reading (a writer blocked on a full socket would otherwise wait forever)."""
        if not self._deadline_armed and self._nursery is not None:
            self._deadline_armed = True
            self._nursery.start_soon(self._close_deadline)

    async def _close_deadline(self) -> None:
        await trio.sleep(CLOSE_HANDSHAKE_TIMEOUT_S)
        self._finish()

    async def run(self) -> None:
        try:
            with trio.CancelScope() as scope:
                self._cancel_scope = scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self.outbox.close_code is not None:
                        self._arm_close_deadline()
                    nursery.start_soon(self._reader)
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._keepalive)
        finally:
            self.outbox.wakeup = _nothing
            self.outbox.on_close = _nothing
            close_socket(self.sock)
            self.handler.on_close()

    def _finish(self) -> None:
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    # ------------------------------------------------------------------ closing

    def request_close(self, code: int, reason: str, *, discard_queued: bool) -> None:
        """Send a close frame (after the queue, unless discarded) and end the connection."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if discard_queued:
            self.outbox.clear()
            self._messages_before_close = 0
        elif self._messages_before_close is None:
            self._messages_before_close = len(self.outbox.queue)
        self._arm_close_deadline()
        self._notify()

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        decoder = self.decoder
        sock = self.sock
        yielder = Yielder()
        try:
            if self.leftover:
                decoder.feed(self.leftover)
                self.leftover = b""
                self._drain_events()
            while True:
                # The rest of a large payload goes straight into the message being assembled;
                # anything else through the shared buffer (no per-connection buffer: idle
                # connections stay small).
                payload_view = None if self.close_received else decoder.payload_buffer()
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
                    if not self.close_received:
                        decoder.feed(_shared_receive_view[:n])
                self.bytes_in += n
                if not self.close_received:
                    self._drain_events()
                await yielder.account(n)
        except RemoteProtocolError as exc:
            log_event(log, logging.INFO, "ws.protocol_error", conn=self.connection_id, code=exc.close_code,
                      reason=exc.message)
            self.decoder = None
            # What the peer sent before the bad frame was valid: its consequences (already in
            # the outbox) still go out ahead of our close frame.  The discard below bounds how
            # long that may take (CLOSE_HANDSHAKE_TIMEOUT_S), so a peer that stops reading
            # cannot hold the connection open.
            self.request_close(exc.close_code, exc.message, discard_queued=False)
            await self._discard_until_eof(yielder)
        except Broken:
            pass
        self._finish()

    def _drain_events(self) -> None:
        decoder = self.decoder
        handler = self.handler
        while True:
            event = decoder.next_event()
            if event is None:
                return
            opcode, payload = event
            if opcode == OP_BINARY or opcode == OP_TEXT:
                self.messages_in += 1
                if self.close_code is None:
                    handler.on_message(opcode, payload)
            elif opcode == OP_PING:
                if len(self.control) < MAX_PENDING_CONTROL_FRAMES and not self.close_sent:
                    self.control.append(encode_frame(OP_PONG, payload))
                    self._notify()
            elif opcode == OP_CLOSE:
                self._on_peer_close(payload)
                return
            # OP_PONG: its arrival already refreshed last_receive.

    def _on_peer_close(self, payload: bytes) -> None:
        self.close_received = True
        code, reason = parse_close_payload(payload)
        self.peer_close_code = code
        if self.close_sent:
            self._finish()  # both close frames are out: the handshake is complete
            return
        # Echo the peer's code (RFC 6455 5.5.1) and send nothing more.
        self.request_close(code if code is not None else CLOSE_NO_STATUS, "", discard_queued=True)

    async def _discard_until_eof(self, yielder: Yielder) -> None:
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S):
            while True:
                n = await recv_into(self.sock, _shared_receive_view, yielder)
                if n == 0:
                    return
                await yielder.account(n)

    # ------------------------------------------------------------------ writing

    async def _writer(self) -> None:
        outbox = self.outbox
        control = self.control
        sock = self.sock
        yielder = Yielder()
        try:
            while True:
                buffers = []
                if control:
                    buffers.extend(control)
                    control.clear()
                if outbox.queue:
                    remaining = self._messages_before_close
                    if remaining is None:
                        batch = outbox.take_batch()
                    else:
                        batch = outbox.take_batch(max_frames=min(remaining, WRITER_BATCH_FRAMES)) if remaining else []
                        remaining -= len(batch)
                        self._messages_before_close = remaining
                        if not remaining:
                            outbox.clear()  # pushed after the close was decided: never sent
                    for message in batch:
                        buffers.append(message.head)
                        # An empty iovec is never consumed by sendmsg: send_buffers would spin on it.
                        if message.body:
                            buffers.append(message.body)
                        if message.tail:
                            buffers.append(message.tail)
                elif outbox.closing and self.close_code is None:
                    # The session asked to close after what it queued: that is all sent now.
                    self.close_code = outbox.close_code
                    self.close_reason = outbox.close_reason
                send_close = self.close_code is not None and not outbox.queue and not self.close_sent
                if send_close:
                    code = None if self.close_code == CLOSE_NO_STATUS else self.close_code
                    reason = _clip_reason(self.close_reason) if code is not None else ""
                    buffers.append(encode_frame(OP_CLOSE, close_payload(code, reason)))
                if buffers:
                    await send_buffers(sock, buffers, yielder)
                if send_close:
                    self.close_sent = True
                    if not self.close_received:
                        if self.decoder is None:
                            # We failed the connection: the peer's answer cannot be parsed, so
                            # waiting for it is pointless.  The server closes TCP first (RFC 6455
                            # 7.1.1); a half-close rather than close() lets the reader drain what
                            # is in flight, so no RST overtakes our close frame at the peer.
                            _shutdown_write(sock)
                        await trio.sleep(CLOSE_HANDSHAKE_TIMEOUT_S)
                    self._finish()
                    return
                if not buffers and not control and not outbox.queue:
                    self._wake = trio.Event()
                    self._writer_waiting = True
                    await self._wake.wait()
        except Broken:
            self._finish()

    # ------------------------------------------------------------------ keepalive

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self.ping_interval_s)
            idle = trio.current_time() - self.last_receive
            if idle >= self.idle_timeout_s:
                log_event(log, logging.INFO, "ws.idle_timeout", conn=self.connection_id, idle_s=round(idle, 1))
                self.request_close(CLOSE_GOING_AWAY, "idle timeout", discard_queued=True)
                return
            if not self.close_sent and len(self.control) < MAX_PENDING_CONTROL_FRAMES:
                self.control.append(encode_frame(OP_PING, b"relay"))
                self._notify()


def _clip_reason(reason: str) -> str:
    """A close reason fits in 123 UTF-8 bytes; cut on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:123].decode("utf-8", "ignore")


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
