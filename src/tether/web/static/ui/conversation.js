// An agent session as a conversation: the person's prompts (with how far each got), the agent's
// streamed text, commands with their output and exit code, file changes as coloured unified
// diffs, and approval cards showing exactly what would run or change.
//
// Cards are keyed and only the changed ones are rebuilt, so streaming text does not re-render
// (or re-flow) the whole page; the view follows the end only when it was already there.
//
// An item that waits for a person (a command to run, a file to change) is shown once, by its
// approval card, which comes right before the item's own card; the item's card appears once the
// question is answered, with what came of it (output and exit code, the applied diff, "not run").
import { atBottom, errorText, h, withCode } from "./dom.js";
import { markdown } from "./markdown.js";

// A unified diff, one span per line, coloured by its first character (and still readable
// without colour: the +/- stay).
export function diffView(diff, { id = null } = {}) {
  const lines = (diff || "").replace(/\n$/, "").split("\n");
  return h(
    "pre.diff",
    { id, "aria-label": "Unified diff" },
    lines.map((line) => {
      let cls = "ctx";
      if (line.startsWith("+++") || line.startsWith("---")) cls = "file";
      else if (line.startsWith("@@")) cls = "hunk";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      else if (line.startsWith("\\")) cls = "meta";
      return h(`span.dl.${cls}`, `${line}\n`);
    }),
  );
}

const PROMPT_LABELS = {
  sending: "sending…",
  delivered: "delivered",
  applied: "applied",
  failed: "failed",
  queueing: "queueing at the relay…",
  held: (feed) => `queued at the relay · will be sent when ${feed.hostName} is back`,
  refused: (feed) => `not applied by ${feed.hostName}`,
};

function stateLabel(state, feed) {
  const label = PROMPT_LABELS[state] ?? state;
  return typeof label === "function" ? label(feed) : label;
}

function promptState(prompt, feed) {
  if (!prompt) return null;
  const bad = prompt.state === "failed" || prompt.state === "refused";
  return h(
    "span.prompt-state",
    { dataset: { state: prompt.state }, role: bad ? "alert" : null },
    prompt.state === "applied" ? "✓ " : bad ? "⚠ " : "",
    stateLabel(prompt.state, feed),
    bad && prompt.error ? h("small", " — ", ...withCode(errorText(prompt.error))) : null,
    prompt.state === "failed"
      ? h("button.link.retry", { type: "button", onclick: () => feed.retry(prompt.cid) }, "Retry")
      : null,
  );
}

// Whether the person said no to an item, or its question went away unanswered (then it never ran).
function refused(item, feed) {
  const ap = feed.approvals.get(feed.approvalByItem.get(item.id));
  return Boolean(ap && (ap.resolved === "deny" || ap.resolved === "cleared"));
}

function exitBadge(item, feed) {
  if (item.status === "declined" || (item.status === "failed" && item.exit_code == null && refused(item, feed))) {
    return h("span.badge", { dataset: { status: "failed" } }, "not run");
  }
  if (item.exit_code === undefined || item.exit_code === null) {
    if (item.status === "running") return h("span.badge", { dataset: { status: "running" } }, "running");
    // Ended without an exit code: stopped by an interrupt, or the agent went away (Codex's
    // adapter closes a turn's open items as failed).
    return item.status === "failed" ? h("span.badge", { dataset: { status: "failed" } }, "stopped") : null;
  }
  return h("span.badge.exit", { dataset: { status: item.exit_code === 0 ? "finished" : "failed" } }, `exit ${item.exit_code}`);
}

function fileBadge(item) {
  if (item.status === "declined" || item.status === "failed") return h("span.badge", { dataset: { status: "failed" } }, "not applied");
  if (item.status === "completed") return h("span.badge", { dataset: { status: "finished" } }, "applied");
  return null;
}

// "a.py", or "a.py and 2 more files" (Codex may change several in one item).
function pathsText(path, paths) {
  const all = Array.isArray(paths) && paths.length ? paths : path ? [path] : [];
  if (!all.length) return "a file";
  return all.length > 1 ? `${all[0]} and ${all.length - 1} more file${all.length > 2 ? "s" : ""}` : all[0];
}

const STEP_MARKS = { pending: "○", in_progress: "◐", completed: "✓" };

// "WebFetch", or "docs · search" for an MCP server's tool.
function toolName(item) {
  return item.server ? `${item.server} · ${item.tool}` : item.tool || "tool";
}

function toolBadge(item, feed) {
  if (item.status === "declined" || (item.status === "failed" && refused(item, feed))) {
    return h("span.badge", { dataset: { status: "failed" } }, "not run");
  }
  if (item.status === "failed") return h("span.badge", { dataset: { status: "failed" } }, "failed");
  if (item.status === "running") return h("span.badge", { dataset: { status: "running" } }, "running");
  return null;
}

function itemCard(item, feed) {
  switch (item.kind) {
    case "user_message": {
      const prompt = item.cid ? feed.prompts.get(item.cid) : null;
      const chosen = [item.model, item.effort].filter(Boolean).join(" · ");
      return h(
        "div.card.user",
        { dataset: { item: item.id } },
        h("p", item.text),
        item.images?.length ? h("p.attached", item.images.map((i) => h("span.chip", `📎 ${i.name}`))) : null,
        chosen ? h("small.turn-model", `on ${chosen}`) : null,
        promptState(prompt, feed),
      );
    }
    case "agent_message":
      // Codex may open a message and never fill it (a review's raw findings): nothing to show.
      if (!item.text && item.status !== "running") return null;
      return h(
        "div.card.agent",
        { dataset: { item: item.id, status: item.status || "" } },
        item.text ? h("div.md", markdown(item.text)) : h("p", "…"),
      );
    case "reasoning":
      return h("details.card.reasoning", { dataset: { item: item.id } }, h("summary", "Thinking"), h("p", item.text || "…"));
    case "command":
      return h(
        "div.card.command",
        { dataset: { item: item.id, status: item.status || "" } },
        h("div.card-head", h("code.cmd", `$ ${item.command || ""}`), exitBadge(item, feed)),
        item.cwd ? h("small.hint.cwd", `in ${item.cwd}`) : null,
        item.output ? h("pre.output", item.output) : null,
      );
    case "file_change":
      return h(
        "div.card.file",
        { dataset: { item: item.id, status: item.status || "" } },
        h("div.card-head", h("strong.path", pathsText(item.path, item.paths)), fileBadge(item)),
        item.diff ? diffView(item.diff) : null,
      );
    case "error":
      return h("div.card.error", { dataset: { item: item.id }, role: "alert" }, h("p", item.message || item.text || "error"));
    case "plan":
      // The agent's to-do list as it now stands (an earlier plan card is hidden by the feed).
      return h(
        "div.card.plan",
        { dataset: { item: item.id }, "aria-label": "The agent's plan" },
        h("div.card-head", h("strong", "Plan")),
        item.explanation ? h("p.hint", item.explanation) : null,
        item.text ? h("div.md.plan-text", markdown(item.text)) : null,
        item.steps?.length ? h("ol.steps", item.steps.map((step) =>
          h("li.step", { dataset: { status: step.status } }, `${STEP_MARKS[step.status] || "○"} ${step.text}`))) : null,
      );
    case "changes":
      // Everything the turn changed so far, as one diff (a later one of the turn replaces it).
      return h(
        "details.card.changes",
        { dataset: { item: item.id } },
        h("summary", h("strong", "Changes"), ` · ${item.paths?.length || 0} file${item.paths?.length === 1 ? "" : "s"}`,
          item.paths?.length ? h("small.hint", ` ${pathsText(null, item.paths)}`) : null),
        diffView(item.diff),
      );
    case "tool_call":
      return h(
        "div.card.tool",
        { dataset: { item: item.id, status: item.status || "", tool: item.tool || "" } },
        h("div.card-head", h("strong", toolName(item)), toolBadge(item, feed)),
        item.input ? h("pre.tool-input", item.input) : null,
        item.output ? h("details.tool-output", h("summary", "Result"), h("pre.output", item.output)) : null,
      );
    case "other":
      // Something the agent did that this page has no view of yet: its name and a summary.
      return h(
        "div.card.other",
        { dataset: { item: item.id, status: item.status || "", type: item.type || "" } },
        h("div.card-head", h("strong", item.title || item.type || "item"),
          item.status === "failed" ? h("span.badge", { dataset: { status: "failed" } }, "failed") : null),
        item.summary ? h("p.summary", item.summary) : null,
      );
    case "retrying": {
      const n = item.attempt || 1;
      const said = item.status === "running"
        ? `Reconnecting (attempt ${n}): ${item.text}${item.details ? ` — ${item.details}` : ""}`
        : item.status === "failed"
          ? `Gave up reconnecting after ${n} attempt${n > 1 ? "s" : ""}.`
          : `Reconnected after ${n} attempt${n > 1 ? "s" : ""}.`;
      return h("p.card.retrying", { dataset: { item: item.id, status: item.status }, role: "status" }, said);
    }
    case "notice":
      return h(
        "p.card.notice",
        { dataset: { item: item.id, level: item.level || "info" }, role: item.level === "warning" ? "alert" : null },
        item.level === "warning" ? "⚠ " : "ℹ ",
        item.text,
      );
    case "turn_end":
      return h("p.turn-end", { dataset: { item: item.id } }, item.status === "interrupted" ? "Interrupted." : `Turn ${item.status}${item.text ? `: ${item.text}` : ""}`);
    default:
      return h("div.card", { dataset: { item: item.id } }, h("p", item.text || item.kind));
  }
}

const APPROVAL_LABELS = {
  command: "Approval: run a command",
  file_change: "Approval: change a file",
  tool: "Approval: use a tool",
  plan: "Approval: the agent's plan",
};

const DECISION_WORDS = { approve: "Approved", approve_for_session: "Approved for this session", deny: "Denied" };

// An answer tapped and not yet taken by the host: what it is, and whether it waits for the
// connection (it is sent when the host is back; the card then shows the host's word on it).
function answeringNote(ap, feed) {
  const queued = feed.queuedAnswers.get(ap.approval);
  if (queued) return queuedNote(ap, queued, feed);
  const decision = feed.answering.get(ap.approval);
  if (!decision || ap.resolved) return null;
  const what = decision === "answered" ? "Your answer" : DECISION_WORDS[decision];
  const connected = feed.conn.state === "connected";
  return h("p.hint.answering", { dataset: { connected: connected ? "1" : "0" }, role: "status" },
    connected ? `${what}: sending…` : `${what}: will be sent when connected.`);
}

// An answer left at the relay while the host was away: waiting there, or why it did not go through
// (the relay refused it, or the host did when it came back). Shown until the card is settled.
function queuedNote(ap, queued, feed) {
  const what = queued.decision === "answered" ? "Your answer" : DECISION_WORDS[queued.decision] || queued.decision;
  const bad = queued.state === "failed" || queued.state === "refused";
  if (ap.resolved && !bad) return null;
  return h(
    "p.hint.answering.queued-answer",
    { dataset: { state: queued.state }, role: bad ? "alert" : "status" },
    `${what}: ${bad ? "⚠ " : ""}${stateLabel(queued.state, feed)}`,
    bad && queued.error ? h("span", " — ", ...withCode(errorText(queued.error))) : null,
  );
}

// Whether the card's buttons wait: an answer on its way, or waiting at the relay.
function answerPending(ap, feed) {
  const queued = feed.queuedAnswers.get(ap.approval);
  return feed.answering.has(ap.approval) || (queued && (queued.state === "queueing" || queued.state === "held"));
}

// A question the agent asks (Codex in plan mode): each part's options, or free text where the
// agent allows it (a secret one typed like a password), answered once for all parts.
function questionCard(ap, feed, onError) {
  const questions = ap.details?.questions || [];
  if (ap.resolved) {
    const outcome = ap.resolved === "cleared"
      ? `No longer needed${ap.reason ? `: ${ap.reason}` : ""}`
      : `Answered by ${ap.by?.name || ap.by?.id || "someone"}`;
    return h(
      "section.card.approval.question",
      { dataset: { approval: ap.approval, resolved: ap.resolved }, "aria-label": "The agent's question" },
      ...questions.map((q) => h("p.ask", q.question, ap.answers?.[q.id] ? h("strong.given", ` — ${ap.answers[q.id].join(", ")}`) : null)),
      answeringNote(ap, feed),
      h("p.resolved", { dataset: { decision: ap.resolved } }, outcome),
    );
  }
  const parts = questions.map((q, i) => {
    const name = `answer-${ap.approval}-${i}`;
    const options = (q.options || []).map((o) =>
      h("label.option", h("input", { type: "radio", name, value: o.label }), h("span", ` ${o.label}`),
        o.description ? h("small.hint", ` — ${o.description}`) : null));
    const own = q.is_other
      ? h("input.own", { type: q.is_secret ? "password" : "text", name: `${name}-own`, "aria-label": q.question,
        placeholder: options.length ? "Or your own answer" : "Your answer", autocomplete: "off" })
      : null;
    return { q, el: h("fieldset.part", { dataset: { part: q.id } }, h("legend", q.header || "Question"), h("p", q.question), ...options, own) };
  });
  const submit = h("button.primary.answer", { type: "submit" }, "Answer");
  const form = h(
    "form.card.approval.question",
    {
      dataset: { approval: ap.approval, resolved: "" },
      "aria-label": "The agent's question",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const answers = {};
        for (const { q, el } of parts) {
          const own = el.querySelector("input.own")?.value.trim();
          const picked = el.querySelector("input[type=radio]:checked")?.value;
          const given = own || picked;
          if (!given) {
            onError(new Error(`Answer "${q.question}" first`));
            return;
          }
          answers[q.id] = [given];
        }
        submit.disabled = true;
        try {
          await feed.answer(ap.approval, answers);
        } catch (err) {
          onError(err);
          submit.disabled = false;
        }
      },
    },
    h("p.ask", "The agent asks:"),
    ...parts.map((p) => p.el),
    answeringNote(ap, feed),
    h("div.actions", submit),
  );
  if (answerPending(ap, feed)) submit.disabled = true;
  return form;
}

function approvalCard(ap, feed, onError) {
  if (ap.kind === "question") return questionCard(ap, feed, onError);
  const details = ap.details || {};
  const options = ap.options && ap.options.length ? ap.options : ["approve", "deny"];
  const buttons = [];
  const answer = (decision) => async () => {
    for (const b of buttons) b.disabled = true;
    try {
      await feed.approve(ap.approval, decision);
    } catch (err) {
      onError(err);
      for (const b of buttons) b.disabled = false;
    }
  };
  if (options.includes("approve")) buttons.push(h("button.primary.approve", { type: "button", onclick: answer("approve") }, "Approve"));
  if (options.includes("approve_for_session")) {
    buttons.push(h("button.approve-session", { type: "button", onclick: answer("approve_for_session") }, "Approve for this session"));
  }
  if (options.includes("deny")) buttons.push(h("button.danger.deny", { type: "button", onclick: answer("deny") }, "Deny"));
  if (answerPending(ap, feed)) for (const b of buttons) b.disabled = true;
  const isCommand = ap.kind === "command";
  const isTool = ap.kind === "tool";
  const isPlan = ap.kind === "plan";
  let outcome = null;
  if (ap.resolved === "cleared") outcome = `No longer needed${ap.reason ? `: ${ap.reason}` : ""}`;
  else if (ap.resolved) outcome = `${DECISION_WORDS[ap.resolved] || ap.resolved} by ${ap.by?.name || ap.by?.id || "someone"}`;
  return h(
    "section.card.approval",
    {
      dataset: { approval: ap.approval, resolved: ap.resolved || "" },
      "aria-label": APPROVAL_LABELS[ap.kind] || "Approval",
    },
    h("p.ask", isCommand ? "The agent wants to run:"
      : isTool ? h("span", "The agent wants to use ", h("strong.tool", toolName(details)), ":")
        : isPlan ? "The agent's plan — approve it to let the agent start:"
          : h("span", "The agent wants to change ", h("strong.path", pathsText(details.path, details.paths)), ":")),
    isCommand ? h("pre.cmd", details.command || "") : null,
    isTool && details.input ? h("pre.tool-input", details.input) : null,
    isPlan ? h("div.md.plan-text", details.plan ? markdown(details.plan) : "(the agent wrote no plan)") : null,
    isCommand && details.cwd ? h("small.hint.cwd", `in ${details.cwd}`) : null,
    // Once answered, a change's diff shows once more only if its own card does not show it.
    details.diff && !(ap.resolved && feed.items.get(ap.item)?.diff) ? diffView(details.diff) : null,
    // Codex may ask for write access to a directory along with a change: part of what is approved.
    details.grant_root ? h("p.grant", "and write access to ", h("code", details.grant_root)) : null,
    details.reason ? h("p.hint.reason", `Why: ${details.reason}`) : null,
    answeringNote(ap, feed),
    outcome ? h("p.resolved", { dataset: { decision: ap.resolved } }, outcome) : h("div.actions", buttons),
  );
}

export function conversationView(feed, { onError }) {
  const cards = h("div.cards", { id: "cards", role: "log", "aria-live": "polite", "aria-relevant": "additions" });
  const pending = h("div.cards.pending", { id: "pending" });
  // Always there, so the page does not jump when the agent starts or stops working.
  const working = h("p.working", { id: "working", "aria-hidden": "true" }, h("span.spinner"), "working…");
  const el = h("div.conversation", cards, pending, working);
  const rendered = new Map(); // key → element

  function build(key) {
    if (key.startsWith("approval:")) return approvalCard(feed.approvals.get(key.slice(9)), feed, onError);
    const item = feed.items.get(key);
    if (!item || item.hidden) return null;
    // Waiting for a person: its approval card says exactly what would run or change.
    if (item.status === "running" && feed.pendingApproval(item.id)) return null;
    return itemCard(item, feed);
  }

  function update(changed = null) {
    const stick = atBottom();
    // New keys in their place (an approval goes before its item's card); changed ones rebuilt
    // in place.
    let previous = null;
    for (const key of feed.order) {
      const old = rendered.get(key);
      if (old && !(changed === null || changed.has(key))) {
        previous = old;
        continue;
      }
      const fresh = build(key) || h("div.hidden-item", { hidden: true });
      if (old) old.replaceWith(fresh);
      else if (previous) previous.after(fresh);
      else cards.prepend(fresh);
      rendered.set(key, fresh);
      previous = fresh;
    }
    // Prompts not yet in the log (sending, delivered, failed) wait below the conversation.
    const waiting = [...feed.prompts.values()].filter((p) => !feed.turnByCid.has(p.cid) && !["applied", "queued"].includes(p.state));
    // Prompts the host holds until the agent is done (from any device), each with its Cancel.
    const queued = [...feed.queued.values()].map((q) =>
      h(
        "div.card.user.pending.queued",
        { dataset: { queued: q.id } },
        h("p", q.text),
        h("span.prompt-state", { dataset: { state: "queued" } }, "queued: sent when the agent is done ",
          h("button.link.unqueue", { type: "button", onclick: () => feed.unqueue(q.id).catch(onError) }, "Cancel")),
      ));
    pending.replaceChildren(
      ...waiting.map((p) => h("div.card.user.pending", { dataset: { cid: p.cid, state: p.state } }, h("p", p.text), promptState(p, feed))),
      ...queued,
    );
    const s = feed.session || {};
    // (What the host left at the relay says it was at work: it is not, while it is away.)
    working.classList.toggle("on", s.status === "running" && !feed.fromSnapshot);
    if (stick) window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  // A prompt's state shows on its card in the log, too.
  function promptChanged(cid) {
    const key = feed.turnByCid.get(cid);
    return key ? new Set([key]) : new Set();
  }

  // An answer waiting for the connection says so, and says when it goes.
  const onConn = () => {
    if (feed.answering.size) update(new Set([...feed.answering.keys()].map((id) => `approval:${id}`)));
  };
  feed.conn.addEventListener("state", onConn);

  return {
    el,
    dispose: () => feed.conn.removeEventListener("state", onConn),
    update(ev) {
      const kind = ev?.detail?.kind;
      if (kind === "events") {
        const changed = ev.detail.changed || new Set();
        for (const key of [...changed]) if (key.startsWith("prompt:")) for (const k of promptChanged(key.slice(7))) changed.add(k);
        update(changed);
      } else if (kind === "prompt") update(promptChanged(ev.detail.cid));
      else if (kind === "output") return;
      else if (kind === "reset") {
        // Another history replaces this one (what the host left at the relay, or the live one
        // after it): every card is drawn afresh.
        cards.replaceChildren();
        rendered.clear();
        update(null);
      } else update(kind === "snapshot" ? null : new Set());
    },
  };
}
