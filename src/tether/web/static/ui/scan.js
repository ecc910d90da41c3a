// "Scan a QR code": the camera (getUserMedia, the back camera on a phone) into a <video>, frames
// drawn to a canvas and decoded with the browser's BarcodeDetector when it has one that reads
// qr_code, else with the vendored jsQR (vendor/jsQR.js, loaded only here). A tether pairing link
// (…/#pair=…) stops the camera and is then opened exactly as if it had been followed: for this
// origin the fragment is set (app.js's hashchange reads it and shows the pairing screen); for
// another relay the page goes there.
import { h, replace, withCode } from "./dom.js";
import { header } from "./header.js";

const SCAN_EVERY_MS = 150;
const PAIRING_LINK = /^https?:\/\/[^\s/#?]+(?:\/[^\s#]*)?#pair=\S+$/;

let jsqrLoading = null;

function loadJsQR() {
  jsqrLoading ||= new Promise((resolve, reject) => {
    if (window.jsQR) return resolve(window.jsQR);
    const el = document.createElement("script");
    el.src = "vendor/jsQR.js";
    el.onload = () => (window.jsQR ? resolve(window.jsQR) : reject(new Error("jsQR did not load")));
    el.onerror = () => reject(new Error("could not load the QR decoder (vendor/jsQR.js)"));
    document.head.append(el);
  }).catch((err) => {
    jsqrLoading = null;
    throw err;
  });
  return jsqrLoading;
}

// A decoder: async (canvas, ctx) → text or null. Named, so the page (and tests) can tell which.
async function makeDecoder() {
  if ("BarcodeDetector" in window) {
    try {
      const formats = await window.BarcodeDetector.getSupportedFormats();
      if (formats.includes("qr_code")) {
        const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
        return {
          name: "BarcodeDetector",
          decode: async (canvas) => {
            const found = await detector.detect(canvas);
            return found.length ? found[0].rawValue : null;
          },
        };
      }
    } catch {
      // fall through to jsQR
    }
  }
  const jsQR = await loadJsQR();
  return {
    name: "jsQR",
    decode: async (canvas, ctx) => {
      const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const code = jsQR(image.data, image.width, image.height, { inversionAttempts: "attemptBoth" });
      return code ? code.data : null;
    },
  };
}

// What a decoded text is: {same: "#pair=…"} for this relay, {other: url} for another, or {error}.
export function classifyScanned(text, origin = window.location.origin) {
  const trimmed = String(text || "").trim();
  if (!PAIRING_LINK.test(trimmed)) return { error: "This QR code is not a tether pairing link." };
  let url;
  try {
    url = new URL(trimmed);
  } catch {
    return { error: "This QR code is not a tether pairing link." };
  }
  if (url.origin === origin) return { same: url.hash };
  return { other: url.href };
}

function cameraError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") {
    return "Camera permission was denied. Allow the camera for this site in the browser's settings, then try again — or open the link `tether pair` printed instead.";
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return "No camera was found on this device. Open the link `tether pair` printed instead.";
  }
  if (name === "NotReadableError" || name === "TrackStartError") {
    return "The camera is in use by another app or could not be started. Close the other app and try again.";
  }
  return `The camera could not be started: ${(err && err.message) || err}`;
}

export function renderScan(root, { open = (hash) => (window.location.hash = hash), go = (url) => window.location.assign(url) } = {}) {
  let stream = null;
  let timer = null;
  let stopped = false;
  let lastBad = "";

  const video = h("video", { id: "scan-video", playsinline: "", muted: "", autoplay: "", "aria-label": "Camera view" });
  video.muted = true;
  video.playsInline = true;
  const canvas = h("canvas", { hidden: true });
  const status = h("p.note", { id: "scan-status", role: "status", "aria-live": "polite" }, "Starting the camera…");
  const problem = h("p.error", { id: "scan-error", role: "alert" });
  const retry = h("button", { id: "scan-retry", type: "button", hidden: true, onclick: () => start() }, "Try again");

  function stop() {
    stopped = true;
    clearTimeout(timer);
    timer = null;
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.srcObject = null;
  }

  function fail(text) {
    stop();
    status.textContent = "";
    problem.textContent = text;
    retry.hidden = false;
  }

  async function start() {
    stopped = false;
    lastBad = "";
    problem.textContent = "";
    retry.hidden = true;
    status.textContent = "Starting the camera…";
    if (!window.isSecureContext) {
      fail("The camera needs a secure page: open tether over HTTPS (or via localhost).");
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fail("This browser gives no access to a camera here. Open the link `tether pair` printed instead.");
      return;
    }
    let decoder;
    try {
      decoder = await makeDecoder();
    } catch (err) {
      fail(err.message || String(err));
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    } catch (err) {
      fail(cameraError(err));
      return;
    }
    if (stopped) return stop();
    root.querySelector("#scan")?.setAttribute("data-decoder", decoder.name);
    video.srcObject = stream;
    try {
      await video.play();
    } catch {
      // autoplay of a muted stream is allowed; if not, frames still arrive once it plays
    }
    status.textContent = "Point the camera at the QR code `tether pair --qr` shows.";
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const tick = async () => {
      if (stopped) return;
      if (video.readyState >= 2 && video.videoWidth) {
        const scale = Math.min(1, 800 / Math.max(video.videoWidth, video.videoHeight));
        canvas.width = Math.round(video.videoWidth * scale);
        canvas.height = Math.round(video.videoHeight * scale);
        ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
        let text = null;
        try {
          text = await decoder.decode(canvas, ctx);
        } catch (err) {
          console.warn("QR decoding failed", err);
        }
        if (stopped) return;
        if (text !== null && text !== undefined) {
          const found = classifyScanned(text);
          if (found.error) {
            if (text !== lastBad) {
              lastBad = text;
              problem.replaceChildren(...withCode(`${found.error} Scan the code \`tether up\` or \`tether pair\` shows on your machine.`));
            }
          } else {
            stop();
            problem.textContent = "";
            status.textContent = "Pairing link found.";
            if (found.same !== undefined) open(found.same);
            else go(found.other);
            return;
          }
        }
      }
      timer = setTimeout(tick, SCAN_EVERY_MS);
    };
    tick();
  }

  replace(
    root,
    header({ title: "Scan a QR code" }),
    h(
      "section.screen.scan",
      { id: "scan", "aria-label": "Scan a pairing QR code" },
      h("p.hint", "Scan the QR code of a tether pairing link (`tether pair` on your machine)."),
      h("div.viewfinder", video),
      canvas,
      status,
      problem,
      h("div.actions", retry, h("a.button", { id: "scan-cancel", href: "#/", onclick: () => stop() }, "Cancel")),
    ),
  );
  start();
  return stop;
}
