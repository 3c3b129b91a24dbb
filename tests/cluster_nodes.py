"""A relay cluster for tests: a cluster file on loopback ports and relay node processes
(``python -m relay serve --cluster FILE --node-name NAME``) that a test starts, kills (-9),
pauses (SIGSTOP) and restarts; the node's stderr goes to a file shown when a test fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from real_redis import free_port

__all__ = ["ClusterNodes", "write_cluster_file"]

START_TIMEOUT_S = 20.0


def write_cluster_file(path: Path, names: list, redis_url: str, *, name: str = "test", rf: int = 2,
                       lease_ttl_s: float = 2.0, partitioner: str = "murmur3") -> dict:
    """Evenly spaced single tokens; returns {node: (public port, private port)}."""
    from relay._ring import evenly_spaced_tokens

    tokens = evenly_spaced_tokens(len(names), partitioner)
    ports = {}
    lines = [f'cluster_name = "{name}"', f'partitioner = "{partitioner}"', f"replication_factor = {rf}",
             f"state_store = {_toml_store(redis_url)}", f"lease_ttl_s = {lease_ttl_s}", ""]
    for node, token in zip(names, tokens):
        public, private = free_port(), free_port()
        ports[node] = (public, private)
        lines += ["[[nodes]]", f'name = "{node}"', f'public = "127.0.0.1:{public}"',
                  f'private = "127.0.0.1:{private}"', f"initial_token = {token}", ""]
    path.write_text("\n".join(lines))
    return ports


def _toml_store(store: str) -> str:
    """A redis:// URL is quoted; anything else is a TOML value already (a Sentinel table)."""
    return f'"{store}"' if store.startswith("redis://") else store


class ClusterNodes:
    def __init__(self, folder: Path, redis_url: str, names=("CB_Server_1", "CB_Server_2", "CB_Server_3"), *,
                 rf: int = 2, lease_ttl_s: float = 2.0, extra_args=(), private_tls=None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names = list(names)
        self.file = self.folder / "cluster.toml"
        self.ports = write_cluster_file(self.file, self.names, redis_url, rf=rf, lease_ttl_s=lease_ttl_s)
        self.lease_ttl_s = lease_ttl_s
        self.extra_args = list(extra_args)
        self.private_tls = private_tls  # an ssl.SSLContext when the private listeners speak TLS
        self.processes: dict = {}
        self.runs: dict = {name: 0 for name in self.names}

    def public(self, name: str) -> int:
        return self.ports[name][0]

    def private(self, name: str) -> int:
        return self.ports[name][1]

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.{self.runs[name]}.log"

    def start(self, name: str, *, wait: bool = True, cluster_file: Optional[Path] = None) -> subprocess.Popen:
        """Start node ``name`` (with another ``cluster_file`` than the shared one, e.g. another state store)."""
        self.runs[name] += 1
        log = open(self.log(name), "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--cluster", str(cluster_file or self.file), "--node-name", name,
             "--join-policy", "open", "--log-format", "json", "--create-burst", "10000", "--join-burst", "10000",
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
        log.close()
        self.processes[name] = process
        if wait:
            self.wait_ready(name)
        return process

    def wait_ready(self, name: str) -> None:
        """Until the node's private /cluster says it holds its lease."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}): {self.log(name).read_text()[-3000:]}")
            view = self.view(name)
            if view is not None and view.get("lease_valid_s", 0) > 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not join the cluster: {self.log(name).read_text()[-3000:]}")
            time.sleep(0.05)

    def view(self, name: str) -> Optional[dict]:
        """The node's GET /cluster (private listener), or None when it does not answer."""
        import http.client

        try:
            if self.private_tls is not None:
                conn = http.client.HTTPSConnection("127.0.0.1", self.private(name), timeout=1.0,
                                                   context=self.private_tls)
            else:
                conn = http.client.HTTPConnection("127.0.0.1", self.private(name), timeout=1.0)
            conn.request("GET", "/cluster")
            response = conn.getresponse()
            data = response.read()
            conn.close()
            return json.loads(data) if response.status == 200 else None
        except (OSError, ValueError):
            return None

    def start_all(self) -> None:
        self.start_all_with({})

    def start_all_with(self, files: dict) -> None:
        """Every node, ``files`` giving some of them their own cluster file."""
        for name in self.names:
            self.start(name, wait=False, cluster_file=files.get(name))
        for name in self.names:
            self.wait_ready(name)
        self.wait_agreed()

    def wait_agreed(self) -> None:
        """Until every running node sees every running node live (live sets refresh at each renewal)."""
        running = sorted(self.processes)
        deadline = time.monotonic() + START_TIMEOUT_S
        while any(sorted((self.view(name) or {}).get("live", [])) != running for name in running):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the nodes do not agree on the live set: {[self.view(n) for n in running]}")
            time.sleep(0.05)

    def signal(self, name: str, signum: int) -> None:
        self.processes[name].send_signal(signum)

    def kill(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def stop_all(self) -> None:
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                process.terminate()
        for name, process in list(self.processes.items()):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(f"----- {path.name}\n{path.read_text()[-4000:]}" for path in sorted(self.folder.glob("*.log")))

    def __enter__(self) -> "ClusterNodes":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()
