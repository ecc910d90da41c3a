"""``tether ssh``: a host on a remote machine, installed and started over SSH, inheriting this
machine's devices (docs/ssh.md).

``tether ssh [user@]machine`` is short for ``tether ssh connect [user@]machine``; ``list``,
``stop``, ``status`` and ``refresh`` manage the remote hosts started so far.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from tether.cli.common import HomeOpt, JsonOpt, app, home_dir
from tether.cli.output import err, out, print_json, run


class _DefaultConnect(TyperGroup):
    """``tether ssh DEST ...`` runs ``connect``: anything that is not a subcommand is a
    destination (a machine named like a subcommand: ``tether ssh connect list``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["connect", *args]
        return super().parse_args(ctx, args)


ssh_app = typer.Typer(
    cls=_DefaultConnect,
    help="Remote hosts over SSH: `tether ssh user@machine` (short for `tether ssh connect user@machine`) "
    "installs tether there and starts a host that accepts this machine's devices.",
    no_args_is_help=True,
)
app.add_typer(ssh_app, name="ssh")

KnownHostsOpt = Annotated[
    str | None,
    typer.Option(
        "--known-hosts", envvar="TETHER_SSH_KNOWN_HOSTS", help="known_hosts file (default ~/.ssh/known_hosts)."
    ),
]
SshConfigOpt = Annotated[
    str | None,
    typer.Option("--ssh-config", envvar="TETHER_SSH_CONFIG", help="ssh config file (default ~/.ssh/config)."),
]


class RichReporter:
    """One line per step: a spinner while it runs, then ✓ or ✗ with what it found."""

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Any]:
        from rich.markup import escape

        from tether.cli.output import escape_controls
        from tether.sshremote.deploy import _Detail

        handle = _Detail()
        started = time.monotonic()
        try:
            with err.status(f"{escape(escape_controls(title))}…", spinner="dots"):
                yield handle
        except BaseException:
            err.print("[red]✗[/] ", markup=True, end="")
            err.print(title)
            raise
        took = time.monotonic() - started
        detail = f": {handle.detail}" if handle.detail else ""
        err.print("[green]✓[/] ", markup=True, end="")
        err.print(f"{title}{detail}", end="")
        err.print(f" [dim]({took:.1f} s)[/]" if took >= 0.5 else "", markup=True)

    def note(self, text: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] ", markup=True, end="")
        err.print(text)


def _options(known_hosts: str | None, ssh_config: str | None, accept_new: bool = False) -> Any:
    from tether.sshremote.connect import SshOptions

    return SshOptions.resolve(known_hosts=known_hosts, config=ssh_config, accept_new=accept_new)


@ssh_app.command("connect")
def ssh_connect(
    destination: Annotated[str, typer.Argument(help="user@machine, machine, or a Host of your ssh config.")],
    port: Annotated[int | None, typer.Option("-p", "--port", help="SSH port.")] = None,
    identity: Annotated[str | None, typer.Option("-i", "--identity", help="Private key file.")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the remote host shown to devices.")] = None,
    mode: Annotated[
        str,
        typer.Option(help="relay: the remote dials the relay; tunnel: through SSH, held by this machine's host; "
                     "auto: relay if the remote can reach it, else tunnel."),
    ] = "auto",
    workspace: Annotated[
        list[str] | None, typer.Option("--workspace", help="Directory on the remote sessions may use (repeatable).")
    ] = None,
    accept_new: Annotated[
        bool, typer.Option("--accept-new", help="Trust and record the host key of a machine seen for the first time.")
    ] = False,
    wheels: Annotated[
        Path | None,
        typer.Option("--wheels", help="Install from these wheels (tether and its dependencies), no package index."),
    ] = None,
    python: Annotated[str, typer.Option("--python", help="Python on the remote (3.11 or newer).")] = "python3",
    relay: Annotated[
        str | None, typer.Option("--relay", help="Relay URL for the remote (default: this machine's host's).")
    ] = None,
    remote_home: Annotated[str, typer.Option("--remote-home", help="tether home on the remote.")] = "~/.tether",
    enroll_key: Annotated[
        Path | None,
        typer.Option("--enroll-key", help="The relay's enrollment key file, for a relay that admits enrolled "
                     "hosts only (sent to the remote, kept there 0600)."),
    ] = None,
    known_hosts: KnownHostsOpt = None,
    ssh_config: SshConfigOpt = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Install tether on a machine over SSH and start a host there (again: upgrade or reattach)."""
    from tether.sshremote.connect import Target
    from tether.sshremote.deploy import DeployRequest, deploy

    # Absolute, so the daemon that later holds the tunnel or pushes revocations finds the key.
    key = str(Path(identity).expanduser().absolute()) if identity else None
    target = Target.parse(destination, port=port, identity=key)
    req = DeployRequest(
        target=target, options=_options(known_hosts, ssh_config, accept_new), name=name, mode=mode,
        workspaces=list(workspace or []), wheels=wheels, python=python, relay_url=relay, remote_home=remote_home,
        enroll_key=enroll_key,
    )
    record = run(deploy(home_dir(home), req, RichReporter()))
    if as_json:
        print_json({"name": record.name, "host_id": record.host_id, "relay": record.relay_url, "pid": record.pid,
                    "state": record.state})
    else:
        out.print(f"remote host {record.name} ({record.host_id}) runs on {record.destination()}; "
                  "paired devices of this host can use it.")


def _tunnel_state(held: dict[str, dict[str, Any]] | None, name: str) -> dict[str, Any]:
    """What the desktop daemon says of remote ``name``'s tunnel (``held``: None when it is not running)."""
    if held is None:
        return {"state": "not held", "detail": "this machine's host is not running (it holds the tunnels)"}
    return held.get(name) or {"state": "not held", "detail": "stopped"}


@ssh_app.command("list")
def ssh_list(as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Remote hosts started from this machine, their last known state, and each tunnel's state."""
    from tether.sshremote.deploy import held_tunnels
    from tether.sshremote.registry import Registry

    remotes = Registry(home_dir(home)).load()
    held = run(held_tunnels(home_dir(home))) if any(r.mode == "tunnel" for r in remotes) else {}

    if as_json:
        import msgspec

        print_json([
            {**msgspec.to_builtins(r), **({"tunnel": _tunnel_state(held, r.name)} if r.mode == "tunnel" else {})}
            for r in remotes
        ])
        return
    if not remotes:
        out.print("no remote hosts; start one with `tether ssh user@machine`")
    for r in remotes:
        seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated_at))
        pid = f" pid {r.pid}" if r.pid and r.state == "running" else ""
        mode = r.mode
        if r.mode == "tunnel":
            t = _tunnel_state(held, r.name)
            mode += f", tunnel {t['state']}" + (f" ({t['detail']})" if t["state"] != "up" and t["detail"] else "")
        out.print(f"{r.name:<16} {r.host_id}  {r.state}{pid} (as of {seen})  {r.destination()}  {mode}")


@ssh_app.command("status")
def ssh_status(
    name: str, known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Ask a remote host's machine (over SSH) whether its daemon runs and reaches the relay."""
    from tether.sshremote.deploy import held_tunnels, status
    from tether.sshremote.registry import Registry

    daemon = run(status(home_dir(home), _options(known_hosts, ssh_config), name))
    record = Registry(home_dir(home)).get(name)
    tunnel = None
    if record.mode == "tunnel":
        tunnel = _tunnel_state(run(held_tunnels(home_dir(home))), record.name)
    if as_json:
        print_json({**daemon, **({"tunnel": tunnel} if tunnel else {})})
        return
    if not daemon["running"]:
        out.print(f"{name}: not running")
    else:
        relay = "connected to the relay" if daemon["connected"] else "not connected to the relay"
        out.print(f"{name}: running (pid {daemon['pid']}), {relay}")
    if tunnel is not None:
        out.print(f"tunnel: {tunnel['state']}" + (f" ({tunnel['detail']})" if tunnel["detail"] else ""))


@ssh_app.command("stop")
def ssh_stop(
    name: str, known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, home: HomeOpt = None
) -> None:
    """Stop a remote host's daemon (its keys and state stay there; `tether ssh` starts it again)."""
    from tether.sshremote.deploy import stop

    run(stop(home_dir(home), name, _options(known_hosts, ssh_config), RichReporter()))


@ssh_app.command("forget")
def ssh_forget(
    name: str,
    force: Annotated[
        bool, typer.Option("--force", help="Forget it here even if the machine cannot be reached.")
    ] = False,
    known_hosts: KnownHostsOpt = None,
    ssh_config: SshConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Stop a remote host, drop this machine's devices there, and forget it (clients drop it too)."""
    from tether.sshremote.deploy import forget

    run(forget(home_dir(home), name, _options(known_hosts, ssh_config), RichReporter(), force=force))


@ssh_app.command("refresh")
def ssh_refresh(
    names: Annotated[list[str] | None, typer.Argument(help="Remote hosts (default: all).")] = None,
    known_hosts: KnownHostsOpt = None,
    ssh_config: SshConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Send the remote hosts this machine's current devices (after pairing or revoking one)."""
    from tether.sshremote.deploy import refresh

    failed = run(refresh(home_dir(home), _options(known_hosts, ssh_config), RichReporter(), names or None))
    if failed:
        err.print(f"could not reach: {', '.join(failed)}; they keep their previous devices until refreshed")
        raise typer.Exit(1)
