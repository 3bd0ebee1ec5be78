"""Latency tables as users write them: ``--expect-latency 8K=100us,all_reduce:1M=0.35ms`` and the
profile's ``[latency]`` table -> ``(op or None, bytes, ceiling in us)`` limits (rdmacheck/bench/latency.py
judges them).  It lives with the configuration because the profile parses its table when it is loaded:
a ceiling that cannot be compared is refused there (exit 2), before anything runs.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from rdmacheck.nccl.busbw import FACTORS as _OPS  # the collectives rdmacheck measures, one name each
from rdmacheck.util.errors import UsageError
from rdmacheck.util.units import human_bytes, parse_size

COLLECTIVES = tuple(_OPS)

# The small sizes the latency view covers (the 8 KiB..1 MiB).
DEFAULT_LATENCY_MIN = 8 << 10
DEFAULT_LATENCY_MAX = 1 << 20

_TIME = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(ns|us|µs|ms|s)?\s*\Z", re.IGNORECASE)
_TO_US = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}

# (op or None for every op, bytes, ceiling in microseconds)
Limit = tuple[str | None, int, float]


def parse_time_us(text: Any, what: str) -> float:
    """``100us``, ``0.1ms``, ``100`` (microseconds) -> microseconds; refuses NaN/inf/<= 0/garbage."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: {text!r} is not a time; write e.g. 100us or 0.1ms")
    if isinstance(text, (int, float)):
        v = float(text)
    else:
        m = _TIME.match(str(text))
        if not m:
            raise UsageError(f"{what}: {str(text).strip()!r} is not a time; write e.g. 100us, 0.1ms or 100 (microseconds)")
        v = float(m.group(1)) * _TO_US[(m.group(2) or "us").lower()]
    if math.isnan(v) or math.isinf(v):
        raise UsageError(f"{what}: {text!r} is not a finite time; write e.g. 100us")
    if v <= 0:
        raise UsageError(f"{what}: {text!r} must be a positive time; write e.g. 100us")
    return v


def _key(key: str, what: str) -> tuple[str | None, int]:
    op, sep, size = str(key).strip().rpartition(":")
    if sep and op not in COLLECTIVES:
        raise UsageError(f"{what}: unknown op {op!r} in {key!r}; use one of {', '.join(COLLECTIVES)} (or leave the op out)")
    return (op or None), parse_size(size, what)


def parse_latency_table(spec: str | dict[str, Any] | Iterable[Any], what: str = "--expect-latency") -> list[Limit]:
    """``"8K=100us,all_reduce:1M=0.35ms"`` or a TOML table ``{"8K": "100us"}`` -> limits, sorted.

    An already-parsed list of ``(op, bytes, us)`` (the profile's, or BenchOptions'
    JSON round trip) is validated and returned as tuples.
    """
    items: list[tuple[Any, Any]] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise UsageError(f"{what}: {part!r} is not SIZE=TIME; write e.g. 8K=100us,1M=350us")
            k, _, v = part.partition("=")
            items.append((k, v))
    elif isinstance(spec, dict):
        items = list(spec.items())
    else:
        out: list[Limit] = []
        for row in spec:
            try:
                op, nbytes, us = row
            except (TypeError, ValueError):
                raise UsageError(f"{what}: {row!r} is not (op, bytes, time)") from None
            if op is not None and op not in COLLECTIVES:
                raise UsageError(f"{what}: unknown op {op!r}")
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
                raise UsageError(f"{what}: {nbytes!r} is not a size in bytes")
            out.append((op, nbytes, parse_time_us(us, what)))
        return sorted(out, key=lambda x: (x[0] or "", x[1]))
    if not items:
        raise UsageError(f"{what}: empty latency table; write e.g. 8K=100us,1M=350us")
    seen: dict[tuple[str | None, int], float] = {}
    for k, v in items:
        op, nbytes = _key(k, what)
        if (op, nbytes) in seen:
            raise UsageError(f"{what}: {k!r} is given twice")
        seen[(op, nbytes)] = parse_time_us(v, f"{what} {str(k).strip()}")
    return sorted(((op, b, us) for (op, b), us in seen.items()), key=lambda x: (x[0] or "", x[1]))


def format_limits(limits: Iterable[Limit]) -> str:
    return ", ".join(f"{op + ':' if op else ''}{human_bytes(b)} <= {us:g} us" for op, b, us in limits)
