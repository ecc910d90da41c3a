// The pairing screen: confirm the host, name this browser, pair.
import { errorText, h, withCode } from "./dom.js";
import { header } from "./header.js";
import { defaultDeviceName, pair } from "../pairing.js";

export function renderPair(root, { tether, link, error, done }) {
  if (error) {
    root.replaceChildren(
      header({ title: "Pair" }),
      h("section.screen", h("p.error", { id: "pair-error" }, ...withCode(errorText(error))), h("a.button", { href: "#/" }, "Back to hosts")),
    );
    return;
  }
  const name = h("input", { id: "device-name", value: defaultDeviceName(), maxlength: "100", autocomplete: "off" });
  const status = h("p.note", { id: "pair-status", role: "status" });
  const button = h("button.primary", { id: "pair-button", type: "submit" }, "Pair this browser");
  // Cancel goes back to the hosts (there is always such a screen, empty or not); before the first
  // pairing it shows only once something went wrong.
  const back = h("a.link", { id: "pair-cancel", href: "#/", hidden: !tether.hosts.length }, "Cancel");
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
          status.replaceChildren(...withCode(errorText(err)));
          // The relay does not say whether the link was used or the host is only offline (so a
          // stranger cannot tell either): trying again is offered, and a way back always is.
          button.textContent = "Try again";
          button.disabled = false;
          name.disabled = false;
          back.hidden = false;
        }
      },
    },
    h("p", "Pair this browser with the host"),
    h("p.hostid", h("code", { id: "pair-host-id" }, link.hostId)),
    h(
      "p.hint",
      ...withCode("Check that this id is the one `tether up` or `tether pair` printed on your machine, under the link. Pairing lets this browser see and drive that host's sessions within the scopes of the link."),
    ),
    h("label", { for: "device-name" }, "Name for this browser"),
    name,
    button,
    status,
    back,
  );
  root.replaceChildren(header({ title: "Pair" }), form);
}
