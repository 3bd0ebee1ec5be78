"""GPU memory per size: what the bench itself holds, and what the device holds.

Enable with the bench's hook mechanism (every rank, also under torchrun)::

    rdmacheck bench --hook rdmacheck.bench.gpu_memory:install ...

Per size, on every rank: ``before_size`` resets torch's peak counter;
``after_size`` reads

* ``max_allocated``: ``torch.cuda.max_memory_allocated()`` since the reset, the
  peak of the buffers the runner allocated for this size (send/receive, and the
  slices that the deterministic fill and ``--check``'s comparison work in);
  NCCL's own buffers are not in it (NCCL allocates outside torch's allocator);
* ``reserved``: ``torch.cuda.memory_reserved()`` (the caching allocator's pool;
  the runner empties it after each size, so it holds this size's blocks only);
* ``device_used``: NVML's used memory of the whole device at that moment (every
  process on it: both ranks of a one-GPU test bed, NCCL's buffers, contexts);
* ``processes``: NVML's per-process used memory on the device, where it reports it.

The samples of all ranks are gathered and stored as ``record["gpu_memory"]``
(a list, one entry per rank), so the evidence keeps them beside the timing.
CPU ranks record nothing.
"""

from __future__ import annotations

import os
from typing import Any


class GpuMemory:
    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK") or 0)
        self._nvml: Any = None
        self._handle: Any = None

    def install(self, hooks) -> None:
        hooks.before_size.append(self.before_size)
        hooks.after_size.append(self.after_size)

    def _torch(self):
        try:
            import torch
        except ImportError:
            return None
        return torch if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def _device_handle(self, torch):
        if self._handle is not None or self._nvml is False:
            return self._handle
        try:
            import pynvml

            pynvml.nvmlInit()
            p = torch.cuda.get_device_properties(torch.cuda.current_device())
            bus = "%08x:%02x:%02x.0" % (getattr(p, "pci_domain_id", 0), p.pci_bus_id, p.pci_device_id)
            self._handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
            self._nvml = pynvml
        except Exception:
            self._nvml = False
            self._handle = None
        return self._handle

    def before_size(self, row) -> None:
        torch = self._torch()
        if torch is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def sample(self) -> dict[str, Any] | None:
        torch = self._torch()
        if torch is None:
            return None
        torch.cuda.synchronize()
        out: dict[str, Any] = {"rank": self.rank, "pid": os.getpid(),
                               "max_allocated": int(torch.cuda.max_memory_allocated()),
                               "reserved": int(torch.cuda.memory_reserved())}
        h = self._device_handle(torch)
        if h is not None:
            nv = self._nvml
            try:
                out["device_used"] = int(nv.nvmlDeviceGetMemoryInfo(h).used)
            except Exception:
                pass
            try:
                out["processes"] = [{"pid": int(p.pid), "used": int(p.usedGpuMemory) if p.usedGpuMemory is not None else None}
                                    for p in nv.nvmlDeviceGetComputeRunningProcesses(h)]
            except Exception:
                pass
        return out

    def after_size(self, row, record: dict) -> None:
        from .path_proof import _gather

        mine = self.sample()
        record["gpu_memory"] = [s for s in _gather(mine) if s]


def install(hooks) -> None:
    """Entry for ``rdmacheck bench --hook rdmacheck.bench.gpu_memory:install``."""
    GpuMemory().install(hooks)
