"""Bus-bandwidth factors: busbw = algbw x factor(n ranks), nccl-tests' getBw (src/*.cu, doc/PERFORMANCE.md).

all_reduce 2(n-1)/n; all_gather, reduce_scatter, alltoall (n-1)/n; broadcast, sendrecv 1.  The factor
is also the per-rank link traffic per byte of nccl-tests' size column, so the bench's bandwidth
(rdmacheck/bench/collectives.py) and bench.wire's expected bytes on the NIC (rdmacheck/bench/gates.py)
both read it from here.
"""

from __future__ import annotations

from typing import Callable

FACTORS: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "sendrecv": lambda n: 1.0,
}
