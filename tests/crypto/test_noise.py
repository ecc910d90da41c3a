"""Behaviour of tether's Noise implementation beyond the official vectors: failures."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.crypto.keys import raw_public
from tether.crypto.noise import MAX_MESSAGE, MAX_NONCE, CipherState, HandshakeState, NoiseError

PSK = bytes(range(32))


def _pair(
    pattern: str = "IK",
    *,
    psk_i: bytes | None = None,
    psk_r: bytes | None = None,
    rs: bytes | None = None,
) -> tuple[HandshakeState, HandshakeState]:
    host = X25519PrivateKey.generate()
    init = HandshakeState.initiator(
        pattern, s=X25519PrivateKey.generate(), rs=rs or raw_public(host), psk=psk_i, prologue=b"p"
    )
    resp = HandshakeState.responder(pattern, s=host, psk=psk_r, prologue=b"p")
    return init, resp


@pytest.mark.parametrize(("pattern", "psk"), [("IK", None), ("IKpsk2", PSK)])
def test_round_trip(pattern: str, psk: bytes | None) -> None:
    init, resp = _pair(pattern, psk_i=psk, psk_r=psk)
    assert resp.read_message(init.write_message(b"hello")) == b"hello"
    assert init.read_message(resp.write_message(b"world")) == b"world"
    assert init.complete and resp.complete
    assert init.handshake_hash == resp.handshake_hash
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"a")) == b"a"
    assert i_recv.decrypt_with_ad(b"ad", r_send.encrypt_with_ad(b"ad", b"b")) == b"b"
    with pytest.raises(NoiseError):
        init.split()  # handed out once only


def test_wrong_responder_static_key_fails_at_responder() -> None:
    init, resp = _pair(rs=raw_public(X25519PrivateKey.generate()))
    msg1 = init.write_message()
    with pytest.raises(NoiseError):
        resp.read_message(msg1)
    assert resp.remote_static is None
    with pytest.raises(NoiseError):  # a failed state stays failed
        resp.read_message(msg1)


def _flip(message: bytes, pos: int) -> bytes:
    bad = bytearray(message)
    bad[pos] ^= 0x01
    return bytes(bad)


@pytest.mark.parametrize(("pattern", "psk"), [("IK", None), ("IKpsk2", PSK)])
def test_flipped_byte_in_first_message(pattern: str, psk: bytes | None) -> None:
    length = len(_pair(pattern, psk_i=psk, psk_r=psk)[0].write_message(b"x"))
    for pos in range(length):  # every position: e, encrypted s, payload and each tag
        init, resp = _pair(pattern, psk_i=psk, psk_r=psk)
        with pytest.raises(NoiseError):
            resp.read_message(_flip(init.write_message(b"x"), pos))


@pytest.mark.parametrize(("pattern", "psk"), [("IK", None), ("IKpsk2", PSK)])
def test_flipped_byte_in_second_message(pattern: str, psk: bytes | None) -> None:
    init, resp = _pair(pattern, psk_i=psk, psk_r=psk)
    resp.read_message(init.write_message())
    length = len(resp.write_message(b"y"))
    for pos in range(length):
        init, resp = _pair(pattern, psk_i=psk, psk_r=psk)
        resp.read_message(init.write_message())
        with pytest.raises(NoiseError):
            init.read_message(_flip(resp.write_message(b"y"), pos))
        assert not init.complete


def test_flipped_byte_in_transport_message() -> None:
    init, resp = _pair()
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    send, _ = init.split()
    _, recv = resp.split()
    ciphertext = send.encrypt_with_ad(b"", b"payload")
    for pos in range(len(ciphertext)):
        fresh = CipherState(bytes(32))
        good = CipherState(bytes(32)).encrypt_with_ad(b"", b"payload")
        with pytest.raises(NoiseError):
            fresh.decrypt_with_ad(b"", _flip(good, pos))
    assert recv.decrypt_with_ad(b"", ciphertext) == b"payload"
    with pytest.raises(NoiseError):  # replay: the counter moved on
        recv.decrypt_with_ad(b"", ciphertext)
    with pytest.raises(NoiseError):  # and the state is now unusable, even for a good message
        recv.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"next"))


def test_psk_mismatch() -> None:
    init, resp = _pair("IKpsk2", psk_i=PSK, psk_r=bytes(32))
    # psk2 mixes the psk only at the end of message 2, so message 1 still reads...
    resp.read_message(init.write_message())
    # ...and the initiator is the one who notices.
    with pytest.raises(NoiseError):
        init.read_message(resp.write_message())


def test_psk_required_and_sized() -> None:
    host = X25519PrivateKey.generate()
    with pytest.raises(NoiseError):
        HandshakeState.responder("IKpsk2", s=host)
    with pytest.raises(NoiseError):
        HandshakeState.responder("IKpsk2", s=host, psk=b"short")
    with pytest.raises(NoiseError):
        HandshakeState.responder("IK", s=host, psk=PSK)
    with pytest.raises(NoiseError):
        HandshakeState.responder("XX", s=host)
    with pytest.raises(NoiseError):
        HandshakeState.initiator("IK", s=host, rs=b"short")


def test_prologue_mismatch() -> None:
    host = X25519PrivateKey.generate()
    init = HandshakeState.initiator("IK", s=X25519PrivateKey.generate(), rs=raw_public(host), prologue=b"a")
    resp = HandshakeState.responder("IK", s=host, prologue=b"b")
    with pytest.raises(NoiseError):
        resp.read_message(init.write_message())


def test_turns_are_enforced() -> None:
    init, resp = _pair()
    with pytest.raises(NoiseError):
        resp.write_message()
    with pytest.raises(NoiseError):
        init.read_message(b"\x00" * 100)
    with pytest.raises(NoiseError):
        init.handshake_hash  # noqa: B018 - not final yet
    with pytest.raises(NoiseError):
        init.split()
    msg1 = init.write_message()
    with pytest.raises(NoiseError):
        init.write_message()
    resp.read_message(msg1)
    init.read_message(resp.write_message())
    with pytest.raises(NoiseError):
        init.write_message()
    with pytest.raises(NoiseError):
        resp.read_message(msg1)


def test_low_order_ephemeral_is_refused() -> None:
    _, resp = _pair()
    # An all-zero public key is a low-order point: the DH result would be zero.
    with pytest.raises(NoiseError):
        resp.read_message(bytes(32) + os.urandom(64))


def test_message_size_limit() -> None:
    init, resp = _pair()
    overhead = len(_pair()[0].write_message())
    with pytest.raises(NoiseError):
        init.write_message(b"x" * (MAX_MESSAGE - overhead + 1))
    msg1 = init.write_message(b"x" * (MAX_MESSAGE - overhead))  # still usable after the refusal
    assert len(msg1) == MAX_MESSAGE
    assert len(resp.read_message(msg1)) == MAX_MESSAGE - overhead
    with pytest.raises(NoiseError):
        _pair()[1].read_message(b"\x00" * (MAX_MESSAGE + 1))
    cs = CipherState(bytes(32))
    with pytest.raises(NoiseError):
        cs.encrypt_with_ad(b"", b"x" * (MAX_MESSAGE - 15))
    assert len(cs.encrypt_with_ad(b"", b"x" * (MAX_MESSAGE - 16))) == MAX_MESSAGE
    with pytest.raises(NoiseError):
        CipherState(bytes(32)).decrypt_with_ad(b"", b"x" * (MAX_MESSAGE + 1))


def test_nonce_exhaustion() -> None:
    sender = CipherState(bytes(32), nonce=MAX_NONCE - 1)
    receiver = CipherState(bytes(32), nonce=MAX_NONCE - 1)
    # n = 2^64-2 is the last usable nonce...
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    assert sender.n == MAX_NONCE
    # ...2^64-1 is reserved.
    with pytest.raises(NoiseError):
        sender.encrypt_with_ad(b"", b"one more")
    with pytest.raises(NoiseError):
        receiver.decrypt_with_ad(b"", bytes(32))
    with pytest.raises(NoiseError):
        CipherState(bytes(32), nonce=MAX_NONCE + 1)


def test_cipher_without_key_passes_through_and_reprs_hide_keys() -> None:
    cs = CipherState()
    assert cs.encrypt_with_ad(b"ad", b"plain") == b"plain"
    key = bytes(range(32))
    assert key.hex() not in repr(CipherState(key))
    init, _ = _pair("IKpsk2", psk_i=PSK, psk_r=PSK)
    assert PSK.hex() not in repr(init) and "psk=" not in repr(init)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_fresh_responder(data: bytes) -> None:
    _, resp = _pair()
    try:
        resp.read_message(data)
    except NoiseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["IK", "IKpsk2"]))
def test_fuzz_initiator_after_message_one(data: bytes, pattern: str) -> None:
    psk = PSK if pattern == "IKpsk2" else None
    init, _ = _pair(pattern, psk_i=psk, psk_r=psk)
    init.write_message()
    try:
        init.read_message(data)
    except NoiseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_responder_after_message_one(data: bytes) -> None:
    init, resp = _pair()
    resp.read_message(init.write_message())
    try:
        resp.read_message(data)  # out of turn: must still be a NoiseError
    except NoiseError:
        pass
