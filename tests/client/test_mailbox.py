"""A device and the relay's mailbox (client/mailbox.py) against a real relay on 127.0.0.1: what it
accepts as its host's snapshot, and the numbers its queued items carry."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.client.mailbox import MailboxError, queue, read_snapshot
from tether.client.state import ClientState, PairedHost
from tether.crypto.keys import Identity
from tether.crypto.seal import open_sealed, seal
from tether.errors import ConfigError
from tether.protocol.mailbox import ITEM, SNAPSHOT, Snapshot, context, decode_queued, encode
from tether.relay.link import RelayLink
from tether.relay.mailbox import Mailbox
from tether.relay.server import RelayServer


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[str]:
    mailbox = await Mailbox.open(tmp_path / "relay" / "mailbox.db")
    server = RelayServer(mailbox=mailbox)
    port = await server.start("127.0.0.1", 0)
    yield f"ws://127.0.0.1:{port}"
    await server.close()
    await mailbox.close()


async def paired(tmp_path: Path, url: str) -> tuple[Path, Identity, Identity, RelayLink]:
    """A device home paired with a host that is connected (its link returned) and allows it."""
    home = tmp_path / "device"
    state = ClientState(home)
    me = state.identity(create=True)
    host = Identity.generate()
    link = await RelayLink.connect(url, host, "host")
    state.save_host(PairedHost(link.id, "laptop", url, host.static_public, "d_me", ["read", "prompt"]))
    await link.publish_allowlist([me.identity_public])
    return home, me, host, link


async def test_a_snapshot_opens_only_when_the_pinned_host_key_sealed_it(tmp_path: Path, relay: str) -> None:
    home, me, host, link = await paired(tmp_path, relay)
    try:
        assert await read_snapshot(home) is None
        body = Snapshot(link.id, "laptop", time.time(), 7, [{"id": "s_1"}], {"s_1": []})
        await link.deposit(me.identity_public, seal(host.static, me.static_public, context(SNAPSHOT, link.id),
                                                    encode(body)))
        held = await read_snapshot(home)
        assert held is not None and held[1] == body

        impostor = Identity.generate()  # the relay, or whoever, sealing with another key
        await link.deposit(me.identity_public, seal(impostor.static, me.static_public, context(SNAPSHOT, link.id),
                                                    encode(body)))
        with pytest.raises(MailboxError, match="not sealed by laptop's key"):
            await read_snapshot(home)
        await link.deposit(me.identity_public, b"\x01" * 200)
        with pytest.raises(MailboxError, match="does not open"):
            await read_snapshot(home)
        # Sealed by the host, but for its items' direction: it does not open as a snapshot.
        await link.deposit(me.identity_public, seal(host.static, me.static_public, context(ITEM, link.id),
                                                    encode(body)))
        with pytest.raises(MailboxError, match="does not open"):
            await read_snapshot(home)
    finally:
        await link.close()


async def test_queued_items_carry_growing_numbers_even_when_queued_at_once(tmp_path: Path, relay: str) -> None:
    home, _, host, link = await paired(tmp_path, relay)
    try:
        await link.take()
        cids = await asyncio.gather(*(queue(home, None, "sessions.send", {"id": "s_1", "text": f"t{i}"})
                                      for i in range(5)))
        items = []
        async with asyncio.timeout(10):
            while len(items) < 5:
                items.append(await link.mailbox_items.get())
        opened = [decode_queued(open_sealed([host.static], context(ITEM, link.id), i.sealed)[1]) for i in items]
        numbers = [q.n for q in opened]
        assert numbers == sorted(numbers) and len(set(numbers)) == 5  # in the relay's order, each new
        assert sorted(q.params["cid"] for q in opened) == sorted(cids)
        assert json.loads((home / "client" / "mailbox.json").read_text())["next"][link.id] == numbers[-1]
        (home / "client" / "mailbox.json").write_text("{damaged")
        with pytest.raises(ConfigError, match=r"mailbox\.json"):
            await queue(home, None, "sessions.send", {"id": "s_1", "text": "x"})
    finally:
        await link.close()
