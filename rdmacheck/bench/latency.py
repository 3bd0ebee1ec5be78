"""``bench.latency``: the small-size time gate, for decode.

Decode is latency-bound: a NET/Socket fallback can come close on large-message
bandwidth while small all_reduces take 10-20x longer (vLLM PR #42075).  The
bandwidth gate judges the plateau only, so this gate judges the other end:
per op, the time per call at the small sizes against a ceiling per size.

A latency table maps ``[op:]SIZE`` to the most time one call may take:

* ``--expect-latency 8K=100us,1M=350us`` (every op measured), or
  ``--expect-latency all_reduce:8K=100us`` (one op);
* the profile's ``[latency]`` table (``config/profile.py``); the reference
  profile's values are for all_reduce over one 100 Gb/s RoCE link and are
  *cited*, not measured here (docs/latency.md names the source).

Times take ``ns``, ``us`` (the default unit, as nccl-tests prints), ``ms`` or
``s``.  NaN, infinities, negative or zero values and anything unparseable are
refused (UsageError, exit 2): a ceiling that cannot be compared would pass
everything.

The time judged at a size is the worst (largest) of that size's variants
(in-place, out-of-place): each already is the max over ranks of the mean time
per call, so a slow rank or variant is never averaged away.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Result, Status
from ..config.latency import (  # noqa: F401  (the table's parsing lives with the profile that holds it)
    DEFAULT_LATENCY_MAX, DEFAULT_LATENCY_MIN, Limit, format_limits, parse_latency_table, parse_time_us)
from .gate import ONE_RANK
from .sizes import human_bytes

def _limit_for(limits: list[Limit], op: str, nbytes: int) -> float | None:
    """The op's own ceiling wins over an every-op one at the same size."""
    own = [us for o, b, us in limits if o == op and b == nbytes]
    if own:
        return own[0]
    anyop = [us for o, b, us in limits if o is None and b == nbytes]
    return anyop[0] if anyop else None


def latency_gate(records: list[dict[str, Any]], limits: list[Limit] | None, source: str,
                 world_size: int | None = None) -> Result:
    """``bench.latency``: every measured (op, size) that has a ceiling must take at most that long.

    One rank is never judged: its collective is a local call, so a pass would say nothing about a link."""
    limits = list(limits or [])
    expected = f"time per call at most the ceiling ({source}): {format_limits(limits)}" if limits else \
        "a latency table (--expect-latency SIZE=TIME or the profile's [latency])"
    if not limits:
        return Result("bench.latency", Status.SKIP, observed="no latency ceilings apply to this run", expected=expected,
                      remedy="pass --expect-latency 8K=100us,1M=350us (or a profile [latency] table) to judge small sizes")
    if world_size == 1:
        return Result("bench.latency", Status.SKIP, observed=ONE_RANK, expected=expected + " across >= 2 ranks",
                      remedy="run 2 or more ranks (--nproc 2, or torchrun across nodes) to judge small-size latency")
    worst: dict[tuple[str, int], float] = {}
    for r in records:
        try:
            op, nbytes, t = str(r["op"]), int(r["bytes"]), float(r["time_us"])
        except (KeyError, TypeError, ValueError):
            continue
        if t != t:
            continue
        worst[(op, nbytes)] = max(t, worst.get((op, nbytes), t))
    rows = []
    for (op, nbytes), t in sorted(worst.items()):
        lim = _limit_for(limits, op, nbytes)
        if lim is not None:
            rows.append({"op": op, "bytes": nbytes, "time_us": t, "limit_us": lim, "ok": t <= lim})
    details: dict[str, Any] = {"source": source, "limits": [list(x) for x in limits], "rows": rows}
    if not rows:
        sizes = sorted({b for _, b, _ in limits})
        return Result("bench.latency", Status.SKIP,
                      observed="no measured (op, size) has a ceiling", expected=expected,
                      remedy=f"include the table's sizes ({', '.join(human_bytes(b) for b in sizes)}) in --sizes, "
                             "e.g. --sizes 8K..1M", details=details)
    bad = [x for x in rows if not x["ok"]]
    shown = bad or sorted(rows, key=lambda x: x["time_us"] / x["limit_us"], reverse=True)[:3]
    obs = "; ".join(f"{x['op']} {human_bytes(x['bytes'])} {x['time_us']:.1f} us (ceiling {x['limit_us']:g})" for x in shown[:6])
    if bad:
        return Result("bench.latency", Status.FAIL,
                      observed=f"{len(bad)} of {len(rows)} small size(s) too slow: {obs}", expected=expected,
                      remedy="small collectives are slow (decode will be): check 'rdmacheck preflight' and the path "
                             "proof (NCCL may be on NET/Socket), NCCL_ALGO/NCCL_PROTO overrides and CPU affinity; "
                             "if the link is slower by design, raise --expect-latency", details=details)
    return Result("bench.latency", Status.PASS, observed=f"{len(rows)} small size(s) within their ceilings; slowest vs "
                  f"ceiling: {obs}", expected=expected, details=details)


def applicable_limits(explicit: list[Limit] | None, profile: list[Limit] | None, backend: str) -> tuple[list[Limit], str]:
    """(the ceilings this run is judged by, where they came from).

    ``--expect-latency`` always applies.  The profile's table describes NCCL over
    RoCE between nodes; a gloo run (CPU, sockets) is not that, so it is judged
    only with explicit ceilings.
    """
    if explicit:
        return list(explicit), "--expect-latency"
    if profile and backend == "nccl":
        return list(profile), "profile latency table"
    return [], "none (the profile's table applies to NCCL runs; gloo needs --expect-latency)" if profile else "none"
