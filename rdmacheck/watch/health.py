"""What ``rdmacheck watch`` exports of the health facts and the lossless state (pure functions).

* :func:`health_summary`: the node's GPU health (facts/gpuhealth.py), its Xid events (facts/kernlog.py)
  and its NIC health (facts/nichealth.py), flattened into plain numbers a scrape can turn into gauges;
  a value NVML answered N/A for is listed under ``na`` with its code, never exported as a number.
* :func:`port_windows`: the counter deltas of one cycle grouped per selected RDMA port (the port's own
  counters and its netdevs'), for ``facts.lossless.verdict``.
"""

from __future__ import annotations

from typing import Any

from rdmacheck.preflight.checks.gpu_health import XID_APP, XID_FAIL, XID_WARN
from rdmacheck.preflight.facts import gpuhealth as gh


def _xid_class(x: int) -> str:
    return "hardware" if x in XID_FAIL else "application" if x in XID_APP else "warning" if x in XID_WARN else "unknown"


def health_summary(facts: Any) -> dict[str, Any]:
    """Plain numbers of a NodeFacts' health facts (see the module doc)."""
    from rdmacheck.preflight.facts.kernlog import same_function

    nvml = facts.nvml if isinstance(getattr(facts, "nvml", None), dict) else {}
    gpus_out: list[dict[str, Any]] = []
    gpus = [g for g in nvml.get("gpus") or [] if isinstance(g, dict) and not g.get("error")]
    for g in gpus:
        h = g.get("health")
        if not isinstance(h, dict):
            continue
        one: dict[str, Any] = {"gpu": str(g.get("index")), "na": {}}
        for k in ("sm_clock_mhz", "sm_clock_max_mhz", "clock_event_reasons"):
            v = h.get(k)
            if isinstance(v, int):
                one[k] = v
            else:
                one["na"][k] = str(v)
        one["fields"] = {}
        for k, v in (h.get("fields") or {}).items():
            if isinstance(v, (int, float)):
                one["fields"][k] = v
            else:
                one["na"][k] = str(v)
        gpus_out.append(one)
    xid: dict[tuple[str, int], int] = {}
    log = (getattr(facts, "health", None) or {}).get("kernel_log") or {}
    for e in log.get("xid") or []:
        pci = str(e.get("pci", ""))
        where = next((str(g.get("index")) for g in gpus if isinstance(g.get("pci_bus_id"), str)
                      and same_function(pci, g["pci_bus_id"])), pci)
        k = (where, int(e.get("xid", -1)))
        xid[k] = xid.get(k, 0) + 1
    nic_out = []
    for dev, f in sorted(((getattr(facts, "health", None) or {}).get("nic") or {}).get("functions", {}).items()):
        if not isinstance(f, dict):
            continue
        aer = f.get("aer") if isinstance(f.get("aer"), dict) else {}
        nic_out.append({"device": dev, "bdf": f.get("bdf"),
                        "aer": {k: (v or {}).get("total") for k, v in aer.items() if isinstance(v, dict)},
                        **{k: f.get(k) for k in ("width", "width_max", "speed", "speed_max")}})
    return {"gpus": gpus_out,
            "xid": [{"gpu": g, "xid": x, "class": _xid_class(x), "count": n} for (g, x), n in sorted(xid.items())],
            "kernel_log": log.get("source"), "nic": nic_out}


def reasons_active(mask: int) -> dict[str, int]:
    """Every clock-event reason NVML defines -> 1 if active in ``mask``, else 0."""
    return {name: int(bool(mask & bit)) for bit, (name, _) in sorted(gh.REASONS.items())}


def port_windows(deltas: dict[tuple[str, str, str], int | None], ports: list[Any]) -> dict[str, dict[str, int | None]]:
    """{(kind, device, counter): delta} of one cycle -> {"dev/port": {counter: delta}} per selected port, the
    port's counters under their folder (``hw_counters/rcvd_seq_err``) and its netdevs' under the netdev's name."""
    out: dict[str, dict[str, int | None]] = {}
    for p in ports or []:
        key = f"{p.device}/{p.port}"
        w: dict[str, int | None] = {}
        for (kind, dev, name), d in deltas.items():
            if kind == "port" and dev == key:
                w[name] = d
            elif kind == "netdev" and dev in (p.netdevs or []):
                w[f"{dev}/{name.rsplit('/', 1)[-1]}"] = d
        out[key] = w
    return out


def health_families(st: Any):
    """Prometheus metric families of the health facts and the lossless state (docs/watch.md lists them)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from rdmacheck.preflight.facts.lossless import STATE_VALUE

    h = (st.facts or {}).get("health") if isinstance(st.facts, dict) else None
    h = h if isinstance(h, dict) else {}
    clk = GaugeMetricFamily("rdmacheck_gpu_sm_clock_mhz", "GPU SM clock now (MHz)", labels=["gpu"])
    clk_max = GaugeMetricFamily("rdmacheck_gpu_sm_clock_max_mhz", "GPU SM clock maximum (MHz)", labels=["gpu"])
    reason = GaugeMetricFamily("rdmacheck_gpu_clock_event_active",
                               "NVML clock-event reason active (1) or not (0)", labels=["gpu", "reason"])
    rows = GaugeMetricFamily("rdmacheck_gpu_remapped_rows", "Rows remapped, by cause", labels=["gpu", "cause"])
    pend = GaugeMetricFamily("rdmacheck_gpu_remap_pending", "Row remap pending a GPU reset (1)", labels=["gpu"])
    fail = GaugeMetricFamily("rdmacheck_gpu_remap_failure", "A row remapping failed (1)", labels=["gpu"])
    pages = GaugeMetricFamily("rdmacheck_gpu_retired_pages", "Retired pages, by cause", labels=["gpu", "cause"])
    ppend = GaugeMetricFamily("rdmacheck_gpu_retired_pages_pending", "Page retirement pending (1)", labels=["gpu"])
    replay = CounterMetricFamily("rdmacheck_gpu_pcie_replays", "PCIe replays since the driver loaded", labels=["gpu"])
    perr = CounterMetricFamily("rdmacheck_gpu_pcie_errors", "NVML PCIe error-count fields", labels=["gpu", "kind"])
    na = GaugeMetricFamily("rdmacheck_gpu_health_na", "A GPU health value NVML answered N/A or an error for (1), "
                           "with the NVML code", labels=["gpu", "fact", "reason"])
    for g in h.get("gpus") or []:
        gpu = str(g.get("gpu"))
        f = g.get("fields") or {}
        if "sm_clock_mhz" in g:
            clk.add_metric([gpu], g["sm_clock_mhz"])
        if "sm_clock_max_mhz" in g:
            clk_max.add_metric([gpu], g["sm_clock_max_mhz"])
        if "clock_event_reasons" in g:
            for name, v in reasons_active(int(g["clock_event_reasons"])).items():
                reason.add_metric([gpu, name], v)
        for cause, k in (("correctable", "remapped_correctable"), ("uncorrectable", "remapped_uncorrectable")):
            if k in f:
                rows.add_metric([gpu, cause], f[k])
        if "remap_pending" in f:
            pend.add_metric([gpu], f["remap_pending"])
        if "remap_failure" in f:
            fail.add_metric([gpu], f["remap_failure"])
        for cause, k in (("single_bit", "retired_sbe"), ("double_bit", "retired_dbe")):
            if k in f:
                pages.add_metric([gpu, cause], f[k])
        if "retired_pending" in f:
            ppend.add_metric([gpu], f["retired_pending"])
        if "pcie_replay" in f:
            replay.add_metric([gpu], f["pcie_replay"])
        for k, v in sorted(f.items()):
            if k.startswith("pcie_") and k not in ("pcie_replay",):
                perr.add_metric([gpu, k[5:]], v)
        for fact, why in sorted((g.get("na") or {}).items()):
            na.add_metric([gpu, fact, why], 1)
    yield from (clk, clk_max, reason, rows, pend, fail, pages, ppend, replay, perr, na)

    xid = GaugeMetricFamily("rdmacheck_gpu_xid_events", "Xid lines this boot in the kernel log, per GPU and Xid",
                            labels=["gpu", "xid", "class"])
    for e in h.get("xid") or []:
        xid.add_metric([str(e["gpu"]), str(e["xid"]), str(e["class"])], e["count"])
    yield xid

    aer = CounterMetricFamily("rdmacheck_nic_aer_errors", "AER errors of the RDMA device's PCI function",
                              labels=["device", "kind"])
    width = GaugeMetricFamily("rdmacheck_nic_pcie_link_width", "PCIe link width now", labels=["device"])
    width_max = GaugeMetricFamily("rdmacheck_nic_pcie_link_width_max", "PCIe link width maximum", labels=["device"])
    speed = GaugeMetricFamily("rdmacheck_nic_pcie_link_speed_gts", "PCIe link speed now (GT/s)", labels=["device"])
    speed_max = GaugeMetricFamily("rdmacheck_nic_pcie_link_speed_max_gts", "PCIe link speed maximum (GT/s)",
                                  labels=["device"])
    for n in h.get("nic") or []:
        dev = str(n.get("device"))
        for kind, v in sorted((n.get("aer") or {}).items()):
            if isinstance(v, int):
                aer.add_metric([dev, kind], v)
        for fam, k in ((width, "width"), (width_max, "width_max"), (speed, "speed"), (speed_max, "speed_max")):
            if isinstance(n.get(k), (int, float)):
                fam.add_metric([dev], n[k])
    yield from (aer, width, width_max, speed, speed_max)

    ll = GaugeMetricFamily("rdmacheck_lossless_state", "Lossless verdict of the last interval's counter deltas: "
                           "0 lossless, 1 congested (pause/CNP, no loss), 2 lossy (retransmits), 3 contract broken "
                           "(pause storm, buffer overrun); absent when unknown", labels=["port"])
    for port, v in st.lossless or ():
        if v.state in STATE_VALUE:
            ll.add_metric([port], STATE_VALUE[v.state])
    yield ll
