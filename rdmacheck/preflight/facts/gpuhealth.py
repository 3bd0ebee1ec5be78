"""GPU health facts through NVML, read in the same NVML session as ``facts.nvml`` (so inside its time bound).

Per GPU, one ``nvmlDeviceGetFieldValues`` batch (:data:`FIELDS`: PCIe replay counter and its rollovers,
the PCIe error-count fields, remapped rows correctable / uncorrectable / pending / failure, retired pages
single-bit / double-bit / pending, the clock-event time counters), then the calls the field API has no
field for: the clock-event reasons bitmask (``nvmlDeviceGetCurrentClocksEventReasons``), the SM clock now,
its maximum and its applications clock (``nvmlDeviceGetClockInfo`` / ``GetMaxClockInfo`` /
``GetApplicationsClock``), the utilization and the performance state.

N/A is kept with NVML's return code, never turned into a zero: a field the GPU does not have reads
``"n/a (NVML_ERROR_NOT_SUPPORTED=3)"`` (``is_na`` is true for it), any other failure
``"error: NVML_ERROR_GPU_IS_LOST=15"``.  A whole batch call that fails (an old driver without the field
API: ``NVML_ERROR_FUNCTION_NOT_FOUND``) leaves every field with that call's code and ``fields_call`` says
so.  The gates (``checks/gpu_health.py``) judge N/A as N/A (skip with the code), never as a pass.

The result is plain JSON, stored with the NVML probe answer (``nvml.gpus[i].health``), so snapshots and
``--facts`` replay it.
"""

from __future__ import annotations

import time
from typing import Any

# health field -> pynvml constant (nvml.h: NVML_FI_DEV_*)
FIELDS: dict[str, str] = {
    "pcie_replay": "NVML_FI_DEV_PCIE_REPLAY_COUNTER",
    "pcie_replay_rollover": "NVML_FI_DEV_PCIE_REPLAY_ROLLOVER_COUNTER",
    "pcie_l0_to_recovery": "NVML_FI_DEV_PCIE_L0_TO_RECOVERY_COUNTER",
    "pcie_correctable_errors": "NVML_FI_DEV_PCIE_COUNT_CORRECTABLE_ERRORS",
    "pcie_naks_received": "NVML_FI_DEV_PCIE_COUNT_NAKS_RECEIVED",
    "pcie_receiver_error": "NVML_FI_DEV_PCIE_COUNT_RECEIVER_ERROR",
    "pcie_bad_tlp": "NVML_FI_DEV_PCIE_COUNT_BAD_TLP",
    "pcie_naks_sent": "NVML_FI_DEV_PCIE_COUNT_NAKS_SENT",
    "pcie_bad_dllp": "NVML_FI_DEV_PCIE_COUNT_BAD_DLLP",
    "pcie_non_fatal_error": "NVML_FI_DEV_PCIE_COUNT_NON_FATAL_ERROR",
    "pcie_fatal_error": "NVML_FI_DEV_PCIE_COUNT_FATAL_ERROR",
    "pcie_unsupported_req": "NVML_FI_DEV_PCIE_COUNT_UNSUPPORTED_REQ",
    "pcie_lcrc_error": "NVML_FI_DEV_PCIE_COUNT_LCRC_ERROR",
    "remapped_correctable": "NVML_FI_DEV_REMAPPED_COR",
    "remapped_uncorrectable": "NVML_FI_DEV_REMAPPED_UNC",
    "remap_pending": "NVML_FI_DEV_REMAPPED_PENDING",
    "remap_failure": "NVML_FI_DEV_REMAPPED_FAILURE",
    "retired_sbe": "NVML_FI_DEV_RETIRED_SBE",
    "retired_dbe": "NVML_FI_DEV_RETIRED_DBE",
    "retired_pending": "NVML_FI_DEV_RETIRED_PENDING",
    # time spent held back per reason since the driver loaded (nvml.h: "in ns"; nvidia-smi -q prints them in us
    # under "Clocks Event Reasons Counters")
    "clocks_event_sw_power_cap_ns": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP",
    "clocks_event_sync_boost_ns": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST",
    "clocks_event_sw_thermal_ns": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN",
    "clocks_event_hw_thermal_ns": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN",
    "clocks_event_hw_power_brake_ns": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN",
}

# nvmlClocksEventReasons bits (nvml.h), named as nvidia-smi -q names them under "Clocks Event Reasons"
REASONS: dict[int, tuple[str, str]] = {
    0x001: ("gpu_idle", "Idle"),
    0x002: ("applications_clocks_setting", "Applications Clocks Setting"),
    0x004: ("sw_power_cap", "SW Power Cap"),
    0x008: ("hw_slowdown", "HW Slowdown"),
    0x010: ("sync_boost", "Sync Boost"),
    0x020: ("sw_thermal_slowdown", "SW Thermal Slowdown"),
    0x040: ("hw_thermal_slowdown", "HW Thermal Slowdown"),
    0x080: ("hw_power_brake_slowdown", "HW Power Brake Slowdown"),
    0x100: ("display_clock_setting", "Display Clock Setting"),
}
GPU_IDLE = 0x001
# codes that mean "this GPU / driver / binding has no such value" (N/A); any other code is an error
NA_CODES = {"NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NO_PERMISSION",
            "NVML_ERROR_NO_DATA", "NVML_ERROR_INVALID_ARGUMENT"}
# nvmlValueType_t -> the c_nvmlValue_t member that holds it
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def is_na(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("n/a")


def is_error(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("error")


def reason_names(mask: int) -> list[str]:
    """Active clock-event reasons of a bitmask, by name (``0x9`` -> ``["gpu_idle", "hw_slowdown"]``)."""
    return [name for bit, (name, _) in sorted(REASONS.items()) if mask & bit]


def _code_name(pynvml: Any, code: int) -> str:
    for k, v in vars(pynvml).items():
        if k.startswith("NVML_ERROR_") and v == code and isinstance(v, int):
            return k
    return "NVML_ERROR_UNKNOWN" if code == 999 else f"NVML return code {code}"


def nvml_outcome(pynvml: Any, code: int) -> str:
    """An NVML return code other than success, as the fact records it: N/A or an error, with the code."""
    name = _code_name(pynvml, code)
    return f"n/a ({name}={code})" if name in NA_CODES else f"error: {name}={code}"


def _call(pynvml: Any, api: Any, fn: str, *args: Any) -> Any:
    f = getattr(api, fn, None)
    if f is None:
        return f"n/a (this nvidia-ml-py has no {fn})"
    try:
        v = f(*args)
    except pynvml.NVMLError as e:
        return nvml_outcome(pynvml, int(getattr(e, "value", 999)))
    except Exception as e:  # a broken binding is a fact about this host, never a crash
        return f"error: {fn}: {type(e).__name__}: {e}"
    return int(v) if isinstance(v, int) else v


def _field_value(fv: Any) -> Any:
    member = _VALUE_MEMBER.get(int(fv.valueType))
    if member is None:
        return f"error: unknown NVML value type {int(fv.valueType)}"
    v = getattr(fv.value, member)
    return float(v) if member == "dVal" else int(v)


def read_fields(pynvml: Any, api: Any, handle: Any) -> tuple[dict[str, Any], str]:
    """One ``nvmlDeviceGetFieldValues`` call for every field of :data:`FIELDS` this binding knows."""
    ids: list[tuple[str, int]] = []
    out: dict[str, Any] = {}
    for name, const in FIELDS.items():
        fid = getattr(pynvml, const, None)
        if isinstance(fid, int):
            ids.append((name, fid))
        else:
            out[name] = f"n/a (this nvidia-ml-py has no {const})"
    fn = getattr(api, "nvmlDeviceGetFieldValues", None)
    if fn is None:
        for name, _ in ids:
            out[name] = "n/a (this nvidia-ml-py has no nvmlDeviceGetFieldValues)"
        return out, "n/a (this nvidia-ml-py has no nvmlDeviceGetFieldValues)"
    try:
        values = fn(handle, [fid for _, fid in ids])
    except Exception as e:
        outcome = (nvml_outcome(pynvml, int(getattr(e, "value", 999))) if isinstance(e, pynvml.NVMLError)
                   else f"error: nvmlDeviceGetFieldValues: {type(e).__name__}: {e}")
        for name, _ in ids:
            out[name] = outcome
        return out, outcome
    by_id = {fid: name for name, fid in ids}
    for fv in values:
        name = by_id.get(int(fv.fieldId))
        if name is None:
            continue
        ret = int(fv.nvmlReturn)
        out[name] = _field_value(fv) if ret == 0 else nvml_outcome(pynvml, ret)
    for name, _ in ids:
        out.setdefault(name, "error: NVML returned no value for this field")
    return out, "ok"


def device_health(pynvml: Any, api: Any, handle: Any) -> dict[str, Any]:
    """Every health fact of one GPU (see the module doc); never raises for an NVML error."""
    t0 = time.monotonic()
    fields, call = read_fields(pynvml, api, handle)
    sm = getattr(pynvml, "NVML_CLOCK_SM", 1)
    h: dict[str, Any] = {"fields": fields, "fields_call": call}
    reasons = _call(pynvml, api, "nvmlDeviceGetCurrentClocksEventReasons", handle)
    if isinstance(reasons, str) and not hasattr(api, "nvmlDeviceGetCurrentClocksEventReasons"):
        reasons = _call(pynvml, api, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)  # bindings before 12.x
    h["clock_event_reasons"] = reasons
    h["sm_clock_mhz"] = _call(pynvml, api, "nvmlDeviceGetClockInfo", handle, sm)
    h["sm_clock_max_mhz"] = _call(pynvml, api, "nvmlDeviceGetMaxClockInfo", handle, sm)
    h["sm_clock_app_mhz"] = _call(pynvml, api, "nvmlDeviceGetApplicationsClock", handle, sm)
    util = _call(pynvml, api, "nvmlDeviceGetUtilizationRates", handle)
    h["utilization_gpu"] = int(getattr(util, "gpu", 0)) if not isinstance(util, (str, int)) else util
    h["pstate"] = _call(pynvml, api, "nvmlDeviceGetPerformanceState", handle)
    h["elapsed_s"] = round(time.monotonic() - t0, 4)
    return h
