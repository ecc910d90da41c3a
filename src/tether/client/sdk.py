"""``tether.Client``: the asyncio SDK for driving a host from a script.

Open it from a client home (a device paired with ``tether login``), from a host's own home
(it then talks to the local daemon), or with an access token (``Client.from_token``, or the
``TETHER_TOKEN`` environment variable), which needs no home at all. It reconnects by itself
with backoff; commands carry a client id, so a command retried after a reconnect is applied
once; :meth:`Client.events` resumes from its cursor, so a consumer sees every event exactly once, in order.

    async with await tether.Client.open("~/.tether") as client:
        sid = await client.start_session(["bash"])
        await client.send(sid, "echo hello\\n")
        async for event in client.events(since=0, session=sid):
            print(event["seq"], event["type"])

    async with tether.Client.from_token(os.environ["CI_TETHER_TOKEN"]) as client:
        print(await client.sessions())
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tether.backoff import Backoff
from tether.client import TOKEN_ENV
from tether.client.connection import (
    Connection,
    connect,
    connect_token,
    is_retryable,
    learn_from,
    token_refusal,
)
from tether.client.dial import dial_relay
from tether.client.mailbox import queue as queue_for_host
from tether.client.mailbox import read_snapshot
from tether.client.state import ClientState
from tether.crypto.keys import Identity
from tether.crypto.tokens import AccessToken, parse_token
from tether.errors import UsageError
from tether.home import resolve_home
from tether.protocol.frames import CloseCode
from tether.protocol.images import image_type
from tether.protocol.mailbox import QueueableMethod, Snapshot
from tether.protocol.transport import ChannelClosed
from tether.relay.errors import RelayError

T = TypeVar("T")

# Until a client has reached its host once, HOST_OFFLINE is retried only this long (not the whole
# retry_for): the relay gives that same answer to a device the host does not admit (revoked,
# never paired) so as not to tell strangers whether the host is online, and waiting out a minute
# would only delay that answer. A host that is just starting has these seconds to connect.
FIRST_REACH_GRACE = 5.0


@dataclass(frozen=True)
class HostStatus:
    """A paired host as this client knows it, with whether the relay sees it online."""

    id: str
    name: str
    relay_url: str
    scopes: list[str]
    online: bool
    linked_from: str | None = None  # the host that started this one over SSH (None: paired directly)


class Client:
    """A connection to one host that survives relay restarts and network cuts.

    With a ``token`` (a ``tth_...`` string or a parsed :class:`AccessToken`; by default the
    ``TETHER_TOKEN`` environment variable) the client connects as that token to the host the
    token names, and ``home`` is not used.
    """

    def __init__(
        self,
        home: Path | None = None,
        host: str | None = None,
        *,
        token: str | AccessToken | None = None,
        retry_for: float = 60.0,
    ) -> None:
        self.home = resolve_home(home)
        self.host = host
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        self._token = parse_token(token) if isinstance(token, str) else token
        if self._token is not None and host is not None and host != self._token.host_id:
            raise UsageError("--host does not name the host this token belongs to", hint="drop --host")
        # How long a call keeps retrying through reconnects before it gives up.
        self.retry_for = retry_for
        self._conn: Connection | None = None
        self._reached = False  # a channel to the host was open at least once
        self._lock = asyncio.Lock()
        self._backoff = Backoff()

    @classmethod
    async def open(
        cls, home: str | Path | None = None, *, host: str | None = None, token: str | AccessToken | None = None
    ) -> Client:
        """Connect to ``host`` (id or name; needed when the home has several) and return the client."""
        client = cls(resolve_home(home), host, token=token)
        await client._connection()
        return client

    @classmethod
    def from_token(cls, token: str | AccessToken, *, retry_for: float = 60.0) -> Client:
        """A client that acts as an access token (``tether tokens create``). It connects on the
        first call; a mistyped token raises :class:`UsageError` here, before any network use.

            async with tether.Client.from_token(os.environ["TETHER_TOKEN"]) as client:
                await client.sessions()
        """
        if not isinstance(token, (str, AccessToken)):
            raise UsageError("a token is a tth_... string")
        return cls(token=token, retry_for=retry_for)

    @property
    def token_id(self) -> str | None:
        """The id of the token this client uses (as `tether tokens list` shows it), if any."""
        return None if self._token is None else self._token.id

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # -- the connection ------------------------------------------------------------------

    async def _connection(self) -> Connection:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                if self._conn is not None:
                    ended = self._conn.peer.close_error
                    await self._conn.close()
                    self._conn = None
                    # The host's answer (revoked, expired, ...) says more than a new attempt would.
                    if not is_retryable(ended):
                        raise ended
                if self._token is not None:
                    self._conn = await connect_token(self._token)
                else:
                    self._conn = await connect(self.home, self.host)
                self._reached = True
                self._backoff.reset()
            return self._conn

    async def _retrying(self, op: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``op`` on a live connection, reconnecting with backoff while the host is unreachable."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.retry_for
        while True:
            try:
                return await op(await self._connection())
            except Exception as exc:
                unreachable = isinstance(exc, ChannelClosed) and exc.close_code == CloseCode.HOST_OFFLINE
                if (
                    not is_retryable(exc)
                    or loop.time() > deadline
                    or (unreachable and not self._reached and loop.time() > start + FIRST_REACH_GRACE)
                ):
                    raise self._explain(exc) from None
                await asyncio.sleep(self._backoff.next_delay())

    def _explain(self, exc: Exception) -> BaseException:
        return exc if self._token is None else token_refusal(self._token, exc)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call any application method (see ``docs/protocol.md``)."""
        return await self._retrying(lambda c: c.call(method, params))

    async def _command(self, method: str, params: dict[str, Any]) -> Any:
        # One client id for every retry of this command: the host applies it once.
        return await self.call(method, {**params, "cid": uuid.uuid4().hex})

    # -- the API -------------------------------------------------------------------------

    async def hosts(self) -> list[HostStatus]:
        """The hosts this client is paired with (or its token's host), and whether each is online now."""
        if self._token is not None:
            token = self._token
            seen = await _presence_as(token.identity(), token.relay_url, [token.host_id])
            return [HostStatus(token.host_id, token.host_id, token.relay_url, [], seen.get(token.host_id, False))]
        state = ClientState(self.home)
        online = await self._presence_of(state)
        # Ask each reachable host which hosts it started over SSH (they share its devices): those
        # join this client's hosts with no new pairing.
        if await learn_from(state, [h for h in state.hosts() if online.get(h.host_id)]):
            online = await self._presence_of(state)
        hosts = state.hosts()
        return [HostStatus(h.host_id, h.name, h.relay_url, h.scopes, online.get(h.host_id, False), h.linked_from)
                for h in hosts]

    @staticmethod
    async def _presence_of(state: ClientState) -> dict[str, bool]:
        online: dict[str, bool] = {}
        by_relay: dict[str, list[str]] = {}
        for h in state.hosts():
            by_relay.setdefault(h.relay_url, []).append(h.host_id)
        for relay_url, ids in by_relay.items():
            online.update(await _presence(state, relay_url, ids))
        return online

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("host.info")
        return result

    async def sessions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("sessions.list")
        return result

    async def session(self, session_id: str, *, scrollback: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("sessions.get", {"id": session_id, "scrollback": scrollback})
        return result

    async def start_session(
        self,
        command: list[str] | None = None,
        *,
        agent: str = "pty",
        prompt: str | None = None,
        workspace: str | None = None,
        approval: str | None = None,
        sandbox: str | None = None,
        thread: str | None = None,
        cols: int = 80,
        rows: int = 24,
    ) -> str:
        """Start a session; returns its id. A terminal agent (``pty``) runs ``command`` at
        ``cols``×``rows``; an agent that works in turns (``codex``, ``claude``, ``builtin``) starts
        on ``prompt``, under the host's policy or a stricter ``approval``/``sandbox``. Only what is
        given is sent: the host says which of them the agent needs."""
        params: dict[str, Any] = {"agent": agent, "workspace": workspace}
        if command is not None:
            params.update(command=command, cols=cols, rows=rows)
        given = {"prompt": prompt, "approval": approval, "sandbox": sandbox, "thread": thread}
        params.update({k: v for k, v in given.items() if v is not None})
        result = await self._command("sessions.start", params)
        return str(result["id"])

    async def approve(self, session_id: str, approval: str, decision: str = "approve") -> int:
        """Answer an approval request: ``approve``, ``approve_for_session`` or ``deny``.
        Raises RemoteError with code ``approval_conflict`` if someone answered first."""
        result = await self._command(
            "sessions.approve", {"id": session_id, "approval": approval, "decision": decision}
        )
        return int(result["seq"])

    # -- while the host is away (the relay's mailbox) --------------------------------------

    async def offline_snapshot(self) -> tuple[float, Snapshot] | None:
        """What the host last left this device at the relay, for while it is away: (when the relay
        got it, the snapshot: its sessions and their latest events); None if it left nothing."""
        self._device_only("offline_snapshot")
        return await read_snapshot(self.home, self.host)

    async def queue(self, method: QueueableMethod, params: dict[str, Any]) -> str:
        """Leave a request for the host at the relay (``sessions.send``, ``sessions.approve`` or
        ``sessions.answer``), applied once when the host is back; its ``cid``. One the host then
        refuses (an approval answered meanwhile…) shows on the session as ``mailbox.refused``."""
        self._device_only("queue")
        return await queue_for_host(self.home, self.host, method, params)

    def _device_only(self, what: str) -> None:
        if self._token is not None:
            raise UsageError(f"{what}() is for paired devices: a token's requests are not held for an offline host")

    async def threads(self, agent: str = "codex") -> list[dict[str, Any]]:
        """Agent threads stored on the host (e.g. Codex threads started on the desktop) that a
        session can adopt with ``start_session(agent="codex", thread=ID, prompt=...)``."""
        result = await self.call("sessions.threads", {"agent": agent})
        threads: list[dict[str, Any]] = result["threads"]
        return threads

    async def diff(self, session_id: str) -> list[dict[str, Any]]:
        """The session's file changes: ``[{seq, item, path, diff, status}]``."""
        result = await self.call("sessions.diff", {"id": session_id})
        changes: list[dict[str, Any]] = result["changes"]
        return changes

    async def send(
        self, session_id: str, text: str, *, model: str | None = None, effort: str | None = None,
        mode: str | None = None, images: Sequence[tuple[str, bytes]] = (),
    ) -> int:
        """Send input to a session exactly as given; returns the seq of its event. To an agent
        session: a prompt, on ``model`` with reasoning ``effort`` and in ``mode`` (Codex: "plan"
        or "default") when given — they stay for the next prompts; :meth:`models` lists models.
        ``images``: (name, bytes) of PNG, JPEG, GIF or WebP images that go with this prompt."""
        params: dict[str, Any] = {"id": session_id, "text": text}
        chosen = {"model": model, "effort": effort, "mode": mode}
        params.update({k: v for k, v in chosen.items() if v is not None})
        if images:
            params["images"] = [_image(name, data) for name, data in images]
        result = await self._command("sessions.send", params)
        return int(result["seq"])

    async def review(
        self, session_id: str, *, base: str | None = None, commit: str | None = None, instructions: str | None = None,
    ) -> int:
        """A turn in which the agent reviews changes (Codex): the uncommitted ones, those against a
        ``base`` branch, one ``commit``, or what ``instructions`` say — one of them. Returns the seq
        of its ``turn.started``."""
        given = {"base": base, "commit": commit, "instructions": instructions}
        params = {"id": session_id, **{k: v for k, v in given.items() if v is not None}}
        result = await self._command("sessions.review", params)
        return int(result["seq"])

    async def archive(self, session_id: str, *, archived: bool = True) -> int:
        """Put a session away (``archived=False``: back); it keeps its history."""
        result = await self._command("sessions.archive", {"id": session_id, "archived": archived})
        return int(result["seq"])

    async def delete(self, session_id: str) -> int:
        """Forget an ended session and its whole history on the host (it cannot be undone)."""
        result = await self._command("sessions.delete", {"id": session_id})
        return int(result["seq"])

    async def unqueue(self, session_id: str, queued: str) -> int:
        """Cancel a prompt that waits for the agent (a ``turn.queued`` event's ``queued``) before it starts."""
        result = await self._command("sessions.unqueue", {"id": session_id, "queued": queued})
        return int(result["seq"])

    async def compact(self, session_id: str) -> int:
        """A turn in which the agent summarizes the conversation so far to free its context (Codex)."""
        result = await self._command("sessions.compact", {"id": session_id})
        return int(result["seq"])

    async def answer(self, session_id: str, approval: str, answers: dict[str, list[str]]) -> int:
        """Answer a question the agent asked (an ``approval.requested`` of kind ``question``): each
        question's id → the chosen options' labels or free text. Raises RemoteError with code
        ``approval_conflict`` if someone answered first."""
        result = await self._command("sessions.answer", {"id": session_id, "approval": approval, "answers": answers})
        return int(result["seq"])

    async def models(self, session_id: str) -> list[dict[str, Any]]:
        """The models an agent session may use next: ``[{id, name, description, efforts,
        default_effort, default}]``."""
        result = await self.call("sessions.models", {"id": session_id})
        models: list[dict[str, Any]] = result["models"]
        return models

    async def interrupt(self, session_id: str) -> None:
        await self._command("sessions.interrupt", {"id": session_id})

    async def resize(self, session_id: str, cols: int, rows: int) -> None:
        await self.call("sessions.resize", {"id": session_id, "cols": cols, "rows": rows})

    async def events(self, since: int = 0, *, session: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every event after ``since``, then live ones, forever; resumes across reconnects.

        Each event is a dict with ``seq``, ``session``, ``type``, ``ts`` and ``data``. A consumer
        far behind first gets the state instead of the history: one or more
        ``{"type": "snapshot", "seq": ..., "sessions": [...], "last": bool}`` items.
        """
        cursor = since
        while True:
            try:
                conn = await self._connection()
                sub = await conn.subscribe(cursor, session)
                async for event in sub.items():
                    # A snapshot may come in several parts that share its seq.
                    if event["seq"] < cursor or (event["seq"] == cursor and event["type"] != "snapshot"):
                        continue  # never hand out an event twice
                    cursor = event["seq"]
                    yield event
            except Exception as exc:
                if not is_retryable(exc):
                    raise self._explain(exc) from None
                await asyncio.sleep(self._backoff.next_delay())



async def _presence(state: ClientState, relay_url: str, host_ids: list[str]) -> dict[str, bool]:
    return await _presence_as(state.identity(), relay_url, host_ids)


async def _presence_as(identity: Identity, relay_url: str, host_ids: list[str]) -> dict[str, bool]:
    try:
        link = await dial_relay(relay_url, identity, open_timeout=5)
    except RelayError:
        return {}
    try:
        await link.watch(host_ids)
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(2):
                while not all(h in link.presence for h in host_ids):
                    await link.wait_presence_change()
        return dict(link.presence)
    finally:
        await link.close()


def _image(name: str, data: bytes) -> dict[str, str]:
    """An image for ``sessions.send``; UsageError when its bytes are not of a type a prompt takes."""
    mime = image_type(data)
    if mime is None:
        raise UsageError(f"{name} is not a PNG, JPEG, GIF or WebP image")
    return {"name": name, "mime": mime, "data": base64.b64encode(data).decode()}
