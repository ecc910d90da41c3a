"""Every method is declared once (protocol/methods.py) and answered by exactly one handler."""

from __future__ import annotations

import pytest

from tether.host.api import HANDLERS, handles
from tether.protocol.methods import METHODS


def test_every_declared_method_has_a_handler_and_every_handler_a_declaration() -> None:
    assert set(HANDLERS) == set(METHODS)


def test_a_handler_for_an_undeclared_or_taken_method_is_refused() -> None:
    async def handler(conn: object, params: object) -> None:
        return None

    with pytest.raises(TypeError, match="not a declared method"):
        handles("sessions.nonexistent")(handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="has a handler already"):
        handles("host.info")(handler)  # type: ignore[arg-type]
    assert "sessions.nonexistent" not in HANDLERS
