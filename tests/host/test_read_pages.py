"""``events.read`` pages stay under the message limit whatever the events hold, and paging on
from the cursor gives every event once (a session that printed megabytes, read at limit 2000)."""

from __future__ import annotations

import asyncio

import msgspec

from tests.support.inprocess import running_host
from tether.client.connection import connect_local
from tether.host.api import READ_PAGE_BYTES
from tether.host.daemon import HostDaemon
from tether.protocol.messages import MAX_MESSAGE_BYTES

LINES = 60_000  # 6 MB of output


async def test_pages_of_a_big_session_stay_small_and_lose_nothing() -> None:
    async with running_host() as daemon:
        await _read_all_pages(daemon)


async def _read_all_pages(daemon: HostDaemon) -> None:
    conn = await connect_local(daemon.home)
    try:
        script = f"import sys\nfor i in range({LINES}): sys.stdout.write(f'{{i:06d}}' + 'x' * 93 + '\\n')\n"
        sid = (await conn.call("sessions.start", {"agent": "pty", "command": ["python3", "-c", script]}))["id"]
        async with asyncio.timeout(60):
            while (await conn.call("sessions.get", {"id": sid}))["status"] == "running":
                await asyncio.sleep(0.1)
        seqs: list[int] = []
        text: list[str] = []
        since, pages, largest = 0, 0, 0
        while True:
            page = await conn.call("events.read", {"since": since, "limit": 2000, "session": sid})
            largest = max(largest, len(msgspec.json.encode(page)))
            pages += 1
            for e in page["events"]:
                seqs.append(e["seq"])
                if e["type"] == "session.output":
                    text.append(e["data"]["data"])
            assert page["cursor"] > since or page["cursor"] >= page["head"]
            since = page["cursor"]
            if since >= page["head"]:
                break
        numbers = [int(line[:6]) for line in "".join(text).splitlines()]
        assert numbers == list(range(LINES))
        assert seqs == sorted(set(seqs))
        assert pages > 1 and largest <= READ_PAGE_BYTES + 200_000 < MAX_MESSAGE_BYTES
    finally:
        await conn.close()
