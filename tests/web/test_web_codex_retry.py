"""Codex's model server out of reach, watched from the phone ([8] acceptance): real relay and host
processes, the real Codex CLI, and a model server address where nothing listens at first.

Codex keeps the turn going and says "Reconnecting... waiting for network" (0.169.0: at about 0, 5,
15 and 35 s). The page shows "reconnecting (attempt n)" in the session header and a live card
within 2 s of the first notice; the CLI's ``sessions events --json`` has the same ``turn.retrying``
events. Then a server comes up at that address and refuses the request: Codex gives up, and the page
and the CLI say why, in the server's own words.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV, write_codex_config
from tests.procs import remove, short_home, tether
from tests.support.deployment import Deployment

from .conftest import relay_and_host
from .pages import until
from .test_web_codex import CODEX_TIMEOUT, cli_events, codex_wrapper, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REFUSAL = "the model server is closed for maintenance"


class Refusing(BaseHTTPRequestHandler):
    """Answers every request with a 400 and an OpenAI-style error body."""

    def do_POST(self) -> None:
        body = json.dumps({"error": {"message": REFUSAL, "type": "invalid_request_error"}}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unreachable_codex() -> Iterator[tuple[Deployment, int]]:
    wrapper = codex_wrapper()
    port = unused_port()
    host_home, workspace = short_home("th"), short_home("tw")
    codex_home = host_home / "codex-home"
    write_codex_config(codex_home, f"http://127.0.0.1:{port}/v1")
    (host_home / "config.toml").write_text(
        f'[agents.codex]\nbinary = "{wrapper}"\ncodex_home = "{codex_home}"\n'
        'approval = "on-request"\nsandbox = "workspace-write"\n'
    )
    try:
        # HOME: Codex's login shells must not read this machine's profile (test_web_codex.py)
        host_env = {FAKE_KEY_ENV: "dummy-key", "HOME": str(host_home)}
        with relay_and_host(host_home, workspace, "codex-host", host_env) as (relay, rport, host):
            yield Deployment(relay, rport, host, host_home, workspace), port
    finally:
        remove(host_home, workspace)


def test_reconnecting_is_shown_at_once_and_the_reason_when_codex_gives_up(
    page: Any, unreachable_codex: tuple[Deployment, int], cli_home: Path
) -> None:
    d, model_port = unreachable_codex
    session = start_on_page(page, d, cli_home, "are you there?")

    # The first "Reconnecting..." notice: on the page within 2 s of the host logging it.
    header = page.locator("#session-retrying")
    header.wait_for(timeout=CODEX_TIMEOUT)
    seen_at = time.time()
    retrying = [e for e in cli_events(cli_home, session) if e["type"] == "turn.retrying"]
    assert retrying and retrying[0]["data"]["attempt"] == 1
    assert retrying[0]["data"]["message"] == "Reconnecting... waiting for network"
    assert seen_at - retrying[0]["ts"] < 2.0, f"shown {seen_at - retrying[0]['ts']:.2f} s after the notice"
    assert "reconnecting (attempt" in header.text_content()
    card = page.locator('.card.retrying[data-status="running"]')
    assert "Reconnecting (attempt" in card.text_content() and "Connection failed" in card.text_content()
    assert page.get_attribute("#session-status", "data-status") == "running"

    # The server comes back and refuses: Codex gives up at its next try, and says why.
    server = ThreadingHTTPServer(("127.0.0.1", model_port), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ended = page.locator("p.turn-end", has_text=REFUSAL)
        ended.wait_for(timeout=CODEX_TIMEOUT)
        assert ended.text_content() == f"Turn failed: Codex: {REFUSAL}"
        until(lambda: header.count() == 0, what="the header's reconnecting state to end")
        assert "Gave up reconnecting after" in page.text_content(".card.retrying")
        events = cli_events(cli_home, session)
        (completed,) = [e["data"] for e in events if e["type"] == "turn.completed"]
        assert completed == {"turn": completed["turn"], "status": "failed", "error": f"Codex: {REFUSAL}"}
        # The CLI's human output says the same.
        human = tether(cli_home, "sessions", "events", session).stdout
        assert "turn.retrying" in human and REFUSAL in human
    finally:
        server.shutdown()
        server.server_close()
    assert not page.errors  # type: ignore[attr-defined]
