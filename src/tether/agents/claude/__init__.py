"""tether's ``claude`` adapter: the Claude Code CLI driven in stream-json mode (ARCHITECTURE §7).

:mod:`.stream` is the wire format (sans I/O), :mod:`.binary` finds a supported binary,
:mod:`.process` runs one and carries its control channel, :mod:`.adapter` maps it onto
sessions, turns, items and approvals. ``scripts/install-claude`` installs the pinned version.
"""

from tether.agents.claude.binary import (
    PINNED_VERSION,
    QUIET_ENV,
    SUPPORTED_VERSIONS,
    ClaudeBinary,
    ClaudeError,
    find_claude,
)
from tether.agents.claude.process import ClaudeExited, ClaudeProcess, Exited
from tether.agents.claude.stream import LineDecoder, StreamError, parse_line

__all__ = [
    "PINNED_VERSION",
    "QUIET_ENV",
    "SUPPORTED_VERSIONS",
    "ClaudeBinary",
    "ClaudeError",
    "ClaudeExited",
    "ClaudeProcess",
    "Exited",
    "LineDecoder",
    "StreamError",
    "find_claude",
    "parse_line",
]
