"""GPU facts through NVML (``nvidia-ml-py``, module ``pynvml``), time-bounded.

Why a thread: ``nvmlInit`` talks to the kernel driver and can block for minutes
on a wedged GPU (Xid storms, a driver mid-reload).  Preflight must answer
anyway, so NVML runs in a daemon thread and we wait at most ``timeout``
seconds; a thread stuck inside the driver is abandoned (ctypes releases the
GIL, and a daemon thread does not keep the process alive).

Every per-device field is queried on its own: a GPU answers
``NVML_ERROR_NOT_SUPPORTED`` for whatever it lacks, and that must not cost
the other fields.  The GB10 in DGX Spark (unified memory, no framebuffer)
answers NOT_SUPPORTED for memory info; consumer GPUs for ECC; H100 for
retired pages (it remaps rows instead).  Such fields read ``NA``.

The result is a plain JSON-able dict, so ``rdmacheck snapshot`` can store it
as ``rdmacheck/nvml.json`` and ``--root`` replays it (see ``read_nvml``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rdmacheck.preflight.root import HostRoot

NA = "n/a (not supported)"
DEFAULT_TIMEOUT_S = 10.0

# state values
OK = "ok"
NO_MODULE = "no_module"        # nvidia-ml-py not installed
NO_LIBRARY = "no_library"      # libnvidia-ml.so.1 missing: no driver user space
NO_DRIVER = "no_driver"        # library present, kernel driver not loaded
TIMEOUT = "timeout"            # nvmlInit or a query did not return in time
ERROR = "error"                # any other NVML failure at init


def is_na(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("n/a")


def _text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _query(pynvml: Any, api: Any, fn: str, *args: Any) -> Any:
    """One NVML call: value, NA for NOT_SUPPORTED, ``"error: ..."`` otherwise."""
    f = getattr(api, fn, None)
    if f is None:
        return f"n/a (this nvidia-ml-py has no {fn})"
    try:
        return _text(f(*args))
    except pynvml.NVMLError_NotSupported:
        return NA
    except pynvml.NVMLError as e:
        return f"error: {e}"


def _cuda_version(v: Any) -> Any:
    # nvmlSystemGetCudaDriverVersion gives 12040 for CUDA 12.4
    if isinstance(v, int):
        return f"{v // 1000}.{(v % 1000) // 10}"
    return v


def _device(pynvml: Any, api: Any, i: int) -> dict[str, Any]:
    d: dict[str, Any] = {"index": i}
    try:
        h = api.nvmlDeviceGetHandleByIndex(i)
    except pynvml.NVMLError as e:
        d["error"] = f"cannot open GPU {i}: {e}"
        return d
    q = lambda fn, *a: _query(pynvml, api, fn, h, *a)  # noqa: E731
    d["name"] = q("nvmlDeviceGetName")
    d["uuid"] = q("nvmlDeviceGetUUID")
    pci = q("nvmlDeviceGetPciInfo")
    d["pci_bus_id"] = _text(getattr(pci, "busId", pci)) if not isinstance(pci, str) else pci
    d["pcie_gen"] = q("nvmlDeviceGetCurrPcieLinkGeneration")
    d["pcie_gen_max"] = q("nvmlDeviceGetMaxPcieLinkGeneration")
    d["pcie_width"] = q("nvmlDeviceGetCurrPcieLinkWidth")
    d["pcie_width_max"] = q("nvmlDeviceGetMaxPcieLinkWidth")
    ecc = q("nvmlDeviceGetEccMode")
    if isinstance(ecc, (tuple, list)) and len(ecc) == 2:
        d["ecc_current"], d["ecc_pending"] = bool(ecc[0]), bool(ecc[1])
    else:
        d["ecc_current"] = d["ecc_pending"] = ecc
    d["ecc_uncorrected_volatile"] = q(
        "nvmlDeviceGetTotalEccErrors",
        getattr(pynvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1),
        getattr(pynvml, "NVML_VOLATILE_ECC", 0),
    )
    pend = q("nvmlDeviceGetRetiredPagesPendingStatus")
    d["retired_pages_pending"] = bool(pend) if isinstance(pend, int) else pend
    rows = q("nvmlDeviceGetRemappedRows")
    if isinstance(rows, (tuple, list)) and len(rows) >= 4:
        d["remapped_rows"] = {
            "correctable": int(rows[0]), "uncorrectable": int(rows[1]),
            "pending": bool(rows[2]), "failure": bool(rows[3]),
        }
    else:
        d["remapped_rows"] = rows
    pm = q("nvmlDeviceGetPersistenceMode")
    d["persistence_mode"] = bool(pm) if isinstance(pm, int) else pm
    mem = q("nvmlDeviceGetMemoryInfo")
    if isinstance(mem, str):
        d["memory_total"] = d["memory_free"] = mem
    else:
        d["memory_total"] = int(getattr(mem, "total", 0))
        d["memory_free"] = int(getattr(mem, "free", 0))
    from .gpuhealth import device_health  # clocks, remapped rows, retired pages, PCIe replays (checks/gpu_health.py)

    d["health"] = device_health(pynvml, api, h)
    return d


def _collect(api: Any) -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {"state": NO_MODULE, "error": "Python module pynvml (package nvidia-ml-py) is not installed"}
    if api is None:
        api = pynvml
    try:
        api.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as e:
        return {"state": NO_LIBRARY, "error": str(e)}
    except pynvml.NVMLError_DriverNotLoaded as e:
        return {"state": NO_DRIVER, "error": str(e)}
    except pynvml.NVMLError as e:
        return {"state": ERROR, "error": str(e)}
    try:
        out: dict[str, Any] = {"state": OK}
        out["driver_version"] = _query(pynvml, api, "nvmlSystemGetDriverVersion")
        cuda = _query(pynvml, api, "nvmlSystemGetCudaDriverVersion_v2")
        if isinstance(cuda, str):
            cuda = _query(pynvml, api, "nvmlSystemGetCudaDriverVersion")
        out["cuda_driver_version"] = _cuda_version(cuda)
        out["nvml_version"] = _query(pynvml, api, "nvmlSystemGetNVMLVersion")
        count = _query(pynvml, api, "nvmlDeviceGetCount")
        if not isinstance(count, int):
            return {"state": ERROR, "error": f"nvmlDeviceGetCount: {count}"}
        out["count"] = count
        out["gpus"] = [_device(pynvml, api, i) for i in range(count)]
        return out
    finally:
        try:
            api.nvmlShutdown()
        except Exception:
            pass


def collect(timeout: float = DEFAULT_TIMEOUT_S, api: Any = None) -> dict[str, Any]:
    """NVML facts of this host, never blocking longer than ``timeout`` seconds.

    ``api`` is the object whose ``nvml*`` functions are called (default: the
    real ``pynvml`` module); errors are always the real pynvml error classes.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["facts"] = _collect(api)
        except Exception as e:  # a broken binding must become a result, not a traceback
            box["facts"] = {"state": ERROR, "error": f"{type(e).__name__}: {e}"}

    t0 = time.monotonic()
    th = threading.Thread(target=work, name="rdmacheck-nvml", daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        return {"state": TIMEOUT,
                "error": f"NVML did not answer within {timeout:g} s (hung GPU driver?)",
                "elapsed_s": round(time.monotonic() - t0, 3)}
    facts = box.get("facts") or {"state": ERROR, "error": "no answer"}
    facts["elapsed_s"] = round(time.monotonic() - t0, 3)
    return facts


def read_nvml(root: HostRoot, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Live: query NVML.  Replaying a snapshot: its ``rdmacheck/nvml.json``."""
    if root.live:
        return collect(timeout)
    meta = root.meta("nvml.json")
    if isinstance(meta, dict) and "state" in meta:
        return meta
    return {"state": "absent", "error": "the snapshot holds no NVML facts (rdmacheck/nvml.json)"}
