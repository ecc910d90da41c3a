"""Secrets the CLI is given: never on the command line, which every local user can read.

``ps`` and ``/proc/PID/cmdline`` show any process's arguments to every user of the machine; a
second local user polling them took a pairing link 20 ms after it appeared and paired first. A
secret is read from stdin (a hidden prompt on a terminal) or from an environment variable
(``/proc/PID/environ`` is readable by the process's own user only). One given as an argument is
refused before it is used, so the link's offer is still there for the right device.
"""

from __future__ import annotations

import getpass
import os
import sys

from tether.client import TOKEN_ENV
from tether.errors import UsageError

PAIR_LINK_ENV = "TETHER_PAIR_LINK"

_VISIBLE = "other users of this machine can read command lines (ps, /proc/PID/cmdline)"


def refuse_pairing_link_argument() -> UsageError:
    return UsageError(
        f"refused to use a pairing link given on the command line: {_VISIBLE}; nothing was paired",
        hint=f"run `tether login` and paste the link at the prompt, or pipe it in (`tether login - < FILE`), "
        f"or set {PAIR_LINK_ENV}. If others use this machine, make a new link with `tether pair`: this one "
        "may have been seen",
    )


def refuse_token_option() -> UsageError:
    return UsageError(
        f"refused to use an access token given with --token: {_VISIBLE}",
        hint=f"set {TOKEN_ENV} instead (e.g. `read -rs {TOKEN_ENV} && export {TOKEN_ENV}`, then paste it). "
        "If others use this machine, revoke this token (`tether tokens revoke ID`) and create a new one",
    )


def read_secret(what: str, env_var: str | None, *, from_stdin: bool) -> str:
    """``what`` from ``env_var`` (unless ``from_stdin``), else one line of stdin: a prompt that
    does not echo on a terminal, the first line of a pipe. UsageError when there is none."""
    if not from_stdin and env_var and os.environ.get(env_var, "").strip():
        return os.environ[env_var].strip()
    try:
        if sys.stdin.isatty():
            text = getpass.getpass(f"Paste the {what} (not shown): ", stream=sys.stderr)
        else:
            text = sys.stdin.readline()
    except EOFError:
        text = ""
    if not text.strip():
        via = f", or set {env_var}" if env_var else ""
        raise UsageError(f"no {what} given", hint=f"paste it at the prompt or pipe it to stdin{via}")
    return text.strip()
