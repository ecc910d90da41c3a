"""Attacks on tokens, scopes and revocation. Real processes come from tests/e2e's fixtures."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Deployment, client_home, deployment
from tests.procs import tether_json

__all__ = ["audit_entries", "client_home", "deployment"]


def audit_entries(deployment: Deployment) -> list[dict[str, Any]]:
    """The host's whole audit log, as the owner's `tether audit --json` prints it."""
    entries: list[dict[str, Any]] = tether_json(deployment.host_home, "audit", "--json")
    return entries
