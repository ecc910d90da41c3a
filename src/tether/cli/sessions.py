"""``tether sessions ...``: the same commands against the local daemon or a host via the relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tether.cli.common import HomeOpt, HostOpt, JsonOpt, home_dir, read_file, sessions_app
from tether.cli.output import escape_controls, out, print_json, run
from tether.errors import UsageError

DETACH = b"\x1d"  # Ctrl-]
T = TypeVar("T")


def _client(home: Path | None, host: str | None) -> Any:
    from tether.client.sdk import Client

    return Client(home_dir(home), host)


def with_client(home: Path | None, host: str | None, call: Callable[[Any], Awaitable[T]]) -> T:
    """Run one SDK call with a client of this home and host, closed afterwards."""

    async def main() -> T:
        client = _client(home, host)
        try:
            return await call(client)
        finally:
            await client.close()

    return run(main())


QueueOpt = Annotated[
    bool,
    typer.Option("--queue", help="The host is away: leave it at the relay, sealed for the host, which applies it "
                 "once when it is back (its outcome then shows in `tether sessions events ID`)."),
]


@sessions_app.command("list")
def sessions_list(
    as_json: JsonOpt = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="What the host last left at the relay for this device (when it is away).")
    ] = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Sessions on the host, newest last."""
    if offline:
        _list_offline(as_json, host, home)
        return
    sessions: list[dict[str, Any]] = with_client(home, host, lambda client: client.sessions())
    if as_json:
        print_json(sessions)
        return
    if not sessions:
        out.print("no sessions; start one with `tether sessions start -- bash`")
    for s in sessions:
        command = " ".join(s.get("command") or [])
        out.print(f"{s['id']}  {s['status']:<10} {s['agent']:<6} {s['workspace']}  {command}")


def _list_offline(as_json: bool, host: str | None, home: Path | None) -> None:
    held = with_client(home, host, lambda client: client.offline_snapshot())
    if held is None:
        if as_json:
            print_json(None)
            return
        raise UsageError("the host left nothing at the relay for this device",
                         hint="it does once it has run with a relay that keeps a mailbox and this device paired")
    _, snapshot = held
    if as_json:
        print_json({"host_id": snapshot.host_id, "host_name": snapshot.host_name, "taken_at": snapshot.taken_at,
                    "sessions": snapshot.sessions, "events": snapshot.events, "truncated": snapshot.truncated})
        return
    out.print(f"{snapshot.host_name}, as it reported {_age(time.time() - snapshot.taken_at)} ago:")
    for s in snapshot.sessions:
        waiting = len(s.get("approvals") or [])
        note = f"  ({waiting} waiting for an answer)" if waiting else ""
        out.print(f"{s['id']}  {s['status']:<10} {s['agent']:<6} {s['title']}{note}")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _queued(home: Path | None, host: str | None, method: str, params: dict[str, Any], as_json: bool) -> None:
    cid: str = with_client(home, host, lambda client: client.queue(method, params))
    if as_json:
        print_json({"queued": cid})
    else:
        out.print(f"queued at the relay ({cid}): the host applies it when it is back; "
                  f"see `tether sessions events {params['id']}`")


@sessions_app.command("start")
def sessions_start(
    command: Annotated[
        list[str] | None, typer.Argument(help="pty: the command to run (after --). Agents: the prompt.")
    ] = None,
    agent: Annotated[str, typer.Option(help="Agent: pty, builtin, codex or claude.")] = "pty",
    workspace: Annotated[str | None, typer.Option(help="Directory on the host to run in.")] = None,
    approval: Annotated[
        str | None, typer.Option(help="Agents: untrusted|on-request|never (only stricter than the host's).")
    ] = None,
    sandbox: Annotated[
        str | None, typer.Option(help="Agents: read-only|workspace-write|full-access (only stricter).")
    ] = None,
    thread: Annotated[str | None, typer.Option(help="codex: adopt this thread (see `sessions threads`).")] = None,
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Start a session; prints its id. `tether sessions start -- bash` or
    `tether sessions start --agent codex "fix the failing test"`."""
    if not command:
        if agent == "pty":
            raise UsageError("no command given", hint="e.g. tether sessions start --agent pty -- bash")
        raise UsageError("no prompt given", hint=f'e.g. tether sessions start --agent {agent} "add a test"')
    if agent == "pty" and (approval or sandbox):
        raise UsageError("--approval and --sandbox apply to agent sessions, not to pty")
    cols, rows = shutil.get_terminal_size((80, 24))

    async def main() -> str:
        client = _client(home, host)
        try:
            if agent == "pty":
                result: str = await client.start_session(
                    list(command), agent=agent, workspace=workspace, cols=cols, rows=rows
                )
            else:
                result = await client.start_session(
                    agent=agent, prompt=" ".join(command), workspace=workspace, approval=approval, sandbox=sandbox,
                    thread=thread,
                )
            return result
        finally:
            await client.close()

    session_id = run(main())
    if as_json:
        print_json({"id": session_id})
    else:
        out.print(session_id)


@sessions_app.command("send")
def sessions_send(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    text: Annotated[str, typer.Argument(help="Text to send; a newline is added.")],
    model: Annotated[str | None, typer.Option(help="Agent sessions: the model from now on.")] = None,
    effort: Annotated[str | None, typer.Option(help="Agent sessions: the reasoning effort, from now on.")] = None,
    mode: Annotated[str | None, typer.Option(help="Agent sessions: the mode (Codex: plan, default).")] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="Agent sessions: attach this image (PNG, JPEG, GIF, WebP) to the prompt; "
                     "repeat for more."),
    ] = None,
    queue: QueueOpt = False,
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Send a line of input to a session."""
    if queue:
        if image:
            raise UsageError("images cannot wait at the relay", hint="send them when the host is back")
        chosen = {"model": model, "effort": effort, "mode": mode}
        _queued(home, host, "sessions.send",
                {"id": session_id, "text": text + "\n", **{k: v for k, v in chosen.items() if v is not None}},
                as_json)
        return
    images = [(path.name, read_file(path, "image")) for path in image or []]
    seq: int = with_client(
        home, host,
        lambda client: client.send(session_id, text + "\n", model=model, effort=effort, mode=mode, images=images),
    )
    if as_json:
        print_json({"seq": seq})


@sessions_app.command("review")
def sessions_review(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    base: Annotated[str | None, typer.Option(help="Review the changes against this branch.")] = None,
    commit: Annotated[str | None, typer.Option(help="Review this one commit.")] = None,
    instructions: Annotated[str | None, typer.Option(help="Review what these words say instead.")] = None,
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Have the agent review changes (Codex): the uncommitted ones unless told otherwise."""

    seq: int = with_client(home, host, lambda client: client.review(session_id, base=base, commit=commit,
                                                                     instructions=instructions))
    if as_json:
        print_json({"seq": seq})


@sessions_app.command("compact")
def sessions_compact(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Have the agent summarize the conversation so far, to free its context (Codex)."""

    seq: int = with_client(home, host, lambda client: client.compact(session_id))
    if as_json:
        print_json({"seq": seq})


@sessions_app.command("archive")
def sessions_archive(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    back: Annotated[bool, typer.Option("--unarchive", help="Put it back among the sessions.")] = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Put a session away (it keeps its history); lists show it only when asked."""

    with_client(home, host, lambda client: client.archive(session_id, archived=not back))


@sessions_app.command("delete")
def sessions_delete(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask to confirm.")] = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Forget an ended session and its whole history on the host. It cannot be undone."""

    if not yes and not typer.confirm(f"Delete session {session_id} and its whole history?"):
        raise typer.Exit(1)
    with_client(home, host, lambda client: client.delete(session_id))


@sessions_app.command("unqueue")
def sessions_unqueue(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    queued: Annotated[str, typer.Argument(metavar="QUEUED", help="The queued prompt's id (its turn.queued event).")],
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Cancel a prompt that waits for the agent to finish its turn."""

    with_client(home, host, lambda client: client.unqueue(session_id, queued))


@sessions_app.command("approve")
def sessions_approve(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    approval_id: Annotated[str, typer.Argument(metavar="APPROVAL_ID")],
    deny: Annotated[bool, typer.Option("--deny", help="Deny instead of approving.")] = False,
    for_session: Annotated[
        bool, typer.Option("--for-session", help="Approve this kind of action for the rest of the session.")
    ] = False,
    queue: QueueOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Answer an approval request (the first answer from any device wins)."""
    if deny and for_session:
        raise UsageError("--deny and --for-session cannot go together")
    decision = "deny" if deny else "approve_for_session" if for_session else "approve"
    if queue:
        _queued(home, host, "sessions.approve", {"id": session_id, "approval": approval_id, "decision": decision},
                False)
        return

    with_client(home, host, lambda client: client.approve(session_id, approval_id, decision))
    out.print(f"{approval_id}: {decision.replace('_', ' ')}")


@sessions_app.command("answer")
def sessions_answer(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    approval_id: Annotated[str, typer.Argument(metavar="QUESTION_ID")],
    answers: Annotated[list[str], typer.Argument(metavar="PART=ANSWER...", help="One per answer, e.g. q1=blue.")],
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Answer a question the agent asked (the first answer from any device wins)."""
    given: dict[str, list[str]] = {}
    for pair in answers:
        part, sep, text = pair.partition("=")
        if not sep or not part:
            raise UsageError(f"{pair!r} is not PART=ANSWER", hint="e.g. tether sessions answer ID QUESTION q1=blue")
        given.setdefault(part, []).append(text)

    with_client(home, host, lambda client: client.answer(session_id, approval_id, given))
    out.print(f"{approval_id}: answered")


@sessions_app.command("threads")
def sessions_threads(as_json: JsonOpt = False, host: HostOpt = None, home: HomeOpt = None) -> None:
    """Codex threads on the host (desktop ones too) that a session can adopt."""

    threads: list[dict[str, Any]] = with_client(home, host, lambda client: client.threads())
    if as_json:
        print_json(threads)
        return
    if not threads:
        out.print("no codex threads in the workspaces you may use")
    for t in threads:
        preview = " ".join(str(t.get("preview") or t.get("name") or "").split())[:60]
        out.print(f"{t['id']}  {t.get('cwd')}  {preview}")
    out.print('adopt one: tether sessions start --agent codex --thread ID "next prompt"')


@sessions_app.command("models")
def sessions_models(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """The models an agent session can use next, with their reasoning efforts."""

    models: list[dict[str, Any]] = with_client(home, host, lambda client: client.models(session_id))
    if as_json:
        print_json(models)
        return
    for m in models:
        efforts = ", ".join(m.get("efforts") or []) or "-"
        default = "  (default)" if m.get("default") else ""
        out.print(f"{m['id']}{default}  efforts: {efforts}  {m.get('description', '')}")
    out.print("use one: tether sessions send ID --model MODEL [--effort EFFORT] \"next prompt\"")


@sessions_app.command("diff")
def sessions_diff(
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Print a session's file changes as unified diffs."""

    changes: list[dict[str, Any]] = with_client(home, host, lambda client: client.diff(session_id))
    if as_json:
        print_json(changes)
        return
    if not changes:
        out.print("no file changes in this session")
    for change in changes:
        diff = change["diff"]
        # A diff is file content an agent wrote: its lines and tabs stay, other controls are escaped.
        diff = escape_controls(diff, keep="\n\t")
        sys.stdout.write(diff if not diff or diff.endswith("\n") else diff + "\n")
    sys.stdout.flush()


@sessions_app.command("interrupt")
def sessions_interrupt(
    session_id: Annotated[str, typer.Argument(metavar="ID")], host: HostOpt = None, home: HomeOpt = None
) -> None:
    """Interrupt what a session is doing (Ctrl-C for a terminal)."""

    with_client(home, host, lambda client: client.interrupt(session_id))


def _summary(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    if event["type"] == "session.output":
        text: str = data.get("data", "")
        return repr(text[:60]) + ("…" if len(text) > 60 else "")
    if event["type"] == "session.input":
        return repr(str(data.get("text", ""))[:60])
    if event["type"] == "snapshot":
        return f"{len(event.get('sessions', []))} sessions"
    return " ".join(f"{k}={v}" for k, v in data.items() if k not in ("scrollback",))[:100]


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(event)
        return
    when = time.strftime("%H:%M:%S", time.localtime(event.get("ts", time.time())))
    out.print(f"{event['seq']:>7} {when} {event.get('session') or '-':<14} {event['type']:<20} {_summary(event)}")


@sessions_app.command("events")
def sessions_events(
    session_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="Only this session.")] = None,
    since: Annotated[int, typer.Option(help="Events after this seq.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    as_json: JsonOpt = False,
    host: HostOpt = None,
    home: HomeOpt = None,
) -> None:
    """Print a host's events (one JSON object per line with --json)."""
    if since < 0:
        raise UsageError("--since must be 0 or more")

    async def main() -> None:
        client = _client(home, host)
        try:
            if follow:
                async for event in client.events(since, session=session_id):
                    _print_event(event, as_json)
                return
            cursor = since
            while True:
                page = await client.call("events.read", {"since": cursor, "session": session_id})
                for event in page["events"]:
                    _print_event(event, as_json)
                cursor = page["cursor"]
                if cursor >= page["head"]:
                    return
        finally:
            await client.close()

    run(main())


@sessions_app.command("attach")
def sessions_attach(
    session_id: Annotated[str, typer.Argument(metavar="ID")], host: HostOpt = None, home: HomeOpt = None
) -> None:
    """Attach this terminal to a session, live. Ctrl-] detaches."""
    run(_attach(home_dir(home), host, session_id))


async def _attach(home: Path, host: str | None, session_id: str) -> None:
    from tether.client.sdk import Client

    client = Client(home, host)
    loop = asyncio.get_running_loop()
    stdin_fd = sys.stdin.fileno()
    is_tty = os.isatty(stdin_fd)
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    done = asyncio.Event()

    def on_stdin() -> None:
        try:
            data = os.read(stdin_fd, 4096)
        except OSError:
            data = b""
        if not data or DETACH in data:
            head = data.split(DETACH, 1)[0]
            if head:
                keys.put_nowait(head)
            done.set()
            loop.remove_reader(stdin_fd)
            return
        keys.put_nowait(data)

    async def pump_keys() -> None:
        while True:
            data = await keys.get()
            try:
                await client.send(session_id, data.decode("utf-8", errors="replace"))
            finally:
                keys.task_done()

    async def pump_output(since: int) -> None:
        async for event in client.events(since, session=session_id):
            if event["type"] == "session.output":
                sys.stdout.buffer.write(event["data"]["data"].encode())
                sys.stdout.buffer.flush()
            elif event["type"] == "session.exited":
                sys.stderr.write(f"\r\n[session exited: {escape_controls(str(event['data'].get('exit_code')))}]\r\n")
                done.set()
                return

    resizes: set[asyncio.Task[None]] = set()

    def on_resize() -> None:
        cols, rows = shutil.get_terminal_size((80, 24))
        task = asyncio.create_task(client.resize(session_id, cols, rows))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    session = await client.session(session_id, scrollback=True)
    sys.stdout.buffer.write((session.get("scrollback") or "").encode())
    sys.stdout.buffer.flush()
    if session["status"] in ("finished", "failed"):
        ended = escape_controls(f"session {session['status']}: exit code {session.get('exit_code')}")
        sys.stderr.write(f"[{ended}]\n")
        await client.close()
        return
    old_attrs = None
    if is_tty:
        import termios
        import tty

        old_attrs = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
        on_resize()
        sys.stderr.write("[attached; Ctrl-] detaches]\r\n")
    loop.add_reader(stdin_fd, on_stdin)
    tasks = [asyncio.create_task(pump_keys()), asyncio.create_task(pump_output(session["last_seq"]))]
    try:
        await done.wait()
        # Let typed keys reach the host before detaching.
        await asyncio.wait_for(keys.join(), 10)
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(stdin_fd)
        for task in tasks:
            task.cancel()
        if old_attrs is not None:
            import termios

            loop.remove_signal_handler(signal.SIGWINCH)
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, old_attrs)
        await client.close()
        sys.stderr.write("\r\n[detached]\n")
