"""One root for every host path.

Every fact reader takes a ``HostRoot`` and asks it for ``/sys/...``,
``/proc/...``, ``/dev/...`` or ``/etc/...``.  Live, the root is ``/``; with
``--root DIR`` it is an unpacked ``rdmacheck snapshot`` (or a captured sysfs
tree), so a captured host replays exactly like a live one.

Reads never raise: sysfs files vanish under us (a port going down, a hot
unplug), some are unreadable without privileges, some links dangle in real
captures.  Missing or unreadable content comes back as ``None`` and the check
that needed it decides what that means.

Live-only facts that a snapshot stores as files (the process environment,
pyverbs answers) live under ``DIR/rdmacheck/`` of a snapshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Where a snapshot keeps facts that are not files on a live host.
SNAPSHOT_META_DIR = "rdmacheck"


class HostRoot:
    def __init__(self, root: str | os.PathLike = "/") -> None:
        self.root = Path(root)
        self.live = self.root.resolve() == Path("/")

    def __repr__(self) -> str:
        return f"HostRoot({str(self.root)!r})"

    def path(self, host_path: str) -> Path:
        """Map an absolute host path (``/sys/class/net``) into this root."""
        return self.root / host_path.lstrip("/")

    def exists(self, host_path: str) -> bool:
        return os.path.lexists(self.path(host_path))

    def is_dir(self, host_path: str) -> bool:
        return self.path(host_path).is_dir()

    def read(self, host_path: str, limit: int = 1 << 20) -> str | None:
        """File content stripped of surrounding whitespace, or None.

        ``limit`` bounds what we read: some sysfs attributes (config space,
        firmware blobs) are large or binary and we only want text.
        """
        try:
            with open(self.path(host_path), "rb") as f:
                data = f.read(limit)
        except (OSError, ValueError):
            return None
        return data.decode("utf-8", errors="replace").strip()

    def read_bytes(self, host_path: str, limit: int = 1 << 20) -> bytes | None:
        try:
            with open(self.path(host_path), "rb") as f:
                return f.read(limit)
        except (OSError, ValueError):
            return None

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entries, [] when the folder is missing or unreadable."""
        try:
            return sorted(os.listdir(self.path(host_path)))
        except OSError:
            return []

    def readlink(self, host_path: str) -> str | None:
        try:
            return os.readlink(self.path(host_path))
        except OSError:
            return None

    def link_basename(self, host_path: str) -> str | None:
        """Last component of a symlink's target (``device/driver`` -> ``mlx5_core``)."""
        target = self.readlink(host_path)
        if not target:
            return None
        return target.rstrip("/").rsplit("/", 1)[-1] or None

    def meta(self, name: str) -> Any:
        """JSON a snapshot stored for a live-only fact, None on a live host or when absent."""
        if self.live:
            return None
        raw = self.read(f"/{SNAPSHOT_META_DIR}/{name}")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def environ(self) -> dict[str, str]:
        """The process environment: live, or as the snapshot recorded it."""
        if self.live:
            return dict(os.environ)
        env = self.meta("env.json")
        if isinstance(env, dict):
            return {str(k): str(v) for k, v in env.items()}
        return {}
