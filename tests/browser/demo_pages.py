"""Driving the demo pages (relay/static/master.html and slave.html) in a real browser.

Every wait is on a condition in the page (``wait_for_function``), bounded by the context's default
timeout or an explicit one: never a sleep.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSPORTS = {"ws": "websocket", "lp": "long-polling"}
COOKIE = "gcbSessionServer"

# A canonical serialization of a document, the same function in the master's page and in the
# slave's replica: elements with their attributes sorted and their form values, text, comments.
# Scripts are compared without their source (the replica never runs them, so it is not sent), and
# the private panel without its inside (it is never shared).
CANONICAL_JS = r"""
(doc) => {
  const out = [];
  const walk = (node) => {
    switch (node.nodeType) {
      case 3: out.push(JSON.stringify(node.data)); return;
      case 8: out.push('<!--' + node.data + '-->'); return;
      case 10: out.push('<!doctype ' + node.name + '>'); return;
      case 9: node.childNodes.forEach(walk); return;
      case 1: break;
      default: return;
    }
    const attributes = Array.from(node.attributes, (a) => a.name + '=' + JSON.stringify(a.value)).sort();
    if (/^(input|textarea|select)$/.test(node.localName)) {
      attributes.push('.value=' + JSON.stringify(node.value));
      if (node.type === 'checkbox' || node.type === 'radio') attributes.push('.checked=' + node.checked);
    }
    out.push('<' + node.localName + (attributes.length ? ' ' + attributes.join(' ') : '') + '>');
    if (node.localName !== 'script' && !node.hasAttribute('data-relay-private')) node.childNodes.forEach(walk);
    out.push('</' + node.localName + '>');
  };
  walk(doc);
  return out.join('');
}
"""

# What the replica's styles must agree on, element by element (layout-independent properties).
STYLES_JS = r"""
(doc) => {
  const names = ['color', 'background-color', 'font-size', 'font-weight', 'font-style', 'display',
                 'text-decoration-line', 'border-top-color', 'visibility'];
  const out = [];
  const walk = (element) => {
    if (element.hasAttribute('data-relay-private')) return;
    const style = doc.defaultView.getComputedStyle(element);
    out.push(element.localName + ' ' + names.map((name) => style.getPropertyValue(name)).join('|'));
    for (const child of element.children) walk(child);
  };
  walk(doc.body);
  return out;
}
"""

REPLICA = "relayDemo.replay && relayDemo.replay.document"


@dataclass
class Master:
    page: object
    session: str

    def canonical(self) -> str:
        return self.page.evaluate(f"({CANONICAL_JS})(document)")

    def styles(self) -> list:
        return self.page.evaluate(f"({STYLES_JS})(document)")

    def admit(self, agent: str, allow: bool = True) -> None:
        item = self.page.locator("#requests li", has_text=f"{agent} asks to see this page")
        item.get_by_role("button", name="Admit" if allow else "Refuse").click()

    def transport(self) -> str:
        return self.page.evaluate("relayDemo.connection.transport")


@dataclass
class Slave:
    page: object
    agent: str

    def canonical(self) -> str:
        return self.page.evaluate(f"({CANONICAL_JS})({REPLICA})")

    def styles(self) -> list:
        return self.page.evaluate(f"({STYLES_JS})({REPLICA})")

    def wait_for_replica(self, master: Master, timeout_ms: float) -> None:
        """Until the replica's canonical DOM is the master's, now."""
        expected = master.canonical()
        self.page.wait_for_function(f"(expected) => {REPLICA} && ({CANONICAL_JS})({REPLICA}) === expected",
                                    arg=expected, timeout=timeout_ms, polling="raf")

    def transport(self) -> str:
        return self.page.evaluate("relayDemo.connection.transport")

    def state(self) -> str:
        return self.page.locator("#state").inner_text()


def query(transport: str) -> str:
    return "?transport=long-polling" if transport == "lp" else ""


def open_master(context, node, transport: str = "ws") -> Master:
    page = context.new_page()
    page.goto(f"{node.base}/cobrowse/master.html{query(transport)}")
    page.wait_for_function("relayDemo.connection && relayDemo.connection.state === 'open'")
    return Master(page, page.evaluate("relayDemo.connection.session"))


def open_slave(context, node, session: str, agent: str, transport: str = "ws") -> Slave:
    """The slave page, joining by session ID typed into its form (as an agent would)."""
    page = context.new_page()
    page.goto(f"{node.base}/cobrowse/slave.html{query(transport)}")
    page.fill("#session", session)
    page.fill("#agent", agent)
    page.click("#join-form button")
    page.wait_for_function("relayDemo.connection && relayDemo.connection.state === 'open'")
    return Slave(page, agent)


def cookie(context, name: str = COOKIE):
    values = [item["value"] for item in context.cookies() if item["name"] == name]
    return values[0] if len(values) == 1 else values


SIDE_BY_SIDE_HTML = """<!doctype html><body style="margin:0;display:flex;gap:8px;background:#888;width:max-content">
<figure style="margin:0"><img id="a"><figcaption style="font:14px system-ui;color:#fff;padding:2px 6px">master</figcaption></figure>
<figure style="margin:0"><img id="b"><figcaption style="font:14px system-ui;color:#fff;padding:2px 6px">slave</figcaption></figure>
</body>"""


def save_side_by_side(context, left_page, right_page, path, scale: float = 1.0) -> None:
    """Screenshots of two pages put side by side (composed by the browser itself) in one PNG."""
    import base64

    shots = [base64.b64encode(page.screenshot()).decode() for page in (left_page, right_page)]
    page = context.new_page()
    try:
        page.set_content(SIDE_BY_SIDE_HTML)
        page.evaluate("""([a, b, scale]) => Promise.all([['a', a], ['b', b]].map(([id, data]) => new Promise((done) => {
            const img = document.getElementById(id);
            img.onload = () => { img.width = img.naturalWidth * scale; done(); };
            img.src = 'data:image/png;base64,' + data; })))""", [shots[0], shots[1], scale])
        page.locator("body").screenshot(path=str(path))
    finally:
        page.close()
