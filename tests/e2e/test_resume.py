"""Resume without loss: a session streams 10,000 numbered lines while the client's connection
is cut and the relay process is killed and restarted. The client ends with every line exactly
once, in order, and the host never stopped."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from tests.procs import start_relay
from tests.support.deployment import Deployment
from tests.support.numbered import NumberedStream, producer
from tether import Client

pytestmark = pytest.mark.slow

LINES = 10_000


async def test_resume_after_client_cut_and_relay_restart(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    host_pid = deployment.host.popen.pid
    script = deployment.workspace / "producer.py"
    script.write_text(producer(LINES))

    async with await Client.open(client_home) as client:
        session_id = await client.start_session(["python3", str(script)])
        async with NumberedStream(client, session_id) as stream, asyncio.timeout(90):
            # (a) cut the client's connection under it, mid-stream.
            await stream.seen(1500)
            stream.cut_client()
            # (b) kill the relay process outright and start a new one on the same port.
            await stream.seen(3500)
            deployment.relay.stop(signal.SIGKILL)
            await asyncio.sleep(1.0)
            deployment.relay, _ = await asyncio.to_thread(start_relay, deployment.relay_port)
            await stream.exited.wait()
    stream.assert_whole(LINES)
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
