"""Phase 1 of preflight: read and probe everything once, into one ``NodeFacts``.

``gather(root, config)`` is the only place preflight touches the host: files
through the ``HostRoot``, live probes through ``_Prober`` (each answer kept
with its timing and error).  What is gathered never depends on which gates
will run (``--only`` filters what is printed, not what is known).

``derive(facts, config)`` then computes the facts NCCL itself would compute
under the configuration: selected ports, the GID NCCL picks, the active MTU
and its source, the bootstrap address.  It is pure, so ``--facts`` re-derives
them from recorded facts under today's configuration.

Replaying a snapshot (``--root``), probes are answered from what the snapshot
recorded (``rdmacheck/probes.json``; older snapshots: ``verbs.json``,
``nvml.json`` ...); a probe the snapshot did not record is left out, and the
gate that needs it says so.
"""

from __future__ import annotations

import ipaddress
import platform
import re
import time
from typing import Any, Callable

from .config import Config
from .errors import UsageError
from .facts.infiniband import port_netdevs, roce_active_mtu
from .nodefacts import NodeFacts, PciFacts, Probe, Selection, probe_key
from .root import HostRoot

PROBES_META = "probes.json"


class _Prober:
    """Runs a live probe (timed, never raising) or answers it from the snapshot's record."""

    def __init__(self, root: HostRoot) -> None:
        self.root = root
        self.probes: dict[str, Probe] = {}
        rec = None if root.live else root.meta(PROBES_META)
        self.recorded: dict[str, Any] | None = rec if isinstance(rec, dict) else None

    def ask(self, kind: str, target: str, fn: Callable[[], Any], legacy: Callable[[], Any] | None = None) -> Any:
        """The answer (None when a replay has none).  ``legacy`` reads an older snapshot's meta file."""
        key = probe_key(kind, target)
        if key in self.probes:
            return self.probes[key].answer
        if self.root.live:
            t0 = time.monotonic()
            try:
                ans, err = fn(), None
            except Exception as e:  # a probe must never take preflight down; the gate reports it
                ans, err = None, f"{type(e).__name__}: {e}"
            if err is None and isinstance(ans, dict) and isinstance(ans.get("error"), str):
                err = ans["error"]
            p = Probe(kind, target, ans, round(time.monotonic() - t0, 4), err, "live")
        elif self.recorded is not None:
            r = self.recorded.get(key)
            if not isinstance(r, dict):
                return None
            p = Probe(kind, target, r.get("answer"), float(r.get("elapsed_s") or 0.0), r.get("error"), "snapshot")
        elif legacy is not None:
            ans = legacy()
            if ans is None:
                return None
            p = Probe(kind, target, ans, 0.0, ans.get("error") if isinstance(ans, dict) else None, "snapshot")
        else:
            return None
        self.probes[key] = p
        return p.answer


def _meminfo(root: HostRoot) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (root.read("/proc/meminfo") or "").splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    return out


def _pci(root: HostRoot) -> PciFacts:
    from .facts import pci

    gpus = pci.gpu_functions(root)
    hcas = pci.hca_functions(root)
    out = PciFacts(gpus=gpus, hcas=hcas)
    if gpus and hcas:
        out.ancestors, out.config = pci.read_topology(root, gpus + list(hcas.values()))
    return out


def gather(root: HostRoot, config: Config) -> NodeFacts:
    """Every fact preflight judges, read and probed once."""
    import socket

    from .facts import dcb, nccl_lib, nvml, peer
    from .facts.devfiles import read_devfiles
    from .facts.gdr import read_gdr
    from .facts.infiniband import read_infiniband
    from .facts.limits import read_limits, shm_size
    from .facts.net import addresses, read_net
    from .facts.verbs import read_verbs

    pr = _Prober(root)
    addrs = pr.ask("addrs", "", lambda: addresses(root), legacy=lambda: addresses(root)) or {}
    if not isinstance(addrs, dict):
        addrs = {}
    ib = read_infiniband(root)
    nf = NodeFacts(live=root.live, root=str(root.root))
    meta_host = root.meta("host.json")
    nf.host = socket.gethostname() if root.live else (
        str(meta_host["host"]) if isinstance(meta_host, dict) and meta_host.get("host") else None)
    nf.kernel = root.read("/proc/sys/kernel/osrelease") or (platform.release() if root.live else None)
    nf.ib = ib
    nf.net = read_net(root, addrs)
    nf.limits = read_limits(root)
    nf.devfiles = read_devfiles(root)
    nf.meminfo = _meminfo(root)
    nf.gdr = read_gdr(root)
    nf.pci = _pci(root)
    nf.port_netdevs = port_netdevs(ib)
    devices = sorted(ib)
    pr.ask("shm", "", lambda: {"size": shm_size(root)}, legacy=lambda: {"size": shm_size(root)})
    pr.ask("verbs", "", lambda: read_verbs(root, devices), legacy=lambda: read_verbs(root, devices))
    pr.ask("nvml", "", lambda: nvml.read_nvml(root), legacy=lambda: nvml.read_nvml(root))
    pr.ask("nccl_lib", "", lambda: nccl_lib.read_nccl(root), legacy=lambda: nccl_lib.read_nccl(root))
    old_dcb = None if root.live else root.meta("dcb.json")
    nf.probes = pr.probes  # the same dict: probes asked below land in the record too
    dcb_devs = sorted({n for nds in nf.port_netdevs.values() for n in nds})
    if not dcb_devs:  # rdma.pfc then reads the interfaces on the RDMA subnet
        dcb_devs = sorted(peer.in_subnet(nf.local_addresses, config.profile.network()))
    for nd in dcb_devs:
        for obj in ("app", "pfc"):
            legacy = None
            if isinstance(old_dcb, dict) and isinstance(old_dcb.get(nd), dict):
                legacy = (lambda o=obj, n=nd: old_dcb[n].get(o) or None)
            pr.ask(f"dcb.{obj}", nd, lambda o=obj, n=nd: dcb.run_dcb(o, n), legacy=legacy)
    nf.peer = peer.gather_peer(config, nf.local_addresses, pr.ask)
    nf.skipped_paths = sorted(getattr(root, "skipped", ()) or ())
    derive(nf, config)
    return nf


# ------------------------------------------------------------------ derived facts

def select_ports(facts: NodeFacts, config: Config) -> Selection:
    """NCCL's port choice: with NCCL_IB_HCA exactly the ports it names, else every port."""
    from .ncclspec import ListSpec, parse_list_spec

    raw = config.get("NCCL_IB_HCA")
    try:
        spec = parse_list_spec(raw, "NCCL_IB_HCA", with_ports=True)
        err = None
    except UsageError as e:
        spec, err = ListSpec(entries=[], raw=raw or ""), str(e)
    ports = [p for d in facts.ib.values() for p in d.ports.values() if spec.matches(d.name, p.port)]
    return Selection(spec=spec, spec_error=err, explicit=bool(spec.entries) and not spec.exclude, ports=ports)


def gid_settings(config: Config) -> tuple[str, Any, int, int | None]:
    """(address family, NCCL_IB_ADDR_RANGE network, RoCE version, NCCL_IB_GID_INDEX); raises on bad values."""
    from .ncclspec import parse_addr_range

    family = "inet6" if (config.get("NCCL_IB_ADDR_FAMILY") or "AF_INET").upper() == "AF_INET6" else "inet"
    addr_range = parse_addr_range(config.get("NCCL_IB_ADDR_RANGE"), family)
    roce_ver = int(config.get("NCCL_IB_ROCE_VERSION_NUM") or config.profile.roce_version)
    explicit = config.get("NCCL_IB_GID_INDEX")
    return family, addr_range, roce_ver, (int(explicit) if explicit is not None else None)


def _derive_gid(facts: NodeFacts, config: Config, sel: Selection) -> None:
    from .ncclspec import predict_gid_index

    try:
        family, addr_range, roce_ver, explicit_idx = gid_settings(config)
    except (UsageError, ValueError) as e:
        sel.gid_error = str(e)
        return
    subnet = config.profile.network()
    zero = bytes(16)
    for p in sel.ports:
        if p.link_layer == "InfiniBand":
            continue
        table = {g.index: g for g in p.gids}

        def gid_at(i: int, table=table) -> bytes:
            g = table.get(i)
            return (g.raw or zero) if g else zero

        def ver_at(i: int, table=table):
            g = table.get(i)
            return g.roce_version if g else None

        predicted = predict_gid_index(max(p.gid_tbl_len, 1), gid_at, ver_at, family, addr_range, roce_ver)
        chosen = explicit_idx if explicit_idx is not None else predicted
        cg = table.get(chosen)
        in_subnet = bool(cg and cg.roce_version == roce_ver and cg.ipv4 and ipaddress.ip_address(cg.ipv4) in subnet)
        sel.gid_index[p.name] = chosen
        sel.gid_info[p.name] = {"index": chosen, "predicted": predicted, "explicit": explicit_idx,
                                "gid": cg.gid if cg else None, "ipv4": cg.ipv4 if cg else None,
                                "type": cg.type if cg else None, "in_subnet": in_subnet}


def _derive_mtu(facts: NodeFacts, sel: Selection) -> None:
    verbs = facts.verbs.get("devices", {}) if isinstance(facts.verbs, dict) else {}
    for p in sel.ports:
        nds = facts.port_netdevs.get(p.name) or []
        nd = facts.net.get(nds[0]) if nds else None
        nmtu = nd.mtu if nd else None
        vport = ((verbs.get(p.device) or {}).get("ports") or {}).get(str(p.port)) or {}
        if p.active_mtu:
            sel.active_mtu[p.name] = (p.active_mtu, "sysfs")
        elif vport.get("active_mtu"):
            sel.active_mtu[p.name] = (vport["active_mtu"], "verbs")
        elif nmtu and p.link_layer != "InfiniBand":
            sel.active_mtu[p.name] = (roce_active_mtu(nmtu), "derived from netdev MTU (no verbs)")
        else:
            sel.active_mtu[p.name] = (None, None)


def bootstrap_address(facts: NodeFacts, config: Config) -> dict[str, Any]:
    """The interface and IPv4 address NCCL's bootstrap will advertise (NCCL's findInterfaces order).

    NCCL takes interfaces in getifaddrs order: with NCCL_SOCKET_IFNAME the matching ones,
    without it any but docker* and lo (lo only when nothing else has an address).
    """
    from .ncclspec import parse_list_spec

    spec_text = config.get("NCCL_SOCKET_IFNAME")
    try:
        spec = parse_list_spec(spec_text, "NCCL_SOCKET_IFNAME") if spec_text else None
    except UsageError as e:
        return {"ifname": None, "addr": None, "rule": f"NCCL_SOCKET_IFNAME invalid: {e}"}
    local = facts.local_addresses
    if spec is not None:
        cands = [n for n in local if spec.matches(n)]
        rule = f"NCCL_SOCKET_IFNAME={spec_text}"
    else:
        cands = [n for n in local if not n.startswith("docker") and n != "lo"] or (["lo"] if "lo" in local else [])
        rule = "NCCL_SOCKET_IFNAME unset: first interface but docker*/lo"
    for n in cands:
        if local.get(n):
            return {"ifname": n, "addr": local[n][0].split("/")[0], "rule": rule}
    return {"ifname": None, "addr": None, "rule": rule}


def derive(facts: NodeFacts, config: Config) -> NodeFacts:
    """Fill the configuration-dependent facts in place (pure: reads only ``facts``)."""
    sel = select_ports(facts, config)
    _derive_mtu(facts, sel)
    _derive_gid(facts, config, sel)
    facts.selection = sel
    facts.bootstrap = bootstrap_address(facts, config)
    return facts
