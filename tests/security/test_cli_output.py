"""Terminal escapes in what the CLI prints, through real processes: a device, a token, a session
command and a host name chosen by someone else carry OSC 52 (writes the clipboard), a title set,
a screen clear and other C0/C1 controls. Every human listing shows them escaped and readable; no
raw ESC, BEL, CSI or other control reaches the terminal; ``--json`` stays valid and exact."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.procs import login, remove, short_home, start_host, tether, tether_json
from tests.support.deployment import Deployment

pytestmark = pytest.mark.slow

# OSC 52 (set the clipboard to "echo pwned"), OSC 0 (window title), CSI 2J (clear screen), an 8-bit
# CSI (\x9b) setting red, backspace, DEL, a newline that would forge a row, and a bidi override.
EVIL = "ev\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;pwned\x07\x1b[2J\x9b31m\x08\x7f\nrow\u202eil"
SHOWN = "ev\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x08\\x7f\\nrow\\u202eil"


def _clean(result: subprocess.CompletedProcess[str]) -> str:
    """Both streams of a finished command; fails on any control character but newline."""
    text = result.stdout + result.stderr
    raw = sorted({f"U+{ord(c):04X}" for c in text if (not c.isprintable() and c != "\n")})
    assert not raw, f"raw control characters {raw} in: {text!r}"
    return text


def test_names_and_commands_from_elsewhere_are_printed_escaped(deployment: Deployment, client_home: Path) -> None:
    home = deployment.host_home
    # A device names itself; a token and a session come from a device with admin/prompt.
    login(client_home, tether_json(home, "pair", "--scopes", "read,prompt,admin", "--json")["link"], "--name", EVIL)
    tether(client_home, "tokens", "create", "--scopes", "read", "--name", EVIL)
    sid = tether_json(client_home, "sessions", "start", "--json", "--", "sh", "-c", f"sleep 60 # {EVIL}")["id"]

    for args in (["devices", "list"], ["tokens", "list"], ["sessions", "list"], ["audit"],
                 ["sessions", "events", sid]):
        for who in (home, client_home):  # the owner's view (local socket) and the device's (relay)
            shown = _clean(tether(who, *args))
            # An event's summary is cut at 100 characters.
            assert (SHOWN[:25] if args[-1] == sid else SHOWN) in shown, (args, shown)
    created = _clean(tether(client_home, "tokens", "create", "--scopes", "read", "--name", EVIL))
    assert f"token '{SHOWN}'" in created

    # --json: valid, and the exact name back.
    assert EVIL in [d["name"] for d in tether_json(home, "devices", "list", "--json")]
    assert EVIL in [t["name"] for t in tether_json(client_home, "tokens", "list", "--json")]
    [session] = [s for s in tether_json(client_home, "sessions", "list", "--json") if s["id"] == sid]
    assert session["command"][-1].endswith(EVIL)

    # An error message from the host that quotes what a device sent: a program that cannot start.
    failed = tether(client_home, "sessions", "start", "--", EVIL, check=False)
    assert failed.returncode == 1 and f"command not found: {SHOWN}" in _clean(failed)
    assert deployment.host.alive and tether_json(client_home, "sessions", "list", "--json")


def test_a_host_name_from_elsewhere_is_printed_escaped(deployment: Deployment, client_home: Path) -> None:
    """A host the client pairs with names itself: `login`, `hosts` and `status` escape it."""
    evil_home, workspace = short_home("th"), short_home("tw")
    evil = start_host(evil_home, deployment.relay_url, workspace, name=EVIL)
    try:
        paired = _clean(login(client_home, tether_json(evil_home, "pair", "--json")["link"]))
        assert f"paired with host {SHOWN}" in paired
        for args in (["hosts"], ["status"]):
            assert SHOWN in _clean(tether(client_home, *args))
        assert tether_json(client_home, "hosts", "--json")[0]["name"] == EVIL
        # The host's own log, where `tether host` prints it, is escaped too.
        assert "\x1b" not in evil.log and "\\x1b]52" in evil.log
    finally:
        evil.stop()
        remove(evil_home, workspace)
    # The other host still serves a device paired with it.
    deployment.pair(client_home)
    assert tether_json(client_home, "sessions", "list", "--host", "test-host", "--json") == []
