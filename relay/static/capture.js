/* The demo's page capture: turns the master's whole document into a snapshot, then a stream of
 * small changes, for replay.js to rebuild on the slave side.  An example for embedders, not a
 * product: relay never looks inside these bodies (rrweb or any other capture code plugs in the
 * same way, docs/demo.md).
 *
 *   const capture = RelayCapture.start({send: (kind, body) => connection.send(kind, body)});
 *   capture.snapshot();              // on a hello that is not resumed, and on every resync
 *   capture.nodeOf(id)               // the live node a slave's control event names
 *
 * Every node gets a number (the document is 1).  A snapshot is the serialized tree; then
 * 'mutation' bodies are lists of operations:
 *   ['children', parentId, [childId | serializedNode, ...]]   a parent's new child list
 *   ['attr', id, name, value | null]   ['text', id, data]   ['value', id, value, checked]
 *   ['scroll', id, x, y] (id 1: the window)   ['viewport', width, height]
 * and 'css' bodies {id, rules} carry a <style> sheet changed through the CSSOM (insertRule), which
 * no MutationObserver sees.  Elements marked data-relay-private (the demo's own panel) are sent
 * as empty placeholders, and nothing inside them is ever sent.
 */
(function (root) {
  'use strict';

  const PRIVATE_ATTRIBUTE = 'data-relay-private';
  const COALESCE_MS = 16; // scroll and input events within one frame go out as one message
  const FORM_FIELDS = {INPUT: true, TEXTAREA: true, SELECT: true};
  const XHTML = 'http://www.w3.org/1999/xhtml';

  // Sheets changed through the CSSOM since they were parsed: their rules travel with them.
  const cssomChanged = new WeakSet();
  const sheetListeners = new Set();
  let cssomPatched = false;

  function patchCssom(window) {
    if (cssomPatched) return;
    cssomPatched = true;
    const proto = window.CSSStyleSheet.prototype;
    for (const name of ['insertRule', 'deleteRule', 'replaceSync']) {
      const original = proto[name];
      if (typeof original !== 'function') continue;
      proto[name] = function () {
        const result = original.apply(this, arguments);
        cssomChanged.add(this);
        for (const listener of sheetListeners) listener(this);
        return result;
      };
    }
  }

  function rulesOf(sheet) {
    try {
      return Array.prototype.map.call(sheet.cssRules, (rule) => rule.cssText);
    } catch (error) {
      return null; // a cross-origin sheet: its rules are not readable here
    }
  }

  const nothingQueued = () => ({values: new Set(), scrolls: new Set(), viewport: false});

  function start(options) {
    const doc = options.document || root.document;
    const window = doc.defaultView;
    const send = options.send;
    let ids = new WeakMap(); // node -> id, for every node the slaves know
    const nodes = new Map(); // id -> node
    let nextId = 1;
    let queued = nothingQueued(); // nodes whose value or scroll changed: read when flushed
    let timer = null;
    let stopped = false;

    const isPrivate = (node) => node.nodeType === 1 && node.hasAttribute(PRIVATE_ATTRIBUTE);
    function insidePrivate(node) {
      for (let up = node.parentNode; up; up = up.parentNode) if (isPrivate(up)) return true;
      return false;
    }

    function remember(node) {
      const id = nextId++;
      ids.set(node, id);
      nodes.set(id, node);
      return id;
    }

    function forget(node) {
      const id = ids.get(node);
      if (id === undefined) return;
      ids.delete(node);
      nodes.delete(id);
      for (let child = node.firstChild; child; child = child.nextSibling) forget(child);
    }

    /** One node and its subtree as plain data (msgpack-ready); fresh collects the new ids. */
    function serialize(node, fresh) {
      const id = remember(node);
      if (fresh) fresh.add(node);
      switch (node.nodeType) {
        case 3: return {i: id, t: node.data};
        case 8: return {i: id, m: node.data};
        case 10: return {i: id, d: node.name};
        case 9: return {i: id, c: Array.prototype.map.call(node.childNodes, (child) => serialize(child, fresh))};
        case 1: break;
        default: return {i: id, m: ''}; // processing instructions and the like: kept as a place
      }
      const out = {i: id, n: node.localName, a: {}};
      if (node.namespaceURI !== XHTML) out.ns = node.namespaceURI;
      for (const attribute of node.attributes) out.a[attribute.name] = attribute.value;
      if (isPrivate(node)) { out.p = 1; return out; }
      // The replica runs no script: a script's source is not needed there, and may hold secrets.
      out.c = node.localName === 'script' ? []
        : Array.prototype.map.call(node.childNodes, (child) => serialize(child, fresh));
      if (FORM_FIELDS[node.tagName]) {
        out.v = node.value;
        if (node.type === 'checkbox' || node.type === 'radio') out.k = node.checked;
      }
      if (node.localName === 'style' && node.sheet && cssomChanged.has(node.sheet)) out.r = rulesOf(node.sheet);
      if (node.scrollLeft || node.scrollTop) out.s = [node.scrollLeft, node.scrollTop];
      return out;
    }

    function snapshot() {
      observer.takeRecords(); // what they say is in the snapshot
      queued = nothingQueued();
      ids = new WeakMap();
      nodes.clear();
      nextId = 1;
      const tree = serialize(doc, null);
      send('snapshot', {url: doc.location ? doc.location.href : '', viewport: [window.innerWidth, window.innerHeight],
        scroll: [window.scrollX, window.scrollY], doc: tree});
    }

    function ops(records) {
      const out = [];
      const dirty = new Set();
      const changed = new Map(); // 'attr:ID:NAME' / 'text:ID' -> op
      for (const record of records) {
        if (record.type === 'childList') {
          dirty.add(record.target);
          // Detached for good (not moved elsewhere): the slaves drop it too, so if it comes back
          // later it is sent whole with new ids.
          for (const node of record.removedNodes) if (!node.isConnected) forget(node);
        }
      }
      const fresh = new Set();
      const parents = Array.from(dirty).filter((node) => node.isConnected && ids.has(node) && !isPrivate(node) &&
        !insidePrivate(node));
      // Ancestors first: a subtree sent whole makes its own dirty descendants' lists redundant.
      parents.sort((a, b) => (a.compareDocumentPosition(b) & 4 ? -1 : 1));
      for (const parent of parents) {
        if (fresh.has(parent)) continue;
        out.push(['children', ids.get(parent), Array.prototype.map.call(parent.childNodes,
          (child) => (ids.has(child) ? ids.get(child) : serialize(child, fresh)))]);
      }
      for (const record of records) {
        const node = record.target;
        if (record.type === 'childList' || !ids.has(node) || fresh.has(node) || !node.isConnected || insidePrivate(node)) continue;
        const id = ids.get(node);
        if (record.type === 'attributes') {
          const name = record.attributeName;
          changed.set('attr:' + id + ':' + name, ['attr', id, name, node.getAttribute(name)]);
        } else if (record.type === 'characterData') {
          changed.set('text:' + id, ['text', id, node.data]);
        }
      }
      changed.forEach((op) => out.push(op));
      const shared = (node) => ids.has(node) && !fresh.has(node) && node.isConnected && !insidePrivate(node);
      for (const node of queued.values) if (shared(node)) out.push(['value', ids.get(node), node.value, !!node.checked]);
      for (const node of queued.scrolls) {
        if (node === doc) out.push(['scroll', ids.get(doc), window.scrollX, window.scrollY]);
        else if (shared(node)) out.push(['scroll', ids.get(node), node.scrollLeft, node.scrollTop]);
      }
      if (queued.viewport) out.push(['viewport', window.innerWidth, window.innerHeight]);
      queued = nothingQueued();
      return out;
    }

    function flush(records) {
      clearTimeout(timer);
      timer = null;
      if (stopped) return;
      const list = ops((records || []).concat(observer.takeRecords()));
      if (list.length) send('mutation', list);
    }

    function later() {
      if (timer === null) timer = setTimeout(flush, COALESCE_MS);
    }

    const observer = new window.MutationObserver((records) => flush(records));
    observer.observe(doc, {childList: true, subtree: true, attributes: true, characterData: true});

    const onValue = (event) => { if (FORM_FIELDS[event.target.tagName]) { queued.values.add(event.target); later(); } };
    const onScroll = (event) => {
      queued.scrolls.add(event.target === doc || event.target === window ? doc : event.target);
      later();
    };
    const onResize = () => { queued.viewport = true; later(); };
    doc.addEventListener('input', onValue, true);
    doc.addEventListener('change', onValue, true);
    doc.addEventListener('scroll', onScroll, true);
    window.addEventListener('resize', onResize);

    patchCssom(window);
    const onSheet = (sheet) => {
      const owner = sheet.ownerNode;
      if (stopped || !owner || !ids.has(owner) || insidePrivate(owner)) return;
      flush(); // the style element itself must be known first
      send('css', {id: ids.get(owner), rules: rulesOf(sheet)});
    };
    sheetListeners.add(onSheet);

    return {
      snapshot: snapshot,
      flush: flush,
      /** The live node of an id, or null; never one inside a private element (the agent may not touch it). */
      nodeOf(id) {
        const node = nodes.get(id);
        return node && node.isConnected && !isPrivate(node) && !insidePrivate(node) ? node : null;
      },
      idOf: (node) => ids.get(node),
      stop() {
        stopped = true;
        observer.disconnect();
        clearTimeout(timer);
        doc.removeEventListener('input', onValue, true);
        doc.removeEventListener('change', onValue, true);
        doc.removeEventListener('scroll', onScroll, true);
        window.removeEventListener('resize', onResize);
        sheetListeners.delete(onSheet);
      },
    };
  }

  root.RelayCapture = {start: start, PRIVATE_ATTRIBUTE: PRIVATE_ATTRIBUTE};
})(window);
