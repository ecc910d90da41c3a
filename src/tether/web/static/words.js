// A command line split into words as a POSIX shell splits them (no shell runs it: the words are
// the program and its arguments). Single quotes keep everything literally; double quotes keep
// everything but \" \\ \$ \` and a backslash-newline; outside quotes a backslash keeps the next
// character (a backslash-newline disappears). Nothing is expanded: $HOME stays "$HOME".
//
//   shellWords("bash -c 'echo hi; sleep 2'")  ->  ["bash", "-c", "echo hi; sleep 2"]
//   shellWords("echo 'unclosed")             ->  throws Error("… no closing ' …")

const BLANK = /[ \t\n]/;
const DOUBLE_ESCAPES = new Set(['"', "\\", "$", "`", "\n"]);

export function shellWords(line) {
  const words = [];
  let word = null; // null: between words; "" is a word (from '' or "")
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (BLANK.test(c)) {
      if (word !== null) words.push(word);
      word = null;
      i += 1;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error("The command has a ' with no closing '.");
      word = (word ?? "") + line.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      word ??= "";
      i += 1;
      for (;;) {
        if (i >= line.length) throw new Error('The command has a " with no closing ".');
        const d = line[i];
        if (d === '"') break;
        if (d === "\\" && i + 1 < line.length && DOUBLE_ESCAPES.has(line[i + 1])) {
          if (line[i + 1] !== "\n") word += line[i + 1];
          i += 2;
        } else {
          word += d;
          i += 1;
        }
      }
      i += 1;
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw new Error("The command ends with a \\ that escapes nothing.");
      if (line[i + 1] !== "\n") word = (word ?? "") + line[i + 1];
      i += 2;
    } else {
      word = (word ?? "") + c;
      i += 1;
    }
  }
  if (word !== null) words.push(word);
  return words;
}
