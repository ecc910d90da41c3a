import asyncio
import os
import sys
from pathlib import Path

import pytest

from tether.agents import sandbox as sandbox_mod
from tether.agents.sandbox import Sandbox, SandboxDenied, SandboxError, SandboxUnavailable, available

# The test's own interpreter may live under /tmp (hidden by the sandbox's private /tmp):
# commands inside the sandbox use the system's.
SANDBOX_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

needs_bwrap = pytest.mark.skipif(not available(), reason=f"bubblewrap unusable here: {sandbox_mod.probe()[1]}")


def exists(path: Path | str) -> bool:
    return Path(path).exists()


async def run(argv: list[str], cwd: Path, timeout: float = 20) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


def test_full_access_runs_unwrapped(tmp_path: Path) -> None:
    box = Sandbox("full-access", tmp_path, bwrap="/nonexistent/bwrap")
    assert box.command(["echo", "hi"]) == ["echo", "hi"]
    box.ensure_available()  # nothing to check
    box.check_write("a.txt")


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="unknown sandbox mode"):
        Sandbox("yolo", tmp_path)  # type: ignore[arg-type]


@needs_bwrap
@pytest.mark.parametrize("mode", ["read-only", "workspace-write"])
def test_wrapping(tmp_path: Path, mode: str) -> None:
    box = Sandbox(mode, tmp_path)  # type: ignore[arg-type]
    argv = box.command(["sh", "-c", "true"])
    ws = os.path.realpath(tmp_path)
    assert argv[-4:] == ["--", "sh", "-c", "true"]
    joined = " ".join(argv)
    assert "--ro-bind / /" in joined
    assert "--dev /dev" in joined and "--proc /proc" in joined and "--tmpfs /tmp" in joined
    assert "--unshare-net" in argv and "--die-with-parent" in argv and "--new-session" in argv
    assert f"--chdir {ws}" in joined
    if mode == "workspace-write":
        assert f"--bind {ws} {ws}" in joined
    else:
        assert f"--bind {ws}" not in joined
        assert f"--ro-bind {ws} {ws}" in joined
    # The workspace mount comes after the private /tmp, or a workspace under /tmp would vanish.
    assert argv.index("--tmpfs") < argv.index(ws)


@pytest.mark.parametrize("mode", ["read-only", "workspace-write"])
def test_missing_bwrap_refuses_clearly(tmp_path: Path, mode: str) -> None:
    box = Sandbox(mode, tmp_path, bwrap="/nonexistent/bwrap")  # type: ignore[arg-type]
    with pytest.raises(SandboxUnavailable) as info:
        box.command(["true"])
    assert info.value.message == (
        f"refusing to run in {mode} mode without bubblewrap: install it (apt-get install bubblewrap)"
        " or choose full-access"
    )
    assert "/nonexistent/bwrap" in str(info.value)  # the hint says what was seen


async def test_prepare_refuses_without_blocking(tmp_path: Path) -> None:
    box = Sandbox("read-only", tmp_path, bwrap="/nonexistent/bwrap2")
    with pytest.raises(SandboxUnavailable):
        await box.prepare()


def test_bwrap_that_fails_is_unavailable(tmp_path: Path) -> None:
    # A bwrap that exists but cannot create namespaces (as in some containers).
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    ok, seen = sandbox_mod.probe(str(fake))
    assert not ok and "No permissions" in seen
    with pytest.raises(SandboxUnavailable, match="read-only mode without bubblewrap"):
        Sandbox("read-only", tmp_path, bwrap=str(fake)).command(["true"])


def test_other_platforms_refuse_sandboxed_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    ok, seen = sandbox_mod.probe()
    assert not ok and "only available on Linux" in seen
    with pytest.raises(SandboxUnavailable, match="workspace-write mode without bubblewrap"):
        Sandbox("workspace-write", tmp_path).command(["true"])
    assert Sandbox("full-access", tmp_path).command(["true"]) == ["true"]


def test_read_only_refuses_host_side_writes(tmp_path: Path) -> None:
    with pytest.raises(SandboxDenied, match="read-only"):
        Sandbox("read-only", tmp_path).check_write("a.txt")
    Sandbox("workspace-write", tmp_path).check_write("a.txt")


@needs_bwrap
async def test_read_only_blocks_writes_in_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "seen.txt").write_text("visible\n")
    box = Sandbox("read-only", tmp_path)
    code, out = await run(box.command(["sh", "-c", "cat seen.txt; pwd; touch file"]), tmp_path)
    assert code != 0
    assert "visible" in out
    assert os.path.realpath(str(tmp_path)) in out
    assert "Read-only file system" in out
    assert not (tmp_path / "file").exists()


@needs_bwrap
async def test_workspace_write_writes_only_in_the_workspace(tmp_path: Path) -> None:
    box = Sandbox("workspace-write", tmp_path)
    code, out = await run(box.command(["sh", "-c", "touch inside && echo ok"]), tmp_path)
    assert code == 0, out
    assert (tmp_path / "inside").exists()
    home = Path.home()
    for target in ["/etc/tether-sandbox-test", str(home / "tether-sandbox-test")]:
        code, out = await run(box.command(["sh", "-c", f"touch {target}"]), tmp_path)
        assert code != 0, out
        assert not exists(target)
    # /tmp inside is private: nothing leaks to the host's /tmp.
    code, _ = await run(box.command(["sh", "-c", "touch /tmp/tether-sandbox-private"]), tmp_path)
    assert code == 0
    assert not exists("/tmp/tether-sandbox-private")


CONNECT = (
    "import socket,sys\n"
    "s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3)\n"
    "print('CONNECTED', s.recv(10))\n"
)


@needs_bwrap
@pytest.mark.parametrize("mode,reachable", [("read-only", False), ("workspace-write", False), ("full-access", True)])
async def test_network_only_in_full_access(tmp_path: Path, mode: str, reachable: bool) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        box = Sandbox(mode, tmp_path)  # type: ignore[arg-type]
        code, out = await run(box.command([SANDBOX_PYTHON, "-c", CONNECT, str(port)]), tmp_path)
    finally:
        server.close()
        await server.wait_closed()
    if reachable:
        assert code == 0 and "CONNECTED b'hello'" in out, out
    else:
        assert code != 0 and "CONNECTED" not in out
        assert "refused" in out.lower() or "unreachable" in out.lower(), out
