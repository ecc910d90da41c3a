"""The import graph of ``src/tether`` keeps its layers pointing one way and has no cycles
(docs/decisions.md, "Layers", has the order and why).

Every import counts: at module level, inside a function, and under ``if TYPE_CHECKING:``. A
deferred or type-only import still makes one module depend on another; it only hides a cycle
from the interpreter, not from the next person changing either side. Importing ``a.b.c`` is an
edge to ``a.b.c`` only (the packages' ``__init__`` run on the way are not counted: they hold no
logic here).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import tether

SRC = Path(tether.__file__).resolve().parent

# Bottom first. A module may import from its own unit or from a unit of a LOWER rank; units of
# the same rank are independent of one another (relay, client and agents; errors and the package).
LAYERS: dict[str, int] = {
    "tether.errors": 0,
    "tether": 0,  # the package itself: __version__ (its lazy `tether.Client` is in ALLOWED)
    "tether.backoff": 1,
    "tether.lograte": 1,
    "tether.home": 1,
    "tether.sqlite": 1,
    "tether.crypto": 2,
    "tether.protocol": 3,
    "tether.relay": 4,  # the relay server, and relay.link: how a host or a client dials it
    "tether.client": 5,
    "tether.agents": 5,
    "tether.host": 6,  # runs the agents, dials the relay
    "tether.sshremote": 7,  # starts hosts over SSH; gives the daemon host.remotes.RemoteHosts
    "tether.cli": 8,
    "tether.__main__": 9,  # `python -m tether`: the CLI
}

# Edges the rules would refuse, on purpose.
ALLOWED: dict[tuple[str, str], str] = {
    ("tether", "tether.client.sdk"): "`tether.Client`, the package's public name, imported on first use",
}

# Violations that exist today, still to remove ([7] items 1-3). This
# list may only shrink: the test fails too when one listed here is gone, so remove it then.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_CYCLES: list[set[str]] = []


def module_names(root: Path = SRC) -> dict[str, Path]:
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = ["tether", *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(module: str, path: Path, modules: set[str]) -> Iterator[str]:
    """The tether modules ``module`` imports, wherever in the file the import is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                # `from tether.host import projection` imports a module; `from tether import
                # __version__` imports a name of the package.
                yield from _resolve(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, modules)


def _resolve(name: str, modules: set[str]) -> Iterable[str]:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return [name] if name else []


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    names = module_names(root)
    return {m: set(_imports(m, p, set(names))) - {m} for m, p in names.items()}


def unit(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS in {__file__}")


def why_not(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``; None when it may."""
    if (importer, imported) in ALLOWED:
        return None
    a, b = unit(importer), unit(imported)
    if a == b:
        return None
    if LAYERS[a] < LAYERS[b]:
        return f"{a} (layer {LAYERS[a]}) is below {b} (layer {LAYERS[b]})"
    if LAYERS[a] == LAYERS[b]:
        return f"{a} and {b} are independent of each other"
    if a == "tether.host" and imported.count(".") >= 3 and imported.startswith("tether.agents."):
        return "the host reaches into one agent's package; it goes through tether.agents (base, registry)"
    return None


def violations(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    found = {}
    for importer, targets in graph.items():
        for imported in targets:
            reason = why_not(importer, imported)
            if reason is not None:
                found[(importer, imported)] = reason
    return found


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_imports_point_down_the_layers() -> None:
    found = violations(import_graph())
    new = {edge: why for edge, why in found.items() if edge not in KNOWN_VIOLATIONS}
    assert not new, "imports against the layer order (docs/decisions.md, Layers):\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(new.items())
    )
    gone = KNOWN_VIOLATIONS - set(found)
    assert not gone, "fixed, so remove them from KNOWN_VIOLATIONS:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in sorted(gone)
    )


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(f"  {' <-> '.join(sorted(c))}" for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, "gone or changed, so update KNOWN_CYCLES:\n" + "\n".join(f"  {sorted(c)}" for c in gone)


def test_every_module_has_a_layer_and_web_is_static() -> None:
    for module in module_names():
        unit(module)
    assert not list((SRC / "web").rglob("*.py")), "tether/web is static files only"


def test_the_rules_refuse_the_imports_of_issue_7() -> None:
    # The imports [7] item 1 named, each refused by the rules on its own.
    for importer, imported in [
        ("tether.client.connection", "tether.host.daemon"),
        ("tether.protocol.e2e", "tether.relay.link"),
        ("tether.agents.base", "tether.host.config"),
        ("tether.host.api", "tether.agents.codex.adapter"),
        ("tether.host.daemon", "tether.sshremote.keeper"),
        ("tether.client.sdk", "tether.agents.base"),
        ("tether.relay.server", "tether.client.sdk"),
    ]:
        assert why_not(importer, imported) is not None, (importer, imported)
    graph = {
        "tether.protocol.e2e": {"tether.protocol.rpc"}, "tether.protocol.rpc": {"tether.protocol.e2e"},
        "tether.cli.main": {"tether.cli.ssh"}, "tether.cli.ssh": {"tether.cli.main"},
        "tether.host.eventlog": {"tether.host.projection"}, "tether.host.projection": set(),
    }
    assert cycles(graph) == [{"tether.cli.main", "tether.cli.ssh"}, {"tether.protocol.e2e", "tether.protocol.rpc"}]
