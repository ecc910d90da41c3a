from pathlib import Path

import pytest

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
