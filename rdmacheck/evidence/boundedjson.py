"""JSON from files rdmacheck did not write itself (evidence read months later, from other tools), with bounds.

Python's json accepts ``1e400`` (as inf), ``NaN``, integers of thousands of digits and nesting until
the interpreter's recursion limit, each of which later turns into a traceback or a wrong number far
from the file that caused it.  :func:`loads` refuses them where they are read, naming the problem:
nesting deeper than ``MAX_DEPTH``, a number that is not finite, an integer beyond 64 bits.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64            # evidence nests ~8 levels (context.facts.ports[].gid); 64 is generous
MAX_INT = 1 << 64         # byte counters are 64-bit


class JsonBoundsError(ValueError):
    """JSON that parses but exceeds a bound; the message names which."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise JsonBoundsError(f"integer {text[:24]}... is out of range (more than 20 digits)")
    v = int(text)
    if abs(v) > MAX_INT:
        raise JsonBoundsError(f"integer {text} is out of range (beyond 64 bits)")
    return v


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise JsonBoundsError(f"number {text[:24]} is out of range (not a finite float)")
    return v


def _constant(text: str) -> float:
    raise JsonBoundsError(f"{text} is not a number JSON allows")


def _depth(doc: Any) -> int:
    """Nesting depth without recursion (a document of depth 10^5 must not blow the stack here either)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def loads(data: str | bytes) -> Any:
    """``json.loads`` with bounds: raises ValueError (JSONDecodeError or JsonBoundsError) naming the problem."""
    try:
        doc = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise JsonBoundsError(f"nested deeper than {MAX_DEPTH} levels") from None
    if _depth(doc) > MAX_DEPTH:
        raise JsonBoundsError(f"nested deeper than {MAX_DEPTH} levels")
    return doc
