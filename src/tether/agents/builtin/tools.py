"""The built-in agent's tools: their JSON schemas for the model, and running them.

Five tools:

- ``run_command(command)``: a shell command (``/bin/sh -c``) in the workspace, inside the sandbox.
- ``read_file(path)``: a text file in the workspace.
- ``write_file(path, content)``: create or replace a file in the workspace.
- ``edit_file(path, old, new)``: replace one exact occurrence of ``old`` by ``new``. Chosen over a
  patch format because models get exact-string replacement right far more often than they get
  hunk headers right; the unified diff is computed here, for the events.
- ``list_dir(path)``: the entries of a directory in the workspace.

Paths the model gives are relative to the workspace (absolute ones are accepted only when they
point inside it). Every path is resolved with ``realpath``, so ``..`` and symlinks that lead out
are refused; a new file's parent is resolved the same way. Paths the sandbox hides from commands
(the host's home) are refused too, in every mode, and left out of listings. File changes run in the host process,
not inside bwrap, so they ask the sandbox (``read-only`` refuses them).

Commands do not see the model's API key: the variables named in ``hidden_env`` (and any variable
holding a secret) are removed from their environment.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import difflib
import json
import os
import signal
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tether.agents.sandbox import Sandbox, SandboxError
from tether.errors import TetherError

# What the model sees of one tool result; the rest is elided from the middle.
MAX_TOOL_OUTPUT = 32 * 1024
# What the events receive of one command's output; past it the command keeps running but the
# output is dropped (and the drop said), so a `yes` cannot fill the host's disk.
MAX_COMMAND_OUTPUT_EVENTS = 1024 * 1024
MAX_READ_BYTES = 1024 * 1024
MAX_WRITE_BYTES = 4 * 1024 * 1024
MAX_DIFF_CHARS = 256 * 1024
MAX_DIR_ENTRIES = 1000
DEFAULT_COMMAND_TIMEOUT = 600.0
KILL_GRACE_SECONDS = 2.0
READ_CHUNK = 64 * 1024

HIDDEN_ENV = ("OPENAI_API_KEY",)

ToolName = Literal["run_command", "read_file", "write_file", "edit_file", "list_dir"]
FILE_CHANGE_TOOLS = frozenset({"write_file", "edit_file"})


class ToolError(TetherError):
    """A tool call that cannot be carried out; its message goes back to the model."""

    code = "tool"


def _fn(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


_PATH = {"type": "string", "description": "a path relative to the workspace"}

TOOL_SPECS: list[dict[str, Any]] = [
    _fn(
        "run_command",
        "Run a shell command (/bin/sh -c) in the workspace and return its output and exit code.",
        {"command": {"type": "string", "description": "the shell command line"}},
    ),
    _fn("read_file", "Read a UTF-8 text file.", {"path": _PATH}),
    _fn(
        "write_file",
        "Create a file, or replace the whole content of an existing one. Missing directories are created.",
        {"path": _PATH, "content": {"type": "string", "description": "the complete new content"}},
    ),
    _fn(
        "edit_file",
        "Replace exactly one occurrence of `old` in a file by `new`. `old` must match the file exactly "
        "(whitespace included) and occur once; include surrounding lines to make it unique.",
        {
            "path": _PATH,
            "old": {"type": "string", "description": "the exact text to replace"},
            "new": {"type": "string", "description": "the replacement text"},
        },
    ),
    _fn("list_dir", "List the entries of a directory ('.' for the workspace itself).", {"path": _PATH}),
]

TOOL_NAMES = frozenset(spec["function"]["name"] for spec in TOOL_SPECS)


def parse_arguments(name: str, raw: str) -> dict[str, str]:
    """The arguments of a tool call, checked against its schema; :class:`ToolError` otherwise."""
    if name not in TOOL_NAMES:
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(sorted(TOOL_NAMES))}", code="tool_unknown")
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ToolError(f"the arguments of {name} are not valid JSON ({exc}); send a JSON object",
                        code="tool_bad_json") from None
    if not isinstance(args, dict):
        raise ToolError(f"the arguments of {name} must be a JSON object", code="tool_bad_args")
    spec = next(s for s in TOOL_SPECS if s["function"]["name"] == name)
    required: list[str] = spec["function"]["parameters"]["required"]
    missing = [k for k in required if k not in args]
    if missing:
        raise ToolError(f"{name} needs the argument(s) {', '.join(missing)}", code="tool_bad_args")
    unknown = sorted(set(args) - set(required))
    if unknown:
        raise ToolError(f"{name} does not take the argument(s) {', '.join(unknown)}", code="tool_bad_args")
    for key in required:
        if not isinstance(args[key], str):
            raise ToolError(f"the argument {key} of {name} must be a string", code="tool_bad_args")
    return {k: args[k] for k in required}


def truncate_middle(text: str, limit: int = MAX_TOOL_OUTPUT) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start and its end."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[… {len(text) - head - tail} characters omitted …]\n{text[-tail:]}"


@dataclass
class ToolResult:
    """The outcome of one tool call: what the model is told and what the events show."""

    ok: bool
    output: str = ""
    error: str | None = None
    exit_code: int | None = None
    diff: str | None = None
    path: str | None = None
    denied: bool = False
    timed_out: bool = False
    truncated: bool = False

    def for_model(self) -> str:
        if self.denied:
            why = self.error or "the user denied this action"
            return f"Denied: {why}. Do not retry it; ask the user or try another way."
        if self.error and self.exit_code is None:
            return f"Error: {self.error}"
        parts = []
        if self.exit_code is not None:
            parts.append(f"exit code: {self.exit_code}" + (" (timed out, killed)" if self.timed_out else ""))
        if self.error and self.exit_code is not None:
            parts.append(f"error: {self.error}")
        if self.output:
            parts.append(truncate_middle(self.output))
        if self.diff is not None:
            parts.append(truncate_middle(self.diff) if self.diff else "(no change)")
        return "\n".join(parts) if parts else "(no output)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "output": self.output, "error": self.error, "exit_code": self.exit_code,
            "diff": self.diff, "path": self.path, "denied": self.denied, "timed_out": self.timed_out,
            "truncated": self.truncated,
        }


@dataclass
class FileChange:
    """A write or an edit, computed but not yet applied (so the diff can be approved first)."""

    path: Path  # resolved, inside the workspace
    display: str  # as shown to people: relative to the workspace
    before: str | None  # None: the file does not exist yet
    after: str
    diff: str = field(default="")

    @property
    def kind(self) -> Literal["create", "modify"]:
        return "create" if self.before is None else "modify"


def unified_diff(display: str, before: str | None, after: str) -> str:
    diff = "".join(
        difflib.unified_diff(
            (before or "").splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile="/dev/null" if before is None else f"a/{display}",
            tofile=f"b/{display}",
        )
    )
    return diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n[… diff truncated …]\n"


OutputSink = Callable[[str], None]


class ToolRunner:
    """Runs the tools for one session in one workspace under one sandbox."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        env: Mapping[str, str] | None = None,
        hidden_env: Iterable[str] = HIDDEN_ENV,
        secrets: Iterable[str] = (),
        max_output: int = MAX_TOOL_OUTPUT,
        max_event_output: int = MAX_COMMAND_OUTPUT_EVENTS,
    ) -> None:
        self.sandbox = sandbox
        self.workspace = sandbox.workspace
        self.command_timeout = command_timeout
        self.max_output = max_output
        self.max_event_output = max_event_output
        secret_values = {s for s in secrets if s}
        hidden = set(hidden_env)
        base = dict(os.environ if env is None else env)
        self.env = {k: v for k, v in base.items() if k not in hidden and v not in secret_values}

    # ---- paths -------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """``path`` resolved inside the workspace, or :class:`ToolError` if it leads out."""
        if not path or "\0" in path:
            raise ToolError("empty or invalid path", code="path_invalid")
        given = Path(path).expanduser() if path.startswith("~") else Path(path)
        joined = given if given.is_absolute() else self.workspace / given
        # realpath follows every symlink, dangling ones included, so a link that points out of
        # the workspace (or a parent that does) is seen for what it is.
        real = Path(os.path.realpath(joined))
        if real != self.workspace and not real.is_relative_to(self.workspace):
            raise ToolError(f"refusing {path!r}: it is outside the workspace", code="path_outside")
        if self._hidden(real):
            raise ToolError(f"refusing {path!r}: it is hidden from agents", code="path_hidden")
        return real

    def _hidden(self, real: Path) -> bool:
        # The same list the sandbox covers for commands (the host's home), so a file tool cannot
        # read what a command could not.
        return any(real == p or real.is_relative_to(p) for p in self.sandbox.hide)

    def display(self, real: Path) -> str:
        rel = real.relative_to(self.workspace)
        return str(rel) if str(rel) != "." else "."

    # ---- read-only tools ---------------------------------------------------------------

    # realpath and stat touch the disk (an NFS workspace can stall), so they run off the loop.

    async def read_file(self, path: str) -> ToolResult:
        real = await asyncio.to_thread(self.resolve, path)
        shown = self.display(real)
        text, size = await asyncio.to_thread(self._read_text, real, shown, MAX_READ_BYTES)
        truncated = size > MAX_READ_BYTES
        if truncated:
            text += f"\n[… file truncated at {MAX_READ_BYTES} of {size} bytes …]"
        return ToolResult(ok=True, output=text, path=shown, truncated=truncated)

    @staticmethod
    def _read_text(real: Path, shown: str, limit: int) -> tuple[str, int]:
        try:
            st = real.stat()
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{shown} is a directory; use list_dir", code="is_dir")
            if not stat.S_ISREG(st.st_mode):
                raise ToolError(f"{shown} is not a regular file", code="not_file")
            with real.open("rb") as f:
                data = f.read(limit)
        except FileNotFoundError:
            raise ToolError(f"{shown} does not exist", code="not_found") from None
        except PermissionError:
            raise ToolError(f"permission denied reading {shown}", code="permission") from None
        if b"\0" in data[:8192]:
            raise ToolError(f"{shown} looks like a binary file; not shown", code="binary")
        return data.decode("utf-8", errors="replace"), st.st_size

    async def list_dir(self, path: str) -> ToolResult:
        real = await asyncio.to_thread(self.resolve, path)
        shown = self.display(real)
        return await asyncio.to_thread(self._list, real, shown)

    def _list(self, real: Path, shown: str) -> ToolResult:
        try:
            with os.scandir(real) as it:
                # A hidden directory is left out, as the sandbox's empty tmpfs shows it to commands.
                entries = sorted((e for e in it if not self._hidden(real / e.name)), key=lambda e: e.name)
        except FileNotFoundError:
            raise ToolError(f"{shown} does not exist", code="not_found") from None
        except NotADirectoryError:
            raise ToolError(f"{shown} is not a directory", code="not_dir") from None
        except PermissionError:
            raise ToolError(f"permission denied listing {shown}", code="permission") from None
        lines = []
        for entry in entries[:MAX_DIR_ENTRIES]:
            if entry.is_symlink():
                lines.append(f"{entry.name}@")
            elif entry.is_dir():
                lines.append(f"{entry.name}/")
            else:
                lines.append(entry.name)
        if len(entries) > MAX_DIR_ENTRIES:
            lines.append(f"[… {len(entries) - MAX_DIR_ENTRIES} more entries …]")
        return ToolResult(ok=True, output="\n".join(lines) if lines else "(empty directory)", path=shown,
                          truncated=len(entries) > MAX_DIR_ENTRIES)

    # ---- file changes: prepare (for approval), then apply -------------------------------

    async def prepare_change(self, name: str, args: Mapping[str, str]) -> FileChange:
        """Compute a write or edit and its diff without touching the file."""
        real = await asyncio.to_thread(self.resolve, args["path"])
        shown = self.display(real)
        self._check_writable(shown)
        if real == self.workspace:
            raise ToolError("cannot write to the workspace directory itself", code="is_dir")
        before = await asyncio.to_thread(self._current, real, shown)
        if name == "write_file":
            after = args["content"]
        elif name == "edit_file":
            old, new = args["old"], args["new"]
            if before is None:
                raise ToolError(f"{shown} does not exist; use write_file to create it", code="not_found")
            if not old:
                raise ToolError("edit_file needs a non-empty `old`", code="tool_bad_args")
            count = before.count(old)
            if count == 0:
                raise ToolError(f"`old` does not occur in {shown}; read the file and copy the text exactly",
                                code="edit_no_match")
            if count > 1:
                raise ToolError(f"`old` occurs {count} times in {shown}; include more context to make it unique",
                                code="edit_ambiguous")
            after = before.replace(old, new, 1)
        else:
            raise ToolError(f"{name} does not change files", code="tool_unknown")
        if len(after.encode()) > MAX_WRITE_BYTES:
            raise ToolError(f"refusing to write more than {MAX_WRITE_BYTES} bytes to {shown}", code="too_large")
        return FileChange(path=real, display=shown, before=before, after=after,
                          diff=unified_diff(shown, before, after))

    def _check_writable(self, shown: str) -> None:
        try:
            self.sandbox.check_write(shown)
        except SandboxError as exc:
            raise ToolError(exc.message, code=exc.code) from None

    @staticmethod
    def _current(real: Path, shown: str) -> str | None:
        try:
            st = real.stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{shown} exists and is not a regular file", code="not_file")
        if st.st_size > MAX_WRITE_BYTES:
            raise ToolError(f"{shown} is too large to edit here ({st.st_size} bytes)", code="too_large")
        data = real.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{shown} is not UTF-8 text; not editing it", code="binary") from None

    async def apply_change(self, change: FileChange) -> ToolResult:
        # Asked again at apply time: the approval may have taken minutes.
        self._check_writable(change.display)
        # And the path again: a command run meanwhile may have swapped a parent for a symlink.
        if await asyncio.to_thread(self.resolve, str(change.path)) != change.path:
            raise ToolError(f"{change.display} changed while waiting for approval; try again", code="path_changed")
        await asyncio.to_thread(self._write, change)
        return ToolResult(ok=True, output=f"{'created' if change.kind == 'create' else 'updated'} {change.display}",
                          diff=change.diff, path=change.display)

    def _write(self, change: FileChange) -> None:
        try:
            change.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: never write through a symlink planted at the last moment.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(change.path, flags, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(change.after.encode())
        except PermissionError:
            raise ToolError(f"permission denied writing {change.display}", code="permission") from None
        except OSError as exc:
            raise ToolError(f"cannot write {change.display}: {exc.strerror or exc}", code="write_failed") from None

    # ---- commands ----------------------------------------------------------------------

    async def run_command(self, command: str, on_output: OutputSink | None = None) -> ToolResult:
        """Run ``command`` in the sandbox; stream its output to ``on_output``.

        Cancelling the calling task kills the command (and, in a sandbox, everything it started)
        before the cancellation goes on.
        """
        if not command.strip():
            raise ToolError("empty command", code="tool_bad_args")
        try:
            await self.sandbox.prepare()
            argv = self.sandbox.command(["/bin/sh", "-c", command])
        except SandboxError as exc:
            raise ToolError(str(exc), code=exc.code) from None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=self.workspace, env=self.env, start_new_session=True,
            )
        except OSError as exc:
            raise ToolError(f"cannot start the command: {exc.strerror or exc}", code="spawn_failed") from None
        assert proc.stdout is not None
        collected: list[str] = []
        sent = 0
        dropped = 0
        timed_out = False

        async def pump() -> None:
            nonlocal sent, dropped
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            assert proc.stdout is not None
            while True:
                chunk = await proc.stdout.read(READ_CHUNK)
                text = decoder.decode(chunk, final=not chunk)
                if text:
                    if sent < self.max_event_output:
                        keep = text[: self.max_event_output - sent]
                        sent += len(keep)
                        dropped += len(text) - len(keep)
                        collected.append(keep)
                        if on_output is not None:
                            on_output(keep)
                    else:
                        dropped += len(text)
                if not chunk:
                    return

        try:
            try:
                await asyncio.wait_for(pump(), self.command_timeout)
            except TimeoutError:
                timed_out = True
                await _kill(proc)
            code = await proc.wait()
        except BaseException:
            await asyncio.shield(_kill(proc))
            raise
        output = "".join(collected)
        if dropped:
            note = f"\n[… {dropped} more characters of output dropped …]"
            output += note
            if on_output is not None:
                on_output(note)
        return ToolResult(
            ok=code == 0 and not timed_out,
            output=output,
            exit_code=code,
            timed_out=timed_out,
            truncated=bool(dropped),
            error=f"timed out after {self.command_timeout:g} s" if timed_out else None,
        )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's process group and reap it."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS)
