import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tether.agents.pty import PtyError, PtyProcess


async def read_all(proc: PtyProcess, timeout: float = 10.0) -> bytes:
    async def go() -> bytes:
        out = bytearray()
        while chunk := await proc.read():
            out += chunk
        return bytes(out)

    return await asyncio.wait_for(go(), timeout)


async def test_echo_and_exit_code(tmp_path: Path) -> None:
    proc = await PtyProcess.spawn(["echo", "hi"], cwd=tmp_path)
    assert proc.pid > 0
    out = await read_all(proc)
    assert out == b"hi\r\n"  # the tty turns \n into \r\n
    assert await asyncio.wait_for(proc.wait(), 5) == 0
    assert proc.returncode == 0
    proc.close()
    assert await proc.read() == b""


async def test_exit_code(tmp_path: Path) -> None:
    proc = await PtyProcess.spawn(["sh", "-c", "exit 3"], cwd=tmp_path)
    await read_all(proc)
    assert await asyncio.wait_for(proc.wait(), 5) == 3
    proc.close()


async def test_is_a_terminal_in_cwd_with_env(tmp_path: Path) -> None:
    proc = await PtyProcess.spawn(
        ["sh", "-c", 'test -t 0 && test -t 1 && pwd && echo "$FOO $TERM" && tty'],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "FOO": "bar"},
    )
    lines = (await read_all(proc)).decode().splitlines()
    assert await proc.wait() == 0
    assert lines[0] == str(await asyncio.to_thread(tmp_path.resolve))
    assert lines[1] == "bar xterm-256color"
    assert lines[2].startswith("/dev/")
    proc.close()


async def test_interrupt_stops_sleep_promptly(tmp_path: Path) -> None:
    proc = await PtyProcess.spawn(["sleep", "30"], cwd=tmp_path)
    await asyncio.sleep(0.2)  # let it start
    started = time.monotonic()
    proc.interrupt()
    code = await asyncio.wait_for(proc.wait(), 5)
    assert code == -2  # SIGINT, as subprocess reports it
    assert time.monotonic() - started < 2
    await read_all(proc)
    proc.close()


async def test_resize_seen_by_stty(tmp_path: Path) -> None:
    proc = await PtyProcess.spawn(["sh"], cwd=tmp_path, cols=100, rows=30, env={**os.environ, "PS1": ""})
    proc.write(b"stty size\n")
    first = b""
    while b"30 100" not in first:
        first += await asyncio.wait_for(proc.read(), 5)
    proc.resize(132, 43)
    proc.write(b"stty size; exit\n")
    out = (first + await read_all(proc)).decode()
    assert await asyncio.wait_for(proc.wait(), 5) == 0
    sizes = [line.strip() for line in out.splitlines() if line.strip() in ("30 100", "43 132")]
    assert sizes == ["30 100", "43 132"], out
    proc.close()


async def test_input_roundtrip_and_large_input(tmp_path: Path) -> None:
    proc = await PtyProcess.spawn(["sh", "-c", "stty -echo -icanon; head -c 200000 | wc -c"], cwd=tmp_path)
    await asyncio.sleep(0.1)
    proc.write(b"x" * 200_000)  # far more than the tty buffer: write never blocks
    out = (await read_all(proc)).decode()
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert out.strip().endswith("200000"), out
    proc.close()


async def test_terminate_kills_the_group(tmp_path: Path) -> None:
    # A shell that ignores SIGHUP, with a child: SIGKILL after the grace period ends both.
    proc = await PtyProcess.spawn(["sh", "-c", "trap '' HUP; sleep 30 & wait"], cwd=tmp_path)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    proc.terminate(grace=0.3)
    code = await asyncio.wait_for(proc.wait(), 5)
    assert code == -9
    assert time.monotonic() - started < 3
    await read_all(proc)
    proc.close()
    with pytest.raises(PtyError):
        proc.write(b"x")


async def test_unknown_command_and_directory(tmp_path: Path) -> None:
    with pytest.raises(PtyError, match="command not found: no-such-program-tether") as info:
        await PtyProcess.spawn(["no-such-program-tether"], cwd=tmp_path)
    assert info.value.code == "command_not_found"
    with pytest.raises(PtyError, match="does not exist"):
        await PtyProcess.spawn(["echo"], cwd=tmp_path / "missing")
    (tmp_path / "plain").write_text("not a program")
    with pytest.raises(PtyError, match="permission denied"):
        await PtyProcess.spawn([str(tmp_path / "plain")], cwd=tmp_path)


def open_fds() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


async def test_no_fd_leak(tmp_path: Path) -> None:
    before = open_fds()
    for _ in range(20):
        proc = await PtyProcess.spawn(["true"], cwd=tmp_path)
        await read_all(proc)
        await proc.wait()
        proc.close()
    after = open_fds()
    if before is not None and after is not None:
        assert after <= before + 2


async def test_cancelled_spawn_leaves_nothing_behind(tmp_path: Path) -> None:
    before = open_fds()
    for _ in range(5):
        task = asyncio.ensure_future(PtyProcess.spawn(["sleep", "30"], cwd=tmp_path))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.3)
    after = open_fds()
    if before is not None and after is not None:
        assert after <= before + 2


async def test_interrupt_works_when_the_host_ignores_sigint(tmp_path: Path) -> None:
    """A host started in the background by a shell ignores SIGINT, and ignored signals survive
    exec: the session's program must still start with Ctrl-C working."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = await PtyProcess.spawn(["sleep", "30"], cwd=tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    await asyncio.sleep(0.2)
    proc.interrupt()
    assert await asyncio.wait_for(proc.wait(), 5) == -2
    await read_all(proc)
    proc.close()
