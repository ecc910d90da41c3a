"""``tether ssh``, step by step: connect, check Python, install tether, make the remote host's
keys, hand it the signed bundle of inherited devices, start its daemon, remember it.

Every step goes through a :class:`Reporter` (the CLI shows them with rich) and fails with an
:class:`SshError` that says which step, on which machine, and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tether import __version__
from tether.crypto.encoding import b64u_decode
from tether.crypto.keys import Identity
from tether.errors import ConfigError, TetherError, UsageError
from tether.sshremote.connect import SshOptions, Target, connect, run, sh_path
from tether.sshremote.errors import RemotePythonError, SshError
from tether.sshremote.registry import Registry, RemoteRecord
from tether.sshremote.remote import MARKER

if TYPE_CHECKING:
    import asyncssh

MIN_PYTHON = (3, 11)
BUILD_FILE = "tether-build.json"
DEFAULT_REMOTE_HOME = "~/.tether"
PYTHON_HINT = (
    "install Python 3.11 or newer there (Debian/Ubuntu: `sudo apt install python3 python3-venv`), "
    "or point --python at one"
)


class Step(Protocol):
    detail: str


class Reporter(Protocol):
    def step(self, title: str) -> contextlib.AbstractContextManager[Step]: ...

    def note(self, text: str) -> None: ...


@dataclass
class _Detail:
    detail: str = ""


class QuietReporter:
    """A reporter that shows nothing (for library callers, e.g. the daemon's refresh)."""

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        yield _Detail()

    def note(self, text: str) -> None:
        pass


@dataclass
class DeployRequest:
    target: Target
    options: SshOptions
    name: str | None = None
    mode: str = "auto"  # "relay", "tunnel", or "auto": relay if the remote reaches the relay, else tunnel
    workspaces: list[str] = field(default_factory=list)
    wheels: Path | None = None
    python: str = "python3"
    relay_url: str | None = None
    remote_home: str = DEFAULT_REMOTE_HOME
    enroll_key: Path | None = None  # the relay's enrollment key file, for a relay with closed admission


# -- the desktop side ----------------------------------------------------------------------


@dataclass
class Desktop:
    identity: Identity
    name: str
    relay_url: str | None
    home: Path
    running: bool = False  # its daemon runs (and answered)


async def call_desktop(home: Path, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30) -> Any:
    """One call to this machine's host daemon over its unix socket (the owner's methods)."""
    from tether.client.connection import connect_local

    conn = await connect_local(home)
    try:
        return await conn.call(method, params, timeout=timeout)
    finally:
        await conn.close()


async def desktop_host(home: Path) -> Desktop:
    """The desktop host whose devices the remote inherits (its keys must exist: it must have run)."""
    from tether.client.connection import local_daemon_running
    from tether.home import HostPaths
    from tether.host.config import load_config
    from tether.relay.link import http_url

    keys = HostPaths(home).keys
    if not keys.exists():
        raise ConfigError(
            f"{home} has no host yet, so there are no devices for a remote host to inherit",
            hint="start this machine's host first (`tether up` or `tether host --relay URL`), pair a device, "
            "then run `tether ssh` again",
        )
    identity = Identity.load(keys)
    name = load_config(home).name or socket.gethostname()
    relay_url = None
    running = False
    if local_daemon_running(home):
        with contextlib.suppress(TetherError, OSError):
            info = await call_desktop(home, "host.info")
            name, relay_url, running = info.get("name") or name, info.get("relay"), True
            public = info.get("public_url")
            if relay_url and public and public != http_url(relay_url):
                # Its relay is reached from elsewhere by another address (`tether up
                # --public-url` behind a proxy or tunnel): the one the remote and the
                # devices that learn of it can use too.
                relay_url = public
    return Desktop(identity, name, relay_url, home, running)


async def make_desktop_bundle(desktop: Desktop, host_id: str) -> bytes:
    """The signed bundle for remote host ``host_id``: the desktop's live devices and policy."""
    from tether.host.remotes import desktop_bundle

    return await desktop_bundle(desktop.home, desktop.identity, desktop.name, host_id)


# -- wheels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wheels:
    files: list[Path]
    tether: Path
    digest: str  # sha256 of the tether wheel: "same build" means nothing to reinstall
    offline: bool  # every dependency is among the files (install with --no-index)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tether_wheel(files: list[Path], where: Path) -> Path:
    ours = [f for f in files if re.fullmatch(rf"tether-{re.escape(__version__)}-.+\.whl", f.name)]
    if len(ours) != 1:
        found = ", ".join(f.name for f in files if f.name.startswith("tether-")) or "none"
        raise UsageError(
            f"{where} should hold exactly one wheel of tether {__version__} (found: {found})",
            hint=f"build them with `pip wheel PATH-TO-TETHER -w {where}`",
        )
    return ours[0]


def local_wheels(directory: Path) -> Wheels:
    files = sorted(directory.glob("*.whl"))
    if not files:
        raise UsageError(f"no wheels in {directory}", hint=f"build them with `pip wheel PATH-TO-TETHER -w {directory}`")
    tether = _tether_wheel(files, directory)
    return Wheels(files, tether, _digest(tether), offline=True)


def build_wheel(home: Path) -> Wheels:
    """Without ``--wheels``: a wheel of the tether this desktop runs, built from its source
    checkout; the remote takes the dependencies from its own package index. (Never ``pip install
    tether`` by name: another project may own that name on the index.)"""
    import tether

    root = Path(tether.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "tether"' not in pyproject.read_text():
        raise UsageError(
            "this tether is not installed from a source checkout, so it cannot build a wheel to send",
            hint="pass --wheels DIR with wheels of tether and its dependencies (`pip wheel tether -w DIR`)",
        )
    out = home / "ssh" / "wheel"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("tether-*.whl"):
        old.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(root)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise SshError(f"building the tether wheel failed:\n{result.stderr.strip()[-2000:]}")
    files = sorted(out.glob("*.whl"))
    tether_wheel = _tether_wheel(files, out)
    return Wheels([tether_wheel], tether_wheel, _digest(tether_wheel), offline=False)


# -- remote steps --------------------------------------------------------------------------


@dataclass
class Probe:
    home: str
    python_path: str | None
    python_version: tuple[int, ...] | None
    venv_ok: bool
    build: dict[str, Any] | None


def _paths(remote_home: str) -> tuple[str, str, str]:
    venv = remote_home.rstrip("/") + "/venv"
    return venv, remote_home.rstrip("/") + "/wheels", venv + "/bin/python"


async def probe(conn: asyncssh.SSHClientConnection, python: str, remote_home: str) -> Probe:
    venv, _, _ = _paths(remote_home)
    py = shlex.quote(python)
    script = (
        'echo "tether-probe home $HOME"\n'
        f"if command -v {py} >/dev/null 2>&1; then\n"
        f'  echo "tether-probe path $(command -v {py})"\n'
        f'  echo "tether-probe version $({py} --version 2>&1)"\n'
        f"  {py} -c 'import venv, ensurepip' >/dev/null 2>&1 && echo 'tether-probe venv ok'\n"
        "fi\n"
        f"if [ -x {sh_path(venv)}/bin/python ] && [ -f {sh_path(venv)}/{BUILD_FILE} ]; then\n"
        f'  echo "tether-probe build $(cat {sh_path(venv)}/{BUILD_FILE})"\n'
        "fi\n"
    )
    result = await run(conn, script, timeout=60)
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("tether-probe "):
            key, _, value = line[len("tether-probe "):].partition(" ")
            found[key] = value.strip()
    if "home" not in found:
        raise SshError(
            f"the remote shell did not run a POSIX shell script (exit {result.status}): {result.stderr.strip()[:300]}",
            hint="tether ssh needs a POSIX login shell (sh, bash, zsh, dash) on the remote",
        )
    version = None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", found.get("version", ""))
    if match:
        version = tuple(int(g) for g in match.groups() if g is not None)
    build = None
    with contextlib.suppress(ValueError):
        build = json.loads(found["build"]) if "build" in found else None
    return Probe(found["home"], found.get("path"), version, found.get("venv") == "ok", build)


def check_python(p: Probe, python: str, where: str) -> str:
    """The remote Python's version text, or :class:`RemotePythonError` saying what is missing."""
    if p.python_path is None:
        raise RemotePythonError(f"{python} was not found on {where} (in the PATH of an SSH command)", hint=PYTHON_HINT)
    if p.python_version is None:
        raise RemotePythonError(f"{p.python_path} on {where} did not say its version", hint=PYTHON_HINT)
    text = ".".join(map(str, p.python_version))
    if p.python_version[:2] < MIN_PYTHON:
        raise RemotePythonError(
            f"{where} has Python {text} at {p.python_path}; tether needs Python "
            f"{'.'.join(map(str, MIN_PYTHON))} or newer",
            hint=PYTHON_HINT,
        )
    if not p.venv_ok:
        raise RemotePythonError(
            f"Python {text} at {p.python_path} on {where} lacks the venv module (ensurepip)",
            hint=f"install it there (Debian/Ubuntu: `sudo apt install python{text.rsplit('.', 1)[0]}-venv`)",
        )
    return f"Python {text} ({p.python_path})"


def _absolute(remote_home: str, home: str) -> str:
    if remote_home == "~":
        return home
    if remote_home.startswith("~/"):
        return f"{home.rstrip('/')}/{remote_home[2:]}"
    return remote_home


async def upload(conn: asyncssh.SSHClientConnection, wheels: Wheels, directory: str) -> int:
    """Copy the wheels the remote does not have yet (same name and size); returns how many."""
    import asyncssh

    sent = 0
    try:
        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(directory, exist_ok=True)
            for path in wheels.files:
                remote = f"{directory}/{path.name}"
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    if (await sftp.stat(remote)).size == path.stat().st_size and path != wheels.tether:
                        continue
                # A name of its own: another run may be uploading the same wheel right now.
                part = f"{remote}.{secrets.token_hex(4)}.part"
                await sftp.put(str(path), part)
                await sftp.posix_rename(part, remote)
                sent += 1
    except asyncssh.SFTPError as exc:
        raise SshError(f"copying wheels to the remote failed: {exc.reason}") from None
    except asyncssh.ChannelOpenError as exc:
        raise SshError(
            f"the remote offers no SFTP ({exc.reason})", hint="enable the sftp subsystem in its sshd_config"
        ) from None
    return sent


# Runs the install script holding a lock in the remote home, so two `tether ssh` runs at once
# never run pip in the same venv together; the second then finds the build installed.
_LOCKED_RUN = (
    "import fcntl, os, subprocess, sys\n"
    "home = os.path.expanduser(sys.argv[1])\n"
    "os.makedirs(home, mode=0o700, exist_ok=True)\n"
    "fd = os.open(os.path.join(home, 'install.lock'), os.O_CREAT | os.O_RDWR, 0o600)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "sys.exit(subprocess.call(['/bin/sh', '-c', sys.argv[2]]))\n"
)


async def install(conn: asyncssh.SSHClientConnection, wheels: Wheels, python: str, remote_home: str) -> bool:
    """Install the wheels into the remote venv; False when, under the lock, the same build
    turned out to be there already (another run installed it)."""
    venv, wheel_dir, vpy = _paths(remote_home)
    whl = f"{sh_path(wheel_dir)}/{shlex.quote(wheels.tether.name)}"
    pip = f"{sh_path(vpy)} -m pip --disable-pip-version-check --quiet install"
    source = f"--no-index --find-links {sh_path(wheel_dir)}" if wheels.offline else f"--find-links {sh_path(wheel_dir)}"
    build = json.dumps({"version": __version__, "sha256": wheels.digest, "wheel": wheels.tether.name})
    build_file = f"{sh_path(venv)}/{BUILD_FILE}"
    script = (
        "set -e\n"
        f"if [ -f {build_file} ] && grep -q {shlex.quote(wheels.digest)} {build_file}; then "
        "echo tether-install-skipped; exit 0; fi\n"
        f"fresh=0; [ -x {sh_path(vpy)} ] || {{ {shlex.quote(python)} -m venv {sh_path(venv)}; fresh=1; }}\n"
        f"{pip} {source} {whl}\n"
        # Same version, another build: replace tether itself, keep the dependencies (a new venv
        # has just got this build: a second pip run would only cost seconds)
        f"[ $fresh = 1 ] || {pip} --no-index --no-deps --force-reinstall {whl}\n"
        f"printf '%s' {shlex.quote(build)} > {build_file}\n"
    )
    # The script is expanded by the remote shell inside the locked `sh -c`, so $HOME works there.
    command = " ".join([shlex.quote(python), "-c", shlex.quote(_LOCKED_RUN), shlex.quote(remote_home),
                        shlex.quote(script)])
    result = await run(conn, command, timeout=900)
    if result.status != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-3000:]
        hint = "the remote could not reach a package index for the dependencies; pass --wheels DIR"
        raise SshError(
            f"installing tether on the remote failed (exit {result.status}):\n{output}",
            hint=hint if not wheels.offline else "check the remote's Python and disk space",
        )
    return "tether-install-skipped" not in result.stdout


async def remote_call(
    conn: asyncssh.SSHClientConnection, remote_home: str, command: str, *args: str, input: bytes | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Run ``python -m tether.sshremote.remote COMMAND`` with the remote's tether."""
    _, _, vpy = _paths(remote_home)
    line = " ".join(
        [sh_path(vpy), "-m", "tether.sshremote.remote", command, "--home", sh_path(remote_home),
         *map(shlex.quote, args)]
    )
    result = await run(conn, line, input=input, timeout=timeout)
    for out_line in reversed(result.stdout.splitlines()):
        if out_line.startswith(MARKER):
            value: dict[str, Any] = json.loads(out_line[len(MARKER):])
            if "error" in value:
                raise SshError(f"on the remote: {value['message']}", hint=value.get("hint"))
            return value
    raise SshError(
        f"the remote tether did not answer `{command}` (exit {result.status}): {result.stderr.strip()[-1500:]}",
        hint="run `tether ssh` again to reinstall it",
    )


# -- the whole thing -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connected(target: Target, options: SshOptions) -> AsyncIterator[asyncssh.SSHClientConnection]:
    conn = await connect(target, options)
    try:
        yield conn
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


async def deploy(home: Path, req: DeployRequest, reporter: Reporter) -> RemoteRecord:
    """Install, hand over the devices, start (in tunnel mode, on a tunnel the desktop host holds)."""
    from tether.sshremote import tunnel

    if req.mode not in ("auto", "relay", "tunnel"):
        raise UsageError(f"unknown mode {req.mode!r}", hint="use --mode auto, relay or tunnel")
    with reporter.step("desktop host") as s:
        desktop = await desktop_host(home)
        relay_url = req.relay_url or desktop.relay_url
        if not relay_url:
            raise UsageError(
                "no relay URL: this machine's host is not running and --relay was not given",
                hint="start the host (`tether host --relay URL`) or pass --relay URL",
            )
        mode = req.mode
        if mode != "relay" and not desktop.running:
            if mode == "tunnel":
                raise UsageError(
                    "tunnel mode needs this machine's host running: it holds the tunnel",
                    hint="start it (`tether up` or `tether host --relay URL`), then run `tether ssh --mode tunnel` "
                    "again",
                )
            mode = "relay"  # no daemon to hold a tunnel: relay is the only choice
        s.detail = f"{desktop.name} ({desktop.identity.id}), relay {relay_url}"
    where = req.target.label()
    async with contextlib.AsyncExitStack() as stack:
        with reporter.step(f"connect to {where}") as s:
            conn = await stack.enter_async_context(_connected(req.target, req.options))
            s.detail = "authenticated, host key checked"
        with reporter.step("remote python") as s:
            found = await probe(conn, req.python, req.remote_home)
            s.detail = check_python(found, req.python, where)
        with reporter.step("wheels") as s:
            wheels = local_wheels(req.wheels) if req.wheels is not None else build_wheel(home)
            s.detail = f"{wheels.tether.name} ({len(wheels.files)} wheel(s))"
        remote_home = _absolute(req.remote_home, found.home)
        with reporter.step("install tether") as s:
            if found.build is not None and found.build.get("sha256") == wheels.digest:
                s.detail = f"tether {__version__} already installed (same build)"
            else:
                sent = await upload(conn, wheels, _paths(remote_home)[1])
                if await install(conn, wheels, req.python, remote_home):
                    was = "upgraded" if found.build else "installed"
                    s.detail = f"tether {__version__} {was} in {_paths(remote_home)[0]} ({sent} wheel(s) sent)"
                else:
                    s.detail = f"tether {__version__} was just installed by another run (same build)"
        if mode == "auto":
            with reporter.step("can the remote reach the relay") as s:
                address = tunnel.RelayAddress.parse(relay_url)
                reach = await remote_call(conn, remote_home, "reach", "--relay", f"{address.host}:{address.port}")
                mode = "relay" if reach["reachable"] else "tunnel"
                s.detail = (f"yes: relay mode ({address.host}:{address.port})" if reach["reachable"] else
                            f"no ({reach['why']}): tunnel mode, through this SSH connection")
        with reporter.step("remote host keys") as s:
            info = await remote_call(conn, remote_home, "info")
            host_id = str(info["host_id"])
            if host_id == desktop.identity.id:
                raise UsageError(
                    f"{where}:{remote_home} is this desktop host's own home",
                    hint="pass another --remote-home for the remote host",
                )
            s.detail = f"host {host_id}"
        with reporter.step("inherited devices") as s:
            bundle = await make_desktop_bundle(desktop, host_id)
            pushed = await remote_call(conn, remote_home, "bundle", input=bundle)
            s.detail = f"{pushed['devices']} device(s), signed by {desktop.identity.id}"
        if req.enroll_key is not None:
            with reporter.step("relay enrollment key") as s:
                await remote_call(conn, remote_home, "enroll-key", input=_read_enroll_key(req.enroll_key))
                s.detail = "sent (0600 in the remote host's home)"
        registry = Registry(home)
        earlier = registry.find_place(_place(req))
        record = RemoteRecord(
            name=req.name or req.target.host, host=req.target.host, user=req.target.user, port=req.target.port,
            identity=req.target.identity, remote_home=req.remote_home, python=req.python, mode=mode,
            relay_url=relay_url, workspaces=list(req.workspaces), host_id=host_id,
            static_public=str(info["static_public"]), state="starting", build=wheels.digest,
            tunnel_port=earlier.tunnel_port if earlier and mode == "tunnel" else None,
            enroll=req.enroll_key is not None, known_hosts=str(req.options.known_hosts),
            ssh_config=str(req.options.config) if req.options.config else None,
        )
        remote_relay = relay_url
        if mode == "tunnel":
            with reporter.step("tunnel") as s:
                # The desktop host holds it from now on; its port is known before the remote
                # daemon starts on it.
                registry.save(record)
                record.tunnel_port = await ask_desktop_to_hold(desktop, record.name)
                address = tunnel.RelayAddress.parse(relay_url)
                remote_relay = address.remote_url(record.tunnel_port)
                s.detail = (f"the remote's 127.0.0.1:{record.tunnel_port} → {address.host}:{address.port} "
                            "through SSH, held by this machine's host")
        with reporter.step("start the remote host") as s:
            remote_loopback = req.target.host in ("127.0.0.1", "localhost", "::1")
            if req.mode == "relay" and _loopback(relay_url) and not remote_loopback:
                s.detail = "warning: the relay URL is a loopback address; the remote can reach it only if it is " \
                    "this machine (use --relay URL or --mode tunnel) — "
            started = await remote_call(conn, remote_home, "start", *start_args(remote_relay, record))
            state = "connected to the relay" if started.get("connected") else "not connected to the relay yet"
            s.detail += f"{started['action']} (pid {started['pid']}), {state}"
        record.state, record.pid = "running", int(started["pid"])
        registry.save(record)
        await announce(desktop, record)
    return record


async def held_tunnels(home: Path) -> dict[str, dict[str, Any]] | None:
    """The tunnels the desktop daemon holds now, by remote name (``remotes.tunnels``); None when
    it is not running."""
    from tether.client.connection import local_daemon_running

    if not local_daemon_running(home):
        return None
    return {t["name"]: t for t in await call_desktop(home, "remotes.tunnels")}


async def ask_desktop_to_hold(desktop: Desktop, name: str) -> int:
    """The desktop host's tunnel for remote ``name`` (local method ``remotes.tunnel``): its port."""
    answer = await call_desktop(desktop.home, "remotes.tunnel", {"name": name}, timeout=90)
    return int(answer["port"])


def _read_enroll_key(path: Path) -> bytes:
    from tether.relay.enrollment import load_enroll_key

    load_enroll_key(path)  # a clear error for a missing or malformed file, before it is sent
    return path.read_bytes()


def _place(req: DeployRequest) -> RemoteRecord:
    """A record naming only where the remote is (to find an earlier one)."""
    t = req.target
    return RemoteRecord(name="", host=t.host, user=t.user, port=t.port, identity=t.identity,
                        remote_home=req.remote_home, python="", mode="", relay_url="", workspaces=[], host_id="",
                        static_public="", state="")


def start_args(relay_url: str, record: RemoteRecord) -> list[str]:
    """How the remote's ``tether.sshremote.remote start`` is called for this record."""
    args = ["--relay", relay_url, "--name", record.name, "--build", record.build]
    if record.enroll:
        args.append("--enroll")
    for w in record.workspaces:
        args += ["--workspace", w]
    return args


async def announce(desktop: Desktop, record: RemoteRecord) -> bool:
    """Tell the desktop host about the linked host, so its paired clients learn it (the host
    method ``hosts.link``; an older host without it is fine: clients can still be told by hand)."""
    from tether.client.connection import local_daemon_running

    if not local_daemon_running(desktop.home):
        return False
    params = {
        "host_id": record.host_id, "name": record.name, "static_public": record.static_public,
        "relay_url": record.relay_url,
    }
    with contextlib.suppress(TetherError, OSError):
        await call_desktop(desktop.home, "hosts.link", params)
        return True
    return False


def _reach(record: RemoteRecord, options: SshOptions) -> contextlib.AbstractAsyncContextManager[
    asyncssh.SSHClientConnection
]:
    return _connected(target_of(record), options.saved_with(record.known_hosts, record.ssh_config))


def target_of(record: RemoteRecord) -> Target:
    return Target(record.host, record.user, record.port, record.identity)


async def stop(home: Path, name: str, options: SshOptions, reporter: Reporter) -> str:
    registry = Registry(home)
    record = registry.get(name)
    async with _reach(record, options) as conn:
        with reporter.step(f"stop {record.name} on {record.destination()}") as s:
            result = await remote_call(conn, record.remote_home, "stop")
            s.detail = "stopped" if result["action"] == "stopped" else "it was not running"
    registry.set_state(record.name, "stopped")
    return str(result["action"])


async def forget(home: Path, name: str, options: SshOptions, reporter: Reporter, *, force: bool = False) -> None:
    """Stop the remote host and drop its inherited devices there, then forget it here: its
    tunnel closes, and clients drop it (``host.unlinked``). With ``force``, forget it here even
    when the machine cannot be reached."""
    registry = Registry(home)
    record = registry.get(name)
    try:
        async with _reach(record, options) as conn:
            with reporter.step(f"stop {record.name} on {record.destination()}, drop its devices") as s:
                result = await remote_call(conn, record.remote_home, "forget")
                s.detail = "stopped" if result["action"] == "stopped" else "it was not running"
    except SshError as exc:
        if not force:
            raise SshError(
                exc.message,
                hint="--force forgets it here anyway; it then keeps running with this host's devices until you "
                f"stop it there and remove {record.remote_home}/host/inherited.json",
            ) from None
        reporter.note(f"{record.name}: not reached ({exc.message}); forgetting it here only")
    with reporter.step(f"forget {record.name}") as s:
        registry.remove(record.name)
        s.detail = "removed from this host's remotes; " + (
            "clients are told" if await unlink(home, record.host_id) else "clients are told when this host next runs"
        )


async def unlink(home: Path, host_id: str) -> bool:
    """Tell the desktop host to unlink ``host_id`` (``hosts.unlink``); False if it is not running."""
    from tether.client.connection import local_daemon_running

    if not local_daemon_running(home):
        return False
    try:
        await call_desktop(home, "hosts.unlink", {"host_id": host_id})
    except TetherError as exc:
        if exc.code != "not_found":
            raise
    return True


async def refresh(
    home: Path, options: SshOptions, reporter: Reporter, names: list[str] | None = None,
    desktop: Desktop | None = None,
) -> list[str]:
    """Push a fresh bundle to each remote (after a device was paired or revoked on the desktop).
    Returns the names of the remotes that could not be reached; the others have the new bundle."""
    registry = Registry(home)
    desktop = desktop or await desktop_host(home)
    failed: list[str] = []
    for record in registry.load():
        if names and record.name not in names:
            continue
        try:
            async with _reach(record, options) as conn:
                with reporter.step(f"devices for {record.name}") as s:
                    bundle = await make_desktop_bundle(desktop, record.host_id)
                    pushed = await remote_call(conn, record.remote_home, "bundle", input=bundle)
                    s.detail = f"{pushed['devices']} device(s)"
        except SshError as exc:
            reporter.note(f"{record.name}: {exc.message}")
            failed.append(record.name)
    return failed


async def status(home: Path, options: SshOptions, name: str) -> dict[str, Any]:
    registry = Registry(home)
    record = registry.get(name)
    async with _reach(record, options) as conn:
        result = await remote_call(conn, record.remote_home, "status")
    daemon = result["daemon"]
    registry.set_state(record.name, "running" if daemon["running"] else "stopped", daemon.get("pid"))
    return daemon  # type: ignore[no-any-return]


def static_key(record: RemoteRecord) -> bytes:
    return b64u_decode(record.static_public)
