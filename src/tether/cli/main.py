"""The ``tether`` command tree. Every command takes ``--home DIR`` (env ``TETHER_HOME``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tether import __version__
from tether.cli import output
from tether.cli.common import (
    HomeOpt,
    HostOpt,
    JsonOpt,
    app,
    call_host,
    config_app,
    devices_app,
    home_dir,
    parse_ttl,
)
from tether.cli.output import err, out, print_json, run
from tether.cli.secret_input import PAIR_LINK_ENV, read_secret, refuse_pairing_link_argument, refuse_token_option
from tether.errors import TetherError, UsageError
from tether.home import RelayPaths
from tether.protocol.pairing_link import parse_link

if TYPE_CHECKING:
    from tether.relay.cluster.settings import ClusterSettings


def _print_version(value: bool) -> None:
    if value:
        out.print(f"tether {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: Annotated[
        Path | None, typer.Option("--home", help="tether home directory (env TETHER_HOME; default ~/.tether).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print tether's version and exit.", callback=_print_version, is_eager=True)
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Refused: other users of this machine can read command lines. Set TETHER_TOKEN to act as "
            "an access token.",
            show_default=False,
            hidden=True,
        ),
    ] = None,
) -> None:
    output.DEBUG = debug
    if token is not None:
        raise refuse_token_option()
    if home is not None:
        # Accepted before the command too; each command's own --home reads this variable.
        os.environ["TETHER_HOME"] = str(home)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _print_pairing(offer: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json({"link": offer["link"], "expires_at": offer["expires_at"], "scopes": offer.get("scopes", []),
                    "workspace": offer.get("workspace")})
        return
    import segno

    qr = segno.make(offer["link"], error="L")
    qr.terminal(compact=True)
    remaining = max(0, int(offer["expires_at"] - time.time()))
    host_id = parse_link(offer["link"]).host_id
    for line in ("", "Pair a phone or browser: scan the code, or open", "", f"  {offer['link']}", "",
                 f"The page shows this host's id: {host_id} (check that it is the same)."):
        out.print(line)
    out.print(
        f"The link works once and expires in {remaining // 60} min {remaining % 60} s; "
        f"it grants: {', '.join(offer.get('scopes', []))}"
        + (f", in {offer['workspace']} only" if offer.get("workspace") else "")
        + "."
    )
    out.print("On another terminal: tether --home DIR login (and paste the link when asked)")


def _own_relay_tls() -> ssl.SSLContext:
    """TLS for the embedded host dialing its own relay in the same process: the certificate is
    for the public name, not 127.0.0.1, and nothing else is on this path; the content is
    end-to-end encrypted and the relay authenticates the host by its signature anyway."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _warn_public_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"note: the pairing link uses {url}, which only this machine can open. "
            "For a phone, expose the relay over HTTPS (a TLS reverse proxy or tunnel) and pass --public-url: "
            "see docs/deploy.md."
        )
    elif parts.scheme == "http":
        err.print(
            f"warning: {url} is plain HTTP on a non-local address: browsers refuse the crypto the "
            "web client needs there. Put the relay behind HTTPS and pass --public-url (docs/deploy.md)."
        )


# -- processes --------------------------------------------------------------------------


@app.command()
def relay(
    listen: Annotated[str, typer.Option(help="Address to listen on, HOST:PORT.")] = "127.0.0.1:8765",
    public_url: Annotated[str | None, typer.Option(help="The URL devices use to reach this relay.")] = None,
    home: HomeOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    max_frames_per_second: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Frames one connection may send per second (bursts of 2 s worth); over it the relay "
            "stops reading that connection. Default 100000.",
        ),
    ] = None,
    channel_queue_bytes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Bytes queued towards a slow receiver on one channel before that channel is closed "
            "with TOO_SLOW. Default 1 MiB.",
        ),
    ] = None,
    connection_queue_bytes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Bytes queued towards one connection in all before it is closed. Default 8 MiB.",
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS/WSS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    enroll_key: Annotated[
        Path | None,
        typer.Option(
            help="Admit only hosts that hold this enrollment key (a file: copy it to each host and run "
            "`tether host --enroll-key FILE`). Devices need nothing. Without it any host may register.",
        ),
    ] = None,
    create_enroll_key: Annotated[
        bool, typer.Option(help="Create the --enroll-key file with a new random key if it does not exist.")
    ] = False,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Another origin (https://name[:port]) whose pages may open WebSockets here, besides the "
            "relay's own (its --public-url, or the Host it was reached at when there is none). Repeatable.",
        ),
    ] = None,
    max_connections_per_ip: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Connections at once from one address (IPv6: one /64); over it HTTP 429. 0: no limit. "
            "Default 256.",
        ),
    ] = None,
    connections_per_ip_per_second: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="New connections per second from one address (bursts of 256); over it HTTP 429. "
            "0: no limit. Default 20.",
        ),
    ] = None,
    max_connections_per_device: Annotated[
        int | None,
        typer.Option(min=0, help="Connections at once with one device key. 0: no limit. Default 8."),
    ] = None,
    max_channels_per_device: Annotated[
        int | None,
        typer.Option(min=0, help="Channels open at once with one device key, over all its connections. "
                     "0: no limit. Default 256."),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(min=0, help="Connections at once in all; over it HTTP 503. 0: no limit. Default: the "
                     "open-files limit (raised to its hard limit at start) less max(64, a tenth)."),
    ] = None,
    exempt_loopback: Annotated[
        bool,
        typer.Option(
            help="Do not apply the per-address limits to 127.0.0.0/8 and ::1 (benchmarks on one machine). "
            "Never on a relay that a local proxy exposes: use --trust-forwarded-for there.",
        ),
    ] = False,
    trust_forwarded_for: Annotated[
        bool,
        typer.Option(
            help="Behind a reverse proxy on this machine: count a connection from loopback against the "
            "last X-Forwarded-For address instead of the proxy. Only when the port is reachable from "
            "loopback alone (--listen 127.0.0.1:PORT).",
        ),
    ] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="A network (CIDR) of reverse proxies on other machines, e.g. a cluster's load balancer: "
            "their connections are counted against the last X-Forwarded-For address. Repeatable. Only "
            "networks no client can send from.",
        ),
    ] = None,
    handshake_timeout: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds a connection has to finish its HTTP upgrade. Default 10."),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds before a device connection with no channel and no watched host that sends "
            "nothing is closed. 0: never. Default 300.",
        ),
    ] = None,
    mailbox: Annotated[
        bool,
        typer.Option(help="Hold sealed snapshots and queued prompts for hosts that are away (in HOME/relay/"
                     "mailbox.db; the relay cannot read them)."),
    ] = True,
    mailbox_host_bytes: Annotated[
        int | None,
        typer.Option(min=65_536, help="Bytes the mailbox holds for one host; its oldest snapshots make room. "
                     "Default 4 MiB."),
    ] = None,
    cluster: Annotated[
        list[str] | None,
        typer.Option(help="Be one node of a cluster that shares Redis at this URL: redis://[user:pass@]HOST:PORT"
                     "[/db] or rediss://; for Redis Cluster, one seed or several (repeat, or comma-separated). "
                     "See docs/cluster.md."),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(help="This node's name in the cluster (default: the machine's name and the port)."),
    ] = None,
    advertise_url: Annotated[
        str | None,
        typer.Option(help="The URL clients reach this very node at, behind any load balancer "
                     "(e.g. wss://node-1.example.com; default: --public-url, else the listen address)."),
    ] = None,
) -> None:
    """Run a relay: hosts and devices dial out to it; it routes their encrypted channels, and
    serves the web client at / ."""
    from tether.relay.collector import collect_less_often
    from tether.relay.enrollment import create_enroll_key as make_key
    from tether.relay.enrollment import load_enroll_key
    from tether.relay.listen import parse_listen, tls_context
    from tether.relay.mailbox import Mailbox, MailboxLimits
    from tether.relay.origin import normalize_origin
    from tether.relay.server import RelayLimits, RelayServer, default_static_dir

    if (node_id or advertise_url) and not cluster:
        raise UsageError("--node-id and --advertise-url are for a cluster node", hint="add --cluster redis://HOST:PORT")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = tls_context(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    if create_enroll_key and enroll_key is None:
        raise UsageError("--create-enroll-key needs --enroll-key FILE", hint="e.g. --enroll-key relay.key")
    key: bytes | None = None
    if enroll_key is not None:
        if create_enroll_key and not enroll_key.exists():
            make_key(enroll_key)
            err.print(f"created enrollment key {enroll_key}: copy it to each host and run "
                      f"`tether host --enroll-key FILE`")
        key = load_enroll_key(enroll_key)  # refused in a directory other users can write to
    origins = tuple(allow_origin or ())
    for origin in origins:
        if normalize_origin(origin) is None:
            raise UsageError(f"--allow-origin {origin!r} is not an origin", hint="e.g. https://tether.example.com")
    if exempt_loopback and trust_forwarded_for:
        raise UsageError("--exempt-loopback and --trust-forwarded-for exclude each other",
                         hint="behind a local proxy use --trust-forwarded-for alone")

    output.setup_logging(verbose)
    host, port = parse_listen(listen)
    knobs: dict[str, Any] = {}
    if max_frames_per_second is not None:
        knobs["frames_per_second"] = max_frames_per_second
        knobs["frames_burst"] = max(1, int(2 * max_frames_per_second))
    if channel_queue_bytes is not None:
        knobs["channel_queue_bytes"] = channel_queue_bytes
    if connection_queue_bytes is not None:
        knobs["connection_queue_bytes"] = connection_queue_bytes
    if max_connections_per_ip is not None:
        knobs["max_connections_per_ip"] = max_connections_per_ip
    if connections_per_ip_per_second is not None:
        knobs["connections_per_ip_per_second"] = connections_per_ip_per_second
    if max_connections_per_device is not None:
        knobs["max_connections_per_device"] = max_connections_per_device
    if max_channels_per_device is not None:
        knobs["max_channels_per_device"] = max_channels_per_device
    if max_connections is not None:
        knobs["max_connections"] = max_connections
    if handshake_timeout is not None:
        knobs["handshake_timeout"] = handshake_timeout
    if idle_timeout is not None:
        knobs["idle_timeout"] = idle_timeout or None
    if exempt_loopback:
        knobs["exempt_loopback"] = True
    if trust_forwarded_for:
        knobs["trust_forwarded_for"] = True
    if trusted_proxy:
        knobs["trusted_proxies"] = tuple(_network(net) for net in trusted_proxy)
    limits = RelayLimits(**knobs)
    held = MailboxLimits(**({"host_bytes": mailbox_host_bytes} if mailbox_host_bytes else {}))
    settings = _cluster_settings(cluster, node_id, advertise_url, public_url, host, port, tls is not None)
    if settings is not None and mailbox:
        # a host away from every node is not one node's to answer for: the mailbox is the
        # cluster's, in Redis (cluster/mailbox.py), not a node's SQLite file
        settings = dataclasses.replace(settings, mailbox=held)
    mailbox_path = RelayPaths(home_dir(home)).mailbox if mailbox and settings is None else None

    async def main() -> None:
        box = await Mailbox.open(mailbox_path, held) if mailbox_path is not None else None
        server = RelayServer(
            limits=limits, public_url=public_url, static_dir=default_static_dir(), tls=tls,
            enroll_key=key, allowed_origins=origins, mailbox=box, cluster=settings,
        )
        try:
            try:
                bound = await server.start(host, port)
            except OSError as exc:
                raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                 hint="pick another port with --listen HOST:PORT, or stop what holds it") from None
            collect_less_often()
            scheme = "https" if tls else "http"
            err.print(f"relay listening on {host}:{bound} (health: {scheme}://{host}:{bound}/healthz)")
            if key is not None:
                err.print("admitting enrolled hosts only (--enroll-key)")
            if mailbox_path is not None:
                err.print(f"mailbox in {mailbox_path}")
            elif settings is not None and settings.mailbox is not None:
                err.print("mailbox in the cluster's Redis")
            if settings is not None:
                err.print(f"cluster node {settings.node_id}, reached at {settings.advertise_url}")
            await _wait_for_signal()
        finally:
            await server.close()
            if box is not None:
                await box.close()

    run(main())


def _network(text: str) -> str:
    """A ``--trusted-proxy`` network, checked (its canonical form)."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise UsageError(f"--trusted-proxy {text!r} is not a network", hint="e.g. 10.0.0.0/24 or 10.0.0.5/32") from None


def _cluster_settings(urls: list[str] | None, node_id: str | None, advertise_url: str | None,
                      public_url: str | None, host: str, port: int, tls: bool) -> ClusterSettings | None:
    """``--cluster``, ``--node-id`` and ``--advertise-url``, checked; None without ``--cluster``."""
    import importlib.util
    import socket

    from tether.relay.cluster.records import BusError, check_node_id
    from tether.relay.cluster.settings import ClusterSettings, parse_seeds

    if not urls:
        return None
    if importlib.util.find_spec("redis") is None:
        raise UsageError("a cluster node needs the redis library, which is not installed",
                         hint="pip install 'tether[cluster]'")
    seeds = parse_seeds(urls)
    if advertise_url is None:
        if public_url is None and (port == 0 or host in ("0.0.0.0", "::")):
            raise UsageError("a cluster node needs an address its clients reach it at",
                             hint="pass --advertise-url wss://node-1.example.com (or --public-url)")
        shown = f"[{host}]" if ":" in host else host
        advertise_url = public_url or f"{'https' if tls else 'http'}://{shown}:{port}"
    try:
        node = check_node_id(node_id or f"{socket.gethostname()}-{port}")
    except BusError as exc:
        raise UsageError(f"bad --node-id: {exc.message}") from None
    return ClusterSettings(seeds, node, advertise_url)


host_app = typer.Typer(
    help="Run the host daemon (`tether host --relay URL`), or manage its keys.", invoke_without_command=True
)
app.add_typer(host_app, name="host")


@host_app.callback()
def host_cmd(
    ctx: typer.Context,
    relay: Annotated[
        str | None, typer.Option("--relay", help="Relay URL (ws://, wss://, http:// or https://).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name shown to devices (default: hostname).")] = None,
    workspace: Annotated[
        list[Path] | None, typer.Option("--workspace", help="Directory sessions may use (repeatable).")
    ] = None,
    home: HomeOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    enroll_key: Annotated[
        Path | None,
        typer.Option(
            "--enroll-key",
            help="The relay's enrollment key file, for a relay that admits enrolled hosts only "
            "(`tether relay --enroll-key`).",
        ),
    ] = None,
) -> None:
    """Run the host daemon in the foreground (logs to stderr)."""
    if ctx.invoked_subcommand is not None:
        return
    if relay is None:
        raise UsageError("tether host needs --relay URL", hint="e.g. tether host --relay wss://relay.example.com")
    from tether.host.daemon import HostDaemon
    from tether.relay.enrollment import load_enroll_key
    from tether.relay.link import websocket_url
    from tether.sshremote.hooks import DesktopRemotes

    output.setup_logging(verbose)
    websocket_url(relay)  # validates the URL before anything starts
    key = load_enroll_key(enroll_key) if enroll_key is not None else None

    async def main() -> None:
        daemon = HostDaemon(home_dir(home), relay_url=relay, name=name, workspaces=workspace, enroll_key=key,
                            remotes=DesktopRemotes(home_dir(home)))
        await daemon.start()
        try:
            await _wait_for_signal()
        finally:
            await daemon.stop()

    run(main())


@host_app.command("rotate-keys")
def host_rotate_keys(
    grace: Annotated[
        str, typer.Option(help="How long the old key still works, for clients that are away (e.g. 7d).")
    ] = "7d",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Rotate the host's end-to-end key; connected clients learn the new one at once, others on
    their next connection within the grace period."""
    from tether.client.connection import connect_local

    seconds = parse_ttl(grace)

    async def main() -> dict[str, Any]:
        conn = await connect_local(home_dir(home))
        try:
            result: dict[str, Any] = await conn.call("host.rotate_keys", {"grace": seconds})
            return result
        finally:
            await conn.close()

    result = run(main())
    if as_json:
        print_json(result)
    else:
        out.print(f"new host key {result['static_key']}; the old one is accepted for {grace} more")


@app.command()
def up(
    listen: Annotated[str, typer.Option(help="Address for the embedded relay, HOST:PORT.")] = "127.0.0.1:8765",
    workspace: Annotated[
        list[Path] | None, typer.Option("--workspace", help="Directory sessions may use (repeatable).")
    ] = None,
    public_url: Annotated[str | None, typer.Option(help="The URL phones use to reach this relay.")] = None,
    name: Annotated[str | None, typer.Option(help="Host name shown to devices.")] = None,
    scopes: Annotated[str, typer.Option(help="Scopes granted by the printed pairing link.")] = "read,prompt,approve",
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS/WSS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    home: HomeOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Relay and host in one process, with a pairing QR code. Ctrl-C stops."""
    from tether.host.daemon import HostDaemon
    from tether.protocol.scopes import parse_scopes
    from tether.relay.listen import parse_listen, tls_context
    from tether.relay.mailbox import Mailbox
    from tether.relay.server import RelayServer, default_static_dir
    from tether.sshremote.hooks import DesktopRemotes

    output.setup_logging(verbose)
    host, port = parse_listen(listen)
    grant = parse_scopes(scopes)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = tls_context(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None

    async def main() -> None:
        box = await Mailbox.open(RelayPaths(home_dir(home)).mailbox)
        server = RelayServer(public_url=public_url, static_dir=default_static_dir(), tls=tls, mailbox=box)
        bound = await server.start(host, port)
        shown_host = f"[{host}]" if ":" in host else host
        scheme = "https" if tls else "http"
        url = public_url or f"{scheme}://{shown_host}:{bound}"
        daemon = HostDaemon(
            home_dir(home), relay_url=f"{'wss' if tls else 'ws'}://{shown_host}:{bound}", name=name,
            workspaces=workspace, public_url=url, relay_tls=_own_relay_tls() if tls else None,
            remotes=DesktopRemotes(home_dir(home)),
        )
        try:
            await daemon.start()
            async with asyncio.timeout(10):
                await daemon.relay_connected.wait()
            _print_pairing(await daemon.create_pairing_offer(grant, 600), as_json=False)
            _warn_public_url(url)
            err.print("tether is up. Ctrl-C to stop.")
            await _wait_for_signal()
        finally:
            with contextlib.suppress(AttributeError):
                await daemon.stop()
            await server.close()
            await box.close()
            err.print("stopped.")

    run(main())


# -- pairing ----------------------------------------------------------------------------


@app.command()
def pair(
    scopes: Annotated[str, typer.Option(help="Scopes to grant, comma-separated.")] = "read,prompt,approve",
    ttl: Annotated[str, typer.Option(help="How long the link stays valid (e.g. 10m).")] = "10m",
    workspace: Annotated[
        str | None,
        typer.Option(help="Restrict the device to this workspace (a directory inside the host's workspaces)."),
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Make a one-time pairing link (and QR code) on the running host."""
    from tether.client.connection import connect_local
    from tether.protocol.scopes import parse_scopes, scope_list

    grant = scope_list(parse_scopes(scopes))
    seconds = parse_ttl(ttl)
    params: dict[str, Any] = {"scopes": grant, "ttl": seconds}
    if workspace is not None:
        # Absolute here (the host resolves it again and refuses it outside its workspaces).
        params["workspace"] = str(Path(workspace).expanduser().absolute())

    async def main() -> dict[str, Any]:
        conn = await connect_local(home_dir(home))
        try:
            result: dict[str, Any] = await conn.call("pairing.create", params)
            return result
        finally:
            await conn.close()

    _print_pairing(run(main()), as_json=as_json)


@app.command()
def login(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[-]",
            help=f"`-`: read the link from stdin. Without it: ${PAIR_LINK_ENV} if set, else stdin (a prompt that "
            "does not echo on a terminal). Never the link itself: other users can read command lines.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for this device.")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Pair this CLI with a host, as a device: paste the link `tether pair` printed when asked,
    or pipe it in (`tether login - < FILE`)."""
    from tether.client.pairing import login as do_login

    if source not in (None, "-"):
        raise refuse_pairing_link_argument()
    link = read_secret("pairing link", PAIR_LINK_ENV, from_stdin=source == "-")
    paired = run(do_login(home_dir(home), link, name))
    if as_json:
        print_json({"host_id": paired.host_id, "name": paired.name, "scopes": paired.scopes})
    else:
        out.print(f"paired with host {paired.name} ({paired.host_id}); scopes: {', '.join(paired.scopes)}")


# -- hosts and status -------------------------------------------------------------------


async def _client_hosts(home: Path) -> list[dict[str, Any]]:
    from tether.client.sdk import Client

    return [
        {"id": h.id, "name": h.name, "relay": h.relay_url, "online": h.online, "scopes": h.scopes,
         "linked_from": h.linked_from}
        for h in await Client(home).hosts()
    ]


def _print_hosts(hosts: list[dict[str, Any]]) -> None:
    if not hosts:
        out.print("no paired hosts; pair with `tether login` (it asks for the link)")
    names = {h["id"]: h["name"] for h in hosts}
    for h in hosts:
        state = "online" if h["online"] else "offline"
        via = f"  (via {names.get(h['linked_from'], h['linked_from'])})" if h.get("linked_from") else ""
        out.print(f"{h['id']}  {h['name']:<20} {state:<8} {h['relay']}{via}")


@app.command()
def hosts(as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """The hosts this client is paired with, and whether each is online."""
    result = run(_client_hosts(home_dir(home)))
    if as_json:
        print_json(result)
    else:
        _print_hosts(result)


@app.command()
def status(as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """On a host: its id, name, relay and connection. On a client: its hosts."""
    from tether.client.connection import connect_local, local_daemon_running

    h = home_dir(home)

    async def main() -> dict[str, Any]:
        result: dict[str, Any] = {}
        if local_daemon_running(h):
            conn = await connect_local(h)
            try:
                info = await conn.call("host.info")
            finally:
                await conn.close()
            result["host"] = {k: info[k] for k in ("id", "name", "relay", "connected", "workspaces", "version")}
        result["hosts"] = await _client_hosts(h)
        return result

    result = run(main())
    if as_json:
        print_json(result)
        return
    if "host" in result:
        host = result["host"]
        state = "connected" if host["connected"] else "not connected"
        out.print(f"host {host['name']} ({host['id']}): relay {host['relay']} — {state}")
        out.print(f"  workspaces: {', '.join(host['workspaces'])}")
    if result["hosts"] or "host" not in result:
        _print_hosts(result["hosts"])


# -- devices ----------------------------------------------------------------------------


@devices_app.command("list")
def devices_list(as_json: JsonOpt = False, host: HostOpt = None, home: HomeOpt = None) -> None:
    """Devices paired with the host."""
    devices = run(call_host(home, host, "devices.list"))
    if as_json:
        print_json(devices)
        return
    if not devices:
        out.print("no paired devices; make a link with `tether pair`")
    for d in devices:
        state = "revoked" if d.get("revoked") else "active"
        out.print(f"{d['id']}  {d['name']:<24} {state:<8} {','.join(d['scopes']):<24} {_push_state(d.get('push'))}")


def _push_state(push: dict[str, Any] | None) -> str:
    """A device's Web Push as `devices list` says it."""
    if not push:
        return "push: off"
    if push["state"] == "gone":
        return "push: gone (the push service dropped the subscription)"
    if not push.get("last_result"):
        return "push: on, nothing sent yet"
    ago = int(time.time() - push["last_at"])
    return f"push: {push['last_result']} {ago} s ago, {push['sent']} delivered"


@devices_app.command("rename")
def devices_rename(device_id: str, name: str, host: HostOpt = None, home: HomeOpt = None) -> None:
    """Rename a device."""
    run(call_host(home, host, "devices.rename", {"id": device_id, "name": name}))
    out.print(f"device {device_id} renamed to {name}")


@devices_app.command("revoke")
def devices_revoke(device_id: str, host: HostOpt = None, home: HomeOpt = None) -> None:
    """Revoke a device: its channels close at once and it can no longer connect."""
    run(call_host(home, host, "devices.revoke", {"id": device_id}))
    out.print(f"device {device_id} revoked")


@config_app.command("show")
def config_show(as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Show the host's config as loaded (secrets redacted)."""
    from tether.host.config import load_config

    shown = load_config(home_dir(home)).redacted()
    if as_json:
        print_json(shown)
        return
    out.print(f"file: {shown['file'] or '(none: defaults)'}")
    out.print(f"host: name={shown['host']['name']} workspaces={', '.join(shown['host']['workspaces']) or '-'}")
    for name, agent in shown["agents"].items():
        settings = " ".join(f"{k}={v}" for k, v in agent.items())
        out.print(f"agent {name}: {settings}")


def main() -> None:
    from tether.cli import sessions, ssh, tokens  # noqa: F401  (register their commands)

    try:
        app()
    except TetherError as exc:  # raised outside `run`, e.g. while checking an option
        if output.DEBUG:
            raise
        raise SystemExit(output.report(exc)) from None
