"""Drift: two views of a node (two nodes, or one node before and after) compared fact by fact and gate by gate.

A *side* is read from an evidence file (preflight, launch: ``context.facts`` and the results) or from a
snapshot (a ``.tar.gz`` written by ``rdmacheck snapshot``, an unpacked one, or any folder holding a ``sys/``
tree such as a real sysfs capture), which is judged in-process by the preflight gates first.

Every fact goes through one function, :func:`flatten`, that turns whatever dict ``context.facts`` holds into
named facts (``ports[roceP2p1s0f0:1].active_mtu``, ``netdevs.enP2p1s0f0np0.mtu``, ``nccl_version``), each in
a group (fabric, GPU, software, limits, container, other) and marked gate-relevant or identity.  Identity
facts (MAC and IP addresses, the GID value derived from the IP, host names) differ between nodes by design:
they are shown, but never make the exit code 1.  Every verdict is compared too (status; the observed text
is shown beside it).

Exit codes of ``rdmacheck diff``: 0 nothing gate-relevant differs, 1 something does, 2 bad input.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Evidence

GROUPS = ("fabric", "GPU", "software", "limits", "container", "other")

# first path component (or gate-id prefix) -> group
_GROUP_OF = {
    "ports": "fabric", "netdevs": "fabric", "rdma_devices": "fabric", "verbs": "fabric", "gid": "fabric",
    "rdma": "fabric", "net": "fabric", "pfc": "fabric", "dcb": "fabric", "peer": "fabric", "devfiles": "fabric",
    "gpu": "GPU", "gpus": "GPU", "nvml": "GPU", "driver_version": "GPU", "cuda_version": "GPU", "gdr": "GPU",
    "bootstrap": "fabric", "pci": "GPU", "nccl_version": "software", "kernel": "software", "nccl": "software", "torch_version": "software",
    "env": "software", "limits": "limits", "memlock": "limits", "stack": "limits", "shm": "limits",
    "docker": "container", "container": "container", "capabilities": "container", "launch": "container",
}
# leaf names that identify a node rather than judge it: shown, never gate-relevant
# (addr_len: the bootstrap address with its prefix, "192.168.100.2/24": each node's own, like addr)
IDENTITY_LEAVES = {"address", "addr", "addr_len", "ipv4", "ipv6", "host", "hostname", "pid", "time", "serial", "uuid",
                   "node_guid", "sys_image_guid"}
# the GID value and the IP in it (the GID *type*, index and subnet verdict are relevant)
IDENTITY_PATHS = (".gid.gid", ".gid.ipv4")
# keys used to name list items: [{"port": "roceP2p1s0f0:1", ...}] -> ports[roceP2p1s0f0:1]
_ITEM_KEYS = ("port", "name", "device", "id", "index", "bus_id")


@dataclasses.dataclass
class Fact:
    name: str
    group: str
    value: Any
    relevant: bool


def _group(path: str) -> str:
    head = path.split(".", 1)[0].split("[", 1)[0]
    return _GROUP_OF.get(head, "other")


def _scalar(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def flatten(facts: Any, prefix: str = "") -> dict[str, Fact]:
    """Whatever ``context.facts`` holds -> ``{name: Fact}``; nested dicts join with '.', lists of records
    are keyed by their port/name/device, lists of scalars compare as sorted lists."""
    out: dict[str, Fact] = {}

    def leaf(path: str, v: Any) -> None:
        last = path.rsplit(".", 1)[-1].split("[", 1)[0]
        relevant = last not in IDENTITY_LEAVES and not any(path.endswith(s) for s in IDENTITY_PATHS)
        out[path] = Fact(path, _group(path), _scalar(v), relevant)

    def walk(path: str, v: Any) -> None:
        if isinstance(v, dict):
            if not v and path:
                leaf(path, {})
            for k in sorted(v, key=str):
                # a key with a dot (a VLAN netdev "mesh0.100") is one record name, not two levels: bracketed,
                # as list records are, so record prefixes and groups stay whole
                k_ = str(k)
                if "." in k_ or "[" in k_:
                    walk(f"{path}[{k_}]" if path else f"[{k_}]", v[k])
                else:
                    walk(f"{path}.{k_}" if path else k_, v[k])
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                key = next((str(x[k]) for k in _ITEM_KEYS if x.get(k) not in (None, "")), str(i))
                walk(f"{path}[{key}]", {k: y for k, y in x.items()})
        elif isinstance(v, list):
            leaf(path, sorted((_scalar(x) for x in v), key=lambda s: json.dumps(s, default=str)))
        else:
            leaf(path, v)

    walk(prefix, facts if facts is not None else {})
    return out


@dataclasses.dataclass
class Side:
    label: str
    source: str                      # "evidence" or "snapshot"
    facts: dict[str, Fact]
    verdicts: dict[str, tuple[str, str]]   # gate id -> (status, observed)
    evidence: Evidence


def side_from_evidence(ev: Evidence, label: str, source: str = "evidence") -> Side:
    ctx = ev.context if isinstance(ev.context, dict) else {}
    # as a file holds it: a snapshot judged now carries tuples where the evidence file read back has lists
    ctx = json.loads(json.dumps(ctx, default=str))
    facts = flatten(ctx.get("facts") if isinstance(ctx.get("facts"), dict) else {})
    cfg = ctx.get("config") if isinstance(ctx.get("config"), dict) else {}
    # the NCCL environment and the expectations judged against are gate-relevant too
    facts.update(flatten(cfg.get("env") or {}, "env"))
    for name, f in flatten(cfg.get("profile") or {}, "expect").items():
        facts[name] = dataclasses.replace(f, group="other")
    verdicts = {r.id: (r.effective_status.value, r.observed) for r in ev.results}
    return Side(label, source, facts, verdicts, ev)


def _is_snapshot_dir(p: Path) -> bool:
    return (p / "sys").is_dir() or (p / "rdmacheck").is_dir() or (p / "proc").is_dir()


def judge_snapshot(root_dir: Path, env: str | None, profile: str | None, expect: list[str] | None) -> Evidence:
    """Preflight, in-process, on an unpacked snapshot or capture (read-only)."""
    from rdmacheck import preflight
    from rdmacheck.preflight.root import HostRoot

    return preflight.run(HostRoot(str(root_dir)), env=env, profile=profile, expect=expect).evidence()


def load_side(arg: str, env: str | None = None, profile: str | None = None, expect: list[str] | None = None,
              tmp: tempfile.TemporaryDirectory | None = None) -> Side:
    """One input: evidence JSON, snapshot .tar.gz, or a snapshot/capture folder."""
    p = Path(arg)
    if p.is_dir():
        if not _is_snapshot_dir(p):
            raise UsageError(f"{arg}: a folder must be an unpacked snapshot or capture (with sys/, proc/ or rdmacheck/)")
        ev = judge_snapshot(p, env, profile, expect)
        return side_from_evidence(ev, _label(ev, arg), "snapshot")
    if not p.is_file():
        raise UsageError(f"{arg} not found; pass evidence JSON (--json of preflight/launch) or a snapshot")
    name = p.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        from rdmacheck.preflight.root import unpack

        if tmp is None:
            raise UsageError("internal: no temporary folder for the snapshot")
        d = Path(tmp.name) / f"side{len(list(Path(tmp.name).iterdir()))}"
        d.mkdir()
        try:
            d = unpack(p, d)
        except UsageError as e:  # tarfile's "r:*" error spans lines (one per method tried): one line here
            raise UsageError(" ".join(str(e).split())) from None
        ev = judge_snapshot(d, env, profile, expect)
        return side_from_evidence(ev, _label(ev, arg), "snapshot")
    from rdmacheck.report.load import read_one

    ev = read_one(p)
    if ev.kind not in ("preflight", "launch"):
        raise UsageError(f"{arg}: {ev.kind} evidence has no node facts; diff compares preflight or launch "
                         "evidence, or snapshots")
    return side_from_evidence(ev, _label(ev, arg))


def _label(ev: Evidence, arg: str) -> str:
    return f"{Path(arg).name} ({ev.host})" if ev.host else Path(arg).name


MISSING = "(absent)"
OBSERVED_ONLY = "same status, observed differs"


@dataclasses.dataclass
class Row:
    group: str
    name: str
    a: Any
    b: Any
    relevant: bool
    differs: bool
    kind: str               # "fact" or "verdict"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _gate_group(gid: str) -> str:
    return _GROUP_OF.get(gid.split(".", 1)[0], "other")


def _prefixes(name: str) -> list[str]:
    """Proper prefixes of a fact name at record boundaries: 'ports[x].gid.type' -> ['ports', 'ports[x]', 'ports[x].gid']."""
    out, depth = [], 0
    for i, ch in enumerate(name):
        if ch == "[":
            depth += 1
            if depth == 1 and i:
                out.append(name[:i])
        elif ch == "]":
            depth -= 1
            if depth == 0 and i + 1 < len(name):
                out.append(name[: i + 1])
        elif ch == "." and depth == 0:
            out.append(name[:i])
    return out


def _one_sided(a: dict[str, Fact], b: dict[str, Fact]) -> dict[str, str]:
    """fact name -> the shortest record prefix present on one side only (a netdev, a port that exists on
    one node): such a record is one row, not one row per field."""
    pa = {p for n in a for p in _prefixes(n)}
    pb = {p for n in b for p in _prefixes(n)}
    out = {}
    for n in set(a) ^ set(b):
        for p in _prefixes(n):
            if (p in pa) != (p in pb):
                out[n] = p
                break
    return out


def _summary(facts: dict[str, Fact], prefix: str) -> str:
    vals = [f"{n[len(prefix):].lstrip('.')}={_fmt(f.value, 12)}" for n, f in sorted(facts.items())
            if n.startswith(prefix) and f.relevant and f.value not in (None, "", "[]")]
    return "present: " + ", ".join(vals[:4]) + (", …" if len(vals) > 4 else "")


def compare(a: Side, b: Side) -> list[Row]:
    """Every fact and verdict of both sides; differences first (gate-relevant ones first), then by group."""
    rows: list[Row] = []
    collapsed = _one_sided(a.facts, b.facts)
    for prefix in sorted(set(collapsed.values())):
        in_a = any(n.startswith(prefix) for n in a.facts)
        f = next(x for n, x in {**a.facts, **b.facts}.items() if collapsed.get(n) == prefix)
        va = _summary(a.facts, prefix) if in_a else MISSING
        vb = MISSING if in_a else _summary(b.facts, prefix)
        rows.append(Row(f.group, prefix, va, vb, True, True, "fact", "only in " + ("A" if in_a else "B")))
    for name in sorted((set(a.facts) | set(b.facts)) - set(collapsed)):
        fa, fb = a.facts.get(name), b.facts.get(name)
        f = fa or fb
        va = fa.value if fa else MISSING
        vb = fb.value if fb else MISSING
        rows.append(Row(f.group, name, va, vb, f.relevant, va != vb, "fact", "" if f.relevant else "identity"))
    for gid in sorted(set(a.verdicts) | set(b.verdicts)):
        sa, oa = a.verdicts.get(gid, (MISSING, ""))
        sb, ob = b.verdicts.get(gid, (MISSING, ""))
        note = "" if sa != sb or oa == ob else OBSERVED_ONLY
        rows.append(Row(_gate_group(gid), f"gate {gid}", sa, sb, True, sa != sb, "verdict",
                        note if sa == sb else f"{oa[:120]} -> {ob[:120]}"))
    order = {g: i for i, g in enumerate(GROUPS)}
    rows.sort(key=lambda r: (0 if (r.differs and r.relevant) else 1 if r.differs else 2,
                             order.get(r.group, 99), r.kind != "verdict", r.name))
    return rows


def changed(rows: list[Row]) -> list[Row]:
    """The gate-relevant differences: what makes the exit code 1."""
    return [r for r in rows if r.differs and r.relevant]


def to_json(a: Side, b: Side, rows: list[Row]) -> dict[str, Any]:
    ch = changed(rows)
    return {
        "tool": "rdmacheck", "kind": "diff", "a": {"label": a.label, "source": a.source, "host": a.evidence.host,
                                                     "time": a.evidence.time},
        "b": {"label": b.label, "source": b.source, "host": b.evidence.host, "time": b.evidence.time},
        "verdict": "differs" if ch else "same",
        "changed": [r.name for r in ch],
        "groups": {g: [r.to_dict() for r in rows if r.group == g] for g in GROUPS if any(r.group == g for r in rows)},
    }


def _fmt(v: Any, width: int = 40) -> str:
    s = "none" if v is None else str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def render_text(a: Side, b: Side, rows: list[Row], show_same: bool = False) -> str:
    ch = changed(rows)
    lines = [f"A: {a.label}  [{a.source}]", f"B: {b.label}  [{b.source}]", ""]
    wa = max([len(_fmt(r.a)) for r in rows] + [1])
    wb = max([len(_fmt(r.b)) for r in rows] + [1])
    wn = max([len(r.name) for r in rows] + [4])
    for title, part in (("gate-relevant differences", ch),
                        ("other differences (identity, observed text)", [r for r in rows if r.differs and not r.relevant]
                         + [r for r in rows if r.note == OBSERVED_ONLY]),
                        ("same", [r for r in rows if not r.differs and r.note != OBSERVED_ONLY] if show_same else [])):
        if not part:
            continue
        lines.append(f"== {title} ({len(part)})")
        group = None
        for r in part:
            if r.group != group:
                group = r.group
                lines.append(f"  [{group}]")
            lines.append(f"    {r.name:<{wn}}  {_fmt(r.a):<{wa}}  {_fmt(r.b):<{wb}}" + (f"  ({r.note})" if r.note else ""))
    same = sum(1 for r in rows if not r.differs)
    lines.append("")
    if ch:
        lines.append(f"DIFFERS: {len(ch)} gate-relevant difference(s) ({', '.join(r.name for r in ch[:5])}"
                     + (", …" if len(ch) > 5 else "") + f"); {same} of {len(rows)} facts and verdicts the same")
    else:
        lines.append(f"SAME: nothing gate-relevant differs ({same} of {len(rows)} facts and verdicts the same"
                     + ("" if show_same else "; --all lists them") + ")")
    return "\n".join(lines)


def changed_since(baseline: str, loaded: list[Any]) -> list[dict[str, Any]]:
    """For ``report --baseline FILE``: per node in the report whose host matches the baseline's (or the only
    node), the gate-relevant differences from the baseline (differences only; 'identity' ones left out)."""
    tmp = tempfile.TemporaryDirectory(prefix="rdmacheck-baseline-")
    try:
        base = load_side(baseline, tmp=tmp)
    finally:
        tmp.cleanup()
    nodes: dict[str, Any] = {}
    for l in loaded:
        ev = l.evidence
        if ev.kind in ("preflight", "launch") and (ev.host not in nodes or (ev.time or "") >= (nodes[ev.host][0].time or "")):
            nodes[ev.host] = (ev, l.path)
    picked = [nodes[base.evidence.host]] if base.evidence.host in nodes else (list(nodes.values()) if len(nodes) == 1 else [])
    out = []
    for ev, path in picked:
        cur = side_from_evidence(ev, _label(ev, path))
        rows = compare(base, cur)
        out.append({"host": ev.host, "baseline": base.label, "baseline_time": base.evidence.time, "current": cur.label,
                    "current_time": ev.time, "rows": [r.to_dict() for r in rows if r.differs],
                    "relevant": len(changed(rows))})
    if not out:
        out.append({"host": base.evidence.host, "baseline": base.label, "baseline_time": base.evidence.time,
                    "current": None, "current_time": None, "rows": [], "relevant": 0,
                    "unmatched": f"no node in this report is {base.evidence.host!r}"})
    return out
