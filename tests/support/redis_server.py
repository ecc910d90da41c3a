"""Real Redis for tests: ``redis-server`` processes on 127.0.0.1, each in a throwaway directory.

``RedisServer`` is one server with persistence off (``--save ''``, ``--appendonly no``): a restart
starts empty, as a Redis that lost its memory. It can be stopped, killed, restarted on the same
port, frozen (SIGSTOP, the whole process: no replies, no timeouts, sockets stay open) and paused
(``CLIENT PAUSE``, Redis's own: it answers nothing but keeps its clock), and reconfigured with
``CONFIG SET``. ``RedisCluster`` is three such servers with ``cluster-enabled yes``, 5,461 slots
each, no replicas.

Both are context managers, and every server still running when the interpreter exits is killed
(atexit), so a failed test leaves no ``redis-server`` behind. Needs the Debian package
``redis-server`` (``scripts/test`` installs it when missing).

The control methods are synchronous and quick (a server starts in about 20 ms); ``pause()`` is
async so that the test's own clients keep running while Redis is frozen.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CLUSTER_SLOTS = 16384

_live: set[RedisServer] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        server.kill()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 (started by the constructor)."""

    def __init__(self, *, port: int | None = None, args: Sequence[str] = (), name: str = "redis") -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"t{name}-", dir="/tmp"))
        self.extra_args = list(args)
        self.popen: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.port = port or 0
        for _attempt in range(5):
            if not port:
                self.port = free_port()
            try:
                self.start()
                return
            except RuntimeError as e:
                # Another process took the free port between free_port() and bind: try another one.
                if port or "Address already in use" not in str(e):
                    self._remove_dir()
                    raise
        self._remove_dir()
        raise RuntimeError(f"{name}: no free port after 5 attempts")

    # -- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    # -- life cycle ------------------------------------------------------------------

    def start(self, timeout: float = 10) -> None:
        """Start the server on ``self.port`` and wait until it answers PING."""
        assert not self.running, f"{self.name} is already running"
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--logfile", "",  # stdout, which goes to redis.log
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.frozen = False
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                _live.discard(self)
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) on start:\n{self.log}")
            if self._answers_ping():
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"{self.name} did not answer PING within {timeout} s:\n{self.log}")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (a clean shutdown) and wait; SIGKILL if it does not exit in time."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(10)
        self.frozen = False
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL (a crash): clients see their connections reset, nothing is saved."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        self.frozen = False
        _live.discard(self)

    def restart(self, *, kill: bool = False, down_for: float = 0.0) -> None:
        """Stop (or kill) the server and start it again on the same port, empty, after ``down_for``
        seconds. Blocks the calling thread for that long; use :meth:`restart_async` to let the
        test's clients run meanwhile."""
        if kill:
            self.kill()
        else:
            self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    async def restart_async(self, *, kill: bool = False, down_for: float = 0.0) -> None:
        if kill:
            self.kill()
        else:
            self.stop()
        await asyncio.sleep(down_for)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._remove_dir()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP: the process stops dead; the kernel still accepts connections and buffers
        writes, but nothing answers until :meth:`thaw`."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    async def pause(self, seconds: float) -> None:
        """Freeze the server for ``seconds`` (SIGSTOP … SIGCONT), awaiting meanwhile. The server
        is thawed even if the awaiting task is cancelled."""
        self.freeze()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.thaw()

    def client_pause(self, seconds: float, mode: str = "ALL") -> None:
        """``CLIENT PAUSE``: Redis itself holds every client's commands (``ALL``) or only writes
        (``WRITE``) for ``seconds``, then resumes by itself. Returns at once."""
        self.execute("CLIENT", "PAUSE", str(int(seconds * 1000)), mode)

    # -- commands --------------------------------------------------------------------

    def client(self, **kwargs: object) -> redis.Redis:
        """A synchronous redis-py client for the test's own checks (short timeouts)."""
        options: dict[str, object] = {"socket_timeout": 5, "socket_connect_timeout": 5, **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]

    def execute(self, *args: str | int | bytes) -> object:
        with self.client() as r:
            return r.execute_command(*args)

    def config_set(self, name: str, value: str | int) -> None:
        """``CONFIG SET name value``, e.g. ``config_set("client-output-buffer-limit",
        "pubsub 64kb 32kb 1")``. It lasts until the server is restarted."""
        self.execute("CONFIG", "SET", name, value)

    def config_get(self, name: str) -> str:
        with self.client(decode_responses=True) as r:
            return str(r.config_get(name)[name])

    def info(self, section: str | None = None) -> dict[str, object]:
        with self.client() as r:
            return dict(r.info(section) if section else r.info())

    # -- internals -------------------------------------------------------------------

    def _signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # NOAUTH: up, with a password
        except OSError:
            return False

    def _remove_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<RedisServer {self.name} {self.url} {'running' if self.running else 'stopped'}>"


class RedisCluster:
    """Three masters with ``cluster-enabled yes`` and the 16,384 slots split between them, no
    replicas; the constructor returns once every node reports ``cluster_state:ok`` and knows the
    other two."""

    def __init__(self, masters: int = 3, *, args: Sequence[str] = (), timeout: float = 20) -> None:
        self.nodes: list[RedisServer] = []
        self.bus_ports: list[int] = []
        try:
            for i in range(masters):
                self.bus_ports.append(free_port())
                # cluster-port (Redis 7): the bus port; the default, port + 10000, may be taken or
                # above 65535 for a port from the ephemeral range.
                node_args = [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "2000",
                    "--cluster-port", str(self.bus_ports[-1]),
                    *args,
                ]  # fmt: skip
                self.nodes.append(RedisServer(args=node_args, name=f"redis-node{i}"))
            self._create(timeout)
        except BaseException:
            self.close()
            raise

    @property
    def seeds(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def _create(self, timeout: float) -> None:
        """What ``redis-cli --cluster create --cluster-replicas 0`` does, without its 1 s polls:
        slots, config epochs, MEET, then wait for the state to converge."""
        n = len(self.nodes)
        bounds = [CLUSTER_SLOTS * i // n for i in range(n + 1)]
        for i, node in enumerate(self.nodes):
            node.execute("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
            node.execute("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            self.nodes[0].execute("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 20) -> None:
        """Until every running node says ``cluster_state:ok`` and knows all the others."""
        deadline = time.monotonic() + timeout
        info = ""
        while time.monotonic() < deadline:
            infos = [self._cluster_info(node) for node in self.nodes if node.running]
            if all(
                i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(self.nodes)) for i in infos
            ):
                return
            info = repr(infos)
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not converge within {timeout} s: {info}")

    def owner(self, key: str) -> RedisServer:
        """The master that holds ``key``'s slot (the others answer MOVED)."""
        for node in self.nodes:
            with node.client() as r:
                try:
                    r.execute_command("EXISTS", key)
                except redis.exceptions.MovedError:
                    continue
                return node
        raise AssertionError(f"no master serves {key}")

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Give ``slot`` to the master ``to``, as a resharding does once the slot's keys are moved
        (``redis-cli --cluster reshard``'s last step: ``CLUSTER SETSLOT slot NODE id``, the new
        owner first). Only for a slot that holds no key: this moves no key."""
        owner_id = to.execute("CLUSTER", "MYID")
        assert isinstance(owner_id, bytes | str)
        for node in [to, *(n for n in self.nodes if n is not to)]:
            assert node.execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0, "the slot holds keys"
            node.execute("CLUSTER", "SETSLOT", slot, "NODE", owner_id)

    @staticmethod
    def _cluster_info(node: RedisServer) -> dict[str, str]:
        with node.client(decode_responses=True) as r:
            text = r.execute_command("CLUSTER", "INFO")
        if isinstance(text, dict):  # a parsed reply
            return {str(k): str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).split() if ":" in line)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[RedisServer]:
        return iter(self.nodes)
