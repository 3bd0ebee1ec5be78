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
