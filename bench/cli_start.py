"""What a ``tether`` command costs before it does anything: CPU from exec to exit.

    .venv/bin/python bench/cli_start.py              # 20 runs of each, interleaved
    .venv/bin/python bench/cli_start.py --runs 5 --json out.json

Scripts call the CLI in loops (``--json``), and the test suite starts about a thousand CLI
processes, so its start-up is worth knowing. Each run, in turn:

1. ``python -c pass`` in this virtual environment: the interpreter alone, the baseline;
2. ``python -m tether --home H sessions list --json`` against a home with no daemon: parsing the
   command line, importing what the command needs (typer, rich, the SDK) and failing at once on
   the missing socket (exit 1, as expected);
3. ``python -m tether --version``: the CLI without the SDK.

CPU is user + system time of the child from ``os.wait4`` (wall time on this shared machine is
noise). Reported: the median per command and its ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "tether sessions list --json": [sys.executable, "-m", "tether", "--home", "{home}", "sessions", "list", "--json"],
    "tether --version": [sys.executable, "-m", "tether", "--version"],
}


def cpu_of(argv: list[str]) -> float:
    """User + system CPU seconds of one run of ``argv`` (its output discarded)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here; Popen must not wait for it again
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--json", metavar="PATH", help="write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        parser.error("--runs must be between 1 and 1000")
    with tempfile.TemporaryDirectory(prefix="tether-bench-cli-") as home:
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for i in range(args.runs):
            for name, command in COMMANDS.items():
                times[name].append(cpu_of([part.replace("{home}", home) for part in command]))
            print(f"\r{i + 1}/{args.runs} runs", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    base = statistics.median(times["python -c pass"])
    result: dict[str, Any] = {"runs": args.runs, "python": sys.version.split()[0], "commands": {}}
    for name, values in times.items():
        median = statistics.median(values)
        result["commands"][name] = {"median_cpu_ms": round(1e3 * median, 1), "min_cpu_ms": round(1e3 * min(values), 1),
                                    "ratio_to_python": round(median / base, 2) if base else None}
        print(f"{name:32} median {1e3 * median:6.1f} ms CPU (min {1e3 * min(values):6.1f}), "
              f"{median / base:5.1f}x the interpreter alone")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
