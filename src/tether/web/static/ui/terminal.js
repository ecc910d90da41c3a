// The terminal of a pty session: xterm.js (vendored, vendor/) draws it; this module feeds it the
// session's output, turns a phone's keyboard into terminal input, and keeps the pty's size in
// step with the screen (sessions.resize).
//
// Input does not go through xterm's own textarea: phone keyboards send keydown 229 and
// composition events that xterm 5 handles poorly. A textarea of ours (invisible, over nothing)
// takes the keyboard: composed text is sent when the composition ends, typed text as it is
// inserted, and keys a phone lacks (Esc, Tab, Ctrl, arrows) are buttons that keep the focus.
import { h } from "./dom.js";
import { scrollbackLines } from "../prefs.js";

const VENDOR = ["vendor/xterm.js", "vendor/addon-fit.js"];
let loading = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(el);
  });
}

// The UMD builds define window.Terminal and window.FitAddon, in order.
export function loadXterm() {
  loading ||= VENDOR.reduce((p, src) => p.then(() => loadScript(src)), Promise.resolve()).catch((err) => {
    loading = null;
    throw err;
  });
  return loading;
}

const DARK = { background: "#0a0c0f", foreground: "#e6e9ee", cursor: "#6ee7b7", selectionBackground: "#2f4f45" };
const LIGHT = {
  background: "#fbfbfd", foreground: "#1b1f24", cursor: "#0f766e", selectionBackground: "#b9e4d8",
  black: "#1b1f24", red: "#b42318", green: "#067647", yellow: "#8a6100", blue: "#1d4ed8", magenta: "#9333ea",
  cyan: "#0e7490", white: "#6b7280", brightBlack: "#4b5563", brightWhite: "#111827",
};
const darkQuery = window.matchMedia("(prefers-color-scheme: dark)");

// Keys → bytes, as xterm would send them (application cursor mode for full-screen programs).
function keySequence(key, term, { ctrl = false, alt = false, shift = false } = {}) {
  const app = term.modes?.applicationCursorKeysMode;
  const arrows = { ArrowUp: "A", ArrowDown: "B", ArrowRight: "C", ArrowLeft: "D" };
  let seq = null;
  if (key in arrows) seq = (app ? "\x1bO" : "\x1b[") + arrows[key];
  else if (key === "Enter") seq = "\r";
  else if (key === "Backspace") seq = ctrl ? "\x08" : "\x7f";
  else if (key === "Tab") seq = shift ? "\x1b[Z" : "\t";
  else if (key === "Escape") seq = "\x1b";
  else if (key === "Delete") seq = "\x1b[3~";
  else if (key === "Home") seq = app ? "\x1bOH" : "\x1b[H";
  else if (key === "End") seq = app ? "\x1bOF" : "\x1b[F";
  else if (key === "PageUp") seq = "\x1b[5~";
  else if (key === "PageDown") seq = "\x1b[6~";
  else if (key.length === 1 && ctrl) {
    const c = key.toLowerCase();
    if (c >= "a" && c <= "z") seq = String.fromCharCode(c.charCodeAt(0) - 96);
    else if (c === " " || c === "@" || c === "2") seq = "\x00";
    else if (c === "[") seq = "\x1b";
    else if (c === "\\") seq = "\x1c";
    else if (c === "]") seq = "\x1d";
    else if (c === "/") seq = "\x1f";
  } else if (key.length === 1 && alt) seq = "\x1b" + key;
  return seq;
}

// Mounts a terminal for `feed` into a new element and returns {el, dispose}.
export function terminalView(feed, { onError }) {
  const screen = h("div.term-screen", { id: "terminal", role: "region", "aria-label": "Terminal output" });
  const input = h("textarea.term-input", {
    id: "term-input",
    "aria-label": "Terminal keyboard input",
    autocomplete: "off",
    autocapitalize: "off",
    autocorrect: "off",
    spellcheck: false,
    enterkeyhint: "send",
    rows: "1",
  });
  let ctrlLatched = false;
  const ctrlButton = h("button.key", { type: "button", "aria-pressed": "false", dataset: { key: "Ctrl" } }, "Ctrl");
  const keys = [
    ["Esc", "Escape"], ["Tab", "Tab"], ["Ctrl"], ["↑", "ArrowUp", "Up"], ["↓", "ArrowDown", "Down"],
    ["←", "ArrowLeft", "Left"], ["→", "ArrowRight", "Right"], ["^C", "c", "Ctrl-C"], ["^D", "d", "Ctrl-D"],
  ].map(([label, key, name]) => {
    if (label === "Ctrl") return ctrlButton;
    return h("button.key", { type: "button", dataset: { key: name || key }, "aria-label": name || label }, label);
  });
  const keybar = h("div.keybar", { role: "toolbar", "aria-label": "Terminal keys" }, keys);
  const status = h("p.term-status", { id: "term-status", role: "status" });
  const el = h("div.term", screen, input, keybar, status);

  let term = null;
  let fit = null;
  let disposed = false;
  let sentSize = null;
  let resizeTimer = null;
  // Keys typed while the host cannot be reached are not queued for later (a command typed into a
  // terminal must run now or not at all): they are refused, and the terminal says so.
  const offline = h("p.term-offline", { id: "term-offline", role: "alert", hidden: true });
  el.insertBefore(offline, keybar);
  const send = (data) => {
    if (!data) return;
    if (feed.conn.state !== "connected") {
      offline.hidden = false;
      offline.textContent = "Not connected: what you type is not sent. Type again once the host is back.";
      el.dataset.offline = "1";
      return;
    }
    feed.type(data);
  };

  function setCtrl(on) {
    ctrlLatched = on;
    ctrlButton.setAttribute("aria-pressed", on ? "true" : "false");
    ctrlButton.classList.toggle("on", on);
  }

  // Typed text: a latched Ctrl applies to its first character.
  function sendText(text) {
    if (!text) return;
    if (ctrlLatched) {
      const first = keySequence(text[0], term, { ctrl: true }) ?? text[0];
      setCtrl(false);
      text = first + text.slice(1);
    }
    send(text.replace(/\r?\n/g, "\r"));
  }

  let composing = false;
  input.addEventListener("compositionstart", () => (composing = true));
  input.addEventListener("compositionend", (ev) => {
    composing = false;
    sendText(ev.data || "");
    input.value = "";
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.isComposing || ev.keyCode === 229) return; // the keyboard is composing: wait for its text
    const ctrl = ev.ctrlKey || (ctrlLatched && ev.key.length === 1);
    const seq = keySequence(ev.key, term, { ctrl, alt: ev.altKey, shift: ev.shiftKey });
    if (seq === null || ev.metaKey) return; // plain text arrives as an input event
    ev.preventDefault();
    if (ctrlLatched) setCtrl(false);
    send(seq);
  });
  input.addEventListener("input", (ev) => {
    if (composing || ev.isComposing) return;
    switch (ev.inputType) {
      case "insertText":
      case "insertReplacementText":
        sendText(ev.data ?? input.value);
        break;
      case "insertLineBreak":
      case "insertParagraph":
        send("\r");
        break;
      case "deleteContentBackward":
        send("\x7f"); // phone keyboards report Backspace only this way
        break;
      case "insertFromPaste":
        break; // handled by the paste event, which has the whole text
      default:
        if (input.value) sendText(input.value);
    }
    input.value = "";
  });
  input.addEventListener("paste", (ev) => {
    ev.preventDefault();
    const text = ev.clipboardData?.getData("text/plain") || "";
    const bracketed = term?.modes?.bracketedPasteMode;
    send(bracketed ? `\x1b[200~${text}\x1b[201~` : text.replace(/\r?\n/g, "\r"));
  });
  input.addEventListener("focus", () => el.classList.add("focused"));
  input.addEventListener("blur", () => el.classList.remove("focused"));

  // Buttons must not take the focus: the phone's keyboard would close.
  keybar.addEventListener("pointerdown", (ev) => ev.preventDefault());
  keybar.addEventListener("mousedown", (ev) => ev.preventDefault());
  keybar.addEventListener("click", (ev) => {
    const button = ev.target.closest("button.key");
    if (!button) return;
    const key = button.dataset.key;
    if (key === "Ctrl") setCtrl(!ctrlLatched);
    else if (key === "Ctrl-C") {
      setCtrl(false);
      // Interrupt rather than a ^C byte: the host signals the foreground process group.
      feed.interrupt().catch(onError);
    } else if (key === "Ctrl-D") send("\x04");
    else {
      const seq = keySequence(key === "Up" ? "ArrowUp" : key === "Down" ? "ArrowDown" : key === "Left" ? "ArrowLeft" : key === "Right" ? "ArrowRight" : key, term, { ctrl: ctrlLatched });
      setCtrl(false);
      send(seq);
    }
    input.focus({ preventScroll: true });
  });
  screen.addEventListener("click", () => input.focus({ preventScroll: true }));

  // The pty follows this screen's size; sent once it settles, and only when it changed.
  function refit() {
    if (!term || !fit || disposed || !screen.isConnected) return;
    const dims = fit.proposeDimensions();
    if (!dims || !dims.cols || !dims.rows) return;
    const cols = Math.max(20, Math.min(dims.cols, 1000));
    const rows = Math.max(5, Math.min(dims.rows, 1000));
    if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      const s = feed.session || {};
      const ended = s.status === "finished" || s.status === "failed";
      const key = `${cols}x${rows}`;
      if (ended || sentSize === key || feed.conn.state !== "connected") return;
      if (s.cols === cols && s.rows === rows) return void (sentSize = key);
      sentSize = key;
      feed.resize(cols, rows).catch((err) => {
        sentSize = null;
        onError(err);
      });
    }, 250);
  }
  const observer = new ResizeObserver(() => refit());
  const onTheme = () => term && (term.options.theme = darkQuery.matches ? DARK : LIGHT);

  const onFeed = (ev) => {
    if (!term) return;
    const kind = ev.detail?.kind;
    if (kind === "output") term.write(ev.detail.data);
    else if (kind === "reset") {
      term.reset();
      term.write(feed.output);
    } else if (kind === "session") refit();
  };
  const onConn = (ev) => {
    const connected = ev.detail.state === "connected";
    el.dataset.offline = connected ? "0" : "1";
    if (connected) {
      offline.hidden = true;
      sentSize = null; // another client may have resized it meanwhile
      refit();
    } else {
      offline.hidden = false;
      offline.textContent = "Not connected: keys are not sent until the host is back.";
    }
  };

  loadXterm()
    .then(() => {
      if (disposed) return;
      term = new window.Terminal({
        fontFamily: 'ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace',
        fontSize: window.innerWidth < 500 ? 12 : 14,
        scrollback: scrollbackLines(), // Settings: "Lines a terminal keeps"
        disableStdin: true, // our textarea is the keyboard
        convertEol: false,
        cursorBlink: false,
        allowProposedApi: false,
        theme: darkQuery.matches ? DARK : LIGHT,
      });
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      // xterm's DOM renderer sizes its rows with <style> elements: the CSP allows inline
      // styles for that (never inline script). Its canvas addon was tried and draws at the
      // wrong scale on high-density screens (docs/web.md).
      term.open(screen);
      const helper = screen.querySelector(".xterm-helper-textarea");
      if (helper) helper.tabIndex = -1;
      term.write(feed.output);
      screen.dataset.ready = "1";
      // For tests and debugging: the terminal's text, one string per line.
      screen.tetherLines = () => {
        const buf = term.buffer.active;
        const lines = [];
        for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? "");
        return lines;
      };
      screen.tetherSize = () => ({ cols: term.cols, rows: term.rows });
      screen.dataset.scrollback = String(term.options.scrollback);
      observer.observe(screen);
      darkQuery.addEventListener("change", onTheme);
      refit();
    })
    .catch((err) => {
      status.textContent = `The terminal could not be loaded: ${err.message}`;
    });

  feed.addEventListener("change", onFeed);
  feed.conn.addEventListener("state", onConn);

  function setEnded(ended) {
    input.disabled = ended;
    for (const b of keys) b.disabled = ended;
  }

  return {
    el,
    focus: () => input.focus({ preventScroll: true }),
    setEnded,
    dispose() {
      disposed = true;
      clearTimeout(resizeTimer);
      observer.disconnect();
      darkQuery.removeEventListener("change", onTheme);
      feed.removeEventListener("change", onFeed);
      feed.conn.removeEventListener("state", onConn);
      if (term) term.dispose();
    },
  };
}
