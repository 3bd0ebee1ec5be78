"""Message sizes for a sweep: ``1K..1G`` ranges and ``8,1M,64M`` lists.

K/M/G are binary (1K = 1024 B), as in nccl-tests' ``-b 1K -e 1G``.  A range
steps by a factor (default x2, ``--step-factor``), like ``-f 2``.  Nothing
here imports torch: bad sizes are rejected before any rank starts.
"""

from __future__ import annotations

import re

from ..errors import UsageError
from ..units import human_bytes  # noqa: F401  (re-exported for the runner and gate)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ONE = re.compile(r"\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*\Z")

# One rank must never be asked to hold more than this per buffer: a typo such
# as 1T would otherwise reach the memory guard only after the ranks started.
MAX_SIZE = 1 << 40


def parse_size(text: str, what: str = "--sizes") -> int:
    """``4096``, ``1K``, ``64MiB``, ``1G`` -> bytes (binary units)."""
    m = _ONE.match(text)
    if not m:
        raise UsageError(f"{what}: {text.strip()!r} is not a size; write e.g. 8, 1K, 64M or 1G (K/M/G are binary)")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n <= 0:
        raise UsageError(f"{what}: size {text.strip()!r} must be at least 1 byte")
    if n > MAX_SIZE:
        raise UsageError(f"{what}: size {text.strip()!r} is larger than 1T; choose a smaller size")
    return n


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

