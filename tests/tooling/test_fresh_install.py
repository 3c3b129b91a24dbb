"""The README's first command on a fresh machine, and a checkout that shadows a compiled install.

A venv made from the base interpreter (none of relay's dependencies), a copy of the checkout (its
files as git lists them: no compiled extension, no .venv), and the README's first command,
``pip install . && relay serve``, run in the copy: the node must run the compiled fast path.  Then,
in the same copy and venv, ``python -m relay`` imports the copy's uncompiled ``relay/`` before the
compiled install: it must say so loudly (stderr warning, log event, implementation string).

Downloads the build requirements and relay's dependencies from PyPI, through pip's cache.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_FIRST_COMMAND = (REPO / "README.md").read_text(encoding="utf-8").splitlines()[0].split("#")[0].strip()
# pip builds relay in isolation (fetching setuptools, Cython), compiles _fastpath with -O3 and fetches
# trio, h11...: about two minutes on a shared 2-core machine with a warm pip cache.
INSTALL_AND_START_TIMEOUT_S = 360.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOOPBACK_FLAGS = ["--listen", "127.0.0.1:0", "--private-listen", "127.0.0.1:0"]
BANNER = re.compile(r"^relay \S+ \((?P<implementation>.*)\): node \S+ on http://\S+ "
                    r"\(private (?P<host>[\d.]+):(?P<port>\d+)\)$")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("RELAY_PUREPYTHON", "") not in ("", "0"),
                       reason="independent of the twin under test (it builds a venv of its own): "
                              "run once, in the fast-path run"),
]


def _checkout_copy(destination: Path) -> Path:
    """The checkout's files as a fresh clone of this working tree would have them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    assert not list(destination.glob("relay/_fastpath*.so"))
    return destination


def _fresh_environment(venv: Path) -> dict[str, str]:
    """This environment as a shell with ``venv`` activated: nothing of the venv pytest runs in."""
    own_bin = str(Path(sys.executable).parent)
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != own_bin]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_NO_CACHE_DIR")
           and not k.startswith("RELAY_")}
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _lines(stream) -> queue.Queue:
    """The lines of ``stream``, read by a thread (then None at the end), so reads can time out."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_banner(lines: queue.Queue, timeout: float, seen: list[str]) -> re.Match | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if match := BANNER.match(line):
            return match
    return None


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (bash and relay), SIGKILL if it outlives STOP_TIMEOUT_S."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


def _health(host: str, port: int) -> dict:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def _run_until_banner(command: list[str], *, cwd: Path, env: dict, timeout: float, stderr_path: Path) -> dict:
    """Start ``command``, wait for the node's banner, ask /health, stop it; what it said."""
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr,
                                   stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            seen: list[str] = []
            banner = _wait_for_banner(_lines(process.stdout), timeout, seen)
            health = _health(banner["host"], int(banner["port"])) if banner else None
        finally:
            _stop_group(process)
    result = {"banner": banner, "health": health, "stdout": seen, "stderr": stderr_path.read_text()}
    if banner is None:
        pytest.fail(f"{command} printed no banner within {timeout:.0f} s:\n" + "\n".join(seen[-40:])
                    + "\n--- stderr ---\n" + result["stderr"][-4000:])
    return result


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory) -> dict:
    """The README's first command, run in a checkout copy with a fresh venv activated."""
    root = tmp_path_factory.mktemp("fresh-install")
    checkout = _checkout_copy(root / "checkout")
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _fresh_environment(venv)
    # Appended flags go to `relay serve`, the last command of the line.
    command = ["bash", "-c", " ".join([README_FIRST_COMMAND, *LOOPBACK_FLAGS])]
    started = time.monotonic()
    result = _run_until_banner(command, cwd=checkout, env=env, timeout=INSTALL_AND_START_TIMEOUT_S,
                               stderr_path=root / "first-command.stderr")
    result.update(checkout=checkout, venv=venv, env=env, seconds=time.monotonic() - started)
    return result


def test_readme_first_command_serves_on_the_compiled_fast_path(fresh_install):
    assert fresh_install["banner"]["implementation"] == "Cython fast path", fresh_install["banner"].string
    assert fresh_install["health"]["status"] == "ok"
    # (pip's own warnings share stderr: only relay's are looked for.)
    assert "pure-Python twin" not in fresh_install["stderr"], fresh_install["stderr"][-4000:]
    assert "shadowed_build" not in fresh_install["stderr"] and "Traceback" not in fresh_install["stderr"]
    assert not list(fresh_install["checkout"].glob("relay/_fastpath*.so"))  # the installed build ran


def test_checkout_shadowing_the_compiled_install_says_so_loudly(fresh_install, tmp_path):
    python = str(fresh_install["venv"] / "bin" / "python")
    checkout, env = fresh_install["checkout"], fresh_install["env"]
    compiled = list((fresh_install["venv"] / "lib").glob("python3*/site-packages/relay/_fastpath*.so"))
    assert len(compiled) == 1, compiled

    version = subprocess.run([python, "-m", "relay", "--version"], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert version.returncode == 0, version.stderr
    assert "pure Python" in version.stdout and "shadows the compiled" in version.stdout
    warning = [line for line in version.stderr.splitlines() if line.startswith("WARNING:")]
    assert len(warning) > 3, version.stderr
    assert str(compiled[0]) in version.stderr
    assert "`relay serve`" in version.stderr and "`pip install -e .`" in version.stderr

    served = _run_until_banner([python, "-m", "relay", "serve", *LOOPBACK_FLAGS], cwd=checkout, env=env,
                               timeout=START_TIMEOUT_S, stderr_path=tmp_path / "serve.stderr")
    assert served["banner"]["implementation"].startswith("pure Python")
    assert str(compiled[0]) in served["banner"]["implementation"]
    assert served["stderr"].startswith("WARNING: relay is running its pure-Python twin"), served["stderr"]
    assert re.search(r"^\S+ WARNING node\.shadowed_build compiled=\S*_fastpath", served["stderr"], re.M)

    # The console script, from the same directory, runs the compiled build and says nothing.
    script = subprocess.run([str(fresh_install["venv"] / "bin" / "relay"), "--version"], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert script.returncode == 0 and script.stderr == "", script.stderr
    assert "(Cython fast path)" in script.stdout
