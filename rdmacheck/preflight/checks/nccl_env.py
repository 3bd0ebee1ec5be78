"""nccl.env: the NCCL / Gloo / torch.distributed environment agrees with the fabric.

The failures this catches cost days on the reference cluster: an unset
GLOO_SOCKET_IFNAME lets Gloo (vLLM/Ray's CPU-side groups) pick the docker
bridge or the management NIC; NCCL_IB_DISABLE=1 (left from a debugging
session) silently drops NCCL to NET/Socket; a WORLD_SIZE that is not nodes x
GPUs hangs the rendezvous; a MASTER_PORT already taken on the head fails the
rendezvous after a long timeout.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rdmacheck.preflight.facts import peer as pf
from rdmacheck.evidence.model import Result, Status
from rdmacheck.nccl.spec import nccl_param_int
from rdmacheck.preflight.checks.peer import (address_source, addresses_known, combine, master, mesh_interface, parse_ray_address, step,
                   subnet_interfaces)

# Ports the stack itself opens on the head once it runs (free at preflight time, taken later).
WELL_KNOWN_PORTS = {
    8000: "vLLM's OpenAI API server port (vllm serve --port default)",
    6379: "Ray's GCS port (ray start --head default)",
    8265: "Ray's dashboard port",
    10001: "Ray's client server port",
}
# The role docker/compose.yaml gives MASTER_PORT: on the reference cluster it is the model server's port (its
# documentation lists MASTER_PORT as "Model server port"; vLLM's Ray executor picks its own torch.distributed
# ports), so MASTER_PORT=8000 *is* vLLM's API port by design, not a collision.  A port is judged against the
# other roles only.
MASTER_PORT_ROLE = "the model server's port (vLLM's API server), its role in docker/compose.yaml"
MASTER_PORT_SAME_ROLE = {8000}


def _bootstrap_step(facts, config, spec: str, subnet_ifs: dict[str, list[str]], pick: str) -> dict[str, Any] | None:
    """The address NCCL's bootstrap advertises (facts.bootstrap, derived in phase 1 by NCCL's rule: the first
    address of the first running interface NCCL_SOCKET_IFNAME matches; NVIDIA/nccl src/bootstrap.cc
    bootstrapNetInit -> src/misc/socket.cc ncclFindInterfaces -> src/os/linux.cc ncclOsFindInterfaces).
    Peers connect to that address: a stray address listed before the mesh address sends the whole
    rendezvous off the mesh."""
    prof = config.profile
    b = facts.bootstrap or {}
    if not b.get("addr"):
        return None  # nothing running matches: rdma.netdev says so
    bif, baddr = b["ifname"], b.get("addr_len") or b["addr"]
    ip = ipaddress.ip_interface(baddr).ip
    if ip in prof.network():
        return step("NCCL_SOCKET_IFNAME", Status.PASS,
                    f"NCCL_SOCKET_IFNAME={spec}: NCCL's bootstrap advertises {ip} on {bif}")
    why = (f"NCCL_SOCKET_IFNAME={spec}: NCCL's bootstrap would advertise {ip} on {bif} (the first address of the first "
           f"interface it matches), outside {prof.subnet}")
    if bif in subnet_ifs and ip.version != prof.network().version:
        fix = f"set NCCL_SOCKET_FAMILY={'AF_INET6' if prof.network().version == 6 else 'AF_INET'} in the .env"
    elif bif in subnet_ifs:
        mesh = subnet_ifs[bif][0]
        fix = (f"make the mesh address {bif}'s first: ip addr del {baddr} dev {bif} (re-add it after {mesh} if "
               f"it is needed: ip addr add {baddr} dev {bif})")
    else:
        fix = f"name the mesh interface exactly: NCCL_SOCKET_IFNAME={pick}"
    return step("NCCL_SOCKET_IFNAME", Status.FAIL, why, fix)


def _mesh_hca(facts, netdev: str) -> str:
    """The RDMA device whose port's netdev is ``netdev`` (for a remedy line), else the reference name."""
    for d in facts.ib.values():
        for p in d.ports.values():
            if netdev in p.netdevs:
                return d.name
    return "roceP2p1s0f0"


def gate_nccl_env(facts, config) -> list[Result]:
    cfg, prof = config, config.profile
    items: list[dict[str, Any]] = []
    subnet_ifs = subnet_interfaces(facts, config)
    known = addresses_known(facts)
    src = "" if known else f" (from {address_source(facts)})"
    have = ", ".join(f"{k} ({' '.join(v)})" for k, v in subnet_ifs.items()) or f"none with an address in {prof.subnet}"
    pick = mesh_interface(facts, config, subnet_ifs)

    # NCCL_SOCKET_IFNAME: NCCL's bootstrap and socket fallback interface (prefix list syntax)
    spec = cfg.get("NCCL_SOCKET_IFNAME")
    if not spec:
        items.append(step("NCCL_SOCKET_IFNAME", Status.FAIL, "NCCL_SOCKET_IFNAME unset (NCCL picks any non-docker interface)",
                          f"set NCCL_SOCKET_IFNAME={pick} (the interface on {prof.subnet})"))
    elif not subnet_ifs and not known:
        items.append(step("NCCL_SOCKET_IFNAME", Status.SKIP,
                          f"NCCL_SOCKET_IFNAME={spec}: interface addresses not captured in this snapshot, and no RoCE "
                          f"GID carries an address in {prof.subnet}: cannot be judged"))
    elif not subnet_ifs:
        items.append(step("NCCL_SOCKET_IFNAME", Status.FAIL, f"NCCL_SOCKET_IFNAME={spec}, but no interface has an address in {prof.subnet}",
                          f"give {pick} its {prof.subnet} address: ip addr add <addr>/{prof.network().prefixlen} dev {pick}"))
    else:
        hits = [i for i in subnet_ifs if pf.ifname_matches(spec, i)]
        # NCCL takes matching interfaces in getifaddrs order: a prefix that also matches another interface with
        # an IPv4 address (eno1 for "en") can put the bootstrap on the management network.
        others = sorted(i for i, a in facts.local_addresses.items()
                        if a and i not in subnet_ifs and i != "lo" and pf.ifname_matches(spec, i))
        boot = _bootstrap_step(facts, config, spec, subnet_ifs, pick) if hits and known else None
        if boot is not None and Status(boot["status"]) is Status.FAIL:
            items.append(boot)
        elif hits and others:
            items.append(step("NCCL_SOCKET_IFNAME", Status.WARN,
                              f"NCCL_SOCKET_IFNAME={spec} names {', '.join(hits)} but also {', '.join(others)} "
                              f"(outside {prof.subnet})", f"name the interface exactly: NCCL_SOCKET_IFNAME={hits[0]}"))
        elif hits:
            items.append(boot or step("NCCL_SOCKET_IFNAME", Status.PASS,
                                      f"NCCL_SOCKET_IFNAME={spec} names {', '.join(hits)}{src}"))
        else:
            items.append(step("NCCL_SOCKET_IFNAME", Status.FAIL,
                              f"NCCL_SOCKET_IFNAME={spec} names none of the {prof.subnet} interfaces: {have}{src}",
                              f"set NCCL_SOCKET_IFNAME={pick}"))

    # GLOO_SOCKET_IFNAME: one exact interface name (torch also accepts a comma list)
    gloo = cfg.get("GLOO_SOCKET_IFNAME")
    if not gloo:
        items.append(step("GLOO_SOCKET_IFNAME", Status.FAIL,
                          "GLOO_SOCKET_IFNAME unset (Gloo resolves the hostname and may bind the wrong interface)",
                          f"set GLOO_SOCKET_IFNAME={pick}"))
    elif not subnet_ifs and not known:
        items.append(step("GLOO_SOCKET_IFNAME", Status.SKIP,
                          f"GLOO_SOCKET_IFNAME={gloo}: interface addresses not captured in this snapshot: cannot be judged"))
    else:
        names = [n.strip() for n in gloo.split(",") if n.strip()]
        bad = [n for n in names if n not in subnet_ifs]
        if bad:
            items.append(step("GLOO_SOCKET_IFNAME", Status.FAIL,
                              f"GLOO_SOCKET_IFNAME={gloo}: {', '.join(bad)} has no address in {prof.subnet} "
                              f"(interfaces there: {have}{src})", f"set GLOO_SOCKET_IFNAME={pick}"))
        else:
            items.append(step("GLOO_SOCKET_IFNAME", Status.PASS, f"GLOO_SOCKET_IFNAME={gloo} on {prof.subnet}{src}"))

    hca = cfg.get("NCCL_IB_HCA")
    if hca:
        items.append(step("NCCL_IB_HCA", Status.PASS, f"NCCL_IB_HCA={hca} (devices checked by rdma.devices)"))
    else:
        active = sorted({p.device for p in facts.selection.ports if p.state_id == 4})
        items.append(step("NCCL_IB_HCA", Status.WARN,
                          "NCCL_IB_HCA unset: NCCL uses every RDMA device with an ACTIVE port "
                          f"({', '.join(active) or 'none now'}), on any network",
                          f"set NCCL_IB_HCA to the RDMA device(s) on the mesh, e.g. NCCL_IB_HCA={_mesh_hca(facts, pick)}"))

    dis = cfg.get("NCCL_IB_DISABLE")
    if dis is not None and dis.strip() != "0":
        items.append(step("NCCL_IB_DISABLE", Status.FAIL,
                          f"NCCL_IB_DISABLE={dis}: NCCL skips RDMA and falls back to NET/Socket (TCP)",
                          "remove NCCL_IB_DISABLE from the .env and the container environment"))
    else:
        items.append(step("NCCL_IB_DISABLE", Status.PASS, "NCCL_IB_DISABLE " + ("unset" if dis is None else "=0")))

    ws = cfg.get("WORLD_SIZE")
    want = prof.nodes * prof.gpus_per_node
    try:
        # read as torch.distributed reads it (int(os.environ["WORLD_SIZE"])); str.isdigit() also accepts
        # text int() refuses ('0\x1f', superscript digits), which crashed this gate
        ws_n = None if ws is None else int(ws)
    except ValueError:
        ws_n = None
    if ws is None:
        items.append(step("WORLD_SIZE", Status.PASS, f"WORLD_SIZE unset (expected world {want})"))
    elif ws_n is None:
        items.append(step("WORLD_SIZE", Status.FAIL, f"WORLD_SIZE={ws!r} is not a number", f"set WORLD_SIZE={want}"))
    elif ws_n != want:
        items.append(step("WORLD_SIZE", Status.FAIL,
                          f"WORLD_SIZE={ws} but the profile says {prof.nodes} node(s) x {prof.gpus_per_node} GPU(s) = {want}",
                          f"set WORLD_SIZE={want} or fix nodes/gpus_per_node in the profile"))
    else:
        items.append(step("WORLD_SIZE", Status.PASS, f"WORLD_SIZE={ws} = {prof.nodes} x {prof.gpus_per_node}"))

    gid = cfg.get("NCCL_IB_GID_INDEX")
    try:
        gid_n = nccl_param_int(gid)
    except ValueError:
        gid_n = None  # rdma.gid fails it with the reason
    if gid_n is not None and gid_n < 0:
        items.append(step("NCCL_IB_GID_INDEX", Status.PASS,
                          f"NCCL_IB_GID_INDEX={gid}: NCCL's own automatic selection (any negative value; "
                          "src/transport/net_ib/connect.cc ncclIbGetGidIndex)"))
    elif gid is not None and gid != "":
        items.append(step("NCCL_IB_GID_INDEX", Status.PASS,
                          f"NCCL_IB_GID_INDEX={gid} pinned (advice: NCCL >= 2.21 picks the RoCE v2 IPv4 GID itself; "
                          "a pinned index breaks when addresses are re-added; rdma.gid shows the index it would pick)"))

    items.append(_master_port(facts, config))
    return [combine("nccl.env", items, f"env consistent with {prof.subnet}, {prof.nodes}x{prof.gpus_per_node} GPUs")]


def _master_port(facts, config) -> dict[str, Any]:
    raw = config.get("MASTER_PORT")
    if raw is None:
        return step("MASTER_PORT", Status.PASS, "MASTER_PORT unset (torch.distributed default 29500)")
    # as torch reads it: int(os.environ["MASTER_PORT"]).  str.strip() and int() disagree on what is blank
    # ('1\x1f' strips to '1', int() refuses it), and isdigit() passes '¹', which int() refuses too
    try:
        port = int(raw)
    except ValueError:
        port = None
    if port is None or not raw.strip().isdecimal() or not 0 < port < 65536:
        return step("MASTER_PORT", Status.FAIL, f"MASTER_PORT={raw!r} is not a TCP port",
                    "set MASTER_PORT to a free port in 1024-65535, e.g. 29500")
    ray = parse_ray_address(config.get("RAY_ADDRESS"))
    taken = {p: why for p, why in WELL_KNOWN_PORTS.items() if p not in MASTER_PORT_SAME_ROLE}
    if ray:
        taken.setdefault(ray[1], "the Ray head's port in RAY_ADDRESS")
    if port in taken:
        return step("MASTER_PORT", Status.WARN,
                    f"MASTER_PORT={port} is {taken[port]}: once the cluster runs, the two collide on the head",
                    "choose a port nothing else on the head uses, e.g. 29500 (torch.distributed's default)")
    what = f"MASTER_PORT={port}" + (f" ({MASTER_PORT_ROLE})" if port in MASTER_PORT_SAME_ROLE else "")
    role = master(facts)["role"]
    r = facts.answer("bind", str(port)) if role == "head" else None
    if r is None:
        why = "not the head" if role == "worker" else \
            "role unknown (MASTER_ADDR unset or unresolved)" if role is None else "bind test not recorded"
        return step("MASTER_PORT", Status.PASS, f"{what}: {why}, the bind test runs on the head")
    if r["free"]:
        return step("MASTER_PORT", Status.PASS, f"{what} free on this head")
    return step("MASTER_PORT", Status.FAIL, f"MASTER_PORT={port}: {r['error']} on this head",
                f"stop what listens there (ss -ltnp 'sport = :{port}') or choose another MASTER_PORT")
