"""The link results: pure functions of one probe's outcome and the expectations -> Result.

link.reach      a QP reached the peer's QP and bytes came back verified
link.bandwidth  RDMA WRITE GB/s (1e9 B/s, the unit busbw uses) at messages >= 1 MiB against the port's line
                rate from sysfs times a floor (default 0.8), or an explicit --min-bandwidth
link.latency    ping-pong p50/p99 (one-way, as ib_write_lat reports) of the smallest message against a bound
link.lossless   this node's ports' counters over each run (facts.lossless): lossless or lossless under
                congestion passes, lossy (retransmits: go-back-N) warns, a broken lossless contract (pause
                storm, buffer overrun) fails; no readable retransmit counter, or no run that reached
                the peer, is not judged
"""

from __future__ import annotations

from typing import Any

from rdmacheck.evidence.model import Result, Status

MiB = 1 << 20


def _pair(r: dict[str, Any]) -> str:
    lo, re = r.get("local_port") or "?", r.get("remote_port") or "?"
    return f"{lo} -> {r.get('peer')}:{re}"


def judge_reach(runs: list[dict[str, Any]]) -> Result:
    exp = "every selected HCA pair connects, moves and verifies RDMA data (NCCL's GID, TC, SL, MTU)"
    parts, bad, details = [], [], {}
    for r in runs:
        res = r.get("result") or {}
        key = _pair(r)
        details[key] = {"ok": res.get("ok"), "stage": res.get("stage"), "error": res.get("error"),
                        "path_mtu": res.get("path_mtu")}
        if res.get("ok"):
            parts.append(f"{key}: reached (path MTU {res.get('path_mtu')})")
            continue
        f = res.get("failure") or {}
        side_ok = res.get("stage") not in ("wire",) and res.get("remote") is not None
        cause = res.get("error") or "failed"
        if side_ok and res.get("stage") == "transfer":
            cause += (f" — the TCP side channel to {r.get('peer')} works while RoCE does not: RoCE v2 (UDP 4791) "
                      "is dropped on the path (a packet filter on either node, see net.firewall, or a switch ACL), "
                      "or the peer holds the wrong MAC for this address (ARP flux, see net.arp on both nodes)")
        elif res.get("stage") == "wire" and f.get("detail", {}).get("side") != "server":
            cause += f" — is `rdmacheck link --serve` running on {r.get('peer')}?"
        parts.append(f"{key}: failed at {res.get('stage')}: {cause}")
        bad.append(r)
    obs = "; ".join(parts) or "no HCA pair probed"
    if not runs:
        return Result("link.reach", Status.FAIL, observed=obs, expected=exp,
                      remedy="select an ACTIVE RDMA port on both nodes (see rdma.devices, rdma.port)")
    if bad:
        stages = {(b.get("result") or {}).get("stage") for b in bad}
        remedy = ("run `rdmacheck preflight` on both nodes (net.firewall, net.arp, rdma.datapath); check the "
                  "switch ports and `rdmacheck counters` on both" if "transfer" in stages else
                  "start `rdmacheck link --serve` on the peer, reachable on this address and port"
                  if "wire" in stages else "see the stage named: open (device permissions), mr (memlock), "
                                           "connect (GID/TC/SL/MTU)")
        return Result("link.reach", Status.FAIL, observed=obs, expected=exp, remedy=remedy, details=details)
    return Result("link.reach", Status.PASS, observed=obs, expected=exp, details=details)


def _best_bw(res: dict[str, Any], min_size: int) -> float | None:
    pts = ((res.get("bandwidth") or {}).get("points") or [])
    vals = [p.get("gb_per_s") for p in pts if p.get("size", 0) >= min_size and p.get("verified") is not False
            and isinstance(p.get("gb_per_s"), (int, float))]
    return max(vals) if vals else None


def judge_bandwidth(runs: list[dict[str, Any]], floor: float, min_gbps: float | None) -> Result:
    parts, bad, details, judged = [], [], {}, 0
    for r in runs:
        res = r.get("result") or {}
        key = _pair(r)
        got = _best_bw(res, MiB)
        rate = r.get("rate_gbps")
        want = min_gbps if min_gbps is not None else (rate / 8 * floor if rate else None)
        details[key] = {"gb_per_s": got, "expected_gb_per_s": want, "line_rate_gbps": rate}
        if got is None:
            parts.append(f"{key}: no verified measurement at >= 1 MiB")
            bad.append(key)
            continue
        judged += 1
        how = (f">= {min_gbps:g} GB/s (--min-bandwidth)" if min_gbps is not None else
               f">= {want:.2f} GB/s ({floor:g} x {rate:g} Gb/s line rate)" if want else "no line rate known")
        parts.append(f"{key}: {got:.3f} GB/s ({how})")
        if want is None or got < want:
            bad.append(key)
    exp = (f">= {min_gbps:g} GB/s per pair" if min_gbps is not None else
           f">= {floor:g} x each port's line rate (sysfs rate) at messages >= 1 MiB")
    obs = "; ".join(parts) or "nothing measured"
    if bad:
        return Result("link.bandwidth", Status.FAIL, observed=obs, expected=exp, details=details,
                      remedy="see link.reach first; then the path: link speed and width, PFC/ECN "
                             "(`rdmacheck counters` during the run), NCCL_IB_TC, the switch port")
    return Result("link.bandwidth", Status.PASS, observed=obs, expected=exp, details=details)


def judge_latency(runs: list[dict[str, Any]], max_p50_us: float, max_p99_us: float) -> Result:
    exp = f"smallest message one-way p50 <= {max_p50_us:g} us, p99 <= {max_p99_us:g} us"
    parts, bad, details = [], [], {}
    for r in runs:
        res = r.get("result") or {}
        key = _pair(r)
        pts = sorted(((res.get("latency") or {}).get("points") or []), key=lambda p: p.get("size", 0))
        if not pts:
            parts.append(f"{key}: not measured")
            bad.append(key)
            continue
        p = pts[0]
        details[key] = {"size": p.get("size"), "p50_us": p.get("p50_us"), "p99_us": p.get("p99_us")}
        parts.append(f"{key}: {p.get('size')} B p50 {p.get('p50_us'):.1f} us, p99 {p.get('p99_us'):.1f} us")
        if p.get("p50_us", 0) > max_p50_us or p.get("p99_us", 0) > max_p99_us:
            bad.append(key)
    obs = "; ".join(parts) or "nothing measured"
    if bad:
        return Result("link.latency", Status.FAIL, observed=obs, expected=exp, details=details,
                      remedy="see link.reach first; a slow p99 with a fast p50 is loss or congestion "
                             "(retransmits, pause: `rdmacheck counters`)")
    return Result("link.latency", Status.PASS, observed=obs, expected=exp, details=details)


def judge_lossless(runs: list[dict[str, Any]]) -> Result:
    """Each run's window of this node's counters (``row["lossless"]``: port -> facts.lossless Verdict dict)."""
    from rdmacheck.evidence.model import could_not_judge
    from rdmacheck.preflight.facts.lossless import BROKEN, CONGESTED, LOSSLESS, LOSSY

    exp = "no retransmit, sequence error or drop counter of this node's ports rose during a run (pause/CNP may)"
    parts, details, states = [], {}, []
    # a run that never reached the peer moved nothing to judge (its ACK timeout outlasts the run): link.reach
    reached = [r for r in runs if (r.get("result") or {}).get("ok")]
    if runs and not reached:
        return could_not_judge("link.lossless", "no run reached the peer (see link.reach)", expected=exp)
    for r in reached:
        for port, v in sorted((r.get("lossless") or {}).items()):
            if not isinstance(v, dict):
                continue
            key = f"{r.get('mode')} {port}"
            details[key] = {"state": v.get("state"), "moved": v.get("moved"), "patterns": v.get("patterns")}
            states.append(v.get("state"))
            parts.append(f"{key}: {v.get('summary')}")
    obs = "; ".join(parts)
    if not states:
        return could_not_judge("link.lossless", "no counter window was taken around the runs", expected=exp)
    if BROKEN in states:
        return Result("link.lossless", Status.FAIL, observed=obs, expected=exp, details=details,
                      remedy="the lossless contract is broken on this node's port: the switch's PFC/buffer settings "
                             "for the RoCE priority, and a port that pauses without end (rdma.pfc, `rdmacheck counters`)")
    if LOSSY in states:
        return Result("link.lossless", Status.WARN, observed=obs, expected=exp, details=details,
                      remedy="packets were lost and sent again: PFC on the RoCE priority end to end (rdma.pfc), the "
                             "cable and switch port (link errors), or a filter dropping part of the traffic; under "
                             "NCCL this loss costs the tail of every collective")
    if all(s in (LOSSLESS, CONGESTED) for s in states):
        return Result("link.lossless", Status.PASS, observed=obs, expected=exp, details=details)
    return could_not_judge("link.lossless", "no retransmit counter was readable on this node's ports: "
                           + obs, expected=exp, **details)
