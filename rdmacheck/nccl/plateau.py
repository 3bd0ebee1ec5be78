"""The plateau bandwidth of a sweep: the one number the bench gate judges and the report headlines.

Only the plateau counts: nccl-tests' "Avg bus bandwidth" averages 1 KiB
(latency-bound) with 1 GiB (bandwidth-bound) and says little about either.
Per op, the plateau is every measurement at a size >= ``min_bytes`` (the
profile's ``plateau_min_bytes``, 64 MiB by default); its figure is the median
busbw of those measurements, both variants (in-place, out-of-place) counting as
samples because they move the same bytes.  The median shrugs off one noisy size.

``bench.busbw`` (rdmacheck/bench/gate.py) and the report's summaries and plots
(rdmacheck/report/bench.py) both call :func:`plateaus`, so the gate's number and
the page's number cannot drift apart.  Pure: no pandas, no torch.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Iterable, Mapping

DEFAULT_MIN_BYTES = 64 << 20   # the profile default (rdmacheck/config/profile.py plateau_min_bytes)


@dataclasses.dataclass(frozen=True)
class Plateau:
    op: str
    median: float          # GB/s busbw: the figure
    low: float             # the slowest plateau measurement ...
    low_bytes: int         # ... and its size
    high: float
    high_bytes: int
    sizes: tuple[int, ...]  # every plateau size, ascending
    samples: int

    @property
    def first_bytes(self) -> int:
        return self.sizes[0]

    @property
    def last_bytes(self) -> int:
        return self.sizes[-1]


def _busbw(r: Mapping[str, Any]) -> float | None:
    v = r.get("busbw")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _bytes(r: Mapping[str, Any]) -> int | None:
    v = r.get("bytes")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return int(v)


def plateaus(records: Iterable[Mapping[str, Any]], min_bytes: int) -> dict[str, Plateau]:
    """op -> its Plateau, in the order ops first appear; an op with no size >= ``min_bytes`` is absent."""
    per_op: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        b, bw = _bytes(r), _busbw(r)
        if b is None or bw is None or b < min_bytes or b <= 0:
            continue
        per_op.setdefault(str(r.get("op")), []).append((b, bw))
    out: dict[str, Plateau] = {}
    for op, samples in per_op.items():
        lo = min(samples, key=lambda s: s[1])
        hi = max(samples, key=lambda s: s[1])
        out[op] = Plateau(op=op, median=statistics.median(v for _, v in samples), low=lo[1], low_bytes=lo[0],
                          high=hi[1], high_bytes=hi[0], sizes=tuple(sorted({b for b, _ in samples})),
                          samples=len(samples))
    return out
