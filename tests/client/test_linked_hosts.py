"""What a client keeps of the hosts a paired host announces (``hosts.linked``): new ones join,
renamed ones are renamed, forgotten ones leave, and a host paired directly is never touched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tether.client.connection import Connection, learn_linked_hosts
from tether.client.state import ClientState, PairedHost
from tether.crypto.encoding import b64u_encode
from tether.errors import TetherError

DESKTOP = PairedHost("d" * 20, "desktop", "ws://relay", os.urandom(32), "dev", ["read", "prompt"])
KEY_A, KEY_B = os.urandom(32), os.urandom(32)


class _Announcing:
    """The parent host's answer to ``hosts.linked`` (the one call learning makes)."""

    def __init__(self, linked: list[dict[str, Any]] | TetherError) -> None:
        self.linked = linked

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert method == "hosts.linked"
        if isinstance(self.linked, TetherError):
            raise self.linked
        return self.linked


def _item(host_id: str, name: str, key: bytes, relay: str = "ws://relay") -> dict[str, Any]:
    return {"host_id": host_id, "name": name, "static_public": b64u_encode(key), "relay_url": relay, "seq": 1}


async def _learn(state: ClientState, linked: list[dict[str, Any]] | TetherError) -> dict[str, PairedHost]:
    conn: Connection = _Announcing(linked)  # type: ignore[assignment]
    await learn_linked_hosts(conn, state, DESKTOP)
    return {h.host_id: h for h in state.hosts()}


async def test_linked_hosts_follow_their_parent(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.save_host(DESKTOP)
    direct = PairedHost("c" * 20, "paired-here", "ws://other", os.urandom(32), "dev2", ["read"])
    state.save_host(direct)

    hosts = await _learn(state, [_item("a" * 20, "box", KEY_A), _item("c" * 20, "impostor", KEY_B),
                                 _item("d" * 20, "itself", KEY_B), _item("e" * 20, "short key", b"x")])
    box = hosts["a" * 20]
    assert (box.name, box.host_static, box.device_id, box.scopes, box.linked_from) == (
        "box", KEY_A, "dev", ["read", "prompt"], DESKTOP.host_id)
    assert hosts["c" * 20] == direct, "a host paired here directly is never overwritten"
    assert hosts["d" * 20] == DESKTOP and "e" * 20 not in hosts

    # Renamed and moved: followed. A new key from the parent is not (the host itself says so).
    hosts = await _learn(state, [_item("a" * 20, "box2", KEY_B, relay="wss://new")])
    assert (hosts["a" * 20].name, hosts["a" * 20].relay_url, hosts["a" * 20].host_static) == (
        "box2", "wss://new", KEY_A)
    # A parent without the read scope (or an older host) changes nothing.
    assert await _learn(state, TetherError("no", code="forbidden")) == hosts
    # Forgotten by the parent: gone; the direct pairing stays.
    hosts = await _learn(state, [])
    assert set(hosts) == {DESKTOP.host_id, direct.host_id}
