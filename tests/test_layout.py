"""The layout's rules, checked on the source: no import cycles; the pure core stays pure;
nothing at run time imports the harness; ``import gossip`` leaves the asyncio driver unloaded.

Imports anywhere in a module count (lazy ones and those under ``TYPE_CHECKING`` too: they are
design dependencies), as in ``../shared/tools/import_cycles.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("peer", "policy", "gossip", "amcoedge")
CORE_FORBIDDEN = ("asyncio", "aiohttp", "peer.runtime", "peer.harness", "gossip.node")
HARNESS_USERS = ("peer.harness", "peer.cli", "peer.commands")


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (absolute names)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = {d for d in imported(name, path) if d in mods}
        edges[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules() -> None:
    assert cycles(graph()) == []


def test_the_core_imports_no_asyncio_aiohttp_or_shells() -> None:
    bad = {}
    for name, path in modules().items():
        if name.startswith("peer.core"):
            hits = sorted(
                d
                for d in imported(name, path)
                if any(d == f or d.startswith(f + ".") for f in CORE_FORBIDDEN)
            )
            if hits:
                bad[name] = hits
    assert bad == {}


def test_nothing_at_run_time_imports_the_harness() -> None:
    bad = {
        name: sorted(d for d in deps if d.startswith("peer.harness"))
        for name, deps in graph().items()
        if not name.startswith(HARNESS_USERS)
    }
    assert {k: v for k, v in bad.items() if v} == {}


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_loading_the_core_loads_no_shell() -> None:
    """Transitively too: the core's imports (``peer.rpc`` for tensors, ``policy.fleet``) do not
    drag in asyncio, aiohttp or the RPC transport."""
    core = [n for n in modules() if n.startswith("peer.core.")]
    loaded = _loaded_after("\n".join(f"import {n}" for n in core))
    shells = (*CORE_FORBIDDEN, "peer.rpc.server", "peer.rpc.client", "peer.rpc.pool")
    assert {m for m in loaded if m == "asyncio" or m.startswith(shells)} == set()


def test_import_gossip_leaves_the_asyncio_driver_unloaded() -> None:
    loaded = _loaded_after("import gossip")
    assert {"gossip.node", "gossip.udp", "asyncio"} & loaded == set()
