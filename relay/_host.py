"""The sessions this node hosts: creation, lookup, ending, timers, and hooks.

A session lives in exactly one host.  The host mints session IDs (128 bits from ``secrets``,
URL-safe) through ``owns``, so that a node in a cluster mints only IDs its ring position owns; a
single node owns everything.
"""

from __future__ import annotations

import collections
import inspect
import logging
import secrets
from typing import Callable, Optional

import trio

from relay._config import Config
from relay._logging import log_event
from relay._closecodes import CloseCode
from relay._session import Session

__all__ = ["SessionHost", "LimitReached", "SESSION_ID_BYTES"]

log = logging.getLogger("relay.host")

SESSION_ID_BYTES = 16  # 128 bits (OWASP ASVS 7.2.3)
SWEEP_INTERVAL_S = 1.0
MAX_MINT_ATTEMPTS = 10_000  # with N nodes a random ID is ours with probability ~1/N


class LimitReached(Exception):
    """A configured limit (sessions per node, slaves per session) refuses the request."""


class SessionHost:
    def __init__(self, config: Config, *, owns: Callable[[str], bool] = lambda session_id: True,
                 observer: Optional[Callable] = None) -> None:
        self.config = config
        self.owns = owns
        self.sessions: dict = {}
        self.observer = observer  # (session, kind, seq, size): the on_message hook, for every session
        # (session, announce) when a session ends here: the cluster forgets it in Redis if announce
        self.on_end: Optional[Callable] = None
        self._nursery: Optional[trio.Nursery] = None
        self.ended_count = 0
        self.ended_stats = collections.Counter()  # Session.stats of ended sessions, for metrics
        self.ended_published = collections.Counter()  # their Session.published

    def mint_id(self) -> str:
        for _ in range(MAX_MINT_ATTEMPTS):
            session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
            if session_id not in self.sessions and self.owns(session_id):
                return session_id
        raise LimitReached("could not mint a session ID that this node owns")

    def create(self, *, chat: bool = False) -> Session:
        if len(self.sessions) >= self.config.max_sessions:
            raise LimitReached(f"this node hosts its maximum of {self.config.max_sessions} sessions")
        session = Session(self.mint_id(), self.config, chat=chat, now=trio.current_time(),
                          observer=self.observer)
        self.add(session)
        log_event(log, logging.INFO, "session.created", session=session.id, chat=chat)
        self.call_hook(self.config.on_session_created, session.id, chat)
        return session

    def add(self, session: Session) -> None:
        """Host a session made elsewhere (a takeover restores one from the cluster's state store)."""
        self.sessions[session.id] = session

    def get(self, session_id: str) -> Optional[Session]:
        session = self.sessions.get(session_id)
        if session is not None and session.ended:
            return None
        return session

    def end(self, session: Session, reason: str, *, code: int = CloseCode.SESSION_ENDED, announce: bool = True) -> None:
        if self.sessions.get(session.id) is not session:
            return
        del self.sessions[session.id]
        session.end(reason, code=code, announce=announce)
        self.ended_count += 1
        self.ended_stats.update(session.stats)
        self.ended_stats["messages_out"] += session.messages_out
        self.ended_published.update(session.published)
        self.ended_stats["bytes_out"] += session.bytes_out
        if self.on_end is not None:
            self.on_end(session, announce)
        log_event(log, logging.INFO, "session.ended", session=session.id, reason=reason, seq=session.seq,
                  messages_out=session.messages_out)
        self.call_hook(self.config.on_session_ended, session.id, reason)

    def end_all(self, reason: str, code: int, *, announce: bool = True) -> None:
        for session in list(self.sessions.values()):
            self.end(session, reason, code=code, announce=announce)

    def call_hook(self, hook, *args) -> None:
        """Run a plain or async hook without letting it break the relay."""
        if hook is None:
            return
        try:
            result = hook(*args)
        except Exception:
            log.exception("hook.failed", extra={"relay_fields": {"hook": getattr(hook, "__name__", repr(hook))}})
            return
        if inspect.isawaitable(result) and self._nursery is not None:
            self._nursery.start_soon(_await_hook, result)

    async def run_timers(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """End sessions whose master stayed away past the grace period, or that went idle."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(SWEEP_INTERVAL_S)
                self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        config = self.config
        for session in list(self.sessions.values()):
            if session.master_left_at is not None and now - session.master_left_at > config.master_grace_s:
                self.end(session, "master gone")
            elif now - session.last_activity > config.session_idle_timeout_s:
                self.end(session, "idle")
            else:
                for peer in list(session.poll_peers()):
                    if now - peer.last_seen > config.poll_peer_timeout_s:
                        session.detach(peer, now)
                for record in session.refuse_unadmitted(now, config.admit_timeout_s):
                    log_event(log, logging.INFO, "slave.not_admitted", session=session.id, slave=record.slave_id)
                session.release_idle_slaves(now, config.slave_grace_s)
                if session.copy is None:
                    session.ack_held()  # no failover copy: what this node took is all there is to keep


async def _await_hook(awaitable) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("hook.failed", extra={"relay_fields": {"hook": "async"}})
