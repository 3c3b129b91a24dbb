"""The cluster's shared facts in Redis (SPEC 5): node leases, session ownership with epochs, and the
participants a new host needs to take a session over.

Redis is reached with coredis (built on anyio, so it runs on trio's loop without blocking it; see
docs/cluster.md for why that client).  Every call here is bounded by ``REDIS_CALL_TIMEOUT_S`` and
raises :class:`StoreUnavailable` when Redis cannot answer in time: callers decide what an outage
means (503 for a create, keep running for a session that flows).

Keys, for a cluster named C (a session's keys share the hash tag ``{SESSION_ID}``, so a Redis
Cluster keeps them in one slot):

* ``relay:C:node:NAME``: the lease of node NAME, a JSON object, with a TTL (``PX``).
* ``relay:C:session:{ID}``: a hash ``host``, ``epoch``, ``record`` (JSON: chat, token digests,
  slaves), with a TTL that the host refreshes while the session lives.

Every write about a session is a Lua script that checks the epoch inside Redis (a fencing token,
Kleppmann 2016): a node whose epoch is stale can never write that session again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Optional

import coredis
import coredis.exceptions
import coredis.retry
import trio

__all__ = ["StateStore", "StoreUnavailable", "SessionFacts", "Claim", "WRITE_OK", "WRITE_RECREATED", "WRITE_LOST"]

log = logging.getLogger("relay.statestore")

REDIS_CALL_TIMEOUT_S = 1.0  # one round trip (or one pipeline); past it Redis counts as unavailable
REDIS_CONNECT_TIMEOUT_S = 0.5
# Connections one node opens to Redis at most (coredis multiplexes calls over them): a flood of
# requests must queue here (and time out as StoreUnavailable), never open thousands of connections
# and take Redis's maxclients from the other nodes.
REDIS_MAX_CONNECTIONS = 8

# Results of a fenced write (FENCED_WRITE below).
WRITE_LOST = 0  # another node holds a newer epoch: this node must stop serving the session
WRITE_OK = 1
WRITE_RECREATED = 2  # the record was gone (Redis restarted empty): written again with our epoch

# KEYS[1] lease; ARGV value, ttl_ms, instance.  1 renewed, 2 taken again after it had lapsed, 0 held
# by another instance (another process with our name).
RENEW_LEASE = """
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
local ok, lease = pcall(cjson.decode, current)
if ok and lease['instance'] == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] session; ARGV host, record, ttl_ms.  1 created with epoch 1; 0 the ID exists already.
CREATE_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'host', ARGV[1], 'epoch', 1, 'record', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] session; ARGV expected epoch, new host.  {1, new epoch} taken; {0, host, epoch} someone
# else moved it first (or it is gone: {0, '', 0}).
TAKE_OVER = """
local fields = redis.call('HMGET', KEYS[1], 'host', 'epoch')
if fields[2] == false then return {0, '', 0} end
if tonumber(fields[2]) ~= tonumber(ARGV[1]) then return {0, fields[1], tonumber(fields[2])} end
local epoch = tonumber(fields[2]) + 1
redis.call('HSET', KEYS[1], 'host', ARGV[2], 'epoch', epoch)
return {1, epoch}
"""

# KEYS[1] session; ARGV host, epoch, record ('' keeps it), ttl_ms.  WRITE_OK, WRITE_RECREATED or WRITE_LOST.
FENCED_WRITE = """
local fields = redis.call('HMGET', KEYS[1], 'host', 'epoch')
if fields[2] == false then
  if ARGV[3] == '' then return 0 end
  redis.call('HSET', KEYS[1], 'host', ARGV[1], 'epoch', ARGV[2], 'record', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 2
end
if fields[1] ~= ARGV[1] or tonumber(fields[2]) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'record', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] session; ARGV host, epoch.  1 deleted; 0 not ours (any more).
END_SESSION = """
local fields = redis.call('HMGET', KEYS[1], 'host', 'epoch')
if fields[1] == ARGV[1] and tonumber(fields[2]) == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class StoreUnavailable(Exception):
    """Redis did not answer in time (down, unreachable, or failing over)."""


@dataclass(frozen=True)
class SessionFacts:
    """What Redis says of one session: its host, epoch and participants (``record``, a dict)."""

    host: str
    epoch: int
    record: dict


@dataclass(frozen=True)
class Claim:
    """The answer to a takeover: ``taken`` with the new ``epoch``, or the ``host``/``epoch`` that won."""

    taken: bool
    epoch: int
    host: str = ""


class StateStore:
    """One node's view of Redis.  Use as ``async with StateStore(...) as store:``.

    ``metrics`` (optional) has ``redis_calls`` and ``redis_errors`` counters (prometheus Counters,
    labelled by operation).
    """

    def __init__(self, cluster_name: str, *, host: str = "127.0.0.1", port: int = 6379, db: int = 0,
                 sentinels: tuple = (), service: Optional[str] = None, metrics=None) -> None:
        self.cluster_name = cluster_name
        self._prefix = f"relay:{cluster_name}:"
        self._metrics = metrics
        options = dict(connect_timeout=REDIS_CONNECT_TIMEOUT_S, stream_timeout=REDIS_CALL_TIMEOUT_S,
                       retry_policy=coredis.retry.NoRetryPolicy(), max_connections=REDIS_MAX_CONNECTIONS,
                       pool_timeout=REDIS_CALL_TIMEOUT_S)
        if sentinels:
            timeouts = dict(connect_timeout=REDIS_CONNECT_TIMEOUT_S, stream_timeout=REDIS_CALL_TIMEOUT_S)
            self._sentinel = coredis.Sentinel(list(sentinels), sentinel_kwargs=timeouts, **timeouts)
            self._client = self._sentinel.primary_for(service, db=db, max_connections=REDIS_MAX_CONNECTIONS)
        else:
            self._sentinel = None
            self._client = coredis.Redis(host, port, db, **options)
        self._scripts = {}
        self._stack: Optional[contextlib.AsyncExitStack] = None

    async def __aenter__(self) -> "StateStore":
        self._stack = contextlib.AsyncExitStack()
        await self._stack.__aenter__()
        try:
            if self._sentinel is not None:  # the sentinels' own connections, asked for the primary
                for sentinel in self._sentinel.sentinels:
                    await self._stack.enter_async_context(sentinel)
            await self._stack.enter_async_context(self._client)
        except BaseException:
            await self._stack.aclose()
            raise
        for name, source in (("renew_lease", RENEW_LEASE), ("create", CREATE_SESSION), ("take_over", TAKE_OVER),
                             ("fenced_write", FENCED_WRITE), ("end", END_SESSION)):
            self._scripts[name] = self._client.register_script(source)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.__aexit__(*exc_info)

    # ------------------------------------------------------------------ keys

    def lease_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    def session_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{{{session_id}}}"

    # ------------------------------------------------------------------ calls

    async def _call(self, operation: str, awaitable_factory):
        if self._metrics is not None:
            self._metrics.redis_calls.labels(operation).inc()
        try:
            with trio.fail_after(REDIS_CALL_TIMEOUT_S):
                return await awaitable_factory()
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as exc:
            if self._metrics is not None:
                self._metrics.redis_errors.labels(operation).inc()
            raise StoreUnavailable(f"redis {operation}: {type(exc).__name__}: {exc}") from None

    async def ping(self) -> None:
        await self._call("ping", self._client.ping)

    async def renew_lease(self, node: str, lease: dict, ttl_s: float) -> int:
        """1 renewed, 2 taken again after it lapsed, 0 held by another process with this name."""
        value = json.dumps(lease, separators=(",", ":"))
        return int(await self._call("renew_lease", lambda: self._scripts["renew_lease"](
            keys=[self.lease_key(node)], args=[value, int(ttl_s * 1000), lease["instance"]])))

    async def drop_lease(self, node: str, instance: str) -> None:
        """Give the lease up at shutdown (only our own instance's), so that takeovers need not wait."""
        key = self.lease_key(node)

        async def drop():
            current = await self._client.get(key)
            if current is not None and json.loads(current).get("instance") == instance:
                await self._client.delete([key])
        await self._call("drop_lease", drop)

    async def leases(self, nodes: list) -> dict:
        """{node: lease dict} of the nodes that hold a lease now."""
        values = await self._call("leases", lambda: self._client.mget([self.lease_key(n) for n in nodes]))
        found = {}
        for node, value in zip(nodes, values):
            if value is not None:
                try:
                    found[node] = json.loads(value)
                except ValueError:
                    log.warning("lease.unreadable", extra={"relay_fields": {"node": node}})
        return found

    async def create_session(self, session_id: str, host: str, record: dict, ttl_s: float) -> bool:
        """Record a new session with epoch 1; False if the ID is known already."""
        return bool(await self._call("create", lambda: self._scripts["create"](
            keys=[self.session_key(session_id)], args=[host, _dump(record), int(ttl_s * 1000)])))

    async def session(self, session_id: str) -> Optional[SessionFacts]:
        fields = await self._call("lookup", lambda: self._client.hmget(
            self.session_key(session_id), ["host", "epoch", "record"]))
        host, epoch, record = fields
        if epoch is None:
            return None
        try:
            record_obj = json.loads(record) if record else {}
        except ValueError:
            record_obj = {}
        return SessionFacts(host.decode() if isinstance(host, bytes) else host, int(epoch), record_obj)

    async def take_over(self, session_id: str, expected_epoch: int, host: str) -> Claim:
        answer = await self._call("take_over", lambda: self._scripts["take_over"](
            keys=[self.session_key(session_id)], args=[expected_epoch, host]))
        if int(answer[0]) == 1:
            return Claim(True, int(answer[1]))
        winner = answer[1].decode() if isinstance(answer[1], bytes) else answer[1]
        return Claim(False, int(answer[2]), winner)

    async def write_sessions(self, host: str, writes: list, ttl_s: float) -> list:
        """Fenced writes in one pipeline: ``writes`` is [(session_id, epoch, record dict or None)]
        (None refreshes the TTL only); returns WRITE_OK / WRITE_RECREATED / WRITE_LOST for each."""
        if not writes:
            return []
        script = self._scripts["fenced_write"]
        ttl_ms = int(ttl_s * 1000)

        async def run():
            async with self._client.pipeline(transaction=False) as pipe:
                results = [script(keys=[self.session_key(sid)], args=[host, epoch, _dump(record) if record else "", ttl_ms],
                                  client=pipe) for sid, epoch, record in writes]
            return [int(await result) for result in results]
        return await self._call("write_sessions", run)

    async def end_session(self, session_id: str, host: str, epoch: int) -> bool:
        return bool(await self._call("end", lambda: self._scripts["end"](
            keys=[self.session_key(session_id)], args=[host, epoch])))


def _dump(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))
