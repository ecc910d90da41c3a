// One host: its sessions (sessions.list, kept live by the host-wide subscription) and a way to
// start a terminal.
import { errorText, h, replace, timeAgo } from "./dom.js";
import { header, stateNote } from "./header.js";

export function renderHost(root, { tether, hostId }) {
  const host = tether.hosts.find((x) => x.host_id === hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }), h("section.screen", h("p", "This host is not paired.")));
    return () => {};
  }
  const conn = tether.connection(hostId);
  const model = tether.model(hostId);
  const bar = h("div");
  const list = h("div.list", { id: "sessions" });
  const error = h("p.error", { role: "alert" });

  const command = h("input", { id: "new-command", value: "bash", "aria-label": "Command", autocomplete: "off" });
  const start = h("button", { id: "new-session", type: "submit" }, "New terminal");
  const form = h(
    "form.inline",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        start.disabled = true;
        error.textContent = "";
        try {
          const argv = command.value.trim().split(/\s+/).filter(Boolean);
          const result = await conn.command("sessions.start", { agent: "pty", command: argv });
          window.location.hash = `#/host/${hostId}/session/${result.id}`;
        } catch (err) {
          error.textContent = errorText(err);
        } finally {
          start.disabled = false;
        }
      },
    },
    command,
    start,
  );

  function draw() {
    replace(bar, header({ title: host.name, back: "#/", state: conn.state, detail: conn.detail }), stateNote(conn.state, conn.detail));
    const sessions = model.sortedSessions();
    list.replaceChildren(
      ...(sessions.length
        ? sessions.map((s) =>
            h(
              "a.row.session",
              { href: `#/host/${hostId}/session/${s.id}`, dataset: { session: s.id, status: s.status } },
              h("span.main", h("strong", s.title || (s.command || []).join(" ") || s.id), h("small", `${s.agent} · ${s.workspace || ""}`)),
              h("span.status", { dataset: { status: s.status } }, s.status, h("small", timeAgo(s.last_activity || s.created))),
            ),
          )
        : [h("p.empty", conn.state === "connected" ? "No sessions yet." : "Loading…")]),
    );
  }

  root.replaceChildren(bar, h("section.screen", { id: "host" }, form, error, h("h2", "Sessions"), list));
  draw();
  const onChange = () => draw();
  conn.addEventListener("state", onChange);
  model.addEventListener("change", onChange);
  return () => {
    conn.removeEventListener("state", onChange);
    model.removeEventListener("change", onChange);
  };
}
