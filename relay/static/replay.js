/* The demo's replay: rebuilds the master's document from capture.js's snapshot and keeps it
 * current with its 'mutation' and 'css' messages, inside a frame of the slave page.  The frame
 * is sandboxed without scripts: nothing of the master's page can run there.
 *
 *   const replay = RelayReplay.start({frame: iframeElement});
 *   replay.snapshot(body); replay.mutation(body); replay.css(body);
 *   replay.idOf(node)   // the master's id of a replica node (for pointer and control events)
 */
(function (root) {
  'use strict';

  const XHTML = 'http://www.w3.org/1999/xhtml';

  function start(options) {
    const frame = options.frame;
    let doc = null;
    const nodes = new Map(); // the master's id -> replica node
    let ids = new WeakMap(); // replica node -> the master's id
    let viewport = null;
    // Values this agent typed (write mode) that the master has not echoed yet: older echoes of the
    // master's page are on their way and must not undo the keys typed since.
    let typed = new WeakMap();
    let pendingScroll = null;

    function remember(id, node) {
      nodes.set(id, node);
      ids.set(node, id);
      return node;
    }

    function forget(node) {
      const id = ids.get(node);
      if (id !== undefined && nodes.get(id) === node) nodes.delete(id);
      ids.delete(node);
      for (let child = node.firstChild; child; child = child.nextSibling) forget(child);
    }

    /** A replica node (and subtree) from its serialized form; sheets and values come after. */
    function build(data, later) {
      if ('t' in data) return remember(data.i, doc.createTextNode(data.t));
      if ('m' in data) return remember(data.i, doc.createComment(data.m));
      if ('d' in data) return remember(data.i, doc.implementation.createDocumentType(data.d, '', ''));
      const element = data.ns ? doc.createElementNS(data.ns, data.n) : doc.createElementNS(XHTML, data.n);
      for (const name of Object.keys(data.a || {})) {
        try {
          element.setAttribute(name, data.a[name]);
        } catch (error) {
          // a name the parser accepted but setAttribute refuses: left out of the replica
        }
      }
      for (const child of data.c || []) element.appendChild(build(child, later));
      if ('v' in data || 'r' in data || 's' in data) later.push([element, data]);
      return remember(data.i, element);
    }

    /** Form values, CSSOM rules and scroll positions need the element in the document. */
    function finish(later) {
      for (const [element, data] of later) {
        if ('v' in data && element.value !== data.v) element.value = data.v;
        if ('k' in data) element.checked = data.k;
        if ('r' in data && data.r && element.sheet) setRules(element.sheet, data.r);
        if ('s' in data) { element.scrollLeft = data.s[0]; element.scrollTop = data.s[1]; }
      }
    }

    function setRules(sheet, rules) {
      while (sheet.cssRules.length) sheet.deleteRule(sheet.cssRules.length - 1);
      for (const rule of rules) {
        try { sheet.insertRule(rule, sheet.cssRules.length); } catch (error) { /* a rule this browser refuses */ }
      }
    }

    function setViewport(size) {
      viewport = size;
      if (options.onViewport) options.onViewport(size[0], size[1]);
    }

    function snapshot(body) {
      doc = frame.contentDocument;
      nodes.clear();
      ids = new WeakMap();
      typed = new WeakMap();
      const later = [];
      const children = body.doc.c.map((child) => build(child, later));
      remember(body.doc.i, doc);
      // (Document.replaceChildren would check a doctype against the old root and refuse it.)
      while (doc.firstChild) doc.removeChild(doc.firstChild);
      for (const child of children) doc.appendChild(child);
      finish(later);
      if (Array.isArray(body.viewport)) setViewport(body.viewport);
      pendingScroll = body.scroll;
      scrollWindow();
    }

    function scrollWindow() {
      if (!pendingScroll || !doc) return;
      doc.defaultView.scrollTo(pendingScroll[0], pendingScroll[1]);
      pendingScroll = null;
    }

    /** A parent's child list becomes exactly the master's: known nodes move, new ones are built. */
    function setChildren(parent, entries, later, dropped) {
      const wanted = entries.map((entry) => (typeof entry === 'number' ? nodes.get(entry) : build(entry, later)));
      if (wanted.some((node) => !node)) throw new Error('a child the replica does not know: resync needed');
      const keep = new Set(wanted);
      for (const child of Array.from(parent.childNodes)) {
        if (!keep.has(child)) { parent.removeChild(child); dropped.push(child); }
      }
      wanted.forEach((node, index) => {
        if (parent.childNodes[index] !== node) parent.insertBefore(node, parent.childNodes[index] || null);
      });
    }

    function mutation(ops) {
      if (!doc) return;
      const later = [];
      const dropped = [];
      for (const op of ops) {
        const node = nodes.get(op[1]);
        switch (op[0]) {
          case 'children': if (node) setChildren(node, op[2], later, dropped); break;
          case 'attr':
            if (!node) break;
            try {
              if (op[3] === null) node.removeAttribute(op[2]); else node.setAttribute(op[2], op[3]);
            } catch (error) { /* see build */ }
            break;
          case 'text': if (node) node.data = op[2]; break;
          case 'value':
            if (!node) break;
            if (typed.has(node)) {
              if (typed.get(node) === op[2]) typed.delete(node); // the echo of the latest keys
              break;
            }
            if (node.value !== op[2]) node.value = op[2];
            if (node.type === 'checkbox' || node.type === 'radio') node.checked = op[3];
            break;
          case 'scroll':
            if (node === doc) doc.defaultView.scrollTo(op[2], op[3]);
            else if (node) { node.scrollLeft = op[2]; node.scrollTop = op[3]; }
            break;
          case 'viewport': setViewport([op[1], op[2]]); break;
          default: break; // an operation of a newer capture: ignored
        }
      }
      // What left the document for good is forgotten, as the master forgot it.
      for (const node of dropped) if (!node.isConnected) forget(node);
      finish(later);
    }

    function css(body) {
      const node = body && nodes.get(body.id);
      if (node && node.sheet && Array.isArray(body.rules)) setRules(node.sheet, body.rules);
    }

    return {
      snapshot: snapshot,
      mutation: mutation,
      css: css,
      idOf: (node) => ids.get(node),
      /** This agent typed value into node (and sent it): ignore the master's values until it echoes it. */
      typed: (node, value) => typed.set(node, value),
      get document() { return doc; },
      get viewport() { return viewport; },
    };
  }

  root.RelayReplay = {start: start};
})(window);
