"""A Codex session driven from the phone: real relay and host processes, the real Codex CLI on the
host (scripts/install-codex), and the scripted Responses-API model (tests/support/fake_responses.py)
as a process, whose URL is in the host's CODEX_HOME (like tests/e2e/test_codex_agent.py).

The page starts a Codex session with a prompt; the model asks to run a command; the approval card
shows the exact command, its cwd and the model's reason; approved on the page, the command's output
and the agent's answer appear and the session goes idle. A follow-up from the page asks for another
command, which the page declines: it never runs (the marker file it would create is absent) and the
model was told so.

A thread started outside tether (another app-server on the host's CODEX_HOME, as the desktop app
would, like tests/e2e/test_codex_agent.py) is listed on the New session screen once Codex is
chosen (after an empty list and a Refresh); adopted with a follow-up prompt, the model is shown the
earlier turn, and its reply reaches the page. A host that cannot list its threads (no Codex
binary) gets the list's error state, with New thread still offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV, Events, codex_cache_dir, write_codex_config
from tests.procs import TETHER, Proc, login, remove, short_home, tether
from tests.support.deployment import Deployment
from tether.agents.codex import PINNED_VERSION, CodexError, find_codex
from tether.agents.codex.appserver import AppServer

from .conftest import ScriptedDeployment, relay_and_host, start_scripted_model, start_web_relay
from .pages import pair_page, until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

COMMAND = "echo from-codex-$((40+2))"
MARKER = "codex-marker.txt"
DECLINED = f"echo declined > {MARKER}"
# Codex answers in seconds, but its first start on a cold machine takes longer than the page's 15 s.
CODEX_TIMEOUT = 60_000  # ms

SCRIPT = [
    # Turn 1: ask to run the command (outside the sandbox, so Codex asks for approval), then answer.
    {"exec": {"cmd": COMMAND, "justification": "to greet you"}},
    {"text": ["It printed ", "from-codex-42", "."]},
    # Turn 2: ask to write the marker; after the denial, say so.
    {"exec": {"cmd": DECLINED, "justification": "to leave a marker"}},
    {"text": "Fine, I did not write the marker."},
]


def codex_wrapper() -> Path:
    """The npm wrapper of the pinned Codex CLI (or $TETHER_CODEX_BIN); skips when it is absent."""
    explicit = os.environ.get("TETHER_CODEX_BIN")
    wrapper = Path(explicit) if explicit else codex_cache_dir() / "node_modules" / ".bin" / "codex"
    if not wrapper.exists():
        if os.environ.get("CI"):
            pytest.fail(f"Codex CLI {PINNED_VERSION} is not installed, and CI must run these tests")
        pytest.skip(f"Codex CLI {PINNED_VERSION} is not installed: run scripts/install-codex (scripts/test does)")
    try:
        find_codex(wrapper)
    except CodexError as exc:
        pytest.fail(f"Codex is installed but unusable: {exc}")
    return wrapper


CodexWebDeployment = ScriptedDeployment


@pytest.fixture
def codex_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SCRIPT) as d:
        yield d


@contextlib.contextmanager
def deploy_codex(
    script: list[dict[str, Any]], codex_config: str = "", env: dict[str, str] | None = None, features: str = "",
    *, binary: Path | None = None, write_home: Callable[[Path, str], dict[str, str]] | None = None,
    sandbox: str = "workspace-write",
) -> Iterator[CodexWebDeployment]:
    """The host's Codex on the scripted model; ``codex_config`` is added to its CODEX_HOME's config
    (``features`` to its [features] table), ``env`` to the host's environment. ``binary``: what the
    host runs as codex instead of the pinned CLI (a stand-in in front of it); ``write_home(home,
    model_url)`` writes the CODEX_HOME instead of the plain config on the scripted model, and returns
    more environment for the host. ``sandbox``: the host's policy for its Codex sessions."""
    wrapper = codex_wrapper()
    host_home = short_home("th")
    workspace = short_home("tw")  # beside the home: a workspace inside it is refused
    model, model_port, requests_log = start_scripted_model("fake_responses", script, host_home)
    codex_home = host_home / "codex-home"
    model_url = f"http://127.0.0.1:{model_port}/v1"
    if write_home is None:
        write_codex_config(codex_home, model_url, features=features)
    else:
        env = {**(env or {}), **write_home(codex_home, model_url)}
    if codex_config:
        with (codex_home / "config.toml").open("a") as f:
            f.write(codex_config)
    (host_home / "config.toml").write_text(
        "[agents.codex]\n"
        f'binary = "{binary or wrapper}"\n'
        f'codex_home = "{codex_home}"\n'
        'approval = "on-request"\n'
        f'sandbox = "{sandbox}"\n'
    )
    try:
        # HOME: Codex runs each command in a login shell, which must not read this machine's profile
        # (a stale lock there made every command wait 60 s: ../shared/notes/machine.md)
        host_env = {FAKE_KEY_ENV: "dummy-key", "HOME": str(host_home), **(env or {})}
        with relay_and_host(host_home, workspace, "codex-host", host_env) as (
            relay, port, host
        ):
            yield CodexWebDeployment(relay, port, host, host_home, workspace, model, requests_log)
    finally:
        model.stop()
        remove(host_home, workspace)


def cli_events(home: Path, session: str) -> list[dict[str, Any]]:
    out = tether(home, "sessions", "events", session, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def start_on_page(page: Any, d: Deployment, cli_home: Path, prompt: str, agent: str = "codex") -> str:
    """Pair the page (and a CLI device to watch with), start a session of ``agent`` there with
    ``prompt``, and return its id once its view is up."""
    pair_page(page, d)
    login(cli_home, d.pairing_link(), "--name", "cli-watcher", "--json")
    page.click('a.host[data-online="1"]')
    page.click("#new-session")
    page.check(f'input[name="agent"][value="{agent}"]')
    page.fill("#new-prompt", prompt)
    page.click("#start-session")
    page.wait_for_selector("#cards", timeout=CODEX_TIMEOUT)
    return str(page.url.rsplit("/", 1)[1])


def card_kinds(page: Any) -> list[str]:
    """The conversation's visible cards, by kind, top to bottom."""
    return list(page.eval_on_selector_all(
        "#cards > .card", "els => els.map(e => [...e.classList].find(c => c !== 'card'))"))


def status(page: Any) -> str:
    return str(page.get_attribute("#session-status", "data-status"))


def test_a_codex_session_approved_then_declined_from_the_phone(page: Any, codex_deployment: CodexWebDeployment,
                                                               cli_home: Path) -> None:
    d = codex_deployment
    pair_page(page, d)
    link = str(json.loads(tether(d.host_home, "pair", "--json").stdout)["link"])
    login(cli_home, link, "--name", "cli-watcher", "--json")

    page.click('a.host[data-online="1"]')
    page.click("#new-session")
    page.check('input[name="agent"][value="codex"]')
    page.fill("#new-prompt", "greet me")
    page.click("#start-session")
    page.wait_for_selector("#cards", timeout=CODEX_TIMEOUT)
    session = page.url.rsplit("/", 1)[1]
    assert session.startswith("s_")
    page.locator(".card.user", has_text="greet me").wait_for(timeout=CODEX_TIMEOUT)

    # The approval card: the exact command, where it runs, and why.
    card = page.locator('.card.approval[data-resolved=""]')
    card.wait_for(timeout=CODEX_TIMEOUT)
    (asked,) = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "approval.requested"]
    assert COMMAND in asked["details"]["command"]  # as Codex will run it (in a login shell)
    assert card.locator("pre.cmd").text_content() == asked["details"]["command"]
    workspace = str(d.workspace.resolve())
    assert asked["details"]["cwd"] == workspace
    assert card.locator(".cwd").text_content() == f"in {workspace}"
    assert card.locator(".reason").text_content() == "Why: to greet you"
    until(lambda: status(page) == "waiting-for-approval", what="the status badge")
    # The command waits: it shows once, in the approval card, not as a running command card too.
    assert page.locator(".card.command").count() == 0
    # Only what Codex offers (its availableDecisions): no "for this session" here.
    assert card.locator("button.approve-session").count() == 0 and card.locator("button.deny").is_visible()

    card.locator("button.approve").click()
    page.wait_for_selector('.card.approval[data-resolved="approve"]', timeout=CODEX_TIMEOUT)
    assert "Approved by phone-under-test" in page.text_content('.card.approval[data-resolved="approve"]')

    # The command ran: its card has the output and exit 0; the answer follows; the turn ends.
    ran = page.locator(".card.command", has=page.locator("pre.output", has_text="from-codex-42"))
    ran.wait_for(timeout=CODEX_TIMEOUT)
    assert COMMAND in ran.locator("code.cmd").text_content()
    assert ran.locator(".badge.exit").text_content() == "exit 0"
    page.locator(".card.agent", has_text="It printed from-codex-42.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the first turn to end")
    # In the order it happened: the prompt, Codex's warning about the scripted model's name (it
    # has no metadata for it), the question and its answer, the output, the reply.
    assert card_kinds(page) == ["user", "notice", "approval", "command", "agent"]
    assert "Model metadata for `mock-model` not found" in page.text_content('.card.notice[data-level="warning"]')
    assert not page.locator("#working.on").count()
    events = cli_events(cli_home, session)
    (resolved,) = [e for e in events if e["type"] == "approval.resolved"]
    assert resolved["data"]["decision"] == "approve" and resolved["data"]["by"]["name"] == "phone-under-test"
    assert "from-codex-42" in json.dumps(d.model_requests()[1]["input"])

    # A follow-up from the page; its command is declined there and never runs.
    page.fill("#composer", "now leave a marker")
    page.click("#send")
    page.locator('.card.user .prompt-state[data-state="applied"]').wait_for(timeout=CODEX_TIMEOUT)
    card = page.locator('.card.approval[data-resolved=""]')
    card.wait_for(timeout=CODEX_TIMEOUT)
    assert DECLINED in card.locator("pre.cmd").text_content()
    card.locator("button.deny").click()
    page.wait_for_selector('.card.approval[data-resolved="deny"]', timeout=CODEX_TIMEOUT)
    page.locator(".card.agent", has_text="Fine, I did not write the marker.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the second turn to end")
    declined = page.locator(".card.command", has_text=MARKER)
    declined.wait_for(timeout=CODEX_TIMEOUT)
    assert declined.locator(".badge").text_content() == "not run"
    assert not (d.workspace / MARKER).exists()
    # (Codex repeats its warning each turn: shown once.)
    turn = ["user", "approval", "command", "agent"]
    assert card_kinds(page) == [turn[0], "notice", *turn[1:], *turn]
    assert "rejected by user" in json.dumps(d.model_requests()[3]["input"])
    events = cli_events(cli_home, session)
    assert [e["data"]["decision"] for e in events if e["type"] == "approval.resolved"] == ["approve", "deny"]
    assert [e["data"]["status"] for e in events if e["type"] == "turn.completed"] == ["completed", "completed"]
    # What the page drew, as the CLI reads it: the prompts, Codex's warning once, both commands, the
    # answers (the first streamed in the model's pieces).
    done = [e["data"] for e in events if e["type"] == "item.completed"]
    assert [i["text"] for i in done if i["kind"] == "user_message"] == ["greet me", "now leave a marker"]
    ran, not_run = [i for i in done if i["kind"] == "command"]
    assert COMMAND in ran["command"] and ran["cwd"] == workspace
    assert (ran["output"], ran["exit_code"], ran["status"]) == ("from-codex-42\n", 0, "completed")
    assert DECLINED in not_run["command"] and (not_run["exit_code"], not_run["status"]) == (None, "declined")
    assert [i["text"] for i in done if i["kind"] == "agent_message"] == [
        "It printed from-codex-42.", "Fine, I did not write the marker."]
    first_answer = next(i["item"] for i in done if i["kind"] == "agent_message")
    assert [e["data"]["data"] for e in events if e["type"] == "item.delta"
            and e["data"]["item"] == first_answer] == ["It printed ", "from-codex-42", "."]
    (warned,) = [e["data"] for e in events if e["type"] == "agent.notice"]
    assert warned["level"] == "warning" and "Model metadata for `mock-model` not found" in warned["message"]

    page.screenshot(path="/tmp/tether-web-codex.png", full_page=True)
    assert not page.errors  # type: ignore[attr-defined]


DESKTOP_PROMPT = "hello from the desktop"
DESKTOP_REPLY = "Hi from the desktop."
FOLLOW_UP = "do you remember?"
REMEMBERED = "I remember the desktop."


@pytest.fixture
def desktop_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex([{"text": DESKTOP_REPLY}, {"text": REMEMBERED}]) as d:
        yield d


def start_desktop_thread(d: CodexWebDeployment) -> str:
    """A Codex thread with one finished turn, started outside tether as the desktop app would: its
    own app-server on the host's CODEX_HOME. Returns the thread's id."""

    async def run() -> str:
        desktop = await AppServer.start(find_codex(codex_wrapper()), codex_home=d.host_home / "codex-home",
                                        cwd=d.workspace, env={FAKE_KEY_ENV: "dummy-key"})
        try:
            events = Events(desktop)
            thread_id = str((await desktop.thread_start(d.workspace, "on-request", "workspace-write"))["thread"]["id"])
            await desktop.turn_start(thread_id, DESKTOP_PROMPT)
            await events.wait("turn/completed")
            return thread_id
        finally:
            await desktop.close()

    # Its own thread: Playwright's sync API owns this one's event loop.
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["id"] = asyncio.run(run())
        except BaseException as exc:  # re-raised below, in the test's thread
            result["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return str(result["id"])


def test_a_desktop_codex_thread_is_picked_and_continued_from_the_phone(page: Any,
                                                                        desktop_deployment: CodexWebDeployment) -> None:
    d = desktop_deployment
    pair_page(page, d)
    page.click('a.host[data-online="1"]')
    page.click("#new-session")

    # No threads on the host yet: Codex offers a new thread only, and says so.
    assert not page.locator("#thread-field").is_visible()  # not for a terminal
    page.check('input[name="agent"][value="codex"]')
    page.wait_for_selector('.threads-state[data-state="empty"]', timeout=CODEX_TIMEOUT)
    assert page.locator('input[name="thread"]').count() == 1
    assert page.is_checked('input[name="thread"][value=""]')
    assert page.locator("#new-workspace").is_visible()

    # A thread is started on the desktop; Refresh lists it: its first prompt, where, and when.
    thread_id = start_desktop_thread(d)
    page.click("#refresh-threads")
    choice = page.locator("label.choice", has=page.locator(f'input[name="thread"][value="{thread_id}"]'))
    choice.wait_for(timeout=CODEX_TIMEOUT)
    assert choice.locator("strong").text_content() == DESKTOP_PROMPT  # no name: its preview
    where = choice.locator("small.where").text_content() or ""
    assert str(d.workspace.resolve()) in where or str(d.workspace) in where, where
    assert "just now" in where or "min ago" in where, where
    assert page.is_checked('input[name="thread"][value=""]')  # a new thread stays the default
    assert not page.locator(".threads-state").count()

    # Adopted: the workspace follows the thread (the field is hidden), the button says so.
    choice.click()
    assert page.is_checked(f'input[name="thread"][value="{thread_id}"]')
    assert not page.locator("#new-workspace").is_visible()
    assert page.text_content("#start-session") == "Continue thread"
    page.screenshot(path="/tmp/tether-web-codex-threads.png", full_page=True)
    box = choice.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390  # fits the phone
    page.fill("#new-prompt", FOLLOW_UP)
    page.click("#start-session")
    page.wait_for_selector("#cards", timeout=CODEX_TIMEOUT)
    assert page.url.rsplit("/", 1)[1].startswith("s_")
    page.locator(".card.user", has_text=FOLLOW_UP).wait_for(timeout=CODEX_TIMEOUT)
    page.locator(".card.agent", has_text=REMEMBERED).wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the adopted thread's turn to end")

    # The model was shown the desktop's turn along with the follow-up: the thread was continued.
    requests = [json.dumps(r.get("input")) for r in d.model_requests()]
    (asked,) = [r for r in requests if FOLLOW_UP in r]
    assert DESKTOP_PROMPT in asked and DESKTOP_REPLY in asked
    assert not page.errors  # type: ignore[attr-defined]


def test_the_thread_list_says_when_the_host_cannot_list_codex_threads(page: Any) -> None:
    """A host whose Codex cannot start its app-server (its CODEX_HOME is a file, not a directory):
    the list says why, and New thread stays usable. (A Codex that is not installed at all is not
    offered: tests/web/test_phone_app.py.)"""
    host_home = short_home("th")
    workspace = short_home("tw")  # beside the home: a workspace inside it is refused
    not_a_dir = host_home / "codex-home-is-a-file"
    not_a_dir.write_text("")
    (host_home / "config.toml").write_text(
        f'[agents.codex]\nbinary = "{codex_wrapper()}"\ncodex_home = "{not_a_dir}"\n')
    relay, port = start_web_relay()
    host = Proc([*TETHER, "--home", str(host_home), "host", "--relay", f"ws://127.0.0.1:{port}", "--workspace",
                 str(workspace), "--name", "codex-host"], name="host")
    try:
        host.wait_for(r"connected to relay")
        pair_page(page, Deployment(relay, port, host, host_home, workspace))
        page.click('a.host[data-online="1"]')
        page.click("#new-session")
        page.check('input[name="agent"][value="codex"]')
        failed = page.locator('.threads-state[data-state="error"]')
        failed.wait_for()
        assert "Could not list Codex threads" in (failed.text_content() or "")
        assert page.is_checked('input[name="thread"][value=""]') and page.locator('input[name="thread"]').count() == 1
        assert page.locator("#new-workspace").is_visible() and page.text_content("#start-session") == "Start agent"
        page.click("#refresh-threads")  # tried again: still failing, and still said
        failed.wait_for()
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        host.stop()
        relay.stop()
        remove(host_home, workspace)
