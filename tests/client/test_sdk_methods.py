"""Every method a client calls is one the host declares, with params its declaration accepts
([7] item 2): the SDK's wrappers, the CLI and the web client are checked against
``protocol/methods.py`` ``METHODS``, so renaming a method or a parameter there fails here rather
than on a user's call."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from tether.client.sdk import Client
from tether.protocol.messages import decode_params
from tether.protocol.methods import METHODS

SRC = Path(__file__).resolve().parents[2] / "src" / "tether"
SESSION = "s_abcdefghij"

# One sample call per public SDK method that talks to the host (a new wrapper needs a line here).
SAMPLES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "info": ((), {}),
    "sessions": ((), {}),
    "session": ((SESSION,), {"scrollback": True}),
    "start_session": ((["bash", "-l"],), {"workspace": "/w", "cols": 100, "rows": 30}),
    "approve": ((SESSION, "ap_abcdefgh", "approve_for_session"), {}),
    "threads": ((), {}),
    "diff": ((SESSION,), {}),
    "send": ((SESSION, "ls\n"), {"model": "gpt-6-astra", "effort": "high", "mode": "plan",
                                  "images": [("shot.png", b"\x89PNG\r\n\x1a\n...")]}),
    "review": ((SESSION,), {"base": "main"}),
    "compact": ((SESSION,), {}),
    "unqueue": ((SESSION, "q_abcdefgh"), {}),
    "archive": ((SESSION,), {"archived": False}),
    "delete": ((SESSION,), {}),
    "interrupt": ((SESSION,), {}),
    "resize": ((SESSION, 120, 40), {}),
    "models": ((SESSION,), {}),
    "answer": ((SESSION, "ap_abcdefgh", {"q1": ["blue"], "q2": ["free text"]}), {}),
}
AGENT_START: dict[str, Any] = {"agent": "codex", "prompt": "fix it", "approval": "untrusted", "sandbox": "read-only",
               "thread": "thread-1", "workspace": "/w"}
# Not wrappers of one method: connecting, closing, listing paired hosts, following events, and
# the relay's mailbox (tests/client/test_mailbox.py, tests/e2e/test_mailbox.py).
NOT_CALLS = {"open", "from_token", "close", "call", "hosts", "events", "offline_snapshot", "queue"}


class Recorder:
    """Stands in for the connection: records each call and answers what the wrappers read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = 30) -> Any:
        self.calls.append((method, params or {}))
        return {"id": SESSION, "seq": 1, "threads": [], "changes": [], "models": []}


def declared_and_accepted(method: str, params: dict[str, Any]) -> None:
    assert method in METHODS, f"{method} is not declared in protocol/methods.py"
    decode_params(params, METHODS[method].params)  # raises on a name or value the host refuses


async def test_every_sdk_wrapper_calls_a_declared_method_with_accepted_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = {name for name, fn in inspect.getmembers(Client, inspect.iscoroutinefunction) if not name.startswith("_")}
    public |= {name for name, fn in inspect.getmembers(Client, inspect.isasyncgenfunction) if not name.startswith("_")}
    assert public - NOT_CALLS == set(SAMPLES), "add a sample call for each new SDK method"

    client = Client(tmp_path)
    recorder = Recorder()

    async def connection() -> Recorder:
        return recorder

    monkeypatch.setattr(client, "_connection", connection)
    for name, (args, kwargs) in SAMPLES.items():
        await getattr(client, name)(*args, **kwargs)
    await client.start_session(**AGENT_START)
    assert len(recorder.calls) == len(SAMPLES) + 1
    for method, params in recorder.calls:
        declared_and_accepted(method, params)
    # What each wrapper sends is what it was given (a rename on one side only shows up here).
    terminal, agent = (p for m, p in recorder.calls if m == "sessions.start")
    assert terminal == {"agent": "pty", "workspace": "/w", "command": ["bash", "-l"], "cols": 100, "rows": 30,
                        "cid": terminal["cid"]}
    assert agent == {**AGENT_START, "cid": agent["cid"]}
    assert dict(recorder.calls)["sessions.approve"]["decision"] == "approve_for_session"


def literal_calls_in_python(path: Path) -> list[tuple[str, int]]:
    """``x.call("name", ...)`` and ``x._command("name", ...)`` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("call", "_command") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return found


JS_CALL = re.compile(r"\b(?:call|command)\(\s*\"([a-z_]+\.[a-z_]+)\"")
# The pairing exchange is its own protocol, before a device exists (host/pairing.py).
PAIRING = {"pair.complete"}


def test_the_cli_the_sdk_and_the_web_client_call_only_declared_methods() -> None:
    python = [*(SRC / "cli").glob("*.py"), *(SRC / "client").glob("*.py")]
    javascript = [p for p in (SRC / "web" / "static").rglob("*.js") if "vendor" not in p.parts]
    called: dict[str, str] = {}
    for path in python:
        for name, line in literal_calls_in_python(path):
            called.setdefault(name, f"{path.relative_to(SRC)}:{line}")
    for path in javascript:
        for match in JS_CALL.finditer(path.read_text()):
            called.setdefault(match.group(1), str(path.relative_to(SRC)))
    assert len(called) > 15  # the scan finds the calls at all
    undeclared = {name: where for name, where in called.items() if name not in METHODS and name not in PAIRING}
    assert not undeclared, f"calls to methods protocol/methods.py does not declare: {undeclared}"
