"""The WebSocket route (SPEC 3): an upgrade request becomes a session peer on a WebSocketConnection.

The handler checks everything before the 101 (upgrade headers, session, token, resume parameters),
then returns an :class:`relay._routes.Upgrade` whose ``run`` attaches the peer and runs the
connection until it closes (contract at the top of relay/_routes.py).
"""

from __future__ import annotations

import logging

import trio

from relay._api import ApiContext, allow_connection, authenticate, resume_params, session_or_404
from relay._endpoint import SessionSocketHandler
from relay._errors import HTTPError
from relay._handshake import accept_headers, is_upgrade_request
from relay._logging import limit_log, log_event
from relay._routes import Request, Upgrade
from relay._closecodes import CloseCode
from relay._session import Peer, Role, SessionEnded
from relay._websocket import WebSocketConnection

__all__ = ["WebSocketAttach"]

log = logging.getLogger("relay.server")
# Close codes that mean a limit was hit, and the limit's name for the log line (SPEC 6).
LIMIT_CLOSES = {
    CloseCode.POLICY_VIOLATION: "refused envelopes (REFUSAL_BURST)",
    CloseCode.MESSAGE_TOO_BIG: "max_message_bytes",
    CloseCode.TRY_AGAIN_LATER: "slave_queue_bytes",
    CloseCode.JOIN_REFUSED: "admission",
}

class WebSocketAttach:
    """The handler ``websocket`` of one node."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context

    def handlers(self) -> dict:
        return {"websocket": self.websocket}

    async def websocket(self, request: Request) -> Upgrade:
        if not is_upgrade_request(request.head):
            raise HTTPError(426, "upgrade-required", "this endpoint speaks WebSocket",
                            [("upgrade", "websocket"), ("connection", "Upgrade")])
        session = session_or_404(self.context.host, request.params["session"])
        role, record = authenticate(session, request.query.get("token"))
        after, epoch, master_count = resume_params(request.query)
        headers = accept_headers(request.head)
        allow_connection(session, role, record, trio.current_time())  # a reconnect storm gets 429
        context = self.context
        config = context.config
        connection_id = request.connection_id

        async def run(sock, leftover: bytes) -> None:
            peer = Peer(role, transport="ws", limit=config.slave_queue_bytes, connection_id=connection_id)
            handler = SessionSocketHandler(session, peer, context.metrics)
            connection = WebSocketConnection(
                sock, peer, handler, max_message_bytes=config.max_message_bytes,
                ping_interval_s=config.ping_interval_s, idle_timeout_s=config.idle_timeout_s,
                leftover=leftover, connection_id=connection_id,
            )
            handler.connection = connection
            now = trio.current_time()
            try:
                if role is Role.MASTER:
                    session.attach_master(peer, now)
                else:
                    session.attach_slave(record, peer, now, after=after, epoch=epoch, master_count=master_count)
            except SessionEnded:  # it ended while the 101 was on its way
                peer.close(CloseCode.SESSION_ENDED, "session ended")
            log_event(log, logging.INFO, "ws.open", conn=connection_id, session=session.id, role=role.value,
                      slave=record.slave_id if record is not None else None)
            try:
                await connection.run()
            finally:
                # The session may have decided the close (1013, 1008, 4403...) and the connection ended
                # (deadline, reset) before its close frame went out: the decision is the code.
                code = connection.close_code if connection.close_code is not None else peer.close_code
                reason = connection.close_reason or peer.close_reason or None
                if code is not None:
                    context.metrics.closes.labels(str(int(code))).inc()
                    if code in LIMIT_CLOSES:
                        limit_log.hit(LIMIT_CLOSES[code], close_code=int(code), session=session.id, conn=connection_id)
                log_event(log, logging.INFO, "ws.closed", conn=connection_id, session=session.id, role=role.value,
                          code=code, peer_code=connection.peer_close_code, reason=reason)

        return Upgrade(headers, run)
