"""Hosts linked to this one (`tether ssh` announces them): link, list, unlink, and a forgotten
remote unlinked when the daemon starts again. Through a live daemon's unix socket."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.procs import remove, short_home
from tether.client.connection import connect_local
from tether.crypto.encoding import b64u_encode
from tether.host.daemon import HostDaemon
from tether.protocol.rpc import RemoteError
from tether.sshremote.hooks import DesktopRemotes
from tether.sshremote.registry import Registry, RemoteRecord


def _announcement(host_id: str, name: str) -> dict[str, str]:
    return {"host_id": host_id, "name": name, "static_public": b64u_encode(os.urandom(32)),
            "relay_url": "ws://127.0.0.1:1"}


@pytest.fixture
async def home() -> AsyncIterator[Path]:
    home, workspace = short_home("lh"), short_home("lw")
    (home / "ws").symlink_to(workspace)
    try:
        yield home
    finally:
        remove(home, workspace)


async def _start(home: Path) -> HostDaemon:
    daemon = HostDaemon(home, relay_url=None, workspaces=[home / "ws"], remotes=DesktopRemotes(home))
    await daemon.start()
    return daemon


async def _linked(home: Path) -> list[tuple[str, str]]:
    conn = await connect_local(home)
    try:
        return [(h["host_id"], h["name"]) for h in await conn.call("hosts.linked")]
    finally:
        await conn.close()


async def test_link_rename_unlink_and_link_again(home: Path) -> None:
    daemon = await _start(home)
    try:
        conn = await connect_local(home)
        try:
            await conn.call("hosts.link", _announcement("a" * 20, "box"))
            await conn.call("hosts.link", _announcement("b" * 20, "other"))
            await conn.call("hosts.link", _announcement("a" * 20, "box-renamed"))
            assert await _linked(home) == [("b" * 20, "other"), ("a" * 20, "box-renamed")]
            await conn.call("hosts.unlink", {"host_id": "a" * 20})
            assert await _linked(home) == [("b" * 20, "other")]
            with pytest.raises(RemoteError) as info:
                await conn.call("hosts.unlink", {"host_id": "a" * 20})
            assert info.value.code == "not_found"
            with pytest.raises(RemoteError) as info:
                await conn.call("hosts.unlink", {"host_id": "not-an-id"})
            assert info.value.code == "invalid_params"
            await conn.call("hosts.link", _announcement("a" * 20, "box"))
            assert await _linked(home) == [("b" * 20, "other"), ("a" * 20, "box")]
            events = await conn.call("events.read", {"since": 0})
            assert [e["type"] for e in events["events"]].count("host.unlinked") == 1
        finally:
            await conn.close()
    finally:
        await daemon.stop()


async def test_a_remote_forgotten_while_the_daemon_was_down_is_unlinked_at_start(home: Path) -> None:
    daemon = await _start(home)
    try:
        conn = await connect_local(home)
        try:
            await conn.call("hosts.link", _announcement("a" * 20, "kept"))
            await conn.call("hosts.link", _announcement("b" * 20, "forgotten"))
        finally:
            await conn.close()
    finally:
        await daemon.stop()
    Registry(home).save(RemoteRecord(
        name="kept", host="box", user=None, port=None, identity=None, remote_home="~/.tether", python="python3",
        mode="relay", relay_url="ws://127.0.0.1:1", workspaces=[], host_id="a" * 20, static_public="s",
        state="running",
    ))
    daemon = await _start(home)
    try:
        assert await _linked(home) == [("a" * 20, "kept")]
    finally:
        await daemon.stop()
    # Said once: a second start has nothing more to unlink.
    daemon = await _start(home)
    try:
        conn = await connect_local(home)
        try:
            events = await conn.call("events.read", {"since": 0})
        finally:
            await conn.close()
        assert [e["data"] for e in events["events"] if e["type"] == "host.unlinked"] == [{"host_id": "b" * 20}]
    finally:
        await daemon.stop()
