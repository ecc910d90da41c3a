"""Any terminal program in a pseudo-terminal, driven from the event loop.

The master side of the pty is non-blocking and watched with ``loop.add_reader``/``add_writer``:
no thread per session and no blocking read on the loop. Reading is pull-based (one ``os.read``
per :meth:`PtyProcess.read`), so a reader that is slow leaves the output in the kernel's pty
buffer and the program blocks on write, instead of the host buffering without bound.

The child runs in its own session with the pty as its controlling terminal, so the terminal
driver turns Ctrl-C into SIGINT for the foreground process group and a resize into SIGWINCH,
just as in a real terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from pathlib import Path

from tether.agents.secrets import without_secrets
from tether.errors import TetherError

READ_CHUNK = 64 * 1024
# Input a program does not read stays here; past this the writer is told to back off.
MAX_PENDING_INPUT = 1024 * 1024
# How often to check for exit where the OS gives no exit notification fd.
EXIT_POLL_SECONDS = 0.05
TERMINATE_GRACE_SECONDS = 3.0
# Output the program wrote just before exiting can reach the master a moment after the exit is
# seen (the kernel moves it through a work queue); when a background child still holds the
# terminal, no EOF comes, so wait this long for such a tail before calling it the end.
EXIT_DRAIN_SECONDS = 0.2


class PtyError(TetherError):
    code = "pty"


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# Signals a terminal program must start with at their defaults: a host started in the background
# by a non-interactive shell (or a service manager) may ignore SIGINT, and ignored signals survive
# exec, so Ctrl-C would silently do nothing in every session.
_TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP)


def _take_controlling_tty() -> None:  # pragma: no cover - runs in the child between fork and exec
    # start_new_session already made the child a session leader; make stdin (the pty slave)
    # its controlling terminal. Only small, signal-safe work here: an ioctl and sigactions.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    for sig in _TERMINAL_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _popen(argv: list[str], slave: int, cwd: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_take_controlling_tty,
            close_fds=True,
        )
    except FileNotFoundError:
        if not Path(cwd).is_dir():
            raise PtyError(f"the directory {cwd} does not exist", code="no_such_dir") from None
        raise PtyError(
            f"command not found: {argv[0]}",
            hint="check the spelling, or give the full path of the program",
            code="command_not_found",
        ) from None
    except PermissionError:
        raise PtyError(
            f"cannot run {argv[0]}: permission denied",
            hint="is it an executable file?",
            code="command_not_executable",
        ) from None
    except OSError as exc:
        raise PtyError(f"cannot run {argv[0]}: {exc.strerror or exc}", code="spawn_failed") from None


def _abandon(spawned: asyncio.Future[subprocess.Popen[bytes]], master: int, slave: int) -> None:
    os.close(master)
    os.close(slave)
    if not spawned.cancelled() and spawned.exception() is None:
        proc = spawned.result()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Reap it off the loop (it is dying: the wait is short).
        asyncio.get_running_loop().run_in_executor(None, proc.wait)


class PtyProcess:
    """A process in a pseudo-terminal. Create with :meth:`spawn`."""

    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self._proc = proc
        self._master: int | None = master
        self._loop = asyncio.get_running_loop()
        self._wbuf = bytearray()
        self._writing = False
        self._eof = False
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._read_waiter: asyncio.Future[None] | None = None
        self._kill_handle: asyncio.TimerHandle | None = None
        self._pidfd: int | None = None
        self._poll_handle: asyncio.TimerHandle | None = None
        self._drain_deadline = 0.0
        self._watch_exit()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cols: int = 80,
        rows: int = 24,
    ) -> PtyProcess:
        if not argv:
            raise PtyError("no command to run")
        # A pty is a shell for whoever drives it: it never gets the host's secret variables.
        full_env = without_secrets(os.environ if env is None else env)
        full_env.setdefault("TERM", "xterm-256color")
        master, slave = os.openpty()
        try:
            _set_winsize(slave, cols, rows)
            os.set_blocking(master, False)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # fork+exec off the loop: forking a large process can take milliseconds.
        spawning = asyncio.ensure_future(asyncio.to_thread(_popen, list(argv), slave, os.fspath(cwd), full_env))
        try:
            proc = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # The thread still uses the fds: undo the spawn once it is done.
            spawning.add_done_callback(lambda f: _abandon(f, master, slave))
            raise
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # The child has its own copy; ours must go or the master never sees EOF.
        os.close(slave)
        return cls(proc, master)

    # -- exit ----------------------------------------------------------------------------

    def _watch_exit(self) -> None:
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            with contextlib.suppress(OSError):
                self._pidfd = pidfd_open(self.pid)
        if self._pidfd is not None:
            self._loop.add_reader(self._pidfd, self._check_exit)
        else:
            self._poll_handle = self._loop.call_later(EXIT_POLL_SECONDS, self._poll_exit)

    def _poll_exit(self) -> None:
        self._poll_handle = None
        self._check_exit()
        if not self._exited.done():
            self._poll_handle = self._loop.call_later(EXIT_POLL_SECONDS, self._poll_exit)

    def _check_exit(self) -> None:
        if self._exited.done():
            return
        code = self._proc.poll()  # waitpid(WNOHANG)
        if code is None:
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._kill_handle is not None:
            self._kill_handle.cancel()
            self._kill_handle = None
        self._drain_deadline = self._loop.time() + EXIT_DRAIN_SECONDS
        self._exited.set_result(code)
        self._wake_reader()

    async def wait(self) -> int:
        """The exit code; minus the signal number when a signal ended it (as subprocess)."""
        return await asyncio.shield(self._exited)

    # -- reading -------------------------------------------------------------------------

    async def read(self) -> bytes:
        """The next output available (up to 64 KiB); b"" at end of output.

        Output ends when every holder of the terminal has closed it, or when the program has
        exited and nothing more is buffered (a background child that keeps the terminal open
        after the program exits is not waited for)."""
        while True:
            if self._eof or self._master is None:
                return b""
            data = self._try_read()
            if data is not None:
                return data
            timer: asyncio.TimerHandle | None = None
            if self._exited.done():
                left = self._drain_deadline - self._loop.time()
                if left <= 0:
                    self._eof = True
                    return b""
                timer = self._loop.call_later(left, self._wake_reader)
            waiter = self._loop.create_future()
            self._read_waiter = waiter
            self._loop.add_reader(self._master, self._wake_reader)
            try:
                await waiter
            finally:
                self._read_waiter = None
                if timer is not None:
                    timer.cancel()
                if self._master is not None:
                    self._loop.remove_reader(self._master)

    def read_nowait(self) -> bytes | None:
        """Output already available, b"" at end of output, None when there is none yet."""
        if self._eof or self._master is None:
            return b""
        data = self._try_read()
        if data is None and self._exited.done() and self._loop.time() >= self._drain_deadline:
            self._eof = True
            return b""
        return data

    def _try_read(self) -> bytes | None:
        assert self._master is not None
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return None
        except OSError as exc:
            # Linux reports "all slave ends closed" as EIO.
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._eof = True
        return data

    def _wake_reader(self) -> None:
        w = self._read_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue input for the program; never blocks. Raises PtyError when the program has
        not read its last megabyte of input or has gone."""
        if self._master is None or self._exited.done():
            raise PtyError("the program has exited", code="exited")
        if len(self._wbuf) + len(data) > MAX_PENDING_INPUT:
            raise PtyError("the program is not reading its input", hint="wait, or interrupt it", code="input_full")
        self._wbuf += data
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        if self._master is None:
            return
        while self._wbuf:
            try:
                n = os.write(self._master, self._wbuf)
            except BlockingIOError:
                break
            except OSError:
                # The terminal is gone: the exit watcher reports it; the input is moot.
                self._wbuf.clear()
                break
            del self._wbuf[:n]
        want = bool(self._wbuf)
        if want and not self._writing:
            self._loop.add_writer(self._master, self._flush)
        elif not want and self._writing:
            self._loop.remove_writer(self._master)
        self._writing = want

    # -- control -------------------------------------------------------------------------

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size; the program gets SIGWINCH from the terminal driver."""
        if self._master is not None:
            _set_winsize(self._master, cols, rows)

    def interrupt(self) -> None:
        """Ctrl-C. When the terminal generates signals (ISIG, the usual case) this sends SIGINT to
        the terminal's foreground process group directly, as the terminal driver would; a program
        that turned signals off (raw mode: an editor, a REPL) gets the ^C byte to read instead.

        Signalling directly rather than writing the byte: a ^C byte queued behind unread input,
        or arriving while a shell is between fork and exec, can be lost; the signal cannot."""
        if self._exited.done() or self._master is None:
            raise PtyError("the program has exited", code="exited")
        try:
            isig = bool(termios.tcgetattr(self._master)[3] & termios.ISIG)
        except termios.error:
            isig = True
        if not isig:
            self.write(b"\x03")
            return
        try:
            group = os.tcgetpgrp(self._master)
        except OSError:
            group = self.pid  # no foreground group yet: the session leader's group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGINT)

    def terminate(self, grace: float = TERMINATE_GRACE_SECONDS) -> None:
        """SIGHUP to the process group (a closed terminal), SIGKILL after ``grace`` seconds."""
        if self._exited.done():
            # Never signal a reaped pid: it may already name someone else's process group.
            return
        self._signal_group(signal.SIGHUP)
        self._signal_group(signal.SIGCONT)  # a stopped program must run to see the hangup
        if self._kill_handle is None:
            self._kill_handle = self._loop.call_later(grace, self._kill)

    def _kill(self) -> None:
        self._kill_handle = None
        if not self._exited.done():
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        # start_new_session made the child a group leader: its pgid is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def close(self) -> None:
        """Release the terminal (the program sees a hangup if it still runs)."""
        if self._master is not None:
            if self._writing:
                self._loop.remove_writer(self._master)
                self._writing = False
            self._loop.remove_reader(self._master)
            os.close(self._master)
            self._master = None
        self._eof = True
        self._wake_reader()
        if self._poll_handle is not None and self._exited.done():
            self._poll_handle.cancel()
            self._poll_handle = None
