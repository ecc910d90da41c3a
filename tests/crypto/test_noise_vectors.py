"""Run the official cacophony and snow Noise vectors for tether's three protocols.

See ``tests/crypto/vectors/README.md`` for where the files come from and their licences.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tether.crypto.noise import PATTERNS, HandshakeState

VECTOR_DIR = Path(__file__).parent / "vectors"
PATTERN_OF = {
    "Noise_IK_25519_AESGCM_SHA256": "IK",
    "Noise_IKpsk2_25519_AESGCM_SHA256": "IKpsk2",
    "Noise_X_25519_AESGCM_SHA256": "X",
}


def _load() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for source in ("cacophony", "snow"):
        vectors = json.loads((VECTOR_DIR / f"{source}.json").read_text())["vectors"]
        for i, vector in enumerate(vectors):
            if vector["protocol_name"] in PATTERN_OF:
                out.append((f"{source}-{i}-{vector['protocol_name']}", vector))
    return out


VECTORS = _load()


def test_vectors_are_present() -> None:
    # Guard against a silently empty parametrisation: every protocol, both sources.
    names = {v["protocol_name"] for _, v in VECTORS}
    assert len(VECTORS) >= 5
    assert names == set(PATTERN_OF)
    assert set(PATTERN_OF.values()) == set(PATTERNS)
    assert {vid.split("-")[0] for vid, _ in VECTORS} == {"cacophony", "snow"}


def _key(hex_private: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_private))


def _psk(psks: list[str]) -> bytes | None:
    assert len(psks) <= 1  # psk2 uses exactly one psk; IK and X none
    return bytes.fromhex(psks[0]) if psks else None


@pytest.mark.parametrize(("vid", "vector"), VECTORS, ids=[vid for vid, _ in VECTORS])
def test_vector(vid: str, vector: dict[str, Any]) -> None:
    pattern = PATTERN_OF[vector["protocol_name"]]
    handshake_messages = len(PATTERNS[pattern])
    initiator = HandshakeState.initiator(
        pattern,
        s=_key(vector["init_static"]),
        rs=bytes.fromhex(vector["init_remote_static"]),
        psk=_psk(vector.get("init_psks", [])),
        prologue=bytes.fromhex(vector["init_prologue"]),
        e=_key(vector["init_ephemeral"]),
    )
    responder = HandshakeState.responder(
        pattern,
        s=_key(vector["resp_static"]),
        psk=_psk(vector.get("resp_psks", [])),
        prologue=bytes.fromhex(vector["resp_prologue"]),
        # One-way patterns give the responder no ephemeral (cacophony leaves it out).
        e=_key(vector["resp_ephemeral"]) if "resp_ephemeral" in vector else None,
    )
    messages = vector["messages"]
    assert len(messages) > handshake_messages, "a vector should carry transport messages after the handshake"

    # Handshake: message 0 initiator → responder, message 1 (if any) responder → initiator.
    turns = [(initiator, responder), (responder, initiator)][:handshake_messages]
    for i, (writer, reader) in enumerate(turns):
        payload = bytes.fromhex(messages[i]["payload"])
        ciphertext = writer.write_message(payload)
        assert ciphertext.hex() == messages[i]["ciphertext"], f"handshake message {i}"
        assert reader.read_message(ciphertext) == payload

    assert initiator.complete and responder.complete
    init_public = _key(vector["init_static"]).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert responder.remote_static == init_public
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]

    # Transport: the vectors keep alternating senders after the handshake, except one-way ones,
    # where only the initiator sends.
    one_way = handshake_messages == 1
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for i, message in enumerate(messages[handshake_messages:], start=handshake_messages):
        send, recv = (i_send, r_recv) if one_way or i % 2 == 0 else (r_send, i_recv)
        payload = bytes.fromhex(message["payload"])
        ciphertext = send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"], f"transport message {i}"
        assert recv.decrypt_with_ad(b"", ciphertext) == payload
