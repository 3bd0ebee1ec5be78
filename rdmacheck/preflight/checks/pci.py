"""pci.acs: PCIe Access Control Services on the bridges above GPUs and HCAs.

ACS request/completion redirect sends every peer-to-peer transaction up to
the root complex: GPUDirect RDMA between a GPU and a NIC under the same PCIe
switch then detours through the CPU (bandwidth halves) or, with an IOMMU that
does not map the peer, fails outright (NCCL hangs or errors).  NCCL's
troubleshooting guide says to disable ACS on bare metal.
"""

from __future__ import annotations

from typing import Any

from rdmacheck.preflight.facts import pci
from rdmacheck.evidence.model import Result, Status

REMEDY = ("disable ACS on these bridges: the BIOS option (often 'ACS Control' / 'PCIe ACS') or, per boot, "
          "setpci -s BDF ECAP_ACS+0x6.w=0000 for each bridge listed (as NCCL's troubleshooting guide describes); "
          "inside a VM leave ACS to the hypervisor")


def gate_pci_acs(facts, config) -> list[Result]:
    gpus = facts.pci.gpus
    hcas = facts.pci.hcas
    if not gpus or not hcas:
        missing = " and no ".join(w for w, v in (("NVIDIA GPU on PCI", gpus), ("PCI-attached RDMA device", hcas)) if not v)
        return [Result("pci.acs", Status.SKIP,
                       observed=f"no {missing} here (integrated GPU, soft-RoCE, no RDMA or no GPU): "
                                "no GPU-to-HCA PCIe path to inspect")]
    return [judge_bridges(facts.pci, gpus + list(hcas.values()), {"gpus": gpus, "hcas": hcas})]


def judge_bridges(topo, endpoints: list[str], details: dict[str, Any] | None = None) -> Result:
    """pci.acs verdict for the bridges above ``endpoints`` (PCI functions).

    ``topo`` holds ``ancestors`` {endpoint: bridges} and ``config`` {bridge: config space hex},
    as ``facts.pci.read_topology`` reads them (``NodeFacts.pci``).
    """
    bridges: list[str] = []
    for bdf in endpoints:
        for a in topo.ancestors.get(bdf, []):
            if a not in bridges:
                bridges.append(a)
    rows: list[dict[str, Any]] = []
    unreadable, redirect, other = [], [], []
    for b in bridges:
        raw = topo.config.get(b)
        cs = None if raw is None else pci.parse_config(bytes.fromhex(raw))
        if cs is None or not cs.is_bridge:
            continue
        row: dict[str, Any] = {"bdf": b, "config_bytes": cs.size}
        if not cs.extended_readable:
            if cs.size <= 64:
                unreadable.append(b)
                row["acs"] = "unreadable"
            else:
                row["acs"] = "no extended config space"
            rows.append(row)
            continue
        en = cs.acs_enabled()
        row["acs"] = "absent" if cs.acs_ctrl is None else (",".join(en) or "all off")
        row["acs_ctrl"] = cs.acs_ctrl
        rows.append(row)
        if set(en) & pci.ACS_REDIRECT:
            redirect.append(f"{b} ({' '.join(en)})")
        elif {"SrcValid", "UpstreamFwd"} & set(en):
            other.append(f"{b} ({' '.join(en)})")
    details = {**(details or {}), "endpoints": endpoints, "bridges": rows}
    expected = "ACS redirect off on every bridge between GPU and HCA"
    if not rows:
        return Result("pci.acs", Status.PASS, observed="GPU and HCA have no PCI bridge above them",
                      expected=expected, details=details)
    if redirect:
        return Result("pci.acs", Status.FAIL,
                      observed="ACS redirects peer-to-peer traffic on " + "; ".join(redirect),
                      expected=expected, remedy=REMEDY, details=details)
    if unreadable:
        return Result("pci.acs", Status.SKIP,
                      observed=f"config space of {len(unreadable)} bridge(s) readable only to 64 bytes: "
                               "ACS lives beyond 0x100 and the kernel shows it to root only",
                      remedy="run preflight as root to inspect ACS", details=details)
    if other:
        return Result("pci.acs", Status.WARN, observed="ACS enabled (no redirect) on " + "; ".join(other),
                      expected=expected, remedy=REMEDY, details=details)
    return Result("pci.acs", Status.PASS,
                  observed=f"{len(rows)} bridge(s): " + ", ".join(f"{r['bdf']} ACS {r['acs']}" for r in rows),
                  expected=expected, details=details)
