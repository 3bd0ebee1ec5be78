"""The data-path probe: real RDMA bytes through each port NCCL selects, under NCCL's own conditions.

For each selected port, in this process: open the device (as NCCL does, through its uverbs node), register
memory under the process's real memlock limit, connect two RC queue pairs of that port to each other
through the GID NCCL picks, with NCCL_IB_TC as the traffic class, NCCL_IB_SL, NCCL_IB_TIMEOUT and
NCCL_IB_RETRY_CNT, at the port's active MTU; RDMA WRITE a few MiB, check them in the other QP's memory,
RDMA READ them back and check again (rdmacheck.verbs.engine.loopback_check).  Every wait is bounded, so
a port that cannot move a byte answers in seconds with the stage that failed and why.

What a loopback through the port's own GID proves: the device opens for this user, memory registers, a
QP reaches RTS with NCCL's parameters and the RoCE/IB stack moves and delivers bytes.  What it cannot
prove: the path to the peer (a remote firewall, a switch, a wrong MAC on the peer) -- `rdmacheck link`
does that between two nodes.

The answer is a probe (``datapath:<port>``): a snapshot records it, ``--root`` and ``--facts`` judge the
recorded answer and say so.
"""

from __future__ import annotations

import time
from typing import Any

# 2 MiB written and read back: two QPs register 3 x 2 MiB, within the 8 MiB memlock many hosts default to
# (limits.memlock judges whether the job's own registrations fit)
SIZE = 2 << 20
STALL_S = 2.0       # no completion within this: the path is dead
DEADLINE_S = 15.0   # the whole probe of one port


def probe_port(device: str, port: int, gid_index: int, env: dict[str, str], mtu: int | None) -> dict[str, Any]:
    """``loopback_check`` of one port with NCCL's parameters; never raises (a missing pyverbs is an answer)."""
    t0 = time.monotonic()
    try:
        from rdmacheck.verbs import engine
    except Exception as e:  # pragma: no cover - the package ships with rdmacheck
        return {"ok": False, "stage": "import", "error": f"{type(e).__name__}: {e}", "available": False}
    try:
        engine._pyverbs()
    except Exception as e:
        return {"ok": False, "stage": "import", "available": False,
                "error": f"pyverbs not importable ({e}); install python3-pyverbs (rdma-core)"}
    try:
        params = engine.QpParams.from_env(device, gid_index, port, env)
    except ValueError as e:
        return {"ok": False, "stage": "config", "available": True, "error": str(e)}
    if mtu in engine.MTU_ENUM:
        params.mtu = mtu
    res = engine.loopback_check(params, params, size=SIZE, stall_s=STALL_S, deadline_s=DEADLINE_S)
    out = res.to_dict()
    soft, hard = engine.memlock_limits()
    out.update({"available": True, "params": params.to_dict(), "memlock": {"soft": soft, "hard": hard},
                "probe_s": round(time.monotonic() - t0, 4)})
    return out
