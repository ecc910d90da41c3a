"""Printing for the CLI: human text by default, JSON when asked, errors with a next step.

What the CLI prints comes largely from elsewhere: device and token names that a paired device
chose, session commands and titles, Codex thread previews, messages from a host. A terminal acts
on control characters in them (OSC 52 writes the clipboard, others set the title, clear the screen
or hide text), so every string printed through ``out`` and ``err`` is passed through
:func:`escape_controls`, and rich markup is off unless a call asks for it for its own text.
``--json`` needs nothing: JSON escapes control characters itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from tether.errors import TetherError, UsageError

T = TypeVar("T")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with each character a terminal could act on written as a Python escape (``\\x1b``,
    ``\\x9b``, ``\\n``, ``\\u202e``): C0 and C1 controls, DEL, and the invisible format
    characters (bidi overrides) that can make text read as something else. ``keep``: controls to
    leave as they are (a diff keeps its newlines and tabs)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escaped(c) for c in text)


class SafeConsole(Console):
    """A console whose every printed string goes through :func:`escape_controls`."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(escape_controls(o) if isinstance(o, str) else o for o in objects), **kwargs)


out = SafeConsole(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)

DEBUG = False


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


def report(error: TetherError) -> int:
    """Print an error and its next step; returns the exit code (2 for usage, else 1)."""
    err.print("[bold red]error:[/] ", markup=True, end="")
    err.print(error.message)
    if error.hint:
        err.print(f"  → {error.hint}")
    return 2 if isinstance(error, UsageError) else 1


def fail(error: TetherError) -> NoReturn:
    raise typer.Exit(report(error))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async command; a TetherError becomes a message and an exit code, not a traceback."""
    try:
        return asyncio.run(coro)
    except TetherError as exc:
        if DEBUG:
            raise
        fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


class _SafeFormatter(logging.Formatter):
    """Log lines of `tether host`, `relay` and `up` name devices and quote peers: escaped like
    everything else printed (a traceback keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
