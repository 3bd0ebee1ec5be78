"""The import graph of rdmacheck/ is acyclic and layered, as docs/architecture.md ("Layers") says.

Parsed with ast from the source, every import counted, also those inside functions (a lazy import is
still an arrow: it only moves the failure to run time).  Nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "rdmacheck"

# area (rdmacheck/<area>/ or rdmacheck/<area>.py) -> layer; an area imports only areas of a lower or
# equal layer.  The same table is in docs/architecture.md.
LAYERS: dict[str, int] = {
    "rdmacheck": 0, "errors": 0, "units": 0, "busbw": 0, "plateau": 0, "boundedjson": 0, "atomic": 0,
    "ncclspec": 0, "crash": 0, "inputs": 0, "outpath": 0, "sanitize": 0,
    "model": 1, "evidence": 1,
    "root": 2, "config": 2, "nccl_log": 2,
    "facts": 3, "nodefacts": 3, "gather": 3,
    "checks": 4,
    "preflight": 5, "snapshot": 5, "importers": 5, "output": 5,
    "bench": 6, "launch": 6, "watch": 6,
    "report": 7, "diff": 7,
    "cluster": 8,
    "commands": 9, "cli": 9, "__main__": 9, "evidence_v1": 9,
}


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split("."))
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the rdmacheck modules it imports (relative imports resolved, ``from X import sub`` -> X.sub)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / "rdmacheck").rglob("*.py")):
        mod = _module(path, root)
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "rdmacheck"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == "rdmacheck":
                    target = node.module
                else:
                    continue
                subs = {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}", root)}
                out |= subs or {target}
                if subs and len(subs) < len(node.names):
                    out.add(target)
        out.discard(mod)
        graph[mod] = out
    return graph


def area(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "rdmacheck"


def test_every_area_has_a_layer():
    missing = sorted({area(m) for m in import_graph()} - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS here and to docs/architecture.md"


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if LAYERS[area(t)] > LAYERS[area(m)])


def test_no_import_reaches_up_a_layer():
    bad = upward(import_graph())
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(bad)


def test_named_rules_of_the_issue():
    g = import_graph()
    # the report renders evidence; it never reaches back into the command that produced it
    assert not [t for m, ts in g.items() if area(m) == "report" for t in ts if area(t) == "cluster"]
    # the bench uses the gates' public functions, never a checks/ internal (an underscore name)
    internal = []
    for path in sorted((PKG / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("checks", "rdmacheck.checks")):
                internal += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not internal, internal


def find_cycle(g: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                cycle.extend(stack[stack.index(t):] + [m, t] if t in stack else [m, t])
                return True
            if state.get(t) is None and visit(t, stack + [t]):
                return True
        state[m] = 2
        return False

    for m in sorted(g):
        if state.get(m) is None and visit(m, [m]):
            break
    return cycle


def test_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert not cycle, " -> ".join(cycle)


def test_the_checker_sees_planted_violations(tmp_path):
    """The checks can fail: in a copy of the tree, a lazy report -> cluster import is an upward arrow,
    and model -> evidence (which imports model) closes a cycle."""
    import shutil

    shutil.copytree(PKG, tmp_path / "rdmacheck", ignore=shutil.ignore_patterns("__pycache__", "templates"))
    build = tmp_path / "rdmacheck" / "report" / "build.py"
    build.write_text(build.read_text() + "\n\ndef _late():\n    from ..cluster import driver  # noqa\n")
    model = tmp_path / "rdmacheck" / "model.py"
    model.write_text(model.read_text() + "\n\ndef _late():\n    from .evidence import parse  # noqa\n")
    g = import_graph(tmp_path)
    assert "rdmacheck.report.build -> rdmacheck.cluster.driver" in upward(g)
    cycle = find_cycle(g)
    assert "rdmacheck.model" in cycle and "rdmacheck.evidence" in cycle, cycle
