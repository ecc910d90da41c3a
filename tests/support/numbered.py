"""A session that prints numbered lines, and a reader of its events that the tests cut
connections under: in the end every line must have arrived exactly once, in order."""

from __future__ import annotations

import asyncio
import re
from types import TracebackType

from tether import Client


def producer(lines: int, *, every: int = 50, pause: float = 0.02) -> str:
    """Python source printing ``line-1`` .. ``line-N``, pausing ``pause`` s every ``every`` lines
    (so the stream lasts long enough to cut something in the middle of it)."""
    return (
        "import sys, time\n"
        f"for i in range(1, {lines + 1}):\n"
        "    sys.stdout.write(f'line-{i}\\n')\n"
        f"    if i % {every} == 0:\n"
        f"        sys.stdout.flush(); time.sleep({pause})\n"
        "sys.stdout.flush()\n"
    )


def line_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"line-(\d+)\r?\n", text)]


class NumberedStream:
    """Reads a session's events from the start until it exits (``async with``)."""

    def __init__(self, client: Client, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self.text: list[str] = []
        self.seqs: list[int] = []
        self.exited = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NumberedStream:
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _consume(self) -> None:
        async for event in self.client.events(0, session=self.session_id):
            self.seqs.append(event["seq"])
            if event["type"] == "session.output":
                self.text.append(event["data"]["data"])
            elif event["type"] == "session.exited":
                self.exited.set()
                return
            async with self._progress:
                self._progress.notify_all()

    def numbers(self) -> list[int]:
        return line_numbers("".join(self.text))

    async def seen(self, lines: int) -> None:
        """Wait until at least ``lines`` lines have arrived."""
        async with self._progress:
            await self._progress.wait_for(lambda: len(self.numbers()) >= lines)

    def cut_client(self) -> object:
        """Abort the client's connection under it, mid-stream; the connection cut."""
        conn = self.client._conn
        assert conn is not None and conn.link is not None
        conn.link._ws.transport.abort()
        return conn

    def assert_whole(self, lines: int) -> None:
        assert self.numbers() == list(range(1, lines + 1)), "every line exactly once, in order"
        assert self.seqs == sorted(set(self.seqs)), "no event twice, none out of order"
