"""What every ``tether`` command module shares: the command tree's apps, the common options,
and the home and host connection a command works with. The command modules (``main``,
``sessions``, ``ssh``, ``tokens``) import these and never one another."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tether.client import TOKEN_ENV
from tether.errors import UsageError
from tether.home import check_home, resolve_home

if TYPE_CHECKING:
    from tether.client.connection import Connection

app = typer.Typer(
    name="tether",
    help="Drive the AI coding agents on your machines from your phone, end-to-end encrypted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sessions_app = typer.Typer(help="Start, drive and watch sessions on a host.", no_args_is_help=True)
devices_app = typer.Typer(help="The devices paired with a host.", no_args_is_help=True)
config_app = typer.Typer(help="The host's config file ($TETHER_HOME/config.toml).", no_args_is_help=True)
tokens_app = typer.Typer(help="Access tokens for scripts and CI.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")
app.add_typer(devices_app, name="devices")
app.add_typer(config_app, name="config")
app.add_typer(tokens_app, name="tokens")

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="TETHER_HOME", help="tether home directory (default ~/.tether)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
HostOpt = Annotated[
    str | None, typer.Option("--host", help="Which paired host (id or name), when there are several.")
]


def home_dir(home: Path | None) -> Path:
    """The home a command uses, refused before anything is read from it if another user of this
    machine could have changed it (:func:`tether.home.check_home`)."""
    resolved = resolve_home(home)
    check_home(resolved)
    return resolved


def parse_ttl(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise UsageError(f"bad duration {value!r}", hint="e.g. 90s, 10m, 2h or 1d") from None


async def connect_client(home: Path | None, host: str | None) -> Connection:
    """The connection a client command uses: as the token in TETHER_TOKEN when one is given,
    else the local daemon or this home's paired host."""
    from tether.client.connection import connect, connect_token
    from tether.crypto.tokens import parse_token

    token = os.environ.get(TOKEN_ENV)
    if token:
        parsed = parse_token(token)
        if host is not None and host != parsed.host_id:
            raise UsageError("--host does not name the host this token belongs to", hint="drop --host")
        return await connect_token(parsed)
    return await connect(home_dir(home), host)


async def call_host(home: Path | None, host: str | None, method: str, params: dict[str, Any] | None = None) -> Any:
    conn = await connect_client(home, host)
    try:
        return await conn.call(method, params)
    finally:
        await conn.close()


def read_file(path: Path, what: str) -> bytes:
    """A file named on the command line, or a UsageError that says what is wrong with the name."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no {what} file {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an {what} file") from None
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file {path}: {exc.strerror}") from None
