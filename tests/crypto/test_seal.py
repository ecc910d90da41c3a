"""Sealed mailbox messages (``crypto/seal.py``): who can open them, and that nothing else does."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.crypto.keys import raw_private, raw_public
from tether.crypto.seal import MAX_SEALED, MAX_SEALED_PLAINTEXT, MIN_SEALED, SealError, open_sealed, seal

HOST_ID = b"HOSTAAAAAAAAAAAAAAAA"
TO_DEVICE = b"tether-mailbox/1\0S" + HOST_ID  # a host's snapshot for a device
TO_HOST = b"tether-mailbox/1\0D" + HOST_ID  # a device's prompt for its host

SENDER = X25519PrivateKey.generate()
RECEIVER = X25519PrivateKey.generate()
SEALED = seal(SENDER, raw_public(RECEIVER), TO_DEVICE, b"snapshot")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_round_trip_names_the_sender(plaintext: bytes) -> None:
    sealed = seal(SENDER, raw_public(RECEIVER), TO_DEVICE, plaintext)
    assert len(sealed) == MIN_SEALED + len(plaintext)
    # Shorter plaintexts turn up in random ciphertext by chance; 8 bytes once in ~2^53 tries at these sizes.
    assert len(plaintext) < 8 or plaintext not in sealed
    assert open_sealed([RECEIVER], TO_DEVICE, sealed) == (raw_public(SENDER), plaintext)


def test_the_largest_plaintext_fills_one_noise_message() -> None:
    plaintext = os.urandom(MAX_SEALED_PLAINTEXT)
    sealed = seal(SENDER, raw_public(RECEIVER), TO_HOST, plaintext)
    assert len(sealed) == MAX_SEALED == 65535
    assert open_sealed([RECEIVER], TO_HOST, sealed)[1] == plaintext
    with pytest.raises(SealError, match="at most"):
        seal(SENDER, raw_public(RECEIVER), TO_HOST, plaintext + b"x")


def test_two_seals_of_the_same_plaintext_differ() -> None:
    again = seal(SENDER, raw_public(RECEIVER), TO_DEVICE, b"snapshot")
    # A fresh ephemeral key each time: the relay cannot tell that two snapshots are equal.
    assert again[:32] != SEALED[:32]
    assert again != SEALED
    assert open_sealed([RECEIVER], TO_DEVICE, again) == open_sealed([RECEIVER], TO_DEVICE, SEALED)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_tampering_with_any_byte_fails(data: st.DataObject) -> None:
    pos = data.draw(st.integers(min_value=0, max_value=len(SEALED) - 1), label="pos")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    bad = bytearray(SEALED)
    bad[pos] ^= mask
    with pytest.raises(SealError):
        open_sealed([RECEIVER], TO_DEVICE, bytes(bad))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(SEALED) - 1))
def test_a_truncated_or_extended_message_fails(cut: int) -> None:
    for bad in (SEALED[:cut], SEALED + SEALED[: cut + 1]):
        with pytest.raises(SealError):
            open_sealed([RECEIVER], TO_DEVICE, bad)


def test_another_receiver_cannot_open_it() -> None:
    other = X25519PrivateKey.generate()
    with pytest.raises(SealError, match="did not open") as caught:
        open_sealed([other], TO_DEVICE, SEALED)
    # The message helps a person, and names no key.
    for key in (other, RECEIVER, SENDER):
        assert raw_public(key).hex() not in str(caught.value)
        assert raw_private(key).hex() not in str(caught.value)
    with pytest.raises(SealError):
        open_sealed([], TO_DEVICE, SEALED)


@pytest.mark.parametrize(
    "context",
    [TO_HOST, b"tether-mailbox/1\0S" + b"HOSTBBBBBBBBBBBBBBBB", b"tether-mailbox/2\0S" + HOST_ID, b""],
    ids=["other-direction", "other-host", "other-version", "empty"],
)
def test_another_context_cannot_open_it(context: bytes) -> None:
    with pytest.raises(SealError):
        open_sealed([RECEIVER], context, SEALED)


def test_a_retired_static_still_opens() -> None:
    retired, current = RECEIVER, X25519PrivateKey.generate()
    assert open_sealed([current, retired], TO_DEVICE, SEALED) == (raw_public(SENDER), b"snapshot")
    sealed_to_current = seal(SENDER, raw_public(current), TO_DEVICE, b"next")
    assert open_sealed([current, retired], TO_DEVICE, sealed_to_current)[1] == b"next"
    with pytest.raises(SealError):
        open_sealed([retired], TO_DEVICE, sealed_to_current)


@pytest.mark.parametrize(
    ("size", "match"),
    [
        (0, "smallest"),
        (1, "smallest"),
        (MIN_SEALED - 1, "smallest"),
        (MIN_SEALED, "did not open"),
        (MAX_SEALED, "did not open"),
        (MAX_SEALED + 1, "largest"),
    ],
)
def test_sizes_out_of_range_or_random_fail_cleanly(size: int, match: str) -> None:
    with pytest.raises(SealError, match=match):
        open_sealed([RECEIVER], TO_DEVICE, os.urandom(size))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_seal_error(junk: bytes) -> None:
    with pytest.raises(SealError):
        open_sealed([RECEIVER, SENDER], TO_DEVICE, junk)


@pytest.mark.parametrize("remote", [b"", raw_public(RECEIVER)[:31], bytes(32)], ids=["empty", "short", "low-order"])
def test_sealing_to_a_bad_public_key_fails(remote: bytes) -> None:
    with pytest.raises(SealError, match="cannot seal"):
        seal(SENDER, remote, TO_DEVICE, b"x")


def test_a_low_order_ephemeral_key_is_refused() -> None:
    # The all-zero point would make "es" a known value; it must not open, nor escape as ValueError.
    with pytest.raises(SealError):
        open_sealed([RECEIVER], TO_DEVICE, bytes(32) + SEALED[32:])
