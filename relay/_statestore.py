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
  slaves) and ``stream`` (JSON: what the failover copy holds, relay/_streamcopy.py), with a TTL that
  the host refreshes while the session lives.
* ``relay:C:stream:{ID}``: the failover copy of the session stream, a list of delivered envelopes
  (the latest snapshot and what followed).  An item that starts with the byte 0xC1 (never used by
  msgpack) names a blob key instead: a large message written in chunks before the item that names it.
* ``relay:C:blob:{ID}:EPOCH:SEQ`` such blobs, and ``relay:C:blobs:{ID}`` the set of their names.

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

__all__ = ["StateStore", "StoreUnavailable", "SessionFacts", "Claim", "WRITE_OK", "WRITE_RECREATED", "WRITE_LOST",
           "COPY_NO_RECORD", "BLOB_MARKER"]

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

# KEYS[1] session, KEYS[2] stream, KEYS[3] blob set; ARGV host, epoch, record ('' keeps it),
# ttl_ms.  WRITE_OK, WRITE_RECREATED or WRITE_LOST.  The copy's keys live as long as the record.
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
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('PEXPIRE', KEYS[3], ARGV[4]) == 1 then
  for _, blob in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('PEXPIRE', blob, ARGV[4]) end
end
return 1
"""

DROP_COPY_LUA = """
for _, blob in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('DEL', blob) end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[1], 'stream')
"""

# KEYS[1] session, KEYS[2] stream, KEYS[3] blob set; ARGV host, epoch.  1 deleted; 0 not ours (any more).
END_SESSION = """
local fields = redis.call('HMGET', KEYS[1], 'host', 'epoch')
if fields[1] == ARGV[1] and tonumber(fields[2]) == tonumber(ARGV[2]) then
""" + DROP_COPY_LUA + """
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] session, KEYS[2] stream, KEYS[3] blob set; ARGV host, epoch, reset ('1': the items replace
# the copy), stream meta (JSON), ttl_ms, items...  WRITE_OK; WRITE_LOST (another epoch holds it);
# COPY_NO_RECORD (the record is gone: write it first).  Blob items name keys written just before.
COPY_APPEND = """
local fields = redis.call('HMGET', KEYS[1], 'host', 'epoch')
if fields[2] == false then return 3 end
if fields[1] ~= ARGV[1] or tonumber(fields[2]) ~= tonumber(ARGV[2]) then return 0 end
local ttl = ARGV[5]
if ARGV[3] == '1' then
  local keep = {}
  for i = 6, #ARGV do
    if string.byte(ARGV[i], 1) == 193 then keep[string.sub(ARGV[i], 2)] = true end
  end
  for _, blob in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if not keep[blob] then redis.call('DEL', blob); redis.call('SREM', KEYS[3], blob) end
  end
  redis.call('DEL', KEYS[2])
end
for i = 6, #ARGV do
  local item = ARGV[i]
  redis.call('RPUSH', KEYS[2], item)
  if string.byte(item, 1) == 193 then
    local blob = string.sub(item, 2)
    redis.call('SADD', KEYS[3], blob)
    redis.call('PEXPIRE', blob, ttl)
  end
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('HSET', KEYS[1], 'stream', ARGV[4])
return 1
"""

# KEYS as above; ARGV host, epoch.  1 dropped; 0 not ours.
DROP_COPY = """
local fields = redis.call('HMGET', KEYS[1], 'host', 'epoch')
if fields[1] ~= ARGV[1] or tonumber(fields[2]) ~= tonumber(ARGV[2]) then return 0 end
""" + DROP_COPY_LUA + """
return 1
"""
COPY_NO_RECORD = 3
BLOB_MARKER = b"\xc1"  # msgpack never uses this byte: an item that starts with it names a blob key
BLOB_CHUNK_BYTES = 1024 * 1024  # a large message goes to Redis, and comes back, this much at a time


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
                             ("fenced_write", FENCED_WRITE), ("end", END_SESSION), ("copy_append", COPY_APPEND),
                             ("drop_copy", DROP_COPY)):
            self._scripts[name] = self._client.register_script(source)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.__aexit__(*exc_info)

    # ------------------------------------------------------------------ keys

    def lease_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    def session_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{{{session_id}}}"

    def copy_keys(self, session_id: str) -> list:
        """The session record, its stream list and its blob set (one hash tag: one Redis Cluster slot)."""
        return [self.session_key(session_id), f"{self._prefix}stream:{{{session_id}}}",
                f"{self._prefix}blobs:{{{session_id}}}"]

    def blob_key(self, session_id: str, epoch: int, seq: int) -> str:
        return f"{self._prefix}blob:{{{session_id}}}:{epoch}:{seq}"

    # ------------------------------------------------------------------ calls

    async def _call(self, operation: str, awaitable_factory, timeout_s: float = REDIS_CALL_TIMEOUT_S):
        if self._metrics is not None:
            self._metrics.redis_calls.labels(operation).inc()
        try:
            with trio.fail_after(timeout_s):
                return await awaitable_factory()
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as exc:
            if self._metrics is not None:
                self._metrics.redis_errors.labels(operation).inc()
            raise StoreUnavailable(f"redis {operation}: {type(exc).__name__}: {exc}") from None

    async def ping(self, timeout_s: float = REDIS_CALL_TIMEOUT_S) -> None:
        await self._call("ping", self._client.ping, timeout_s)

    async def renew_lease(self, node: str, lease: dict, ttl_s: float, timeout_s: float = REDIS_CALL_TIMEOUT_S) -> int:
        """1 renewed, 2 taken again after it lapsed, 0 held by another process with this name."""
        value = json.dumps(lease, separators=(",", ":"))
        return int(await self._call("renew_lease", lambda: self._scripts["renew_lease"](
            keys=[self.lease_key(node)], args=[value, int(ttl_s * 1000), lease["instance"]]), timeout_s))

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
                results = [script(keys=self.copy_keys(sid), args=[host, epoch, _dump(record) if record else "", ttl_ms],
                                  client=pipe) for sid, epoch, record in writes]
            return [int(await result) for result in results]
        return await self._call("write_sessions", run)

    async def end_session(self, session_id: str, host: str, epoch: int) -> bool:
        return bool(await self._call("end", lambda: self._scripts["end"](
            keys=self.copy_keys(session_id), args=[host, epoch])))

    # ------------------------------------------------------------------ the failover copy

    async def write_blob(self, key: str, parts: list, ttl_s: float) -> None:
        """Write one large message as ``key``, ``BLOB_CHUNK_BYTES`` at a time (one chunk copied out
        of ``parts`` at a time: coredis takes bytes only), so no second whole copy of the message is
        ever held here."""
        async def run():
            await self._client.delete([key])
            for part in parts:
                view = memoryview(part)
                for start in range(0, len(view), BLOB_CHUNK_BYTES):
                    await self._client.append(key, bytes(view[start:start + BLOB_CHUNK_BYTES]))
            await self._client.pexpire(key, int(ttl_s * 1000))
        await self._call("write_blob", run)

    async def append_copies(self, host: str, writes: list, ttl_s: float) -> list:
        """Copy batches in one pipeline: ``writes`` is [(session_id, epoch, reset, meta dict, items)];
        returns WRITE_OK / WRITE_LOST / COPY_NO_RECORD for each."""
        if not writes:
            return []
        script = self._scripts["copy_append"]
        ttl_ms = int(ttl_s * 1000)

        async def run():
            async with self._client.pipeline(transaction=False) as pipe:
                results = [script(keys=self.copy_keys(sid), args=[host, epoch, "1" if reset else "0", _dump(meta), ttl_ms,
                                                                  *items], client=pipe)
                           for sid, epoch, reset, meta, items in writes]
            return [int(await result) for result in results]
        return await self._call("copy_append", run)

    async def drop_copy(self, session_id: str, host: str, epoch: int) -> bool:
        return bool(await self._call("drop_copy", lambda: self._scripts["drop_copy"](
            keys=self.copy_keys(session_id), args=[host, epoch])))

    async def load_copy(self, session_id: str) -> tuple:
        """(meta dict, [item bytes-like]) of a session's failover copy, blobs read back into one
        buffer each; (None, []) when there is none."""
        record_key, stream_key, _blobs = self.copy_keys(session_id)
        meta = await self._call("load_copy", lambda: self._client.hget(record_key, "stream"))
        if not meta:
            return None, []
        try:
            meta_obj = json.loads(meta)
        except ValueError:
            return None, []
        items = await self._call("load_copy", lambda: self._client.lrange(stream_key, 0, -1))
        loaded = []
        for item in items:
            if item[:1] == BLOB_MARKER:
                item = await self._read_blob(bytes(item[1:]).decode())
                if item is None:
                    return None, []  # expired under us: the copy is not whole
            loaded.append(item)
        return meta_obj, loaded

    async def _read_blob(self, key: str):
        length = await self._call("load_copy", lambda: self._client.strlen(key))
        if not length:
            return None
        buffer = bytearray(length)
        for start in range(0, length, BLOB_CHUNK_BYTES):
            end = min(start + BLOB_CHUNK_BYTES, length)
            chunk = await self._call("load_copy", lambda: self._client.getrange(key, start, end - 1))
            if len(chunk) != end - start:
                return None
            buffer[start:end] = chunk
        return buffer


def _dump(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))
