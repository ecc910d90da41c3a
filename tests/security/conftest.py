"""Attacks on tokens, scopes and revocation. Real processes come from tests/e2e's fixtures."""

from __future__ import annotations

from tests.e2e.conftest import client_home, deployment

__all__ = ["client_home", "deployment"]
