from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.crypto.keys import Identity, derive_id, verify_signature
from tether.errors import ConfigError


def test_identity_roundtrip_is_private(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = tmp_path / "keys.json"
    ident.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = Identity.load(path)
    assert loaded.identity_public == ident.identity_public
    assert loaded.static_public == ident.static_public
    assert loaded.id == ident.id
    assert "ed25519" not in repr(loaded)


def test_signature_and_id() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"challenge")
    assert verify_signature(ident.identity_public, sig, b"challenge")
    assert not verify_signature(ident.identity_public, sig, b"other")
    assert not verify_signature(b"\x00" * 32, sig, b"challenge")
    assert derive_id(ident.identity_public) == ident.id
    assert derive_id(Identity.generate().identity_public) != ident.id
    with pytest.raises(ValueError):
        derive_id(b"short")


def test_seeded_identity_is_deterministic() -> None:
    seed = bytes(range(32))
    assert Identity.from_seed(seed).id == Identity.from_seed(seed).id
    assert Identity.from_seed(seed).id != Identity.from_seed(bytes(32)).id


def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"ed25519": "!!", "x25519": 3}')
    path.chmod(0o600)  # a key file others can read is refused before its content is looked at
    with pytest.raises(ConfigError, match="does not hold valid tether keys"):
        Identity.load(path)
    path.write_text("not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        Identity.load(path)


def _openssl_verifies(key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=80),
    part=st.sampled_from(["none", "key", "signature", "message"]),
    at=st.integers(min_value=0, max_value=200),
    flip=st.integers(min_value=1, max_value=255),
)
def test_libsodium_and_openssl_agree_on_signatures_and_their_forgeries(
    seed: bytes, message: bytes, part: str, at: int, flip: int
) -> None:
    """verify_signature is libsodium's (the relay's admission, twice as fast): it accepts what an
    honest signer makes and refuses a signature, key or message changed anywhere, as OpenSSL does."""
    ident = Identity.from_seed(seed)
    key, signature = ident.identity_public, ident.sign(message)

    def changed(data: bytes) -> bytes:
        if not data:
            return b"\x00"
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ flip]) + data[i + 1:]

    if part == "key":
        key = changed(key)
    elif part == "signature":
        signature = changed(signature)
    elif part == "message":
        message = changed(message)
    assert verify_signature(key, signature, message) == _openssl_verifies(key, signature, message)
    assert verify_signature(key, signature, message) is (part == "none")


@given(key=st.binary(max_size=40), signature=st.binary(max_size=70), message=st.binary(max_size=40))
def test_any_bytes_are_a_refusal_never_an_exception(key: bytes, signature: bytes, message: bytes) -> None:
    assert verify_signature(key, signature, message) is False


def test_a_signature_of_another_length_is_refused_even_when_the_bytes_line_up() -> None:
    """libsodium verifies a signed message (signature then message): a 63-byte "signature" whose
    message begins with the last byte must not pass as the 64-byte one."""
    ident = Identity.generate()
    signature = ident.sign(b"challenge")
    assert verify_signature(ident.identity_public, signature, b"challenge")
    assert not verify_signature(ident.identity_public, signature[:63], signature[63:] + b"challenge")
    assert not verify_signature(ident.identity_public, signature + b"c", b"hallenge")
