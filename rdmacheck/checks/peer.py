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

from ..facts import peer as pf
from ..facts.peer import parse_ray_address  # noqa: F401  (re-exported)
from ..model import Result, Status, worst
from . import gate

HOSTS_REMEDY = ("make MASTER_ADDR resolve on every node and in the container: an /etc/hosts line "
                "'<head RDMA-subnet IP> <name>' (compose: extra_hosts), or write the IP itself")


def combine(gid: str, items: list[dict[str, Any]], expected: str) -> Result:
    """One result from several steps: worst status, problems first in ``observed``."""
    # A step that does not apply here (a head has no peer to ping) is skipped; it does not make the gate a skip.
    judged = [Status(i["status"]) for i in items if Status(i["status"]) is not Status.SKIP]
    status = worst(judged) if judged else Status.SKIP
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


def subnet_interfaces(facts, config) -> dict[str, list[str]]:
    """{ifname: [addr/len, ...]} of this host's IPv4 addresses inside profile.subnet."""
    return pf.in_subnet(facts.local_addresses, config.profile.network())


def master(facts) -> dict[str, Any]:
    """MASTER_ADDR, its resolution and this node's role (gathered by facts.peer.gather_peer)."""
    return facts.peer


NOT_RECORDED = "live-only: no recorded probe answer for this question (a snapshot without it, or a changed config)"


@gate("net.peer")
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
    if m["local_if"]:
        dev = m["local_if"]
        how = f"{addr} is this node's own address on {dev} (head)"
    else:
        rt = facts.answer("route", addr) or {"dev": None, "error": NOT_RECORDED}
        dev = rt["dev"]
        how = f"route to {addr} leaves via {dev}" if dev else f"no route to {addr}: {rt['error']}"
    on_subnet = subnet_interfaces(facts, config)
    if dev is None:
        items.append(step("route", Status.FAIL, how, "add an address in the RDMA subnet to the RDMA interface"))
    elif dev not in on_subnet:
        items.append(step("route", Status.FAIL, f"{how}, which has no address in {prof.subnet}",
                          f"give the RDMA interface its {prof.subnet} address so the head is reached over the mesh, "
                          "not through the default route"))
    elif ifspec and not pf.ifname_matches(ifspec, dev):
        items.append(step("route", Status.FAIL, f"{how}, but NCCL_SOCKET_IFNAME={ifspec} does not name it",
                          "set NCCL_SOCKET_IFNAME (and GLOO_SOCKET_IFNAME) to the interface on the RDMA subnet, "
                          "or fix the routing so the head is reached through it"))
    else:
        items.append(step("route", Status.PASS, how + (f" (matches NCCL_SOCKET_IFNAME={ifspec})" if ifspec else "")))
    if m["role"] == "head":
        items.append(step("tcp", Status.SKIP, "head: the Ray port is this node's own (checked on workers)"))
        items.append(step("mtu", Status.SKIP, "head: no peer address known here (the DF ping runs on workers)"))
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
        items.append(step("mtu", Status.FAIL, f"DF ping {p['payload']} B to {addr} failed: {p['reason']}",
                          f"set MTU {prof.mtu} on both ends and every switch port between them "
                          f"(ip link set {dev or 'IF'} mtu {prof.mtu})", cmd=p["cmd"], output=p["output"],
                          elapsed_s=p["elapsed_s"]))
    return [combine("net.peer", items, expected)]
