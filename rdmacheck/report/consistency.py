"""Cross-node consistency: the checks no single node can make.

A mismatched MTU between two nodes has hung NCCL (the larger side's packets
are dropped); different NCCL builds or NCCL_* settings change the protocol
each side speaks.  Every node's preflight evidence carries what it saw in
``context.facts`` and the env it ran with in ``context.config.env``; this
module pulls one comparable value per property out of each and names every
property whose values differ.

Evidence shapes change as gates grow, so every lookup is tolerant: a missing
key is "not reported" (shown, never a mismatch by itself), and several
spellings are tried, first a flat ``facts[<key>]`` (the contract: see
docs/report.md), then the structured readers' output (``facts.net``,
``facts.infiniband``, ``facts.verbs``, ``facts.gpu``, ``facts.nccl``), then any
result's ``details`` carrying the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Callable

from ..model import Evidence

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

_ALIASES: dict[str, tuple[str, ...]] = {
    "netdev_mtu": ("netdev_mtu", "mtu", "net_mtu"),
    "roce_active_mtu": ("roce_active_mtu", "active_mtu", "ib_active_mtu"),
    "gid_type": ("gid_type", "roce_version", "gid_roce_version"),
    "gid_subnet": ("gid_subnet", "subnet", "rdma_subnet"),
    "nccl_version": ("nccl_version",),
    "driver_version": ("driver_version", "nvidia_driver", "nvidia_driver_version"),
    "cuda_version": ("cuda_version", "cuda_driver_version", "cuda"),
    "firmware": ("firmware", "fw_ver", "fw_version", "hca_firmware"),
}


# result.details keys -> property (gpu.nvml carries driver_version / cuda_driver_version)
_DETAIL_KEYS = {k: k for k in _ALIASES} | {"cuda_driver_version": "cuda_version", "fw_ver": "firmware"}


def _scalar(v: Any) -> str | None:
    if v is None or v == "" or isinstance(v, (dict, list)):
        return None
    return str(v)


def _join(vals: list[Any]) -> str | None:
    s = sorted({str(v) for v in vals if v not in (None, "")})
    return ",".join(s) if s else None


def _include_spec(text: str | None, what: str, with_ports: bool = False):
    """An NCCL include list (NCCL_IB_HCA / NCCL_SOCKET_IFNAME syntax), None when unset, excluding or unparsable."""
    from ..errors import UsageError
    from ..ncclspec import parse_list_spec

    try:
        spec = parse_list_spec(text, what, with_ports=with_ports)
    except UsageError:
        return None  # the node's own rdma.devices / rdma.netdev result already says what is wrong
    return spec if spec.entries and not spec.exclude else None


def _selected_hcas(env: dict[str, str], ib: dict[str, Any]) -> list[str]:
    spec = _include_spec(env.get("NCCL_IB_HCA"), "NCCL_IB_HCA", with_ports=True)
    sel = [d for d in ib if spec.matches(d)] if spec else []
    return sorted(sel or ib)


def _selected_netdevs(env: dict[str, str], net: dict[str, Any], ports: list[dict[str, Any]]) -> list[str]:
    spec = _include_spec(env.get("NCCL_SOCKET_IFNAME"), "NCCL_SOCKET_IFNAME")
    sel = [n for n in net if spec.matches(n)] if spec else []
    if sel:
        return sorted(sel)
    return sorted({n for p in ports for n in (p.get("netdevs") or []) if n in net})


def _ports(ib: dict[str, Any], hcas: list[str]) -> list[dict[str, Any]]:
    out = []
    for d in hcas:
        dev = ib.get(d)
        if isinstance(dev, dict) and isinstance(dev.get("ports"), dict):
            out.extend(p for p in dev["ports"].values() if isinstance(p, dict))
    return out


def _gid_of_port(p: dict[str, Any], env: dict[str, str]) -> dict[str, Any] | None:
    gids = [g for g in (p.get("gids") or []) if isinstance(g, dict)]
    idx = env.get("NCCL_IB_GID_INDEX")
    if idx is not None and str(idx).lstrip("-").isdigit() and int(idx) >= 0:
        for g in gids:
            if g.get("index") == int(idx):
                return g
    # NCCL's default choice: a RoCE v2 IPv4-mapped GID when there is one
    v2 = [g for g in gids if g.get("ipv4") and "v2" in str(g.get("type") or "")]
    return (v2 or [g for g in gids if g.get("ipv4")] or gids or [None])[0]


def _gid_subnet(ip: str | None, cidrs: list) -> str | None:
    """The subnet of a GID's IPv4 address: its prefix from the interface's "a.b.c.d/len" entries (else /24)."""
    if not ip:
        return None
    prefix = 24
    for cidr in cidrs:
        if str(cidr).split("/")[0] == ip and "/" in str(cidr):
            prefix = int(str(cidr).split("/")[1])
    try:
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    except ValueError:
        return None


def _from_port_rows(facts: dict[str, Any]) -> dict[str, str | None]:
    """preflight.collect_facts(): ``facts.ports`` = one row per selected RDMA port."""
    rows = [p for p in facts.get("ports") or [] if isinstance(p, dict)]
    if not rows:
        return {}
    netdevs = facts.get("netdevs") if isinstance(facts.get("netdevs"), dict) else {}
    gids = [p.get("gid") for p in rows if isinstance(p.get("gid"), dict)]
    subnets = []
    for p in rows:
        g = p.get("gid") if isinstance(p.get("gid"), dict) else {}
        nd = netdevs.get(p.get("netdev") or "", {}) if isinstance(netdevs, dict) else {}
        subnets.append(_gid_subnet(g.get("ipv4"), (nd.get("ipv4") if isinstance(nd, dict) else None) or []))
    return {
        "netdev_mtu": _join([p.get("netdev_mtu") for p in rows]),
        "roce_active_mtu": _join([p.get("active_mtu") for p in rows]),
        "firmware": _join([p.get("fw_ver") for p in rows]),
        "gid_type": _join([g.get("type") for g in gids]),
        "gid_subnet": _join(subnets),
    }


def _structured(facts: dict[str, Any], env: dict[str, str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {k: v for k, v in _from_port_rows(facts).items() if v is not None}
    if out:
        _versions_into(facts, out)
        return out
    ib = facts.get("infiniband") or facts.get("ib") or facts.get("rdma") or {}
    if isinstance(ib, dict) and isinstance(ib.get("devices"), dict):
        ib = ib["devices"]
    ib = {k: v for k, v in ib.items() if isinstance(v, dict)} if isinstance(ib, dict) else {}
    net = facts.get("net") or facts.get("netdevs") or {}
    net = {k: v for k, v in net.items() if isinstance(v, dict)} if isinstance(net, dict) else {}
    hcas = _selected_hcas(env, ib)
    ports = _ports(ib, hcas)
    nds = _selected_netdevs(env, net, ports)
    out["netdev_mtu"] = _join([net[n].get("mtu") for n in nds])
    out["firmware"] = _join([ib[d].get("fw_ver") for d in hcas])
    mtus = [p.get("active_mtu") for p in ports]
    verbs = facts.get("verbs") or {}
    vdev = verbs.get("devices") if isinstance(verbs, dict) else None
    if isinstance(vdev, dict):
        for d in hcas:
            vd = vdev.get(d)
            if isinstance(vd, dict):
                mtus += [vp.get("active_mtu") for vp in (vd.get("ports") or {}).values() if isinstance(vp, dict)]
                if not out["firmware"]:
                    out["firmware"] = _scalar(vd.get("fw_version"))
    out["roce_active_mtu"] = _join(mtus)
    gids = [g for g in (_gid_of_port(p, env) for p in ports) if g]
    out["gid_type"] = _join([g.get("type") for g in gids])
    cidrs = [c for n in nds or list(net) for c in net.get(n, {}).get("ipv4") or []]
    out["gid_subnet"] = _join([_gid_subnet(g.get("ipv4"), cidrs) for g in gids])
    _versions_into(facts, out)
    return out


def _versions_into(facts: dict[str, Any], out: dict[str, str | None]) -> None:
    for sect in ("gpu", "nvml", "cuda", "nccl", "versions"):
        s = facts.get(sect)
        if isinstance(s, dict):
            for key in ("nccl_version", "driver_version", "cuda_version"):
                for alias in _ALIASES[key]:
                    if not out.get(key) and _scalar(s.get(alias)):
                        out[key] = _scalar(s.get(alias))
            if sect == "nccl" and not out.get("nccl_version"):
                out["nccl_version"] = _scalar(s.get("version"))


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
        ctx = ev.context if isinstance(ev.context, dict) else {}
        facts = ctx.get("facts") if isinstance(ctx.get("facts"), dict) else {}
        cfg = ctx.get("config") if isinstance(ctx.get("config"), dict) else {}
        e = cfg.get("env") if isinstance(cfg.get("env"), dict) else {}
        e = {str(k): str(v) for k, v in e.items() if v is not None}
        for k, v in e.items():
            if k.startswith(ENV_PREFIXES):
                env[k] = v
        got: dict[str, str | None] = {}
        # 1. the flat contract
        for key, aliases in _ALIASES.items():
            for a in aliases:
                if _scalar(facts.get(a)) is not None:
                    got[key] = _scalar(facts.get(a))
                    break
        # 2. the structured readers
        try:
            for k, v in _structured(facts, e).items():
                if v is not None and got.get(k) is None:
                    got[k] = v
        except Exception:  # a malformed facts section must not sink the report
            pass
        # 3. result details, then bench context (torch/NCCL versions of a bench run)
        #    (canonical names only: a bare "mtu" in some gate's details is ambiguous)
        for r in ev.results:
            for dkey, key in _DETAIL_KEYS.items():
                if got.get(key) is None and _scalar(r.details.get(dkey)) is not None:
                    got[key] = _scalar(r.details.get(dkey))
        if ev.kind == "bench" and got.get("nccl_version") is None:
            got["nccl_version"] = _scalar(ctx.get("nccl_version"))
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
