"""Fabric vs NCCL: given link evidence (verbs traffic on the HCAs, GID, TC and MTU NCCL uses) and bench
evidence of the same nodes with its path proof, say whose fault a slow NCCL number is.

NVIDIA's answer to "NCCL is slower than my fabric" is a manual recipe (NVIDIA/nccl#426): run perftest under
NCCL's own conditions and compare.  This does that comparison on the two evidence files:

* NCCL fell back to NET/Socket (bench.transport): NCCL is not using the fabric at all; the path proof's top
  cause is the reason, and the link run shows what RDMA would have carried;
* the fabric itself is below its line rate (link.bandwidth failed): the fabric is slow, not NCCL;
* NCCL's bus bandwidth >= ``agree`` x the verbs bandwidth: the two agree;
* else NCCL is below a healthy fabric: the path proof says which HCAs NCCL used, whether GPUDirect RDMA
  was on and which GID it took, against what the link run used.

The busbw of a two-node ring all-reduce is what each node's link carries, so it compares with one pair's
verbs bandwidth (all pairs together when NCCL used several HCAs).
"""

from __future__ import annotations

from typing import Any

from rdmacheck.evidence.model import Evidence, Result, Status

AGREE = 0.8
MiB = 1 << 20


def _result(ev: Evidence, gid: str):
    return next((r for r in ev.results if r.id == gid), None)


def fabric_gbs(link: Evidence) -> tuple[float | None, list[str]]:
    """The link run's verified RDMA WRITE GB/s at >= 1 MiB (all pairs together when measured) and its ports."""
    runs = [r for r in (link.context.get("runs") or []) if isinstance(r, dict)]
    together = [r for r in runs if r.get("mode") == "together"]
    use = together or runs[:1]
    total, ports = 0.0, []
    for r in use:
        pts = ((r.get("result") or {}).get("bandwidth") or {}).get("points") or []
        vals = [p["gb_per_s"] for p in pts if isinstance(p, dict) and p.get("size", 0) >= MiB
                and p.get("verified") is not False and isinstance(p.get("gb_per_s"), (int, float))]
        if vals:
            total += max(vals)
            ports.append(str(r.get("local_port")))
    return (total if ports else None), ports


def nccl_gbs(bench: Evidence) -> float | None:
    vals = [r.get("busbw") for r in bench.records if isinstance(r, dict) and r.get("op") == "all_reduce"
            and isinstance(r.get("busbw"), (int, float)) and (r.get("bytes") or 0) >= MiB]
    return max(vals) if vals else None


def verdict(link: Evidence, bench: Evidence, agree: float = AGREE) -> Result:
    exp = f"NCCL's all_reduce busbw >= {agree:g} x the verbs bandwidth of the same HCAs, or the reason it is not"
    fab, ports = fabric_gbs(link)
    busbw = nccl_gbs(bench)
    tr = _result(bench, "bench.transport")
    lb = _result(link, "link.bandwidth")
    details: dict[str, Any] = {"fabric_gb_per_s": fab, "nccl_busbw": busbw, "link_ports": ports,
                               "link_host": link.host, "bench_host": bench.host}
    facts = (f"verbs {fab:.3f} GB/s on {', '.join(ports)}" if fab is not None else "no verified verbs bandwidth") + \
            (f", NCCL busbw {busbw:.3f} GB/s" if busbw is not None else ", no NCCL all_reduce >= 1 MiB")
    if tr is not None and "NET/Socket" in (tr.observed or "") and tr.status is Status.FAIL:
        causes = (tr.details or {}).get("causes") or []
        top = causes[0] if causes and isinstance(causes[0], dict) else {}
        why = top.get("title") or "see bench.transport"
        details["cause"] = top
        return Result("fabric.vs_nccl", Status.FAIL, expected=exp, details=details,
                      observed=f"NCCL fell back to NET/Socket, so it never used the fabric ({facts}); "
                               f"the path proof's first cause: {why}",
                      remedy=top.get("remedy") or tr.remedy or "see bench.transport")
    if fab is None or busbw is None:
        return Result("fabric.vs_nccl", Status.SKIP, expected=exp, details=details,
                      observed=f"cannot compare: {facts}", remedy="pass link evidence with verified bandwidth and "
                                                                  "bench evidence with all_reduce sizes >= 1 MiB")
    if lb is not None and lb.status is Status.FAIL:
        lo = _result(link, "link.lossless")   # the link runs' own counter windows, when recorded
        loss = f"; its counters: {lo.observed}" if lo is not None and lo.status in (Status.WARN, Status.FAIL) else ""
        return Result("fabric.vs_nccl", Status.FAIL, expected=exp, details=details,
                      observed=f"the fabric itself is slow ({facts}): {lb.observed}{loss}",
                      remedy="fix the fabric first: link speed/width, PFC/ECN and retransmits (`rdmacheck counters` "
                             "during `rdmacheck link`), the switch port; NCCL cannot beat it")
    ratio = busbw / fab if fab else 0.0
    details["ratio"] = round(ratio, 3)
    if ratio >= agree:
        return Result("fabric.vs_nccl", Status.PASS, expected=exp, details=details,
                      observed=f"NCCL and the fabric agree: {facts} ({ratio:.2f}x)")
    td = (tr.details or {}) if tr is not None else {}
    hints = []
    used = td.get("used_hcas") or []
    if used and set(u.split(":")[0] for u in used) != set(p.split(":")[0] for p in ports):
        hints.append(f"NCCL used {', '.join(used)}, the link run {', '.join(ports)}")
    if td.get("gdr_enabled") is False:
        hints.append("GPUDirect RDMA was off in NCCL's run")
    if td.get("gid_indexes"):
        hints.append(f"NCCL's GID indexes {td['gid_indexes']}")
    return Result("fabric.vs_nccl", Status.FAIL, expected=exp, details=details,
                  observed=f"NCCL gets {ratio:.2f}x of a fabric that works ({facts})"
                           + (": " + "; ".join(hints) if hints else ""),
                  remedy="compare NCCL_IB_HCA (a subset of the HCAs, one DGX Spark half idle), NCCL_NET_GDR_LEVEL, "
                         "NCCL_IB_GID_INDEX/NCCL_IB_TC with the link run (docs/datapath.md)")
