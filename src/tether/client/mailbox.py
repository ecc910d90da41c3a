"""A paired device and the relay's mailbox of a host that is away (ARCHITECTURE §8b).

:func:`read_snapshot` opens what the host last left this device (sealed for it alone, checked to
come from the host's key this device pinned at pairing). :func:`queue` seals a prompt, an approval
or an answer for the host and leaves it at the relay; the host applies it once, in order, when it
is back, or says on the session why not. Items carry a number (``n``) that only grows for this
device and host: the last one, kept in ``client/mailbox.json`` under a lock (so two programs of this
device queueing at once cannot take one number or send out of order), and at least the time in
milliseconds (so a lost file does not make the host refuse new items as older than applied ones).
"""

from __future__ import annotations

import asyncio
import fcntl
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import msgspec

from tether.client.dial import dial_relay
from tether.client.state import ClientState, PairedHost
from tether.crypto.seal import SealError, open_sealed, seal
from tether.errors import TetherError
from tether.home import read_json, write_private_json
from tether.protocol.mailbox import ITEM, SNAPSHOT, QueueableMethod, Queued, Snapshot, context, decode_snapshot
from tether.protocol.mailbox import encode as encode_mailbox


class MailboxError(TetherError):
    code = "mailbox"


async def read_snapshot(home: Path, host: str | None = None) -> tuple[float, Snapshot] | None:
    """(when the relay got it, the snapshot) the host last left this device; None if none."""
    state = ClientState(home)
    paired = state.find_host(host)
    identity = state.identity()
    link = await dial_relay(paired.relay_url, identity)
    try:
        held = await link.snapshot(paired.host_id)
    finally:
        await link.close()
    if held is None:
        return None
    deposited_at, sealed = held
    try:
        sender, plaintext = open_sealed([identity.static], context(SNAPSHOT, paired.host_id), sealed)
        snapshot = decode_snapshot(plaintext)
    except (SealError, msgspec.ValidationError, msgspec.DecodeError):
        raise MailboxError(
            "the relay holds a snapshot for this device that does not open",
            hint="it was altered, or left by an older host key; connect once while the host is online",
        ) from None
    if sender != paired.host_static or snapshot.host_id != paired.host_id:
        raise MailboxError(f"the snapshot at the relay was not sealed by {paired.name}'s key",
                           hint="connect once while the host is online (it may have rotated its key)")
    return deposited_at, snapshot


async def queue(home: Path, host: str | None, method: QueueableMethod, params: dict[str, Any]) -> str:
    """Leave ``method(params)`` for the host at the relay; the request's ``cid`` (made here when
    ``params`` has none), by which its outcome shows on the session."""
    state = ClientState(home)
    paired = state.find_host(host)
    identity = state.identity()
    params = {**params, "cid": params.get("cid") or uuid.uuid4().hex}
    link = await dial_relay(paired.relay_url, identity)
    try:
        async with _numbered(state.dir / "mailbox.json", paired) as n:
            item = Queued(paired.host_id, n, time.time(), method, params)
            sealed = seal(identity.static, paired.host_static, context(ITEM, paired.host_id), encode_mailbox(item))
            await link.queue(paired.host_id, sealed)
    finally:
        await link.close()
    return str(params["cid"])


@asynccontextmanager
async def _numbered(path: Path, paired: PairedHost) -> AsyncIterator[int]:
    """The next item number for this host, taken for good only when the body succeeds (the item
    reached the relay); the file is locked meanwhile (and waited for off the event loop)."""
    lock, counts = await asyncio.to_thread(_locked_counts, path)
    try:
        n = max(int(counts.get(paired.host_id, 0)) + 1, int(time.time() * 1000))
        yield n
        counts[paired.host_id] = n
        await asyncio.to_thread(write_private_json, path, {"version": 1, "next": counts})
    finally:
        lock.close()  # and with it the lock


def _locked_counts(path: Path) -> tuple[IO[str], dict[str, int]]:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    lock = open(path.with_suffix(".lock"), "a")  # closed by _numbered: that releases the lock
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock, _counts(path)
    except BaseException:
        lock.close()
        raise


def _counts(path: Path) -> dict[str, int]:
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    counts = data.get("next") if isinstance(data, dict) else None
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        raise MailboxError(f"{path} is damaged", hint="remove it")
    return counts
