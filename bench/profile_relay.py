"""Where the relay's time goes: profile the relay (or the bare forwarder) under bench/relay.py's
throughput load, 1 KiB and 64 KiB, and break its CPU down by function and by kind of work.

    .venv/bin/python bench/profile_relay.py                    # all tools, both servers, both sizes
    .venv/bin/python bench/profile_relay.py --tools sample --servers tether --sizes 1
    .venv/bin/python bench/profile_relay.py --json profile.json --keep /tmp/prof

Each (server, size, tool) runs in a fresh server process; the load is bench/relay.py's
``measure_throughput`` (a sender and a receiver process, the same window and warm-up), so the
figures line up with the benchmark's. Tools:

* ``none``: no profiler; the throughput and the server's CPU per message as the benchmark reports
  them, to see what each profiler costs;
* ``sample``: a SIGPROF sampler inside the server (ITIMER_PROF, every 1 ms of CPU). It records the
  Python stack at each tick: shares by leaf line (own time) and by function on the stack
  (inclusive). Time in a C call (a syscall, a memcpy, epoll) lands on the Python line that made the
  call. Low overhead and unbiased between Python and C work, unlike cProfile;
* ``cprofile``: cProfile over the whole server process: call counts and per-call times. It costs
  about as much as the work it measures for small Python functions, so read shares, not totals;
* ``perf``: ``perf record -g`` (cpu-clock, 999 Hz) attached to the unprofiled server: kernel
  against user space, and which C symbols (the interpreter, malloc, memcpy, websockets' C mask).
  Python 3.11 has no perf trampoline, so Python functions all show as the interpreter.

All traffic is on 127.0.0.1; every load has a bounded count and a timeout (bench/relay.py's), and
every process started here is stopped at the end. Sections of docs/benchmarks.md quote this
script's output.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import linecache
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import relay as bench  # noqa: E402  (bench/relay.py: the load and its measurements)

KIB = 1024
SAMPLE_INTERVAL = 0.001  # s of process CPU between SIGPROF ticks


# ---------------------------------------------------------------------------------------
# inside the server process (``--serve``)


def _serve(kind: str, tool: str, out: Path) -> None:
    """Run ``tether relay`` or the bare forwarder in this process under ``tool``; write the
    profile to ``out`` when the server exits (SIGTERM)."""
    if kind == "tether":
        sys.argv = ["tether", "relay", "--listen", "127.0.0.1:0", "--exempt-loopback"]

        def target() -> None:
            from tether.cli import main

            main()
    else:
        sys.argv = [str(HERE / "bare_forwarder.py"), "--listen", "127.0.0.1:0"]

        def target() -> None:
            runpy.run_path(str(HERE / "bare_forwarder.py"), run_name="__main__")

    if tool == "cprofile":
        import cProfile

        prof = cProfile.Profile()
        # started by the orchestrator's SIGUSR1 once the server listens: no imports, no startup
        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
        try:
            with contextlib.suppress(SystemExit):
                target()
        finally:
            prof.disable()
            prof.dump_stats(str(out))
    elif tool == "sample":
        leaves: collections.Counter[tuple[str, str, int]] = collections.Counter()
        stacks: collections.Counter[tuple[int, tuple[tuple[str, str], ...]]] = collections.Counter()

        def tick(_signum: int, frame: Any) -> None:
            if frame is None:
                return
            code = frame.f_code
            leaves[(code.co_filename, code.co_name, frame.f_lineno or 0)] += 1
            stack: list[tuple[str, str]] = []
            f = frame
            while f is not None and len(stack) < 40:
                stack.append((f.f_code.co_filename, f.f_code.co_name))
                f = f.f_back
            stacks[(frame.f_lineno or 0, tuple(stack))] += 1

        signal.signal(signal.SIGPROF, tick)
        signal.signal(signal.SIGUSR1, lambda *_: signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL, SAMPLE_INTERVAL))
        try:
            with contextlib.suppress(SystemExit):
                target()
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            data = {
                "leaves": [[list(k), v] for k, v in leaves.items()],
                "stacks": [[[list(s) for s in k], line, v] for (line, k), v in stacks.items()],
            }
            out.write_text(json.dumps(data))
    else:
        with contextlib.suppress(SystemExit):
            target()


# ---------------------------------------------------------------------------------------
# the orchestrator


class _Server:
    """A server for ``bench.measure_throughput`` (which reads ``url`` and ``pid``)."""

    def __init__(self, kind: str, tool: str, out: Path) -> None:
        self.kind = kind
        self.log_path = Path(tempfile.mkstemp(prefix=f"prof-{kind}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        serve_tool = tool if tool in ("cprofile", "sample") else "none"
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            kind,
            "--serve-tool",
            serve_tool,
            "--serve-out",
            str(out),
        ]
        self.popen = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )
        self.pid = self.popen.pid
        name = "relay" if kind == "tether" else "bare"
        pattern = name + r" listening on 127\.0\.0\.1:(\d+)"
        port = int(bench._wait_for(self.log_path, pattern, self.popen, 30).group(1))
        self.url = f"ws://127.0.0.1:{port}" + ("/ws" if kind == "tether" else "")
        if serve_tool != "none":
            os.kill(self.pid, signal.SIGUSR1)  # start profiling now

    def stop(self) -> None:
        bench.stop_group(self.popen, signal.SIGTERM, 30)  # cProfile's dump of a long run takes a moment
        self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def _perf_start(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    if shutil.which("perf") is None:
        return None
    proc = subprocess.Popen(
        ["perf", "record", "-F", "999", "-g", "-e", "cpu-clock", "-p", str(pid), "-o", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(0.5)  # let it attach
    return proc


# ---------------------------------------------------------------------------------------
# reading the profiles


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/", "bench/"):
        i = filename.rfind(marker)
        if i >= 0:
            return filename[i + len(marker) :]
    return filename


# Kinds of work, by function (file, name); first match wins. Own time of a C builtin in cProfile
# is attributed by its name ("{method 'recv' of '_socket.socket' objects}").
_KINDS: list[tuple[str, str, str]] = [
    # (kind, file regex, function regex)
    ("syscall: recv", r"", r"method 'recv' of '_socket|method 'recv_into'"),
    ("syscall: send", r"", r"method 'send' of '_socket|method 'sendmsg'"),
    ("syscall: epoll", r"", r"method 'poll' of 'select.epoll'"),
    ("ours: token bucket", r"tether/relay/limits\.py", r"debit|_refill"),
    ("ours: read loop", r"tether/relay/server\.py", r"^_read_loop$"),
    ("ours: forward", r"tether/relay/router\.py|tether/protocol/frames\.py", r"^forward$|data_channel|rechannel"),
    ("ours: enqueue", r"tether/relay/connection\.py", r"^enqueue$"),
    ("ours: writer", r"tether/relay/connection\.py", r"_write|_written|write_batch|binary_frame_header|_progressed"),
    ("ours: socket (websockets' protocol object driven)", r"tether/relay/websocket\.py", r""),
    ("ours: other", r"tether/", r""),
    ("bare: forward loop", r"bare_forwarder\.py", r""),
    ("ws: frame parsing (frames, streams, mask)", r"websockets/(frames|streams|utils)\.py", r""),
    ("ws: protocol receive/send", r"websockets/protocol\.py", r""),
    ("ws: message assembler", r"websockets/asyncio/messages\.py", r""),
    ("ws: asyncio connection (recv, send, data_received, drain)", r"websockets/asyncio/", r""),
    ("ws: other", r"websockets/", r""),
    ("asyncio: transports", r"asyncio/selector_events\.py", r""),
    ("asyncio: loop, tasks, futures", r"asyncio/", r""),
    ("asyncio: loop, tasks, futures", r"", r"_asyncio|method 'run' of '_contextvars|method 'call_soon'"),
    ("builtins: bytes copies", r"", r"method 'join' of 'bytes|method 'extend' of 'bytearray|bytes\.|memoryview"),
]


def kind_of(filename: str, func: str) -> str:
    for kind, file_re, func_re in _KINDS:
        if re.search(file_re, filename) and re.search(func_re, func):
            return kind
    return "other"


def read_cprofile(path: Path, top: int) -> dict[str, Any]:
    import pstats

    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    # cProfile measures wall time: epoll.poll's own time is mostly the loop waiting, not CPU, so
    # shares are of the time outside it (it is reported on its own as idle_s).
    idle = sum(v[2] for (f, _, fn), v in raw.items() if "select.epoll" in fn)
    total = sum(v[2] for v in raw.values()) - idle
    rows = []
    kinds: collections.Counter[str] = collections.Counter()
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        if "select.epoll" in func:
            tottime = 0.0
        name = f"{_short(filename)}:{line}({func})" if filename != "~" else func
        rows.append({"function": name, "calls": ncalls, "own_s": tottime, "cum_s": cumtime})
        kinds[kind_of(filename, func)] += tottime
    by_own = sorted(rows, key=lambda r: -r["own_s"])[:top]
    by_cum = sorted(rows, key=lambda r: -r["cum_s"])[:top]
    return {
        "total_own_s": total,
        "idle_s": idle,
        "top_own": by_own,
        "top_cum": by_cum,
        "kinds": {k: v / total for k, v in kinds.most_common()},
        "calls": {r["function"]: r["calls"] for r in rows},
    }


def _sample_kind(stack: list[list[Any]], leaf_line: int) -> str:
    """The kind of one sample: its leaf's, or for a leaf in the standard library with no kind
    (enum, dataclass ``__init__``, contextlib, weakref sets) its nearest caller's that has one.
    The lines of asyncio's transport that call ``sock.recv``/``sock.send`` and the selector's
    ``epoll`` call count as syscalls (ITIMER_PROF counts CPU only, so an idle epoll is absent)."""
    leaf_file, leaf_func = stack[0]
    if leaf_file.endswith("asyncio/selector_events.py"):
        text = linecache.getline(leaf_file, leaf_line or 0)
        if "_sock.recv" in text:
            return "syscall: recv"
        if "_sock.send" in text:
            return "syscall: send"
    if leaf_file.endswith("/selectors.py") and leaf_func == "select":
        return "syscall: epoll"
    for filename, func in stack:
        kind = kind_of(filename, func)
        if kind != "other":
            return kind if (filename, func) == (leaf_file, leaf_func) else kind + " (stdlib under it)"
    return "other"


def read_samples(path: Path, top: int) -> dict[str, Any]:
    data = json.loads(path.read_text())
    leaves = [((f, fn, ln), n) for (f, fn, ln), n in data["leaves"]]
    total = sum(n for _, n in leaves)
    own_fn: collections.Counter[str] = collections.Counter()
    own_line: collections.Counter[str] = collections.Counter()
    for (f, fn, ln), n in leaves:
        own_fn[f"{_short(f)}({fn})"] += n
        own_line[f"{_short(f)}:{ln}({fn})"] += n
    incl: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    for stack, leaf_line, n in data["stacks"]:
        for key in {f"{_short(f)}({fn})" for f, fn in stack}:
            incl[key] += n
        kinds[_sample_kind(stack, leaf_line)] += n
    return {
        "samples": total,
        "top_own": [[k, v / total] for k, v in own_fn.most_common(top)],
        "top_lines": [[k, v / total] for k, v in own_line.most_common(top)],
        "top_incl": [[k, v / total] for k, v in incl.most_common(top)],
        "kinds": {k: v / total for k, v in kinds.most_common()},
    }


def read_perf(path: Path, top: int) -> dict[str, Any]:
    """perf's flat profile: share of samples by (shared object, symbol), self time only."""
    out = subprocess.run(
        [
            "perf",
            "report",
            "-i",
            str(path),
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--sort",
            "dso,sym",
            "--percent-limit",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if m:
            rows.append([float(m.group(1)) / 100, m.group(2), m.group(3), m.group(4).strip()])
    out = subprocess.run(
        ["perf", "report", "-i", str(path), "--stdio", "--no-children", "-g", "none", "--sort", "dso"],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    by_dso: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            by_dso[m.group(2)] = float(m.group(1)) / 100
    kernel = by_dso.get("[kernel.kallsyms]", 0.0)
    return {"top": rows[:top], "kernel_share": kernel, "by_dso": by_dso}


# ---------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:5.1f} %"


def report(case: dict[str, Any], top: int) -> None:
    t = case["throughput"]
    print(
        f"\n=== {case['server']} {case['size'] // KIB} KiB, {case['tool']}: {t['msgs_per_s']:,.0f} msg/s, "
        f"server CPU {t['relay_cpu_pct']:.0f} %, {t['relay_cpu_us_per_msg']:.1f} µs/msg, "
        f"others {t['other_cpu_pct']:.0f} % ==="
    )
    prof = case.get("profile")
    if not prof:
        return
    if case["tool"] == "cprofile":
        print(f"own time in profile: {prof['total_own_s']:.2f} s outside epoll, {prof['idle_s']:.2f} s in epoll")
        print("-- kinds (share of own time) --")
        for k, v in prof["kinds"].items():
            print(f"  {_pct(v)}  {k}")
        print("-- top by own time --")
        for r in prof["top_own"]:
            print(f"  {_pct(r['own_s'] / prof['total_own_s'])}  {r['calls']:>9}  {r['function']}")
        print("-- top by cumulative time --")
        for r in prof["top_cum"]:
            print(f"  {_pct(r['cum_s'] / prof['total_own_s'])}  {r['calls']:>9}  {r['function']}")
    elif case["tool"] == "sample":
        print(
            f"samples: {prof['samples']} (asked for every {SAMPLE_INTERVAL * 1e3:.0f} ms of CPU; "
            "the kernel's tick may be coarser)"
        )
        print("-- kinds (share of samples, by leaf or its nearest caller with a kind) --")
        for k, v in prof["kinds"].items():
            print(f"  {_pct(v)}  {k}")
        for key, title in (
            ("top_own", "own (leaf function)"),
            ("top_lines", "own (leaf line)"),
            ("top_incl", "inclusive (on the stack)"),
        ):
            print(f"-- top {title} --")
            for k, v in prof[key]:
                print(f"  {_pct(v)}  {k}")
    elif case["tool"] == "perf":
        print(f"kernel: {_pct(prof['kernel_share'])}")
        print("-- by shared object --")
        for k, v in list(prof["by_dso"].items())[:8]:
            print(f"  {_pct(v)}  {k}")
        print("-- top symbols (self) --")
        for share, dso, _, sym in prof["top"]:
            print(f"  {_pct(share)}  {dso:28.28}  {sym}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="profile the relay under bench/relay.py's throughput load")
    parser.add_argument("--servers", default="tether,bare", help="comma-separated: tether, bare")
    parser.add_argument("--sizes", default="1,64", help="payload KiB, comma-separated")
    parser.add_argument(
        "--tools", default="none,sample,cprofile,perf", help="comma-separated: none, sample, cprofile, perf"
    )
    parser.add_argument("--messages-1k", type=int, default=100_000, help="timed messages at 1 KiB")
    parser.add_argument("--messages-64k", type=int, default=10_000, help="timed messages at 64 KiB")
    parser.add_argument(
        "--sample-scale",
        type=int,
        default=5,
        help="the sampler runs this many times the messages (it ticks at most every 4 ms here)",
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", type=Path, help="keep the raw profiles in this directory")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-tool", help=argparse.SUPPRESS)
    parser.add_argument("--serve-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.serve_tool, args.serve_out)
        return 0

    outdir = args.keep or Path(tempfile.mkdtemp(prefix="prof-relay-"))
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": bench.machine_facts(), "cases": []}
    m = results["machine"]
    print(
        f"machine: {m['cpu_model']}, {m['cores']} cores, Python {m['python']}, websockets {m['websockets']}, "
        f"tether {m['tether_commit']}"
    )
    try:
        counts = {1: args.messages_1k, 64: args.messages_64k}
        for size_kib in (int(s) for s in args.sizes.split(",")):
            for tool in args.tools.split(","):
                n = counts.get(size_kib, 5_000) * (args.sample_scale if tool == "sample" else 1)
                for kind in args.servers.split(","):
                    stem = outdir / f"{kind}-{size_kib}k-{tool}"
                    out = stem.with_suffix({"cprofile": ".prof", "sample": ".json", "perf": ".perf"}.get(tool, ".none"))
                    server = _Server(kind, tool, out)
                    perf = _perf_start(server.pid, out) if tool == "perf" else None
                    try:
                        t = bench.measure_throughput(kind, server, size_kib * KIB, n)  # type: ignore[arg-type]  # duck-typed: url, pid
                    finally:
                        if perf is not None:
                            bench.stop_group(perf, signal.SIGINT, 30)  # perf writes its data on SIGINT
                        server.stop()
                    case: dict[str, Any] = {
                        "server": kind,
                        "size": size_kib * KIB,
                        "tool": tool,
                        "messages": n,
                        "throughput": t,
                    }
                    if tool == "cprofile":
                        case["profile"] = read_cprofile(out, args.top)
                    elif tool == "sample":
                        case["profile"] = read_samples(out, args.top)
                    elif tool == "perf" and perf is not None:
                        case["profile"] = read_perf(out, args.top)
                    results["cases"].append(case)
                    report(case, args.top)
    finally:
        if args.keep is None:
            shutil.rmtree(outdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    if args.keep is not None:
        print(f"raw profiles in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
