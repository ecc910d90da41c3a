// Start a session: a terminal (pty, with a command) or an agent (builtin or codex, with a prompt),
// in one of the host's allowed workspaces (host.info → workspaces).
import { errorText, h, replace } from "./dom.js";
import { header, revokedPanel, stateNote } from "./header.js";

const AGENTS = [
  { value: "pty", label: "Terminal", hint: "A shell or any command, in a real terminal." },
  { value: "builtin", label: "Built-in agent", hint: "tether's own agent, with the host's model." },
  { value: "codex", label: "Codex", hint: "The Codex CLI on the host." },
];

export function renderNewSession(root, { tether, hostId }) {
  const host = tether.host(hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  const conn = tether.connection(hostId);
  const model = tether.model(hostId);
  const bar = h("div");
  const body = h("div.screen-body");
  let agent = "pty";

  const radios = AGENTS.map((a) =>
    h(
      "label.choice",
      h("input", { type: "radio", name: "agent", value: a.value, checked: a.value === agent, onchange: () => ((agent = a.value), update()) }),
      h("span", h("strong", a.label), h("small", a.hint)),
    ),
  );
  const workspace = h("select", { id: "new-workspace", "aria-describedby": "workspace-hint" });
  const command = h("input", { id: "new-command", value: "bash", autocomplete: "off", autocapitalize: "off", spellcheck: false });
  const prompt = h("textarea", { id: "new-prompt", rows: "4", placeholder: "What should the agent do?" });
  const commandField = h("div.field", h("label", { for: "new-command" }, "Command"), command);
  const promptField = h("div.field", h("label", { for: "new-prompt" }, "Prompt"), prompt);
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

  const label = () => (start.textContent = agent === "pty" ? "Start terminal" : "Start agent");
  function update() {
    commandField.hidden = agent !== "pty";
    promptField.hidden = agent === "pty";
    label();
    cid = null;
  }

  const form = h(
    "form.screen",
    {
      id: "new-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        error.textContent = "";
        const params = { agent };
        if (workspace.value) params.workspace = workspace.value;
        if (agent === "pty") {
          params.command = command.value.trim().split(/\s+/).filter(Boolean);
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
          error.textContent = errorText(err);
          start.disabled = false;
          label(); // the same cid is kept: trying again cannot start it twice
        }
      },
    },
    h("fieldset.choices", h("legend", "Agent"), radios),
    h("div.field", h("label", { for: "new-workspace" }, "Workspace"), workspace, h("small.hint", { id: "workspace-hint" }, "One of the directories this host allows.")),
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
  }
  update();
  root.replaceChildren(bar, body);
  draw();
  if (!model.info) model.refresh();
  const onChange = () => draw();
  conn.addEventListener("state", onChange);
  model.addEventListener("change", onChange);
  return () => {
    conn.removeEventListener("state", onChange);
    model.removeEventListener("change", onChange);
  };
}
