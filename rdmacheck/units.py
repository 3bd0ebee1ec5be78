"""Human-readable byte counts, shared by the gates and the bench (binary units, as nccl-tests)."""

from __future__ import annotations


def human_bytes(n: int | None) -> str:
    """1024 -> '1 KiB', 3 -> '3 B', None -> 'unlimited' (an rlimit); exact units where they divide."""
    if n is None:
        return "unlimited"
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


def seconds_type(flag: str, minimum: float = 0.0, maximum: float = 86400.0, allow_zero: bool = False):
    """An argparse ``type=`` for a duration: a finite number of seconds in range, else exit 2.

    ``float()`` accepts ``nan`` and ``inf``: a NaN timeout never fires and an
    infinite one overflows the first ``time.sleep``/``timedelta`` it reaches.
    """
    import math

    from .errors import UsageError

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

    from .errors import UsageError

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{flag} {text[:40]!r}: not a number") from None
        if not math.isfinite(v) or not 0 <= v <= 1:
            raise UsageError(f"{flag} must be between 0 and 1; got {text[:40]!r}")
        return v

    return parse
