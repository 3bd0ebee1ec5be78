"""bench.transport and bench.wire: did the bytes take the path we think they took?

Two independent proofs, both pure functions of facts gathered during a bench
run (see :mod:`rdmacheck.bench.path_proof`, which gathers them):

* ``bench.transport`` judges NCCL's own account (parsed NCCL_DEBUG=INFO,
  :mod:`rdmacheck.nccl.log`): between nodes the NET plugin must be the expected
  one (default NET/IB over RoCE), with GPUDirect RDMA when NCCL_NET_GDR_LEVEL
  asks for it.  A fall-back to NET/Socket fails with its likely causes ranked
  (forced by env, RDMA device files, memlock, NCCL_IB_HCA, GID), each cause
  cross-referenced with the node's preflight results when they are given.
* ``bench.wire`` judges counters: the bytes that crossed each node's selected
  HCA/interface during a size against what the collective must move.  Far less
  than that (< ``min_ratio`` x expected, default 0.5) means the traffic went
  elsewhere (management network, loopback, another NIC) and fails.

Expected bytes per node per call (what crosses a node's NICs, sent or
received, whichever is larger), with n ranks, for the ring-style algorithms
NCCL uses at these scales and nccl-tests' ``size`` column as ``bytes``:
all_reduce 2(n-1)/n, all_gather / reduce_scatter / alltoall (n-1)/n,
broadcast and sendrecv 1.  That is nccl-tests' busbw factor: busbw is defined
as the per-rank link traffic.  In a ring each node's out-edge carries what any
rank's out-edge carries, so the formula holds per node also with several GPUs
per node (sum the node's NICs).

gloo (torch's ProcessGroupGloo over TCP): torch calls ``gloo::allreduce``
with no algorithm set, which is gloo's ring (reduce-scatter then all-gather,
2(n-1)/n per rank, the same as NCCL's ring); all_gather is gloo's ring
((n-1)/n of the output), alltoall pairwise ((n-1)/n), sendrecv one message.
reduce_scatter differs: torch's gloo backend moves a full all_reduce and keeps
its slice, 2(n-1)/n of the input -- measured over the veth pair at exactly
2.00x NCCL's (n-1)/n, so gloo's reduce_scatter uses the all_reduce factor.
gloo's broadcast is a binomial tree: the root sends up to log2(n) x size and a
leaf receives size, so "at least 1 x size per node" still holds.  We therefore
assume NCCL's factors for gloo (reduce_scatter aside); the gate is a lower
bound with a wide tolerance.  Measured over the two-namespace veth pair (2
ranks, 4 and 16 MiB, MTU 9000): all_reduce, all_gather, alltoall, broadcast
and sendrecv 1.00x-1.01x of these factors, reduce_scatter 1.00x with the
all_reduce factor.  TCP/IP headers add ~1% at MTU 9000 (more at 1500), within tolerance.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

from rdmacheck.nccl.busbw import FACTORS
from rdmacheck.evidence.schema import parse
from rdmacheck.evidence.model import Evidence, Result, Status
from rdmacheck.nccl.log import NcclLog
from rdmacheck.nccl.spec import hca_selected

TRANSPORT_ID = "bench.transport"
WIRE_ID = "bench.wire"

# Defaults of the wire gate.
MIN_RATIO = 0.5  # measured < 0.5 x expected: the NIC carried far less -> fail
MAX_RATIO = 3.0  # measured > 3 x expected: other traffic shares it or a unit is wrong -> warn
MIN_JUDGE_BYTES = 1 << 20  # per node per size; below it headers, ACKs and background traffic dominate



def wire_factor(op: str, world_size: int, backend: str = "nccl") -> float | None:
    """Bytes per node per call / ``bytes`` (see module doc); None for an unknown op.

    gloo equals NCCL except reduce_scatter, where torch's gloo moves a whole
    all_reduce (2(n-1)/n; measured 2.00x NCCL's factor on 2 ranks).
    """
    if backend == "gloo" and op == "reduce_scatter":
        op = "all_reduce"
    f = FACTORS.get(op)
    if f is None or world_size < 2:
        return None
    return f(world_size)


# ------------------------------------------------------------------ expectations


@dataclasses.dataclass
class PathExpectation:
    """What the inter-node path must be."""

    net: str = "IB"  # "IB", "Socket" or "any"
    link: str | None = "RoCE"  # "RoCE", "IB" or None (either)
    gdr: bool | None = None  # True: every NET channel must say /GDRDMA; None: not judged
    hca_filter: str | None = None  # NCCL_IB_HCA the run was given

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None, net: str | None = None, link: str | None = "RoCE") -> "PathExpectation":
        """Defaults plus what the .env asks: GDR when NCCL_NET_GDR_LEVEL allows it, the HCA filter."""
        env = env or {}
        gdr: bool | None = None
        lvl = (env.get("NCCL_NET_GDR_LEVEL") or "").strip().upper()
        if lvl:
            # LOC (0) forbids GPUDirect RDMA; any other level asks NCCL to use it within that distance.
            gdr = lvl not in ("LOC", "0")
        return cls(net=net or "IB", link=link, gdr=gdr, hca_filter=(env.get("NCCL_IB_HCA") or None))

    def describe(self) -> str:
        s = "NET/Socket" if self.net.lower() == "socket" else ("any NET plugin" if self.net.lower() == "any" else f"NET/{self.net}")
        if self.net.upper() == "IB" and self.link:
            s += f" over {self.link}"
        if self.gdr:
            s += " with GPUDirect RDMA (GDRDMA)"
        return s + " between nodes"


# ------------------------------------------------------------------ preflight cross-reference


def _preflight_index(preflight: Any) -> dict[str, list[tuple[str, Result]]]:
    """Results by gate id from Evidence / [Evidence] / [Result]; each with its host."""
    out: dict[str, list[tuple[str, Result]]] = {}
    if preflight is None:
        return out
    items = preflight if isinstance(preflight, (list, tuple)) else [preflight]
    for it in items:
        if isinstance(it, Evidence):
            for r in it.results:
                out.setdefault(r.id, []).append((it.host, r))
        elif isinstance(it, Result):
            out.setdefault(it.id, []).append(("", it))
        elif isinstance(it, dict) and "results" in it:
            ev = parse(it, "preflight evidence")   # the strict reader: kind, schema version, fields
            for r in ev.results:
                out.setdefault(r.id, []).append((ev.host, r))
    return out


# Cause -> (title, preflight gates that speak to it, remedy).  Order = prior rank
# when nothing else is known (issue 5: device files, memlock, NCCL_IB_HCA, GID).
CAUSES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "forced": (
        "sockets forced by the environment (NCCL_IB_DISABLE=1 or NCCL_NET=Socket)",
        (),
        "unset NCCL_IB_DISABLE / NCCL_NET in the .env and the container environment",
    ),
    "devfiles": (
        "RDMA device files not visible to the process (/dev/infiniband missing in the container, or no RDMA driver)",
        ("rdma.devfiles", "rdma.devices"),
        "give the container the devices (compose: devices: [/dev/infiniband], or --device=/dev/infiniband) and "
        "check `ls /dev/infiniband` shows uverbsN and rdma_cm; load the RDMA driver on the host",
    ),
    "verbs": (
        "libibverbs (rdma-core) not installed where NCCL runs",
        (),
        "install rdma-core/libibverbs1 and the provider (ibverbs-providers) in the image",
    ),
    "memlock": (
        "locked-memory limit too low for RDMA registration (memlock)",
        ("limits.memlock",),
        "run with memlock unlimited (compose: ulimits: memlock: -1; docker run --ulimit memlock=-1)",
    ),
    "hca": (
        "NCCL_IB_HCA selects no usable HCA/port",
        ("rdma.devices", "rdma.port", "nccl.env"),
        "set NCCL_IB_HCA to the RDMA device of the data NIC with its port (e.g. =roceP2p1s0f0:1; "
        "`rdma link` or `ibdev2netdev` lists them) and check that port is ACTIVE",
    ),
    "gid": (
        "no usable RoCE GID (GID index / IPv4 address on the RDMA netdev)",
        ("rdma.gid", "rdma.netdev"),
        "give the RDMA netdev its IPv4 address in the cluster subnet and set NCCL_IB_GID_INDEX to its RoCE v2 GID "
        "(or leave it unset on NCCL >= 2.21, which picks it)",
    ),
}
_PRIOR = {"forced": 0, "devfiles": 4, "verbs": 0, "memlock": 3, "hca": 2, "gid": 1}

_MEMLOCK_HINT = re.compile(r"ibv_reg_mr|reg_mr|Cannot allocate memory|memlock|RLIMIT_MEMLOCK|ENOMEM|ibv_create_cq", re.I)
_GID_HINT = re.compile(r"GID|ibv_modify_qp", re.I)


def rank_causes(log: NcclLog | None, env: Mapping[str, str] | None = None, preflight: Any = None,
                expect: PathExpectation | None = None) -> list[dict[str, Any]]:
    """Likely causes of a fall-back to sockets, most likely first.

    Score = prior order + 10 per direct hint in NCCL's log + 8 per failing
    preflight gate (+2 per warning) + 6 for a telling environment setting;
    a cause whose preflight gates all passed drops by 5 (kept, never hidden:
    preflight may have run on another host or before a change).
    """
    env = dict(env or {})
    if log is not None:
        env = {**log.env, **env}
    pre = _preflight_index(preflight)
    warns = [e.message for e in (log.errors if log else [])]
    out = []
    for key, (title, gates, remedy) in CAUSES.items():
        score = float(_PRIOR[key])
        evidence: list[str] = []
        if key == "forced":
            if str(env.get("NCCL_IB_DISABLE", "")).strip() in ("1", "true", "True"):
                score += 100
                evidence.append(f"NCCL_IB_DISABLE={env['NCCL_IB_DISABLE']}")
            if str(env.get("NCCL_NET", "")).strip().lower() == "socket":
                score += 100
                evidence.append(f"NCCL_NET={env['NCCL_NET']}")
        elif key == "devfiles":
            if log and log.ib_no_device and not env.get("NCCL_IB_HCA"):
                score += 10
                evidence.append("NCCL log: 'NET/IB : No device found.'")
        elif key == "verbs":
            if log and log.libibverbs_missing:
                score += 110
                evidence.append("NCCL log: libibverbs could not be opened")
        elif key == "memlock":
            hits = [w for w in warns if _MEMLOCK_HINT.search(w)]
            if hits:
                score += 10
                evidence.append(f"NCCL WARN: {hits[0][:160]}")
        elif key == "hca":
            spec = env.get("NCCL_IB_HCA")
            if spec:
                if log and log.ib_no_device:
                    score += 16
                    evidence.append(f"NCCL_IB_HCA={spec} and NCCL log: 'NET/IB : No device found.'")
                elif log and log.ib_devices and not any(hca_selected(spec, d.name, d.port) for d in log.ib_devices):
                    score += 10
                    evidence.append(f"NCCL_IB_HCA={spec} matches none of {', '.join(d.name for d in log.ib_devices)}")
                else:
                    evidence.append(f"NCCL_IB_HCA={spec} is set")
                    score += 1
        elif key == "gid":
            hits = [w for w in warns if _GID_HINT.search(w)]
            if hits:
                score += 10
                evidence.append(f"NCCL WARN: {hits[0][:160]}")
            if env.get("NCCL_IB_GID_INDEX"):
                score += 1
                evidence.append(f"NCCL_IB_GID_INDEX={env['NCCL_IB_GID_INDEX']} is forced")
        pre_seen = []
        for g in gates:
            for host, r in pre.get(g, []):
                if g == "nccl.env" and "NCCL_IB_HCA" not in r.observed:
                    continue  # nccl.env judges many variables; only its NCCL_IB_HCA findings speak to this cause
                where = f" on {host}" if host else ""
                pre_seen.append(r.status)
                if r.status is Status.FAIL:
                    score += 8
                    evidence.append(f"preflight {g} failed{where}: {r.observed[:160]}")
                elif r.status is Status.WARN:
                    score += 2
                    evidence.append(f"preflight {g} warned{where}: {r.observed[:160]}")
        if pre_seen and all(s is Status.PASS for s in pre_seen):
            score -= 5
            evidence.append("preflight passed " + ", ".join(g for g in gates if g in pre))
        if key in ("forced", "verbs") and score < 50:
            continue  # only listed when seen: they are certain when present, unlikely otherwise
        out.append({"cause": key, "title": title, "score": score, "evidence": evidence, "remedy": remedy,
                    "preflight_gates": list(gates)})
    out.sort(key=lambda c: -c["score"])
    for i, c in enumerate(out, 1):
        c["rank"] = i
    return out


# ------------------------------------------------------------------ bench.transport


def _count(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


def check_transport(
    log: NcclLog | None,
    expect: PathExpectation | None = None,
    *,
    backend: str = "nccl",
    multi_node: bool | None = None,
    env: Mapping[str, str] | None = None,
    preflight: Any = None,
) -> Result:
    """Judge NCCL's account of the inter-node transport (see module doc)."""
    expect = expect or PathExpectation()
    exp_s = expect.describe()
    if backend != "nccl" or log is None or log.nccl_lines == 0:
        return _transport_unjudgeable(log, backend, exp_s)
    d = _transport_details(log, expect, backend)
    nets = log.net_channels
    if not nets:
        return _transport_without_net(log, multi_node, exp_s, d)

    plugin = max({c.net for c in nets}, key=[c.net for c in nets].count) or "?"
    d["net_plugin"] = plugin
    by_index = {x.index: x for x in log.ib_devices}
    links = sorted({by_index[c.net_dev].link for c in nets if c.net == "IB" and c.net_dev in by_index and by_index[c.net_dev].link})
    d["links"] = links
    status, problems, remedies = _transport_problems(log, expect, plugin, links, d, env, preflight)
    summary = _transport_summary(log, plugin, links, d)
    observed = summary if not problems else "; ".join(problems) + (f" [{summary}]" if plugin == "IB" else "")
    return Result(TRANSPORT_ID, status, observed=observed, expected=exp_s, remedy="; ".join(remedies), details=d)


def _transport_unjudgeable(log: NcclLog | None, backend: str, exp_s: str) -> Result:
    """No NCCL account to judge: another backend (skip) or no NCCL debug output (fail)."""
    if backend != "nccl":
        return Result(TRANSPORT_ID, Status.SKIP, observed=f"backend {backend}: NCCL not in use",
                      expected=exp_s, remedy="", details={"backend": backend,
                      "note": "gloo talks TCP over GLOO_SOCKET_IFNAME; bench.wire proves which interface carried it"})
    return Result(TRANSPORT_ID, Status.FAIL, observed="no NCCL debug output to read: the path cannot be proven",
                  expected=exp_s,
                  remedy="run with NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH and NCCL_DEBUG_FILE "
                         "(rdmacheck bench --hook rdmacheck.bench.path_proof:install sets them)",
                  details={"backend": backend, "sources": list(log.sources) if log else []})


def _transport_details(log: NcclLog, expect: PathExpectation, backend: str) -> dict[str, Any]:
    """What NCCL's log says and what was expected; net_plugin, links, causes (and nodes) are filled in later."""
    return {
        "backend": backend,
        "nccl_version": log.version,
        "hosts": list(log.hosts),
        "net_plugin": log.net_plugin,
        "expected_net": expect.net,
        "expected_link": expect.link,
        "expected_gdr": expect.gdr,
        "ib_devices": [f"{x.name}:{x.port}/{x.link}" for x in log.ib_devices],
        "socket_devices": [f"{x.name}:{x.addr}" for x in log.socket_devices],
        "used_hcas": log.used_hcas(),
        "links": [],
        "gdr_enabled": log.gdr_enabled,
        "gid_indexes": sorted(set(log.gid_indexes)),
        "paths": log.path_kinds,
        "net_channels": len(log.net_channels),
        "errors": [dataclasses.asdict(e) for e in log.completion_errors],
        "causes": [],
        "sources": list(log.sources),
    }


def _transport_without_net(log: NcclLog, multi_node: bool | None, exp_s: str, d: dict[str, Any]) -> Result:
    """No NET channel in the log: fine on one node (skip), unproven across several (fail)."""
    intra = ", ".join(f"{k} x{v}" for k, v in log.path_kinds.items()) or "no channel lines"
    nodes = log.nodes()
    d["nodes"] = nodes
    # The caller knows the world's hosts (bench); else the log itself says how many nodes took part.
    if multi_node is None:
        multi_node = len(nodes) > 1
    if not multi_node:
        return Result(TRANSPORT_ID, Status.SKIP, observed=f"one node ({', '.join(nodes) or 'host not named'}): "
                      f"no network path used ({intra})", expected=exp_s, details=d)
    who = f"{_count(len(nodes))} nodes ({', '.join(nodes)})" if len(nodes) > 1 else "several nodes"
    problems = [f"ranks on {who} but no NET channel in NCCL's log ({intra})"]
    remedies = ["run with NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH so NCCL logs its channels, "
                "and keep every rank's NCCL_DEBUG_FILE"]
    if log.completion_errors:
        e = log.completion_errors[0]
        problems.append(f"NET/IB completion error {e.status} ({e.status_name or '?'}, vendor err "
                        f"{e.vendor_err}) from peer {e.peer}")
        remedies.append("compare both nodes' preflight (rdma.gid, rdma.mtu, rdma.pfc): a GID/subnet or MTU "
                        "mismatch, PFC/ECN drops or a down link")
    return Result(TRANSPORT_ID, Status.FAIL, observed="; ".join(problems), expected=exp_s,
                  remedy="; ".join(remedies), details=d)


def _transport_problems(
    log: NcclLog,
    expect: PathExpectation,
    plugin: str,
    links: list[str],
    d: dict[str, Any],
    env: Mapping[str, str] | None,
    preflight: Any,
) -> tuple[Status, list[str], list[str]]:
    """Each way the NET channels miss the expectation, as (status, problems, remedies) in a fixed order."""
    nets = log.net_channels
    problems: list[str] = []
    remedies: list[str] = []
    status = Status.PASS
    want = expect.net.lower()
    if want != "any" and plugin.lower() != want:
        status = Status.FAIL
        if plugin.lower() == "socket":
            causes = rank_causes(log, env, preflight, expect)
            d["causes"] = causes
            top = causes[0] if causes else None
            problems.append(f"NCCL fell back to NET/Socket ({len(nets)} NET channels via NET/Socket)")
            if top:
                remedies.append(f"most likely: {top['title']} -> {top['remedy']}")
        else:
            problems.append(f"NCCL used NET/{plugin}, not NET/{expect.net}")
            remedies.append("check NCCL_NET / the NET plugin (NCCL_NET_PLUGIN) the container loads")
    if plugin == "IB" and expect.link and links and any(l != expect.link for l in links):
        status = Status.FAIL
        problems.append(f"NET/IB used {'/'.join(links)} links, expected {expect.link}")
        remedies.append(f"restrict NCCL_IB_HCA to the {expect.link} HCA(s) ({', '.join(d['ib_devices'])} were found)")
    if expect.hca_filter and plugin == "IB":
        bad = [h for h in log.used_hcas() if not hca_selected(expect.hca_filter, h)]
        if bad:
            status = Status.FAIL
            problems.append(f"NET channels used {', '.join(bad)}, outside NCCL_IB_HCA={expect.hca_filter}")
            remedies.append("the NCCL_IB_HCA that NCCL saw differs from the .env: check the container environment")
    if expect.gdr and plugin == "IB":
        no_gdr = [c for c in nets if not c.gdr]
        if no_gdr:
            status = Status.FAIL
            problems.append(f"GPUDirect RDMA off on {len(no_gdr)} of {len(nets)} NET channels{_gdr_off_reason(log)}")
            remedies.append("load nvidia_peermem (or use a dma-buf capable kernel/driver) and check NCCL_NET_GDR_LEVEL "
                            "covers the GPU-NIC distance (PCI topology: nvidia-smi topo -m)")
    if log.completion_errors:
        status = Status.FAIL
        e = log.completion_errors[0]
        problems.append(f"NET/IB completion error {e.status} ({e.status_name or '?'}, vendor err {e.vendor_err}) "
                        f"from peer {e.peer}")
        remedies.append("retry-exceeded errors point at the fabric: GID/subnet mismatch between nodes, MTU, PFC/ECN "
                        "drops or a down link; compare both nodes' preflight (rdma.gid, rdma.mtu, rdma.pfc)")
    return status, problems, remedies


def _gdr_off_reason(log: NcclLog) -> str:
    """NCCL's own reason for GPUDirect RDMA being off, as a parenthesised suffix ("" when it gave none)."""
    why = [g for g in log.gdr if not g.enabled]
    if why and why[0].distance is not None:
        return f" (NCCL: distance {why[0].distance} > level {why[0].level})"
    if why and why[0].hca_name:
        return f" (NCCL: GPU Direct RDMA Disabled for HCA '{why[0].hca_name}')"
    return ""


def _transport_summary(log: NcclLog, plugin: str, links: list[str], d: Mapping[str, Any]) -> str:
    """The path NCCL took in one line: plugin, links and, for NET/IB, GDR, HCAs and GID indexes."""
    summary = f"NET/{plugin}" + (f" over {'/'.join(links)}" if links else "")
    if plugin == "IB":
        summary += ", GDRDMA" if log.gdr_enabled else ", no GDRDMA"
        if log.used_hcas():
            summary += f", HCA {', '.join(log.used_hcas())}"
        if d["gid_indexes"]:
            summary += f", GID index {','.join(map(str, d['gid_indexes']))}"
    summary += f" ({len(log.net_channels)} NET channels)"
    return summary


# ------------------------------------------------------------------ bench.wire


def _dev_bytes(devs: Mapping[str, Mapping[str, Any]] | None) -> tuple[int, int]:
    tx = rx = 0
    for v in (devs or {}).values():
        tx += int(v.get("tx") or 0)  # None (counter reset/saturated) counts as nothing; check_wire says so
        rx += int(v.get("rx") or 0)
    return tx, rx


def node_bytes(sample: Mapping[str, Any]) -> int:
    """Bytes that crossed one node's watched NICs during a window.

    Per family (HCA counters, netdev counters): the larger of sent and
    received, summed over the family's devices.  Then the larger family:
    RoCE on mlx5 shows only in the HCA counters (RDMA bypasses the netdev),
    sockets only in the netdev's, and soft-RoCE (rxe) in both -- taking the
    larger never counts one byte twice.
    """
    h = max(_dev_bytes(sample.get("hcas")))
    n = max(_dev_bytes(sample.get("netdevs")))
    return max(h, n)


def calls_in_window(records: Iterable[Mapping[str, Any]]) -> int | None:
    """Collective calls between one size's before_size and after_size hooks: the sum of its records'
    ``calls`` (one record per variant), as the runner counted them; None when a record has none."""
    total = 0
    for r in records:
        c = r.get("calls")
        if isinstance(c, bool) or not isinstance(c, int):
            return None
        total += c
    return total


def check_wire(
    records: list[Mapping[str, Any]],
    context: Mapping[str, Any],
    *,
    min_ratio: float = MIN_RATIO,
    max_ratio: float = MAX_RATIO,
    min_bytes: int = MIN_JUDGE_BYTES,
) -> Result:
    """Judge counter deltas stored by the path-proof hook in ``record["wire"]``.

    ``record["wire"] = {"nodes": [{"host", "rank", "node", "node_source", "scope", "hcas": {name: {tx, rx}},
    "netdevs": {name: {tx, rx}}, "others": {name: {tx, rx}}}, ...]}`` on the
    record that the after_size hook saw (one per op and size).

    Nodes are told apart as NCCL tells them apart: by each sample's ``node`` (the NCCL host id,
    rdmacheck/facts/nodeid.py), or by ``host`` in evidence that has none.  Samples that share a
    ``scope`` (one kernel network namespace: several NCCL nodes on one machine) read the same
    counters, so each is judged against the sum of those nodes' expected bytes.  ``details``
    say what was compared: ``compared_by``, ``nodes`` and ``shared_counters``.
    """
    from rdmacheck.preflight.facts.nodeid import describe_sources

    world = int(context.get("world_size") or 0)
    backend = str(context.get("backend") or "nccl")
    by_size: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in records:
        by_size.setdefault((r["op"], int(r["bytes"])), []).append(r)
    rows: list[dict[str, Any]] = []
    watched: dict[str, dict[str, list[str]]] = {}
    hosts: set[str] = set()
    sources: set[str | None] = set()
    labels: dict[str, str] = {}
    shared: dict[str, list[str]] = {}
    for (op, nbytes), recs in by_size.items():
        wire = next((r["wire"] for r in recs if isinstance(r.get("wire"), Mapping)), None)
        if not wire:
            continue
        nodes = [n for n in wire.get("nodes", []) if n]
        scope_nodes = _note_wire_nodes(nodes, watched, hosts, sources, labels, shared)
        rows.append(_wire_row(op, nbytes, recs, nodes, scope_nodes, world, backend, min_ratio, max_ratio, min_bytes))
    by = describe_sources(sources)
    node_list = sorted(hosts)
    d: dict[str, Any] = {"rows": rows, "min_ratio": min_ratio, "max_ratio": max_ratio, "min_bytes": min_bytes,
                         "watched": watched, "world_size": world, "backend": backend,
                         "compared_by": by, "nodes": node_list, "shared_counters": shared,
                         "factor_note": "per node per call: all_reduce 2(n-1)/n, all_gather/reduce_scatter/alltoall "
                                        "(n-1)/n, broadcast/sendrecv 1 x bytes (gloo: the same, but reduce_scatter 2(n-1)/n)"}
    return _wire_result(d, labels, min_ratio=min_ratio, max_ratio=max_ratio, min_bytes=min_bytes)


def _note_wire_nodes(
    nodes: list[Mapping[str, Any]],
    watched: dict[str, dict[str, list[str]]],
    hosts: set[str],
    sources: set[str | None],
    labels: dict[str, str],
    shared: dict[str, list[str]],
) -> dict[str, set[str]]:
    """Record one size's counter samples in the run-wide accumulators (updated in place); return its
    nodes grouped by network namespace (``scope``), which decides whose counters are shared."""
    from rdmacheck.preflight.facts.nodeid import short

    scope_nodes: dict[str, set[str]] = {}
    for n in nodes:
        key = _node_key(n)
        hosts.add(key)
        sources.add(n.get("node_source") if n.get("node") is not None else None)
        labels[key] = short(key, n.get("node_source")) if n.get("node") is not None else key
        if n.get("scope"):
            scope_nodes.setdefault(str(n["scope"]), set()).add(key)
        watched[str(n.get("host"))] = {"hcas": sorted((n.get("hcas") or {}).keys()),
                                       "netdevs": sorted((n.get("netdevs") or {}).keys())}
    for sc, keys in scope_nodes.items():
        if len(keys) > 1:
            shared[sc] = sorted(keys)
    return scope_nodes


def _wire_row(
    op: str,
    nbytes: int,
    recs: list[Mapping[str, Any]],
    nodes: list[Mapping[str, Any]],
    scope_nodes: Mapping[str, set[str]],
    world: int,
    backend: str,
    min_ratio: float,
    max_ratio: float,
    min_bytes: int,
) -> dict[str, Any]:
    """One op and size: the bytes each node's counters measured against what the collective moves, and a verdict."""
    factor = wire_factor(op, world, backend)
    calls = calls_in_window(recs)
    row: dict[str, Any] = {"op": op, "bytes": nbytes, "calls": calls, "factor": factor, "nodes": []}
    expected = factor * nbytes * calls if factor is not None and calls is not None else None
    row["expected_bytes"] = expected
    unreadable_hosts = []
    for n in nodes:
        entry = _wire_node(n, expected, scope_nodes)
        if entry["unreadable"]:
            unreadable_hosts.append(f"{n.get('host')}: {', '.join(entry['unreadable'])}")
        row["nodes"].append(entry)
    row["verdict"] = _wire_verdict(row["nodes"], calls, expected, unreadable_hosts, min_ratio, max_ratio, min_bytes)
    return row


def _wire_node(n: Mapping[str, Any], expected: float | None, scope_nodes: Mapping[str, set[str]]) -> dict[str, Any]:
    """One node's entry in a row: measured bytes, its expected share, and the counters it could not read."""
    measured = node_bytes(n)
    # NCCL nodes that read one namespace's counters: the counters hold all of their traffic
    share = len(scope_nodes.get(str(n.get("scope")), ())) if n.get("scope") else 1
    n_expected = expected * max(share, 1) if expected is not None else None
    bad = [k for fam in ("hcas", "netdevs") for k, v in (n.get(fam) or {}).items()
           if v.get("tx") is None or v.get("rx") is None]
    others = {k: max(int(v.get("tx") or 0), int(v.get("rx") or 0)) for k, v in (n.get("others") or {}).items()}
    top = max(others.items(), key=lambda kv: kv[1]) if others else None
    return {
        "host": n.get("host"), "rank": n.get("rank"), "node": _node_key(n), "measured_bytes": measured,
        "ratio": (measured / n_expected) if n_expected else None,
        "expected_bytes": n_expected, "sharing": share if share > 1 else None,
        "hcas": n.get("hcas") or {}, "netdevs": n.get("netdevs") or {},
        "top_other": {"name": top[0], "bytes": top[1]} if top and top[1] > 0 else None,
        "unreadable": bad,
    }


def _wire_verdict(
    node_rows: list[Mapping[str, Any]],
    calls: int | None,
    expected: float | None,
    unreadable_hosts: list[str],
    min_ratio: float,
    max_ratio: float,
    min_bytes: int,
) -> str:
    """A row's verdict: "pass", "fail", "warn", or "not judged (why)"."""
    if calls is None:
        return "not judged (no call count recorded: evidence older than schema 2)"
    if expected is None:
        return "not judged (unknown op)"
    if expected < min_bytes:
        return f"not judged (< {min_bytes} B expected)"
    if unreadable_hosts and any(x["ratio"] < min_ratio for x in node_rows if x["unreadable"]):
        # a counter reset or saturated in the window: too little counted proves nothing
        return "not judged (counter reset or saturated: " + "; ".join(unreadable_hosts) + ")"
    ratios = [x["ratio"] for x in node_rows]
    if any(x < min_ratio for x in ratios):
        return "fail"
    if any(x > max_ratio for x in ratios):
        return "warn"
    return "pass"


def _wire_result(
    d: dict[str, Any], labels: Mapping[str, str], *, min_ratio: float, max_ratio: float, min_bytes: int,
) -> Result:
    """The bench.wire Result from the details ``d`` (rows, watched devices, nodes): skip when nothing could be
    judged, else the worst verdict."""
    rows, watched, by, node_list = d["rows"], d["watched"], d["compared_by"], d["nodes"]
    exp_s = f"each node's selected NIC carries >= {min_ratio:g}x the collective's bytes"
    if not rows:
        return Result(WIRE_ID, Status.SKIP, observed="no counter samples (path proof not enabled, or a single rank)",
                      expected=exp_s, details=d)
    who = ", ".join(labels.get(h, h) for h in node_list)
    if len(node_list) < 2:
        return Result(WIRE_ID, Status.SKIP, observed=f"all ranks on one node ({who or '?'}; nodes by {by}): "
                      "no inter-node traffic to count", expected=exp_s, details=d)
    basis = f"nodes by {by}: {who}"
    if d["shared_counters"]:
        basis += "; " + "; ".join(f"{' and '.join(labels.get(k, k) for k in ks)} read one network namespace's counters, "
                                  "judged against their summed bytes" for ks in d["shared_counters"].values())
    judged = [r for r in rows if r["verdict"] in ("pass", "fail", "warn")]
    if not judged:
        return Result(WIRE_ID, Status.SKIP, observed=f"no size moves >= {min_bytes} B per node; too small to judge",
                      expected=exp_s, remedy="include a size of a few MiB or more", details=d)
    worst = min(judged, key=lambda r: min(x["ratio"] for x in r["nodes"]))
    worst_node = min(worst["nodes"], key=lambda x: x["ratio"])
    d["worst_ratio"] = worst_node["ratio"]
    dev_names = ", ".join(sorted(set(sum((v["hcas"] + v["netdevs"] for v in watched.values()), [])))) or "?"
    fails = [r for r in judged if r["verdict"] == "fail"]
    if fails:
        observed = _wire_fail_observed(worst, worst_node, labels, len(fails), len(judged), min_ratio, basis)
        return Result(WIRE_ID, Status.FAIL, observed=observed, expected=exp_s,
                      remedy="the traffic took another path: pin NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME and NCCL_IB_HCA "
                             "to the data NIC, check bench.transport and the routes between the nodes",
                      details=d)
    ratios = sorted(x["ratio"] for r in judged for x in r["nodes"])
    span = f"{ratios[0]:.2f}x..{ratios[-1]:.2f}x"
    if any(r["verdict"] == "warn" for r in judged):
        return Result(WIRE_ID, Status.WARN, observed=f"{dev_names} carried {span} of the expected bytes over "
                      f"{len(judged)} sizes (more than {max_ratio:g}x somewhere; {basis})", expected=exp_s,
                      remedy="other traffic shares the NIC during the bench, or a counter's unit is wrong", details=d)
    return Result(WIRE_ID, Status.PASS, observed=f"{dev_names} carried {span} of the expected bytes on "
                  f"{len(node_list)} nodes over {len(judged)} sizes ({basis})", expected=exp_s, details=d)


def _wire_fail_observed(
    worst: Mapping[str, Any], w: Mapping[str, Any], labels: Mapping[str, str], n_fails: int, n_judged: int,
    min_ratio: float, basis: str,
) -> str:
    """The fail message: the worst size's worst node, what it carried, and the busiest other device on it."""
    w_devs = ", ".join(sorted(list(w["hcas"]) + list(w["netdevs"]))) or "(no watched device)"
    msg = (f"{worst['op']} {worst['bytes']} B: {labels.get(w['node'], w['node'])} {w_devs} carried {w['measured_bytes']} B, "
           f"{w['ratio']:.2f}x of the {w['expected_bytes']:.0f} B the collective moves "
           f"({n_fails} of {n_judged} sizes below {min_ratio:g}x)")
    if w.get("top_other"):
        msg += f"; {w['top_other']['name']} carried {w['top_other']['bytes']} B"
    msg += f" ({basis})"
    return msg


def _node_key(sample: Mapping[str, Any]) -> str:
    """A counter sample's node: its NCCL host id (facts/nodeid.py), else its host name (older evidence)."""
    v = sample.get("node")
    return str(v) if v is not None else str(sample.get("host"))
