"""`rdmacheck link`: the two-node probe.  RDMA WRITE bandwidth and ping-pong latency between this node's
selected RDMA ports and a peer's, set up exactly as NCCL would (its GID, NCCL_IB_TC/SL/TIMEOUT/RETRY_CNT,
the smaller active MTU), verified in the receiver's memory, every wait bounded.

    rdmacheck link --serve            on one node: listens on its bootstrap address for a bounded time
    rdmacheck link --peer ADDR        on the other: per selected HCA pair, then all of them at once

A small TCP side channel (rdmacheck.verbs.wire) exchanges QP numbers, GIDs and keys, as perftest does.
``--engine perftest`` runs ib_write_bw / ib_write_lat with the same NCCL-derived flags instead.

Plan (the ports and their QP settings, from preflight's facts) -> run (engine) -> judge (link/gates.py)
-> evidence of kind ``link``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

DEFAULT_PORT = 18515
# Both ends are often started together: a client waits this long for a server that is not listening yet
# (either engine), then reports the refused connection.
CONNECT_GRACE_S = 20.0
MiB = 1 << 20


@dataclasses.dataclass
class PortPlan:
    """One selected port and how NCCL would set up its QPs."""

    name: str                 # "dev:port"
    device: str
    port: int
    gid_index: int
    gid_ip: str | None
    active_mtu: int | None
    rate_gbps: float | None
    netdev: str | None
    qp: dict[str, Any]        # QpParams.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_ports(facts, config) -> list[PortPlan]:
    """The ports NCCL selects on this node, each with its QP parameters (gather's derivations)."""
    from rdmacheck.verbs.engine import MTU_ENUM, QpParams

    sel = facts.selection
    env = {k: str(config.get(k)) for k in ("NCCL_IB_TC", "NCCL_IB_SL", "NCCL_IB_TIMEOUT", "NCCL_IB_RETRY_CNT")
           if config.get(k) is not None}
    out = []
    for p in sel.ports if sel else []:
        gid = sel.gid_index.get(p.name)
        if gid is None:
            continue
        mtu = sel.active_mtu.get(p.name, (None, None))[0]
        qp = QpParams.from_env(p.device, gid, p.port, env)
        if mtu in MTU_ENUM:
            qp.mtu = mtu
        info = sel.gid_info.get(p.name) or {}
        out.append(PortPlan(p.name, p.device, p.port, gid, info.get("ip"), mtu, p.rate_gbps,
                            info.get("ndev") or (p.netdevs[0] if p.netdevs else None), qp.to_dict()))
    return out
