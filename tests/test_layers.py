"""The import graph of rdmacheck/ is acyclic and layered, as docs/architecture.md ("Layers") says.

Parsed with ast from the source, every import counted, also those inside functions (a lazy import is
still an arrow: it only moves the failure to run time).  Nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "rdmacheck"

# area -> layer; an area imports only areas of a lower or equal layer.  An area is a package or module
# under rdmacheck/ ("bench"), or a part of one named by its dotted path ("preflight.facts"): a module
# belongs to the longest area its path starts with.  The same table is in docs/architecture.md.
LAYERS: dict[str, int] = {
    "rdmacheck": 0, "util": 0, "nccl": 0, "evidence.boundedjson": 0,
    "evidence": 1,
    "preflight.root": 2, "config": 2,
    "preflight.facts": 3, "preflight.nodefacts": 3, "preflight.gather": 3, "verbs": 3,
    "preflight.registry": 4, "preflight.checks": 4,
    "preflight": 5, "importers": 5, "output": 5,
    "bench": 6, "launch": 6, "watch": 6, "link": 6,
    "report": 7,
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
    parts = mod.split(".")[1:]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    return "rdmacheck"


def test_every_area_has_a_layer():
    missing = sorted(m for m in import_graph() if m != "rdmacheck" and area(m) == "rdmacheck")
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
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("checks", "rdmacheck.preflight.checks")):
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
    and evidence.model -> evidence.schema (which imports model) closes a cycle."""
    import shutil

    shutil.copytree(PKG, tmp_path / "rdmacheck", ignore=shutil.ignore_patterns("__pycache__", "templates"))
    build = tmp_path / "rdmacheck" / "report" / "build.py"
    build.write_text(build.read_text() + "\n\ndef _late():\n    from ..cluster import driver  # noqa\n")
    model = tmp_path / "rdmacheck" / "evidence" / "model.py"
    model.write_text(model.read_text() + "\n\ndef _late():\n    from .schema import parse  # noqa\n")
    g = import_graph(tmp_path)
    assert "rdmacheck.report.build -> rdmacheck.cluster.driver" in upward(g)
    cycle = find_cycle(g)
    assert "rdmacheck.evidence.model" in cycle and "rdmacheck.evidence.schema" in cycle, cycle


# ------------------------------------------------------------------ the package layout and the one gate registry

# What the package root holds: the version, the entry points, and the published converter's command name.
ROOT_MODULES = {"__init__.py", "__main__.py", "cli.py", "evidence_v1.py"}
PACKAGES = {"bench", "cluster", "commands", "config", "evidence", "importers", "launch", "link", "nccl", "output",
            "preflight", "report", "util", "verbs", "watch"}


def test_package_layout():
    """The main job is one package (rdmacheck/preflight/), the evidence format, NCCL's rules and the small
    helpers one package each; nothing else lies loose at the package root."""
    loose = {p.name for p in PKG.glob("*.py")}
    assert loose == ROOT_MODULES, f"loose modules at rdmacheck/: {sorted(loose - ROOT_MODULES)}"
    pkgs = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert pkgs == PACKAGES, pkgs ^ PACKAGES
    pre = {p.name for p in (PKG / "preflight").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert {"root.py", "gather.py", "nodefacts.py", "registry.py", "judge.py", "snapshot.py", "facts",
            "checks"} <= pre, pre


def gate_functions(root: Path = REPO) -> dict[str, int]:
    """'module:function' -> line, for every gate-shaped function under preflight/checks/: a ``gate_*`` name or
    a decorator called ``gate``."""
    out = {}
    for path in sorted((root / "rdmacheck" / "preflight" / "checks").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            decorated = any((isinstance(d, ast.Call) and getattr(d.func, "id", "") == "gate")
                            or getattr(d, "id", "") == "gate" for d in node.decorator_list)
            if node.name.startswith("gate_") or decorated:
                out[f"{path.stem}:{node.name}"] = node.lineno
    return out


def registry_targets(root: Path = REPO) -> set[str]:
    """The ``target`` of every GateInfo in registry.py, read from the source (nothing imported)."""
    tree = ast.parse((root / "rdmacheck" / "preflight" / "registry.py").read_text())
    return {c.args[1].value for c in ast.walk(tree)
            if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "GateInfo" and len(c.args) > 1}


def unregistered(root: Path = REPO) -> list[str]:
    return sorted(set(gate_functions(root)) - registry_targets(root))


def test_every_gate_is_in_the_registry_and_nothing_else_lists_them():
    from rdmacheck.preflight.registry import GATES, gate_ids

    assert not unregistered(), f"gate functions missing from rdmacheck/preflight/registry.py: {unregistered()}"
    assert registry_targets() == set(gate_functions()), "a registry entry names no gate function"
    assert len(set(gate_ids())) == len(gate_ids()), "a result id is declared twice"
    for info in GATES:
        assert set(info.live_only) <= set(info.ids), info
        assert (REPO / info.doc).is_file(), info.doc
    # no other module writes a list of gate ids: a collection literal with two or more of them.  One
    # cross-reference table may name them: the preflight gates that catch each socket-fallback cause.
    ids = set(gate_ids())
    lists = []
    for path in sorted(PKG.rglob("*.py")):
        if path.relative_to(PKG).as_posix() in ("preflight/registry.py", "bench/gates.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                elts = node.keys if isinstance(node, ast.Dict) else node.elts
                named = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in ids]
                if len(named) >= 2:
                    lists.append(f"{path.relative_to(REPO)}:{node.lineno}: {named}")
    assert not lists, "gate ids listed outside the registry:\n" + "\n".join(lists)
    from rdmacheck.bench.gates import CAUSES

    named = {i for _, gates, _ in CAUSES.values() for i in gates}
    assert named <= ids, f"bench/gates.py names gates the registry does not have: {sorted(named - ids)}"


def test_every_gate_is_in_the_docs_table():
    from rdmacheck.preflight.registry import GATES

    for info in GATES:
        text = (REPO / info.doc).read_text()
        for i in info.ids:
            assert f"`{i}`" in text, f"{i} is not described in {info.doc}"


def test_a_planted_gate_outside_the_registry_is_found(tmp_path):
    import shutil

    shutil.copytree(PKG, tmp_path / "rdmacheck", ignore=shutil.ignore_patterns("__pycache__", "templates"))
    assert unregistered(tmp_path) == []
    rdma = tmp_path / "rdmacheck" / "preflight" / "checks" / "rdma.py"
    rdma.write_text(rdma.read_text() + "\n\n@gate('rdma.extra')\ndef check_extra(facts, config):\n    return []\n")
    limits = tmp_path / "rdmacheck" / "preflight" / "checks" / "limits.py"
    limits.write_text(limits.read_text() + "\n\ndef gate_nofile(facts, config):\n    return []\n")
    assert unregistered(tmp_path) == ["limits:gate_nofile", "rdma:check_extra"]
