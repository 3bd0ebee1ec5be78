"""nccl.env: the NCCL / Gloo / torch.distributed environment agrees with the fabric.

The failures this catches cost days on the reference cluster: an unset
GLOO_SOCKET_IFNAME lets Gloo (vLLM/Ray's CPU-side groups) pick the docker
bridge or the management NIC; NCCL_IB_DISABLE=1 (left from a debugging
session) silently drops NCCL to NET/Socket; a WORLD_SIZE that is not nodes x
GPUs hangs the rendezvous; a MASTER_PORT already taken on the head fails the
rendezvous after a long timeout.
"""

from __future__ import annotations

from typing import Any

from ..facts import peer as pf
from ..model import Result, Status
from . import gate
from .peer import combine, master, parse_ray_address, step, subnet_interfaces

# Ports the stack itself opens on the head once it runs (free at preflight time, taken later).
WELL_KNOWN_PORTS = {
    8000: "vLLM's OpenAI API server port (vllm serve --port default)",
    6379: "Ray's GCS port (ray start --head default)",
    8265: "Ray's dashboard port",
    10001: "Ray's client server port",
}


@gate("nccl.env")
def gate_nccl_env(facts, config) -> list[Result]:
    cfg, prof = config, config.profile
    items: list[dict[str, Any]] = []
    subnet_ifs = subnet_interfaces(facts, config)
    have = ", ".join(f"{k} ({' '.join(v)})" for k, v in subnet_ifs.items()) or f"none with an address in {prof.subnet}"
    pick = next(iter(subnet_ifs), "<RDMA netdev>")

    # NCCL_SOCKET_IFNAME: NCCL's bootstrap and socket fallback interface (prefix list syntax)
    spec = cfg.get("NCCL_SOCKET_IFNAME")
    if not spec:
        items.append(step("NCCL_SOCKET_IFNAME", Status.FAIL, "NCCL_SOCKET_IFNAME unset (NCCL picks any non-docker interface)",
                          f"set NCCL_SOCKET_IFNAME={pick} (the interface on {prof.subnet})"))
    elif not subnet_ifs:
        items.append(step("NCCL_SOCKET_IFNAME", Status.FAIL, f"NCCL_SOCKET_IFNAME={spec}, but no interface has an address in {prof.subnet}",
                          f"give the RDMA interface its {prof.subnet} address (or fix the profile's subnet)"))
    else:
        hits = [i for i in subnet_ifs if pf.ifname_matches(spec, i)]
        # NCCL takes matching interfaces in getifaddrs order: a prefix that also matches another interface with
        # an IPv4 address (eno1 for "en") can put the bootstrap on the management network.
        others = sorted(i for i, a in facts.local_addresses.items()
                        if a and i not in subnet_ifs and i != "lo" and pf.ifname_matches(spec, i))
        if hits and others:
            items.append(step("NCCL_SOCKET_IFNAME", Status.WARN,
                              f"NCCL_SOCKET_IFNAME={spec} names {', '.join(hits)} but also {', '.join(others)} "
                              f"(outside {prof.subnet})", f"name the interface exactly: NCCL_SOCKET_IFNAME={hits[0]}"))
        elif hits:
            items.append(step("NCCL_SOCKET_IFNAME", Status.PASS, f"NCCL_SOCKET_IFNAME={spec} names {', '.join(hits)}"))
        else:
            items.append(step("NCCL_SOCKET_IFNAME", Status.FAIL,
                              f"NCCL_SOCKET_IFNAME={spec} names none of the {prof.subnet} interfaces: {have}",
                              f"set NCCL_SOCKET_IFNAME={pick}"))

    # GLOO_SOCKET_IFNAME: one exact interface name (torch also accepts a comma list)
    gloo = cfg.get("GLOO_SOCKET_IFNAME")
    if not gloo:
        items.append(step("GLOO_SOCKET_IFNAME", Status.FAIL,
                          "GLOO_SOCKET_IFNAME unset (Gloo resolves the hostname and may bind the wrong interface)",
                          f"set GLOO_SOCKET_IFNAME={pick}"))
    else:
        names = [n.strip() for n in gloo.split(",") if n.strip()]
        bad = [n for n in names if n not in subnet_ifs]
        if bad:
            items.append(step("GLOO_SOCKET_IFNAME", Status.FAIL,
                              f"GLOO_SOCKET_IFNAME={gloo}: {', '.join(bad)} has no address in {prof.subnet} "
                              f"(interfaces there: {have})", f"set GLOO_SOCKET_IFNAME={pick}"))
        else:
            items.append(step("GLOO_SOCKET_IFNAME", Status.PASS, f"GLOO_SOCKET_IFNAME={gloo} on {prof.subnet}"))

    hca = cfg.get("NCCL_IB_HCA")
    if hca:
        items.append(step("NCCL_IB_HCA", Status.PASS, f"NCCL_IB_HCA={hca} (devices checked by rdma.devices)"))
    else:
        items.append(step("NCCL_IB_HCA", Status.WARN, "NCCL_IB_HCA unset: NCCL uses every RDMA device, down ports included",
                          "set NCCL_IB_HCA to the RDMA device(s) on the mesh, e.g. =roceP2p1s0f0"))

    dis = cfg.get("NCCL_IB_DISABLE")
    if dis is not None and dis.strip() != "0":
        items.append(step("NCCL_IB_DISABLE", Status.FAIL,
                          f"NCCL_IB_DISABLE={dis}: NCCL skips RDMA and falls back to NET/Socket (TCP)",
                          "remove NCCL_IB_DISABLE from the .env and the container environment"))
    else:
        items.append(step("NCCL_IB_DISABLE", Status.PASS, "NCCL_IB_DISABLE " + ("unset" if dis is None else "=0")))

    ws = cfg.get("WORLD_SIZE")
    want = prof.nodes * prof.gpus_per_node
    if ws is None:
        items.append(step("WORLD_SIZE", Status.PASS, f"WORLD_SIZE unset (expected world {want})"))
    elif not ws.strip().isdigit():
        items.append(step("WORLD_SIZE", Status.FAIL, f"WORLD_SIZE={ws!r} is not a number", f"set WORLD_SIZE={want}"))
    elif int(ws) != want:
        items.append(step("WORLD_SIZE", Status.FAIL,
                          f"WORLD_SIZE={ws} but the profile says {prof.nodes} node(s) x {prof.gpus_per_node} GPU(s) = {want}",
                          f"set WORLD_SIZE={want} or fix nodes/gpus_per_node in the profile"))
    else:
        items.append(step("WORLD_SIZE", Status.PASS, f"WORLD_SIZE={ws} = {prof.nodes} x {prof.gpus_per_node}"))

    gid = cfg.get("NCCL_IB_GID_INDEX")
    if gid is not None:
        items.append(step("NCCL_IB_GID_INDEX", Status.PASS,
                          f"NCCL_IB_GID_INDEX={gid} pinned (advice: NCCL >= 2.21 picks the RoCE v2 IPv4 GID itself; "
                          "a pinned index breaks when addresses are re-added; rdma.gid shows the index it would pick)"))

    items.append(_master_port(facts, config))
    return [combine("nccl.env", items, f"env consistent with {prof.subnet}, {prof.nodes}x{prof.gpus_per_node} GPUs")]


def _master_port(facts, config) -> dict[str, Any]:
    raw = config.get("MASTER_PORT")
    if raw is None:
        return step("MASTER_PORT", Status.PASS, "MASTER_PORT unset (torch.distributed default 29500)")
    if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
        return step("MASTER_PORT", Status.FAIL, f"MASTER_PORT={raw!r} is not a TCP port",
                    "set MASTER_PORT to a free port in 1024-65535, e.g. 29500")
    port = int(raw)
    ray = parse_ray_address(config.get("RAY_ADDRESS"))
    taken = dict(WELL_KNOWN_PORTS)
    if ray:
        taken.setdefault(ray[1], "the Ray head's port in RAY_ADDRESS")
    if port in taken:
        return step("MASTER_PORT", Status.WARN,
                    f"MASTER_PORT={port} is {taken[port]}: once the cluster runs, the two collide on the head",
                    "choose a port nothing else on the head uses, e.g. 29500 (torch.distributed's default)")
    role = master(facts)["role"]
    r = facts.answer("bind", str(port)) if role == "head" else None
    if r is None:
        why = "not the head" if role == "worker" else \
            "role unknown (MASTER_ADDR unset or unresolved)" if role is None else "bind test not recorded"
        return step("MASTER_PORT", Status.PASS, f"MASTER_PORT={port} ({why}: bind test runs on the head)")
    if r["free"]:
        return step("MASTER_PORT", Status.PASS, f"MASTER_PORT={port} free on this head")
    return step("MASTER_PORT", Status.FAIL, f"MASTER_PORT={port}: {r['error']} on this head",
                f"stop what listens there (ss -ltnp 'sport = :{port}') or choose another MASTER_PORT")
