// One session. A pty session is a real terminal (ui/terminal.js); an agent session is a
// conversation (ui/conversation.js) with a composer for follow-up prompts and an interrupt.
// While the host is away it shows what the host left at the relay (its latest events, drawn as
// live ones), and the composer and the approval cards queue there for the host.
import { errorText, h, replace, throttled, withCode } from "./dom.js";
import { awayBanner, header, revokedPanel, stateNote } from "./header.js";
import { sessionTitle, statusBadge } from "./host.js";
import { imagePicker } from "./attach.js";
import { conversationView } from "./conversation.js";
import { terminalView } from "./terminal.js";
import { SessionFeed } from "../model.js";

// Why a terminal's program is gone when it did not exit by itself.
const HOST_ENDED = { "host restarted": "the host restarted", "host shutdown": "the host was stopped" };

export function renderSession(root, { tether, hostId, sessionId }) {
  const host = tether.host(hostId);
  const conn = tether.connection(hostId);
  if (!conn || !host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  const model = tether.model(hostId);
  const feed = new SessionFeed(conn, sessionId, {
    known: model?.shownSessions().get(sessionId) || null, mailbox: model?.mailbox || null, hostName: host.name,
  });
  const bar = h("div.topbar");
  const banner = h("div.away-slot");
  const meta = h("p.meta", { id: "session-status" });
  const error = h("p.error", { role: "alert", id: "session-error" });
  // Put it away, or forget it with its history (once it ended or waits for a prompt; asked twice).
  const sessionActions = h("div.session-actions", { id: "session-actions" });
  let confirmingDelete = false;
  const drawActions = () => {
    const s = feed.session || model?.sessions.get(sessionId) || {};
    const ended = s.status === "finished" || s.status === "failed";
    // An agent between turns may go too (its agent stops); one at work is stopped first.
    const deletable = ended || s.status === "idle";
    const act = (fn) => () => fn().catch(showError);
    // While the host is away only prompts and answers can wait for it (at the relay).
    if (feed.queueing) {
      replace(sessionActions);
      return;
    }
    // A terminal whose program is gone (it ended, or the host stopped): the same command again, in
    // the same workspace, as a new session.
    const again = feed.isPty && ended
      ? h("button.primary", {
          id: "run-again", type: "button",
          onclick: act(async () => {
            const started = await conn.command("sessions.start", {
              agent: "pty", command: s.command, workspace: s.workspace, cols: s.cols || 80, rows: s.rows || 24,
            });
            window.location.hash = `#/host/${hostId}/session/${started.id}`;
          }),
        }, "Start it again")
      : null;
    const gone = feed.isPty && ended && HOST_ENDED[s.exit_reason]
      ? h("p.hint", { id: "program-gone" }, `Its program is gone: ${HOST_ENDED[s.exit_reason]}.`)
      : null;
    replace(
      sessionActions,
      gone,
      again,
      h("button", { id: "archive-session", type: "button", onclick: act(() => model.archive(sessionId, !s.archived)) },
        s.archived ? "Unarchive" : "Archive"),
      deletable && !confirmingDelete
        ? h("button.danger", { id: "delete-session", type: "button", onclick: () => ((confirmingDelete = true), drawActions()) }, "Delete…")
        : null,
      deletable && confirmingDelete
        ? [
            h("span.hint", "Delete it and its whole history from the host?"),
            h("button.danger", {
              id: "confirm-delete", type: "button",
              onclick: act(async () => {
                await model.delete(sessionId);
                window.location.hash = `#/host/${hostId}`;
              }),
            }, "Delete"),
            h("button", { type: "button", onclick: () => ((confirmingDelete = false), drawActions()) }, "Cancel"),
          ]
        : null,
    );
  };
  const body = h("section.screen.session-screen", { id: "session" }, banner, meta, sessionActions, error);
  const showError = (err) => error.replaceChildren(...withCode(errorText(err)));
  let view = null; // {kind: "pty"|"agent", ...}

  // Agent composer: follow-up prompts, each tracked sending → delivered → applied (or failed).
  const input = h("textarea", {
    id: "composer",
    rows: "1",
    placeholder: "Message the agent",
    "aria-label": "Message the agent",
    enterkeyhint: "send",
  });
  const send = h("button.primary", { id: "send", type: "submit", "aria-label": "Send" }, "Send");
  // While the host is away: what the button does instead.
  const queueNote = h("small.hint.composer-note", { id: "composer-note", hidden: true });
  // The model and reasoning effort of the next prompts, from the agent's own list.
  const modelSelect = h("select", { id: "model-select", "aria-label": "Model" });
  const effortSelect = h("select", { id: "effort-select", "aria-label": "Reasoning effort" });
  const settingsNote = h("small.hint", { id: "turn-settings-note" });
  const modeSelect = h(
    "select",
    { id: "mode-select", "aria-label": "Mode" },
    h("option", { value: "" }, "Mode: as before"),
    h("option", { value: "plan" }, "Plan (asks before it acts)"),
    h("option", { value: "default" }, "Default"),
  );
  // Turns that are not prompts (Codex): the agent reviews the uncommitted changes, or compacts its context.
  const actions = h(
    "div.turn-actions",
    h("button", { id: "review", type: "button", onclick: () => feed.review().catch(showError) }, "Review changes"),
    h("button", { id: "compact", type: "button", onclick: () => feed.compact().catch(showError) }, "Compact context"),
  );
  const settingsRow = h("div.turn-settings", { id: "turn-settings", hidden: true }, modelSelect, effortSelect, modeSelect, actions, settingsNote);
  let models = [];
  const fillEfforts = () => {
    const m = models.find((x) => x.id === modelSelect.value);
    const efforts = m ? m.efforts : [...new Set(models.flatMap((x) => x.efforts))];
    const keep = effortSelect.value;
    effortSelect.replaceChildren(h("option", { value: "" }, "Effort: as before"), ...efforts.map((e) => h("option", { value: e }, e)));
    effortSelect.value = efforts.includes(keep) ? keep : "";
  };
  const choose = () => {
    fillEfforts();
    feed.turnSettings = { model: modelSelect.value || null, effort: effortSelect.value || null, mode: modeSelect.value || null };
  };
  modelSelect.addEventListener("change", choose);
  effortSelect.addEventListener("change", choose);
  modeSelect.addEventListener("change", choose);
  const settingsToggle = h("button.link", {
    id: "turn-settings-toggle",
    type: "button",
    "aria-expanded": "false",
    onclick: async () => {
      settingsRow.hidden = !settingsRow.hidden;
      settingsToggle.setAttribute("aria-expanded", String(!settingsRow.hidden));
      if (settingsRow.hidden || models.length) return;
      settingsNote.textContent = "Loading the agent's models…";
      try {
        models = await feed.models();
        modelSelect.replaceChildren(
          h("option", { value: "" }, "Model: as before"),
          ...models.map((m) => h("option", { value: m.id, title: m.description }, m.default ? `${m.name} (default)` : m.name)),
        );
        fillEfforts();
        settingsNote.textContent = "";
      } catch (err) {
        settingsNote.replaceChildren(...withCode(errorText(err)));
      }
    },
  }, "Model");
  const stop = h("button.danger", { id: "interrupt", type: "button", onclick: () => feed.interrupt().catch(showError) }, "Stop");
  const attach = imagePicker({ onError: showError });
  const composer = h(
    "form.composer",
    {
      onsubmit: (ev) => {
        ev.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        error.textContent = "";
        input.value = "";
        grow();
        feed.send(text, { images: attach.take() });
      },
    },
    queueNote,
    settingsRow,
    attach.chips,
    settingsToggle,
    attach.button,
    attach.picker,
    input,
    send,
    stop,
  );
  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, window.innerHeight * 0.3)}px`;
  };
  input.addEventListener("input", grow);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      composer.requestSubmit();
    }
  });

  function mountView() {
    if (view || !feed.session?.agent) return;
    if (feed.isPty) {
      const t = terminalView(feed, { onError: showError });
      view = { kind: "pty", ...t };
      body.classList.add("pty");
      body.insertBefore(t.el, error);
    } else {
      const c = conversationView(feed, { onError: showError });
      view = { kind: "agent", ...c };
      body.insertBefore(c.el, error);
      root.append(composer);
      c.update();
    }
  }

  function drawChrome() {
    const s = feed.session || {};
    replace(
      bar,
      header({ title: s.title || sessionTitle(s) || sessionId, back: `#/host/${hostId}`, state: conn.state, detail: conn.detail }),
      stateNote(conn.state, conn.detail),
    );
    if (conn.state === "revoked") {
      replace(body, revokedPanel(host, { tether }));
      composer.remove();
      return;
    }
    replace(
      meta,
      statusBadge(s.status),
      h("span", ` ${s.agent || ""}`),
      s.workspace ? h("span.ws", { title: s.workspace }, ` · ${s.workspace}`) : null,
      s.exit_reason ? h("span", ` · ${s.exit_reason}`) : null,
      s.retrying ? h("span.retrying", { id: "session-retrying" }, ` · reconnecting (attempt ${s.retrying.attempt})`) : null,
      s.usage ? h("span.usage", { id: "session-usage" }, ` · ${usageText(s.usage)}`) : null,
      s.exit_code !== null && s.exit_code !== undefined && s.agent === "pty" ? h("span", ` · exit ${s.exit_code}`) : null,
    );
    meta.dataset.status = s.status || "";
    replace(banner, awayBanner(host, model, conn));
    const queueing = feed.queueing;
    const queueWords = `Queue — sent when ${host.name} is back`;
    send.textContent = queueing ? "Queue" : "Send";
    send.setAttribute("aria-label", queueing ? queueWords : "Send");
    input.placeholder = queueing ? `A message for when ${host.name} is back` : "Message the agent";
    queueNote.textContent = queueing ? queueWords : "";
    queueNote.hidden = !queueing;
    drawActions();
    const ended = s.status === "finished" || s.status === "failed";
    if (view?.kind === "pty") view.setEnded(ended);
    input.disabled = send.disabled = ended;
    stop.hidden = queueing || !(s.status === "running" || s.status === "waiting-for-approval");
  }
  const drawLater = throttled(drawChrome);

  root.replaceChildren(bar, body);
  const onFeed = (ev) => {
    if (ev.detail?.kind === "error") showError(ev.detail.error);
    mountView();
    if (view?.kind === "agent") view.update(ev);
    if (ev.detail?.kind !== "output") drawLater();
  };
  const onConn = () => drawChrome();
  // What the host left at the relay, shown until the host itself says anything.
  let shownFrom = null;
  const showAway = () => {
    const away = model?.away;
    if (away?.state === "shown" && away.snapshot !== shownFrom && conn.state !== "connected" && !feed.live) {
      shownFrom = away.snapshot;
      const row = away.snapshot.sessions.find((x) => x.id === sessionId);
      feed.showSnapshot(row, away.snapshot.events[sessionId] || []);
    }
    drawLater();
  };
  feed.addEventListener("change", onFeed);
  conn.addEventListener("state", onConn);
  model?.addEventListener("change", showAway);
  if (conn.state !== "revoked") feed.start();
  showAway();
  mountView();
  drawChrome();
  const tick = setInterval(drawChrome, 30000); // "reported 2 min ago" stays true
  return () => {
    clearInterval(tick);
    feed.stop();
    if (view?.dispose) view.dispose();
    feed.removeEventListener("change", onFeed);
    conn.removeEventListener("state", onConn);
    model?.removeEventListener("change", showAway);
  };
}

// "12.3k tokens (8% of context) · limit 42% used": what the agent said it used.
function usageText(u) {
  const parts = [];
  if (u.total_tokens != null) {
    const n = u.total_tokens >= 1000 ? `${(u.total_tokens / 1000).toFixed(1)}k` : String(u.total_tokens);
    const share = u.context_window && u.last_tokens != null ? ` (${Math.round((100 * u.last_tokens) / u.context_window)}% of context)` : "";
    parts.push(`${n} tokens${share}`);
  }
  if (u.cost_usd != null) parts.push(`$${u.cost_usd.toFixed(u.cost_usd < 1 ? 4 : 2)}`);
  if (u.rate_limit) parts.push(`limit ${u.rate_limit.used_percent}% used`);
  return parts.join(" · ");
}

