"""SecureChannel: handshake, transport, fragmentation and every way a frame can go wrong."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.crypto.channel import (
    MAX_CHUNK,
    ChannelError,
    HandshakeComplete,
    Message,
    SecureChannel,
)
from tether.crypto.keys import raw_private, raw_public
from tether.crypto.noise import MAX_MESSAGE

PSK = os.urandom(32)


def _handshake(
    *,
    psk: bytes | None = None,
    max_message: int = 16 * 1024 * 1024,
    host: X25519PrivateKey | None = None,
) -> tuple[SecureChannel, SecureChannel]:
    host = host or X25519PrivateKey.generate()
    device = X25519PrivateKey.generate()
    client = SecureChannel.initiator(
        static=device, remote_static=raw_public(host), psk=psk, max_message=max_message
    )
    server = SecureChannel.responder(static=host, psk=psk, max_message=max_message)
    client.start()
    [msg1] = client.data_to_send()
    [s_event] = server.receive(msg1)
    [msg2] = server.data_to_send()
    [c_event] = client.receive(msg2)
    assert isinstance(s_event, HandshakeComplete) and isinstance(c_event, HandshakeComplete)
    assert s_event.remote_static == raw_public(device) == server.remote_static
    assert c_event.remote_static == raw_public(host) == client.remote_static
    assert s_event.handshake_hash == c_event.handshake_hash
    assert client.state == server.state == "open"
    return client, server


def _deliver(sender: SecureChannel, receiver: SecureChannel) -> list[bytes]:
    out: list[bytes] = []
    for frame in sender.data_to_send():
        for event in receiver.receive(frame):
            assert isinstance(event, Message)
            out.append(event.data)
    return out


@pytest.mark.parametrize("psk", [None, PSK], ids=["IK", "IKpsk2"])
def test_round_trip_both_directions(psk: bytes | None) -> None:
    client, server = _handshake(psk=psk)
    client.send(b"request")
    client.send(b"")
    assert _deliver(client, server) == [b"request", b""]
    server.send(b"response")
    assert _deliver(server, client) == [b"response"]
    assert client.data_to_send() == []


def test_psk_mismatch_fails_at_the_initiator() -> None:
    host = X25519PrivateKey.generate()
    client = SecureChannel.initiator(
        static=X25519PrivateKey.generate(), remote_static=raw_public(host), psk=os.urandom(32)
    )
    server = SecureChannel.responder(static=host, psk=os.urandom(32))
    client.start()
    # psk2: the responder cannot tell yet (which is why hosts act only on a first Message)...
    [event] = server.receive(client.data_to_send()[0])
    assert isinstance(event, HandshakeComplete)
    # ...the initiator can.
    with pytest.raises(ChannelError, match="pairing secret did not match"):
        client.receive(server.data_to_send()[0])
    assert client.state == "closed"


def test_psk_on_one_side_only_fails() -> None:
    host = X25519PrivateKey.generate()
    client = SecureChannel.initiator(static=X25519PrivateKey.generate(), remote_static=raw_public(host))
    server = SecureChannel.responder(static=host, psk=PSK)
    client.start()
    with pytest.raises(ChannelError):
        server.receive(client.data_to_send()[0])
    assert server.state == "closed"


def test_wrong_host_static_key() -> None:
    host, impostor = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    client = SecureChannel.initiator(static=X25519PrivateKey.generate(), remote_static=raw_public(host))
    client.start()
    msg1 = client.data_to_send()[0]
    # The impostor cannot even read message 1: it was encrypted to the real host's key.
    server = SecureChannel.responder(static=impostor)
    with pytest.raises(ChannelError, match="did not match this host's key"):
        server.receive(msg1)
    assert server.state == "closed"
    # Had the impostor answered anyway, the client says who failed to prove what.
    fake = SecureChannel.initiator(static=X25519PrivateKey.generate(), remote_static=raw_public(impostor))
    fake.start()
    impostor_server = SecureChannel.responder(static=impostor)
    impostor_server.receive(fake.data_to_send()[0])
    with pytest.raises(ChannelError, match="did not prove it holds the key you paired with") as info:
        client.receive(impostor_server.data_to_send()[0])
    assert info.value.code == "channel"
    assert client.state == "closed"


def test_one_mebibyte_message_fragments_and_reassembles() -> None:
    client, server = _handshake()
    data = os.urandom(1024 * 1024)
    client.send(data)
    frames = client.data_to_send()
    assert len(frames) == -(-len(data) // MAX_CHUNK) == 17
    assert all(len(f) <= MAX_MESSAGE for f in frames)
    events = [e for f in frames for e in server.receive(f)]
    assert events == [Message(data)]


@pytest.mark.parametrize(
    ("size", "frames"),
    [
        (MAX_MESSAGE - 17, 1),  # == MAX_CHUNK: one full frame
        (MAX_MESSAGE - 16, 2),  # one byte more than a chunk
        (MAX_MESSAGE + 1, 2),
        (2 * MAX_CHUNK, 2),
        (2 * MAX_CHUNK + 1, 3),
        (0, 1),
        (1, 1),
    ],
)
def test_fragment_boundaries(size: int, frames: int) -> None:
    assert MAX_CHUNK == MAX_MESSAGE - 17
    client, server = _handshake()
    data = os.urandom(size)
    client.send(data)
    out = client.data_to_send()
    assert len(out) == frames
    assert all(len(f) <= MAX_MESSAGE for f in out)
    if size == MAX_CHUNK:
        assert len(out[0]) == MAX_MESSAGE  # the largest frame is exactly the Noise limit
    assert [e for f in out for e in server.receive(f)] == [Message(data)]


def _flip(frame: bytes) -> list[bytes]:
    bad = bytearray(frame)
    bad[len(bad) // 2] ^= 0x80
    return [bytes(bad)]


ATTACKS: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "flip": lambda fs: _flip(fs[0]),
    "replay": lambda fs: [fs[0], fs[0]],
    "drop": lambda fs: [fs[1]],
    "reorder": lambda fs: [fs[1], fs[0]],
    "truncate": lambda fs: [fs[0][:-1]],
    "empty": lambda fs: [b""],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_tampered_frames_close_the_channel(attack: str) -> None:
    client, server = _handshake()
    client.send(b"first")
    client.send(b"second")
    frames = ATTACKS[attack](client.data_to_send())
    with pytest.raises(ChannelError, match="tampered with, replayed, dropped or reordered"):
        for frame in frames:
            server.receive(frame)
    assert server.state == "closed"
    # Every later call refuses, whatever it is.
    for call in (
        lambda: server.receive(frames[0]),
        lambda: server.send(b"x"),
        server.data_to_send,
        server.start,
    ):
        with pytest.raises(ChannelError, match="closed"):
            call()


def test_oversize_message() -> None:
    client, _ = _handshake(max_message=100_000)
    with pytest.raises(ChannelError, match="at most 100000"):
        client.send(b"x" * 100_001)
    assert client.state == "open"  # a refused send is the caller's mistake, not the peer's

    # A peer that allows more than we do: we close as soon as the total passes our limit.
    client2, server2 = _pair_with_limits(sender_limit=1_000_000, receiver_limit=100_000)
    client2.send(b"y" * 200_000)
    frames = client2.data_to_send()
    with pytest.raises(ChannelError, match="larger than 100000"):
        for frame in frames:
            server2.receive(frame)
    assert server2.state == "closed"


def _pair_with_limits(*, sender_limit: int, receiver_limit: int) -> tuple[SecureChannel, SecureChannel]:
    host = X25519PrivateKey.generate()
    client = SecureChannel.initiator(
        static=X25519PrivateKey.generate(), remote_static=raw_public(host), max_message=sender_limit
    )
    server = SecureChannel.responder(static=host, max_message=receiver_limit)
    client.start()
    server.receive(client.data_to_send()[0])
    client.receive(server.data_to_send()[0])
    return client, server


def test_illegal_calls() -> None:
    host = X25519PrivateKey.generate()
    client = SecureChannel.initiator(static=X25519PrivateKey.generate(), remote_static=raw_public(host))
    server = SecureChannel.responder(static=host)
    with pytest.raises(ChannelError, match="cannot send while the channel is handshaking"):
        client.send(b"early")
    with pytest.raises(ChannelError, match="start"):
        client.receive(b"x" * 48)
    with pytest.raises(ChannelError, match="only the initiator"):
        server.start()
    client.start()
    with pytest.raises(ChannelError, match="already started"):
        client.start()
    assert client.state == server.state == "handshaking"
    server.receive(client.data_to_send()[0])
    client.receive(server.data_to_send()[0])
    with pytest.raises(ChannelError, match="cannot start the handshake while the channel is open"):
        client.start()
    client.close()
    client.close()  # idempotent
    assert client.state == "closed"
    with pytest.raises(ChannelError, match="closed"):
        client.send(b"late")
    with pytest.raises(ChannelError):
        SecureChannel.initiator(static=host, remote_static=b"short")
    with pytest.raises(ChannelError):
        SecureChannel.responder(static=host, psk=b"short")
    with pytest.raises(ChannelError):
        SecureChannel.responder(static=host, max_message=0)


def test_a_second_handshake_message_closes_an_open_channel() -> None:
    host = X25519PrivateKey.generate()
    client = SecureChannel.initiator(static=X25519PrivateKey.generate(), remote_static=raw_public(host))
    server = SecureChannel.responder(static=host)
    client.start()
    msg1 = client.data_to_send()[0]
    server.receive(msg1)
    with pytest.raises(ChannelError):
        server.receive(msg1)  # a replayed message 1 is just a bad transport frame now
    assert server.state == "closed"


def test_no_key_material_in_reprs_or_errors() -> None:
    host = X25519PrivateKey.generate()
    client, server = _handshake(psk=PSK, host=host)
    secrets = [PSK.hex(), raw_private(host).hex(), raw_public(host).hex()]
    texts = [repr(client), repr(server)]
    client.send(b"x")
    frame = client.data_to_send()[0]
    with pytest.raises(ChannelError) as info:
        server.receive(frame[:-1])
    texts += [str(info.value), repr(info.value)]
    event = HandshakeComplete(remote_static=raw_public(host), handshake_hash=b"h" * 32)
    texts.append(repr(event))
    assert raw_public(host).hex() not in repr(event)
    for text in texts:
        for secret in secrets:
            assert secret not in text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.booleans())
def test_fuzz_responder_only_raises_channel_error(frames: list[bytes], psk: bool) -> None:
    server = SecureChannel.responder(static=X25519PrivateKey.generate(), psk=PSK if psk else None)
    for frame in frames:
        try:
            server.receive(frame)
        except ChannelError:
            assert server.state == "closed"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_fuzz_open_channel_only_raises_channel_error(frames: list[bytes]) -> None:
    client, server = _handshake()
    for channel in (client, server):
        for frame in frames:
            try:
                channel.receive(frame)
            except ChannelError:
                assert channel.state == "closed"
        assert channel.state == "closed"  # random bytes never authenticate


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * MAX_CHUNK + 5), min_size=1, max_size=4))
def test_fuzz_random_sizes_round_trip(sizes: list[int]) -> None:
    client, server = _handshake()
    messages = [os.urandom(n) for n in sizes]
    for m in messages:
        client.send(m)
        server.send(m[::-1])
    assert _deliver(client, server) == messages
    assert _deliver(server, client) == [m[::-1] for m in messages]
