// Shown instead of the app when the browser withholds WebCrypto: pages served over plain HTTP from
// anything but localhost are not a "secure context", so crypto.subtle (and service workers) are
// missing and nothing could be encrypted. Say exactly what to do instead of failing silently.
import { h, withCode } from "./dom.js";

export function renderInsecure(root, { missing = [] } = {}) {
  const loc = window.location;
  const https = `https://${loc.host}${loc.pathname}${loc.hash}`;
  const localPort = loc.port ? `:${loc.port}` : "";
  const insecure = !window.isSecureContext || !(window.crypto && window.crypto.subtle);
  root.replaceChildren(
    h(
      "section.screen.insecure",
      { id: "insecure" },
      h("h1", "tether cannot run here yet"),
      insecure
        ? [
            h(
              "p",
              "This page was opened over plain HTTP from ",
              h("code", loc.host || "this address"),
              ". Browsers only allow the cryptography tether needs (WebCrypto) on secure pages, so nothing could be end-to-end encrypted.",
            ),
            h("h2", "Do one of these"),
            h(
              "ol",
              h(
                "li",
                h("strong", "Open it over HTTPS: "),
                h("a", { href: https, id: "https-link" }, https.replace(/#.*$/, "")),
                h(
                  "p.hint",
                  ...withCode("Run the relay behind TLS (its own certificate or a TLS reverse proxy), or expose `tether up` through an HTTPS tunnel, and start it with `--public-url https://…` so pairing links use HTTPS."),
                ),
              ),
              h(
                "li",
                h("strong", "Or open it on the machine running the relay, via localhost: "),
                h("code", `http://localhost${localPort}/`),
                h("p.hint", "localhost counts as secure; a phone cannot reach it, though."),
              ),
            ),
            loc.hash.startsWith("#pair=")
              ? h("p.hint", "This page was opened from a pairing link: the HTTPS link above keeps its #pair=… part.")
              : null,
          ]
        : [
            h("p", `This browser lacks ${missing.join(" and ")} in WebCrypto, which tether needs.`),
            h("p", "Update the browser (Chrome/Edge 137+, Firefox 130+, Safari 17+), then reload."),
          ],
    ),
  );
}
