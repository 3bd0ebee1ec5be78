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


def subnet_interfaces(ctx) -> dict[str, list[str]]:
    """{ifname: [addr, ...]} of this host's addresses inside profile.subnet (IPv4 or IPv6, as the subnet is).

    From the interfaces (live, or a snapshot's rdmacheck/addrs.json).  A snapshot that did not capture
    addresses still has the RoCE GID tables, and each RoCE GID is derived by the kernel from an address of
    its netdev: those addresses are proof, so they are used (``address_source`` says so) rather than
    reading "not captured" as "no address"."""
    from ..facts.net import addresses, addresses_known

    net = ctx.config.profile.network()
    key = "ipv4" if net.version == 4 else "ipv6"
    out: dict[str, list[str]] = {}
    if addresses_known(ctx.root):
        for ifname, a in addresses(ctx.root).items():
            for x in (a or {}).get(key) or [] if isinstance(a, dict) else []:
                try:
                    if ipaddress.ip_interface(x).ip in net:
                        out.setdefault(ifname, []).append(x)
                except ValueError:
                    continue
        return out
    for dev in ctx.ib.values():
        for port in dev.ports.values():
            for g in port.gids:
                ip = g.ip
                if ip is not None and g.ndev and ip.version == net.version and ip in net:
                    lst = out.setdefault(g.ndev, [])
                    if str(ip) not in lst:
                        lst.append(str(ip))
    return out


def address_source(ctx) -> str:
    """Where subnet_interfaces' addresses come from, for the observed text."""
    from ..facts.net import addresses_known

    return "interfaces" if addresses_known(ctx.root) else \
        "the RoCE GID table (interface addresses not captured in this snapshot)"


def mesh_interface(ctx, subnet_ifs: dict[str, list[str]] | None = None) -> str:
    """The interface a remedy should name for the mesh: the one NCCL_SOCKET_IFNAME names, if it holds a
    subnet address; else the netdev of a selected RDMA port that does; else the first subnet interface.
    Never simply the first in address order: on a node (or a test bed) with two mesh interfaces that is
    the other one."""
    subnet_ifs = subnet_interfaces(ctx) if subnet_ifs is None else subnet_ifs
    spec = ctx.config.get("NCCL_SOCKET_IFNAME")
    if spec:
        try:
            named = [i for i in subnet_ifs if pf.ifname_matches(spec, i)]
        except Exception:  # an unparsable list is rdma.netdev's to report
            named = []
        if named:
            return named[0]
    for p in ctx.selection.ports:
        for nd in p.netdevs:
            if nd in subnet_ifs:
                return nd
    for p in ctx.selection.ports:
        if p.netdevs:
            return p.netdevs[0]
    return next(iter(subnet_ifs), "<RDMA netdev>")


def _down(ctx, dev: str | None) -> bool:
    nd = ctx.net.get(dev) if dev else None
    return nd is not None and not nd.up


def master(ctx) -> dict[str, Any]:
    """MASTER_ADDR, its resolution and this node's role; computed once per run."""
    if "peer.master" in ctx.cache:
        return ctx.cache["peer.master"]
    name = ctx.config.get("MASTER_ADDR")
    info: dict[str, Any] = {"name": name, "addr": None, "resolve": None, "role": None, "local_if": None}
    if name:
        r = pf.resolve(name) if ctx.root.live else {"addrs": [], "error": "not resolved when replaying a snapshot",
                                                      "elapsed_s": 0.0, "timed_out": False}
        info["resolve"] = r
        # the address in the mesh's family first (an IPv6 mesh resolves MASTER_ADDR to its IPv6 address)
        want6 = ctx.config.profile.network().version == 6
        fam = [a for a in r["addrs"] if (":" in a) == want6]
        info["addr"] = (fam or r["addrs"] or [None])[0]
        if info["addr"]:
            from ..facts.net import addresses

            for ifname, a in addresses(ctx.root).items():
                mine = list((a or {}).get("ipv4") or []) + list((a or {}).get("ipv6") or [])
                if any(x.split("/")[0] == info["addr"] for x in mine):
                    info["local_if"] = ifname
            info["role"] = "head" if info["local_if"] or ipaddress.ip_address(info["addr"]).is_loopback else "worker"
    info["detected_role"] = info["role"]
    # The compose .env declares the role (RAY_MODE=head|worker); RDMACHECK_ROLE overrides for preflight only.
    for key in ("RDMACHECK_ROLE", "RAY_MODE"):
        declared = (ctx.config.get(key) or "").strip().lower()
        if declared in ("head", "worker"):
            info["role"], info["declared_role"], info["declared_by"] = declared, declared, key
            break
    ctx.cache["peer.master"] = info
    return info


def parse_ray_address(text: str | None) -> tuple[str, int] | None:
    """``host:port``, ``ray://host:port``, ``[v6]:port`` -> (host, port); None for auto/unset/bad."""
    if not text or text.strip().lower() in ("auto", "local"):
        return None
    s = text.strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0]
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


@gate("net.peer")
def gate_net_peer(ctx) -> list[Result]:
    cfg, prof = ctx.config, ctx.config.profile
    expected = (f"MASTER_ADDR resolves into {prof.subnet} via NCCL_SOCKET_IFNAME; worker: Ray port open, "
                f"DF ping at MTU {prof.mtu}")
    if not ctx.root.live:
        return [Result("net.peer", Status.SKIP, observed="reachability is a live probe; not judged on a snapshot")]
    m = master(ctx)
    if not m["name"]:
        return [Result("net.peer", Status.SKIP, observed="MASTER_ADDR unset: no peer to check",
                       remedy="set MASTER_ADDR in the .env to the head's RDMA-subnet name or IP")]
    items: list[dict[str, Any]] = []
    r = m["resolve"]
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
        rt = pf.route_get(addr)
        dev = rt["dev"]
        how = f"route to {addr} leaves via {dev}" if dev else f"no route to {addr}: {rt['error']}"
    on_subnet = subnet_interfaces(ctx)
    mi = mesh_interface(ctx, on_subnet)
    if _down(ctx, dev):
        # an address on a down interface is still "own" to getifaddrs, but nothing leaves through it
        items.append(step("route", Status.FAIL, f"{how}, but {dev} is down ({ctx.net[dev].operstate or 'no carrier'})",
                          f"ip link set {dev} up (and check its cable: rdma.port shows the RDMA link state)"))
    elif dev is None:
        items.append(step("route", Status.FAIL, how,
                          f"give {mi} this node's {prof.subnet} address "
                          f"(ip addr add <address>/{prof.network().prefixlen} dev {mi})"))
    elif dev not in on_subnet:
        items.append(step("route", Status.FAIL, f"{how}, which has no address in {prof.subnet}",
                          f"give {mi} this node's {prof.subnet} address (ip addr add <address>/"
                          f"{prof.network().prefixlen} dev {mi}) so the head is reached over the mesh, "
                          "not through the default route"))
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
        rr = pf.resolve(host) if host != m["name"] else r
        target = (rr["addrs"] or [None])[0]
        if target is None:
            items.append(step("tcp", Status.FAIL, f"RAY_ADDRESS host {host} does not resolve: {rr['error']}",
                              HOSTS_REMEDY))
        elif ipaddress.ip_address(target) not in prof.network() or pf.route_get(target)["dev"] not in on_subnet:
            # never probe off the mesh (see above)
            items.append(step("tcp", Status.FAIL, f"RAY_ADDRESS {host} -> {target} is not reached over {prof.subnet}",
                              "point RAY_ADDRESS at the head's RDMA-subnet address (the same host as MASTER_ADDR)"))
        else:
            c = pf.tcp_connect(target, port)
            if c["ok"]:
                items.append(step("tcp", Status.PASS, f"{target}:{port} accepts TCP ({c['elapsed_s']:g} s)"))
            else:
                items.append(step("tcp", Status.FAIL,
                                  f"{target}:{port} (RAY_ADDRESS) refuses or ignores TCP: {c['error']} "
                                  f"(after {c['elapsed_s']:g} s)",
                                  "start the Ray head first (rdmacheck launch on the head), and open the port in "
                                  "the head's firewall", elapsed_s=c["elapsed_s"]))
    p = pf.df_ping(addr, prof.mtu, dev)
    if p["ok"]:
        items.append(step("mtu", Status.PASS, f"DF ping {p['payload']} B payload to {addr}: {p['received']} replies",
                          cmd=p["cmd"]))
    else:
        items.append(step("mtu", Status.FAIL, f"DF ping {p['payload']} B to {addr} failed: {p['reason']}",
                          f"set MTU {prof.mtu} on both ends and every switch port between them "
                          f"(ip link set {dev or 'IF'} mtu {prof.mtu})", cmd=p["cmd"], output=p["output"],
                          elapsed_s=p["elapsed_s"]))
    return [combine("net.peer", items, expected)]
