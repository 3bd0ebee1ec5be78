"""Gate functions: facts + expectations -> Results with stable ids.

Each gate is decorated with ``@gate("area.name", ...)`` so ``--only`` can pick
gates without running the others, and ``GATE_IDS`` lists every id for docs and
input validation.
"""

from __future__ import annotations

from typing import Callable

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


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} B"
