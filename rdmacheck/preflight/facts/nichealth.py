"""NIC health facts: the RDMA device's PCI function (AER counters, PCIe link now vs its maximum) and the
port's error counters.  All sysfs, through the root (snapshots carry them).

* ``/sys/bus/pci/devices/<BDF>/aer_dev_correctable``, ``aer_dev_nonfatal``, ``aer_dev_fatal`` (the
  kernel's AER statistics, drivers/pci/pcie/aer.c: one ``Name count`` line per error type and a
  ``TOTAL_ERR_COR`` / ``TOTAL_ERR_NONFATAL`` / ``TOTAL_ERR_FATAL`` line); absent on a kernel built without
  PCIe AER or on a function whose port does not report AER.
* ``current_link_speed`` / ``max_link_speed`` (``16.0 GT/s PCIe``), ``current_link_width`` /
  ``max_link_width`` (``16``) of the same function.  DGX Spark: each half of a ConnectX-7 port is a PCIe
  x4 function; x2 there is the old firmware.
* Port error counters, IB PortCounters under ``counters/`` (``link_downed``, ``symbol_error``,
  ``link_error_recovery``, ``excessive_buffer_overrun_errors``, ``local_link_integrity_errors``,
  ``port_rcv_errors``), and rxe's ``hw_counters/link_downed``.  They count since the counters were
  last cleared (driver load, ``perfquery -x -R``): totals, not rates; ``rdmacheck watch`` gives rates.
"""

from __future__ import annotations

import re
from typing import Any

from ..root import HostRoot
from .counters import parse_counter

PCI_DEVICES = "/sys/bus/pci/devices"
IB_CLASS = "/sys/class/infiniband"
AER = {"correctable": "aer_dev_correctable", "nonfatal": "aer_dev_nonfatal", "fatal": "aer_dev_fatal"}
PORT_ERRORS = ("link_downed", "symbol_error", "link_error_recovery", "excessive_buffer_overrun_errors",
               "local_link_integrity_errors", "port_rcv_errors")


def parse_aer(text: str | None) -> dict[str, int] | None:
    """``RxErr 0\\nBadTLP 3\\n...\\nTOTAL_ERR_COR 3`` -> {"RxErr": 0, "BadTLP": 3, ..., "total": 3}."""
    if text is None:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            key = "total" if parts[0].startswith("TOTAL_ERR_") else parts[0]
            out[key] = int(parts[1])
    if not out:
        return None
    out.setdefault("total", sum(v for k, v in out.items() if k != "total"))
    return out


def parse_speed(text: str | None) -> float | None:
    """``16.0 GT/s PCIe`` -> 16.0; ``Unknown`` / absent -> None."""
    m = re.match(r"^\s*([\d.]+)\s*GT/s", text or "")
    return float(m.group(1)) if m else None


def parse_width(text: str | None) -> int | None:
    m = re.match(r"^\s*x?(\d+)\s*$", text or "")
    return int(m.group(1)) if m else None


def read_function(root: HostRoot, bdf: str) -> dict[str, Any]:
    base = f"{PCI_DEVICES}/{bdf}"
    aer = {k: parse_aer(root.read(f"{base}/{f}", limit=4096)) for k, f in AER.items()}
    return {
        "bdf": bdf,
        "aer": aer if any(v is not None for v in aer.values()) else None,
        "speed": parse_speed(root.read(f"{base}/current_link_speed", limit=256)),
        "speed_max": parse_speed(root.read(f"{base}/max_link_speed", limit=256)),
        "width": parse_width(root.read(f"{base}/current_link_width", limit=256)),
        "width_max": parse_width(root.read(f"{base}/max_link_width", limit=256)),
    }


def read_port_errors(root: HostRoot, dev: str, port: int | str) -> dict[str, int]:
    base = f"{IB_CLASS}/{dev}/ports/{port}"
    out: dict[str, int] = {}
    for name in PORT_ERRORS:
        v = parse_counter(root.read(f"{base}/counters/{name}", limit=256))
        if v is not None:
            out[f"counters/{name}"] = v
    v = parse_counter(root.read(f"{base}/hw_counters/link_downed", limit=256))  # rxe
    if v is not None:
        out["hw_counters/link_downed"] = v
    return out


def read_nic_health(root: HostRoot, hcas: dict[str, str], devices: dict[str, Any]) -> dict[str, Any]:
    """{"functions": {rdma device: PCI function facts}, "ports": {"dev/port": {counter: value}}}.

    ``hcas``: rdma device -> BDF (``facts.pci.hca_functions``); ``devices``: ``read_infiniband``'s map."""
    return {
        "functions": {dev: read_function(root, bdf) for dev, bdf in sorted(hcas.items())},
        "ports": {f"{d}/{p}": read_port_errors(root, d, p) for d, dv in sorted(devices.items())
                  for p in sorted(getattr(dv, "ports", {}) or {})},
    }
