// The pairing screen: confirm the host, name this browser, pair.
import { h } from "./dom.js";
import { errorText } from "./dom.js";
import { header } from "./header.js";
import { defaultDeviceName, pair } from "../pairing.js";

export function renderPair(root, { tether, link, error, done }) {
  if (error) {
    root.replaceChildren(
      header({ title: "Pair" }),
      h("section.screen", h("p.error", { id: "pair-error" }, errorText(error)), h("a.button", { href: "#/" }, "Back to hosts")),
    );
    return;
  }
  const name = h("input", { id: "device-name", value: defaultDeviceName(), maxlength: "100", autocomplete: "off" });
  const status = h("p.note", { id: "pair-status", role: "status" });
  const button = h("button.primary", { id: "pair-button", type: "submit" }, "Pair this browser");
  const form = h(
    "form.screen",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        button.disabled = true;
        name.disabled = true;
        status.className = "note";
        try {
          const host = await pair(link, {
            name: name.value.trim() || defaultDeviceName(),
            onStep: (text) => (status.textContent = `${text}…`),
          });
          link.secret.fill(0); // used once; do not keep it around
          status.textContent = `Paired with ${host.name}.`;
          await done(host);
        } catch (err) {
          status.className = "error";
          status.textContent = errorText(err);
          button.disabled = false;
          name.disabled = false;
        }
      },
    },
    h("p", "Pair this browser with the host"),
    h("p.hostid", h("code", { id: "pair-host-id" }, link.hostId)),
    h(
      "p.hint",
      "Check that this id is the one `tether pair` printed on your machine. Pairing lets this browser see and drive that host's sessions within the scopes of the link.",
    ),
    h("label", { for: "device-name" }, "Name for this browser"),
    name,
    button,
    status,
    tether.hosts.length ? h("a.link", { href: "#/" }, "Cancel") : null,
  );
  root.replaceChildren(header({ title: "Pair" }), form);
}
