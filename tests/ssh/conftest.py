"""A real OpenSSH server on loopback, a throwaway user and key, and wheels of this checkout.

The server runs with its own config (no PAM, keys only, its own host key and authorized_keys in a
temp dir); the user is created with ``useradd -m`` and removed with ``userdel -r``. Tests never
read or write the real ``~/.ssh``: they point ``TETHER_SSH_KNOWN_HOSTS`` and ``TETHER_SSH_CONFIG``
at files of their own.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import Proc, free_port, remove, short_home, start_host, start_relay
from tests.support.interfaces import changing_interfaces

ROOT = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
# `tether ssh` is registered on the app by importing tether.cli.ssh (main() does it once wired).
TETHER_SSH = [
    sys.executable, "-c",
    "import sys; import tether.cli.ssh; from tether.cli.main import main; sys.argv[0] = 'tether'; main()",
]


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"SSH tests must run in CI: {why}")
    pytest.skip(why)



def _wait_port(address: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("sshd did not listen")


@dataclass
class SshServer:
    port: int
    user: str
    user_home: Path
    client_key: Path
    host_key: Path
    dir: Path
    proc: subprocess.Popen[bytes]
    config: Path
    address: str = "127.0.0.1"
    netns: str | None = None  # the network namespace it runs in (None: this one)

    def restart_with_new_host_key(self) -> None:
        """The same server with another host key (what a man in the middle would show)."""
        self.stop()
        self.host_key.unlink()
        self.host_key.with_suffix(".pub").unlink()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        self.start()

    def start(self) -> None:
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*inside, SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=(self.dir / "sshd.log").open("ab"),
        )
        _wait_port(self.address, self.port, self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def as_user(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command as the remote user on this machine (for checks, not via SSH)."""
        return subprocess.run(
            ["su", "-s", "/bin/sh", "-c", command, self.user], capture_output=True, text=True, timeout=timeout
        )

    def user_pids(self) -> list[int]:
        result = subprocess.run(["pgrep", "-u", self.user], capture_output=True, text=True)
        return [int(p) for p in result.stdout.split()]


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    if sys.platform != "linux" or os.geteuid() != 0:
        _unavailable("the SSH tests create a user and run sshd: they need root on Linux")
    if not Path(SSHD).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], capture_output=True)
        if not Path(SSHD).exists():
            _unavailable("openssh-server is not installed (apt-get install openssh-server)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ttsshd", dir="/tmp"))
    os.chmod(work, 0o755)
    user = f"tth{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
    try:
        # useradd makes a locked account, and sshd refuses key logins to locked accounts.
        subprocess.run(["usermod", "-p", "*", user], check=True)
        user_home = Path(os.path.expanduser(f"~{user}"))
        host_key = work / "host_key"
        client_key = work / "client_key"
        for key in (host_key, client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        auth = work / "authorized_keys"
        auth.mkdir()
        shutil.copy(client_key.with_suffix(".pub"), auth / user)
        os.chmod(auth / user, 0o644)
        port = free_port()
        config = work / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {work}/sshd.pid\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            f"AuthorizedKeysFile {auth}/%u\nStrictModes no\nAllowUsers {user}\n"
            "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        )
        server = SshServer(port, user, user_home, client_key, host_key, work, None, config)  # type: ignore[arg-type]
        server.start()
        try:
            yield server
        finally:
            server.stop()
            # Whatever still runs as the throwaway user was started by these tests (the remote
            # daemon): end it by pid before removing the user.
            for _ in range(50):
                pids = server.user_pids()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
    finally:
        subprocess.run(["userdel", "-r", user], capture_output=True)
        remove(work)


@dataclass
class Netns:
    """A network namespace joined to this one by a veth pair: ``outside`` here, ``inside`` there.
    Its loopback is its own, so nothing listening on this namespace's 127.0.0.1 is reachable."""

    name: str
    outside: str
    inside: str

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *command], capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture
def netns() -> Iterator[Netns]:
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("ip"):
        _unavailable("network namespaces need root on Linux and `ip` (iproute2)")
    tag = secrets.token_hex(3)
    # A /30 of 10.200.0.0/13 at random: suites running at once on one machine don't collide.
    net = f"10.{200 + secrets.randbelow(8)}.{secrets.randbelow(256)}.{4 * secrets.randbelow(64)}"
    base = net.rsplit(".", 1)[0] + "."
    last = int(net.rsplit(".", 1)[1])
    ns = Netns(f"tth{tag}", f"{base}{last + 1}", f"{base}{last + 2}")
    veth_out, veth_in = f"tv{tag}o", f"tv{tag}i"
    setup = [
        ["ip", "netns", "add", ns.name],
        ["ip", "link", "add", veth_out, "type", "veth", "peer", "name", veth_in],
        ["ip", "link", "set", veth_in, "netns", ns.name],
        ["ip", "addr", "add", f"{ns.outside}/30", "dev", veth_out],
        ["ip", "link", "set", veth_out, "up"],
        ["ip", "-n", ns.name, "addr", "add", f"{ns.inside}/30", "dev", veth_in],
        ["ip", "-n", ns.name, "link", "set", veth_in, "up"],
        ["ip", "-n", ns.name, "link", "set", "lo", "up"],
    ]
    try:
        with changing_interfaces():
            for command in setup:
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    _unavailable(f"{' '.join(command)} failed: {result.stderr.strip()}")
        yield ns
    finally:
        with changing_interfaces():
            # The veth pair first, here and at once: a namespace's own devices go when the kernel
            # gets round to it, which could be after the lock is let go.
            subprocess.run(["ip", "link", "del", veth_out], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.fixture
def netns_sshd(sshd: SshServer, netns: Netns) -> Iterator[SshServer]:
    """The same account's SSH server, but inside ``netns``, listening on its end of the veth pair:
    a machine that this one reaches but that cannot reach this one's loopback (the relay)."""
    work = sshd.dir / f"ns-{netns.name}"
    work.mkdir()
    config = work / "sshd_config"
    config.write_text(
        sshd.config.read_text()
        .replace(f"Port {sshd.port}\n", "Port 22\n")
        .replace("ListenAddress 127.0.0.1\n", f"ListenAddress {netns.inside}\n")
        .replace(f"PidFile {sshd.dir}/sshd.pid", f"PidFile {work}/sshd.pid")
    )
    server = SshServer(22, sshd.user, sshd.user_home, sshd.client_key, sshd.host_key, work, None,  # type: ignore[arg-type]
                       config, address=netns.inside, netns=netns.name)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def wheels() -> Iterator[Path]:
    """Wheels of this checkout and its dependencies, built once per session from pip's cache and
    find-links (no index needed for what is installed here), in a directory of this session's
    own. Builds of this checkout take turns (a lock next to it): setuptools builds in the
    checkout's own build/, where two at once (the suite's two workers) collide."""
    out = Path(tempfile.mkdtemp(prefix="tether-test-wheels"))
    (ROOT / "build").mkdir(exist_ok=True)
    with (ROOT / "build" / ".test-wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(out), str(ROOT)],
            capture_output=True, text=True, timeout=600,
        )
    if result.returncode != 0:
        remove(out)
        raise AssertionError(f"pip wheel failed:\n{result.stdout}\n{result.stderr}")
    yield out
    remove(out)


@dataclass
class Desktop:
    """The desktop: a relay, a host daemon with one paired client device, and SSH client files."""

    relay: Proc
    relay_port: int
    host: Proc
    home: Path
    workspace: Path
    client_home: Path
    ssh_dir: Path

    @property
    def relay_url(self) -> str:
        return f"ws://127.0.0.1:{self.relay_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TETHER_SSH_KNOWN_HOSTS": str(self.ssh_dir / "known_hosts"),
            "TETHER_SSH_CONFIG": str(self.ssh_dir / "config"),
        }

    def ssh(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TETHER_SSH, "--home", str(self.home), "ssh", *args], capture_output=True, text=True,
            timeout=timeout, env=self.env,
        )


@pytest.fixture
def desktop() -> Iterator[Desktop]:
    from tests.procs import login, tether_json

    home = short_home("tdh")
    workspace = short_home("tdw")
    client_home = short_home("tdc")
    ssh_dir = Path(tempfile.mkdtemp(prefix="tdssh"))
    (ssh_dir / "config").write_text("")
    procs: list[Proc] = []
    try:
        relay, port = start_relay()
        procs.append(relay)
        host = start_host(home, f"ws://127.0.0.1:{port}", workspace, name="desktop")
        procs.append(host)
        offer = tether_json(home, "pair", "--json")
        login(client_home, offer["link"], "--name", "phone", "--json")
        yield Desktop(relay, port, host, home, workspace, client_home, ssh_dir)
    finally:
        for proc in reversed(procs):
            proc.stop()
        remove(home, workspace, client_home, ssh_dir)
