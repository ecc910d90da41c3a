// The host's devices (admin scope only): devices.list, devices.rename, devices.revoke. Revoking
// asks twice, in the page (no blocking dialog), and this browser is marked so nobody locks
// themselves out by accident.
import { errorText, h, lastSeen, replace, timeAgo, withCode } from "./dom.js";
import { header, revokedPanel, stateNote } from "./header.js";
import { hasScope } from "./host.js";

// A device's Web Push, as the host last saw it deliver.
function pushText(push) {
  if (push.state === "gone") return `push: the browser's subscription is gone (said ${timeAgo(push.last_at)})`;
  if (!push.last_result) return "push: on, nothing sent yet";
  return `push: ${push.last_result} ${timeAgo(push.last_at)} · ${push.sent} delivered`;
}

export function renderDevices(root, { tether, hostId }) {
  const host = tether.host(hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  const conn = tether.connection(hostId);
  tether.model(hostId);
  const bar = h("div.topbar");
  const body = h("div.screen-body");
  const error = h("p.error", { role: "alert", id: "devices-error" });
  let devices = null;
  let editing = null;
  let confirming = null;

  async function load() {
    try {
      devices = await conn.call("devices.list", {}, { retryFor: 15000 });
      error.textContent = "";
    } catch (err) {
      error.replaceChildren(...withCode(errorText(err)));
    }
    draw();
  }

  async function act(fn) {
    error.textContent = "";
    try {
      await fn();
    } catch (err) {
      error.replaceChildren(...withCode(errorText(err)));
    }
    editing = confirming = null;
    await load();
  }

  function row(dev) {
    const mine = dev.id === host.device_id;
    const name = h("input", { value: dev.name, maxlength: "100", "aria-label": `New name for ${dev.name}`, id: `rename-${dev.id}` });
    return h(
      "div.row.device",
      { dataset: { device: dev.id, revoked: dev.revoked ? "1" : "0" } },
      h(
        "span.main",
        editing === dev.id
          ? h(
              "form.inline",
              { onsubmit: (ev) => (ev.preventDefault(), act(() => conn.call("devices.rename", { id: dev.id, name: name.value.trim() || dev.name }))) },
              name,
              h("button.primary", { type: "submit" }, "Save"),
            )
          : h("strong", dev.name, mine ? h("span.tag", "this browser") : null),
        h("small", `${(dev.scopes || []).join(", ")} · ${dev.revoked ? "revoked" : lastSeen(dev.last_seen)}`),
        dev.push ? h("small.push", { dataset: { push: dev.push.state } }, pushText(dev.push)) : null,
        h("small.mono", dev.id),
      ),
      dev.revoked
        ? h("span.badge", { dataset: { status: "failed" } }, "revoked")
        : h(
            "span.device-actions",
            editing === dev.id ? null : h("button", { type: "button", "aria-label": `Rename ${dev.name}`, onclick: () => ((editing = dev.id), draw(), document.getElementById(`rename-${dev.id}`)?.focus()) }, "Rename"),
            confirming === dev.id
              ? h("button.danger", { type: "button", id: `confirm-revoke-${dev.id}`, onclick: () => act(() => conn.call("devices.revoke", { id: dev.id })) }, mine ? "Revoke me" : "Confirm")
              : h("button.danger", { type: "button", "aria-label": `Revoke ${dev.name}`, onclick: () => ((confirming = dev.id), draw()) }, "Revoke"),
          ),
    );
  }

  function draw() {
    replace(bar, header({ title: "Devices", back: `#/host/${hostId}`, state: conn.state, detail: conn.detail }), stateNote(conn.state, conn.detail));
    if (conn.state === "revoked") return void replace(body, revokedPanel(host, { tether }));
    if (!hasScope(tether, hostId, "admin")) {
      return void replace(body, h("section.screen", h("p", "Managing devices needs the admin scope."), h("p.hint", ...withCode("Pair with `tether pair --scopes read,prompt,approve,admin` to get it."))));
    }
    const live = (devices || []).filter((d) => !d.revoked);
    const gone = (devices || []).filter((d) => d.revoked);
    replace(
      body,
      h(
        "section.screen",
        { id: "devices" },
        error,
        devices === null ? h("p.empty", "Loading…") : h("div.list", live.map(row)),
        gone.length ? [h("h2", "Revoked"), h("div.list", gone.map(row))] : null,
        h("p.hint", "A revoked device's channels close at once; it cannot connect again unless paired anew."),
        host.linked
          ? h("p.hint", { id: "inherited-hint" }, `Only devices paired with ${host.name} itself are listed: those it inherits from ${tether.viaName(host)} (this browser among them) are managed on ${tether.viaName(host)}.`)
          : null,
      ),
    );
  }

  root.replaceChildren(bar, body);
  draw();
  load();
  const onState = (ev) => {
    draw();
    if (ev.detail.state === "connected" && devices === null) load();
  };
  conn.addEventListener("state", onState);
  return () => conn.removeEventListener("state", onState);
}
