"""An answer too large for the other side to accept becomes a clear error, not a dropped
connection (over the local framing, on a real socket pair)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tether.protocol.local import StreamTransport
from tether.protocol.messages import MAX_MESSAGE_BYTES, Request
from tether.protocol.rpc import RemoteError, RpcPeer


async def _answer(request: Request) -> Any:
    if request.method == "big":
        return "x" * (MAX_MESSAGE_BYTES + 1)
    return {"ok": True}


async def test_an_answer_over_the_limit_is_refused_with_a_clear_error() -> None:
    a, b = socket.socketpair()
    peers = []
    for sock, handler in ((a, _answer), (b, None)):
        reader, writer = await asyncio.open_connection(sock=sock)
        peers.append(RpcPeer(StreamTransport(reader, writer), on_request=handler))
    client = peers[1]
    tasks = [asyncio.create_task(p.run()) for p in peers]
    try:
        with pytest.raises(RemoteError) as info:
            await client.call("big", {}, timeout=10)
        assert info.value.code == "too_large" and "more than" in info.value.message
        assert info.value.hint and "ask for less" in info.value.hint
        # The same connection goes on.
        assert await client.call("small", {}, timeout=10) == {"ok": True}
    finally:
        for p in peers:
            await p.close()
        for t in tasks:
            t.cancel()
