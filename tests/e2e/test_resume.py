"""Resume without loss: a session streams 10,000 numbered lines while the client's connection
is cut and the relay process is killed and restarted. The client ends with every line exactly
once, in order, and the host never stopped."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.procs import start_relay
from tether import Client

pytestmark = pytest.mark.slow

LINES = 10_000
# Paced so the stream lasts a few seconds: long enough to cut connections in the middle of it.
PRODUCER = (
    "import sys, time\n"
    f"for i in range(1, {LINES + 1}):\n"
    "    sys.stdout.write(f'line-{i}\\n')\n"
    "    if i % 50 == 0:\n"
    "        sys.stdout.flush(); time.sleep(0.02)\n"
    "sys.stdout.flush()\n"
)


def _line_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"line-(\d+)\r?\n", text)]


async def test_resume_after_client_cut_and_relay_restart(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    host_pid = deployment.host.popen.pid
    script = deployment.workspace / "producer.py"
    script.write_text(PRODUCER)

    async with await Client.open(client_home) as client:
        session_id = await client.start_session(["python3", str(script)])
        text: list[str] = []
        seqs: list[int] = []
        exited = asyncio.Event()
        progress = asyncio.Condition()

        async def consume() -> None:
            async for event in client.events(0, session=session_id):
                seqs.append(event["seq"])
                if event["type"] == "session.output":
                    text.append(event["data"]["data"])
                elif event["type"] == "session.exited":
                    exited.set()
                    return
                async with progress:
                    progress.notify_all()

        async def lines_seen_at_least(n: int) -> None:
            async with progress:
                await progress.wait_for(lambda: len(_line_numbers("".join(text))) >= n)

        consumer = asyncio.create_task(consume())
        try:
            async with asyncio.timeout(90):
                # (a) cut the client's connection under it, mid-stream.
                await lines_seen_at_least(1500)
                assert client._conn is not None and client._conn.link is not None
                client._conn.link._ws.transport.abort()
                # (b) kill the relay process outright and start a new one on the same port.
                await lines_seen_at_least(3500)
                deployment.relay.stop(signal.SIGKILL)
                await asyncio.sleep(1.0)
                deployment.relay, _ = await asyncio.to_thread(start_relay, deployment.relay_port)
                await exited.wait()
        finally:
            consumer.cancel()

    numbers = _line_numbers("".join(text))
    assert numbers == list(range(1, LINES + 1)), "every line exactly once, in order"
    assert seqs == sorted(set(seqs)), "no event twice, none out of order"
    assert deployment.host.alive and deployment.host.popen.pid == host_pid
    assert deployment.host.log.count("connected to relay") >= 2, "the host reconnected to the new relay"


async def test_a_burst_reaches_a_healthy_reader_whole(deployment: Deployment, client_home: Path) -> None:
    """Megabytes of output at once: flow control keeps the relay's per-channel queue small, so
    the channel is never closed as too slow and nothing is lost."""
    deployment.pair(client_home)
    script = deployment.workspace / "burst.py"
    script.write_text("import sys\nfor i in range(100_000):\n    sys.stdout.write(f'{i:06d}' + 'x' * 94 + '\\n')\n")
    async with await Client.open(client_home) as client:
        session_id = await client.start_session(["python3", str(script)])
        # Catch up only after it all happened: the host then sends the whole log as fast as it can.
        async with asyncio.timeout(60):
            while (await client.session(session_id))["status"] == "running":
                await asyncio.sleep(0.2)
        chunks: list[str] = []
        async with asyncio.timeout(90):
            async for event in client.events(0, session=session_id):
                if event["type"] == "session.output":
                    chunks.append(event["data"]["data"])
                elif event["type"] == "session.exited":
                    break
    numbers = [int(n) for n in re.findall(r"(\d{6})x{94}\r?\n", "".join(chunks))]
    assert numbers == list(range(100_000))
    assert "too slow" not in deployment.relay.log.lower()
