"""Byte counts and rates as people read them: the one home for every formatter rdmacheck prints.

Binary units (1 KiB = 1024 B) for message sizes and limits, as nccl-tests and the kernel use them;
decimal units for bytes counted on a wire and for bandwidth (GB/s = 1e9 B/s, nccl-tests' algbw and
busbw).  Each function is for one place a number is read:

* :func:`human_bytes`: sentences and gate results ("64 MiB", "4.0 KiB", "unlimited");
* :func:`short_bytes`: compact size labels in tables and ranges ("64M", "1G"; a size that is not a
  whole unit stays in bytes, as nccl-tests' size column does);
* :func:`tick_bytes`: plot axis ticks ("0.5K", "64M");
* :func:`decimal_bytes`: bytes counted by NIC counters ("5.85 GB");
* :func:`gbs`: a bandwidth figure in GB/s with two decimals.
"""

from __future__ import annotations

import math
import re
from typing import Any

_BINARY = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def human_bytes(n: int | None) -> str:
    """1024 -> '1 KiB', 3 -> '3 B', None -> 'unlimited' (an rlimit); exact units where they divide."""
    if n is None:
        return "unlimited"
    for unit, mult in _BINARY:
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    for unit, mult in _BINARY:
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


def short_bytes(n: int) -> str:
    """65536 -> '64K', 1 << 30 -> '1G', 1000 -> '1000' (whole binary units only)."""
    for unit, mult in _BINARY:
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit[0]}"
    return f"{n}"


def tick_bytes(x: float, _pos: Any = None) -> str:
    """An axis tick: 512 -> '512', 1536 -> '1.5K' (matplotlib FuncFormatter signature)."""
    n = int(round(x))
    for unit, mult in _BINARY:
        if n >= mult:
            return f"{n / mult:g}{unit[0]}"
    return f"{n}"


def decimal_bytes(n: Any) -> str:
    """Bytes counted on a wire, decimal: 5848706194 -> '5.85 GB'; '' for what is not a number."""
    try:
        v = float(n)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(v):
        return ""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:.0f} B"


def gbs(v: float | None) -> str:
    """A bandwidth in GB/s, two decimals; '' for none."""
    return "" if v is None else f"{v:.2f}"


def seconds_type(flag: str, minimum: float = 0.0, maximum: float = 86400.0, allow_zero: bool = False):
    """An argparse ``type=`` for a duration: a finite number of seconds in range, else exit 2.

    ``float()`` accepts ``nan`` and ``inf``: a NaN timeout never fires and an
    infinite one overflows the first ``time.sleep``/``timedelta`` it reaches.
    """
    import math

    from rdmacheck.util.errors import UsageError

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{flag} {text[:40]!r}: not a number of seconds") from None
        if not math.isfinite(v) or v > maximum or v < minimum or (v == minimum and not allow_zero):
            low = f">= {minimum:g}" if allow_zero else f"> {minimum:g}"
            raise UsageError(f"{flag} must be {low} seconds, finite and at most {maximum:g}; got {text[:40]!r}")
        return v

    return parse


def fraction_type(flag: str):
    """An argparse ``type=`` for a factor in [0, 1] (NaN and inf refused)."""
    import math

    from rdmacheck.util.errors import UsageError

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{flag} {text[:40]!r}: not a number") from None
        if not math.isfinite(v) or not 0 <= v <= 1:
            raise UsageError(f"{flag} must be between 0 and 1; got {text[:40]!r}")
        return v

    return parse


# ---------------------------------------------------------------- byte sizes as users write them

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ONE = re.compile(r"\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*\Z")

# One rank must never be asked to hold more than this per buffer: a typo such
# as 1T would otherwise reach the memory guard only after the ranks started.
MAX_SIZE = 1 << 40


def parse_size(text: str, what: str = "--sizes") -> int:
    """``4096``, ``1K``, ``64MiB``, ``1G`` -> bytes (binary units)."""
    from rdmacheck.util.errors import UsageError

    m = _ONE.match(text)
    if not m:
        raise UsageError(f"{what}: {text.strip()!r} is not a size; write e.g. 8, 1K, 64M or 1G (K/M/G are binary)")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n <= 0:
        raise UsageError(f"{what}: size {text.strip()!r} must be at least 1 byte")
    if n > MAX_SIZE:
        raise UsageError(f"{what}: size {text.strip()!r} is larger than 1T; choose a smaller size")
    return n
