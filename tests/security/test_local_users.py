"""Another user of the same machine, through real processes: it reads every process's command
line (/proc/PID/cmdline), and it can write to shared directories such as /tmp. Neither may give
it a device of the host (a pairing link on the command line) or the host's identity (a home it
could write to)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import TETHER, login, remove, short_home, tether, tether_json
from tests.support.deployment import Deployment
from tether.protocol.pairing_link import parse_link

pytestmark = pytest.mark.slow

# Polls every process's command line, as any local user can, until SIGTERM (or 60 s or 10^6 scans);
# prints which of the needles (read from stdin, not argv) it saw and how many scans it made.
WATCHER = r"""
import json, os, signal, sys, time
needles = json.loads(sys.stdin.readline())
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
seen, scans, deadline = set(), 0, time.monotonic() + 60
while not stop and scans < 1_000_000 and time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    line = f.read().decode(errors="replace")
            except OSError:
                continue
            seen.update(n for n in needles if n in line)
    scans += 1
    if scans == 1:
        print("ready", flush=True)
print(json.dumps({"seen": sorted(seen), "scans": scans}), flush=True)
"""


@pytest.fixture(scope="module")
def other_user() -> Iterator[str]:
    """A throwaway local user (removed afterwards, with whatever it still runs)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root on Linux to create a second local user")
    user = f"ttl{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True, capture_output=True)
    try:
        yield user
    finally:
        for pid in subprocess.run(["pgrep", "-u", user], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["userdel", user], capture_output=True)


def _as_user(user: str) -> dict[str, object]:
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}


def _no_device_named(deployment: Deployment, name: str) -> bool:
    return all(d["name"] != name for d in tether_json(deployment.host_home, "devices", "list", "--json"))


# -- item 3: the pairing link never on a command line ------------------------------------------------


def test_a_pairing_link_on_the_command_line_is_refused_and_its_offer_kept(
    deployment: Deployment, client_home: Path
) -> None:
    link = tether_json(deployment.host_home, "pair", "--json")["link"]
    secret = link.rsplit(".", 1)[1]
    refused = tether(client_home, "login", link, "--name", "argv-phone", check=False)
    assert refused.returncode == 2, refused
    assert "refused to use a pairing link given on the command line" in refused.stderr
    assert "nothing was paired" in refused.stderr and "TETHER_PAIR_LINK" in refused.stderr
    assert "tether login - < FILE" in refused.stderr and "Traceback" not in refused.stderr
    assert secret not in refused.stderr + refused.stdout
    assert not (client_home / "client").exists(), "no keys made, nothing saved"
    assert _no_device_named(deployment, "argv-phone")
    # The offer was not consumed: the same link, given safely, pairs.
    paired = json.loads(login(client_home, link, "--name", "stdin-phone", "--json").stdout)
    assert paired["scopes"] == ["read", "prompt", "approve"]
    assert tether_json(client_home, "sessions", "list", "--json") == []
    assert not _no_device_named(deployment, "stdin-phone")


def test_login_on_a_terminal_prompts_without_echo(deployment: Deployment, client_home: Path) -> None:
    """`tether login` on a terminal asks for the link and does not echo it (a screen or a terminal
    log would keep it)."""
    import pty
    import select

    link = tether_json(deployment.host_home, "pair", "--json")["link"]
    master, slave = pty.openpty()
    proc = subprocess.Popen([*TETHER, "--home", str(client_home), "login", "--name", "typed"], stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    screen = b""

    def read_until(text: bytes, timeout: float) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while text not in screen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    return

    try:
        read_until(b"(not shown): ", 30)
        assert b"Paste the pairing link (not shown): " in screen, screen
        os.write(master, link.encode() + b"\r")
        read_until(b"paired with host", 60)
        assert proc.wait(30) == 0, screen
        assert b"paired with host test-host" in screen
        assert link.rsplit(".", 1)[1].encode() not in screen, "the link was echoed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


def test_the_pairing_secret_never_shows_in_the_process_list(deployment: Deployment, other_user: str) -> None:
    """Another local user polls /proc/*/cmdline while `tether login` pairs from stdin and from
    TETHER_PAIR_LINK: it sees a marker put on a command line, never a pairing secret."""
    links = [tether_json(deployment.host_home, "pair", "--json")["link"] for _ in range(2)]
    secrets_ = [link.rsplit(".", 1)[1] for link in links]
    marker = f"cmdline-marker-{secrets.token_hex(8)}"
    homes = [short_home("tc"), short_home("tc")]
    watcher = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-c", WATCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        **_as_user(other_user),  # type: ignore[arg-type]
    )
    try:
        assert watcher.stdin is not None and watcher.stdout is not None
        watcher.stdin.write(json.dumps([*secrets_, marker]) + "\n")
        watcher.stdin.close()
        assert watcher.stdout.readline().strip() == "ready"
        # The watcher does see what is on a command line (what a link there would have been).
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)", marker], check=True, timeout=30)
        started = time.monotonic()
        login(homes[0], links[0], "--name", "piped")
        subprocess.run([*TETHER, "--home", str(homes[1]), "login", "--name", "from-env"], check=True, timeout=60,
                       env={**os.environ, "TETHER_PAIR_LINK": links[1]}, stdin=subprocess.DEVNULL,
                       capture_output=True)
        pairing_seconds = time.monotonic() - started
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(30)
        report = json.loads(watcher.stdout.read())
        print(f"watcher: {report['scans']} scans of /proc during the run, {pairing_seconds:.1f} s of pairing")
        assert report["seen"] == [marker], report
        assert report["scans"] > 20
        for home in homes:
            assert tether_json(home, "hosts", "--json")[0]["id"] == parse_link(links[0]).host_id
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
        remove(*homes)
