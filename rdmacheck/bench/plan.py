"""The sweep plan: one row per (op, size), built before any rank starts."""

from __future__ import annotations

import dataclasses
from typing import Any

from .collectives import COLLECTIVES, DTYPES, Layout


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """One (op, size) of the sweep; hooks receive it (see ``rdmacheck.bench.hooks``)."""

    index: int           # position in the sweep, 0-based
    total: int           # rows in the sweep
    op: str
    requested: int       # the size asked for (--sizes)
    nbytes: int          # nccl-tests' size column (larger buffer, bytes)
    count: int           # nccl's count argument
    send: int            # send-buffer elements per rank
    recv: int            # receive-buffer elements per rank
    dtype: str
    elsize: int
    redop: str
    root: int
    world_size: int
    variants: tuple[bool, ...]   # in_place values measured, out-of-place first

    def memory_need(self) -> int:
        """Bytes one rank may hold at once for this row.

        Send + receive buffers, plus as much again as margin for what is not
        torch's (NCCL's own buffers, the CUDA context, the allocator's slack);
        the fill and --check work in 16 MiB slices.  Deliberately generous: the
        guard exists because running out is a frozen machine on unified-memory GPUs.
        """
        return 2 * (self.send + self.recv) * self.elsize

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["variants"] = list(self.variants)
        return d


def build_plan(ops: list[str], sizes: list[int], dtype: str, world_size: int) -> tuple[list[PlanRow], list[str]]:
    """Rows to run and notes about sizes dropped (too small to give each rank one aligned element)."""
    elsize = DTYPES[dtype][1]
    rows: list[tuple] = []
    notes: list[str] = []
    for op in ops:
        c = COLLECTIVES[op]
        if world_size < c.min_ranks:
            notes.append(f"{op} needs at least {c.min_ranks} ranks; skipped with {world_size}")
            continue
        seen: set[int] = set()
        for s in sizes:
            lay: Layout = c.layout(s, elsize, world_size)
            if lay.count <= 0:
                notes.append(f"{op} {s} B: less than one 16-byte-aligned block per rank with {world_size} ranks; skipped")
                continue
            nb = lay.nbytes(elsize)
            if nb in seen:
                continue
            seen.add(nb)
            rows.append((op, s, nb, lay, c))
    out = [
        PlanRow(i, len(rows), op, s, nb, lay.count, lay.send, lay.recv, dtype, elsize, c.redop, c.root, world_size, c.variants)
        for i, (op, s, nb, lay, c) in enumerate(rows)
    ]
    return out, notes
