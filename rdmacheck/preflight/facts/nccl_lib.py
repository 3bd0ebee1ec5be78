"""Which NCCL library this node would load, and its version, without importing torch.

The cross-node report compares NCCL versions (a mismatch across nodes is a
classic hang). We look where a vLLM/torch node gets NCCL from: the
``nvidia-nccl-cu*`` wheel (``nvidia/nccl/lib/libnccl.so.2`` in site-packages),
then the system's libnccl.so.2, and ask ``ncclGetVersion`` through ctypes:
the code is MAJOR*10000 + MINOR*100 + PATCH since NCCL 2.9 (2.28.9 -> 22809).
Replaying a snapshot, the answer comes from ``rdmacheck/nccl.json``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from typing import Any

from rdmacheck.preflight.root import HostRoot


def _candidates() -> list[str]:
    out = []
    try:
        spec = importlib.util.find_spec("nvidia.nccl")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = os.path.join(loc, "lib", "libnccl.so.2")
        if os.path.exists(p):
            out.append(p)
    # dlopen searches the loader's cache and paths itself; ctypes.util.find_library would run
    # `ldconfig -p` (a subprocess, ~0.1 s) only to return this same soname.
    out.append("libnccl.so.2")
    return out


def decode_version(code: int) -> str:
    if code >= 10000:
        return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"
    return f"{code // 1000}.{code % 1000 // 100}.{code % 100}"  # before 2.9: MAJOR*1000 + MINOR*100 + PATCH


def live_nccl() -> dict[str, Any]:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        v = ctypes.c_int(0)
        try:
            if lib.ncclGetVersion(ctypes.byref(v)) == 0:
                return {"version": decode_version(v.value), "library": path}
        except AttributeError:
            continue
    return {"version": None, "library": None}


def read_nccl(root: HostRoot) -> dict[str, Any]:
    if root.live:
        return live_nccl()
    meta = root.meta("nccl.json")
    return meta if isinstance(meta, dict) else {"version": None, "library": None}
