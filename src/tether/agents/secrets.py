"""The host's secrets as every agent sees them: which variables are secrets, and redacting them.

One definition for all agents (builtin, claude, codex) and pty sessions:

- a variable is a secret when its name contains one of :data:`SECRET_NAME_PARTS` (any case);
- its value is redacted from everything a session's events and a model receive, when it is at
  least :data:`MIN_SECRET_CHARS` long (shorter values would redact innocent text: a "1" or "true"
  in a variable named ``*_TOKEN_TTL``);
- it is removed from the environment of pty sessions and of the commands agents run
  (:func:`without_secrets`).

Redaction replaces the leftmost, longest secret at each position with :data:`REDACTED`.
:class:`StreamRedactor` gives exactly the same result for a text that arrives in chunks, however
it is split: it holds back at most the longest secret's length − 1 characters, only while they
could still turn into a secret, and :meth:`StreamRedactor.flush` releases them when the stream
ends (the item completes, the turn ends or is interrupted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

REDACTED = "[redacted]"
# The parts of a variable name that say it holds a secret.
SECRET_NAME_PARTS = (
    "API_KEY", "APIKEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE_KEY", "PRIVATEKEY",
    "ACCESS_KEY", "ACCESSKEY",
)
SECRET_NAME = re.compile("|".join(re.escape(part) for part in SECRET_NAME_PARTS), re.I)
MIN_SECRET_CHARS = 8


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of the variables whose names say they hold a secret, longest first."""
    return sorted({v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_CHARS},
                  key=len, reverse=True)


def without_secrets(env: Mapping[str, str], *, keep: Iterable[str] = ()) -> dict[str, str]:
    """``env`` without its secret variables (those named in ``keep`` stay)."""
    kept = set(keep)
    return {k: v for k, v in env.items() if k in kept or not is_secret_name(k)}


class Redactor:
    """Replaces secrets in whole strings, and in streams where a secret may span chunks."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: at one position the longest secret wins (one containing another is
        # redacted whole).
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self.pattern = re.compile("|".join(re.escape(s) for s in self.secrets)) if self.secrets else None
        self.longest = len(self.secrets[0]) if self.secrets else 0

    def __call__(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text) if self.pattern is not None else text

    def value(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        if isinstance(obj, msgspec.Struct):  # an event's data, as the adapters build it
            return msgspec.structs.replace(obj, **{f: self.value(getattr(obj, f)) for f in obj.__struct_fields__})
        return obj

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def could_grow(self, text: str, start: int) -> bool:
        """Whether ``text[start:]`` is a proper prefix of a secret: more text could make it one."""
        tail = text[start:]
        return any(len(s) > len(tail) and s.startswith(tail) for s in self.secrets)


class StreamRedactor:
    """Redacts one stream chunk by chunk; the output is the same as redacting the whole text."""

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor
        self._pending = ""

    def feed(self, chunk: str) -> str:
        pattern = self._redact.pattern
        if pattern is None:
            return chunk
        buf = self._pending + chunk
        out: list[str] = []
        pos = 0
        while True:
            # Everything before ``hold`` is final: no secret can start there once more text comes.
            hold = next((j for j in range(max(pos, len(buf) - self._redact.longest + 1), len(buf))
                         if self._redact.could_grow(buf, j)), len(buf))
            match = pattern.search(buf, pos)
            if match is None or match.start() >= hold:
                out.append(buf[pos:hold])
                self._pending = buf[hold:]
                return "".join(out)
            out += [buf[pos:match.start()], REDACTED]
            pos = match.end()

    def flush(self) -> str:
        """What was held back, redacted: the stream has ended."""
        rest, self._pending = self._pending, ""
        return self._redact(rest)
