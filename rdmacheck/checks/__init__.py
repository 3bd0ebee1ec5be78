"""Gate functions: facts + expectations -> Results with stable ids.

Each gate is decorated with ``@gate("area.name", ...)`` so ``--only`` can pick
gates without running the others, and ``GATE_IDS`` lists every id for docs and
input validation.
"""

from __future__ import annotations

from typing import Callable

from ..units import human_bytes  # noqa: F401  (re-exported for the gate modules)

GATE_IDS: list[str] = [
    "rdma.devices", "rdma.port", "rdma.netdev", "rdma.gid", "rdma.mtu", "rdma.qos", "rdma.devfiles",
    "limits.memlock", "limits.stack", "limits.shm",
]


def gate(*ids: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        fn.gate_ids = list(ids)  # type: ignore[attr-defined]
        for i in ids:
            if i not in GATE_IDS:
                GATE_IDS.append(i)
        return fn
    return deco
