"""What the desktop host daemon calls so its remote hosts follow its devices and keep their tunnels.

:class:`DesktopRemotes` is the daemon's :class:`~tether.host.remotes.RemoteHosts`. After
``HostDaemon.revoke_device`` (and the end of a pairing) the daemon calls its ``refresh``, which
runs :func:`refresh_remotes` with the daemon's identity and name: every remote host started
with ``tether ssh`` gets a new signed bundle over SSH, and its daemon (which polls the bundle file)
drops a revoked device within a second and closes its channels. A remote that cannot be reached
keeps its previous bundle until the next ``tether ssh refresh`` or ``tether ssh``; the names are
logged and returned.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from tether.crypto.keys import Identity
from tether.sshremote.keeper import TunnelKeeper

log = logging.getLogger("tether.sshremote")


async def refresh_remotes(home: Path, *, identity: Identity | None = None, name: str | None = None) -> list[str]:
    """Re-push the device bundle to every remote host of this home. Never raises: a revocation
    on the desktop must not fail because a remote is down. Returns the remotes not reached."""
    from tether.sshremote.connect import SshOptions
    from tether.sshremote.deploy import Desktop, QuietReporter, refresh
    from tether.sshremote.registry import Registry

    try:
        if not Registry(home).load():
            return []
        desktop = None
        if identity is not None:
            desktop = Desktop(identity, name or socket.gethostname(), None, home)
        failed = await refresh(home, SshOptions.resolve(), QuietReporter(), desktop=desktop)
    except Exception:
        log.exception("could not refresh the remote hosts' devices")
        return ["*"]
    if failed:
        log.warning("remote hosts not reached (they keep their previous devices until `tether ssh refresh`): %s",
                    ", ".join(failed))
    return failed


class DesktopRemotes(TunnelKeeper):
    """The remote hosts of a desktop daemon's home: the tunnels it holds and the devices it pushes."""

    def host_ids(self) -> set[str]:
        return {r.host_id for r in self.registry.load()}

    async def refresh(self, identity: Identity, name: str) -> list[str]:
        return await refresh_remotes(self.home, identity=identity, name=name)
