"""Debian's redis-server (and redis-sentinel), run by a test as a foreground process on a loopback port
with its files in a temporary folder (scripts/system-deps installs them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port", "REDIS_SERVER"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


_given_ports: set = set()


def free_port() -> int:
    """A loopback port nothing listens on now, and that this process has not handed out before (the
    kernel may give a port just closed again: two nodes of one cluster file must never share one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait_for_ping(port: int, process: subprocess.Popen, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)


class RedisServer:
    """``with RedisServer(tmp_path) as redis:`` ... ``redis.url``; ``restart()``, ``kill()``, ``start()``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError("redis-server is not installed: run scripts/system-deps")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = self.folder / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--daemonize", "no", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_for_ping(self.port, self.process, "redis-server", self.log_path)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Down and up again, empty (no persistence): what a crash of an unpersisted Redis is."""
        self.kill()
        self.start()

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()


REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
SENTINEL_DOWN_AFTER_MS = 1000  # Sentinel's default is 30 s: a test cannot wait that long


class SentinelRedis:
    """A primary, its replica and one Sentinel watching them (quorum 1), all on loopback.

    ``kill_primary()`` makes the Sentinel promote the replica within a few seconds, as
    ``redis-sentinel`` does in production (with a longer ``down-after-milliseconds``)."""

    SERVICE = "relay"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.primary = RedisServer(self.folder / "primary")
        self.replica = RedisServer(self.folder / "replica")
        self.sentinel_port = free_port()
        self.sentinel: subprocess.Popen | None = None

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        subprocess.run(["redis-cli", "-p", str(self.replica.port), "replicaof", "127.0.0.1", str(self.primary.port)],
                       check=True, capture_output=True, timeout=10)
        config = self.folder / "sentinel.conf"
        config.write_text(f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.folder}\n"
                          f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                          f"sentinel down-after-milliseconds {self.SERVICE} {SENTINEL_DOWN_AFTER_MS}\n"
                          f"sentinel failover-timeout {self.SERVICE} 10000\n")
        log = open(self.folder / "sentinel.log", "ab")
        self.sentinel = subprocess.Popen([REDIS_SENTINEL, str(config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_for_ping(self.sentinel_port, self.sentinel, "redis-sentinel", self.folder / "sentinel.log")

    def primary_port(self) -> int:
        """The port the Sentinel names as primary now."""
        answer = subprocess.run(["redis-cli", "-p", str(self.sentinel_port), "sentinel", "get-master-addr-by-name",
                                 self.SERVICE], capture_output=True, text=True, timeout=10).stdout.split()
        return int(answer[1])

    def kill_primary(self) -> None:
        self.primary.kill()

    def stop(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait(10)
        self.replica.kill()
        self.primary.kill()

    def __enter__(self) -> "SentinelRedis":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
