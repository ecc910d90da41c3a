// A tiny DOM helper: h("div.card", {onclick}, child, "text", [more children]). No framework, no build.
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) {
      el.addEventListener(key.slice(2), value);
      el.listens = true; // morph never gives such a node another's content: its listener may not fit
    }
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

// Text whose `quoted` parts are commands: shown as code, never as literal backticks.
export function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? h("code", part) : part));
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function timeAgo(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}

// Error → "message" plus the hint the protocol gave, if any.
export function errorText(err) {
  if (!err) return "";
  return err.hint ? `${err.message} — ${err.hint}` : err.message || String(err);
}

// el.replaceChildren that skips null/false children (screens pass optional parts).
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Like replace, for a screen that redraws itself on every change (presence, approvals, a clock
// tick): each node is kept and brought up to date (attributes, then children) where the new one
// is the same kind of element, so the node under a finger stays put (a tap whose press and release
// straddle a redraw is otherwise lost: they land on different nodes) and so does a screen
// reader's focus. A node with a listener is kept only when it comes out exactly the same.
export function morph(el, ...children) {
  const fresh = document.createDocumentFragment();
  append(fresh, children);
  morphChildren(el, [...fresh.childNodes]);
  return el;
}

function morphChildren(el, next) {
  // Children with an id or an href (a list's rows) are matched by it wherever they moved (a new
  // session on top keeps every row under it); the others by position.
  const keyed = new Map();
  for (const child of el.childNodes) {
    const key = keyOf(child);
    if (key && !keyed.has(key)) keyed.set(key, child);
  }
  next.forEach((node, i) => {
    const key = keyOf(node);
    let was = el.childNodes[i] ?? null;
    const match = key ? keyed.get(key) : undefined;
    if (match) {
      keyed.delete(key);
      if (match !== was) el.insertBefore(match, was);
      was = match;
    } else if (!was || key || keyOf(was)) {
      el.insertBefore(node, was); // new, or where a row of another key stands
      return;
    }
    if (was.isEqualNode(node)) return;
    if (was.nodeType === Node.ELEMENT_NODE && was.nodeName === node.nodeName && !was.listens && !node.listens) {
      for (const { name } of [...was.attributes]) if (!node.hasAttribute(name)) was.removeAttribute(name);
      for (const { name, value } of node.attributes) if (was.getAttribute(name) !== value) was.setAttribute(name, value);
      morphChildren(was, [...node.childNodes]);
    } else was.replaceWith(node);
  });
  while (el.childNodes.length > next.length) el.lastChild.remove();
}

function keyOf(node) {
  return node.nodeType === Node.ELEMENT_NODE ? node.id || node.getAttribute("href") || null : null;
}

// "online", or when it was last seen.
export function lastSeen(ts) {
  return ts ? `last seen ${timeAgo(ts)}` : "never seen online";
}

// Whether a scrolled element (or the page) is scrolled to its end, within a few pixels.
export function atBottom(el = document.scrollingElement) {
  return el.scrollTop + el.clientHeight >= el.scrollHeight - 24;
}

// fn at most once per animation frame, however often it is asked for.
export function throttled(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}
