"""net.peer: the head (MASTER_ADDR) is reachable over the RDMA subnet at full MTU.

Steps, each bounded in time (see facts/peer.py):
1. MASTER_ADDR resolves (a black-holed DNS costs the resolve timeout, not minutes);
2. to an address inside the profile's RDMA subnet;
3. the kernel routes it through the interface NCCL_SOCKET_IFNAME names;
4. on a worker: the head's RAY_ADDRESS port accepts TCP;
5. on a worker: a do-not-fragment ping with an MTU-sized payload (8972 bytes
   for MTU 9000) gets answers, proving jumbo frames end to end.

Role: this node is the head when MASTER_ADDR resolves to one of its own
addresses.  RAY_MODE=head|worker (the compose .env's own key) or
RDMACHECK_ROLE declares it; a declaration that contradicts the address fails
(the worker's .env copied onto the head, or the reverse).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rdmacheck.preflight.facts import peer as pf
from rdmacheck.preflight.facts.peer import parse_ray_address  # noqa: F401  (re-exported)
from rdmacheck.evidence.model import Result, Status, worst

HOSTS_REMEDY = ("make MASTER_ADDR resolve on every node and in the container: an /etc/hosts line "
                "'<head RDMA-subnet IP> <name>' (compose: extra_hosts), or write the IP itself")


def combine(gid: str, items: list[dict[str, Any]], expected: str) -> Result:
    """One result from several steps: worst status, problems first in ``observed``."""
    # A step that does not apply here (a head has no peer to ping) is skipped; it does not make the gate a skip.
    judged = [Status(i["status"]) for i in items if Status(i["status"]) is not Status.SKIP]
    status = worst(judged) if judged else Status.SKIP
    # a step whose probe did not answer: the gate cannot pass (or only warn) on the other steps
    unjudged = [i for i in items if i.get("unjudged")]
    if unjudged and status is not Status.FAIL:
        return Result(gid, Status.SKIP, observed="could not judge: " + "; ".join(i["observed"] for i in unjudged),
                      expected=expected, remedy="; ".join(dict.fromkeys(i["remedy"] for i in unjudged if i.get("remedy"))),
                      details={"steps": items, "unjudged": "; ".join(i["unjudged"] for i in unjudged)})
    bad = [i for i in items if Status(i["status"]) in (Status.FAIL, Status.WARN)]
    shown = bad or items
    observed = "; ".join(i["observed"] for i in shown)
    remedy = "; ".join(dict.fromkeys(i["remedy"] for i in bad if i.get("remedy")))
    if status is Status.SKIP and items and all(Status(i["status"]) is Status.SKIP for i in items):
        remedy = ""
    return Result(gid, status, observed=observed, expected=expected, remedy=remedy,
                  details={"steps": items})


def step(name: str, status: Status, observed: str, remedy: str = "", **extra: Any) -> dict[str, Any]:
    return {"step": name, "status": status.value, "observed": observed, "remedy": remedy, **extra}


def addresses_known(facts) -> bool:
    """Whether interface addresses were read at all (live, or a snapshot with rdmacheck/addrs.json): a
    capture without them says nothing about addresses, which is not the same as having none."""
    return facts.answer("addrs") is not None


def subnet_interfaces(facts, config) -> dict[str, list[str]]:
    """{ifname: [addr, ...]} of this host's addresses inside profile.subnet (IPv4 or IPv6, as the subnet is).

    From the interfaces (live, or a snapshot's rdmacheck/addrs.json).  A snapshot that did not capture
    addresses still has the RoCE GID tables, and each RoCE GID is derived by the kernel from an address of
    its netdev: those addresses are proof, so they are used (``address_source`` says so) rather than
    reading "not captured" as "no address"."""
    net = config.profile.network()
    if addresses_known(facts):
        key = "ipv4" if net.version == 4 else "ipv6"
        local = {k: list((v or {}).get(key) or []) for k, v in facts.addrs.items() if isinstance(v, dict)}
        return pf.in_subnet(local, net)
    out: dict[str, list[str]] = {}
    for dev in facts.ib.values():
        for port in dev.ports.values():
            for g in port.gids:
                ip = g.ip
                if ip is not None and g.ndev and ip.version == net.version and ip in net:
                    lst = out.setdefault(g.ndev, [])
                    if str(ip) not in lst:
                        lst.append(str(ip))
    return out


def address_source(facts) -> str:
    """Where subnet_interfaces' addresses come from, for the observed text."""
    return "interfaces" if addresses_known(facts) else \
        "the RoCE GID table (interface addresses not captured in this snapshot)"


def mesh_interface(facts, config, subnet_ifs: dict[str, list[str]] | None = None) -> str:
    """The interface a remedy should name for the mesh: the one NCCL_SOCKET_IFNAME names, if it holds a
    subnet address; else the netdev of a selected RDMA port that does; else the first subnet interface.
    Never simply the first in address order: on a node (or a test bed) with two mesh interfaces that is
    the other one."""
    subnet_ifs = subnet_interfaces(facts, config) if subnet_ifs is None else subnet_ifs
    spec = config.get("NCCL_SOCKET_IFNAME")
    if spec:
        try:
            named = [i for i in subnet_ifs if pf.ifname_matches(spec, i)]
        except Exception:  # an unparsable list is rdma.netdev's to report
            named = []
        if named:
            return named[0]
    ports = facts.selection.ports if facts.selection else []
    for p in ports:
        for nd in p.netdevs:
            if nd in subnet_ifs:
                return nd
    for p in ports:
        if p.netdevs:
            return p.netdevs[0]
    return next(iter(subnet_ifs), "<RDMA netdev>")


def _down(facts, dev: str | None) -> bool:
    nd = facts.net.get(dev) if dev else None
    return nd is not None and not nd.up


def _no_mesh_route_remedy(config, addr: str, dev: str | None, on_subnet: dict[str, list[str]], mi: str,
                          rt: dict[str, Any]) -> str:
    """Why the head is not reached over the mesh, from the addresses this node holds and the route it took."""
    prof = config.profile
    net = prof.network()
    if not on_subnet:
        return (f"give {mi} this node's {prof.subnet} address (ip addr add <address>/{net.prefixlen} dev {mi}) so "
                "the head is reached over the mesh" + ("" if dev is None else ", not through the default route"))
    held = [(i, a) for i, lst in on_subnet.items() for a in lst]
    target = ipaddress.ip_address(addr)
    covering = [(i, a) for i, a in held if "/" in a and target in ipaddress.ip_interface(a).network]
    if not covering and all("/" in a for _, a in held):
        # the address is there, but its prefix (a /32, say) gives no connected route to the rest of the mesh
        i, a = held[0]
        ip = a.split("/")[0]
        return (f"{i} holds {a}, whose prefix does not reach {addr}: write it with the mesh's prefix "
                f"(ip addr del {a} dev {i}; ip addr add {ip}/{net.prefixlen} dev {i})")
    i, a = (covering or held)[0]
    prefix = rt.get("prefix")
    if dev is not None:
        if prefix:
            how = f"the route {prefix} dev {dev} is more specific than {i}'s {a}"
            fix = f"ip route del {prefix} dev {dev}"
        else:
            how = f"a route more specific than {i}'s {a} sends it through {dev} (`ip route show match {addr}` names it)"
            fix = f"delete that route (ip route del <its prefix> dev {dev})"
        return (f"{i} already holds {a}, but {how}: {fix}, so the head is reached through {i}")
    return f"{i} holds {a}, yet no route reaches {addr}: `ip route get {addr}`; is {i} up and its route present?"


def _also_held(facts, addr: str) -> list[str]:
    """MACs of other machines that answered this node's ARP probe for ``addr`` (net.dad's recorded answers)."""
    out = []
    for p in facts.probes.values():
        a = p.answer if p.kind == "dad" and isinstance(p.answer, dict) else None
        for d in (a or {}).get("duplicates") or []:
            if isinstance(d, dict) and d.get("address") == addr and not d.get("local_netdev") and d.get("mac"):
                out.append(str(d["mac"]))
    return out


def master(facts) -> dict[str, Any]:
    """MASTER_ADDR, its resolution and this node's role (gathered by facts.peer.gather_peer)."""
    return facts.peer


NOT_RECORDED = "live-only: no recorded probe answer for this question (a snapshot without it, or a changed config)"


def gate_net_peer(facts, config) -> list[Result]:
    cfg, prof = config, config.profile
    expected = (f"MASTER_ADDR resolves into {prof.subnet} via NCCL_SOCKET_IFNAME; worker: Ray port open, "
                f"DF ping at MTU {prof.mtu}")
    m = master(facts)
    if not m["name"]:
        return [Result("net.peer", Status.SKIP, observed="MASTER_ADDR unset: no peer to check",
                       remedy="set MASTER_ADDR in the .env to the head's RDMA-subnet name or IP")]
    items: list[dict[str, Any]] = []
    r = m["resolve"]
    if r is None:
        return [Result("net.peer", Status.SKIP, observed=f"MASTER_ADDR={m['name']}: {NOT_RECORDED}")]
    if not m["addr"]:
        items.append(step("resolve", Status.FAIL,
                          f"MASTER_ADDR={m['name']} does not resolve: {r['error']} (after {r['elapsed_s']:g} s)",
                          HOSTS_REMEDY, elapsed_s=r["elapsed_s"]))
        return [combine("net.peer", items, expected)]
    addr = m["addr"]
    items.append(step("resolve", Status.PASS, f"{m['name']} -> {addr} ({r['elapsed_s']:g} s)",
                      elapsed_s=r["elapsed_s"]))
    if ipaddress.ip_address(addr) in prof.network():
        items.append(step("subnet", Status.PASS, f"{addr} inside {prof.subnet}"))
    else:
        items.append(step("subnet", Status.FAIL, f"{addr} is outside the RDMA subnet {prof.subnet}",
                          "point MASTER_ADDR at the head's address on the RDMA subnet (e.g. spark-01-mesh), "
                          "not its management address: otherwise bootstrap traffic takes the wrong network"))
    declared, detected = m.get("declared_role"), m.get("detected_role")
    if declared and detected and declared != detected:
        where = "one of this node's addresses" if detected == "head" else "not an address of this node"
        items.append(step("role", Status.FAIL,
                          f"{m['declared_by']}={declared} but MASTER_ADDR {m['name']} -> {addr} is {where}",
                          "copy the right .env to this node: the head's MASTER_ADDR must be its own RDMA-subnet "
                          "address, a worker's must be the head's"))
    ifspec = cfg.get("NCCL_SOCKET_IFNAME")
    rt: dict[str, Any] = {}
    if m["local_if"]:
        dev = m["local_if"]
        how = f"{addr} is this node's own address on {dev} (head)"
        others = _also_held(facts, addr)
        if others:
            # a cloned worker that kept the head's address believes it is the head: two heads, one address
            items.append(step("role", Status.FAIL,
                              f"{addr} (MASTER_ADDR) is this node's, and another machine ({', '.join(others)}) "
                              "answers ARP for it too (net.dad): two nodes claim the head's address",
                              f"give the node that is not the head its own {prof.subnet} address (find it by "
                              f"{others[0]} in the switch's MAC table); MASTER_ADDR stays the head's"))
    else:
        rt = facts.answer("route", addr) or {"dev": None, "error": NOT_RECORDED}
        dev = rt["dev"]
        how = f"route to {addr} leaves via {dev}" if dev else f"no route to {addr}: {rt['error']}"
    on_subnet = subnet_interfaces(facts, config)
    mi = mesh_interface(facts, config, on_subnet)
    if _down(facts, dev):
        # an address on a down interface is still "own" to getifaddrs, but nothing leaves through it
        items.append(step("route", Status.FAIL, f"{how}, but {dev} is down ({facts.net[dev].operstate or 'no carrier'})",
                          f"ip link set {dev} up (and check its cable: rdma.port shows the RDMA link state)"))
    elif dev is None:
        items.append(step("route", Status.FAIL, how,
                          _no_mesh_route_remedy(config, addr, None, on_subnet, mi, rt)))
    elif dev not in on_subnet:
        items.append(step("route", Status.FAIL, f"{how}, which has no address in {prof.subnet}",
                          _no_mesh_route_remedy(config, addr, dev, on_subnet, mi, rt)))
    elif ifspec and not pf.ifname_matches(ifspec, dev):
        items.append(step("route", Status.FAIL, f"{how}, but NCCL_SOCKET_IFNAME={ifspec} does not name it",
                          f"set NCCL_SOCKET_IFNAME={dev} and GLOO_SOCKET_IFNAME={dev} (the interface the head is "
                          "reached through), or fix the routing so the head is reached through the one they name"))
    else:
        items.append(step("route", Status.PASS, how + (f" (matches NCCL_SOCKET_IFNAME={ifspec})" if ifspec else "")))
    if m["role"] == "head":
        items.append(step("tcp", Status.SKIP, "head: the Ray port is this node's own (checked on workers)"))
        items.append(step("mtu", Status.SKIP,
                          "head: a peer's MTU cannot be seen from here (the DF ping runs on each worker, towards "
                          "the head): run preflight on every worker to prove the path MTU"))
        return [combine("net.peer", items, expected)]
    if items[-1]["status"] != Status.PASS.value:
        # Probing the head along a path that is not the RDMA mesh proves nothing about the mesh, and through a
        # default route it would send packets off the host: don't.
        why = "not probed: the route to the head does not use the RDMA-subnet interface (see route)"
        items.append(step("tcp", Status.SKIP, why))
        items.append(step("mtu", Status.SKIP, why))
        return [combine("net.peer", items, expected)]
    ray = parse_ray_address(cfg.get("RAY_ADDRESS"))
    if ray is None:
        items.append(step("tcp", Status.SKIP, f"RAY_ADDRESS={cfg.get('RAY_ADDRESS')!r}: no host:port to test"))
    else:
        host, port = ray
        rr = (facts.answer("resolve", host) or {"addrs": [], "error": NOT_RECORDED}) if host != m["name"] else r
        target = (rr["addrs"] or [None])[0]
        if target is None:
            items.append(step("tcp", Status.FAIL, f"RAY_ADDRESS host {host} does not resolve: {rr['error']}",
                              HOSTS_REMEDY))
        elif ipaddress.ip_address(target) not in prof.network() or \
                (facts.answer("route", target) or {}).get("dev") not in on_subnet:
            # never probe off the mesh (see above)
            items.append(step("tcp", Status.FAIL, f"RAY_ADDRESS {host} -> {target} is not reached over {prof.subnet}",
                              "point RAY_ADDRESS at the head's RDMA-subnet address (the same host as MASTER_ADDR)"))
        else:
            c = facts.answer("tcp", f"{target}:{port}")
            if c is None:
                items.append(step("tcp", Status.SKIP, f"{target}:{port}: {NOT_RECORDED}"))
            elif c["ok"]:
                items.append(step("tcp", Status.PASS, f"{target}:{port} accepts TCP ({c['elapsed_s']:g} s)"))
            else:
                items.append(step("tcp", Status.FAIL,
                                  f"{target}:{port} (RAY_ADDRESS) refuses or ignores TCP: {c['error']} "
                                  f"(after {c['elapsed_s']:g} s)",
                                  "start the Ray head first (rdmacheck launch on the head), and open the port in "
                                  "the head's firewall", elapsed_s=c["elapsed_s"]))
    p = facts.answer("ping", pf.ping_target(addr, prof.mtu, dev))
    if p is None:
        items.append(step("mtu", Status.SKIP, f"DF ping to {addr} at MTU {prof.mtu}: {NOT_RECORDED}"))
    elif p["ok"]:
        items.append(step("mtu", Status.PASS, f"DF ping {p['payload']} B payload to {addr}: {p['received']} replies",
                          cmd=p["cmd"]))
    else:
        local = facts.net.get(dev) if dev else None
        if local is not None and local.mtu is not None and local.mtu >= prof.mtu:
            # this end is right: the packets die at the head or a switch port between
            fix = (f"{dev} here already has MTU {local.mtu}: set MTU {prof.mtu} on the head's mesh interface "
                   f"(ip link set <its netdev> mtu {prof.mtu}) and on every switch port between the two")
        else:
            have = f" (it has {local.mtu})" if local is not None and local.mtu is not None else ""
            fix = (f"ip link set {dev or 'IF'} mtu {prof.mtu} here{have}, and the same MTU on the head and every "
                   "switch port between them")
        items.append(step("mtu", Status.FAIL, f"DF ping {p['payload']} B to {addr} failed: {p['reason']}",
                          fix, cmd=p["cmd"], output=p["output"], elapsed_s=p["elapsed_s"]))
    return [combine("net.peer", items, expected)]
