// Images attached to the next prompt: a button that opens the phone's picker (camera or photos),
// the chosen images as chips (tap to remove), and take() for the composer when it sends. A photo
// is shrunk to at most MAX_SIDE pixels as JPEG before it leaves the phone: the host takes at most
// 2 MiB an image and 4 MiB a message.
import { h } from "./dom.js";

const MAX_IMAGES = 4;
const MAX_SIDE = 1600;
const KEEP_AS_IS_BYTES = 1024 * 1024; // a smaller PNG or JPEG goes as it is (a screenshot stays sharp)
const TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function prepared(file) {
  if (TYPES.includes(file.type) && file.size <= KEEP_AS_IS_BYTES) {
    return { name: file.name, mime: file.type, data: base64(await file.arrayBuffer()) };
  }
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  return { name: file.name.replace(/\.[^.]*$/, "") + ".jpg", mime: "image/jpeg", data: base64(await blob.arrayBuffer()) };
}

export function imagePicker({ onError }) {
  let images = [];
  const chips = h("div.attachments", { id: "attachments" });
  const picker = h("input", {
    id: "attach-input", type: "file", accept: TYPES.join(","), multiple: true, hidden: true,
    onchange: async () => {
      const files = [...picker.files].slice(0, MAX_IMAGES - images.length);
      picker.value = "";
      try {
        for (const file of files) images.push(await prepared(file));
      } catch (err) {
        onError(new Error(`That image could not be read: ${err.message || err}`));
      }
      draw();
    },
  });
  const button = h("button.link", { id: "attach", type: "button", "aria-label": "Attach an image", onclick: () => picker.click() }, "📎");
  function draw() {
    chips.replaceChildren(...images.map((image, i) => h("button.chip", {
      type: "button", title: "Remove", dataset: { name: image.name },
      onclick: () => { images.splice(i, 1); draw(); },
    }, `📎 ${image.name} ×`)));
    button.disabled = images.length >= MAX_IMAGES;
  }
  return {
    button, chips, picker,
    take() {
      const taken = images;
      images = [];
      draw();
      return taken;
    },
  };
}
