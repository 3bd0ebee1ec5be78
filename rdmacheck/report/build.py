"""Evidence from many nodes and runs -> one report model (plain dicts for the template).

Nodes are keyed by ``Evidence.host``.  Preflight, launch and cluster evidence
give a node its gates (the newest result per gate id wins, so a launch's
waiver overrides the earlier preflight's bare failure); bench evidence gives
runs to plot; every evidence file contributes to the fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .. import __version__
from rdmacheck.evidence.schema import (BenchContext, ClusterContext, PreflightContext, bench_records, context_of,
                                       expected_busbw, preflight_facts)
from rdmacheck.evidence.model import Evidence, Result, Status, now_iso, worst
from rdmacheck.nccl.plateau import DEFAULT_MIN_BYTES
from rdmacheck.util.units import decimal_bytes
from . import consistency
from .bench import Run
from .load import Loaded

GATE_KINDS = ("preflight", "launch", "cluster", "link")
PATH_PROOF_IDS = ("bench.transport", "bench.wire")
DEFAULT_EXPECTED_BUSBW = 12.0   # GB/s: one 100 Gb/s RoCE link, the reference cluster
# above this many nodes every node's table starts folded; below, failing ones start open
OPEN_FAILING_UP_TO = 16


@dataclasses.dataclass
class Node:
    host: str
    results: list[tuple[Result, str]]           # (result, evidence kind it came from)
    files: list[str]
    times: list[str]
    kinds: list[str]

    @property
    def status(self) -> Status:
        return worst(r.effective_status for r, _ in self.results)

    def counts(self) -> dict[str, int]:
        c = {s.value: 0 for s in Status}
        for r, _ in self.results:
            c[r.status.value] += 1
        return c

    def failing(self) -> list[str]:
        return [r.id for r, _ in self.results if r.effective_status is Status.FAIL]


def _short(v: Any, limit: int = 300) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _details_rows(details: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), _short(v)) for k, v in details.items()]


def _result_row(r: Result, kind: str) -> dict[str, Any]:
    return {
        "id": r.id, "status": r.status.value, "effective": r.effective_status.value,
        "observed": r.observed, "expected": r.expected, "remedy": r.remedy, "kind": kind,
        "waiver": r.waiver if isinstance(r.waiver, dict) else None,
        "details": _details_rows(r.details) if r.details else [],
    }


def _expected_busbw(loaded: list[Loaded], override: float | None) -> float | None:
    """--expected-busbw, else the first run's own expectation (each kind records it in one typed field:
    rdmacheck/evidence/schema.py ``expected_busbw``), else one 100 Gb/s link."""
    if override is not None:
        return override
    for l in loaded:
        v = expected_busbw(l.evidence)
        if v is not None:
            return float(v)
    return DEFAULT_EXPECTED_BUSBW


def _run_label(ev: Evidence, path: str) -> str:
    bc = context_of(ev)
    if bc.source == "nccl-tests":
        return f"nccl-tests {Path(path).stem}" + (f" ({bc.world_size} ranks)" if bc.world_size else "")
    backend, ws = bc.backend or "", bc.world_size
    label = f"rdmacheck {backend} @{ev.host}".replace("  ", " ")
    if ws:
        label += f" ({ws} ranks)"
    if ev.time:
        label += f" {ev.time[:16]}"
    return label


@dataclasses.dataclass
class _Gathered:
    """What build's one pass over the evidence files sorts out, for the later phases."""
    by_host: dict[str, list[Loaded]] = dataclasses.field(default_factory=dict)
    runs: list[Run] = dataclasses.field(default_factory=list)
    path_proof: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    bench_gates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fingerprint: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cluster_gates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    path_nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pairwise: dict[str, Any] | None = None
    # what keeps the page from PASS although no gate failed
    unjudged: list[str] = dataclasses.field(default_factory=list)


def build(loaded: list[Loaded], imported: list[Loaded] | None = None, title: str | None = None,
          expected_busbw: float | None = None) -> dict[str, Any]:
    everything = loaded + (imported or [])
    g = _gather(everything)
    g.bench_gates += _fabric_rows(everything)

    by_host = _split_same_names(g.by_host)
    nodes = _merge_nodes(by_host)
    facts = [consistency.node_facts(h, [l.evidence for l in by_host[h]]) for h in sorted(by_host)]
    rows = consistency.compare(facts) if len(facts) >= 2 else []
    mism = consistency.mismatches(rows)
    waivers = _waiver_rows(nodes, g.bench_gates + g.path_proof)

    expected = _expected_busbw(everything, expected_busbw)
    from . import bench as benchmod

    # pandas and matplotlib cost seconds to import: only when there is something to plot
    df = benchmod.frame(g.runs) if g.runs else None
    summ = benchmod.summaries(df, expected) if g.runs else []
    verdict, reason = _verdict(nodes, mism, g.bench_gates + g.path_proof, summ, expected, g.cluster_gates, g.unjudged)

    many = len(nodes) > OPEN_FAILING_UP_TO
    quarantined = _quarantine_view(everything)
    node_rows = _node_rows(nodes, {q["node"] for q in quarantined}, many)
    return {
        "title": title or "Cluster acceptance report",
        "generated": now_iso(),
        "tool_version": __version__,
        "verdict": verdict,
        "reason": reason,
        "nodes": node_rows,
        "node_count": len(nodes),
        "failed_nodes": sum(1 for n in nodes if n.status is Status.FAIL),
        "gate_failures": _gate_failures(nodes),
        "fold_node_table": len(nodes) > 64,
        "many_nodes": many,
        "consistency": [_row_dict(r) for r in rows],
        "consistency_single": len(facts) == 1,
        "mismatches": [r.label for r in mism],
        **_bench_context(g.runs, df, summ, expected, g.bench_gates),
        "expected_busbw": expected,
        "bench_gates": g.bench_gates,
        "cluster_gates": g.cluster_gates,
        "pairwise": g.pairwise,
        "quarantined": quarantined,
        "path_proof": g.path_proof,
        "path_nodes": g.path_nodes,
        "waivers": waivers,
        "fingerprint": g.fingerprint,
        "skipped_files": [],
        "changed_since": [],   # report --baseline fills it (rdmacheck/report/diff.py)
    }


def _gather(everything: list[Loaded]) -> _Gathered:
    """One pass over every file: its fingerprint row, then fleet gates, node gate evidence or bench output."""
    g = _Gathered()
    for l in everything:
        ev = l.evidence
        typed = context_of(ev, l.path)
        g.unjudged += _unjudged(l)
        g.fingerprint.append(_fingerprint_row(l, typed))
        if isinstance(typed, ClusterContext) and typed.is_fleet:
            # the cluster-wide document of `rdmacheck cluster` (host "ray-cluster"): its gates
            # judge the fleet, not a node, and it carries the pairwise matrix
            for r in ev.results:
                row = _result_row(r, ev.kind)
                row["host"] = ev.host
                g.cluster_gates.append(row)
            if typed.pairwise is not None:
                g.pairwise = _pairwise_view(typed.pairwise)
        elif ev.kind in GATE_KINDS:
            g.by_host.setdefault(_node_key(ev), []).append(l)
        if isinstance(typed, BenchContext):
            _gather_bench(g, l, typed)
    return g


def _fingerprint_row(l: Loaded, typed: Any) -> dict[str, Any]:
    ev = l.evidence
    imported = isinstance(typed, BenchContext) and typed.source == "nccl-tests"
    return {
        "file": l.path, "kind": ev.kind, "host": ev.host, "time": ev.time,
        "tool": "nccl-tests " + (typed.nccl_tests_version or "") if imported else f"rdmacheck {ev.tool_version}",
        "status": ev.status.value if ev.results else "",
        "versions": _versions(ev),
    }


def _gather_bench(g: _Gathered, l: Loaded, typed: BenchContext) -> None:
    """A bench file's run to plot, its per-node path rows, and its gates (path proofs kept apart)."""
    ev = l.evidence
    if ev.records:
        g.runs.append(Run(label=_run_label(ev, l.path), source=typed.source,
                          path=l.path, host=ev.host, time=ev.time, context=ev.context, records=bench_records(ev, l.path),
                          plateau_min_bytes=typed.plateau_min_bytes or DEFAULT_MIN_BYTES))
    pp = typed.path_proof
    if isinstance(pp, dict) and isinstance(pp.get("nodes"), dict) and pp["nodes"]:
        g.path_nodes.append({"run": _run_label(ev, l.path), "rows": _path_nodes(pp["nodes"], ev.records)})
    for r in ev.results:
        row = _result_row(r, ev.kind)
        row["host"] = ev.host
        if r.id == "bench.latency":
            row["_details"] = r.details  # structured, for the latency panel's ceilings
        if r.id in PATH_PROOF_IDS:
            row.update(_proof_view(r, ev.records))
            g.path_proof.append(row)
        else:
            g.bench_gates.append(row)


def _fabric_rows(everything: list[Loaded]) -> list[dict[str, Any]]:
    """Fabric vs NCCL: each link run against each bench run with a path proof (report/fabric.py)."""
    from . import fabric

    links = [l.evidence for l in everything if l.evidence.kind == "link"]
    benches = [l.evidence for l in everything if l.evidence.kind == "bench"
               and any(r.id == "bench.transport" for r in l.evidence.results)]
    rows = []
    for lk in links:
        for bn in benches:
            r = fabric.verdict(lk, bn)
            row = _result_row(r, "bench")
            row["host"] = f"{lk.host} link / {bn.host} bench"
            rows.append(row)
    return rows


def _merge_nodes(by_host: dict[str, list[Loaded]]) -> list[Node]:
    """One Node per host, its files taken oldest first so the newest result per gate id wins."""
    nodes: list[Node] = []
    for host in sorted(by_host):
        merged: dict[str, tuple[Result, str]] = {}
        ls = sorted(by_host[host], key=lambda x: x.evidence.time or "")
        for l in ls:
            for r in l.evidence.results:
                merged[r.id] = (r, l.evidence.kind)  # newest evidence wins per gate
        nodes.append(Node(host, list(merged.values()), [l.path for l in ls],
                          [l.evidence.time for l in ls], sorted({l.evidence.kind for l in ls})))
    return nodes


def _waiver_rows(nodes: list[Node], gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    waivers = [_waiver(n.host, r.id, r.observed, r.waiver) for n in nodes for r, _ in n.results if isinstance(r.waiver, dict)]
    waivers += [_waiver(g["host"], g["id"], g["observed"], g["waiver"]) for g in gates if g.get("waiver")]
    return waivers


def _node_rows(nodes: list[Node], q_hosts: set[str], many: bool) -> list[dict[str, Any]]:
    node_rows = []
    # quarantined nodes first: they are what an operator acts on
    for n in sorted(nodes, key=lambda n: n.host not in q_hosts):
        c = n.counts()
        node_rows.append({
            "host": n.host, "status": n.status.value, "counts": c, "failing": n.failing(),
            "kinds": n.kinds, "times": n.times, "files": n.files,
            "open": (not many) and n.status is Status.FAIL,
            "results": [_result_row(r, k) for r, k in n.results],
        })
    return node_rows


def _bench_context(runs: list[Run], df: Any, summ: list[dict[str, Any]], expected: float | None,
                   bench_gates: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' part of the context, in the template's key order; no pandas work without runs."""
    from . import bench as benchmod

    return {
        "runs": [{"label": r.label, "source": r.source, "path": r.path, "host": r.host, "time": r.time,
                  "notes": r.context.get("notes") or [], "world_size": r.context.get("world_size"),
                  "avg_busbw": r.context.get("avg_busbw"), "algo": _algo(r.context)} for r in runs],
        "summaries": summ,
        "tables": benchmod.tables(df) if runs else [],
        "plots": benchmod.plots(df, expected, _latency_limits(bench_gates)) if runs else [],
        "csv_uri": benchmod.csv_data_uri(df) if runs else None,
    }


def _latency_limits(bench_gates: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """bench.latency's ceilings per op, from the gate rows' details (an every-op ceiling goes to every op)."""
    from ..bench.latency import parse_latency_table
    from rdmacheck.util.errors import UsageError

    out: dict[str, dict[int, float]] = {}
    for g in bench_gates:
        if g.get("id") != "bench.latency":
            continue
        raw = dict(g.get("_details") or {}).get("limits")
        try:
            limits = parse_latency_table(raw or [], "evidence bench.latency")
        except UsageError:
            continue  # foreign or damaged evidence: the plot goes without the ceilings
        ops = {r.get("op") for r in (g.get("_details") or {}).get("rows") or [] if isinstance(r, dict)}
        for op, b, us in limits:
            for o in ([op] if op else sorted(x for x in ops if x)):
                out.setdefault(o, {})[b] = us
    return {op: sorted(d.items()) for op, d in out.items()}


def _algo(ctx: dict[str, Any]) -> str | None:
    """The NCCL algorithm a bench run recorded (bench --algo, context.algo), as its table header says it."""
    from ..bench.algo import label

    return label(ctx["algo"]) if isinstance(ctx.get("algo"), dict) else None


def _on(value: str, hosts: list[str]) -> str:
    """'1500 on spark-02' for a few nodes (the odd one out is named), '9000 on 511 nodes' for many."""
    return f"{value} on {', '.join(hosts)}" if len(hosts) <= 3 else f"{value} on {len(hosts)} nodes"


def _gate_failures(nodes: list[Node]) -> list[dict[str, Any]]:
    """Failing gate id -> how many nodes and which: the summary a large fleet reads first."""
    by: dict[str, list[str]] = {}
    for n in nodes:
        for gid in n.failing():
            by.setdefault(gid, []).append(n.host)
    return [{"id": g, "count": len(h), "hosts": sorted(h)}
            for g, h in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def _waiver(host: str, gid: str, observed: str, w: dict[str, Any]) -> dict[str, str]:
    def get(k: str) -> str:
        v = w.get(k)
        return "" if v is None else str(v)

    return {"host": host, "id": gid, "observed": observed, "reason": get("reason"), "user": get("user"), "time": get("time")}


def _path_nodes(nodes: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """context.path_proof.nodes (bench path-proof hook): one line per node, transport next to
    the bytes its NICs carried at the largest judged size and the busbw measured at that size."""
    bw = {(x.get("op"), x.get("bytes")): x.get("busbw") for x in records if isinstance(x, dict)}
    out = []
    for host in sorted(nodes):
        d = nodes[host] if isinstance(nodes[host], dict) else {}
        w = d.get("wire") if isinstance(d.get("wire"), dict) else {}
        paths = d.get("paths") if isinstance(d.get("paths"), dict) else {}
        hostnames = [str(h) for h in (d.get("hostnames") or []) if str(h) != host]
        out.append({
            # the node as NCCL counts it (its NCCL host id); the machine's host name beside it when they differ
            "host": _node_label(host) + (f" (host {', '.join(hostnames)})" if hostnames else ""),
            "ranks": ", ".join(map(str, d.get("ranks") or [])),
            "net": d.get("net_plugin") or "none (no NET channel)",
            "links": ", ".join(map(str, d.get("links") or [])),
            "gdr": "" if d.get("gdr_enabled") is None else ("on" if d.get("gdr_enabled") else "off"),
            "hcas": ", ".join(map(str, d.get("used_hcas") or [])),
            "paths": ", ".join(f"{k} x{v}" for k, v in paths.items()),
            "wire_size": f"{w.get('op', '')} {decimal_bytes(w.get('bytes'))}".strip() if w else "",
            "measured": decimal_bytes(w.get("measured_bytes")) if w else "",
            "expected": decimal_bytes(w.get("expected_bytes")) if w else "",
            "ratio": w.get("ratio") if w else None,
            "devices": ", ".join(map(str, w.get("devices") or [])) if w else "",
            "verdict": str(w.get("verdict") or "") if w else "",
            "busbw": bw.get((w.get("op"), w.get("bytes"))) if w else None,
        })
    return out


def _node_label(node_id: str) -> str:
    """An NCCL host id for people: NCCL_HOSTID as given, host name + boot id shortened (facts/nodeid.py)."""
    from rdmacheck.preflight.facts.nodeid import SOURCE_BOOT, short

    return short(str(node_id), SOURCE_BOOT)


def _proof_view(r: Result, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The path proof laid out for people: transport facts and ranked causes, bytes on the
    wire per size and node next to the bandwidth measured at that size.  Tolerant: any key
    the gate did not write is left out."""
    d = r.details or {}
    out: dict[str, Any] = {"facts": [], "causes": [], "wire_rows": []}
    if r.id == "bench.transport":
        paths = d.get("paths")
        facts = [
            ("network plugin", d.get("net_plugin")),
            ("expected", " ".join(str(x) for x in (d.get("expected_net"), d.get("expected_link")) if x)
             + (f", GDR {'on' if d.get('expected_gdr') else 'off'}" if d.get("expected_gdr") is not None else "")),
            ("GPU Direct RDMA", None if d.get("gdr_enabled") is None else ("enabled" if d.get("gdr_enabled") else "disabled")),
            ("HCAs used", ", ".join(map(str, d.get("used_hcas") or [])) or None),
            ("GID index", ", ".join(map(str, d.get("gid_indexes") or [])) or None),
            ("channel paths", ", ".join(f"{k} x{v}" for k, v in paths.items()) if isinstance(paths, dict) and paths else None),
            ("socket devices", ", ".join(map(str, d.get("socket_devices") or [])) or None),
            ("NCCL", d.get("nccl_version")),
            ("hosts", ", ".join(map(str, d.get("hosts") or [])) or None),
        ]
        out["facts"] = [(k, str(v)) for k, v in facts if v not in (None, "")]
        for c in d.get("causes") or []:
            if isinstance(c, dict):
                out["causes"].append({
                    "rank": c.get("rank"), "title": str(c.get("title") or c.get("cause") or ""),
                    "evidence": "; ".join(map(str, c.get("evidence") or [])),
                    "remedy": str(c.get("remedy") or ""), "gates": ", ".join(map(str, c.get("preflight_gates") or [])),
                })
    elif r.id == "bench.wire":
        shared = d.get("shared_counters") if isinstance(d.get("shared_counters"), dict) else {}
        out["facts"] = [(k, str(v)) for k, v in (
            ("nodes compared by", d.get("compared_by")),
            ("nodes", ", ".join(_node_label(str(x)) for x in d.get("nodes") or []) or None),
            ("one namespace's counters", "; ".join(" + ".join(_node_label(str(x)) for x in v) for v in shared.values()
                                                   if isinstance(v, list)) or None),
        ) if v not in (None, "")]
        bw = {(x.get("op"), x.get("bytes")): x.get("busbw") for x in records if isinstance(x, dict)}
        for row in d.get("rows") or []:
            if not isinstance(row, dict):
                continue
            for n in row.get("nodes") or []:
                if not isinstance(n, dict):
                    continue
                devs = {**(n.get("hcas") or {}), **(n.get("netdevs") or {})}
                out["wire_rows"].append({
                    "op": row.get("op"), "size": decimal_bytes(row.get("bytes")),
                    "busbw": bw.get((row.get("op"), row.get("bytes"))),
                    "node": (f"{_node_label(n['node'])} on {n.get('host', '?')}" if n.get("node") not in (None, n.get("host"))
                             else str(n.get("host", "?"))) + f" (rank {n.get('rank', '?')})",
                    "devices": ", ".join(sorted(map(str, devs))) or "none watched",
                    "expected": decimal_bytes(n.get("expected_bytes", row.get("expected_bytes"))),
                    "measured": decimal_bytes(n.get("measured_bytes")),
                    "ratio": n.get("ratio"), "verdict": str(row.get("verdict") or ""),
                })
    if out["facts"] or out["causes"] or out["wire_rows"]:
        out["details"] = []  # shown in structured form instead of the raw key/value dump
    return out


def _pairwise_view(data: dict[str, Any]) -> dict[str, Any]:
    """context.pairwise of `rdmacheck cluster --pairwise` -> heatmap (an SVG image) and flagged links."""
    import base64

    view: dict[str, Any] = {
        "nodes": len(data.get("nodes") or []), "measured": data.get("measured"), "pairs": data.get("pairs"),
        "rounds": len(data.get("rounds") or []), "expected": data.get("expected"), "median": data.get("median"),
        "flagged": [{"a": str(f.get("a", "")), "b": str(f.get("b", "")), "busbw": f.get("busbw"), "why": str(f.get("why", ""))}
                    for f in (data.get("flagged") or [])[:500] if isinstance(f, dict)],
        "uri": None,
    }
    try:
        from ..output.heatmap import heatmap_svg

        svg = heatmap_svg(data)
        # as an <img>, the SVG is an image: nothing in it can run, whatever a label holds
        view["uri"] = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    except Exception:  # an older or partial matrix: the table of flagged links still shows
        pass
    return view


def _quarantine_view(loaded: list[Loaded]) -> list[dict[str, Any]]:
    """context.isolate of `rdmacheck cluster --isolate` -> the quarantined nodes (new ones, then those left out)."""
    data: dict[str, Any] = {}
    for l in loaded:  # the fleet document (kind cluster, with nodes) of an --isolate run
        ctx = l.evidence.context if isinstance(l.evidence.context, dict) else {}
        if l.evidence.kind == "cluster" and isinstance(ctx.get("nodes"), list) and isinstance(ctx.get("isolate"), dict):
            data = ctx["isolate"]
    applied = bool(data.get("quarantine_applied"))
    out = [{"node": str(q.get("node", "")), "kind": str(q.get("kind", "")), "reason": str(q.get("reason", "")),
            "time": str(q.get("time", "")), "state": "quarantined now" if applied else "would be quarantined"}
           for q in data.get("quarantined") or [] if isinstance(q, dict)]
    before = data.get("quarantined_before")
    for node, q in sorted(before.items()) if isinstance(before, dict) else []:
        if isinstance(q, dict):
            out.append({"node": str(node), "kind": str(q.get("kind", "")), "reason": str(q.get("reason", "")),
                        "time": str(q.get("time", "")), "state": "quarantined before, not measured"})
    return out


def _row_dict(r: consistency.Row) -> dict[str, Any]:
    return {"key": r.key, "label": r.label, "why": r.why, "agree": r.agree, "reported": r.reported,
            "groups": r.groups(), "values": r.values}


def _versions(ev: Evidence) -> str:
    """kernel, python, torch, NCCL, driver, CUDA, Ray: each from the one field its kind records it in."""
    ctx = context_of(ev)
    found: dict[str, Any] = {}

    def put(label: str, v: Any) -> None:
        if label not in found and isinstance(v, (str, int, float)) and not isinstance(v, bool) and v != "":
            found[label] = v

    if isinstance(ctx, PreflightContext):      # preflight and launch
        facts = preflight_facts(ev)
        put("kernel", facts.get("kernel"))
        put("python", ctx.raw.get("python"))
        put("nccl", facts.get("nccl_version"))
        put("driver", facts.get("driver_version"))
        put("cuda", facts.get("cuda_version"))
    elif isinstance(ctx, BenchContext):
        put("torch", ctx.torch_version)
        put("nccl", ctx.nccl_version)
        put("nccl-tests", ctx.nccl_tests_version)
    elif isinstance(ctx, ClusterContext):
        put("ray", ctx.raw.get("ray_version"))
    for r in ev.results:
        if r.id == "gpu.nvml":                 # the NVML gate's details (docs/checks-gpu-net.md)
            put("driver", r.details.get("driver_version"))
            put("cuda", r.details.get("cuda_driver_version"))
    return ", ".join(f"{k} {v}" for k, v in found.items())


_ID_SEP = "\x00"


def _node_key(ev: Evidence) -> str:
    nid = ev.context.get("node_id") if isinstance(ev.context, dict) else None
    return f"{ev.host}{_ID_SEP}{nid}" if isinstance(nid, str) and nid else ev.host


def _split_same_names(by_key: dict[str, list[Loaded]]) -> dict[str, list[Loaded]]:
    """Nodes by host name, two machines of one name (cloned VMs are often all "vm") kept apart by their
    machine id: "vm (machine 3f2a91c0)".  A file without an id joins the one machine of its name, if one."""
    ids: dict[str, list[str]] = {}
    for k in by_key:
        host, _, nid = k.partition(_ID_SEP)
        if nid:
            ids.setdefault(host, []).append(nid)
    out: dict[str, list[Loaded]] = {}
    for k, ls in by_key.items():
        host, _, nid = k.partition(_ID_SEP)
        many = len(ids.get(host, [])) > 1
        if nid:
            name = f"{host} (machine {nid[:8]})" if many else host
        else:
            name = f"{host} (no machine id)" if many else host
        out.setdefault(name, []).extend(ls)
    return out


def _unjudged(l: Loaded) -> list[str]:
    """Why one evidence file cannot count towards a PASS although none of its gates failed: a gate that
    could not be judged, a run of rdmacheck's that recorded no gate at all, or a document whose own
    ``status`` is worse than its results (edited, or cut short)."""
    ev = l.evidence
    out = [f"{r.id} on {ev.host} could not be judged ({r.unjudged})" for r in ev.results if r.unjudged]
    imported = ev.kind == "bench" and (ev.context or {}).get("source") == "nccl-tests"
    if not ev.results and not imported:
        out.append(f"{l.path} ({ev.kind} evidence of {ev.host}) holds no gate result: nothing was judged")
    if ev.declared_status is not None and ev.declared_status.rank > ev.status.rank:
        out.append(f"{l.path} says status {ev.declared_status.value!r} but its results say {ev.status.value!r} "
                   "(the document was changed or cut short)")
    return out


def _verdict(nodes: list[Node], mism: list[consistency.Row], bench_results: list[dict[str, Any]],
             summ: list[dict[str, Any]], expected: float | None,
             cluster_results: list[dict[str, Any]] | None = None,
             unjudged: list[str] | None = None) -> tuple[str, str]:
    parts: list[str] = list(dict.fromkeys(unjudged or []))
    for c in cluster_results or []:
        if c["effective"] == "fail":
            parts.append(f"{c['id']}: {c['observed']}")
    failed = [n for n in nodes if n.status is Status.FAIL]
    if len(failed) > 3:
        top = _gate_failures(failed)[:3]
        parts.append(f"{len(failed)} of {len(nodes)} node(s) failed a gate (most common: "
                     + ", ".join(f"{g['id']} on {g['count']}" for g in top) + ")")
    elif failed:
        named = "; ".join(f"{n.host}: {', '.join(n.failing()[:3])}{'…' if len(n.failing()) > 3 else ''}" for n in failed[:3])
        parts.append(f"{len(failed)} of {len(nodes)} node(s) failed a gate ({named})")
    if mism:
        descr = []
        for r in mism[:3]:
            g = [(v, h) for v, h in r.groups() if v != "not reported"]
            descr.append(f"{r.label} differs ({'; '.join(_on(v, h) for v, h in g[:3])})")
        parts.append(", ".join(descr) + (f" and {len(mism) - 3} more setting(s) differ" if len(mism) > 3 else ""))
    bfail = [b for b in bench_results if b["effective"] == "fail"]
    if bfail:
        parts.append("bench gate(s) failed: " + ", ".join(sorted({f"{b['id']} on {b['host']}" for b in bfail})[:4]))
    if parts:
        return "FAIL", "; ".join(parts) + "."
    if not nodes and not bench_results and not cluster_results:
        return "INFO", ("No gates were evaluated: the evidence holds only bench numbers (e.g. imported nccl-tests runs); "
                        "exit 1, since nothing was judged: add preflight, bench, launch or cluster evidence.")
    bits = []
    if nodes:
        bits.append(f"all {len(nodes)} node(s) passed every gate" + (" and agree on MTU, GID, versions and NCCL env" if len(nodes) > 1 else ""))
    own = [s for s in summ if s["source"] == "rdmacheck" and s["plateau_busbw"] is not None]
    if own:
        # the op the bench.busbw gate is bound by: every op must reach the expectation
        low = min(own, key=lambda s: s["plateau_busbw"])
        bits.append(f"the bench plateau reached {low['plateau_busbw']:.2f} GB/s busbw ({low['op']}"
                    + (f", the lowest of {len(own)} ops" if len(own) > 1 else "") + ")"
                    + (f" against {expected:g} GB/s expected" if expected else ""))
    elif bench_results:
        bits.append("every bench gate passed")
    text = ", ".join(bits) or "every gate passed"
    return "PASS", text[0].upper() + text[1:] + "."   # not str.capitalize(): it lowercases "GB/s"
