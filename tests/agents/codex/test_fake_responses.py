"""The scripted Responses API server itself, run as a process the way other suites may use it."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest


def sse_events(body: str) -> list[dict[str, object]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append(data)
    return events


def post(port: int, body: dict[str, object]) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/responses", json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type") == "text/event-stream"
    text = response.read().decode()
    conn.close()
    return text


@pytest.fixture
def fake_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    script = tmp_path / "turns.json"
    script.write_text(json.dumps([{"exec": {"cmd": "ls"}}, {"text": ["a", "b"]}]))
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_responses", "--script", str(script), "--log", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT ")
    yield int(line.split()[1]), log
    proc.terminate()
    proc.wait(10)


def test_scripted_turns_in_order(fake_process) -> None:  # type: ignore[no-untyped-def]
    port, log = fake_process
    first = sse_events(post(port, {"model": "m", "input": [{"role": "user", "content": "go"}], "stream": True}))
    assert [e["type"] for e in first] == [
        "response.created", "response.output_item.added", "response.output_item.done", "response.completed",
    ]
    call = first[2]["item"]
    assert call["type"] == "function_call" and call["name"] == "exec_command"  # type: ignore[index]
    assert json.loads(call["arguments"]) == {  # type: ignore[index]
        "cmd": "ls", "sandbox_permissions": "require_escalated", "justification": "the test model wants to run this",
    }
    second = sse_events(post(port, {"model": "m", "input": [], "stream": True}))
    assert [e["delta"] for e in second if e["type"] == "response.output_text.delta"] == ["a", "b"]
    done = next(e for e in second if e["type"] == "response.output_item.done")
    assert done["item"]["content"][0]["text"] == "ab"  # type: ignore[index]
    third = sse_events(post(port, {"model": "m", "input": [], "stream": True}))
    assert any(e.get("delta") == "(end of script)" for e in third)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) == 3 and logged[0]["input"][0]["content"] == "go"
