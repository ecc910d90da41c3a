"""The remote side of ``tether ssh``: run on the SSH machine by the desktop, with the remote's
own tether (``~/.tether/venv/bin/python -m tether.sshremote.remote COMMAND``).

Each command prints one line ``tether-remote: {json}`` on stdout (whatever a login shell prints
around it is ignored) and exits 0, or prints ``{"error": code, "message", "hint"}`` and exits 1.

- ``info``: make the host's keys if missing; report its id and static key, and the daemon.
- ``bundle``: install the inherited-devices bundle read from stdin (see ``host/inheritance.py``).
- ``start``: start the host daemon detached (its own session, so it survives the SSH session),
  unless one already runs with the same settings, build and ``config.toml``; a different one
  restarts it (an upgrade). A lock file makes two concurrent ``tether ssh`` runs take turns, and
  the daemon itself refuses a second instance on the same home (its unix socket).
- ``enroll-key``: keep the relay's enrollment key read from stdin (0600), for ``start --enroll``.
- ``stop``, ``status``; ``forget``: stop, and drop the inherited devices and the pinned desktop.
- ``reach --relay HOST:PORT``: whether this machine can reach the relay (``--mode auto``).

This module must not import asyncssh: it runs on the remote, which does not need it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether import __version__
from tether.crypto.encoding import b64u_encode
from tether.crypto.keys import Identity
from tether.errors import TetherError
from tether.home import ensure_home, read_json, write_private_json
from tether.host.config import FILE_NAME
from tether.host.inheritance import BUNDLE_FILE, PARENT_FILE

MARKER = "tether-remote: "
PID_FILE = "ssh-daemon.pid"
STATE_FILE = "ssh-daemon.json"
LOG_FILE = "ssh-daemon.log"
LOCK_FILE = "ssh.lock"
ENROLL_FILE = "relay-enroll.key"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REACH_TIMEOUT = 5.0


class RemoteError(TetherError):
    code = "remote"


class _Paths:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.host = home / "host"
        self.keys = self.host / "keys.json"
        self.socket = self.host / "daemon.sock"
        self.pid = self.host / PID_FILE
        self.state = self.host / STATE_FILE
        self.log = self.host / LOG_FILE
        self.lock = self.host / LOCK_FILE
        self.enroll = self.host / ENROLL_FILE


def _emit(value: dict[str, Any]) -> None:
    sys.stdout.write(MARKER + json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    paths.host.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_pid(paths: _Paths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        pass
    # No /proc (macOS): ask ps.
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True)
    return result.stdout


def _alive(pid: int) -> bool:
    """True when ``pid`` is a tether host daemon of ours: a pid file can outlive its process, and
    the pid can be reused by another program, which must never be signalled."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    line = _command_line(pid)
    if b"tether" not in line or b" host " not in line:
        return False
    # A zombie child of ours is dead for our purposes.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


async def _host_info(paths: _Paths) -> dict[str, Any] | None:
    """``host.info`` over the daemon's unix socket, or None when no daemon answers."""
    from tether.client.connection import connect_local

    if not paths.socket.exists():
        return None
    try:
        conn = await asyncio.wait_for(connect_local(paths.home), 5)
    except (TetherError, OSError, TimeoutError):
        return None
    try:
        info: dict[str, Any] = await asyncio.wait_for(conn.call("host.info"), 5)
        return info
    except (TetherError, OSError, TimeoutError):
        return None
    finally:
        await conn.close()


def _daemon(paths: _Paths) -> dict[str, Any]:
    """What is known of the daemon: its pid (if ours and alive) and what ``host.info`` says."""
    pid = _read_pid(paths)
    if pid is not None and not _alive(pid):
        pid = None
    info = asyncio.run(_host_info(paths))
    state: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, TetherError):
        state = read_json(paths.state)
    return {
        "running": info is not None,
        "ours": pid is not None,
        "pid": pid,
        "connected": bool(info and info.get("connected")),
        "relay": info.get("relay") if info else None,
        "settings": state.get("settings"),
        "build": state.get("build"),
    }


def cmd_info(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    ensure_home(paths.home)
    paths.host.mkdir(mode=0o700, exist_ok=True)
    with _locked(paths):  # two runs at once must not make two sets of keys
        identity = Identity.load_or_create(paths.keys)
    return {
        "version": __version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "home": str(paths.home),
        "host_id": identity.id,
        "identity_public": b64u_encode(identity.identity_public),
        "static_public": b64u_encode(identity.static_public),
        "daemon": _daemon(paths),
    }


def cmd_bundle(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    from tether.host.inheritance import install_bundle

    identity = Identity.load(paths.keys)
    with _locked(paths):
        bundle = install_bundle(paths.home, sys.stdin.buffer.read(), host_id=identity.id)
    return {"devices": len(bundle.body.devices), "parent_id": bundle.parent_id, "issued_at": bundle.issued_at}


def cmd_enroll_key(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    """Keep the relay's enrollment key (a secret, read from stdin) for the daemon, 0600."""
    from tether.home import write_private

    data = sys.stdin.buffer.read()
    if not data.strip():
        raise RemoteError("the enrollment key sent was empty")
    with _locked(paths):
        write_private(paths.enroll, data)
    return {"ok": True}


def _settings(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    workspaces = [str(Path(os.path.expanduser(w)).resolve()) for w in (args.workspace or ["~"])]
    enroll = None
    if args.enroll:
        if not paths.enroll.exists():
            raise RemoteError("no enrollment key was sent", hint="run `tether ssh` again with --enroll-key FILE")
        # A digest, not the key: the settings file is compared, never shown, but stays key-free.
        enroll = hashlib.sha256(paths.enroll.read_bytes()).hexdigest()
    # The remote's own config.toml is read once at start: a changed one restarts the daemon.
    config = paths.home / FILE_NAME
    config_digest = hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None
    return {"relay": args.relay, "name": args.name, "workspaces": workspaces, "enroll": enroll,
            "config": config_digest}


def _wait_started(paths: _Paths, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = paths.log.read_text(errors="replace")[-2000:] if paths.log.exists() else ""
            raise RemoteError(
                f"the host daemon exited at start (code {proc.returncode}):\n{tail.strip()}",
                hint=f"see {paths.log} on the remote",
            )
        info = asyncio.run(_host_info(paths))
        if info is not None and info.get("connected"):
            return info
        time.sleep(0.2)
    info = asyncio.run(_host_info(paths))
    if info is not None:
        return info  # up, not connected yet: it keeps trying, and `connected` says so
    raise RemoteError(
        f"the host daemon did not answer within {timeout:.0f} s",
        hint=f"see {paths.log} on the remote",
    )


def _stop(paths: _Paths) -> bool:
    pid = _read_pid(paths)
    if pid is None or not _alive(pid):
        paths.pid.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    paths.pid.unlink(missing_ok=True)
    return True


def cmd_start(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(paths, args)
    for w in settings["workspaces"]:
        if not Path(w).is_dir():
            raise RemoteError(f"workspace {w} is not a directory on the remote", hint="create it or pass --workspace")
    with _locked(paths):
        daemon = _daemon(paths)
        if daemon["running"] and not daemon["ours"]:
            raise RemoteError(
                f"a host daemon that tether ssh did not start is already running with home {paths.home}",
                hint="stop it there, or use another --remote-home",
            )
        action = "started"
        if daemon["ours"]:
            if daemon["settings"] == settings and daemon["build"] == args.build:
                return {"action": "running", "pid": daemon["pid"], "connected": daemon["connected"]}
            _stop(paths)
            action = "restarted"
        command = [sys.executable, "-m", "tether", "--home", str(paths.home), "host", "--relay", settings["relay"],
                   "--name", settings["name"]]
        for w in settings["workspaces"]:
            command += ["--workspace", w]
        if settings["enroll"]:
            command += ["--enroll-key", str(paths.enroll)]
        with paths.log.open("ab") as log:
            os.chmod(paths.log, 0o600)
            # Its own session: no controlling terminal, so the end of the SSH session sends it no
            # SIGHUP; stdin from /dev/null and output to the log, so the SSH channel can close.
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                cwd=str(Path.home()), close_fds=True,
            )
        paths.pid.write_text(f"{proc.pid}\n")
        write_private_json(paths.state, {"settings": settings, "build": args.build, "started_at": time.time()})
        try:
            info = _wait_started(paths, proc, args.timeout)
        except RemoteError:
            if proc.poll() is not None:
                paths.pid.unlink(missing_ok=True)
            raise
        return {"action": action, "pid": proc.pid, "connected": bool(info.get("connected")), "host_id": info["id"]}


def cmd_stop(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    with _locked(paths):
        stopped = _stop(paths)
    return {"action": "stopped" if stopped else "not_running"}


def cmd_forget(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    """Stop the daemon and drop what it inherited (the bundle and the pinned desktop): started by
    hand later, it accepts no device of that desktop. Its own keys and sessions stay."""
    with _locked(paths):
        stopped = _stop(paths)
        for name in (BUNDLE_FILE, PARENT_FILE):
            (paths.host / name).unlink(missing_ok=True)
    return {"action": "stopped" if stopped else "not_running"}


def cmd_reach(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    """Whether this machine can open a TCP connection to the relay (``--relay`` is host:port)."""
    import socket

    host, _, port = str(args.relay).rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT).close()
    except (OSError, ValueError) as exc:
        return {"reachable": False, "why": str(exc) or type(exc).__name__}
    return {"reachable": True, "why": ""}


def cmd_status(paths: _Paths, args: argparse.Namespace) -> dict[str, Any]:
    return {"version": __version__, "daemon": _daemon(paths)}


COMMANDS = {
    "info": cmd_info, "bundle": cmd_bundle, "enroll-key": cmd_enroll_key, "start": cmd_start, "stop": cmd_stop,
    "status": cmd_status, "forget": cmd_forget, "reach": cmd_reach,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.sshremote.remote")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--home", required=True)
    parser.add_argument("--relay")
    parser.add_argument("--name")
    parser.add_argument("--workspace", action="append")
    parser.add_argument("--build", default="")
    parser.add_argument("--timeout", type=float, default=START_TIMEOUT)
    parser.add_argument("--enroll", action="store_true", help="start: dial with the enrollment key sent before")
    args = parser.parse_args(argv)
    if args.command == "start" and not (args.relay and args.name):
        parser.error("start needs --relay and --name")
    paths = _Paths(Path(os.path.expanduser(args.home)).absolute())
    try:
        _emit(COMMANDS[args.command](paths, args))
    except TetherError as exc:
        _emit({"error": exc.code, "message": exc.message, "hint": exc.hint})
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
