"""Relay nodes of a cluster as real processes, and what the cluster tests watch them with: their
/metrics and /healthz, the SDK's view of why its channels closed, and a session's events followed
through the SDK (tests/cluster)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Proc, free_port, login, remove, short_home, start_host, start_relay, tether, tether_json
from tests.support.redis_server import RedisServer
from tether import Client
from tether.protocol.frames import CloseCode
from tether.relay.link import ChannelClosed


@dataclass
class Node:
    """One ``tether relay --cluster`` process."""

    proc: Proc
    port: int
    home: Path
    node_id: str

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def freeze(self) -> None:
        """SIGSTOP the node process: it reads nothing (Redis's buffers for it fill up)."""
        self.proc.popen.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.alive:
            self.thaw()  # a stopped process does not act on SIGTERM
        self.proc.stop()


def unreachable_url() -> str:
    """An address on loopback that nothing listens on: an advertise URL steering cannot follow."""
    return f"http://127.0.0.1:{free_port()}"


#: every node started by the current test (tests/cluster/conftest.py shows their logs on failure)
STARTED: list[Node] = []


def log_tails(lines: int = 80) -> str:
    """The end of each log of the nodes in :data:`STARTED`, for a failed test's report."""
    parts = []
    for node in STARTED:
        tail = node.proc.log.splitlines()[-lines:]
        parts.append(f"--- {node.node_id} (port {node.port}, pid {node.pid}), last {len(tail)} lines\n"
                     + "\n".join(tail))
    return "\n".join(parts)


def start_node(seeds: list[str], node_id: str, *extra: str, advertise_url: str | None = None) -> Node:
    home = short_home("tn")
    args = ["--cluster", ",".join(seeds), "--node-id", node_id, *extra]
    if advertise_url is not None:
        args += ["--advertise-url", advertise_url]
    try:
        proc, port = start_relay(free_port(), *args, home=home)
    except BaseException:
        remove(home)
        raise
    node = Node(proc, port, home, node_id)
    STARTED.append(node)
    return node


def pair_across(one: Node, two: Node, host_home: Path, client_home: Path) -> str:
    """Pair ``client_home`` with the host of ``host_home`` (connected to node 1) through node 2, as
    a load balancer may send a device: pairing crosses nodes. The host entry's id."""
    link = str(tether_json(host_home, "pair", "--json")["link"])
    assert link.startswith(one.origin)
    result = login(client_home, two.origin + link[len(one.origin):], "--name", "phone", "--json")
    return str(json.loads(result.stdout)["host_id"])


@contextmanager
def running_nodes(
    seeds: list[str], advertise: dict[str, str] | None = None, count: int = 2, extra: tuple[str, ...] = ()
) -> Iterator[list[Node]]:
    """``node-1`` … ``node-<count>`` on ``seeds``, stopped (and their homes removed) at the end;
    ``advertise``: node id → its --advertise-url; ``extra``: more ``tether relay`` arguments."""
    started: list[Node] = []
    try:
        for n in range(1, count + 1):
            node_id = f"node-{n}"
            started.append(start_node(seeds, node_id, *extra, advertise_url=(advertise or {}).get(node_id)))
        yield started
    finally:
        for node in started:
            node.stop()
            remove(node.home)


def metrics(node: Node, timeout: float = 5) -> dict[str, float]:
    with urllib.request.urlopen(f"{node.origin}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in re.findall(r"^(tether_\S+) (\S+)$", text, re.M)}


def healthz(node: Node, timeout: float = 2) -> str:
    with urllib.request.urlopen(f"{node.origin}/healthz", timeout=timeout) as response:
        return str(response.read().decode().strip())


def wait_until(what: str, check: Any, timeout: float = 20, every: float = 0.25) -> Any:
    """Poll ``check()`` until it returns something true (returned), at most ``timeout`` s. Not
    faster: each look at a node is a new connection, and a relay lets 20 a second in from one
    address (over the whole cluster), which the clients under test need too."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


class HealthWatch:
    """Polls the nodes' /healthz from a thread (the test's loop may be busy) and keeps what each
    said, in order, without repeats; a node's trouble lasts seconds, so 4 looks a second see it."""

    def __init__(self, nodes: list[Node], every: float = 0.25) -> None:
        self.nodes = nodes
        self.every = every
        self.seen: dict[str, list[str]] = {node.node_id: [] for node in nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        deadline = time.monotonic() + 10  # until each node answered once
        while not all(self.seen.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # bounded, whatever the test does
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._look()
            self._stop.wait(self.every)
        self._look()  # what they say as the watch ends, whenever the last look was

    def _look(self) -> None:
        for node in self.nodes:
            try:
                state = healthz(node, timeout=5).split(":")[0]
            except (OSError, urllib.error.URLError):
                state = "unanswered"
            said = self.seen[node.node_id]
            if not said or said[-1] != state:
                said.append(state)


@dataclass
class RetryLog:
    """Every error the SDK asked ``is_retryable`` about (``Client.events`` asks after each close)."""

    errors: list[BaseException] = field(default_factory=list)

    def closes(self) -> list[int]:
        return [e.close_code for e in self.errors if isinstance(e, ChannelClosed)]

    def end_to_end_failures(self) -> list[BaseException]:
        """Errors of the end-to-end channel itself (a frame dropped, doubled or reordered on the
        way: Noise's nonces do not match), which a relay must never cause."""
        return [e for e in self.errors if getattr(e, "code", None) == "channel"]

    def assert_resumed_after(self, code: CloseCode) -> None:
        assert int(code) in self.closes(), f"no channel closed with {code.name}: {self.errors!r}"
        assert not self.end_to_end_failures(), f"frames were lost on the way: {self.end_to_end_failures()!r}"


def record_retries(monkeypatch: pytest.MonkeyPatch) -> RetryLog:
    """Have every error the SDK's reconnect loops look at recorded (for the test's fixture)."""
    import tether.client.sdk as sdk
    from tether.client.connection import is_retryable

    log = RetryLog()

    def recording(exc: BaseException) -> bool:
        log.errors.append(exc)
        return is_retryable(exc)

    monkeypatch.setattr(sdk, "is_retryable", recording)  # the name sdk.py calls
    return log


@dataclass
class Deployment:
    """A host on node 1 and a device paired with it through node 2."""

    host: Proc
    host_home: Path
    workspace: Path
    client_home: Path
    host_id: str


@contextmanager
def host_and_device(host_node: Node, device_node: Node) -> Iterator[Deployment]:
    """A host connected to ``host_node``, and a client home paired with it through ``device_node``
    (the pairing crosses nodes); the host is stopped and the homes removed at the end."""
    host_home, workspace, client_home = short_home("th"), short_home("tw"), short_home("tc")
    host: Proc | None = None
    try:
        host = start_host(host_home, host_node.url, workspace)
        link = str(tether_json(host_home, "pair", "--json")["link"])
        assert link.startswith(host_node.origin), link
        result = login(client_home, device_node.origin + link[len(host_node.origin):], "--name", "phone", "--json")
        host_id = str(json.loads(result.stdout)["host_id"])
        yield Deployment(host, host_home, workspace, client_home, host_id)
    finally:
        if host is not None:
            host.stop()
        remove(host_home, workspace, client_home)


def hosts_file(home: Path) -> list[dict[str, Any]]:
    return json.loads((home / "client" / "hosts.json").read_text())["hosts"]  # type: ignore[no-any-return]


# A pty program that prints numbered lines (20 every 50 ms) until a file appears, then its count.
TICKER = """\
import os, sys, time
stop = sys.argv[1]
i = 0
while i < 200_000 and not os.path.exists(stop):
    for _ in range(20):
        i += 1
        sys.stdout.write(f"line-{i}\\n")
    sys.stdout.flush()
    time.sleep(0.05)
sys.stdout.write(f"total-{i}\\n")
sys.stdout.flush()
"""


@asynccontextmanager
async def ticking(deployment: Deployment) -> AsyncIterator[Follower]:
    """A session of :data:`TICKER` on the deployment's host, followed by its device through the
    SDK for the block; then the ticker is told to stop, and its exit awaited."""
    script = deployment.workspace / "ticker.py"
    script.write_text(TICKER)
    stop = deployment.workspace / "stop"
    async with await Client.open(deployment.client_home) as client:
        session_id = await client.start_session(["python3", str(script), str(stop)])
        async with Follower(client, session_id) as follower:
            yield follower
            stop.touch()
            await follower.exit(timeout=30)


class Follower:
    """Follows one session's events through the SDK from the start (``async with``), until the
    session exits; keeps the output and every event's seq."""

    def __init__(self, client: Client, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self.chunks: list[str] = []
        self.seqs: list[int] = []
        self.exited = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Follower:
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _consume(self) -> None:
        async for event in self.client.events(0, session=self.session_id):
            self.seqs.append(event["seq"])
            if event["type"] == "session.output":
                self.chunks.append(event["data"]["data"])
            elif event["type"] == "session.exited":
                self.exited = True
            self._changed.set()
            if self.exited:
                return

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def numbers(self) -> list[int]:
        return [int(n) for n in re.findall(r"line-(\d+)\r?\n", self.text)]

    def total(self) -> int | None:
        match = re.search(r"total-(\d+)\r?\n", self.text)
        return int(match.group(1)) if match else None

    async def until(self, what: str, pred: Any, timeout: float) -> None:
        """Wait until ``pred()`` holds; the follower's own failure is raised here."""
        assert self._task is not None
        async with asyncio.timeout(timeout):
            while not pred():
                if self._task.done():
                    self._task.result()  # raises what ended it
                    if not pred():
                        raise AssertionError(f"the event stream ended before {what}")
                    return
                self._changed.clear()
                waiter = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()

    async def lines(self, count: int, timeout: float = 60) -> None:
        await self.until(f"{count} lines", lambda: len(self.numbers()) >= count, timeout)

    async def exit(self, timeout: float = 60) -> None:
        await self.until("the session's exit", lambda: self.exited, timeout)

    def assert_whole(self, lines: int | None = None) -> None:
        lines = self.total() if lines is None else lines
        assert lines, "the session's last line never arrived"
        numbers = self.numbers()
        missing = sorted(set(range(1, lines + 1)) - set(numbers))[:10]
        assert numbers == list(range(1, lines + 1)), f"every line exactly once, in order (missing {missing})"
        assert self.seqs == sorted(set(self.seqs)), "no event twice, none out of order"


def events_until(home: Path, session_id: str, marker: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The session's events (``tether sessions events``, the CLI) once ``marker`` is in its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = tether(home, "sessions", "events", session_id, "--json").stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        text = "".join(str(e["data"].get("data", "")) for e in events if e["type"] == "session.output")
        if marker in text:
            return events
        time.sleep(0.3)
    raise AssertionError(f"{marker!r} never showed up in the events of {session_id}")


def redis_subscribers_of(redis: RedisServer, pid: int) -> list[int]:
    """The ids (CLIENT LIST) of the shard-channel subscribers that process ``pid`` holds on ``redis``:
    its sockets to Redis's port, matched by their local ports."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
            if match:
                inodes.add(match.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == redis.port:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    with redis.client(decode_responses=True) as r:
        clients = r.client_list()
    return [int(c["id"]) for c in clients
            if int(str(c["addr"]).rsplit(":", 1)[1]) in ports and int(c.get("ssub", 0) or 0) > 0]
