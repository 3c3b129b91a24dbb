"""The demo co-browses the master's whole document in a real browser (capture.js -> relay -> replay.js).

Each change on the master's page must show in the slave's replica within 2 s, compared as a canonical
serialization of the whole document (and computed styles element by element), on every transport
pairing; pointers go to the master labelled by the relay's stamp; control needs write mode.
"""

from __future__ import annotations

import time

import pytest

from demo_pages import REPLICA, STYLES_JS, open_master, open_slave, save_side_by_side

CHANGE_TIMEOUT_MS = 2_000  # the bound: a change on the master shows on the slave within 2 s
FIRST_PAGE_TIMEOUT_MS = 5_000
BIG_PAGE_TIMEOUT_MS = 30_000
BIG_PAGE_BYTES = 5 * 1024 * 1024
OFFLINE_POLL_WAIT_S = 1
PAIRINGS = [("ws", "ws"), ("lp", "lp"), ("ws", "lp"), ("lp", "ws")]


def admitted_pair(node, new_context, master_transport="ws", slave_transport="ws", agent="agent-7"):
    master = open_master(new_context(), node, master_transport)
    slave = open_slave(new_context(), node, master.session, agent, slave_transport)
    master.admit(agent)
    slave.wait_for_replica(master, FIRST_PAGE_TIMEOUT_MS)
    return master, slave


def wait_for_styles(master, slave, timeout_ms=CHANGE_TIMEOUT_MS):
    expected = master.styles()

    slave.page.wait_for_function(f"(expected) => JSON.stringify(({STYLES_JS})({REPLICA})) === JSON.stringify(expected)",
                                 arg=expected, timeout=timeout_ms, polling="raf")
    assert slave.styles() == expected


@pytest.mark.parametrize("master_transport, slave_transport", PAIRINGS)
def test_every_kind_of_change_reaches_the_replica_within_2_s(relay_node, new_context, master_transport,
                                                            slave_transport):
    master, slave = admitted_pair(relay_node, new_context, master_transport, slave_transport)
    page = master.page

    # 500 list items (childList)
    page.evaluate("""() => { const list = document.getElementById('items');
        for (let i = 0; i < 500; i++) { const li = document.createElement('li'); li.textContent = 'item ' + i;
          li.className = 'n' + (i % 3); list.appendChild(li); } }""")
    slave.wait_for_replica(master, CHANGE_TIMEOUT_MS)
    assert slave.page.frame_locator("#view").locator("#items li").count() == 501

    # a style attribute, a class, a text node (attributes, characterData), and a rule added through the CSSOM
    page.evaluate("""() => { document.querySelector('h2').style.color = 'rgb(200, 0, 0)';
        document.querySelector('#items li.n1').classList.add('hot');
        document.querySelector('main p').firstChild.data = 'Text changed in place.';
        document.getElementById('theme').sheet.insertRule('#items li.n2 { font-style: italic; color: rgb(0, 128, 0) }', 1); }""")
    slave.wait_for_replica(master, CHANGE_TIMEOUT_MS)
    wait_for_styles(master, slave)
    assert "italic" in " ".join(slave.styles())

    # text typed into an input (real key events), a checkbox ticked, an option chosen
    page.type("#name", "typed by the customer")
    page.check("#subscribe")
    page.select_option("#plan", "pro")
    slave.wait_for_replica(master, CHANGE_TIMEOUT_MS)
    assert slave.page.frame_locator("#view").locator("#name").input_value() == "typed by the customer"

    # a large subtree replaced at once
    page.evaluate("""() => { const box = document.createElement('section'); box.id = 'replaced';
        for (let i = 0; i < 200; i++) box.insertAdjacentHTML('beforeend',
          '<div class="card"><h3>card ' + i + '</h3><p>some <b>bold</b> and <i>italic</i> text ' + i + '</p></div>');
        document.getElementById('items').replaceWith(box); }""")
    slave.wait_for_replica(master, CHANGE_TIMEOUT_MS)
    wait_for_styles(master, slave)

    # scroll positions: an element's and the window's
    page.evaluate("document.getElementById('scroller').scrollTop = 40; window.scrollTo(0, 300)")
    slave.page.wait_for_function("""() => { const doc = relayDemo.replay.document;
        return doc.getElementById('scroller').scrollTop === 40 && doc.defaultView.scrollY === 300; }""",
                                 timeout=CHANGE_TIMEOUT_MS)


def test_pointers_are_labelled_and_control_needs_write_mode(relay_node, new_context, artifacts):
    master, slave = admitted_pair(relay_node, new_context)
    other = open_slave(new_context(), relay_node, master.session, "agent-9")
    master.admit("agent-9")
    other.wait_for_replica(master, FIRST_PAGE_TIMEOUT_MS)
    replica = slave.page.frame_locator("#view")

    # A pointer from the slave reaches the master labelled with the agent id that presence gave the
    # relay's stamp, and the master's echo shows it to the other agent, labelled the same.
    replica.locator("h2").hover()
    master.page.locator("#stage .dot span", has_text="agent-7").wait_for()
    other.page.locator("#pointers .dot span", has_text="agent-7").wait_for()

    # Pointer mode: a click in the replica sends nothing, and a control event forced out anyway is
    # refused by the relay (the master's page does not change).
    replica.locator("#counter").click()
    slave.page.evaluate("""() => { const doc = relayDemo.replay.document;
        relayDemo.connection.send('control', {action: 'click', id: relayDemo.replay.idOf(doc.getElementById('counter'))}); }""")
    slave.page.locator("#chat-log", has_text="write-mode-required").wait_for()
    assert master.page.locator("#counter").inner_text() == "Clicked 0 times"

    # Write mode, granted by the master: the slave's click and typing reach the master's page.
    master.page.locator("#slaves li", has_text="agent-7").get_by_role("button", name="grant write mode").click()
    slave.page.locator("#mode", has_text="write").wait_for()
    replica.locator("#counter").click()
    master.page.locator("#counter", has_text="Clicked 1 times").wait_for()
    slave.wait_for_replica(master, CHANGE_TIMEOUT_MS)
    replica.locator("#notes").type("typed by the agent")
    master.page.wait_for_function("document.getElementById('notes').value === 'typed by the agent'")
    replica.locator("#subscribe").click()
    master.page.wait_for_function("document.getElementById('subscribe').checked")
    other.wait_for_replica(master, CHANGE_TIMEOUT_MS)

    # The artifacts: master and slave side by side, at full size and small (README's picture).
    replica.locator("h2").hover()
    master.page.locator("#stage .dot span", has_text="agent-7").wait_for()
    save_side_by_side(new_context(), master.page, slave.page, artifacts / "demo-side-by-side.png")
    save_side_by_side(new_context(), master.page, slave.page, artifacts / "demo-side-by-side-small.png", scale=0.45)
    assert (artifacts / "demo-side-by-side.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Nothing in the private panel can be reached by id, even in write mode.
    master.page.evaluate("""() => { const button = document.querySelector('#slaves button');
        window.privateId = relayDemo.capture.idOf(button); }""")
    assert master.page.evaluate("window.privateId === undefined || relayDemo.capture.nodeOf(window.privateId) === null")


def test_a_late_joiner_gets_a_5_mib_page(relay_node, new_context, record_property):
    master = open_master(new_context(), relay_node)
    sizes = master.page.evaluate("""(bytes) => {
        const connection = relayDemo.connection, send = connection.send.bind(connection);
        window.snapshotBytes = [];
        connection.send = (kind, body) => {
          if (kind === 'snapshot') window.snapshotBytes.push(RelayClient.encodeEnvelope(kind, body).length);
          return send(kind, body); };
        const big = document.createElement('section'); big.id = 'big';
        const line = 'x'.repeat(200);
        for (let i = 0; i * 230 < bytes; i++) {
          const p = document.createElement('p'); p.className = 'l' + (i % 7); p.textContent = i + ' ' + line; big.appendChild(p); }
        document.getElementById('app').appendChild(big);
        relayDemo.capture.snapshot();
        return window.snapshotBytes; }""", BIG_PAGE_BYTES)
    assert sizes[-1] >= BIG_PAGE_BYTES, sizes

    started = time.monotonic()
    slave = open_slave(new_context(), relay_node, master.session, "late-agent")
    master.admit("late-agent")
    slave.wait_for_replica(master, BIG_PAGE_TIMEOUT_MS)
    elapsed = time.monotonic() - started
    record_property("late_join_5mib_s", round(elapsed, 2))
    print(f"late joiner: a {sizes[-1] / 2**20:.1f} MiB snapshot shown {elapsed:.2f} s after joining")


def test_the_slave_resumes_after_going_offline_and_the_master_reload_keeps_the_session(start_node, new_context):
    # A long-poll GET already on its way is not cut by the emulated network loss: the next one fails.
    # A short poll wait makes the next one come soon.
    node = start_node(poll_wait_s=OFFLINE_POLL_WAIT_S)
    customer = new_context()
    agent = new_context()
    master = open_master(customer, node)
    slave = open_slave(agent, node, master.session, "agent-7", "lp")
    master.admit("agent-7")
    slave.wait_for_replica(master, FIRST_PAGE_TIMEOUT_MS)
    slave.page.evaluate("""() => { window.notReloaded = true; window.states = [];
        relayDemo.connection.on('state', (state) => window.states.push(state)); }""")

    agent.set_offline(True)
    slave.page.wait_for_function("window.states.includes('reconnecting')")
    master.page.evaluate("""() => { for (let i = 0; i < 50; i++)
        document.getElementById('items').insertAdjacentHTML('beforeend', '<li>while away ' + i + '</li>'); }""")
    agent.set_offline(False)
    slave.page.wait_for_function("relayDemo.connection.state === 'open'", timeout=15_000)
    slave.wait_for_replica(master, FIRST_PAGE_TIMEOUT_MS)
    assert slave.page.evaluate("window.notReloaded === true")

    # The master reloads its page: same session (its token kept in sessionStorage, the relay's grace
    # time), a fresh snapshot, and the slave was never closed.
    master.page.reload()
    master.page.wait_for_function("relayDemo.connection && relayDemo.connection.state === 'open'")
    assert master.page.evaluate("relayDemo.connection.session") == master.session
    master.page.evaluate("document.getElementById('items').insertAdjacentHTML('beforeend', '<li>after the reload</li>')")
    slave.wait_for_replica(master, FIRST_PAGE_TIMEOUT_MS)
    assert slave.page.evaluate("window.notReloaded === true && !window.states.includes('closed')")
