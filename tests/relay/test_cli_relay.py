"""``tether relay``'s limit flags reach the relay's RelayLimits."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import tether.relay.server as relay_server
from tether.cli.main import app
from tether.errors import UsageError
from tether.relay.limits import RelayLimits


class _Stop(UsageError):
    pass


def run_relay_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, list[RelayLimits]]:
    """Invoke ``tether relay ARGS`` with a stand-in server that records its limits and stops."""
    seen: list[RelayLimits] = []

    class FakeServer:
        def __init__(self, *, limits: RelayLimits | None = None, **_: object) -> None:
            seen.append(limits or RelayLimits())

        async def start(self, host: str, port: int) -> int:
            raise _Stop("stopped by the test")

    monkeypatch.setattr(relay_server, "RelayServer", FakeServer)
    result = CliRunner().invoke(app, ["relay", "--listen", "127.0.0.1:0", *args])
    return result, seen


def test_defaults_are_relay_limits_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = run_relay_cli(monkeypatch)
    assert "stopped by the test" in result.output
    assert seen == [RelayLimits()]


def test_limit_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = run_relay_cli(
        monkeypatch,
        "--max-frames-per-second",
        "500",
        "--channel-queue-bytes",
        "65536",
        "--connection-queue-bytes",
        "1048576",
    )
    assert "stopped by the test" in result.output, result.output
    [limits] = seen
    assert limits.frames_per_second == 500
    assert limits.frames_burst == 1000
    assert limits.channel_queue_bytes == 65536
    assert limits.connection_queue_bytes == 1 << 20
    assert limits.opens_per_minute == RelayLimits().opens_per_minute


@pytest.mark.parametrize("flag", ["--max-frames-per-second", "--channel-queue-bytes", "--connection-queue-bytes"])
def test_limits_must_be_positive(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    result, seen = run_relay_cli(monkeypatch, flag, "0")
    assert result.exit_code == 2
    assert seen == []
