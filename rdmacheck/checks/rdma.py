"""RDMA gates: devices, ports, netdev map, GID, MTU, QoS values, device files.

Port selection follows NCCL: with NCCL_IB_HCA set, exactly the ports it names
(prefix match unless ``=``, ``^`` excludes, ``:port`` narrows); without it,
every port of every device (NCCL then uses the ACTIVE ones).
"""

from __future__ import annotations

import ipaddress

from ..errors import UsageError
from ..facts.infiniband import IB_MTUS, ROCE_OVERHEAD, Port, gid_bytes, roce_active_mtu  # noqa: F401
from ..gather import gid_settings, select_ports  # noqa: F401  (select_ports: re-exported)
from ..model import Result, Status
from ..ncclspec import parse_list_spec
from ..nodefacts import Selection  # noqa: F401  (re-exported)
from . import gate

ACTIVE = 4
LINK_UP = 5


def _no_devices_remedy() -> str:
    return ("load the RDMA driver (mlx5_ib for ConnectX, rdma_rxe for soft-RoCE), check `rdma link`, "
            "and inside a container mount /sys/class/infiniband and pass /dev/infiniband")


@gate("rdma.devices")
def gate_devices(facts, config) -> list[Result]:
    sel = facts.selection
    names = sorted(facts.ib)
    hca = config.get("NCCL_IB_HCA")
    exp = f"NCCL_IB_HCA={hca} present" if hca else "at least one RDMA device (auto-detect: NCCL_IB_HCA unset)"
    if sel.spec_error:
        return [Result("rdma.devices", Status.FAIL, observed=sel.spec_error, expected=exp,
                       remedy="fix NCCL_IB_HCA in the .env: e.g. NCCL_IB_HCA=roceP2p1s0f0 or =mlx5_0:1,mlx5_1:1")]
    if not names:
        return [Result("rdma.devices", Status.FAIL, observed="no RDMA devices in /sys/class/infiniband",
                       expected=exp, remedy=_no_devices_remedy())]
    details = {"devices": names, "selected_ports": [p.name for p in sel.ports]}
    if sel.spec.entries and not sel.spec.exclude:
        missing = [e for e in sel.spec.entries
                   if not any((n == e.name if sel.spec.exact else n.startswith(e.name)) and
                              (e.port is None or e.port in facts.ib[n].ports) for n in names)]
        if missing:
            miss = ", ".join(e.name + (f":{e.port}" if e.port else "") for e in missing)
            return [Result("rdma.devices", Status.FAIL, observed=f"{miss} not found; present: {', '.join(names)}",
                           expected=exp, remedy=f"set NCCL_IB_HCA to a present device (one of: {', '.join(names)}) "
                                                f"or bring {miss} up", details=details)]
    if not sel.ports:
        return [Result("rdma.devices", Status.FAIL, observed=f"NCCL_IB_HCA={hca} selects no port of {', '.join(names)}",
                       expected=exp, remedy="fix the NCCL_IB_HCA exclusion/port list", details=details)]
    unreadable = [d.name for d in facts.ib.values() if not d.readable]
    obs = f"{', '.join(names)}; NCCL will use {', '.join(p.name for p in sel.ports)}"
    if unreadable:
        return [Result("rdma.devices", Status.WARN, observed=obs + f"; unreadable: {', '.join(unreadable)}",
                       expected=exp, remedy="the class entries point at missing device folders (dangling links)",
                       details=details)]
    return [Result("rdma.devices", Status.PASS, observed=obs, expected=exp, details=details)]


def _fw(facts, dev: str) -> str | None:
    """Firmware from sysfs, else from verbs: rxe's sysfs fw_ver is an empty file (verbs says 0.0.0)."""
    fw = facts.ib[dev].fw_ver
    if fw:
        return fw
    v = (facts.verbs.get("devices") or {}).get(dev) if isinstance(facts.verbs, dict) else None
    return (v or {}).get("fw_version") or None


def _port_row(facts, p: Port) -> dict:
    return {"port": p.name, "state": p.state, "phys_state": p.phys_state, "link_layer": p.link_layer,
            "rate": p.rate, "fw_ver": _fw(facts, p.device)}


@gate("rdma.port")
def gate_port(facts, config) -> list[Result]:
    sel = facts.selection
    if not sel.ports:
        return [Result("rdma.port", Status.SKIP, observed="no port selected", expected="ACTIVE / LinkUp",
                       remedy="see rdma.devices")]
    rows = [_port_row(facts, p) for p in sel.ports]
    up = [p for p in sel.ports if p.state_id == ACTIVE and p.phys_state_id == LINK_UP]
    down = [p for p in sel.ports if p not in up]
    obs = "; ".join(f"{p.name} {p.state or '?'}/{p.phys_state or '?'} {p.link_layer or '?'} "
                    f"{p.rate or '?'} fw {_fw(facts, p.device) or '?'}" for p in sel.ports)
    exp = "each selected port ACTIVE / LinkUp"
    if not up or (down and sel.explicit):
        names = ", ".join(p.name for p in down)
        return [Result("rdma.port", Status.FAIL, observed=obs, expected=exp,
                       remedy=f"bring {names} up: check the cable/switch port, `ip link set <netdev> up`, "
                              "`rdma link show`; a port in INIT has no subnet manager (IB) or no link partner",
                       details={"ports": rows})]
    if down:
        return [Result("rdma.port", Status.WARN, observed=obs, expected=exp,
                       remedy=f"{', '.join(p.name for p in down)} down; NCCL skips it. Pin NCCL_IB_HCA to the ports you cable",
                       details={"ports": rows})]
    return [Result("rdma.port", Status.PASS, observed=obs, expected=exp, details={"ports": rows})]


@gate("rdma.netdev")
def gate_netdev(facts, config) -> list[Result]:
    sel = facts.selection
    net = facts.net
    mapping = {p.name: p.netdevs for p in sel.ports}
    problems: list[str] = []
    parts = []
    for p in sel.ports:
        if not p.netdevs:
            if p.link_layer == "Ethernet":
                problems.append(f"{p.name} has no netdev")
            parts.append(f"{p.name} -> (none)")
            continue
        nd = net.get(p.netdevs[0])
        state = "up" if nd and nd.up else ("missing" if nd is None else (nd.operstate or "down"))
        parts.append(f"{p.name} -> {p.netdevs[0]} ({state})")
        if p.link_layer == "Ethernet" and (nd is None or not nd.up):
            problems.append(f"{p.netdevs[0]} is {state}")
    ifname = config.get("NCCL_SOCKET_IFNAME")
    try:
        spec = parse_list_spec(ifname, "NCCL_SOCKET_IFNAME")
    except UsageError as e:
        return [Result("rdma.netdev", Status.FAIL, observed=str(e), expected="a valid NCCL_SOCKET_IFNAME",
                       remedy="write NCCL_SOCKET_IFNAME=enP2p1s0f0np0 (prefix match; '=' exact; '^' excludes)")]
    status = Status.PASS
    remedy = ""
    if ifname:
        matched = [n for n in net if spec.matches(n)]
        up = [n for n in matched if net[n].up]
        parts.append(f"NCCL_SOCKET_IFNAME={ifname} -> {', '.join(matched) or 'nothing'}")
        if not matched:
            problems.append(f"NCCL_SOCKET_IFNAME={ifname} matches no interface (have {', '.join(sorted(net))})")
        elif not up and not spec.exclude:
            problems.append(f"NCCL_SOCKET_IFNAME={ifname} matches only down interfaces ({', '.join(matched)})")
    else:
        status = Status.WARN
        remedy = ("set NCCL_SOCKET_IFNAME to the RDMA-subnet interface (e.g. enP2p1s0f0np0): unset, NCCL "
                  "bootstraps over whichever interface it finds first")
    obs = "; ".join(parts) or "no selected port"
    exp = "each RoCE port has an up netdev; NCCL_SOCKET_IFNAME names an existing, up interface"
    details = {"map": mapping}
    if problems:
        return [Result("rdma.netdev", Status.FAIL, observed=obs + " — " + "; ".join(problems), expected=exp,
                       remedy="bring the interface up (`ip link set dev IF up`) and set NCCL_SOCKET_IFNAME to the "
                              "netdev of the RDMA port (see `rdma link` / ibdev2netdev)", details=details)]
    return [Result("rdma.netdev", status, observed=obs, expected=exp, remedy=remedy, details=details)]


def _gid_label(g_bytes: bytes | None, gtype: str | None, idx: int) -> str:
    if g_bytes is None or g_bytes == bytes(16):
        return f"[{idx}] empty"
    addr = ipaddress.IPv6Address(g_bytes)
    text = str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    return f"[{idx}] {text} {gtype or 'type ?'}"


@gate("rdma.gid")
def gate_gid(facts, config) -> list[Result]:
    sel = facts.selection
    profile = config.profile
    subnet = profile.network()
    try:
        _family, _range, roce_ver, explicit_idx = gid_settings(config)
    except (UsageError, ValueError) as e:
        return [Result("rdma.gid", Status.FAIL, observed=f"bad GID setting: {e}", expected="valid NCCL_IB_* GID settings",
                       remedy="fix NCCL_IB_GID_INDEX (an integer), NCCL_IB_ROCE_VERSION_NUM (1 or 2) or NCCL_IB_ADDR_RANGE")]
    exp = f"a RoCE v{roce_ver} GID with an IPv4 address in {subnet} on each port; NCCL's pick inside it"
    out: list[Result] = []
    roce_ports = [p for p in sel.ports if p.link_layer != "InfiniBand"]
    if not sel.ports:
        return [Result("rdma.gid", Status.SKIP, observed="no port selected", expected=exp, remedy="see rdma.devices")]
    if not roce_ports:
        return [Result("rdma.gid", Status.PASS, observed="InfiniBand ports: NCCL uses GID 0 / LID routing",
                       expected=exp)]
    fails, obs_parts, details = [], [], {}
    for p in roce_ports:
        table = {g.index: g for g in p.gids}
        in_subnet = [g for g in p.gids if g.roce_version == roce_ver and g.ipv4 and
                     ipaddress.ip_address(g.ipv4) in subnet]
        # NCCL's pick (ncclspec.predict_gid_index), derived in phase 1 (gather.derive)
        info = sel.gid_info[p.name]
        predicted = info["predicted"]
        pg = table.get(predicted)
        listing = ", ".join(_gid_label(g.raw, g.type, g.index) for g in p.gids[:8]) or "no GIDs"
        chosen = info["index"]
        cg = table.get(chosen)
        details[p.name] = {"gids": [g.to_dict() for g in p.gids[:32]], **info}
        how = "NCCL_IB_GID_INDEX" if explicit_idx is not None else "NCCL will pick"
        obs_parts.append(f"{p.name}: {how} {_gid_label(cg.raw if cg else None, cg.type if cg else None, chosen)}"
                         f" (GIDs: {listing})")
        good_idx = in_subnet[-1].index if in_subnet else None
        if not in_subnet:
            nd = p.netdevs[0] if p.netdevs else "<netdev>"
            fails.append((f"{p.name}: no RoCE v{roce_ver} GID with an IPv4 address in {subnet}",
                          f"assign an address in {subnet} to {nd} (ip addr add <addr>/{subnet.prefixlen} dev {nd}); "
                          f"the kernel adds the RoCE v2 GID itself"))
            continue
        if explicit_idx is not None:
            why = None
            if cg is None:
                why = "is an empty entry"
            elif cg.raw and ipaddress.IPv6Address(cg.raw).is_link_local:
                why = "is an fe80 link-local GID (not routable)"
            elif cg.ipv4 and ipaddress.ip_address(cg.ipv4).is_link_local:
                why = f"carries the 169.254 link-local address {cg.ipv4}"
            elif cg.roce_version != roce_ver:
                why = f"is {cg.type or 'of unknown type'}, not RoCE v{roce_ver}"
            elif cg not in in_subnet:
                why = f"is outside {subnet}"
            if why:
                fails.append((f"{p.name}: NCCL_IB_GID_INDEX={explicit_idx} {why}",
                              f"set NCCL_IB_GID_INDEX={good_idx} (or unset it: NCCL >= 2.21 picks index {predicted} itself)"))
            continue
        if pg not in in_subnet:
            fails.append((f"{p.name}: NCCL would pick GID {predicted}, outside {subnet} or not RoCE v{roce_ver}",
                          f"set NCCL_IB_ADDR_RANGE={subnet} or NCCL_IB_GID_INDEX={good_idx}"))
    obs = "; ".join(obs_parts)
    if fails:
        out.append(Result("rdma.gid", Status.FAIL, observed=obs + " — " + "; ".join(f for f, _ in fails),
                          expected=exp, remedy="; ".join(r for _, r in fails), details=details))
    else:
        out.append(Result("rdma.gid", Status.PASS, observed=obs, expected=exp, details=details))
    return out


@gate("rdma.mtu")
def gate_mtu(facts, config) -> list[Result]:
    sel = facts.selection
    prof = config.profile
    exp = f"netdev MTU {prof.mtu}, RoCE active MTU {prof.active_mtu}"
    if not sel.ports:
        return [Result("rdma.mtu", Status.SKIP, observed="no port selected", expected=exp, remedy="see rdma.devices")]
    fails, parts, details, unknown = [], [], {}, []
    for p in sel.ports:
        nd = facts.net.get(p.netdevs[0]) if p.netdevs else None
        nmtu = nd.mtu if nd else None
        # sysfs, else verbs, else derived from the netdev MTU: phase 1 decided (gather.derive)
        amtu, src = sel.active_mtu.get(p.name, (None, None))
        details[p.name] = {"netdev": nd.name if nd else None, "netdev_mtu": nmtu, "active_mtu": amtu, "source": src}
        parts.append(f"{p.name}: netdev {nd.name if nd else '?'} MTU {nmtu if nmtu else '?'}, "
                     f"active MTU {amtu or '?'} ({src or 'unknown'})")
        if p.link_layer != "InfiniBand":
            if nmtu is None:
                fails.append((f"{p.name}: netdev MTU unknown", "map the port to its netdev (see rdma.netdev)"))
            elif nmtu != prof.mtu:
                fails.append((f"{p.name}: {nd.name} MTU {nmtu} != {prof.mtu}",
                              f"ip link set dev {nd.name} mtu {prof.mtu} (persist it in netplan/NetworkManager) "
                              f"and set the switch ports to {prof.mtu}+"))
        if amtu is not None and amtu != prof.active_mtu:
            fails.append((f"{p.name}: active MTU {amtu} != {prof.active_mtu}",
                          f"raise the netdev MTU to {prof.mtu}: RoCE MTU {prof.active_mtu} needs a netdev MTU >= "
                          f"{prof.active_mtu + ROCE_OVERHEAD}"))
        elif amtu is None:
            unknown.append(p.name)
    obs = "; ".join(parts)
    if unknown and not fails:
        return [Result("rdma.mtu", Status.WARN, observed=obs, expected=exp,
                       remedy=f"active MTU of {', '.join(unknown)} unknown: install python3-pyverbs (rdma-core) "
                              "or read it with `ibv_devinfo -v`", details=details)]
    if fails:
        return [Result("rdma.mtu", Status.FAIL, observed=obs + " — " + "; ".join(f for f, _ in fails), expected=exp,
                       remedy="; ".join(dict.fromkeys(r for _, r in fails)), details=details)]
    return [Result("rdma.mtu", Status.PASS, observed=obs, expected=exp, details=details)]


# name -> (low, high, what NCCL does when unset)
QOS_RANGES = {
    "NCCL_IB_TC": (0, 255, "traffic class 0: the default, usually lossy, class"),
    "NCCL_IB_SL": (0, 15, "service level 0"),
    "NCCL_IB_TIMEOUT": (1, 31, "NCCL's default timeout"),
    "NCCL_IB_RETRY_CNT": (0, 7, "NCCL's default retry count (7)"),
}


@gate("rdma.qos")
def gate_qos(facts, config) -> list[Result]:
    bad, unset, parts = [], [], []
    for key, (lo, hi, default) in QOS_RANGES.items():
        v = config.get(key)
        if v is None:
            parts.append(f"{key} unset")
            if key in ("NCCL_IB_TC", "NCCL_IB_SL"):
                unset.append(f"{key} unset: NCCL uses {default}")
            continue
        try:
            n = int(v.strip(), 0)
        except ValueError:
            bad.append(f"{key}={v!r} is not a number")
            continue
        parts.append(f"{key}={n}")
        if not lo <= n <= hi:
            bad.append(f"{key}={n} outside {lo}-{hi}")
    exp = "TC 0-255, SL 0-15, TIMEOUT 1-31, RETRY_CNT 0-7; TC/SL set to the fabric's lossless class"
    obs = ", ".join(parts)
    if bad:
        return [Result("rdma.qos", Status.FAIL, observed=f"{obs} — {'; '.join(bad)}", expected=exp,
                       remedy="fix the values in the .env (e.g. NCCL_IB_TC=106 NCCL_IB_SL=3 NCCL_IB_TIMEOUT=22 "
                              "NCCL_IB_RETRY_CNT=7)")]
    if unset:
        return [Result("rdma.qos", Status.WARN, observed=f"{obs} — {'; '.join(unset)}", expected=exp,
                       remedy="set NCCL_IB_TC / NCCL_IB_SL to the class your switches treat as lossless (PFC/ECN)")]
    return [Result("rdma.qos", Status.PASS, observed=obs, expected=exp)]


@gate("rdma.devfiles")
def gate_devfiles(facts, config) -> list[Result]:
    df = facts.devfiles
    sel = facts.selection
    exp = "/dev/infiniband/rdma_cm and a uverbs device per selected HCA; /etc/rdma present"
    problems = []
    if "rdma_cm" not in df.present:
        problems.append("/dev/infiniband/rdma_cm missing")
    hcas = sorted({p.device for p in sel.ports})
    rows = {}
    for h in hcas:
        uv = df.uverbs_for(h)
        rows[h] = uv
        if not uv:
            problems.append(f"no uverbs device for {h}")
        elif not any(u in df.present for u in uv):
            problems.append(f"/dev/infiniband/{uv[0]} ({h}) missing")
    obs = "; ".join([f"/dev/infiniband: {', '.join(df.present) or 'absent'}"]
                    + [f"{h} -> {', '.join(u) or '?'}" for h, u in rows.items()]
                    + [f"/etc/rdma {'present' if df.etc_rdma else 'absent'}"])
    details = {"dev_infiniband": df.present, "uverbs": rows}
    if problems:
        return [Result("rdma.devfiles", Status.FAIL, observed=obs + " — " + "; ".join(problems), expected=exp,
                       remedy="load ib_uverbs and rdma_ucm (`modprobe ib_uverbs rdma_ucm`); in a container pass "
                              "`--device /dev/infiniband` (compose: devices: - /dev/infiniband)", details=details)]
    if not df.etc_rdma:
        return [Result("rdma.devfiles", Status.WARN, observed=obs, expected=exp,
                       remedy="install rdma-core (it provides /etc/rdma); the container mounts it read-only",
                       details=details)]
    return [Result("rdma.devfiles", Status.PASS, observed=obs, expected=exp, details=details)]
