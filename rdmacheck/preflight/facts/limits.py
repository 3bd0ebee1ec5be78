"""Process resource limits (/proc/self/limits) and the /dev/shm size.

/proc/self/limits is read through the root, so a snapshot replays the limits
of the process that took it.  Values are bytes or None for "unlimited".
The /dev/shm size comes from statvfs on a live host and from the snapshot's
``rdmacheck/shm.json`` when replaying.
"""

from __future__ import annotations

import dataclasses
import os
import re

from rdmacheck.preflight.root import HostRoot

UNLIMITED = None


@dataclasses.dataclass
class Limit:
    name: str
    soft: int | None     # None = unlimited
    hard: int | None
    unit: str = ""
    raw: str = ""


def parse_limits(text: str) -> dict[str, Limit]:
    """Parse /proc/<pid>/limits.  Lines that don't fit the table are ignored."""
    out: dict[str, Limit] = {}
    for line in text.splitlines()[1:]:
        m = re.match(r"^(.*?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
        if not m:
            continue
        name, soft, hard, unit = m.groups()

        def val(v: str) -> int | None | str:
            if v == "unlimited":
                return UNLIMITED
            return int(v) if v.isdecimal() else "?"

        s, h = val(soft), val(hard)
        if s == "?" or h == "?":
            continue
        out[name.strip()] = Limit(name.strip(), s, h, unit, line.strip())  # type: ignore[arg-type]
    return out


def read_limits(root: HostRoot) -> dict[str, Limit] | None:
    text = root.read("/proc/self/limits")
    if text is None:
        return None
    return parse_limits(text)


def shm_size(root: HostRoot) -> int | None:
    """Total bytes of the /dev/shm filesystem, None when unknown."""
    if root.live:
        try:
            st = os.statvfs("/dev/shm")
        except OSError:
            return None
        return st.f_frsize * st.f_blocks
    meta = root.meta("shm.json")
    if isinstance(meta, dict) and isinstance(meta.get("size"), int):
        return meta["size"]
    return None
