"""rrweb interop: an embedder's own capture code over relay instead of the demo's capture.js.

The npm package rrweb (pinned in tests/browser/npm, installed there by npm ci, git-ignored) records on
a master page; its live-mode Replayer replays on a slave page; the events travel as relay envelopes
through client.js.  The test pages (tests/browser/pages) and rrweb's files are served under the
relay's origin by Playwright's request routing, so client.js talks to the real node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from demo_pages import CANONICAL_JS

PAGES = Path(__file__).resolve().parent / "pages"
REPLAY_TIMEOUT_MS = 5_000
APP = "(doc) => doc && doc.getElementById('app')"


def serve_fixtures(context, node, node_modules: Path) -> None:
    files = {
        "rrweb.umd.cjs": (node_modules / "rrweb" / "dist" / "rrweb.umd.cjs", "application/javascript"),
        "rrweb.css": (node_modules / "rrweb" / "dist" / "style.css", "text/css"),
        "rrweb-master.html": (PAGES / "rrweb-master.html", "text/html"),
        "rrweb-slave.html": (PAGES / "rrweb-slave.html", "text/html"),
    }

    def fulfil(route):
        name = route.request.url.split("?", 1)[0].rsplit("/", 1)[1]
        if name not in files:
            route.fulfill(status=404, body="not a fixture")
            return
        path, content_type = files[name]
        route.fulfill(status=200, body=path.read_bytes(), content_type=content_type)

    context.route(f"{node.base}/cobrowse/fixtures/**", fulfil)


def canonical_app(page, document_expression: str) -> str:
    return page.evaluate(f"(() => {{ const app = ({APP})({document_expression}); return app && ({CANONICAL_JS})(app); }})()")


@pytest.fixture
def open_node(start_node):
    return start_node(join_policy="open")


def test_rrweb_records_on_the_master_and_replays_live_on_the_slave(open_node, new_context, node_modules):
    customer, agent = new_context(), new_context()
    for context in (customer, agent):
        serve_fixtures(context, open_node, node_modules)
    master = customer.new_page()
    master.goto(f"{open_node.base}/cobrowse/fixtures/rrweb-master.html")
    master.wait_for_function("window.relayRrweb && relayRrweb.connection.state === 'open'")
    session = master.evaluate("relayRrweb.connection.session")
    master.evaluate("""() => { const list = document.getElementById('items');
        for (let i = 0; i < 100; i++) list.insertAdjacentHTML('beforeend', '<li class="n' + (i % 2) + '">item ' + i + '</li>'); }""")

    slave = agent.new_page()
    slave.goto(f"{open_node.base}/cobrowse/fixtures/rrweb-slave.html?session={session}")

    def replayed_matches():
        expected = canonical_app(master, "document")
        slave.wait_for_function(
            f"(expected) => {{ const app = ({APP})(window.relayRrweb && relayRrweb.document); "
            f"return !!app && ({CANONICAL_JS})(app) === expected; }}", arg=expected, timeout=REPLAY_TIMEOUT_MS)

    replayed_matches()  # a late joiner: rrweb's checkpoint (the relay's snapshot), then what followed
    assert slave.evaluate("relayRrweb.received.snapshot") >= 1

    # Live: attributes, text, a subtree replaced, typed input
    master.evaluate("""() => { document.querySelector('#items li.n1').className = 'hot';
        document.querySelector('h2').firstChild.data = 'Changed live';
        const box = document.createElement('section');
        box.innerHTML = '<p>a <b>new</b> subtree</p>'.repeat(50);
        document.querySelector('#app p').replaceWith(box); }""")
    replayed_matches()
    master.type("#name", "typed")
    slave.wait_for_function("relayRrweb.document.getElementById('name').value === 'typed'", timeout=REPLAY_TIMEOUT_MS)
    assert slave.evaluate("getComputedStyle(relayRrweb.document.querySelector('#items li.hot')).color") == "rgb(200, 0, 0)"
    assert master.evaluate("relayRrweb.connection.transport") == "websocket"
    assert slave.evaluate("relayRrweb.connection.transport") == "websocket"
