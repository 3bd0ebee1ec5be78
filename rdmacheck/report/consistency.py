"""Cross-node consistency: the checks no single node can make.

A mismatched MTU between two nodes has hung NCCL (the larger side's packets
are dropped); different NCCL builds or NCCL_* settings change the protocol
each side speaks.  Every node's preflight evidence carries what it saw in its
facts and the env it ran with; this module pulls one comparable value per
property out of each and names every property whose values differ.

It reads one shape, the one preflight writes (docs/report.md): the facts through
:func:`rdmacheck.evidence.schema.preflight_facts` and the env through
:func:`rdmacheck.evidence.schema.run_env`, the only two accessors, so a new facts record is one edit
there.  From the facts: a flat ``facts[<property key>]`` first (preflight writes ``nccl_version``,
``driver_version``, ``cuda_version``); else ``ports`` (one row
per selected RDMA port: ``netdev_mtu``, ``active_mtu``, ``fw_ver``, ``gid.type``, ``gid.ipv4``) and
``netdevs[name].ipv4`` for the GID's prefix.  From results: the documented detail keys of the
gates (``gpu.nvml``: ``driver_version``, ``cuda_driver_version``).  A missing value is "not
reported" (shown, never a mismatch by itself); no other spelling is tried.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Callable

from rdmacheck.evidence.schema import context_of, preflight_facts, run_env
from rdmacheck.evidence.model import Evidence

# (key, label, why it matters)
PROPERTIES: list[tuple[str, str, str]] = [
    ("netdev_mtu", "netdev MTU", "a smaller MTU on one side drops jumbo frames; NCCL hangs"),
    ("roce_active_mtu", "RoCE active MTU", "the RDMA path MTU must match on both ends of a QP"),
    ("gid_type", "GID type", "RoCE v1 and v2 peers cannot connect"),
    ("gid_subnet", "GID subnet", "RoCE v2 GIDs in different subnets need routing NCCL won't do"),
    ("nccl_version", "NCCL version", "mixed NCCL versions may disagree on protocol"),
    ("driver_version", "NVIDIA driver", "driver mismatches change CUDA/NCCL behaviour"),
    ("cuda_version", "CUDA version", "CUDA runtime must match the NCCL build"),
    ("firmware", "HCA firmware", "firmware differences change RoCE/congestion behaviour"),
]

# a flat facts[<property key>] wins (a gate that knows better states the value: docs/report.md);
# preflight writes nccl_version, driver_version and cuda_version this way
_FLAT = {k: k for k, _, _ in PROPERTIES}
# result.details key -> property (gpu.nvml carries driver_version / cuda_driver_version)
_DETAIL_KEYS = {"driver_version": "driver_version", "cuda_driver_version": "cuda_version",
                "nccl_version": "nccl_version"}


def _scalar(v: Any) -> str | None:
    if v is None or v == "" or isinstance(v, (dict, list)):
        return None
    return str(v)


def _join(vals: list[Any]) -> str | None:
    s = sorted({str(v) for v in vals if v not in (None, "") and not isinstance(v, (dict, list))})
    return ",".join(s) if s else None


def _gid_subnet(ip: str | None, cidrs: list) -> str | None:
    """The subnet of a GID's IPv4 address: its prefix from the interface's "a.b.c.d/len" entries (else /24)."""
    if not ip or not isinstance(ip, str):
        return None
    prefix = 24
    for cidr in cidrs if isinstance(cidrs, list) else []:
        addr, sep, plen = str(cidr).partition("/")
        if addr == ip and sep and plen.isdecimal():
            prefix = int(plen)
    try:
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    except ValueError:
        return None


def _from_port_rows(facts: dict[str, Any]) -> dict[str, str | None]:
    """``facts.ports`` = one row per selected RDMA port (preflight.collect_facts)."""
    rows = [p for p in facts.get("ports") or [] if isinstance(p, dict)] if isinstance(facts.get("ports"), list) else []
    if not rows:
        return {}
    netdevs = facts.get("netdevs") if isinstance(facts.get("netdevs"), dict) else {}
    gids = [p["gid"] for p in rows if isinstance(p.get("gid"), dict)]
    subnets = []
    for p in rows:
        g = p.get("gid") if isinstance(p.get("gid"), dict) else {}
        nd = netdevs.get(p.get("netdev")) if isinstance(p.get("netdev"), str) else None
        subnets.append(_gid_subnet(g.get("ipv4"), nd.get("ipv4") if isinstance(nd, dict) else []))
    return {
        "netdev_mtu": _join([p.get("netdev_mtu") for p in rows]),
        "roce_active_mtu": _join([p.get("active_mtu") for p in rows]),
        "firmware": _join([p.get("fw_ver") for p in rows]),
        "gid_type": _join([g.get("type") for g in gids]),
        "gid_subnet": _join(subnets),
    }


@dataclasses.dataclass
class NodeFacts:
    host: str
    values: dict[str, str | None]       # property key -> value (None: not reported)
    env: dict[str, str]                 # NCCL_* (and rendezvous) settings


@dataclasses.dataclass
class Row:
    key: str
    label: str
    why: str
    values: dict[str, str | None]       # host -> value
    agree: bool
    reported: int                       # nodes that reported a value

    @property
    def distinct(self) -> list[str]:
        return sorted({v for v in self.values.values() if v is not None})

    def groups(self) -> list[tuple[str, list[str]]]:
        """value -> hosts, most common value first; 'not reported' last."""
        by: dict[str, list[str]] = {}
        for h, v in self.values.items():
            by.setdefault(v if v is not None else "", []).append(h)
        items = sorted(by.items(), key=lambda kv: (kv[0] == "", -len(kv[1]), kv[0]))
        missing = "unset" if self.key.startswith("env.") else "not reported"
        return [(v or missing, sorted(hs)) for v, hs in items]


ENV_PREFIXES = ("NCCL_", "GLOO_SOCKET", "MASTER_PORT", "WORLD_SIZE")


def node_facts(host: str, evs: list[Evidence]) -> NodeFacts:
    """Merge what a node's evidence files say (the newest wins per key)."""
    values: dict[str, str | None] = {k: None for k, _, _ in PROPERTIES}
    env: dict[str, str] = {}
    for ev in sorted(evs, key=lambda e: e.time or ""):
        facts = preflight_facts(ev)
        e = run_env(ev)
        for k, v in e.items():
            if k.startswith(ENV_PREFIXES):
                env[k] = v
        got: dict[str, str | None] = {prop: _scalar(facts.get(key)) for key, prop in _FLAT.items()}
        for k, v in _from_port_rows(facts).items():
            got[k] = got.get(k) or v
        for r in ev.results:
            for dkey, key in _DETAIL_KEYS.items():
                if got.get(key) is None and _scalar(r.details.get(dkey)) is not None:
                    got[key] = _scalar(r.details.get(dkey))
        if ev.kind == "bench" and got.get("nccl_version") is None:
            got["nccl_version"] = context_of(ev).nccl_version   # torch's NCCL in a bench run
        for k, v in got.items():
            if v is not None:
                values[k] = v
    return NodeFacts(host, values, env)


def compare(nodes: list[NodeFacts]) -> list[Row]:
    rows: list[Row] = []
    for key, label, why in PROPERTIES:
        vals = {n.host: n.values.get(key) for n in nodes}
        distinct = {v for v in vals.values() if v is not None}
        rows.append(Row(key, label, why, vals, agree=len(distinct) <= 1,
                        reported=sum(v is not None for v in vals.values())))
    env_keys = sorted({k for n in nodes for k in n.env})
    for k in env_keys:
        vals = {n.host: n.env.get(k) for n in nodes}
        # a key set on one node and absent on another is a mismatch too: NCCL
        # falls back to its default there
        distinct = set(vals.values())
        rows.append(Row(f"env.{k}", k, "NCCL env must match on every rank", vals,
                        agree=len(distinct) <= 1, reported=sum(v is not None for v in vals.values())))
    return rows


def mismatches(rows: list[Row]) -> list[Row]:
    return [r for r in rows if not r.agree]


# exported for the fleet benchmark: how a node's values are pulled
Extractor = Callable[[str, list[Evidence]], NodeFacts]
