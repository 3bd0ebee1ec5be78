"""Message sizes for a sweep: ``1K..1G`` ranges and ``8,1M,64M`` lists.

K/M/G are binary (1K = 1024 B), as in nccl-tests' ``-b 1K -e 1G``.  A range
steps by a factor (default x2, ``--step-factor``), like ``-f 2``.  Nothing
here imports torch: bad sizes are rejected before any rank starts.
"""

from __future__ import annotations

import re

from rdmacheck.util.errors import UsageError
from rdmacheck.util.units import MAX_SIZE, human_bytes, parse_size  # noqa: F401  (re-exported for the runner, gate and CLI)

def parse_sizes(text: str, step_factor: int = 2) -> list[int]:
    """Parse ``--sizes``: ``MIN..MAX`` (stepping x``step_factor``) or a comma list.

    The result is sorted and de-duplicated.  ``1K..0``, ``abc`` and
    ``1G..1K`` raise UsageError (exit 2).
    """
    if not isinstance(step_factor, int) or step_factor < 2:
        raise UsageError(f"--step-factor: {step_factor!r} must be a whole number >= 2 (2 doubles each size, like nccl-tests -f 2)")
    s = (text or "").strip()
    if not s:
        raise UsageError("--sizes: empty; write e.g. 1K..1G or 8,1M,64M")
    if ".." in s:
        lo_s, _, hi_s = s.partition("..")
        if ".." in hi_s or "," in s:
            raise UsageError(f"--sizes: {s!r} mixes a range and a list; write either MIN..MAX or A,B,C")
        lo, hi = parse_size(lo_s), parse_size(hi_s)
        if hi < lo:
            raise UsageError(f"--sizes: range {s!r} ends below its start; write MIN..MAX, e.g. {hi_s.strip()}..{lo_s.strip()}")
        out = []
        n = lo
        while n <= hi:
            out.append(n)
            n *= step_factor
        return out
    parts = [p for p in s.split(",")]
    if any(not p.strip() for p in parts):
        raise UsageError(f"--sizes: {s!r} has an empty item; write e.g. 8,1M,64M")
    return sorted({parse_size(p) for p in parts})

