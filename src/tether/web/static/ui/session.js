// One session: streamed events, a composer, and approvals.
//   pty sessions    the terminal text in a <pre>; the composer types a line (Enter appended)
//   agent sessions  cards for the prompt, agent text, commands, file changes and approval requests
//                   (Approve / Deny call sessions.approve); the composer sends the next prompt
import { errorText, h, replace } from "./dom.js";
import { header, stateNote } from "./header.js";
import { toPlainText } from "./terminal.js";
import { SessionFeed } from "../model.js";

function card(item) {
  switch (item.kind) {
    case "user_message":
      return h("div.card.user", h("p", item.text));
    case "agent_message":
    case "reasoning":
      return h(`div.card.${item.kind === "reasoning" ? "reasoning" : "agent"}`, h("p", item.text || "…"));
    case "command":
      return h(
        "div.card.command",
        h("code", `$ ${item.command || ""}`),
        item.output ? h("pre", item.output) : null,
        item.exit_code !== undefined && item.exit_code !== null ? h("small", `exit ${item.exit_code}`) : null,
      );
    case "file_change":
      return h("div.card.file", h("strong", item.path || "file"), item.diff ? h("pre.diff", item.diff) : null);
    case "error":
      return h("div.card.error", h("p", item.message || item.text || "error"));
    default:
      return h("div.card", h("p", item.text || item.kind));
  }
}

function approvalCard(ap, feed, onError) {
  const details = ap.details || {};
  const what = ap.kind === "command" ? h("code", `$ ${details.command || ""}`) : h("strong", details.path || "");
  const answer = (decision) => async (ev) => {
    for (const b of ev.target.parentElement.querySelectorAll("button")) b.disabled = true;
    try {
      await feed.approve(ap.approval, decision);
    } catch (err) {
      onError(err);
      for (const b of ev.target.parentElement.querySelectorAll("button")) b.disabled = false;
    }
  };
  return h(
    "div.card.approval",
    { dataset: { approval: ap.approval, resolved: ap.resolved || "" } },
    h("p", ap.kind === "command" ? "Run this command?" : "Apply this change?"),
    what,
    details.diff ? h("pre.diff", details.diff) : null,
    ap.resolved
      ? h("p.resolved", ap.resolved === "cleared" ? `No longer needed${ap.reason ? `: ${ap.reason}` : ""}` : `${ap.resolved} by ${ap.by?.name || ap.by?.id || "someone"}`)
      : h(
          "div.actions",
          h("button.primary", { onclick: answer("approve") }, "Approve"),
          (ap.options || []).includes("approve_for_session") ? h("button", { onclick: answer("approve_for_session") }, "Always") : null,
          h("button.danger", { onclick: answer("deny") }, "Deny"),
        ),
  );
}

export function renderSession(root, { tether, hostId, sessionId }) {
  const conn = tether.connection(hostId);
  if (!conn) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  const feed = new SessionFeed(conn, sessionId);
  const bar = h("div");
  const meta = h("p.meta", { id: "session-status" });
  const error = h("p.error", { role: "alert", id: "session-error" });
  const pre = h("pre.terminal", { id: "output", "aria-live": "polite" });
  const cards = h("div.cards", { id: "cards" });
  const input = h("textarea", { id: "composer", rows: "1", placeholder: "Type a command or a message", autocomplete: "off", autocapitalize: "off", spellcheck: false });
  const send = h("button.primary", { id: "send", type: "submit" }, "Send");
  const ctrlC = h("button", { id: "interrupt", type: "button", onclick: () => feed.interrupt().catch(showError) }, "Ctrl-C");
  function showError(err) {
    error.textContent = errorText(err);
  }
  const isPty = () => (feed.session?.agent || "pty") === "pty";

  const composer = h(
    "form.composer",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const text = input.value;
        if (!text && !isPty()) return;
        send.disabled = true;
        error.textContent = "";
        try {
          // A terminal line ends with Enter, as a keyboard would send it.
          await feed.send(isPty() ? `${text}\r` : text);
          input.value = "";
        } catch (err) {
          showError(err);
        } finally {
          send.disabled = false;
          input.focus();
        }
      },
    },
    input,
    send,
    ctrlC,
  );
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      composer.requestSubmit();
    }
  });

  let lastOutput = -1;
  function draw() {
    const s = feed.session || {};
    replace(
      bar,
      header({ title: s.title || sessionId, back: `#/host/${hostId}`, state: conn.state, detail: conn.detail }),
      stateNote(conn.state, conn.detail),
    );
    meta.textContent = [s.agent, s.status, s.exit_reason].filter(Boolean).join(" · ");
    meta.dataset.status = s.status || "";
    if (isPty()) {
      cards.hidden = true;
      pre.hidden = false;
      if (feed.output.length !== lastOutput || feed.output.length === 0) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        pre.textContent = toPlainText(feed.output);
        lastOutput = feed.output.length;
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
    } else {
      pre.hidden = true;
      cards.hidden = false;
      const children = [];
      for (const key of feed.order) {
        if (key.startsWith("approval:")) children.push(approvalCard(feed.approvals.get(key.slice(9)), feed, showError));
        else if (!feed.items.get(key)?.hidden) children.push(card(feed.items.get(key)));
      }
      cards.replaceChildren(...children);
      window.scrollTo(0, document.body.scrollHeight);
    }
    const ended = s.status === "finished" || s.status === "failed";
    input.disabled = send.disabled = ctrlC.disabled = ended;
    ctrlC.hidden = !isPty() && s.status !== "running";
  }

  root.replaceChildren(bar, h("section.screen.session-screen", { id: "session" }, meta, pre, cards, error), composer);
  const onChange = (ev) => {
    if (ev.detail?.kind === "error") showError(ev.detail.error);
    draw();
  };
  feed.addEventListener("change", onChange);
  conn.addEventListener("state", onChange);
  feed.start();
  draw();
  return () => {
    feed.stop();
    feed.removeEventListener("change", onChange);
    conn.removeEventListener("state", onChange);
  };
}
