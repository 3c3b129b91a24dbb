"""A real Debian nginx for tests, as a foreground process with every file in its own temporary folder.

    async with RealNginx.running(lambda port: nginx_config(cluster, listen=f"127.0.0.1:{port}",
                                                           runtime_dir=...)) as nginx:
        ... nginx.port ...

nginx runs as ``nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid; error_log
DIR/error.log;'`` on a free 127.0.0.1 port; the helper waits until it accepts connections, stops it
at the end (SIGQUIT, then SIGKILL), and shows error.log whenever something went wrong.  As root its
worker processes run as another user (nobody): the folder is made readable and writable for them
(a pytest tmp_path is 0700, so the folder is a fresh one under the system's temporary directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Callable, Optional

import trio
from real_redis import free_port  # one source of ports, never one handed out twice

__all__ = ["RealNginx", "NginxError", "NGINX", "free_port", "check_nginx_config"]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT_S = 10.0  # until the port accepts a connection
STOP_TIMEOUT_S = 5.0  # graceful stop before SIGKILL
START_ATTEMPTS = 3  # a free port may be taken between choosing it and nginx binding it
POLL_INTERVAL_S = 0.02


class NginxError(AssertionError):
    """nginx refused the config or did not come up; the message carries its error.log."""




def _need_nginx() -> str:
    if not os.path.exists(NGINX):
        raise NginxError(f"nginx is not installed ({NGINX}): run scripts/system-deps")
    return NGINX


def _make_dir() -> str:
    directory = tempfile.mkdtemp(prefix="relay-nginx-")
    os.chmod(directory, 0o755)  # the workers (nobody when started as root) must reach their temp folders
    return directory


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return "(none)"


def _global_directives(directory: str) -> str:
    return f"daemon off; pid {directory}/nginx.pid; error_log {directory}/error.log info;"


def check_nginx_config(text: str) -> subprocess.CompletedProcess:
    """``nginx -t`` on ``text`` in a fresh folder (the returned process's stderr says what nginx found)."""
    directory = _make_dir()
    try:
        path = os.path.join(directory, "nginx.conf")
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run([_need_nginx(), "-t", "-p", directory + "/", "-c", path,
                               "-g", _global_directives(directory)],
                              capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class RealNginx:
    """One nginx process; ``port`` is where it listens, ``directory`` holds its files."""

    def __init__(self, directory: str, port: int, text: str) -> None:
        self.directory = directory
        self.port = port
        self.text = text
        self.conf_path = os.path.join(directory, "nginx.conf")
        self.error_log_path = os.path.join(directory, "error.log")
        self.access_log_path = os.path.join(directory, "access.log")
        self.process: Optional[subprocess.Popen] = None

    def error_log(self) -> str:
        return _read(self.error_log_path)

    def access_log(self) -> str:
        return _read(self.access_log_path)

    def _failure(self, what: str) -> NginxError:
        output = ""
        if self.process is not None and self.process.stderr is not None and self.process.poll() is not None:
            output = self.process.stderr.read().decode(errors="replace")
        return NginxError(f"{what}\n--- nginx stderr ---\n{output}\n--- {self.error_log_path} ---\n"
                          f"{self.error_log()}\n--- nginx.conf ---\n{self.text}")

    async def start(self) -> None:
        with open(self.conf_path, "w") as f:
            f.write(self.text)
        self.process = subprocess.Popen(
            [_need_nginx(), "-p", self.directory + "/", "-c", self.conf_path, "-g",
             _global_directives(self.directory)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with trio.move_on_after(START_TIMEOUT_S):
            while self.process.poll() is None:
                if self._accepts():
                    return
                await trio.sleep(POLL_INTERVAL_S)
            raise self._failure(f"nginx exited with status {self.process.returncode} before listening "
                                f"on 127.0.0.1:{self.port}")
        raise self._failure(f"nginx did not listen on 127.0.0.1:{self.port} within {START_TIMEOUT_S} s")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish, the master removes its pid file
        with trio.move_on_after(STOP_TIMEOUT_S):
            while process.poll() is None:
                await trio.sleep(POLL_INTERVAL_S)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, make_config: Callable[[int, str], str]):
        """nginx running ``make_config(port, directory)`` (a free port, its folder); stopped at the end.

        A failure inside the block prints nginx's error.log (pytest shows it with the failure)."""
        directory = _make_dir()
        nginx = None
        try:
            for attempt in range(START_ATTEMPTS):
                port = free_port()
                nginx = cls(directory, port, make_config(port, directory))
                try:
                    await nginx.start()
                    break
                except NginxError as exc:
                    await nginx.stop()
                    if "Address already in use" not in str(exc) or attempt == START_ATTEMPTS - 1:
                        raise
            try:
                yield nginx
            except BaseException:
                print(f"--- nginx error.log ({nginx.error_log_path}) ---\n{nginx.error_log()}")
                raise
        finally:
            if nginx is not None:
                await nginx.stop()
            shutil.rmtree(directory, ignore_errors=True)
