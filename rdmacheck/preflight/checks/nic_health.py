"""NIC health gates: nic.pcie (the RDMA device's PCI function: AER counters, PCIe link now vs maximum, the
NIC's fatal kernel-log lines) and nic.port_errors (the port's error counters).

Pure functions of ``NodeFacts`` (``health["nic"]``: facts/nichealth.py; ``health["kernel_log"]``:
facts/kernlog.py) and the configuration.  The ports judged are those NCCL selects (``NCCL_IB_HCA``), else
every port.  Thresholds (docs/checks-gpu-net.md): AER fatal fails, non-fatal warns, correctable warns from
:data:`AER_CORRECTABLE_WARN` (a few corrected errors after link training are normal); a link narrower or
slower than its maximum warns; a mlx5 health line (``health compromised``, ``Fatal error``,
``unrecoverable hardware error``) this boot fails; any non-zero port error counter warns (the counters are
totals since they were last cleared, so the remedy says how to tell old from new).
"""

from __future__ import annotations

from typing import Any

from rdmacheck.evidence.model import Result, Status
from rdmacheck.preflight.registry import ids_of
from rdmacheck.preflight.checks.gpu import platform

AER_CORRECTABLE_WARN = 100
IDS = ids_of("nic.pcie")   # nic.pcie, nic.port_errors (the registry names them)


def _ports(node) -> list[str]:
    sel = node.selection
    if sel is not None and sel.ports:
        return [f"{p.device}/{p.port}" for p in sel.ports]
    return [f"{d}/{p}" for d, dv in sorted(node.ib.items()) for p in sorted(dv.ports)]


def gate_nic_health(node, config) -> list[Result]:
    nic = (node.health or {}).get("nic")
    if not isinstance(nic, dict):
        why = "this record holds no NIC health facts (recorded by an older rdmacheck)"
        return [Result(i, Status.SKIP, observed=why) for i in IDS]
    ports = _ports(node)
    if not ports:
        return [Result(i, Status.SKIP, observed="no RDMA port") for i in IDS]
    spark = platform(config, node.nvml if isinstance(node.nvml, dict) else {}, node.model) == "dgx-spark"
    log = (node.health or {}).get("kernel_log") or {}
    return [judge_pcie(nic, sorted({p.split("/")[0] for p in ports}), log, spark), judge_port_errors(nic, ports)]


def _fmt_aer(kind: str, d: dict[str, int] | None) -> str:
    if d is None:
        return f"{kind} n/a"
    moved = {k: v for k, v in d.items() if k != "total" and v}
    return f"{kind} {d.get('total', 0)}" + (f" ({', '.join(f'{k} {v}' for k, v in moved.items())})" if moved else "")


def judge_pcie(nic: dict[str, Any], devices: list[str], log: dict[str, Any], spark: bool = False) -> Result:
    from ..facts.kernlog import same_function

    funcs = nic.get("functions") or {}
    rows, fails, warns, none = [], [], [], []
    for dev in devices:
        f = funcs.get(dev)
        if not isinstance(f, dict):
            none.append(dev)
            continue
        parts = []
        aer = f.get("aer")
        if isinstance(aer, dict):
            parts.append("AER " + ", ".join(_fmt_aer(k, aer.get(k)) for k in ("correctable", "nonfatal", "fatal")))
            fat, nonf, cor = ((aer.get(k) or {}).get("total", 0) for k in ("fatal", "nonfatal", "correctable"))
            if fat:
                fails.append(f"{dev} ({f['bdf']}) {fat} fatal PCIe error(s)")
            if nonf:
                warns.append(f"{dev} ({f['bdf']}) {nonf} non-fatal PCIe error(s)")
            if cor >= AER_CORRECTABLE_WARN:
                warns.append(f"{dev} ({f['bdf']}) {cor} corrected PCIe errors")
        else:
            parts.append("AER counters n/a (no aer_dev_* files: kernel without PCIe AER statistics)")
        w, wm, s, sm = (f.get(k) for k in ("width", "width_max", "speed", "speed_max"))
        if isinstance(w, int) and isinstance(wm, int):
            parts.append(f"x{w} of x{wm}")
            if w < wm:
                warns.append(f"{dev} link x{w} of x{wm}" + (" (DGX Spark: each half is x4; x2 is the old NIC "
                                                            "firmware)" if spark else ""))
        if isinstance(s, (int, float)) and isinstance(sm, (int, float)):
            parts.append(f"{s:g} of {sm:g} GT/s")
            if s < sm:
                warns.append(f"{dev} link at {s:g} of {sm:g} GT/s")
        for e in log.get("nic") or []:
            if same_function(str(e.get("pci", "")), str(f.get("bdf", ""))):
                line = f"{dev} kernel log: {e.get('text')}"
                (fails if e.get("kind") == "mlx5" else warns).append(line)
        rows.append(f"{dev} ({f.get('bdf')}): " + ", ".join(parts))
    if not rows:
        return Result("nic.pcie", Status.SKIP, observed="no PCI function behind " + ", ".join(none)
                      + " (soft-RoCE or a virtual device: no PCIe link or AER to judge)")
    obs = "; ".join(rows + fails + warns) + (f"; no PCI function: {', '.join(none)}" if none else "")
    expected = "no fatal/non-fatal AER errors, link at its maximum width and speed"
    remedy = ("reseat the NIC or its cable/riser and compare `lspci -vv` LnkSta with LnkCap; update the NIC firmware"
              + (" (DGX Spark: x2 per half means the old ConnectX-7 firmware)" if spark else "")
              + "; fatal AER or a mlx5 health line: drain the node and reset/replace the NIC (`mlxfwreset`, reboot)")
    status = Status.FAIL if fails else Status.WARN if warns else Status.PASS
    return Result("nic.pcie", status, observed=obs, expected=expected,
                  remedy=remedy if status is not Status.PASS else "")


def judge_port_errors(nic: dict[str, Any], ports: list[str]) -> Result:
    allp = nic.get("ports") or {}
    rows, warns, none = [], [], []
    for key in ports:
        c = allp.get(key)
        if not c:
            none.append(key)
            continue
        moved = {k.split("/", 1)[1]: v for k, v in c.items() if v}
        rows.append(f"{key}: " + (", ".join(f"{k} {v}" for k, v in moved.items()) or f"{len(c)} error counters all 0"))
        if moved:
            warns.append(f"{key} " + ", ".join(f"{k} {v}" for k, v in moved.items()))
    if not rows:
        return Result("nic.port_errors", Status.SKIP,
                      observed="no port error counter on " + ", ".join(none) + " (this driver exposes none in sysfs)")
    obs = "; ".join(rows) + (f"; no error counters: {', '.join(none)}" if none else "")
    expected = "link_downed, symbol_error, link_error_recovery, local_link_integrity_errors, " \
               "excessive_buffer_overrun_errors, port_rcv_errors all 0"
    if warns:
        return Result("nic.port_errors", Status.WARN, observed=obs, expected=expected,
                      remedy="these count since the counters were last cleared: run `rdmacheck counters --interval 60` "
                             "(or watch `rdmacheck_counter_rate`) to see whether they still rise; rising symbol or "
                             "link-recovery errors mean a bad cable, optic or switch port")
    return Result("nic.port_errors", Status.PASS, observed=obs, expected=expected)
