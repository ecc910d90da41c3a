import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tether.agents.builtin.tools import (
    TOOL_NAMES,
    TOOL_SPECS,
    ToolError,
    ToolRunner,
    parse_arguments,
    truncate_middle,
)
from tether.agents.sandbox import Sandbox, available

# The test's own interpreter may live under /tmp (hidden by the sandbox's private /tmp):
# commands inside the sandbox use the system's.
SANDBOX_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

needs_bwrap = pytest.mark.skipif(not available(), reason="bubblewrap unusable here")


def runner(ws: Path, mode: str = "workspace-write", **kw: object) -> ToolRunner:
    return ToolRunner(Sandbox(mode, ws), **kw)  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_specs_are_openai_function_tools() -> None:
    assert TOOL_NAMES == {"run_command", "read_file", "write_file", "edit_file", "list_dir"}
    for spec in TOOL_SPECS:
        assert spec["type"] == "function"
        params = spec["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) == set(params["properties"])
        json.dumps(spec)


def test_parse_arguments() -> None:
    assert parse_arguments("read_file", '{"path": "a"}') == {"path": "a"}
    with pytest.raises(ToolError, match="not valid JSON") as info:
        parse_arguments("write_file", '{"path": "a", "content": ')
    assert info.value.code == "tool_bad_json"
    with pytest.raises(ToolError, match="must be a JSON object"):
        parse_arguments("read_file", "[1]")
    with pytest.raises(ToolError, match="needs the argument"):
        parse_arguments("edit_file", '{"path": "a"}')
    with pytest.raises(ToolError, match="does not take"):
        parse_arguments("read_file", '{"path": "a", "x": 1}')
    with pytest.raises(ToolError, match="must be a string"):
        parse_arguments("run_command", '{"command": ["ls"]}')
    with pytest.raises(ToolError, match="unknown tool"):
        parse_arguments("rm_rf", "{}")


def test_truncate_middle() -> None:
    assert truncate_middle("abc", 10) == "abc"
    out = truncate_middle("a" * 100 + "b" * 100, 30)
    assert out.startswith("a" * 20) and out.endswith("b" * 10) and "170 characters omitted" in out


def test_paths_resolve_inside_or_are_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sub").mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (ws / "link_out").symlink_to(outside)
    (ws / "dir_out").symlink_to(tmp_path)
    (ws / "dangling_out").symlink_to(tmp_path / "new.txt")
    (ws / "link_in").symlink_to(ws / "sub")
    r = runner(ws)
    real = ws.resolve()
    assert r.resolve("a.txt") == real / "a.txt"
    assert r.resolve("sub/../b.txt") == real / "b.txt"
    assert r.resolve(".") == real
    assert r.resolve(str(real / "sub" / "c")) == real / "sub" / "c"
    assert r.resolve("link_in/x") == real / "sub" / "x"
    for bad in ["../secret.txt", "sub/../../secret.txt", str(outside), "/etc/passwd", "link_out",
                "dir_out/secret.txt", "dangling_out", "dir_out/new/file", "~/x"]:
        with pytest.raises(ToolError, match="outside the workspace"):
            r.resolve(bad)
    for bad in ["", "a\0b"]:
        with pytest.raises(ToolError, match="invalid path"):
            r.resolve(bad)


async def test_read_and_list(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "bin").write_bytes(b"\0\1\2")
    r = runner(tmp_path)
    res = await r.read_file("a.txt")
    assert res.ok and res.output == "hello\n" and res.path == "a.txt"
    listing = await r.list_dir(".")
    assert listing.output.splitlines() == ["a.txt", "bin", "d/"]
    with pytest.raises(ToolError, match="does not exist"):
        await r.read_file("nope.txt")
    with pytest.raises(ToolError, match="is a directory"):
        await r.read_file("d")
    with pytest.raises(ToolError, match="binary"):
        await r.read_file("bin")
    with pytest.raises(ToolError, match="not a directory"):
        await r.list_dir("a.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        await r.read_file("../../etc/passwd")


@pytest.mark.parametrize("mode", ["read-only", "workspace-write", "full-access"])
async def test_file_tools_obey_the_hide_list(tmp_path: Path, mode: str) -> None:
    """[6] item 7: what the sandbox hides from commands, the file tools refuse in every mode, by
    any path to it (direct, ``..``, a symlink, a symlinked parent), and listings leave it out."""
    secret_dir = tmp_path / ".tether" / "host"
    secret_dir.mkdir(parents=True)
    (secret_dir / "keys.json").write_text("the host's private key\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "link").symlink_to(secret_dir / "keys.json")
    (tmp_path / "hosted").symlink_to(tmp_path / ".tether")
    (tmp_path / "a.txt").write_text("fine\n")
    r = ToolRunner(Sandbox(mode, tmp_path, hide=[tmp_path / ".tether"]))  # type: ignore[arg-type]
    for path in (".tether/host/keys.json", "src/../.tether/host/keys.json", "src/link", "hosted/host/keys.json",
                 str(secret_dir / "keys.json")):
        with pytest.raises(ToolError, match="hidden from agents") as refused:
            await r.read_file(path)
        assert refused.value.code == "path_hidden"
    for path in (".tether", "hosted"):
        with pytest.raises(ToolError, match="hidden from agents"):
            await r.list_dir(path)
    with pytest.raises(ToolError, match="hidden from agents"):
        await r.prepare_change("write_file", {"path": "hosted/host/keys.json", "content": "mine"})
    assert (await r.list_dir(".")).output.splitlines() == ["a.txt", "hosted@", "src/"]
    assert (await r.read_file("a.txt")).output == "fine\n"


async def test_write_creates_with_diff(tmp_path: Path) -> None:
    r = runner(tmp_path)
    change = await r.prepare_change("write_file", {"path": "pkg/new.py", "content": "x = 1\n"})
    assert change.kind == "create"
    assert not (tmp_path / "pkg").exists()  # preparing writes nothing
    assert "--- /dev/null" in change.diff and "+++ b/pkg/new.py" in change.diff and "+x = 1" in change.diff
    res = await r.apply_change(change)
    assert res.ok and res.diff == change.diff and res.path == "pkg/new.py"
    assert (tmp_path / "pkg" / "new.py").read_text() == "x = 1\n"


async def test_edit_replaces_one_exact_occurrence(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("one\ntwo\nthree\ntwo\n")
    r = runner(tmp_path)
    change = await r.prepare_change("edit_file", {"path": "f.txt", "old": "one\n", "new": "ONE\n"})
    assert change.kind == "modify" and "-one" in change.diff and "+ONE" in change.diff
    await r.apply_change(change)
    assert (tmp_path / "f.txt").read_text() == "ONE\ntwo\nthree\ntwo\n"
    with pytest.raises(ToolError, match="occurs 2 times"):
        await r.prepare_change("edit_file", {"path": "f.txt", "old": "two", "new": "2"})
    with pytest.raises(ToolError, match="does not occur"):
        await r.prepare_change("edit_file", {"path": "f.txt", "old": "four", "new": "4"})
    with pytest.raises(ToolError, match="use write_file"):
        await r.prepare_change("edit_file", {"path": "g.txt", "old": "a", "new": "b"})


async def test_read_only_refuses_file_changes(tmp_path: Path) -> None:
    r = runner(tmp_path, "read-only")
    with pytest.raises(ToolError, match="read-only") as info:
        await r.prepare_change("write_file", {"path": "a.txt", "content": "x"})
    assert info.value.code == "sandbox_denied"
    assert not (tmp_path / "a.txt").exists()


async def test_writes_outside_are_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "out").symlink_to(tmp_path)
    r = runner(ws, "full-access")
    for path in ["../x.txt", str(tmp_path / "x.txt"), "out/x.txt"]:
        with pytest.raises(ToolError, match="outside the workspace"):
            await r.prepare_change("write_file", {"path": path, "content": "x"})
    assert not (tmp_path / "x.txt").exists()


async def test_symlink_swapped_after_approval_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    r = runner(ws)
    change = await r.prepare_change("write_file", {"path": "sub/a.txt", "content": "x"})
    (ws / "sub").rmdir()
    (ws / "sub").symlink_to(tmp_path)
    with pytest.raises(ToolError):
        await r.apply_change(change)
    assert not (tmp_path / "a.txt").exists()


async def test_command_output_and_exit_code(tmp_path: Path) -> None:
    r = runner(tmp_path, "full-access")
    chunks: list[str] = []
    res = await r.run_command("echo out; echo err >&2; exit 3", on_output=chunks.append)
    assert res.exit_code == 3 and not res.ok
    assert "out" in res.output and "err" in res.output and "".join(chunks) == res.output
    assert "exit code: 3" in res.for_model()


async def test_command_does_not_see_the_api_key(tmp_path: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-hidden-1", "OTHER": "sk-hidden-2", "FINE": "yes"}
    r = ToolRunner(Sandbox("full-access", tmp_path), env=env, secrets=["sk-hidden-2"])
    res = await r.run_command("env")
    assert "sk-hidden" not in res.output and "FINE=yes" in res.output


async def test_command_output_is_bounded(tmp_path: Path) -> None:
    r = runner(tmp_path, "full-access", max_event_output=1000)
    seen: list[str] = []
    res = await r.run_command("head -c 100000 /dev/zero | tr '\\0' a", on_output=seen.append)
    assert res.exit_code == 0 and res.truncated
    assert len("".join(seen)) < 1200 and "99000 more characters of output dropped" in res.output
    assert len(res.for_model()) < 40_000


async def test_command_timeout_kills(tmp_path: Path) -> None:
    r = runner(tmp_path, "full-access", command_timeout=0.5)
    start = time.monotonic()
    res = await r.run_command("echo started; sleep 30")
    assert time.monotonic() - start < 10
    assert res.timed_out and not res.ok and "timed out" in (res.error or "")
    assert "started" in res.output


@pytest.mark.parametrize("mode", ["full-access", pytest.param("workspace-write", marks=needs_bwrap)])
async def test_cancelling_kills_the_command_and_its_children(tmp_path: Path, mode: str) -> None:
    r = runner(tmp_path, mode)
    pidfile = tmp_path / "pid"
    # The grandchild's pid as the host sees it: the sandbox has its own pid namespace, so find it
    # by a unique marker instead.
    marker = f"tether-cancel-{os.getpid()}-{mode}"
    task = asyncio.create_task(
        r.run_command(f"{SANDBOX_PYTHON} -c 'import time; time.sleep(60)' {marker} & echo $! > pid; wait")
    )
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert find_procs(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not find_procs(marker):
            break
        await asyncio.sleep(0.05)
    assert not find_procs(marker)


def find_procs(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@needs_bwrap
async def test_read_only_command_cannot_write(tmp_path: Path) -> None:
    r = runner(tmp_path, "read-only")
    res = await r.run_command("touch file")
    assert res.exit_code != 0 and "Read-only file system" in res.output
    assert not (tmp_path / "file").exists()


@needs_bwrap
async def test_workspace_write_command(tmp_path: Path) -> None:
    r = runner(tmp_path, "workspace-write")
    res = await r.run_command("echo hi > made.txt && touch /etc/tether-tools-test")
    assert res.exit_code != 0
    assert (tmp_path / "made.txt").read_text() == "hi\n"
    assert not os.path.exists("/etc/tether-tools-test")


async def test_unavailable_sandbox_refuses_commands(tmp_path: Path) -> None:
    r = ToolRunner(Sandbox("workspace-write", tmp_path, bwrap="/nonexistent/bwrap"))
    with pytest.raises(ToolError, match="without bubblewrap"):
        await r.run_command("echo hi")
