"""GPU health gates: gpu.clocks, gpu.remap, gpu.pcie_errors (NVML, ``facts/gpuhealth.py``) and gpu.xid
(the kernel log, ``facts/kernlog.py``).

Pure functions of ``NodeFacts`` and the configuration.  A value NVML answers N/A for keeps its return code
(``n/a (NVML_ERROR_NOT_SUPPORTED=3)``): a gate whose every value is N/A on every GPU is **skip** with that
reason, never a pass (the GB10 of DGX Spark has no PCIe link to the GPU and reports no ECC memory state);
one with some values readable judges those and lists the N/A ones.

Thresholds (documented in docs/checks-gpu-net.md):

* ``gpu.clocks``: fail when a hardware clock-event reason is active (HW Slowdown, HW Thermal Slowdown, HW
  Power Brake) or when the SM clock is below :data:`CLOCK_MIN_RATIO` of its maximum while NVML does not say
  the GPU is idle (the GB10 whose clock is stuck near 600 of 3003 MHz reports no reason at all); warn on SW
  Thermal Slowdown and on applications clocks set below the maximum.  A low clock with the Idle reason is
  normal and says nothing about the clock under load (``rdmacheck watch`` sees it during a job).
* ``gpu.remap``: fail on a row-remapping failure or :data:`RETIRED_PAGES_FAIL` retired pages (NVIDIA's page
  retirement allows 64); warn on a pending remap or retirement, on rows remapped for uncorrectable errors, on
  pages retired for double-bit errors.
* ``gpu.pcie_errors``: fail on PCIe fatal errors; warn on :data:`PCIE_REPLAY_WARN` or more replays
  (NVML_FI_DEV_PCIE_REPLAY_COUNTER: link-level retransmissions since the driver loaded), replay-counter rollovers
  and non-fatal errors.  A few replays are normal: a healthy H200 (the device run in tests/data/gpu-health/) read
  1 replay, 3 receiver errors, 4 bad TLPs and 38 L0-to-recovery transitions since its driver loaded; it is the
  rise that matters, which ``rdmacheck watch`` alerts on (``RdmacheckGpuPcieReplays``).
"""

from __future__ import annotations

from typing import Any

from rdmacheck.preflight.facts import gpuhealth as gh
from rdmacheck.preflight.facts import nvml as nvmlf
from rdmacheck.evidence.model import Result, Status
from rdmacheck.preflight.registry import ids_of
from rdmacheck.preflight.checks.gpu import _expect_no_gpu, platform

CLOCK_MIN_RATIO = 0.5
PCIE_REPLAY_WARN = 100
RETIRED_PAGES_FAIL = 60
HW_REASONS = 0x008 | 0x040 | 0x080   # HW Slowdown, HW Thermal Slowdown, HW Power Brake Slowdown
SW_THERMAL = 0x020
APP_CLOCKS = 0x002

IDS = ids_of("gpu.clocks")   # gpu.clocks, gpu.remap, gpu.pcie_errors (the registry names them)


def _txt(v: Any) -> str:
    return str(v) if not isinstance(v, str) else v


def _gpus(node, config) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The GPUs with health facts, or (None, why every gate skips)."""
    why = _expect_no_gpu(config)
    if why:
        return None, why
    facts = node.nvml
    if facts.get("state") != nvmlf.OK:
        return None, "NVML unavailable (see gpu.nvml)"
    gpus = [g for g in facts.get("gpus") or [] if not g.get("error")]
    if not gpus:
        return None, "no GPU to inspect (see gpu.nvml)"
    if not any(isinstance(g.get("health"), dict) for g in gpus):
        return None, "this record holds no GPU health facts (recorded by an older rdmacheck): take it again"
    return gpus, None


def gate_gpu_health(node, config) -> list[Result]:
    gpus, why = _gpus(node, config)
    if gpus is None:
        return [Result(i, Status.SKIP, observed=why or "") for i in IDS]
    spark = platform(config, node.nvml, node.model) == "dgx-spark"
    return [judge_clocks(gpus, spark), judge_remap(gpus), judge_pcie_errors(gpus)]


# ------------------------------------------------------------------ gpu.clocks

def judge_clocks(gpus: list[dict[str, Any]], spark: bool = False) -> Result:
    rows: list[str] = []
    fails: list[str] = []
    warns: list[str] = []
    na: list[str] = []
    details: dict[str, Any] = {}
    for g in gpus:
        h = g.get("health")
        i = g["index"]
        if not isinstance(h, dict):
            rows.append(f"GPU {i}: no health facts recorded")
            continue
        mask, sm, top, app = (h.get(k) for k in ("clock_event_reasons", "sm_clock_mhz", "sm_clock_max_mhz",
                                                 "sm_clock_app_mhz"))
        if not isinstance(mask, int) and not (isinstance(sm, int) and isinstance(top, int)):
            na.append(f"GPU {i}: clock-event reasons {_txt(mask)}, SM clock {_txt(sm)}")
            continue
        names = gh.reason_names(mask) if isinstance(mask, int) else []
        idle = isinstance(mask, int) and bool(mask & gh.GPU_IDLE)
        clock = f"SM {sm} of {top} MHz" if isinstance(sm, int) and isinstance(top, int) else f"SM clock {_txt(sm)}"
        rtxt = ("reasons " + (", ".join(names) or "none")) if isinstance(mask, int) else f"reasons {_txt(mask)}"
        rows.append(f"GPU {i}: {clock}, {rtxt}")
        details[str(i)] = {"sm_clock_mhz": sm, "sm_clock_max_mhz": top, "reasons": names,
                           "mask": mask if isinstance(mask, int) else None}
        if isinstance(mask, int) and mask & HW_REASONS:
            hw = [n for n in gh.reason_names(mask & HW_REASONS)]
            fails.append(f"GPU {i} held back by {', '.join(hw)}")
        if isinstance(sm, int) and isinstance(top, int) and top > 0 and sm < CLOCK_MIN_RATIO * top:
            if idle:
                rows[-1] += " (idle: a low clock is normal at rest; judged under load by `rdmacheck watch`)"
            else:
                because = ", ".join(names) if names else "NVML gives no reason"
                fails.append(f"GPU {i} SM clock {sm} MHz is {sm / top:.0%} of its {top} MHz maximum while not "
                             f"idle ({because})")
        if isinstance(mask, int) and mask & SW_THERMAL:
            warns.append(f"GPU {i} SW Thermal Slowdown active")
        if isinstance(mask, int) and mask & APP_CLOCKS and isinstance(app, int) and isinstance(top, int) and app < top:
            warns.append(f"GPU {i} applications clock {app} MHz below the {top} MHz maximum")
    if not rows:
        return Result("gpu.clocks", Status.SKIP, observed="; ".join(na) or "no GPU clock facts",
                      details={"na": na})
    obs = "; ".join(rows + na + fails + warns)
    expected = f"no hardware clock-event reason; SM clock >= {CLOCK_MIN_RATIO:.0%} of max unless idle"
    if fails:
        remedy = ("a GPU held below its clock does a fraction of its work: check cooling and power (HW Slowdown / "
                  "Thermal / Power Brake come from the board: nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER), "
                  "reset the GPU or drain the node")
        if spark:
            remedy = ("DGX Spark: a GPU capped far below its maximum while reporting no reason is the degraded "
                      "power state (the USB-C power negotiation or the clock governor lost): power-cycle the unit, "
                      "power brick unplugged for 60 s, then check `nvidia-smi -q -d CLOCK` under load; " + remedy)
        return Result("gpu.clocks", Status.FAIL, observed=obs, expected=expected, remedy=remedy, details=details)
    if warns:
        return Result("gpu.clocks", Status.WARN, observed=obs, expected=expected,
                      remedy="SW thermal slowdown: improve cooling; applications clocks: `nvidia-smi -rac` resets them",
                      details=details)
    return Result("gpu.clocks", Status.PASS, observed=obs, expected=expected, details=details)


# ------------------------------------------------------------------ gpu.remap

def _f(h: dict[str, Any], name: str) -> Any:
    return (h.get("fields") or {}).get(name)


def _first_bad(values) -> Any:
    return next(v for v in values if not isinstance(v, int))


def judge_remap(gpus: list[dict[str, Any]]) -> Result:
    rows, fails, warns, na = [], [], [], []
    for g in gpus:
        h = g.get("health")
        i = g["index"]
        if not isinstance(h, dict):
            continue
        rr = [_f(h, k) for k in ("remapped_correctable", "remapped_uncorrectable", "remap_pending", "remap_failure")]
        rp = [_f(h, k) for k in ("retired_sbe", "retired_dbe", "retired_pending")]
        parts = []
        if all(isinstance(v, int) for v in rr):
            cor, unc, pend, fail = rr
            parts.append(f"remapped rows {cor} correctable / {unc} uncorrectable, pending {'yes' if pend else 'no'}, "
                         f"failure {'yes' if fail else 'no'}")
            if fail:
                fails.append(f"GPU {i} row remapping failed")
            if pend:
                warns.append(f"GPU {i} row remap pending (reset the GPU to apply it)")
            if unc:
                warns.append(f"GPU {i} has {unc} row(s) remapped for uncorrectable errors")
        else:
            parts.append(f"remapped rows {_txt(_first_bad(rr))}")
            if gh.is_error(_first_bad(rr)):
                warns.append(f"GPU {i} remapped rows unreadable")
        if all(isinstance(v, int) for v in rp):
            sbe, dbe, rpend = rp
            parts.append(f"retired pages {sbe} single-bit / {dbe} double-bit, pending {'yes' if rpend else 'no'}")
            if sbe + dbe >= RETIRED_PAGES_FAIL:
                fails.append(f"GPU {i} has {sbe + dbe} retired pages (page retirement allows 64)")
            elif dbe:
                warns.append(f"GPU {i} retired {dbe} page(s) for double-bit errors")
            if rpend:
                warns.append(f"GPU {i} page retirement pending (reset the GPU)")
        else:
            parts.append(f"retired pages {_txt(_first_bad(rp))}")
            if gh.is_error(_first_bad(rp)):
                warns.append(f"GPU {i} retired pages unreadable")
        line = f"GPU {i}: " + ", ".join(parts)
        readable = all(isinstance(v, int) for v in rr) or all(isinstance(v, int) for v in rp)
        (rows if readable or any(gh.is_error(v) for v in rr + rp) else na).append(line)
    if not rows:
        return Result("gpu.remap", Status.SKIP, observed="; ".join(na) or "no GPU memory-health facts",
                      expected="remapped rows / retired pages readable")
    obs = "; ".join(rows + na + fails + warns)
    expected = "no row-remapping failure, nothing pending, no uncorrectable remaps"
    if fails:
        return Result("gpu.remap", Status.FAIL, observed=obs, expected=expected,
                      remedy="drain the node: the GPU's memory has run out of spare rows or pages; replace the GPU "
                             "(NVIDIA's RMA policy for row-remapping failures)")
    if warns:
        return Result("gpu.remap", Status.WARN, observed=obs, expected=expected,
                      remedy="reset the GPU (nvidia-smi -r, or reboot) at the next job boundary to apply pending "
                             "remaps/retirements; watch the uncorrectable count")
    return Result("gpu.remap", Status.PASS, observed=obs, expected=expected)


# ------------------------------------------------------------------ gpu.pcie_errors

PCIE_COUNTS = ("pcie_correctable_errors", "pcie_naks_received", "pcie_receiver_error", "pcie_bad_tlp",
               "pcie_naks_sent", "pcie_bad_dllp", "pcie_non_fatal_error", "pcie_fatal_error",
               "pcie_unsupported_req", "pcie_lcrc_error", "pcie_l0_to_recovery")


def judge_pcie_errors(gpus: list[dict[str, Any]]) -> Result:
    rows, fails, warns, na = [], [], [], []
    for g in gpus:
        h = g.get("health")
        i = g["index"]
        if not isinstance(h, dict):
            continue
        rep, roll = _f(h, "pcie_replay"), _f(h, "pcie_replay_rollover")
        counts = {k: _f(h, k) for k in PCIE_COUNTS}
        known = {k: v for k, v in counts.items() if isinstance(v, int)}
        if not isinstance(rep, int) and not known:
            na.append(f"GPU {i}: PCIe replay counter {_txt(rep)}")
            continue
        parts = [f"PCIe replays {_txt(rep)}"]
        if isinstance(roll, int):
            parts.append(f"rollovers {roll}")
        moved = {k: v for k, v in known.items() if v}
        if known:
            parts.append("error counts " + (", ".join(f"{k[5:]} {v}" for k, v in moved.items()) or "all 0"))
        else:
            parts.append(f"PCIe error counts {_txt(next(iter(counts.values())))}")
        rows.append(f"GPU {i}: " + ", ".join(parts))
        if known.get("pcie_fatal_error"):
            fails.append(f"GPU {i} PCIe fatal errors {known['pcie_fatal_error']}")
        if isinstance(rep, int) and rep >= PCIE_REPLAY_WARN:
            warns.append(f"GPU {i} PCIe link replayed {rep} times since the driver loaded")
        if isinstance(roll, int) and roll > 0:
            warns.append(f"GPU {i} PCIe replay counter rolled over {roll} time(s)")
        if known.get("pcie_non_fatal_error"):
            warns.append(f"GPU {i} PCIe non-fatal errors {known['pcie_non_fatal_error']}")
    if not rows:
        return Result("gpu.pcie_errors", Status.SKIP, observed="; ".join(na) or "no PCIe error facts",
                      expected="PCIe replay counter readable")
    obs = "; ".join(rows + na + fails + warns)
    expected = f"fewer than {PCIE_REPLAY_WARN} PCIe replays, no fatal or non-fatal PCIe errors"
    remedy = ("PCIe replays are link-level retransmissions: a marginal slot, riser or cable; reseat the GPU, compare "
              "`lspci -vv` LnkSta with LnkCap, update the BIOS/firmware; fatal errors: drain the node")
    status = Status.FAIL if fails else Status.WARN if warns else Status.PASS
    return Result("gpu.pcie_errors", status, observed=obs, expected=expected,
                  remedy=remedy if status is not Status.PASS else "")


__all__ = ["CLOCK_MIN_RATIO", "PCIE_REPLAY_WARN", "RETIRED_PAGES_FAIL", "gate_gpu_health", "judge_clocks", "judge_pcie_errors",
           "judge_remap"]


# ------------------------------------------------------------------ gpu.xid

# NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors): what an Xid says about the GPU, not the job.
XID_FAIL = {48: "double-bit ECC error", 62: "internal micro-controller halt", 64: "ECC page retirement or row "
            "remapper recording failure", 74: "NVLink error", 79: "GPU has fallen off the bus", 95: "uncontained ECC "
            "error", 119: "GSP RPC timeout", 120: "GSP error", 140: "unrecovered ECC error",
            154: "GPU recovery action changed (reset or reboot required)"}
XID_WARN = {61: "internal micro-controller breakpoint/warning", 63: "ECC page retirement or row remapping event",
            92: "high single-bit ECC error rate", 94: "contained ECC error (reset the GPU)"}
# application-side Xids: a job's fault (bad kernel, MMU fault), noted, not the GPU's health
XID_APP = {13: "graphics engine exception", 31: "GPU memory page fault", 32: "invalid or corrupted push buffer",
           43: "GPU stopped processing", 45: "preemptive cleanup after earlier errors", 68: "NVDEC0 exception",
           69: "graphics engine class error"}


def _gpu_of(pci: str, gpus: list[dict[str, Any]]) -> str:
    from ..facts.kernlog import same_function

    for g in gpus:
        if isinstance(g.get("pci_bus_id"), str) and same_function(pci, g["pci_bus_id"]):
            return f"GPU {g['index']} ({pci})"
    return f"GPU at {pci}"


def gate_gpu_xid(node, config) -> list[Result]:
    why = _expect_no_gpu(config)
    if why:
        return [Result("gpu.xid", Status.SKIP, observed=why)]
    log = (node.health or {}).get("kernel_log")
    if not isinstance(log, dict):
        return [Result("gpu.xid", Status.SKIP,
                       observed="this record holds no kernel-log facts (recorded by an older rdmacheck)")]
    if not log.get("source"):
        return [Result("gpu.xid", Status.SKIP, observed=str(log.get("why") or "no kernel log read"),
                       remedy="keep a text kernel log (rsyslog: /var/log/kern.log) to let preflight see XIDs, "
                              "or check `journalctl -k | grep Xid`")]
    gpus = [g for g in (node.nvml.get("gpus") or []) if isinstance(g, dict)]
    by: dict[tuple[int, str], int] = {}
    texts: dict[tuple[int, str], str] = {}
    for e in log.get("xid") or []:
        k = (int(e.get("xid", -1)), _gpu_of(str(e.get("pci", "")), gpus))
        by[k] = by.get(k, 0) + 1
        texts[k] = str(e.get("text", ""))
    src = (f"{log['source']} (this boot" + ("" if log.get("boot_marker") else ", no boot banner in the window read")
           + f", {log.get('lines', 0)} lines)")
    if not by:
        older = log.get("xid_before_boot") or 0
        return [Result("gpu.xid", Status.PASS, observed=f"no Xid in {src}"
                       + (f"; {older} Xid line(s) from an earlier boot ignored" if older else ""),
                       expected="no hardware Xid this boot")]
    rows, status = [], Status.PASS
    for (x, where), n in sorted(by.items()):
        if x in XID_FAIL:
            what, st = XID_FAIL[x], Status.FAIL
        elif x in XID_APP:
            what, st = XID_APP[x] + " (the application's)", Status.PASS
        else:
            what, st = XID_WARN.get(x, "see NVIDIA's Xid catalog"), Status.WARN
        rows.append(f"Xid {x} on {where} x{n}: {what}" + (f" [{texts[(x, where)][:120]}]" if texts[(x, where)] else ""))
        status = max(status, st, key=[Status.PASS, Status.WARN, Status.FAIL].index)
    total = log.get("xid_count", sum(by.values()))
    obs = f"{total} Xid line(s) in {src}: " + "; ".join(rows)
    remedy = ("" if status is Status.PASS else
              "a hardware Xid this boot: drain the node, `nvidia-smi -q` for the GPU's state, reset the GPU "
              "(nvidia-smi -r) or reboot; 79/95/119/120/154 and repeated 48/74 need the GPU serviced "
              "(NVIDIA's Xid catalog names the action per Xid)")
    return [Result("gpu.xid", status, observed=obs, expected="no hardware Xid this boot", remedy=remedy,
                   details={"xid": log.get("xid"), "source": log.get("source")})]
