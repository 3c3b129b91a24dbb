"""What the fan-out benchmark measures against, installed when missing (run by ``python -m
benchmarks fanout`` first, unless ``--no-install``; alone: ``python -m benchmarks setup``).

* The peers (picows, uvloop, websockets, aiohttp, trio-websocket) and matplotlib: the ``bench``
  extra, ``pip install -e '<checkout>[bench]'`` into the interpreter running the benchmarks, and
  only when that interpreter is a virtual environment's: never into the base Python.
* iperf3 (the kernel's ceiling): Debian's package, ``apt-get install -y iperf3`` (after
  ``apt-get update`` when apt does not know the package yet), only when running as root with
  apt-get; otherwise it says which command would do it and the run leaves the ceiling out.

Nothing is installed when everything is there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: import name -> the package of the bench extra that provides it
PEER_MODULES = {"picows": "picows", "uvloop": "uvloop", "websockets": "websockets", "aiohttp": "aiohttp",
                "trio_websocket": "trio-websocket", "matplotlib": "matplotlib"}
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}  # iperf3's package asks whether to start a daemon: no
INSTALL_TIMEOUT_S = 900


def missing_peers() -> list:
    return [package for module, package in PEER_MODULES.items() if importlib.util.find_spec(module) is None]


def in_virtualenv() -> bool:
    return sys.prefix != sys.base_prefix


def ensure_peers(say=print) -> bool:
    """True when every peer imports (installing the bench extra if needed and allowed)."""
    missing = missing_peers()
    if not missing:
        return True
    if not in_virtualenv():
        say(f"setup: missing {', '.join(missing)}; refusing to pip install into the base interpreter "
            f"{sys.executable} (not a virtual environment). Run the benchmarks from the checkout's venv: "
            f"scripts/test tests/unit -q creates .venv, then .venv/bin/python -m benchmarks ...")
        return False
    command = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"]
    say(f"setup: missing {', '.join(missing)}; installing the bench extra into {sys.prefix}: {' '.join(command)}")
    done = subprocess.run(command, timeout=INSTALL_TIMEOUT_S)
    importlib.invalidate_caches()
    still = missing_peers()
    if done.returncode != 0 or still:
        say(f"setup: pip failed (exit {done.returncode}); still missing: {', '.join(still) or 'nothing'}")
        return False
    return True


def ensure_iperf3(say=print) -> bool:
    """True when iperf3 is on PATH (installing Debian's package if needed and allowed)."""
    if shutil.which("iperf3"):
        return True
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        say("setup: iperf3 not installed, and not root with apt-get to install it "
            "(Debian/Ubuntu: sudo apt-get install -y iperf3); the kernel's ceiling will be missing")
        return False
    env = {**os.environ, **APT_ENV}
    install = ["apt-get", "install", "-y", "-q", "iperf3"]
    say(f"setup: iperf3 not installed; installing Debian's package: {' '.join(install)}")
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0 and "Unable to locate package" in done.stderr:
        say("setup: apt does not know iperf3 yet: apt-get update, then again")
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0 or shutil.which("iperf3") is None:
        say(f"setup: apt-get failed (exit {done.returncode}): {done.stderr.strip()[-300:]}; "
            f"the kernel's ceiling will be missing")
        return False
    return True


def main(argv=None) -> int:
    argv = list(argv or [])
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m benchmarks setup\n\n{__doc__}")
        return 0
    peers, iperf3 = ensure_peers(), ensure_iperf3()
    print(f"setup: peers {'ready' if peers else 'MISSING'}, iperf3 {'ready' if iperf3 else 'MISSING'}")
    return 0 if peers and iperf3 else 1
