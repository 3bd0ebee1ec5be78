"""Judgements of a sweep: the plateau bandwidth gate, #wrong, completion; and the memory guard.

Pure functions over records, so the CPU tests check them exactly.
"""

from __future__ import annotations

from typing import Any

from rdmacheck.evidence.model import Result, Status
from rdmacheck.nccl.plateau import plateaus
from .sizes import human_bytes


ONE_RANK = "1 rank: nothing crosses a link"


def plateau_refusal(plan_nbytes: list[int], plateau_min_bytes: int, expect_busbw: float) -> str | None:
    """Why a bandwidth gate the user asked for could not be judged by this sweep, or None.

    Known before any rank starts: when no size reaches the plateau, the gate
    would only ever SKIP, and a run whose one gate skipped must not read as a pass.
    """
    if any(n >= plateau_min_bytes for n in plan_nbytes):
        return None
    plateau = human_bytes(plateau_min_bytes)
    largest = human_bytes(max(plan_nbytes)) if plan_nbytes else "none"
    return (f"the bandwidth gate ({expect_busbw:g} GB/s) judges sizes >= {plateau}, but the largest size in --sizes "
            f"is {largest}: add a size of at least {plateau} to --sizes (e.g. --sizes 1K..1G), "
            "or lower --expect plateau_min_bytes=SIZE")


def one_rank_refusal(expect_busbw: float) -> str:
    return (f"{ONE_RANK}, so the bandwidth gate ({expect_busbw:g} GB/s) cannot be judged; run 2 or more ranks "
            "(--nproc 2, or torchrun across nodes), or drop --expect-busbw / min_busbw to measure one rank ungated")


def busbw_gate(records: list[dict[str, Any]], expect_busbw: float, plateau_min_bytes: int,
               world_size: int | None = None) -> Result:
    """``bench.busbw``: per op, the plateau figure (rdmacheck/nccl/plateau.py: the median busbw over
    sizes >= the plateau threshold).  Every op measured must reach the expectation; one rank SKIPs."""
    plateau_txt = human_bytes(plateau_min_bytes)
    per_op = plateaus(records, plateau_min_bytes)
    expected = f"median busbw >= {expect_busbw:g} GB/s at sizes >= {plateau_txt}"
    if world_size == 1:
        # one rank moves nothing over a link: broadcast/sendrecv "bandwidth" is a local copy
        return Result("bench.busbw", Status.SKIP, observed=ONE_RANK, expected=expected + " across >= 2 ranks",
                      remedy="run 2 or more ranks (--nproc 2, or torchrun across nodes) to judge bandwidth")
    if not per_op:
        return Result(
            "bench.busbw", Status.SKIP, observed=f"no size >= {plateau_txt} was measured", expected=expected,
            remedy=f"include sizes >= {plateau_txt} (e.g. --sizes 1K..1G) or lower --expect plateau_min_bytes=SIZE",
        )
    details: dict[str, Any] = {"plateau_min_bytes": plateau_min_bytes, "expect_busbw": expect_busbw, "ops": {}}
    obs, failed = [], []
    for op, p in per_op.items():
        details["ops"][op] = {"median": p.median, "min": p.low, "min_bytes": p.low_bytes, "max": p.high,
                              "max_bytes": p.high_bytes, "sizes": list(p.sizes)}
        obs.append(f"{op} {p.median:.2f} GB/s (min {p.low:.2f} at {human_bytes(p.low_bytes)}, "
                   f"max {p.high:.2f} at {human_bytes(p.high_bytes)})")
        if p.median < expect_busbw:
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
