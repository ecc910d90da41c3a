"""Issue [6] item 10: a home another local user could have written to is not trusted.

The attack: another user makes a 0777 directory and plants in it a home whose key file (0644)
holds keys of their choosing; the owner's `tether host --home` there made them the host's
identity. Here, through real `tether` processes, every such home is refused with a message that
says what is wrong and how to fix it, and the fixed home starts. As root (CI), "another user" is
a directory chowned to an unused uid; as anyone else, a directory others can write to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import TETHER, Proc, remove, start_relay, tether
from tether.crypto.keys import Identity
from tether.home import ensure_home

OTHER_UID = 65534  # nobody: "another user of this machine"
ROOT = os.geteuid() == 0


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may write to and that is not the owner's (without the sticky bit
    /tmp has, so anyone could swap what is inside): the other user's, when running as root."""
    # Not under /tmp: its parents (/var/tmp 1777, /var, /) are as a real machine has them.
    path = Path(tempfile.mkdtemp(prefix="shared-", dir="/var/tmp"))
    path.chmod(0o777)
    if ROOT:
        os.chown(path, OTHER_UID, OTHER_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _plant(home: Path, *, file_mode: int = 0o644, dir_mode: int = 0o755) -> Identity:
    """What the other user leaves behind: a host home with keys they know."""
    planted = Identity.generate()
    (home / "host").mkdir(parents=True)
    keys = home / "host" / "keys.json"
    planted.save(keys)
    keys.chmod(file_mode)
    (home / "host").chmod(dir_mode)
    return planted


def _refused(home: Path, *args: str) -> str:
    result = tether(home, *args, check=False, timeout=30)
    assert result.returncode != 0, f"tether {' '.join(args)} accepted {home}:\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_planted_home_in_another_users_directory_is_refused(shared: Path) -> None:
    home = shared / "home"
    _plant(home)
    if ROOT:
        for path in (home, home / "host", home / "host" / "keys.json"):
            os.chown(path, OTHER_UID, OTHER_UID)
    message = _refused(home, "host", "--relay", "ws://127.0.0.1:9")
    assert "refusing" in message and str(shared) in message
    assert ("belongs to user 'nobody'" if ROOT else "writable by other users") in message
    if ROOT:
        assert "use a home of your own" in message  # nothing to chmod: it is not the owner's to fix
    # The client side (a device's keys and its list of hosts) refuses it the same way.
    assert "refusing" in _refused(home, "hosts")
    assert not (home / "host" / "state.db").exists()  # refused before anything was made


def test_a_key_file_others_can_read_or_a_shared_parent_is_refused_with_the_fix() -> None:
    base = Path(tempfile.mkdtemp(prefix="own-", dir="/var/tmp"))
    home = base / "home"
    home.mkdir(mode=0o700)
    try:
        planted = _plant(home, file_mode=0o644, dir_mode=0o700)
        message = _refused(home, "host", "--relay", "ws://127.0.0.1:9")
        assert "keys.json" in message and "mode 644" in message
        assert f"chmod 600 {home / 'host' / 'keys.json'}" in message
        (home / "host" / "keys.json").chmod(0o600)

        (home / "host").chmod(0o755)  # the directory of the keys open to others
        message = _refused(home, "host", "--relay", "ws://127.0.0.1:9")
        assert f"chmod 700 {home / 'host'}" in message
        (home / "host").chmod(0o700)

        base.chmod(0o777)  # a parent anyone can write to (no sticky bit): the home can be swapped
        message = _refused(home, "host", "--relay", "ws://127.0.0.1:9")
        assert "(a parent) is writable by other users" in message and f"chmod go-w {base}" in message
        base.chmod(0o755)

        # Fixed as the messages said: the host starts, with the keys it was given.
        relay, port = start_relay()
        host = Proc([*TETHER, "--home", str(home), "host", "--relay", f"ws://127.0.0.1:{port}",
                     "--workspace", str(base), "--name", "fixed"], name="host")
        try:
            host.wait_for(r"connected to relay")
            status = tether(home, "status", "--json").stdout
            assert planted.id in status
        finally:
            host.stop()
            relay.stop()
    finally:
        remove(base)


def test_a_new_home_is_made_private_even_under_a_loose_umask() -> None:
    base = Path(tempfile.mkdtemp(prefix="umask-", dir="/var/tmp"))
    old = os.umask(0o002)
    try:
        home = base / "deep" / "home"
        ensure_home(home)
        for path in (base / "deep", home):
            assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
    finally:
        os.umask(old)
        remove(base)
