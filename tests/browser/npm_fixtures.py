"""The npm packages the tests use (rrweb, @msgpack/msgpack), installed when missing.

They are pinned in tests/browser/npm/package.json and package-lock.json (committed) and installed by
``npm ci`` into tests/browser/npm/node_modules, which git ignores; nothing of them is copied into
the project.  A failed install fails the tests that need it, with npm's own words.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NPM_DIR = Path(__file__).resolve().parent / "npm"
NODE_MODULES = NPM_DIR / "node_modules"
NPM_INSTALL_TIMEOUT_S = 300


def pinned() -> dict:
    return json.loads((NPM_DIR / "package.json").read_text())["dependencies"]


def installed_version(package: str):
    manifest = NODE_MODULES / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def ensure_installed() -> Path:
    """node_modules with every pinned package at its pinned version (npm ci if not); its path."""
    if all(installed_version(name) == version for name, version in pinned().items()):
        return NODE_MODULES
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to install the test fixtures of tests/browser/npm (apt-get install npm)")
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NPM_DIR,
                            capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {NPM_DIR} failed:\n{result.stdout}\n{result.stderr}")
    wrong = {name: installed_version(name) for name, version in pinned().items() if installed_version(name) != version}
    if wrong:
        raise RuntimeError(f"npm ci left other versions than package.json pins: {wrong}")
    return NODE_MODULES


if __name__ == "__main__":
    print(ensure_installed())
