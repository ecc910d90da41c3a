"""Printing for the CLI: human text by default, JSON when asked, errors with a next step."""

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

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEBUG = False


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


def report(error: TetherError) -> int:
    """Print an error and its next step; returns the exit code (2 for usage, else 1)."""
    err.print("[bold red]error:[/] ", markup=True, end="")
    err.print(error.message, markup=False)
    if error.hint:
        err.print(f"  → {error.hint}", markup=False)
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


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
