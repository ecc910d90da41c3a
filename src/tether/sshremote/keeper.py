"""The desktop host daemon's tunnels: one per ``--mode tunnel`` remote host of its home.

``<home>/host/remotes.json`` says which remotes want a tunnel (mode ``tunnel``, not stopped);
the keeper re-reads it when it changes (``tether ssh`` and ``tether ssh stop`` write it) and
holds one SSH connection per remote with :func:`tunnel.keep_up`, so a tunnel outlives the
command that made it and comes back with the daemon. ``tether ssh --mode tunnel`` asks for the
port with :meth:`TunnelKeeper.hold` (the local method ``remotes.tunnel``) before it starts the
remote daemon on it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tether.errors import TetherError, UsageError
from tether.sshremote.registry import Registry, RemoteRecord

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger("tether.sshremote.keeper")
POLL_SECONDS = 1.0
HOLD_TIMEOUT = 60.0


class _Held:
    def __init__(self, record: RemoteRecord, task: asyncio.Task[None]) -> None:
        self.record = record
        self.task = task
        self.listening = asyncio.Event()  # set once the remote listens (its port: record.tunnel_port)
        self.state = "connecting"  # "up", "connecting" or "failed" (then ``detail`` says why)
        self.detail = ""

    def describe(self) -> dict[str, object]:
        return {"name": self.record.name, "state": self.state, "detail": self.detail, "port": self.record.tunnel_port}


class TunnelKeeper:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.registry = Registry(home)
        self._held: dict[str, _Held] = {}
        self._stamp: tuple[float, int] | None = None

    async def run(self) -> None:
        """Follow the registry until cancelled; then end every tunnel."""
        try:
            while True:
                self.reconcile()
                await asyncio.sleep(POLL_SECONDS)
        finally:
            tasks = [held.task for held in self._held.values()]
            for task in tasks:
                task.cancel()
            # Their SSH connections close before the daemon goes on stopping.
            await asyncio.gather(*tasks, return_exceptions=True)

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = self.registry.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def reconcile(self, *, force: bool = False) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        try:
            wanted = {r.name: r for r in self.registry.load() if r.mode == "tunnel" and r.state != "stopped"}
        except TetherError as exc:
            log.warning("tunnels: %s", exc.message)
            return
        for name, held in list(self._held.items()):
            record = wanted.get(name)
            if record is None or record.ssh_place() != held.record.ssh_place():
                held.task.cancel()
                del self._held[name]
                if record is None:
                    log.info("tunnel %s: closed (the remote host was stopped or removed)", name)
        for name, record in wanted.items():
            if name in self._held:
                self._held[name].record = record
            else:
                task = asyncio.create_task(self._hold(name), name=f"tether-tunnel-{name}")
                task.add_done_callback(lambda t, name=name: self._ended(name, t))  # type: ignore[misc]
                self._held[name] = _Held(record, task)

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        """A tunnel task that failed (a bug, not a lost connection: those are retried inside it)
        is logged and started again at the next look at the registry."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("tunnel %s: %s", name, task.exception(), exc_info=task.exception())
        held = self._held.get(name)
        if held is not None and held.task is task:
            del self._held[name]
            self._stamp = None

    async def hold(self, name: str) -> int:
        """Make sure the tunnel of remote ``name`` is up; its port on the remote's loopback."""
        self.reconcile(force=True)
        held = self._held.get(name)
        if held is None:
            raise UsageError(f"no tunnel-mode remote host named {name!r}", hint="see `tether ssh list`")
        try:
            async with asyncio.timeout(HOLD_TIMEOUT):
                await held.listening.wait()
                assert held.record.tunnel_port is not None
                return held.record.tunnel_port
        except TimeoutError:
            raise TetherError(
                f"the tunnel to {name} did not come up in {HOLD_TIMEOUT:.0f} s ({held.detail or 'no answer'})",
                hint="check that this machine reaches it with `ssh`; the host keeps trying",
                code="unavailable",
            ) from None

    def tunnels(self) -> list[dict[str, object]]:
        """Each tunnel held now: its remote's name, state, what last happened, and its port."""
        self.reconcile()
        return [held.describe() for held in self._held.values()]

    async def _hold(self, name: str) -> None:
        from tether.sshremote import tunnel
        from tether.sshremote.connect import SshOptions, connect
        from tether.sshremote.deploy import target_of

        held = self._held[name]
        first = held.record
        forwarder = tunnel.Forwarder(tunnel.RelayAddress.parse(first.relay_url))
        options = SshOptions.resolve().saved_with(first.known_hosts, first.ssh_config)

        async def dial() -> asyncssh.SSHClientConnection:
            return await connect(target_of(held.record), options)

        async def on_port(conn: asyncssh.SSHClientConnection, port: int) -> None:
            record = held.record
            if record.state == "running" and record.tunnel_port is not None:
                # Each time the tunnel is back, its host runs on it: started again after the
                # machine rebooted, restarted on a new port if another program took the old one.
                await _ensure_running(conn, record, tunnel.RelayAddress.parse(record.relay_url).remote_url(port))
            if record.tunnel_port != port:
                self.registry.set_tunnel_port(name, port)
                record.tunnel_port = port
            held.listening.set()

        def say(state: str, text: str) -> None:
            held.state, held.detail = state, text
            log.info("tunnel %s: %s", name, text)

        await tunnel.keep_up(dial, forwarder, first.tunnel_port, on_port, say)


async def _ensure_running(conn: asyncssh.SSHClientConnection, record: RemoteRecord, relay_url: str) -> None:
    """The remote daemon runs on ``relay_url`` (left alone when it already does)."""
    from tether.sshremote.deploy import remote_call, start_args

    started = await remote_call(conn, record.remote_home, "start", *start_args(relay_url, record))
    if started["action"] != "running":
        log.info("tunnel %s: its host was %s on %s (pid %s)", record.name, started["action"], relay_url,
                 started["pid"])
