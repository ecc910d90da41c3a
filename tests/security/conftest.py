"""Attacks on tokens, scopes and revocation. Real processes come from tests/e2e's fixtures."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import client_home, deployment
from tests.procs import start_host, tether_json
from tests.support.deployment import Deployment

__all__ = ["audit_entries", "client_home", "configure_host", "deployment"]


def audit_entries(deployment: Deployment) -> list[dict[str, Any]]:
    """The host's whole audit log, as the owner's `tether audit --json` prints it."""
    entries: list[dict[str, Any]] = tether_json(deployment.host_home, "audit", "--json")
    return entries


def configure_host(deployment: Deployment, config_toml: str) -> None:
    """Restart the deployment's host with ``config_toml`` as its config file (read at start)."""
    deployment.host.stop()
    (deployment.host_home / "config.toml").write_text(config_toml)
    deployment.host = start_host(deployment.host_home, deployment.relay_url, deployment.workspace)
