"""Which kernel modules are loaded, through the root (so a snapshot answers as the host did).

A loadable module is listed in /proc/modules; a built-in one is not, but has its /sys/module/NAME folder.
"""

from __future__ import annotations

from typing import Iterable

from rdmacheck.preflight.root import HostRoot


def loaded_modules(root: HostRoot, names: Iterable[str]) -> list[str] | None:
    """Of ``names``, those loaded or built in, in the order given; None when neither /proc/modules nor
    /sys/module could be read (nothing is known either way)."""
    text = root.read("/proc/modules")
    listed = {line.split(" ", 1)[0] for line in (text or "").splitlines()}
    found = [m for m in names if m in listed or root.is_dir(f"/sys/module/{m}")]
    if text is None and not found and not root.is_dir("/sys/module"):
        return None
    return found
