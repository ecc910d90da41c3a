"""The host's local unix-socket framing (protocol/local.py): a 4-byte big-endian length, then that
many bytes. Whatever bytes arrive, ``StreamTransport.recv`` returns exactly the frames they hold
and then raises TransportClosed (its one documented error: MessageTransport.recv); a length over
MAX_MESSAGE_BYTES is refused from the prefix alone, before any of the body is waited for."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.inprocess import running_host
from tether.client.connection import connect_local
from tether.host.daemon import HostDaemon
from tether.protocol.local import StreamTransport
from tether.protocol.messages import MAX_MESSAGE_BYTES
from tether.protocol.transport import TransportClosed

_LEN = struct.Struct(">I")


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


def _reference(data: bytes) -> tuple[list[bytes], bool]:
    """The frames ``data`` holds, and whether it stops at an oversize length prefix."""
    frames: list[bytes] = []
    i = 0
    while len(data) - i >= _LEN.size:
        (length,) = _LEN.unpack_from(data, i)
        i += _LEN.size
        if length > MAX_MESSAGE_BYTES:
            return frames, True
        if len(data) - i < length:
            break
        frames.append(data[i : i + length])
        i += length
    return frames, False


async def _decode_all(data: bytes) -> tuple[list[bytes], TransportClosed]:
    """Feed ``data`` (then end of stream) to the decoder; every frame, then the error it ends with."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    transport = StreamTransport(reader, cast(asyncio.StreamWriter, None))  # recv never writes
    frames: list[bytes] = []
    for _ in range(len(data) + 1):
        try:
            frames.append(await transport.recv())
        except TransportClosed as exc:  # anything else fails the test
            return frames, exc
    raise AssertionError("the decoder returned more frames than bytes it was given")


def _check_decoding(data: bytes) -> None:
    frames, error = asyncio.run(_decode_all(data))
    expected, oversize = _reference(data)
    assert frames == expected
    if oversize:
        assert error.message.startswith("refusing a local message of "), error.message
    else:
        assert error.message == "the local connection is closed", error.message
    assert error.code == "closed"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_only_raise_transport_closed(data: bytes) -> None:
    _check_decoding(data)


# Frames with believable lengths, then garbage: the decoder must find each frame boundary.
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=5),
    st.binary(max_size=40),
    st.one_of(
        st.none(),
        st.integers(0, 2**32 - 1),
        st.integers(MAX_MESSAGE_BYTES - 2, MAX_MESSAGE_BYTES + 2),
    ),
)
def test_fuzz_framed_garbage_only_raises_transport_closed(bodies: list[bytes], tail: bytes, length: int | None) -> None:
    data = b"".join(_frame(b) for b in bodies)
    if length is not None:
        data += _LEN.pack(length)
    _check_decoding(data + tail)


def test_oversize_length_prefix_is_refused_without_waiting_or_allocating() -> None:
    async def refuse(length: int) -> TransportClosed:
        reader = asyncio.StreamReader()
        # Only the prefix and a few bytes, and the stream stays open: a decoder that believed the
        # prefix would wait here for gigabytes (and then buffer them).
        reader.feed_data(_LEN.pack(length) + b"x" * 10)
        transport = StreamTransport(reader, cast(asyncio.StreamWriter, None))
        tracemalloc.start()
        try:
            with pytest.raises(TransportClosed) as info:
                await asyncio.wait_for(transport.recv(), 2)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, peak
        return info.value

    for length in (MAX_MESSAGE_BYTES + 1, 2**31, 2**32 - 1):
        error = asyncio.run(refuse(length))
        assert error.message == f"refusing a local message of {length} bytes"


async def _pair() -> tuple[StreamTransport, StreamTransport]:
    left, right = socket.socketpair()
    a = StreamTransport(*await asyncio.open_unix_connection(sock=left))
    b = StreamTransport(*await asyncio.open_unix_connection(sock=right))
    return a, b


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=5000), max_size=8))
def test_fuzz_frames_round_trip(messages: list[bytes]) -> None:
    async def main() -> list[bytes]:
        a, b = await _pair()
        try:
            sender = asyncio.gather(*(a.send(m) for m in messages))
            got = [await b.recv() for _ in messages]
            await sender
            await a.close()
            with pytest.raises(TransportClosed):
                await b.recv()  # and the end of the stream is a clean TransportClosed
            return got
        finally:
            await a.close()
            await b.close()

    # Sends are serialised by the transport's lock: whole frames, in the order they were sent.
    assert asyncio.run(main()) == messages


async def test_limit_is_exact() -> None:
    a, b = await _pair()
    try:
        largest = os.urandom(MAX_MESSAGE_BYTES)
        for body in (b"", largest):
            sent = asyncio.create_task(a.send(body))
            assert await b.recv() == body
            await sent
        sent = asyncio.create_task(a.send(largest + b"!"))
        with pytest.raises(TransportClosed, match=f"refusing a local message of {MAX_MESSAGE_BYTES + 1} bytes"):
            await b.recv()
        sent.cancel()
    finally:
        # The refusing side first: the sender's unsent bytes would hold its close otherwise.
        await b.close()
        await a.close()


@pytest.fixture
async def host() -> AsyncIterator[HostDaemon]:
    async with running_host() as daemon:
        yield daemon


async def test_garbage_on_the_hosts_socket_closes_only_that_connection(host: HostDaemon) -> None:
    bystander = await connect_local(host.home)
    try:
        reader, writer = await asyncio.open_unix_connection(str(host.paths.socket))
        # Framed garbage is answered with protocol errors (id 0), and the connection stays up.
        for body in (b"", b"\xff" * 100, b"[]", b'{"t":"req"}', os.urandom(3000)):
            writer.write(_frame(body))
            (length,) = _LEN.unpack(await asyncio.wait_for(reader.readexactly(4), 5))
            answer: dict[str, Any] = json.loads(await reader.readexactly(length))
            assert answer["t"] == "res" and answer["id"] == 0 and answer["error"]["code"] == "protocol", answer
        writer.write(_frame(b'{"t":"req","id":5,"method":"host.info"}'))
        (length,) = _LEN.unpack(await asyncio.wait_for(reader.readexactly(4), 5))
        assert b'"role":"host"' in await reader.readexactly(length)
        assert (await bystander.call("host.info", timeout=5))["role"] == "host"
        # An oversize length prefix: the host hangs up on that connection at once.
        writer.write(_LEN.pack(2**32 - 1) + b"{")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # The other connection never noticed; a new one works.
        assert (await bystander.call("host.info", timeout=5))["role"] == "host"
        fresh = await connect_local(host.home)
        try:
            assert (await fresh.call("host.info", timeout=5))["role"] == "host"
        finally:
            await fresh.close()
    finally:
        await bystander.close()
