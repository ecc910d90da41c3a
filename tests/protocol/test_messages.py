"""The application decoder: typed messages in, one clear error type for anything else."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import UsageError
from tether.protocol import schemas
from tether.protocol.messages import (
    Notification,
    ProtocolError,
    Request,
    Response,
    decode,
    decode_params,
    encode,
)
from tether.protocol.pairing_link import PairingLink, parse_link

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def test_round_trip() -> None:
    for message in (
        Request(id=3, method="sessions.list"),
        Response(id=3, result=[{"id": "s_1"}]),
        Notification(method="events", params={"sub": 1, "events": []}),
    ):
        assert decode(encode(message)) == message


def test_unsupported_version_is_refused_clearly() -> None:
    with pytest.raises(ProtocolError, match="protocol version 9 is not supported"):
        decode(b'{"t":"req","v":9,"id":1,"method":"host.info"}')


@given(st.binary(max_size=512))
@settings(max_examples=300)
def test_arbitrary_bytes_only_raise_protocol_error(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


@given(st.dictionaries(st.sampled_from(["t", "id", "method", "params", "v", "result", "error"]), json_values))
@settings(max_examples=300)
def test_arbitrary_json_objects_only_raise_protocol_error(obj: dict[str, Any]) -> None:
    try:
        decode(json.dumps(obj).encode())
    except ProtocolError:
        pass


# Every request decoder: all the params structs the host validates requests with.
PARAM_STRUCTS = sorted(
    (v for v in vars(schemas).values()
     if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == schemas.__name__
     and v.__name__ != "_Params"),
    key=lambda t: t.__name__,
)


def test_every_params_struct_is_fuzzed() -> None:
    assert len(PARAM_STRUCTS) >= 20 and schemas.SessionStart in PARAM_STRUCTS and schemas.HostLink in PARAM_STRUCTS


@given(st.sampled_from(PARAM_STRUCTS), st.dictionaries(st.text(max_size=10), json_values, max_size=5))
@settings(max_examples=400)
def test_arbitrary_params_only_raise_protocol_error(struct: type[msgspec.Struct], params: dict[str, Any]) -> None:
    try:
        decode_params(params, struct)
    except ProtocolError as exc:
        assert exc.code == "invalid_params"


def test_params_are_checked() -> None:
    with pytest.raises(ProtocolError, match="cols"):
        decode_params({"id": "s_1", "cols": 0, "rows": 10}, schemas.SessionResize)
    with pytest.raises(ProtocolError, match="unknown field"):
        decode_params({"id": "s_1", "text": "x", "sudo": True}, schemas.SessionSend)
    with pytest.raises(ProtocolError):
        decode_params({"id": "s_1", "text": "x" * (1024 * 1024 + 1)}, schemas.SessionSend)
    assert decode_params({"id": "s_1", "text": "x" * 1024 * 1024}, schemas.SessionSend).text


def test_pairing_link_round_trip_and_secret_never_in_repr() -> None:
    link = PairingLink("https://relay.example", "a" * 20, bytes(range(32)), "offer_id_123", b"\x07" * 32)
    parsed = parse_link(link.format())
    assert parsed == link
    assert "relay.example" in repr(parsed) and "BwcH" not in repr(parsed)


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_arbitrary_links_only_raise_usage_error(text: str) -> None:
    for candidate in (text, f"https://r.example/#pair={text}"):
        try:
            parse_link(candidate)
        except UsageError:
            pass
