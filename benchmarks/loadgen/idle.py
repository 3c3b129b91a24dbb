"""``idle``: ``--connections`` WebSocket connections that do nothing; the server's RSS growth per
connection.  relay: sessions of one master and up to ``--session-slaves`` slaves."""

from __future__ import annotations

import time

import msgpack
import trio

from relay import Client, ClientConnection
from benchmarks.loadgen.procstats import raise_fd_limit, server_peak_rss_bytes, server_rss_bytes
from benchmarks.loadgen.readers import drain
from benchmarks.loadgen.stamp import SNAPSHOT_KIND

IDLE_TIMEOUT_S = 300.0  # opening 10,000 connections through HTTP joins on a shared machine
IDLE_CONNECT_CONCURRENCY = 32
IDLE_SETTLE_S = 1.0  # after the last connection: let presence traffic drain and RSS settle


class Idle:
    def __init__(self, args) -> None:
        self.args = args
        self.connections: list = []
        self.opened = 0

    async def _open_peer(self, limiter, nursery) -> None:
        async with limiter:
            args = self.args
            connection = await ClientConnection.open(args.host, args.port, "/sub", headers=[("host", args.host)])
            self._keep(connection, nursery)

    async def _open_session(self, slaves: int, limiter, nursery) -> None:
        args = self.args
        async with limiter:
            client = Client(args.host, args.port)
            created = await client.create_session()
            master = await client.connect(created["session"], created["master_token"])
            await master.send(SNAPSHOT_KIND, msgpack.packb("<html></html>"))
        self._keep(master, nursery)
        for index in range(slaves):
            async with limiter:
                joined = await client.join(created["session"], agent=f"idle-{index}")
                self._keep(await client.connect(created["session"], joined["slave_token"]), nursery)

    def _keep(self, connection: ClientConnection, nursery) -> None:
        self.connections.append(connection)
        self.opened += 1
        nursery.start_soon(drain, connection)

    async def main(self) -> dict:
        args = self.args
        fd_limit = raise_fd_limit()
        total = args.connections
        if total + 100 > fd_limit:
            raise SystemExit(f"{total} connections need more file descriptors than the limit {fd_limit}")
        pid = args.server_pid
        await trio.sleep(0.3)
        rss_before = server_rss_bytes(pid)
        limiter = trio.CapacityLimiter(IDLE_CONNECT_CONCURRENCY)
        started = time.perf_counter()
        with trio.fail_after(IDLE_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as opening:
                    if args.target == "relay":
                        per_session = args.session_slaves + 1
                        remaining = total
                        while remaining > 0:
                            members = min(per_session, remaining)
                            opening.start_soon(self._open_session, members - 1, limiter, nursery)
                            remaining -= members
                    else:
                        for _ in range(total):
                            opening.start_soon(self._open_peer, limiter, nursery)
                connect_s = time.perf_counter() - started
                await trio.sleep(IDLE_SETTLE_S)
                rss_after = server_rss_bytes(pid)
                peak = server_peak_rss_bytes(pid)
                nursery.cancel_scope.cancel()
        for connection in self.connections:
            connection.sock.close()  # nobody reads it any more: no close handshake for 10,000
        growth = None if rss_before is None or rss_after is None else rss_after - rss_before
        return {
            "workload": "idle",
            "target": args.target,
            "connections": self.opened,
            "session_slaves": args.session_slaves if args.target == "relay" else None,
            "connect_s": connect_s,
            "connections_per_s": self.opened / connect_s,
            "server_rss_before_bytes": rss_before,
            "server_rss_after_bytes": rss_after,
            "server_peak_rss_bytes": peak,
            "bytes_per_connection": None if growth is None else growth / self.opened,
        }


