"""A stand-in for the codex binary that puts a few parameters into what tether asks of the real
``codex app-server`` — a client of app-server that is not tether, in tests, so the real Codex makes
items tether itself never asks for (dynamic tools declared in ``thread/start``, a tool's output
handed over in ``turn/start``).

Run as ``python appserver_proxy.py REAL_CODEX RULES.json ARGS...`` (see :func:`write_proxy`, which
writes the executable the adapter is given as its ``binary``). Anything but ``app-server`` (the
adapter's ``--version`` check) is the real binary's own run. For ``app-server`` it starts the real
one with the same arguments, hands its output and stderr on untouched, and passes each request
tether writes on, after applying the rules: a JSON list of::

    {"method": "thread/start",          # the request to change
     "when_text": "a prompt",           # optional: only a turn/start whose text input is this
     "set": {"dynamicTools": [...]}}    # params to set (replacing those of the same name)

Every request a rule changed is appended, as sent, to ``RULES.json.log`` (one JSON line each).
Only the standard library: it runs outside the test's interpreter state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


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
        if rule["method"] != message.get("method"):
            continue
        if "when_text" in rule and rule["when_text"] not in _texts(params):
            continue
        params.update(rule["set"])
        changed = True
    return (json.dumps(message).encode() + b"\n", True) if changed else (line, False)


def main(argv: list[str]) -> int:
    real, rules_path, args = argv[0], argv[1], argv[2:]
    if args[:1] != ["app-server"]:
        os.execv(real, [real, *args])
    rules = json.loads(Path(rules_path).read_text())
    child = subprocess.Popen([real, *args], stdin=subprocess.PIPE)  # its stdout and stderr are ours
    assert child.stdin is not None
    with open(f"{rules_path}.log", "ab") as log:
        for line in sys.stdin.buffer:
            sent, changed = rewrite(line, rules)
            if changed:
                log.write(sent)
                log.flush()
            try:
                child.stdin.write(sent)
                child.stdin.flush()
            except BrokenPipeError:
                break
    try:
        child.stdin.close()
    except BrokenPipeError:
        pass
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
