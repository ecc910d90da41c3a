// Start a session: a terminal (pty, with a command) or an agent (builtin, codex or claude, with a prompt),
// in one of the host's allowed workspaces (host.info → workspaces). A Codex session starts a new
// thread or adopts one of the host's Codex threads (sessions.threads, desktop ones too): it then
// runs in that thread's directory.
import { errorText, h, replace, timeAgo, withCode } from "./dom.js";
import { header, revokedPanel, stateNote } from "./header.js";
import { shellWords } from "../words.js";

const AGENTS = [
  { value: "pty", label: "Terminal", hint: "A shell or any command, in a real terminal." },
  { value: "builtin", label: "Built-in agent", hint: "tether's own agent, with the host's model." },
  { value: "codex", label: "Codex", hint: "The Codex CLI on the host." },
  { value: "claude", label: "Claude Code", hint: "The Claude Code CLI on the host." },
];
const THREAD_LIMIT = 30;
const NEW_THREAD = "";

export function renderNewSession(root, { tether, hostId }) {
  const host = tether.host(hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  const conn = tether.connection(hostId);
  const model = tether.model(hostId);
  const bar = h("div.topbar");
  const body = h("div.screen-body");
  let agent = "pty";
  // The host's Codex threads: fetched when Codex is first chosen, and on Refresh.
  let threads = { state: "idle", list: [], error: null }; // idle | loading | loaded | error
  let thread = NEW_THREAD; // the chosen thread's id, or a new thread
  let fetches = 0; // only the latest fetch may fill the list
  let disposed = false;

  const radios = AGENTS.map((a) => {
    const input = h("input", { type: "radio", name: "agent", value: a.value, checked: a.value === agent, onchange: () => ((agent = a.value), update()) });
    const hint = h("small", a.hint);
    return { value: a.value, input, hint, el: h("label.choice", { dataset: { agent: a.value } }, input, h("span", h("strong", a.label), hint)) };
  });
  // An agent the host cannot start (its program is not installed, or it is turned off) is offered
  // disabled, with what the host says to do about it (host.info's agents).
  function markAvailable() {
    const known = new Map((model.info?.agents || []).map((a) => [a.name, a]));
    for (const r of radios) {
      const said = known.get(r.value);
      const off = said ? !said.available : false;
      r.input.disabled = off;
      r.el.dataset.available = off ? "0" : "1";
      r.hint.replaceChildren(...(off && said.hint ? withCode(said.hint) : [AGENTS.find((a) => a.value === r.value).hint]));
      if (off && agent === r.value) {
        agent = "pty";
        radios[0].input.checked = true;
        update();
      }
    }
  }
  const workspace = h("select", { id: "new-workspace", "aria-describedby": "workspace-hint" });
  const command = h("input", { id: "new-command", value: "bash", autocomplete: "off", autocapitalize: "off", spellcheck: false });
  const prompt = h("textarea", { id: "new-prompt", rows: "4", placeholder: "What should the agent do?" });
  // What will run, word by word, as a shell would split the line (quotes kept together).
  const argv = h("p.argv", { id: "new-argv", "aria-live": "polite" });
  const showArgv = () => {
    try {
      const words = shellWords(command.value);
      argv.dataset.state = "ok";
      argv.replaceChildren("Runs: ", ...words.map((w) => h("code.word", w)));
    } catch (err) {
      argv.dataset.state = "error";
      argv.replaceChildren(err.message);
    }
  };
  command.addEventListener("input", showArgv);
  showArgv();
  const commandField = h("div.field", h("label", { for: "new-command" }, "Command"), command, argv);
  const promptField = h("div.field", h("label", { for: "new-prompt" }, "Prompt"), prompt);
  const threadList = h("div.threads", { id: "thread-list", "aria-live": "polite" });
  const refresh = h("button.link", { type: "button", id: "refresh-threads", onclick: () => loadThreads() }, "Refresh");
  const threadField = h(
    "fieldset.choices",
    { id: "thread-field" },
    h("legend", "Thread ", refresh),
    threadList,
  );
  const workspaceField = h(
    "div.field",
    h("label", { for: "new-workspace" }, "Workspace"),
    workspace,
    h("small.hint", { id: "workspace-hint" }, "One of the directories this host allows."),
  );
  const error = h("p.error", { role: "alert", id: "new-error" });
  const start = h("button.primary", { id: "start-session", type: "submit" }, "Start");
  let cid = null; // one cid per attempt at this form: a retry after a lost answer starts it once

  function fillWorkspaces() {
    // A browser held to one workspace (`tether pair --workspace`) may start sessions there only.
    const list = model.info?.workspace ? [model.info.workspace] : model.info?.workspaces || [];
    const current = workspace.value;
    replace(workspace, list.length ? list.map((w) => h("option", { value: w }, w)) : h("option", { value: "" }, "the host's default"));
    if (list.includes(current)) workspace.value = current;
  }

  const chosen = () => (agent === "codex" && thread ? threads.list.find((t) => t.id === thread) : null);
  const label = () => (start.textContent = agent === "pty" ? "Start terminal" : chosen() ? "Continue thread" : "Start agent");
  function show() {
    commandField.hidden = agent !== "pty";
    promptField.hidden = agent === "pty";
    threadField.hidden = agent !== "codex";
    // An adopted thread runs where it ran before: its directory, not one picked here.
    workspaceField.hidden = Boolean(chosen());
    prompt.placeholder = chosen() ? "What next, in this thread?" : "What should the agent do?";
    label();
  }
  function update() {
    show();
    cid = null; // another choice: another session
    if (agent === "codex" && threads.state === "idle") loadThreads();
  }

  async function loadThreads() {
    const mine = ++fetches;
    threads = { ...threads, state: "loading", error: null };
    drawThreads();
    try {
      const result = await conn.call("sessions.threads", { agent: "codex", limit: THREAD_LIMIT }, { retryFor: 15000 });
      const list = (result?.threads || []).filter((t) => t && t.id);
      list.sort((a, b) => (b.updated_at || b.created_at || 0) - (a.updated_at || a.created_at || 0));
      threads = { state: "loaded", list, error: null };
    } catch (err) {
      threads = { ...threads, state: "error", error: err };
    }
    if (mine !== fetches || disposed) return;
    if (thread && !threads.list.some((t) => t.id === thread)) {
      thread = NEW_THREAD; // the chosen one is gone
      cid = null;
    }
    drawThreads();
    show(); // the same choice keeps its cid: a retried start still happens once
  }

  function threadChoice(value, title, ...details) {
    return h(
      "label.choice",
      h("input", { type: "radio", name: "thread", value, checked: value === thread, onchange: () => ((thread = value), update()) }),
      h("span", h("strong", title), details),
    );
  }

  function drawThreads() {
    const { state, list, error: err } = threads;
    refresh.disabled = state === "loading";
    const rows = [threadChoice(NEW_THREAD, "New thread", h("small", "Start a fresh Codex conversation."))];
    for (const t of list) {
      const title = t.name || t.preview || t.id;
      const when = timeAgo(t.updated_at || t.created_at);
      rows.push(threadChoice(
        t.id,
        title,
        t.name && t.preview ? h("small.preview", t.preview) : null,
        h("small.where", [when, t.cwd || ""].filter(Boolean).join(" · ")),
      ));
    }
    let status = null;
    if (state === "loading") status = h("p.hint.threads-state", { "data-state": "loading" }, h("span.spinner"), " Looking for Codex threads on the host…");
    else if (state === "error") status = h("p.error.threads-state", { "data-state": "error" }, ...withCode(`Could not list Codex threads: ${errorText(err)}`));
    else if (state === "loaded" && !list.length) {
      status = h("p.hint.threads-state", { "data-state": "empty" }, "No Codex threads on this host yet in the workspaces you may use. Threads started here or in the Codex app show up to continue.");
    }
    replace(threadList, h("div.thread-choices", rows), status);
  }

  const form = h(
    "form.screen",
    {
      id: "new-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        error.textContent = "";
        const params = { agent };
        const adopt = chosen();
        if (adopt) {
          params.thread = adopt.id;
          if (adopt.cwd) params.workspace = adopt.cwd; // the host checks it is one this browser may use
        } else if (workspace.value) params.workspace = workspace.value;
        if (agent === "pty") {
          try {
            params.command = shellWords(command.value);
          } catch (err) {
            return void (error.textContent = err.message);
          }
          if (!params.command.length) return void (error.textContent = "Type a command, e.g. bash.");
        } else {
          params.prompt = prompt.value.trim();
          if (!params.prompt) return void (error.textContent = "Type a prompt for the agent.");
        }
        start.disabled = true;
        start.textContent = "Starting…";
        cid ||= crypto.randomUUID().replace(/-/g, "");
        try {
          // A pty starts at a phone's size; the terminal view resizes it to fit right after.
          const result = await conn.command("sessions.start", { ...params, cols: 80, rows: 24 }, { cid });
          window.location.hash = `#/host/${hostId}/session/${result.id}`;
        } catch (err) {
          error.replaceChildren(...withCode(errorText(err)));
          start.disabled = false;
          label(); // the same cid is kept: trying again cannot start it twice
        }
      },
    },
    h("fieldset.choices", h("legend", "Agent"), radios.map((r) => r.el)),
    threadField,
    workspaceField,
    commandField,
    promptField,
    start,
    error,
  );

  function draw() {
    replace(bar, header({ title: "New session", back: `#/host/${hostId}`, state: conn.state, detail: conn.detail }), stateNote(conn.state, conn.detail));
    if (conn.state === "revoked") replace(body, revokedPanel(host, { tether }));
    else if (!body.contains(form)) replace(body, form);
    fillWorkspaces();
    markAvailable();
  }
  drawThreads();
  show();
  root.replaceChildren(bar, body);
  draw();
  if (!model.info) model.refresh();
  const onChange = () => draw();
  // Back online after a failed listing: try it again.
  const onState = () => (draw(), conn.state === "connected" && agent === "codex" && threads.state === "error" && loadThreads());
  conn.addEventListener("state", onState);
  model.addEventListener("change", onChange);
  return () => {
    disposed = true;
    conn.removeEventListener("state", onState);
    model.removeEventListener("change", onChange);
  };
}
