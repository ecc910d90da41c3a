"""``tether tokens ...`` and ``tether audit``: access tokens and the host's audit log.

Both work on the host's own machine (the local socket, every scope) and from a client whose
grant or token holds ``admin``.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli.common import HomeOpt, HostOpt, JsonOpt, app, call_host, connect_client, parse_ttl, tokens_app
from tether.cli.output import err, out, print_json, run
from tether.errors import UsageError

# The CLI asks for at least a minute (the host itself accepts 1 s, for tests and short jobs).
MIN_TTL = 60.0
MAX_TTL = 365 * 86400.0
AUDIT_PAGE = 1000


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def parse_since(value: str, now: float | None = None) -> float:
    """``10m``, ``2h``, ``1d`` (that long ago) or an ISO date/time (local time unless it has a
    zone) as unix time."""
    text = value.strip()
    now = time.time() if now is None else now
    if text and text[-1].lower() in "smhd" and text[:-1].replace(".", "", 1).isdigit():
        return now - parse_ttl(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"bad time {value!r}", hint="use a duration ago (10m, 2h, 1d) or an ISO date (2025-01-31T09:00)"
        ) from None
    return moment.timestamp()


@tokens_app.command("create")
def tokens_create(
    scopes: Annotated[str, typer.Option(help="Scopes of the token, comma-separated (read,prompt,approve,admin).")],
    workspace: Annotated[
        str | None, typer.Option(help="Restrict the token to this directory on the host.")
    ] = None,
    ttl: Annotated[str, typer.Option(help="How long the token lives (1m to 365d).")] = "30d",
    name: Annotated[str | None, typer.Option(help="A name to recognise it by in lists and the audit log.")] = None,
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Create an access token and print it once. Use it with TETHER_TOKEN=... or
    tether.Client.from_token(...)."""
    from tether.protocol.scopes import parse_scopes, scope_list

    grant = scope_list(parse_scopes(scopes))
    seconds = parse_ttl(ttl)
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise UsageError(f"--ttl {ttl} is out of range", hint="a token lives from 1m to 365d")
    if workspace is not None and os.path.isdir(workspace):
        workspace = os.path.abspath(workspace)  # a path typed on the host's own machine
    params: dict[str, Any] = {"scopes": grant, "ttl": seconds, "name": name, "workspace": workspace}
    created = run(call_host(home, host, "tokens.create", params))
    if as_json:
        print_json(created)
        return
    err.print(
        f"token '{created['name']}' ({created['id']}) created; scopes {','.join(created['scopes'])}"
        + (f"; workspace {created['workspace']}" if created.get("workspace") else "")
        + f"; expires {_when(created['expires_at'])}."
    )
    out.print(created["token"])
    err.print("Copy it now: it is shown only this once (the host keeps no copy).")
    err.print("Use it: TETHER_TOKEN=<token> tether sessions list, or tether.Client.from_token(token).")
    err.print(f"Revoke it: tether tokens revoke {created['id']}")


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False, host: HostOpt = None, home: HomeOpt = None) -> None:
    """Tokens of the host, revoked and expired ones included."""
    tokens = run(call_host(home, host, "tokens.list"))
    if as_json:
        print_json(tokens)
        return
    if not tokens:
        out.print("no tokens; create one with `tether tokens create --scopes read`")
    for t in tokens:
        ws = f"  {t['workspace']}" if t.get("workspace") else ""
        out.print(
            f"{t['id']}  {t['name']:<20} {t['status']:<8} {','.join(t['scopes']):<24} "
            f"expires {_when(t['expires_at'])}{ws}"
        )


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (see `tether tokens list`).")],
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Revoke a token: its channels close at once and it can no longer connect."""
    run(call_host(home, host, "tokens.revoke", {"id": token_id}))
    out.print(f"token {token_id} revoked")


def _describe_actor(actor: dict[str, Any]) -> str:
    if actor["kind"] == "local":
        return "local owner"
    return f"{actor['kind']} '{actor['name']}' ({actor['id']})"  # the console escapes the name


async def _audit_entries(home: Path | None, host: str | None, since: float) -> list[dict[str, Any]]:
    conn = await connect_client(home, host)
    entries: list[dict[str, Any]] = []
    after = 0
    try:
        while True:
            page = await conn.call("audit.list", {"since": since, "after": after, "limit": AUDIT_PAGE})
            entries.extend(page["entries"])
            if len(page["entries"]) < AUDIT_PAGE:
                return entries
            after = page["cursor"]
    finally:
        await conn.close()


@app.command()
def audit(
    since: Annotated[
        str | None, typer.Option(help="Only entries since this time: 10m, 2h, 1d ago, or an ISO date.")
    ] = None,
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """The host's audit log: who did what, when, with which result (refusals included)."""
    start = 0.0 if since is None else parse_since(since)
    entries = run(_audit_entries(home, host, start))
    if as_json:
        print_json(entries)
        return
    if not entries:
        out.print("no audit entries" + (" in that period" if since else ""))
    for e in entries:
        ref = e.get("session") or e.get("target") or "-"
        out.print(f"{_when(e['ts'])}  {_describe_actor(e['actor']):<40} {e['method']:<20} {ref:<22} {e['result']}")
