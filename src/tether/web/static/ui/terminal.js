// Terminal output as plain text for a <pre>: escape sequences removed, carriage returns and
// backspaces applied per line. A full terminal emulator can replace this without touching the rest.

const OSC = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;
const CSI = /\x1b\[[0-?]*[ -/]*[@-~]/g;
const ESC = /\x1b[@-Z\\-_]|\x1b[()][0-9A-Za-z]/g;
const CONTROL = /[\x00-\x07\x0b\x0c\x0e-\x1f\x7f]/g;

function applyLine(line) {
  // "\r" returns to column 0: later text overwrites earlier text.
  let out = [];
  let col = 0;
  for (const ch of line) {
    if (ch === "\r") col = 0;
    else if (ch === "\b") col = Math.max(0, col - 1);
    else {
      out[col] = ch;
      col += 1;
    }
  }
  return out.join("");
}

export function toPlainText(raw) {
  const text = raw.replace(OSC, "").replace(CSI, "").replace(ESC, "").replace(/\r\n/g, "\n");
  return text
    .split("\n")
    .map(applyLine)
    .join("\n")
    .replace(CONTROL, "");
}
