"""A stand-in for ``codex app-server`` speaking its stdio framing, for fast protocol tests.

Run as ``fake_appserver.py app-server``. It logs every line it reads to ``$FAKE_APPSERVER_LOG``
and behaves as follows:

- ``initialize`` → a result like Codex's;
- ``thread/list`` → ``-32001`` (overloaded) ``$FAKE_OVERLOAD`` times, then ``{"data": []}``;
- ``turn/start`` → sends the server requests ``currentTime/read`` (id "clock"),
  ``attestation/generate`` (id "attest") and an ``item/commandExecution/requestApproval`` (id 0),
  answers ``{"turn": …}``; when the approval's answer arrives it notifies ``test/answered`` with
  it; the answers to "clock" and "attest" → ``test/clock``, ``test/attest``;
- ``turn/interrupt`` → ``serverRequest/resolved`` for request 0, then ``{}``;
- ``thread/read`` with threadId ``"die"`` → writes to stderr and exits with code 3;
- ``thread/name/set`` → a JSON-RPC error ``-32600``.
"""

from __future__ import annotations

import json
import os
import sys


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    overloads = int(os.environ.get("FAKE_OVERLOAD", "0"))
    log_path = os.environ.get("FAKE_APPSERVER_LOG")
    log = open(log_path, "a") if log_path else None
    for line in sys.stdin:
        if log:
            log.write(line)
            log.flush()
        message = json.loads(line)
        method = message.get("method")
        ident = message.get("id")
        params = message.get("params") or {}
        if method is None:  # an answer to one of our requests
            if ident == 0:
                send({"method": "test/answered", "params": {"answer": message}})
            elif ident in ("clock", "attest"):
                send({"method": f"test/{ident}", "params": {"answer": message}})
        elif method == "initialize":
            send({"id": ident, "result": {"userAgent": "tether/0.169.0 (fake)", "codexHome": "/nowhere"}})
        elif method == "initialized":
            send({"method": "remoteControl/status/changed", "params": {"status": "disabled"}, "emittedAtMs": 5})
        elif method == "thread/list":
            if overloads > 0:
                overloads -= 1
                send({"id": ident, "error": {"code": -32001, "message": "Server overloaded; retry later."}})
            else:
                send({"id": ident, "result": {"data": [], "nextCursor": None}})
        elif method == "turn/start":
            send({"id": "clock", "method": "currentTime/read", "params": {"threadId": params["threadId"]}})
            send({"id": "attest", "method": "attestation/generate", "params": {}})
            send({"id": 0, "method": "item/commandExecution/requestApproval",
                  "params": {"threadId": params["threadId"], "turnId": "turn-1", "itemId": "call-1",
                             "startedAtMs": 1, "command": "echo hi", "cwd": "/w"}})
            send({"id": ident, "result": {"turn": {"id": "turn-1", "status": "inProgress", "items": []}}})
        elif method == "turn/interrupt":
            send({"method": "serverRequest/resolved", "params": {"threadId": params["threadId"], "requestId": 0}})
            send({"id": ident, "result": {}})
        elif method == "thread/read" and params.get("threadId") == "die":
            sys.stderr.write("boom: the fake app-server fails on purpose\n")
            sys.stderr.flush()
            sys.exit(3)
        elif method == "thread/name/set":
            send({"id": ident, "error": {"code": -32600, "message": "thread not found"}})
        else:
            send({"id": ident, "error": {"code": -32601, "message": f"unknown method {method}"}})


if __name__ == "__main__":
    main()
