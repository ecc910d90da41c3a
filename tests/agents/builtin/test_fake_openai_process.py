import asyncio
import json
import sys
from pathlib import Path

from tether.agents.builtin.llm import Accumulator, ChatClient, LLMError


async def test_fake_server_as_a_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    record = tmp_path / "requests.jsonl"
    script.write_text(json.dumps([
        {"text": "from a process"},
        {"tool_calls": [{"id": "c1", "name": "read_file", "arguments": "{oops"}]},
    ]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.fake_openai", "--script", str(script), "--record", str(record),
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("PORT ")
        client = ChatClient(f"http://127.0.0.1:{int(line.split()[1])}/v1", "sk-proc-key", "m", 5)
        for expected in ["from a process", None]:
            acc = Accumulator()
            async for d in client.stream([{"role": "user", "content": "hi"}]):
                acc.feed(d)
            if expected:
                assert acc.text == expected
            else:
                assert acc.tool_calls[0].arguments == "{oops"
        try:
            async for _ in client.stream([{"role": "user", "content": "more"}]):
                pass
        except LLMError as exc:
            assert "script exhausted" in exc.message
        else:
            raise AssertionError("an exhausted script must answer an error")
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    recorded = [json.loads(x) for x in record.read_text().splitlines()]
    assert len(recorded) == 3
    assert recorded[0]["headers"]["authorization"] == "Bearer sk-proc-key"
    assert json.loads(recorded[1]["body"])["messages"] == [{"role": "user", "content": "hi"}]
