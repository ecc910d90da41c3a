"""A stand-in for the codex binary that puts a few parameters into what tether asks of the real
``codex app-server`` — a client of app-server that is not tether, in tests, so the real Codex makes
items and server requests tether itself never asks for (dynamic tools declared in ``thread/start``,
a tool's output handed over in ``turn/start``, attestation asked for in ``initialize``, a login
with tokens the client manages).

Run as ``python appserver_proxy.py REAL_CODEX RULES.json ARGS...`` (see :func:`write_proxy`, which
writes the executable the adapter is given as its ``binary``). Anything but ``app-server`` (the
adapter's ``--version`` check) is the real binary's own run. For ``app-server`` it starts the real
one with the same arguments, hands its output and stderr on untouched, and passes each request
tether writes on, after applying the rules: a JSON list of::

    {"method": "thread/start",          # the request to change
     "when_text": "a prompt",           # optional: only a turn/start whose text input is this
     "set": {"dynamicTools": [...]},    # params to set (replacing those of the same name)
     "merge": {"capabilities": {...}}}  # or: objects to add keys to (initialize's capabilities)

or a request of the proxy's own, sent once right after tether's message named ``after`` (a
notification: ``initialized``); tether's next messages wait until Codex has answered it (at most
:data:`OWN_ANSWER_SECONDS`), and that answer is not handed to tether::

    {"after": "initialized", "send": {"method": "account/login/start", "params": {...}}}

Every request a rule changed or the proxy sent, and the answers to the proxy's own, are appended
as sent or received to ``RULES.json.log`` (one JSON line each). Only the standard library: it runs
outside the test's interpreter state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

OWN_ID = "tether-proxy-"  # the ids of the proxy's own requests (tether's are integers)
OWN_ANSWER_SECONDS = 10.0


def write_proxy(directory: Path, real: Path, rules: list[dict[str, Any]]) -> tuple[Path, Path]:
    """An executable in ``directory`` that runs the real codex at ``real`` behind this proxy with
    ``rules``; (its path, the log of the requests it changed)."""
    directory.mkdir(parents=True, exist_ok=True)
    rules_path = directory / "proxy-rules.json"
    rules_path.write_text(json.dumps(rules))
    script = directory / "codex"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "{real}" "{rules_path}" "$@"\n')
    script.chmod(0o755)
    return script, Path(f"{rules_path}.log")


def _texts(params: dict[str, Any]) -> list[str]:
    return [str(part.get("text")) for part in params.get("input") or [] if isinstance(part, dict)
            and part.get("type") == "text"]


def rewrite(line: bytes, rules: list[dict[str, Any]]) -> tuple[bytes, bool]:
    """The line to send on, and whether a rule changed it."""
    try:
        message = json.loads(line)
    except ValueError:
        return line, False
    if not isinstance(message, dict) or "id" not in message or not isinstance(message.get("params"), dict):
        return line, False
    params = message["params"]
    changed = False
    for rule in rules:
        if rule.get("method") != message.get("method"):
            continue
        if "when_text" in rule and rule["when_text"] not in _texts(params):
            continue
        params.update(rule.get("set", {}))
        for name, more in rule.get("merge", {}).items():
            params[name] = {**(params.get(name) or {}), **more}
        changed = True
    return (json.dumps(message).encode() + b"\n", True) if changed else (line, False)


class _Answers:
    """Codex's output handed on to tether, but for the answers to the proxy's own requests, which
    are logged and waited for."""

    def __init__(self, source: IO[bytes], log: IO[bytes]) -> None:
        self.source, self.log = source, log
        self.lock = threading.Lock()
        self.answered: dict[str, threading.Event] = {}

    def expect(self, request_id: str) -> threading.Event:
        with self.lock:
            return self.answered.setdefault(request_id, threading.Event())

    def run(self) -> None:
        out = sys.stdout.buffer
        for line in self.source:
            own = _own_answer(line)
            if own is None:
                out.write(line)
                out.flush()
                continue
            with self.lock:
                self.log.write(line)
                self.log.flush()
            self.expect(own).set()
        out.close()


def _own_answer(line: bytes) -> str | None:
    """The id of the proxy's own request this line answers, if it does."""
    if OWN_ID.encode() not in line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if isinstance(message, dict) and "method" not in message and str(message.get("id", "")).startswith(OWN_ID):
        return str(message["id"])
    return None


def _notification(line: bytes) -> str | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message.get("method") if isinstance(message, dict) and "id" not in message else None


def main(argv: list[str]) -> int:
    real, rules_path, args = argv[0], argv[1], argv[2:]
    if args[:1] != ["app-server"]:
        os.execv(real, [real, *args])
    rules = json.loads(Path(rules_path).read_text())
    own = [rule for rule in rules if "send" in rule]
    rules = [rule for rule in rules if "send" not in rule]
    # Its stderr is ours; its stdout passes through this proxy only when it has requests of its own.
    child = subprocess.Popen([real, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE if own else None)
    assert child.stdin is not None
    with open(f"{rules_path}.log", "ab") as log:
        answers = _Answers(child.stdout, log) if child.stdout is not None else None
        pump = threading.Thread(target=answers.run, daemon=True) if answers is not None else None
        if pump is not None:
            pump.start()
        lock = answers.lock if answers is not None else threading.Lock()
        for line in sys.stdin.buffer:
            sent, changed = rewrite(line, rules)
            if changed:
                with lock:
                    log.write(sent)
                    log.flush()
            try:
                child.stdin.write(sent)
                child.stdin.flush()
            except BrokenPipeError:
                break
            after = _notification(line)
            for n, rule in enumerate(own):
                if answers is None or rule.get("after") != after or rule.get("done"):
                    continue
                rule["done"] = True
                request = json.dumps({"id": f"{OWN_ID}{n}", **rule["send"]}).encode() + b"\n"
                answered = answers.expect(f"{OWN_ID}{n}")
                with lock:
                    log.write(request)
                    log.flush()
                try:
                    child.stdin.write(request)
                    child.stdin.flush()
                except BrokenPipeError:
                    break
                answered.wait(OWN_ANSWER_SECONDS)
        try:
            child.stdin.close()
        except BrokenPipeError:
            pass
        code = child.wait()
        if pump is not None:
            pump.join(5)  # the last of its output
    return code

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
