"""A CLI command that only talks to the local daemon does not load websockets: the SDK and the
CLI import ``tether.relay.link`` on their first dial of a relay (``tether.client.dial``)."""

from __future__ import annotations

import subprocess
import sys

LOADED = "import sys, tether.client.sdk, tether.cli.main, tether.cli.sessions; print('websockets' in sys.modules)"


def test_the_sdk_and_the_cli_load_websockets_only_to_dial_a_relay() -> None:
    # a fresh interpreter: this one has loaded everything already
    said = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True, timeout=60, check=True)
    assert said.stdout.strip() == "False", said.stderr
