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

from rdmacheck.config import Config
from rdmacheck.util.errors import UsageError
from rdmacheck.preflight.facts.infiniband import ACTIVE, Port, port_netdevs, roce_active_mtu, roce_driver, roce_overhead
from rdmacheck.preflight.nodefacts import NodeFacts, PciFacts, Probe, Selection, answer_problem, probe_key
from rdmacheck.preflight.root import HostRoot

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
            el = r.get("elapsed_s")
            el = float(el) if isinstance(el, (int, float)) and not isinstance(el, bool) and el == el else 0.0
            p = Probe(kind, target, r.get("answer"), el, r.get("error"), "snapshot")
        elif legacy is not None:
            ans = legacy()
            if ans is None:
                return None
            p = Probe(kind, target, ans, 0.0, ans.get("error") if isinstance(ans, dict) else None, "snapshot")
        else:
            return None
        if p.source == "snapshot":
            bad = answer_problem(kind, p.answer)
            if bad:  # hostile or damaged snapshot metadata: no answer, and the gate says why, never a crash
                p = Probe(kind, target, None, p.elapsed_s, f"the snapshot's recorded answer is malformed ({bad[:160]})",
                          "snapshot")
            elif p.error is not None and not isinstance(p.error, str):
                p.error = str(p.error)[:300]
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
    from rdmacheck.preflight.facts import pci

    gpus = pci.gpu_functions(root)
    hcas = pci.hca_functions(root)
    out = PciFacts(gpus=gpus, hcas=hcas)
    if gpus and hcas:
        out.ancestors, out.config = pci.read_topology(root, gpus + list(hcas.values()))
    return out


def _health(root: HostRoot, nf: NodeFacts) -> dict[str, Any]:
    from .facts.kernlog import read_kernel_log
    from .facts.nichealth import read_nic_health

    return {"kernel_log": read_kernel_log(root), "nic": read_nic_health(root, nf.pci.hcas, nf.ib)}


def gather(root: HostRoot, config: Config) -> NodeFacts:
    """Every fact preflight judges, read and probed once."""
    import socket

    from rdmacheck.preflight.facts import dcb, firewall, nccl_lib, nvml, peer
    from rdmacheck.preflight.facts.devfiles import read_devfiles
    from rdmacheck.preflight.facts.gdr import read_gdr
    from rdmacheck.preflight.facts.infiniband import read_infiniband
    from rdmacheck.preflight.facts.limits import read_limits, shm_size
    from rdmacheck.preflight.facts.net import addresses, addresses_known, read_ipv4_conf, read_net
    from rdmacheck.preflight.facts.verbs import read_verbs

    pr = _Prober(root)
    # a snapshot without rdmacheck/addrs.json did not capture addresses: no answer (not "none")
    addrs = pr.ask("addrs", "", lambda: addresses(root),
                   legacy=lambda: addresses(root) if addresses_known(root) else None) or {}
    if not isinstance(addrs, dict):
        addrs = {}
    ib = read_infiniband(root)
    nf = NodeFacts(live=root.live, root=str(root.root))
    meta_host = root.meta("host.json")
    nf.host = socket.gethostname() if root.live else (
        str(meta_host["host"]) if isinstance(meta_host, dict) and meta_host.get("host") else None)
    nf.node_id = next((t.strip() for t in (root.read("/etc/machine-id"), root.read("/proc/sys/kernel/random/boot_id"))
                       if t and t.strip()), None)
    nf.kernel = root.read("/proc/sys/kernel/osrelease") or (platform.release() if root.live else None)
    nf.model = " ".join(x.strip().strip("\x00") for x in (root.read("/sys/class/dmi/id/product_name"),
                                                          root.read("/proc/device-tree/model")) if x) or None
    nf.ib = ib
    nf.net = read_net(root, addrs)
    nf.limits = read_limits(root)
    nf.devfiles = read_devfiles(root)
    nf.meminfo = _meminfo(root)
    nf.gdr = read_gdr(root)
    nf.pci = _pci(root)
    nf.port_netdevs = port_netdevs(ib)
    rdma_netdevs = sorted({n for nds in nf.port_netdevs.values() for n in nds})
    nf.ipv4_conf = read_ipv4_conf(root, rdma_netdevs) if rdma_netdevs else {}
    devices = sorted(ib)
    pr.ask("shm", "", lambda: {"size": shm_size(root)}, legacy=lambda: {"size": shm_size(root)})
    pr.ask("verbs", "", lambda: read_verbs(root, devices), legacy=lambda: read_verbs(root, devices))
    pr.ask("nvml", "", lambda: nvml.read_nvml(root), legacy=lambda: nvml.read_nvml(root))
    pr.ask("nccl_lib", "", lambda: nccl_lib.read_nccl(root), legacy=lambda: nccl_lib.read_nccl(root))
    if ib:  # where RDMA exists: the packet filter's view of RoCE v2 (UDP 4791)
        pr.ask("firewall", "", firewall.read_rules)
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
    nf.peer = peer.gather_peer(config, nf_local(addrs), pr.ask)  # both families: an IPv6 mesh
    nf.health = _health(root, nf)
    nf.skipped_paths = sorted(getattr(root, "skipped", ()) or ())
    derive(nf, config)
    _probe_datapath(nf, config, pr)
    _probe_dad(nf, pr)
    return nf


def _probe_dad(nf: NodeFacts, pr: _Prober) -> None:
    """Duplicate address detection on the netdev that carries each selected port's GID (a VLAN where the GID
    lives on one), for its IPv4 addresses; after derive, which picks the GID."""
    from rdmacheck.preflight.facts import dad

    sel = nf.selection
    seen = set()
    # every MAC of this node, as the record read them: its own rails answering are not another machine
    macs: dict[str, str] = {}
    for name, n in sorted(nf.net.items()):
        if n.address and n.address != "00:00:00:00:00:00":
            macs.setdefault(n.address, name)   # a VLAN shares its base's MAC: the base (sorted first) names it
    for p in sel.ports if sel else []:
        if p.state_id != ACTIVE:
            continue
        nd = (sel.gid_info.get(p.name) or {}).get("ndev") or next(iter(nf.port_netdevs.get(p.name) or []), None)
        info = nf.net.get(nd) if nd else None
        if not nd or nd in seen or not info or not info.up or not info.ipv4:
            continue
        seen.add(nd)
        pr.ask("dad", nd, lambda nd=nd, a=list(info.ipv4), m=info.address: dad.probe(nd, a, m, macs))


def _probe_datapath(nf: NodeFacts, config: Config, pr: _Prober) -> None:
    """RDMA bytes through each selected port with what NCCL derives for it (its GID, the active MTU) and its
    QP settings (facts.datapath); after derive, which decides both."""
    from rdmacheck.preflight.facts import datapath

    sel = nf.selection
    env = {k: str(config.get(k)) for k in ("NCCL_IB_TC", "NCCL_IB_SL", "NCCL_IB_TIMEOUT", "NCCL_IB_RETRY_CNT")
           if config.get(k) is not None}
    for p in sel.ports if sel else []:
        gid = sel.gid_index.get(p.name)
        if gid is None or p.state_id != ACTIVE:
            continue
        mtu = sel.active_mtu.get(p.name, (None, None))[0]
        pr.ask("datapath", p.name, lambda p=p, gid=gid, mtu=mtu: datapath.probe_port(p.device, p.port, gid, env, mtu))


def nf_local(addrs: dict[str, Any]) -> dict[str, list[str]]:
    """{ifname: [addresses]}: IPv4 then IPv6 (an IPv6 mesh needs the latter; in_subnet filters by family)."""
    return {k: list((v or {}).get("ipv4") or []) + list((v or {}).get("ipv6") or [])
            for k, v in addrs.items() if isinstance(v, dict)}


# ------------------------------------------------------------------ derived facts

def named_exactly(spec: ListSpec, p: Port) -> bool:
    """Does an NCCL_IB_HCA entry name this very port (exact mode, or the full device name)?  A prefix
    such as ``roce`` (DGX Spark setups) names a family: NCCL drops its non-ACTIVE members silently
    (src/transport/net_ib/init.cc: ``if (portAttr.state != IBV_PORT_ACTIVE) continue;`` before matching)."""
    if spec.exclude or not spec.entries:
        return False
    return any((e.name == p.device) and (e.port is None or e.port == p.port) for e in spec.entries)


def select_ports(facts: NodeFacts, config: Config) -> Selection:
    """The ports NCCL selects on this node (:func:`select_from` of its devices and NCCL_IB_HCA)."""
    return select_from(facts.ib, config.get("NCCL_IB_HCA"))


def select_from(devices: dict, raw: str | None) -> Selection:
    """NCCL's port choice (NVIDIA/nccl src/transport/net_ib/init.cc): it drops ports that are not ACTIVE,
    then keeps those NCCL_IB_HCA matches (unset: all).  A down port an entry names exactly stays (the gates
    fail it); one matched only by a prefix is ``skipped``.  When no port is ACTIVE every matched port stays,
    so each gate shows what is wrong with it.  The one HCA selection: preflight's and the bench path
    proof's (bench/path_proof.py)."""
    from rdmacheck.nccl.spec import ListSpec, parse_list_spec

    try:
        spec = parse_list_spec(raw, "NCCL_IB_HCA", with_ports=True)
        err = None
    except UsageError as e:
        spec, err = ListSpec(entries=[], raw=raw or ""), str(e)
    matched = [p for d in devices.values() for p in d.ports.values() if spec.matches(d.name, p.port)]
    if any(q.state_id == ACTIVE for q in matched):
        ports = [q for q in matched if q.state_id == ACTIVE or named_exactly(spec, q)]
    else:
        ports = matched
    return Selection(spec=spec, spec_error=err, explicit=bool(spec.entries) and not spec.exclude, ports=ports,
                     skipped=[q for q in matched if q not in ports])


def gid_settings(config: Config) -> tuple[str, Any, int, int | None]:
    """(address family, NCCL_IB_ADDR_RANGE network, NCCL's RoCE version, NCCL_IB_GID_INDEX or None for auto),
    read as NCCL reads them (src/transport/net_ib/connect.cc envIbAddrFamily: strcmp "AF_INET6";
    src/misc/param.cc: strtoll base 0, empty = default, IB_ROCE_VERSION_NUM default 2, a negative
    IB_GID_INDEX = automatic); raises ValueError/UsageError on values NCCL would misread."""
    from rdmacheck.nccl.spec import ib_addr_family, nccl_gid_index, nccl_param_int, parse_addr_range

    family = ib_addr_family(config.get("NCCL_IB_ADDR_FAMILY"))
    addr_range = parse_addr_range(config.get("NCCL_IB_ADDR_RANGE"), family)
    roce_ver = nccl_param_int(config.get("NCCL_IB_ROCE_VERSION_NUM"))
    explicit = nccl_param_int(config.get("NCCL_IB_GID_INDEX"))
    return family, addr_range, 2 if roce_ver is None else roce_ver, nccl_gid_index(explicit)


def _derive_gid(facts: NodeFacts, config: Config, sel: Selection) -> None:
    from rdmacheck.nccl.spec import predict_gid_index

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
        ip = cg.ip if cg else None
        in_subnet = bool(cg and cg.roce_version == config.profile.roce_version and ip is not None
                         and ip.version == subnet.version and ip in subnet)
        sel.gid_index[p.name] = chosen
        sel.gid_info[p.name] = {"index": chosen, "predicted": predicted, "explicit": explicit_idx,
                                "gid": cg.gid if cg else None, "ipv4": cg.ipv4 if cg else None,
                                "ip": str(ip) if ip is not None else None,
                                "type": cg.type if cg else None, "in_subnet": in_subnet,
                                # the netdev the GID belongs to: a VLAN's GID sits on the VLAN netdev, whose MTU
                                # is what the RoCE frames of that GID must fit
                                "ndev": cg.ndev if cg else None}


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
            drv = roce_driver(facts.ib.get(p.device))
            sel.active_mtu[p.name] = (roce_active_mtu(nmtu, drv),
                                      f"derived from netdev MTU - {roce_overhead(drv)} ({drv or 'hardware'}; no verbs)")
        else:
            sel.active_mtu[p.name] = (None, None)


def bootstrap_address(facts: NodeFacts, config: Config) -> dict[str, Any]:
    """The interface and address NCCL's bootstrap will advertise, by NCCL's own rule
    (nccl.spec.socket_interfaces: NVIDIA/nccl src/bootstrap.cc -> src/misc/socket.cc ncclFindInterfaces ->
    src/os/linux.cc ncclOsFindInterfaces): the first address of the first running interface that
    NCCL_SOCKET_IFNAME matches, IPv4 before IPv6 unless NCCL_SOCKET_FAMILY forces one.  Without
    NCCL_SOCKET_IFNAME: NCCL tries ib*, then any but docker*/lo/virbr*, then docker*, lo, virbr*.
    ``addr_len`` keeps the prefix (for a remedy that names the address exactly)."""
    from rdmacheck.nccl.spec import socket_family, socket_interfaces

    spec_text = config.get("NCCL_SOCKET_IFNAME")
    fam = socket_family(config.get("NCCL_SOCKET_FAMILY"))
    running = (lambda n: bool(facts.net.get(n) and facts.net[n].up))
    try:
        if spec_text and len(spec_text) > 1:
            rule = f"NCCL_SOCKET_IFNAME={spec_text}"
            pairs = socket_interfaces(facts.addrs, running, spec_text, fam)
        else:
            rule = "NCCL_SOCKET_IFNAME unset: ib*, then any but docker*/lo/virbr*, then docker*, lo, virbr*"
            pairs = []
            for order in ("ib", "^docker,lo,virbr", "docker", "lo", "virbr"):
                pairs = socket_interfaces(facts.addrs, running, order, fam)
                if pairs:
                    break
    except UsageError as e:
        return {"ifname": None, "addr": None, "addr_len": None, "rule": f"NCCL_SOCKET_IFNAME invalid: {e}"}
    if not pairs:
        return {"ifname": None, "addr": None, "addr_len": None, "rule": rule}
    ifname, addr = pairs[0]
    return {"ifname": ifname, "addr": addr.split("/")[0], "addr_len": addr, "rule": rule}


def derive(facts: NodeFacts, config: Config) -> NodeFacts:
    """Fill the configuration-dependent facts in place (pure: reads only ``facts``)."""
    sel = select_ports(facts, config)
    _derive_mtu(facts, sel)
    _derive_gid(facts, config, sel)
    facts.selection = sel
    facts.bootstrap = bootstrap_address(facts, config)
    return facts
