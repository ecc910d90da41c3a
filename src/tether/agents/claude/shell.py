"""The shell Claude Code's commands run through: without Claude Code's own credentials.

Claude Code needs its key in its environment and passes that environment on to every Bash
command. ``CLAUDE_CODE_SHELL_PREFIX`` names a program it runs each command through (as
``PREFIX 'command line'``); tether's removes the credentials and hands the line to the shell.
(``CLAUDE_CODE_SUBPROCESS_ENV_SCRUB`` would remove them too, but in 2.1.332 it also turns the
filesystem sandbox off: a command wrote outside the workspace.)
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Iterable
from pathlib import Path

SHELL_NAME = "tether-claude-shell"


def write_shell(remove: Iterable[str]) -> Path:
    """A new private directory holding the wrapper that unsets ``remove``; returns the wrapper.

    The caller deletes the directory when the session ends.
    """
    directory = Path(tempfile.mkdtemp(prefix="tether-claude-"))
    unset = " ".join(f"-u {shlex.quote(name)}" for name in sorted(set(remove)))
    shell = directory / SHELL_NAME
    # The shell Claude Code would have run the line with (it prepared the line for it).
    shell.write_text(
        "#!/bin/sh\n"
        'case "${SHELL:-}" in */bash|*/zsh) run="$SHELL" ;; *) run=bash ;; esac\n'
        f'exec env {unset} "$run" -c "$@"\n'
    )
    shell.chmod(0o700)
    return shell
