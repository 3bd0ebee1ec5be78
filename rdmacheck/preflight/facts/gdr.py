"""GPUDirect RDMA mechanisms this host offers: peer memory and DMA-BUF (read through the root).

What NCCL's net_ib probes for peer memory: the nvidia_peermem module (driver
>= 470), the legacy MLNX_OFED nv_peer_mem module, or the peer-memory client it
registers under /sys/kernel/mm/memory_peers.  DMA-BUF needs kernel >= 5.12 and
NVIDIA's open GPU kernel module.
"""

from __future__ import annotations

import re
from typing import Any

from rdmacheck.preflight.facts.kmod import loaded_modules
from rdmacheck.preflight.root import HostRoot


def kernel_version(text: str | None) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def read_gdr(root: HostRoot) -> dict[str, Any]:
    sources = loaded_modules(root, ("nvidia_peermem", "nv_peer_mem")) or []
    sources += [f"memory_peers/{c}" for c in ("nv_mem", "nv_mem_nc")
                if root.exists(f"/sys/kernel/mm/memory_peers/{c}/version")]
    peermem = bool(sources)
    osrel = root.read("/proc/sys/kernel/osrelease")
    kv = kernel_version(osrel)
    nv = root.read("/proc/driver/nvidia/version") or ""
    open_module = "Open Kernel Module" in nv
    return {
        "nvidia_peermem": peermem,
        "peer_memory": sources,
        "kernel": osrel,
        "kernel_dmabuf": bool(kv and kv >= (5, 12)),
        "nvidia_driver": nv.splitlines()[0] if nv else None,
        "open_kernel_module": open_module,
        "dmabuf": bool(kv and kv >= (5, 12) and open_module),
    }
