"""Judgements of a sweep: the plateau bandwidth gate, #wrong, completion; and the memory guard.

Pure functions over records, so the CPU tests check them exactly.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..model import Result, Status
from .sizes import human_bytes


def busbw_gate(records: list[dict[str, Any]], expect_busbw: float, plateau_min_bytes: int) -> Result:
    """``bench.busbw``: per op, the median busbw over sizes >= the plateau threshold.

    Only the plateau counts: nccl-tests' "Avg bus bandwidth" averages 1 KiB
    (latency-bound) with 1 GiB (bandwidth-bound) and says little about either.
    The median of the plateau sizes shrugs off one noisy size.  Every op
    measured must reach the expectation.
    """
    plateau_txt = human_bytes(plateau_min_bytes)
    per_op: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("bytes", 0) >= plateau_min_bytes and r.get("busbw") is not None:
            per_op.setdefault(r["op"], []).append(r)
    expected = f"median busbw >= {expect_busbw:g} GB/s at sizes >= {plateau_txt}"
    if not per_op:
        return Result(
            "bench.busbw", Status.SKIP, observed=f"no size >= {plateau_txt} was measured", expected=expected,
            remedy=f"include sizes >= {plateau_txt} (e.g. --sizes 1K..1G) or lower --expect plateau_min_bytes=SIZE",
        )
    details: dict[str, Any] = {"plateau_min_bytes": plateau_min_bytes, "expect_busbw": expect_busbw, "ops": {}}
    obs, failed = [], []
    for op, recs in per_op.items():
        # both variants of a size count as samples: they move the same bytes
        vals = [float(r["busbw"]) for r in recs]
        med = statistics.median(vals)
        lo = min(recs, key=lambda r: r["busbw"])
        hi = max(recs, key=lambda r: r["busbw"])
        details["ops"][op] = {"median": med, "min": lo["busbw"], "min_bytes": lo["bytes"], "max": hi["busbw"],
                              "max_bytes": hi["bytes"], "sizes": sorted({r["bytes"] for r in recs})}
        obs.append(f"{op} {med:.2f} GB/s (min {lo['busbw']:.2f} at {human_bytes(lo['bytes'])}, "
                   f"max {hi['busbw']:.2f} at {human_bytes(hi['bytes'])})")
        if med < expect_busbw:
            failed.append(op)
    status = Status.FAIL if failed else Status.PASS
    remedy = ""
    backends = {r.get("backend") for r in records} - {None}
    if failed and backends and "nccl" not in backends:
        # gloo moves the bytes through host memory and TCP sockets (loopback on one node): its bandwidth
        # says nothing about NCCL, RDMA, GPUDirect or PFC, so advice about those would mislead.
        remedy = (f"CPU/loopback run, not a fabric verdict: {'/'.join(sorted(backends))} measures host memory and "
                  "TCP sockets; judge the fabric with NCCL on the GPU nodes (--backend nccl), or set --expect-busbw "
                  "to a CPU baseline to gate this machine's own number")
    elif failed:
        remedy = ("bus bandwidth below expectation on " + ", ".join(failed) + ": run 'rdmacheck preflight' "
                  "(NCCL may have fallen back to sockets, or GPUDirect/PFC is off); compare with nccl-tests; "
                  "if the link is slower by design, set --expect-busbw")
    return Result("bench.busbw", status, observed="; ".join(obs), expected=expected, remedy=remedy, details=details)


def check_result(records: list[dict[str, Any]], checked: bool) -> Result:
    """``bench.check``: every rank verified every element (nccl-tests #wrong)."""
    if not checked:
        return Result("bench.check", Status.SKIP, observed="--no-check", expected="#wrong = 0 on every rank",
                      remedy="run with --check to verify results")
    if not records:
        return Result("bench.check", Status.SKIP, observed="nothing was measured", expected="#wrong = 0 on every rank")
    bad = [r for r in records if r.get("wrong")]
    total = sum(int(r["wrong"]) for r in bad)
    if bad:
        first = bad[0]
        return Result(
            "bench.check", Status.FAIL,
            observed=f"{total} wrong element(s) in {len(bad)} measurement(s); first: {first['op']} "
                     f"{human_bytes(first['bytes'])} {'in-place' if first.get('in_place') else 'out-of-place'}",
            expected="#wrong = 0 on every rank",
            remedy="results are corrupted: suspect GPU memory errors, a broken NCCL plugin or a faulty link; "
                   "run nccl-tests with -c 1 to confirm",
            details={"wrong": [{k: r.get(k) for k in ('op', 'bytes', 'in_place', 'wrong')} for r in bad]},
        )
    return Result("bench.check", Status.PASS, observed=f"0 wrong in {len(records)} measurement(s)",
                  expected="#wrong = 0 on every rank")


def memory_verdict(need: int, limit: int, source: str, max_memory: int | None) -> str | None:
    """None when ``need`` bytes fit, else the refusal message (one line, with the fix)."""
    if need <= limit:
        return None
    how = "--max-memory" if max_memory is not None else source
    return (f"the largest size needs {human_bytes(need)} per rank but only {human_bytes(limit)} may be used ({how}); "
            f"choose smaller --sizes, or raise --max-memory if you know the memory is there")
