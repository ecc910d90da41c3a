"""A TCP proxy on loopback that can stall: while paused it forwards nothing, in either direction,
and closes nothing — as a mobile network that stops carrying packets without a reset. (Playwright's
offline mode does not cut an open WebSocket; this does, silently.) It can also be cut: every
connection closed and new ones refused, as a laptop that lost its network, until mended.

Runs its own event loop in a thread, so synchronous browser tests can drive it."""

from __future__ import annotations

import asyncio
import threading


class StallProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing: asyncio.Event | None = None
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="stall-proxy", daemon=True)

    def __enter__(self) -> StallProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the stall proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Close the listener and every connection it carries, and let their tasks finish."""
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def pause(self) -> None:
        """Stop forwarding, closing nothing."""
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.set)

    def cut(self) -> None:
        """Close every connection, and refuse new ones until :meth:`mend`."""
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(10)

    def mend(self) -> None:
        self._cut = False

    async def _cut_all(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            writer.close()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer),
                                 return_exceptions=True)
        finally:
            self._writers.difference_update((writer, upstream_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # read before the pause: held, not sent
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
