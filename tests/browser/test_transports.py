"""The seed's validation procedure in a real browser, on every transport pairing.

The master page starts a session (its gcbSessionServer cookie is the node's name), the slave page
joins by session ID (same cookie), the master page shows the join request and the person admits;
a refused agent sees nothing.  WebSocket on both sides, long-polling on both (disableWebSockets,
the path that failed in browsers with "Illegal invocation"), and each mixed pairing.
"""

from __future__ import annotations

import pytest

from demo_pages import TRANSPORTS, cookie, open_master, open_slave
from conftest import NODE_NAME

REPLICA_TIMEOUT_MS = 5_000


@pytest.mark.parametrize("master_transport, slave_transport", [("ws", "ws"), ("lp", "lp"), ("ws", "lp"), ("lp", "ws")])
def test_admission_and_first_page_on_every_transport(relay_node, new_context, master_transport, slave_transport):
    customer, agent, stranger = new_context(), new_context(), new_context()
    master = open_master(customer, relay_node, master_transport)
    assert master.transport() == TRANSPORTS[master_transport]
    assert cookie(customer) == NODE_NAME

    slave = open_slave(agent, relay_node, master.session, "agent-7", slave_transport)
    assert cookie(agent) == NODE_NAME
    assert slave.transport() == TRANSPORTS[slave_transport]
    slave.page.wait_for_function("document.getElementById('state').textContent.includes('waiting for the customer')")
    assert slave.page.evaluate("relayDemo.received") == {"snapshot": 0, "mutation": 0, "css": 0}

    master.admit("agent-7")
    slave.wait_for_replica(master, REPLICA_TIMEOUT_MS)
    assert slave.page.frame_locator("#view").locator("h2").inner_text() == "Demo page"

    # A second agent whom the customer refuses: closed with 4403, and it never saw anything.
    refused = open_slave(stranger, relay_node, master.session, "stranger", slave_transport)
    master.admit("stranger", allow=False)
    refused.page.wait_for_function("document.getElementById('state').textContent === 'the customer did not let you in'")
    master.page.evaluate("document.getElementById('items').insertAdjacentHTML('beforeend', '<li>after the refusal</li>')")
    slave.wait_for_replica(master, REPLICA_TIMEOUT_MS)
    assert refused.page.evaluate("relayDemo.received") == {"snapshot": 0, "mutation": 0, "css": 0}
    assert refused.page.evaluate("relayDemo.connection.state") == "closed"
    assert "waiting for the page" in refused.page.frame_locator("#view").locator("body").inner_text()
    assert slave.transport() == TRANSPORTS[slave_transport] and master.transport() == TRANSPORTS[master_transport]
