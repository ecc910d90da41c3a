"""The root of tether's exception hierarchy.

Every error a person may see carries a stable ``code`` (for scripts and the wire), a
``message`` saying what went wrong, and a ``hint`` saying what to do next. Messages never
contain secrets (keys, pairing secrets, tokens).
"""

from __future__ import annotations


class TetherError(Exception):
    """An error with a code, a human message and an optional next step."""

    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  → {self.hint}"


class UsageError(TetherError):
    """Bad command-line arguments or input from the user (CLI exit code 2)."""

    code = "usage"


class ConfigError(TetherError):
    """A bad or missing file in the tether home."""

    code = "config"
