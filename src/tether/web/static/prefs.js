// This browser's own preferences (localStorage; for every host): how many lines a terminal keeps.
const SCROLLBACK = "tether.scrollback";
export const SCROLLBACK_CHOICES = [1000, 5000, 20000, 100000];
const DEFAULT_SCROLLBACK = 5000;

export function scrollbackLines() {
  try {
    const n = Number(localStorage.getItem(SCROLLBACK));
    return SCROLLBACK_CHOICES.includes(n) ? n : DEFAULT_SCROLLBACK;
  } catch {
    return DEFAULT_SCROLLBACK; // storage refused (private mode)
  }
}

export function setScrollbackLines(n) {
  try {
    localStorage.setItem(SCROLLBACK, String(n));
  } catch {
    // storage refused: the choice lasts as long as the page
  }
}
