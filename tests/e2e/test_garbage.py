"""A paired but misbehaving client sends garbage inside its encrypted channel: the host answers
with errors, keeps serving that channel and every other one, and never crashes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.procs import tether_json
from tests.support.deployment import Deployment
from tether.client.connection import connect_remote
from tether.client.state import ClientState
from tether.protocol.rpc import RemoteError

pytestmark = pytest.mark.slow


async def test_garbage_inside_the_channel_is_answered_not_fatal(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    state = ClientState(client_home)
    conn = await connect_remote(state, state.find_host(None))
    rng = random.Random(1234)
    try:
        garbage = [os.urandom(rng.randrange(1, 2000)) for _ in range(50)]
        garbage += [
            b"{}", b"[]", b"null", b'{"t":"req"}', b'{"t":"req","id":"x","method":1}',
            b'{"t":"note","method":"events.ack","params":{"sub":"nope"}}',
            b'{"t":"res","id":999999,"result":1}', b'{"t":"req","id":5,"method":"' + b"m" * 100_000 + b'"}',
        ]
        for data in garbage:
            await conn.peer.transport.send(data)
        for method, params, code in [
            ("no.such.method", {}, "unknown_method"),
            ("sessions.start", {"agent": "pty", "command": ["true"], "cols": -1}, "invalid_params"),
            ("sessions.send", {"id": "s_missing", "text": "x"}, "not_found"),
            ("events.subscribe", {"sub": 1, "since": -5}, "invalid_params"),
            ("pairing.create", {"scopes": ["admin"]}, "forbidden"),
        ]:
            with pytest.raises(RemoteError) as info:
                await conn.call(method, params, timeout=10)
            assert info.value.code == code, (method, info.value.code, info.value.message)
        # The same channel still works.
        info = await conn.call("host.info", timeout=10)
        assert info["name"] == "test-host"
    finally:
        await conn.close()
    assert deployment.host.alive
    assert tether_json(deployment.host_home, "sessions", "list", "--json") == []


async def test_a_retried_command_is_applied_once(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    state = ClientState(client_home)
    conn = await connect_remote(state, state.find_host(None))
    try:
        started = [
            await conn.call("sessions.start", {"command": ["cat"], "cid": "start-1"}, timeout=10) for _ in range(3)
        ]
        assert started[0] == started[1] == started[2]
        sid = started[0]["id"]
        sent = [await conn.call("sessions.send", {"id": sid, "text": "once\n", "cid": "send-1"}) for _ in range(3)]
        assert sent[0] == sent[1] == sent[2]
        page = await conn.call("events.read", {"since": 0, "session": sid})
    finally:
        await conn.close()
    types = [e["type"] for e in page["events"]]
    assert types.count("session.started") == 1 and types.count("session.input") == 1
    assert len(tether_json(deployment.host_home, "sessions", "list", "--json")) == 1
