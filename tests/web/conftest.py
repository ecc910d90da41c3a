"""Fixtures for the web client tests: Debian's Chromium driven by Playwright, at a phone's size.

Never downloads a browser: Playwright is pointed at ``/usr/bin/chromium``. Without it the tests
skip with the reason — except in CI, where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.procs import TETHER, Proc, remove, short_home
from tests.support.deployment import Deployment, deployed
from tests.support.interfaces import pages_may_load

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # A name that is not loopback, so the page can be opened in an *insecure* context.
    "--host-resolver-rules=MAP insecure.tether.test 127.0.0.1",
]
# iPhone 12-15 class: the size the screens are designed for.
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}
REPO = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO / "src" / "tether" / "web" / "static"


# `tether relay` and `tether up` do not pass a static directory to RelayServer (yet), so the web
# tests run the relay through ``run_relay``, which serves the packaged client by default.
_RELAY_CODE = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "from tether.relay.server import run_relay\n"
    "asyncio.run(run_relay(sys.argv[1], mailbox_path=Path(sys.argv[2]) / 'relay' / 'mailbox.db'))\n"
)


def start_web_relay(port: int = 0, home: Path | None = None) -> tuple[Proc, int]:
    """A relay process that serves the packaged web client at ``/``, with its mailbox in ``home``
    (a new temporary one unless given); returns it and its port."""
    home = home or Path(tempfile.mkdtemp(prefix="tether-relay-"))
    proc = Proc([TETHER[0], "-c", _RELAY_CODE, f"127.0.0.1:{port}", str(home)], name="relay")
    match = proc.wait_for(r"relay listening on ws://127\.0\.0\.1:(\d+)/ws")
    return proc, int(match.group(1))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser tests: install it in scripts/test)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is missing (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def phone_page(browser: Any, name: str = "page", **options: Any) -> Iterator[Any]:
    """A page in a new browser context at a phone's size (``options``: more context options);
    its uncaught errors are kept in ``page.errors``, and its console and errors are printed as it
    closes: captured output is shown only when the test fails, and there the page's own words help."""
    with pages_may_load():
        context = browser.new_context(**{**PHONE, **options})
        page = context.new_page()
        errors: list[str] = []
        console: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.errors = errors
        try:
            yield page
        finally:
            context.close()
            print(f"{name} console:", *console, *(f"{name} error: {e}" for e in errors), sep="\n  ")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with phone_page(browser) as made:
        yield made


@pytest.fixture(scope="module")
def static_relay() -> Iterator[int]:
    """A relay process serving the packaged web client; yields its port."""
    relay, port = start_web_relay()
    try:
        yield port
    finally:
        relay.stop()


@pytest.fixture
def web_deployment() -> Iterator[Deployment]:
    with deployed(relay=start_web_relay) as deployment:
        yield deployment


def write_file_call(path: str, content: str, call_id: str) -> dict[str, Any]:
    """A scripted model reply asking for the builtin agent's write_file tool."""
    args = json.dumps({"path": path, "content": content})
    return {"tool_calls": [{"id": call_id, "name": "write_file", "arguments": args}]}


# Two runs of "write a file": the first to be approved, the second denied.
BUILTIN_SCRIPT = [
    {"chunks": ["I will ", "write ", "hello.py ", "for you."], **write_file_call("hello.py", "print('hi')\n", "c1")},
    {"chunks": ["Wrote ", "hello.py."]},
    write_file_call("denied.py", "print('no')\n", "c2"),
    {"text": "Understood, I did not write denied.py."},
]


@dataclass
class BuiltinDeployment(Deployment):
    model: Proc | None = None


@contextlib.contextmanager
def builtin_host(script: list[dict[str, Any]], name: str, config: str = "") -> Iterator[BuiltinDeployment]:
    """Relay (serving the web client), a scripted model running ``script``, and a host named
    ``name`` whose builtin agent uses it with approval "on-request" (like
    tests/e2e/test_builtin_agent.py); ``config`` is added to the host's config.toml."""
    host_home = short_home("th")
    workspace = short_home("tw")  # beside the home: a workspace inside it is refused
    model, model_port, _ = start_scripted_model("fake_openai", script, host_home)
    (host_home / "config.toml").write_text(
        "[agents.builtin]\n"
        f'base_url = "http://127.0.0.1:{model_port}/v1"\n'
        'model = "fake-model"\n'
        'api_key = "sk-web-test-key"\n'
        'approval = "on-request"\n'
        'sandbox = "workspace-write"\n'
        + config
    )
    try:
        with relay_and_host(host_home, workspace, name, {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}) as (
            relay, port, host
        ):
            yield BuiltinDeployment(relay, port, host, host_home, workspace, model)
    finally:
        model.stop()
        remove(host_home, workspace)


def start_scripted_model(module: str, script: list[dict[str, Any]], home: Path) -> tuple[Proc, int, Path]:
    """A scripted model server of tests/support (``fake_responses``, ``fake_anthropic``) as a
    process; returns it, its port and its request log."""
    script_path, log_path = home / f"{module}-script.json", home / f"{module}-requests.jsonl"
    script_path.write_text(json.dumps(script))
    proc = Proc([TETHER[0], "-m", f"tests.support.{module}", "--script", str(script_path), "--log", str(log_path)],
                name=module, env={"PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"PORT (\d+)", proc.out)
        if match:
            return proc, int(match.group(1)), log_path
        if not proc.alive:
            break
        time.sleep(0.05)
    raise AssertionError(f"the scripted model server {module} did not start:\n{proc.log}")


@dataclass
class ScriptedDeployment(Deployment):
    """A relay and a host whose agent talks to a scripted model process."""

    model: Proc
    requests_log: Path

    def model_requests(self) -> list[dict[str, Any]]:
        if not self.requests_log.exists():
            return []
        return [json.loads(line) for line in self.requests_log.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def relay_and_host(
    host_home: Path, workspace: Path, name: str, env: dict[str, str]
) -> Iterator[tuple[Proc, int, Proc]]:
    """A relay serving the web client, and a host on it whose config.toml the caller wrote."""
    relay, port = start_web_relay()
    try:
        host = Proc(
            [*TETHER, "--home", str(host_home), "host", "--relay", f"ws://127.0.0.1:{port}", "--workspace",
             str(workspace), "--name", name],
            env=env, name="host",
        )
        try:
            host.wait_for(r"connected to relay")
            yield relay, port, host
        finally:
            host.stop()
    finally:
        relay.stop()


@pytest.fixture
def builtin_deployment() -> Iterator[BuiltinDeployment]:
    with builtin_host(BUILTIN_SCRIPT, "builtin-host") as deployment:
        yield deployment


@pytest.fixture
def cli_home() -> Iterator[Path]:
    home = short_home("tc")
    yield home
    remove(home)
