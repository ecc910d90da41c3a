"""Real tether processes for end-to-end tests: a relay, host daemons and CLI clients.

Every process gets its own home; everything is killed at the end of the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TETHER = [sys.executable, "-m", "tether"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_home(prefix: str = "tt") -> Path:
    # Unix socket paths must stay short, so homes live directly under /tmp.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Proc:
    """A background process whose stderr is kept in a file we can search."""

    def __init__(
        self, args: list[str], *, env: dict[str, str] | None = None, name: str = "proc", pipe_stdout: bool = False
    ) -> None:
        self.name = name
        self.args, self.env, self.pipe_stdout = args, env, pipe_stdout
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.out_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".out")[1])
        self._log = self.log_path.open("wb")
        self._out = self.out_path.open("wb")
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE if pipe_stdout else self._out, stderr=self._log,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.log)
            if match:
                return match
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before {pattern!r}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.log}")

    def again(self) -> Proc:
        """The same command started anew (as its user would restart it), once this one is stopped."""
        self.stop()
        return Proc(self.args, env=self.env, name=self.name, pipe_stdout=self.pipe_stdout)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.popen.poll() is None:
            with _suppress():
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        self._out.close()
        return self.popen.returncode


@contextmanager
def _suppress() -> Iterator[None]:
    try:
        yield
    except ProcessLookupError:
        pass


def start_relay(port: int = 0, *extra: str, home: Path | None = None) -> tuple[Proc, int]:
    """A relay process; its mailbox in ``home`` (a new temporary one unless given: a test relay
    never writes into the real home)."""
    home = home or Path(tempfile.mkdtemp(prefix="tether-relay-"))
    proc = Proc([*TETHER, "--home", str(home), "relay", "--listen", f"127.0.0.1:{port}", *extra], name="relay")
    match = proc.wait_for(r"relay listening on 127\.0\.0\.1:(\d+)")
    return proc, int(match.group(1))


def start_host(home: Path, relay_url: str, workspace: Path, *extra: str, name: str = "test-host") -> Proc:
    proc = Proc(
        [*TETHER, "--home", str(home), "host", "--relay", relay_url, "--workspace", str(workspace),
         "--name", name, *extra],
        name="host",
    )
    proc.wait_for(r"connected to relay")
    return proc


def tether(home: Path, *args: str, timeout: float = 60, check: bool = True, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*TETHER, "--home", str(home), *args], capture_output=True, text=True, timeout=timeout, input=input,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tether {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def tether_json(home: Path, *args: str, timeout: float = 60, input: str | None = None) -> Any:
    return json.loads(tether(home, *args, timeout=timeout, input=input).stdout)


def login(home: Path, link: str, *args: str, timeout: float = 60, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    """`tether login -` with the link on stdin: a link on the command line is refused (other local
    users can read command lines)."""
    return tether(home, "login", "-", *args, timeout=timeout, check=check, input=link + "\n")


def remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
