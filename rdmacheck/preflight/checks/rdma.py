"""RDMA gates: devices, ports, netdev map, GID, MTU, QoS values, device files.

Port selection follows NCCL (NVIDIA/nccl src/transport/net_ib/init.cc): NCCL walks every port, drops
the ones that are not ACTIVE, then keeps those NCCL_IB_HCA matches (prefix match unless ``=``, ``^``
excludes, ``:port`` narrows; unset: all).  A down port that an entry names exactly is kept so the gates
fail it; a down port matched only by a prefix is one NCCL skips (``Selection.skipped``).
"""

from __future__ import annotations

import ipaddress
import re

from rdmacheck.util.errors import UsageError
from rdmacheck.preflight.facts.infiniband import (IB_MTUS, ROCE_OVERHEAD, Port, gid_bytes, roce_active_mtu,  # noqa: F401
                                roce_driver, roce_overhead)
from rdmacheck.preflight.facts.infiniband import ACTIVE, LINK_UP  # noqa: F401  (re-exported)
from rdmacheck.preflight.gather import gid_settings, named_exactly, select_ports  # noqa: F401  (select_ports: re-exported)
from rdmacheck.evidence.model import Result, Status
from rdmacheck.nccl.spec import ListSpec, ignored_addr_range, nccl_param_int, parse_list_spec
from rdmacheck.preflight.nodefacts import Selection  # noqa: F401  (re-exported)



def _no_devices_remedy() -> str:
    return ("load the RDMA driver (mlx5_ib for ConnectX, rdma_rxe for soft-RoCE), check `rdma link`, "
            "and inside a container mount /sys/class/infiniband and pass /dev/infiniband")


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
            miss = ", ".join(repr(e.name) if e.name != e.name.strip() else e.name + (f":{e.port}" if e.port else "")
                             for e in missing)
            return [Result("rdma.devices", Status.FAIL, observed=f"{miss} not found; present: {', '.join(names)}",
                           expected=exp, remedy=_missing_remedy(missing, facts, names, sel.spec.exact),
                           details=details)]
    if not sel.ports:
        return [Result("rdma.devices", Status.FAIL, observed=f"NCCL_IB_HCA={hca} selects no port of {', '.join(names)}",
                       expected=exp, remedy="fix the NCCL_IB_HCA exclusion/port list", details=details)]
    unreadable = [d.name for d in facts.ib.values() if not d.readable]
    obs = f"{', '.join(names)}; NCCL will use {', '.join(p.name for p in sel.ports)}"
    half = _one_half_used(facts, config)
    if half:
        return [Result("rdma.devices", Status.WARN, observed=obs + "; " + half[0], expected=exp, remedy=half[1],
                       details=details)]
    if unreadable:
        return [Result("rdma.devices", Status.WARN, observed=obs + f"; unreadable: {', '.join(unreadable)}",
                       expected=exp, remedy="the class entries point at missing device folders (dangling links)",
                       details=details)]
    return [Result("rdma.devices", Status.PASS, observed=obs, expected=exp, details=details)]


def _missing_remedy(missing, facts, names, exact: bool) -> str:
    """What to change for NCCL_IB_HCA entries that match nothing, from the facts held: a name NCCL reads with
    its white space, a port the device does not have (its ports are listed), else a device that is absent."""
    fixes = []
    for e in missing:
        hits = [n for n in names if (n == e.name if exact else n.startswith(e.name))]
        if e.name != e.name.strip():
            fixes.append(f"remove the white space around {e.name.strip()!r} in NCCL_IB_HCA (NCCL keeps it as part "
                         "of the name: entries are split on ',' only)")
        elif hits and e.port is not None:
            have = sorted({q for n in hits for q in facts.ib[n].ports})
            fixes.append(f"{e.name} has port(s) {', '.join(map(str, have))}, not {e.port}: write "
                         f"{e.name}:{have[0] if have else 1} or drop ':{e.port}'")
        else:
            fixes.append(f"replace {e.name} with a present device (one of: {', '.join(names)})")
    return "set NCCL_IB_HCA in the .env: " + "; ".join(dict.fromkeys(fixes))


# systemd's names for PCI RDMA devices: roce[P<domain>]p<bus>s<slot>f<function>
_PCI_NAME = re.compile(r"^roce(?:P(\d+))?p(\d+)s(\d+)f(\d+)$")


def port_halves(names) -> dict[tuple[str, str, str], list[str]]:
    """DGX Spark: each QSFP port of its ConnectX-7 appears as two RoCE devices of ~100 Gb/s, the same
    bus/slot/function in two PCI domains (rocep1s0f0 and roceP2p1s0f0 are port 0's halves; f1 is port 1).
    {(bus, slot, function): [device, ...]} for the groups that have more than one device."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for n in sorted(names):
        m = _PCI_NAME.match(n)
        if m:
            groups.setdefault(m.groups()[1:], []).append(n)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _one_half_used(facts, config) -> tuple[str, str] | None:
    """On DGX Spark, NCCL_IB_HCA using one half of a port whose other half is ACTIVE too: (observed, remedy).

    One half reaches ~12 GB/s, both ~20-24 GB/s (NVIDIA forum thread 352051; NVIDIA/dgx-spark-playbooks
    #102 / PR #103)."""
    halves = port_halves(facts.ib)
    if not halves:
        return None  # not the layout: no NVML query needed
    from rdmacheck.preflight.checks.gpu import platform

    plat = platform(config, facts.nvml, facts.model)
    if plat != "dgx-spark":
        return None
    used = {p.device for p in facts.selection.ports if p.state_id == ACTIVE}
    active = {d.name for d in facts.ib.values() if any(p.state_id == ACTIVE for p in d.ports.values())}
    for devs in halves.values():
        up = [d for d in devs if d in active]
        mine = [d for d in up if d in used]
        if mine and len(mine) < len(up):
            other = [d for d in up if d not in used]
            hca = ",".join(sorted(used | set(other)))
            return (f"only one half of the QSFP port is used: NCCL_IB_HCA selects {', '.join(mine)}, not its other "
                    f"ACTIVE half {', '.join(other)} (one half ~12 GB/s, both ~20-24 GB/s on DGX Spark)",
                    f"set NCCL_IB_HCA={hca} in the .env (both halves of the port; the netdev of "
                    f"{', '.join(other)} needs its own address for a RoCE v2 GID)")
    return None


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


def _up_remedy(facts, p: Port) -> str:
    nd = p.netdevs[0] if p.netdevs else None
    if p.link_layer == "InfiniBand":
        return f"{p.name}: check the cable and that a subnet manager runs (`ibstat {p.device}`, `rdma link show {p.device}/{p.port}`)"
    if nd:
        return (f"{p.name}: ip link set {nd} up; if it stays down check the cable/switch port "
                f"(`rdma link show {p.device}/{p.port}`, `ethtool {nd}`)")
    return f"{p.name}: check the cable/switch port and `rdma link show {p.device}/{p.port}` (no netdev mapped)"


def gate_port(facts, config) -> list[Result]:
    sel = facts.selection
    if not sel.ports:
        return [Result("rdma.port", Status.SKIP, observed="no port selected", expected="ACTIVE / LinkUp",
                       remedy="see rdma.devices")]
    every = sel.ports + sel.skipped
    rows = [_port_row(facts, p) for p in every]
    up = [p for p in every if p.state_id == ACTIVE and p.phys_state_id == LINK_UP]
    # a state file that holds no "N: NAME" (junk, empty, a dangling link) says nothing: unknown, not DOWN
    unknown = [p for p in every if p not in up and p.state_id is None]
    down = [p for p in every if p not in up]
    pinned_down = [p for p in down if named_exactly(sel.spec, p) and p not in unknown]
    obs = "; ".join(f"{p.name} {p.state or '?'}/{p.phys_state or '?'} {p.link_layer or '?'} "
                    f"{p.rate or '?'} fw {_fw(facts, p.device) or '?'}" for p in every)
    exp = "each selected port ACTIVE / LinkUp"
    if not up and unknown and len(unknown) == len(down):
        from rdmacheck.evidence.model import could_not_judge

        names = ", ".join(p.name for p in unknown)
        return [could_not_judge("rdma.port", f"the state of {names} could not be read (ports/N/state holds no "
                                f"'N: NAME' or is missing); {obs}", exp,
                                f"read it by hand: rdma link show {unknown[0].device}/{unknown[0].port} "
                                f"(cat /sys/class/infiniband/{unknown[0].device}/ports/{unknown[0].port}/state)",
                                ports=rows)]
    if not up or pinned_down:
        bad = pinned_down or down
        why = ("no selected port is ACTIVE: NCCL finds no RDMA device and falls back to NET/Socket" if not up
               else f"NCCL_IB_HCA={sel.spec.raw} names {', '.join(p.name for p in bad)}, which NCCL skips while not ACTIVE")
        fix = "; ".join(_up_remedy(facts, p) for p in bad)
        if up:
            # NCCL runs on the ACTIVE ones and skips these: the list, not the link, is what is wrong for this job
            fix = (f"drop {', '.join(p.name for p in bad)} from NCCL_IB_HCA (NCCL uses "
                   f"{', '.join(p.name for p in up)} and skips a port that is not ACTIVE), or bring it up: {fix}")
        return [Result("rdma.port", Status.FAIL, observed=f"{obs} — {why}", expected=exp, remedy=fix,
                       details={"ports": rows})]
    if down:
        how = (f"NCCL_IB_HCA={sel.spec.raw} matches them by prefix" if sel.spec.entries and not sel.spec.exclude
               else "NCCL_IB_HCA does not name them")
        return [Result("rdma.port", Status.WARN,
                       observed=f"{obs} — {', '.join(p.name for p in down)} not ACTIVE: NCCL skips it ({how}) "
                                f"and uses {', '.join(p.name for p in up)}",
                       expected=exp,
                       remedy="cable it and bring it up if it should carry traffic (" +
                              "; ".join(_up_remedy(facts, p) for p in down) + "), else nothing to do",
                       details={"ports": rows})]
    return [Result("rdma.port", Status.PASS, observed=obs, expected=exp, details={"ports": rows})]


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
        downs = [p.netdevs[0] for p in sel.ports if p.link_layer == "Ethernet" and p.netdevs
                 and net.get(p.netdevs[0]) is not None and not net[p.netdevs[0]].up]
        first = next((p.netdevs[0] for p in sel.ports if p.netdevs), None)
        fix = [f"ip link set dev {d} up" for d in dict.fromkeys(downs)]
        if ifname and any("NCCL_SOCKET_IFNAME" in x for x in problems):
            fix.append(f"set NCCL_SOCKET_IFNAME={first}" if first else
                       "set NCCL_SOCKET_IFNAME to the netdev of the RDMA port (see `rdma link` / ibdev2netdev)")
        if not fix:
            fix.append("map each RoCE port to its netdev (`rdma link` / ibdev2netdev) and bring it up")
        return [Result("rdma.netdev", Status.FAIL, observed=obs + " — " + "; ".join(problems), expected=exp,
                       remedy="; ".join(fix), details=details)]
    return [Result("rdma.netdev", status, observed=obs, expected=exp, remedy=remedy, details=details)]


def _gid_label(g_bytes: bytes | None, gtype: str | None, idx: int) -> str:
    if g_bytes is None or g_bytes == bytes(16):
        return f"[{idx}] empty"
    addr = ipaddress.IPv6Address(g_bytes)
    text = str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    return f"[{idx}] {text} {gtype or 'type ?'}"


def _gids_in(p: Port, subnet, version: int | None = None) -> list:
    """The port's GIDs whose address lies in ``subnet`` (of its family), of RoCE ``version`` if given."""
    return [g for g in p.gids if g.ip is not None and g.ip.version == subnet.version and g.ip in subnet
            and (version is None or g.roce_version == version)]


def gate_gid(facts, config) -> list[Result]:
    """GID checks following NVIDIA/nccl src/transport/net_ib/connect.cc (ncclIbGetGidIndex,
    ncclUpdateGidIndex, envIbAddrFamily, envIbAddrRange) and src/misc/param.cc (integer parsing)."""
    sel = facts.selection
    profile = config.profile
    subnet = profile.network()
    env = config
    fam_word = "IPv4" if subnet.version == 4 else "IPv6"
    rv_raw = env.get("NCCL_IB_ROCE_VERSION_NUM")
    try:
        # read as NCCL reads them (gather.gid_settings); the prediction itself was made in phase 1 (gather.derive)
        family, _range, nccl_ver, explicit_idx = gid_settings(config)
    except (UsageError, ValueError) as e:
        return [Result("rdma.gid", Status.FAIL, observed=f"bad GID setting: {e}", expected="valid NCCL_IB_* GID settings",
                       remedy="fix NCCL_IB_GID_INDEX (an integer; -1 or unset = NCCL picks), NCCL_IB_ROCE_VERSION_NUM "
                              "(1 or 2) or NCCL_IB_ADDR_RANGE in the .env")]
    want_ver = profile.roce_version
    exp = f"a RoCE v{want_ver} GID with an {fam_word} address in {subnet} on each port; NCCL's pick inside it"
    out: list[Result] = []
    roce_ports = [p for p in sel.ports if p.link_layer != "InfiniBand"]
    if not sel.ports:
        return [Result("rdma.gid", Status.SKIP, observed="no port selected", expected=exp, remedy="see rdma.devices")]
    if not roce_ports:
        return [Result("rdma.gid", Status.PASS, observed="InfiniBand ports: NCCL uses GID 0 / LID routing",
                       expected=exp)]
    fails, warns, obs_parts, details = [], [], [], {}
    want_family = "inet" if subnet.version == 4 else "inet6"
    for p in roce_ports:
        table = {g.index: g for g in p.gids}
        any_ver = _gids_in(p, subnet)
        in_subnet = _gids_in(p, subnet, want_ver)
        # NCCL's pick (nccl.spec.predict_gid_index), derived in phase 1 (gather.derive)
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
        nd = p.netdevs[0] if p.netdevs else "<netdev>"
        if not any_ver and p.state_id != ACTIVE:
            # a port that is not ACTIVE has lost its address GIDs with its netdev (roce_gid_mgmt drops them on
            # NETDEV_DOWN): the address may well be there, the link is the cause, and rdma.port judges it
            warns.append((f"{p.name}: no {fam_word} GID while the port is {p.state or 'not ACTIVE'} (a down link's "
                          "netdev has no address GIDs)",
                          f"see rdma.port: bring {nd} up, or drop {p.name} from NCCL_IB_HCA (NCCL skips a port "
                          "that is not ACTIVE)"))
            continue
        if not any_ver:
            ip_cmd = "ip addr add" if subnet.version == 4 else "ip -6 addr add"
            fails.append((f"{p.name}: no RoCE GID with an {fam_word} address in {subnet}",
                          f"assign this node's {subnet} address to {nd} ({ip_cmd} <address>/{subnet.prefixlen} dev {nd}); "
                          f"the kernel adds the RoCE GIDs itself"))
            continue
        if not in_subnet:
            have = ", ".join(f"[{g.index}] {g.type}" for g in any_ver)
            fails.append((f"{p.name}: the {subnet} address has only {have} GIDs, no RoCE v{want_ver}",
                          f"set roce_version = {any_ver[0].roce_version} in the profile if the fabric really runs it "
                          f"(the driver of {p.device} lists no RoCE v{want_ver} GID)"))
            continue
        if explicit_idx is None and nccl_ver != want_ver:
            # The cause is the variable, not the address: NCCL looks for RoCE v{nccl_ver} GIDs.
            fix = ("remove NCCL_IB_ROCE_VERSION_NUM from the .env and the container environment (NCCL's default is 2) "
                   "or set NCCL_IB_ROCE_VERSION_NUM=2") if want_ver == 2 else f"set NCCL_IB_ROCE_VERSION_NUM={want_ver}"
            if pg in in_subnet:
                # no v{nccl_ver} GID to prefer here (rxe lists v2 only): NCCL's walk still lands on the right one,
                # but a node with v1/v2 twins (mlx5) takes the v1 one, and the two ends disagree
                warns.append((f"{p.name}: NCCL_IB_ROCE_VERSION_NUM={rv_raw} asks NCCL for RoCE v{nccl_ver} GIDs; this "
                              f"port has none in {subnet}, so NCCL falls back to RoCE v{want_ver} GID {predicted} here, "
                              f"while a node with v1/v2 twins (mlx5) would take its v{nccl_ver} GID", fix))
            else:
                fails.append((f"{p.name}: NCCL_IB_ROCE_VERSION_NUM={rv_raw} makes NCCL pick GID {predicted} "
                              f"({pg.type if pg else 'empty'}); the {subnet} address is on RoCE v{want_ver} GID {good_idx}",
                              fix))
            continue
        if explicit_idx is not None:
            why = None
            if cg is None:
                why = "is an empty entry"
            elif cg.raw and ipaddress.IPv6Address(cg.raw).is_link_local:
                why = "is an fe80 link-local GID (not routable)"
            elif cg.ipv4 and ipaddress.ip_address(cg.ipv4).is_link_local:
                why = f"carries the 169.254 link-local address {cg.ipv4}"
            elif cg.roce_version != want_ver:
                why = f"is {cg.type or 'of unknown type'}, not RoCE v{want_ver}"
            elif cg not in in_subnet:
                why = f"is outside {subnet}"
            if why:
                fails.append((f"{p.name}: NCCL_IB_GID_INDEX={explicit_idx} {why}",
                              f"set NCCL_IB_GID_INDEX={good_idx} (or unset it: NCCL >= 2.21 picks index {predicted} itself)"))
            continue
        if pg not in in_subnet:
            if family != want_family:
                want = "AF_INET6" if want_family == "inet6" else "AF_INET"
                fix = (f"set NCCL_IB_ADDR_FAMILY={want} (NCCL_IB_ADDR_FAMILY={env.get('NCCL_IB_ADDR_FAMILY') or 'unset'} "
                       f"makes NCCL take {'an IPv4' if family == 'inet' else 'an IPv6'} GID; the mesh {subnet} is {fam_word})")
            else:
                fix = f"set NCCL_IB_ADDR_RANGE={subnet} or NCCL_IB_GID_INDEX={good_idx}"
            fails.append((f"{p.name}: NCCL would pick GID {predicted}, outside {subnet} or not RoCE v{want_ver}", fix))
    ignored = ignored_addr_range(env.get("NCCL_IB_ADDR_RANGE"), family)
    if ignored:
        warns.append((ignored, f"write it with its mask (e.g. NCCL_IB_ADDR_RANGE={subnet}) or remove it"))
    obs = "; ".join(obs_parts)
    if fails or warns:
        bad = fails + warns
        out.append(Result("rdma.gid", Status.FAIL if fails else Status.WARN,
                          observed=obs + " — " + "; ".join(f for f, _ in bad),
                          expected=exp, remedy="; ".join(dict.fromkeys(r for _, r in bad)), details=details))
    else:
        out.append(Result("rdma.gid", Status.PASS, observed=obs, expected=exp, details=details))
    return out


def _want_active_mtu(prof, driver: str | None, link_layer: str | None) -> int:
    """The RoCE active MTU to expect: the profile's, unless only the netdev MTU was set (``--expect mtu=1500``,
    the README's example): then what the kernel derives from it for this driver (1500 -> 1024), else a
    consistent 1500 node could never pass against the default 4096 (E6)."""
    explicit = getattr(prof, "explicit", frozenset())
    if "mtu" in explicit and "active_mtu" not in explicit and link_layer != "InfiniBand":
        derived = roce_active_mtu(prof.mtu, driver)
        if derived is not None:
            return derived
    return prof.active_mtu


def gate_mtu(facts, config) -> list[Result]:
    sel = facts.selection
    prof = config.profile
    exp = f"netdev MTU {prof.mtu}, RoCE active MTU {prof.active_mtu}"
    if not sel.ports:
        return [Result("rdma.mtu", Status.SKIP, observed="no port selected", expected=exp, remedy="see rdma.devices")]
    fails, parts, details, unknown = [], [], {}, []
    for p in sel.ports:
        # the netdev that carries the GID NCCL picks (a VLAN over the port's base netdev carries its own
        # GIDs, and its MTU is what the frames must fit), else the port's first netdev
        gnd = (sel.gid_info.get(p.name) or {}).get("ndev")
        nd = facts.net.get(gnd) if gnd in facts.net else (facts.net.get(p.netdevs[0]) if p.netdevs else None)
        via_gid = bool(nd and gnd == nd.name and p.netdevs and gnd != p.netdevs[0])
        nmtu = nd.mtu if nd else None
        # sysfs, else verbs, else derived from the netdev MTU with the driver's overhead: phase 1 decided
        amtu, src = sel.active_mtu.get(p.name, (None, None))
        details[p.name] = {"netdev": nd.name if nd else None, "netdev_mtu": nmtu, "active_mtu": amtu, "source": src}
        carrier = f" (carries NCCL's GID {sel.gid_index.get(p.name)}, over {p.netdevs[0]})" if via_gid else ""
        parts.append(f"{p.name}: netdev {nd.name if nd else '?'}{carrier} MTU {nmtu if nmtu else '?'}, "
                     f"active MTU {amtu or '?'} ({src or 'unknown'})")
        if p.link_layer != "InfiniBand":
            if nmtu is None:
                fails.append((f"{p.name}: netdev MTU unknown", "map the port to its netdev (see rdma.netdev)"))
            elif nmtu != prof.mtu:
                fails.append((f"{p.name}: {nd.name} MTU {nmtu} != {prof.mtu}",
                              f"ip link set dev {nd.name} mtu {prof.mtu} (persist it in netplan/NetworkManager) "
                              f"and set the switch ports to {prof.mtu}+"))
        want = _want_active_mtu(prof, roce_driver(facts.ib.get(p.device)), p.link_layer)
        details[p.name]["expected_active_mtu"] = want
        if amtu is not None and amtu != want:
            need = want + roce_overhead(roce_driver(facts.ib.get(p.device)))
            ifn = nd.name if nd else "<netdev>"
            fails.append((f"{p.name}: active MTU {amtu} != {want}",
                          f"ip link set dev {ifn} mtu {max(prof.mtu, need)}: RoCE MTU {want} needs a netdev "
                          f"MTU >= {need} on {ifn}"))
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
    "NCCL_IB_TIMEOUT": (0, 31, "NCCL's default timeout"),  # 0: the verbs "infinite" timeout
    "NCCL_IB_RETRY_CNT": (0, 7, "NCCL's default retry count (7)"),
}


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
            n = nccl_param_int(v)  # as NCCL's param.cc reads it: strtoll base 0 ("0x6a" = 106, "010" = 8)
        except ValueError:
            bad.append(f"{key}={v!r} is not a number (NCCL would not read it as meant)")
            continue
        if n is None:
            # empty, or beyond int64 (param.cc: strtoll's ERANGE -> NCCL's default)
            parts.append(f"{key} empty" if v == "" else f"{key}={v!r} (beyond int64: NCCL's default)")
            if key in ("NCCL_IB_TC", "NCCL_IB_SL"):
                unset.append(f"{key} not read: NCCL uses {default}")
            continue
        if n == -1 and key in ("NCCL_IB_TC", "NCCL_IB_SL"):
            # connect.cc: NCCL_PARAM(IbSl, "IB_SL", -1) / NCCL_PARAM(IbTc, "IB_TC", -1): -1 is NCCL's own "unset"
            parts.append(f"{key}=-1 (NCCL's unset)")
            unset.append(f"{key}=-1 is NCCL's unset: NCCL uses {default}")
            continue
        parts.append(f"{key}={n}")
        if not lo <= n <= hi:
            bad.append(f"{key}={n} outside {lo}-{hi}")
    exp = "TC 0-255, SL 0-15, TIMEOUT 0-31, RETRY_CNT 0-7; TC/SL set to the fabric's lossless class"
    obs = ", ".join(parts)
    if bad:
        return [Result("rdma.qos", Status.FAIL, observed=f"{obs} — {'; '.join(bad)}", expected=exp,
                       remedy="fix the values in the .env (e.g. NCCL_IB_TC=106 NCCL_IB_SL=3 NCCL_IB_TIMEOUT=22 "
                              "NCCL_IB_RETRY_CNT=7)")]
    if unset:
        return [Result("rdma.qos", Status.WARN, observed=f"{obs} — {'; '.join(unset)}", expected=exp,
                       remedy="set NCCL_IB_TC / NCCL_IB_SL to the class your switches treat as lossless (PFC/ECN)")]
    return [Result("rdma.qos", Status.PASS, observed=obs, expected=exp)]


def _devfile_fix(df, module: str, what: str) -> str:
    """Load the module, or (it is loaded, the file is not here) pass the files to the container."""
    if df.modules is not None and module in df.modules:
        return (f"{module} is loaded, so {what} exists on the host but not here: pass the RDMA device files to the "
                "container (`--device /dev/infiniband`; compose: devices: - /dev/infiniband)")
    how = "not loaded" if df.modules is not None else "not known to be loaded"
    return f"`modprobe {module}` ({how}); in a container also pass `--device /dev/infiniband`"


def gate_devfiles(facts, config) -> list[Result]:
    df = facts.devfiles
    sel = facts.selection
    exp = "a uverbs device file per selected HCA (NCCL opens it); /dev/infiniband/rdma_cm and /etc/rdma present"
    problems = []
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
    details = {"dev_infiniband": df.present, "uverbs": rows, "modules": df.modules}
    if problems:
        return [Result("rdma.devfiles", Status.FAIL, observed=obs + " — " + "; ".join(problems), expected=exp,
                       remedy=_devfile_fix(df, "ib_uverbs", "/dev/infiniband/uverbsN"), details=details)]
    # NCCL's IB transport never opens rdma_cm (it exchanges QP numbers over its own sockets): a missing
    # rdma_cm breaks RDMA-CM users (UCX, perftest -R, NIXL), not the NCCL job this gate is asked about
    warns, wfixes = [], []
    if "rdma_cm" not in df.present:
        warns.append("/dev/infiniband/rdma_cm missing (NCCL does not open it; RDMA-CM users such as UCX do)")
        wfixes.append(_devfile_fix(df, "rdma_ucm", "/dev/infiniband/rdma_cm"))
    if not df.etc_rdma:
        warns.append("/etc/rdma absent")
        wfixes.append("install rdma-core (it provides /etc/rdma); the container mounts it read-only")
    if warns:
        return [Result("rdma.devfiles", Status.WARN, observed=obs + " — " + "; ".join(warns), expected=exp,
                       remedy="; ".join(wfixes), details=details)]
    return [Result("rdma.devfiles", Status.PASS, observed=obs, expected=exp, details=details)]
