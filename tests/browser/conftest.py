"""Real-browser tests: Debian's headless Chromium (/usr/bin/chromium) driven by Playwright for Python.

No browser is ever downloaded (never `playwright install`): Playwright's wheel brings its driver and
launches the system Chromium by path, with the flags of ../shared/notes/browsers.md (this network is
closed: without them Chromium keeps calling hosts that refuse it).  Each test gets fresh browser
contexts (separate cookie jars: two "browsers", as the seed's procedure uses) and a relay node run as
a subprocess on 127.0.0.1, port 0; everything is stopped by the fixtures that started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 # A page that Playwright's routing fulfils (the rrweb pages) has no address space of its
                 # own, and Chromium's Local Network Access checks then refuse its WebSocket to 127.0.0.1
                 # (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS); the relay's own pages never need this.
                 "--disable-features=LocalNetworkAccessChecks"]
LAUNCH_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 10_000  # every Playwright wait and action of these tests is bounded by this
NODE_START_TIMEOUT_S = 20
NODE_STOP_TIMEOUT_S = 10
ARTIFACTS = ROOT / "reports" / "browser"  # screenshots (git-ignored with reports/)
NODE_NAME = "CB_Server_1"

# A relay node in a subprocess: the Config comes as JSON in argv; it prints its ports, and exits when
# its stdin closes (so it cannot outlive the test run even if the fixture's teardown never runs).
LAUNCHER = r"""
import json, sys, trio, relay

async def main():
    config = relay.Config(**json.loads(sys.argv[1]))
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(relay.serve, config)
        print(json.dumps({"port": listening.public_port}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        # Tests of client.js under Node here (marked node) need no browser.
        if here in Path(str(item.fspath)).parents and item.get_closest_marker("node") is None:
            item.add_marker(pytest.mark.browser)


class RelayNode:
    """One relay node process; ``base`` is its public URL."""

    def __init__(self, **settings) -> None:
        config = dict(listen="127.0.0.1:0", private_listen="127.0.0.1:0", node_name=NODE_NAME, log_level="warning",
                      join_policy="approve")
        config.update(settings)
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(config)], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = self._first_line()
        except BaseException:
            self.stop()
            raise
        self.port = json.loads(line)["port"]
        self.base = f"http://127.0.0.1:{self.port}"

    def _first_line(self) -> str:
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(NODE_START_TIMEOUT_S):
                raise AssertionError(f"the relay did not start within {NODE_START_TIMEOUT_S} s")
        line = self.process.stdout.readline()
        assert line, f"the relay did not start (exit code {self.process.poll()})"
        return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the launcher's signal to stop
            try:
                self.process.wait(timeout=NODE_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=NODE_STOP_TIMEOUT_S)
        self.process.stdout.close()


@pytest.fixture
def relay_node():
    """A node with the default join policy, "approve" (the master admits each agent)."""
    node = RelayNode()
    yield node
    node.stop()


@pytest.fixture
def start_node():
    """A factory of nodes with other settings, all stopped at the end of the test."""
    nodes = []

    def start(**settings) -> RelayNode:
        nodes.append(RelayNode(**settings))
        return nodes[-1]

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="session")
def playwright():
    """One Playwright for the whole run: its sync API runs an event loop, and a second one started
    while the first runs is refused."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/system-deps installs Debian's chromium "
                    "(these tests must not be skipped, and must never download a browser)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="session")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                         timeout=LAUNCH_TIMEOUT_MS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def new_context(browser):
    """A factory of browser contexts (each its own cookie jar), closed at the end of the test."""
    contexts = []

    def make(**options):
        context = browser.new_context(viewport=options.pop("viewport", {"width": 1000, "height": 700}), **options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/browser/npm/node_modules with the pinned packages (installed by npm ci when missing)."""
    import npm_fixtures

    try:
        return npm_fixtures.ensure_installed()
    except RuntimeError as error:
        pytest.fail(str(error))
