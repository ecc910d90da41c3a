"""The dialing side's URL handling."""

from __future__ import annotations

import pytest

from tether.errors import UsageError
from tether.relay.link import websocket_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
        ("ws://127.0.0.1:8765/", "ws://127.0.0.1:8765/ws"),
        ("ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8765/ws"),
        ("wss://relay.example/ws/", "wss://relay.example/ws"),
        ("http://localhost:8080", "ws://localhost:8080/ws"),
        ("https://relay.example", "wss://relay.example/ws"),
        ("HTTPS://relay.example/tether/", "wss://relay.example/tether/ws"),
        ("https://relay.example/#pair=HOST.KEY.OFFER.SECRET", "wss://relay.example/ws"),
        ("  https://[::1]:9000?x=1  ", "wss://[::1]:9000/ws"),
    ],
)
def test_websocket_url(given: str, expected: str) -> None:
    assert websocket_url(given) == expected


@pytest.mark.parametrize("bad", ["relay.example", "ftp://relay.example", "https://", "", "ws:/x"])
def test_websocket_url_refuses_what_is_not_a_relay_url(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        websocket_url(bad)
    assert "not a relay URL" in info.value.message
    assert info.value.hint
