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
        # component path -> text-link target or None (replay only); see _text_link
        self._links: dict[Path, str | None] = {}

    def __repr__(self) -> str:
        return f"HostRoot({str(self.root)!r})"

    def path(self, host_path: str) -> Path:
        """Map an absolute host path (``/sys/class/net``) into this root."""
        return Path(self._fs(host_path))

    def _fs(self, host_path: str) -> str:
        # Live, the host path is the path: plain strings, no pathlib objects, because a
        # snapshot reads thousands of sysfs files (slow enough to matter in an emulated guest).
        if self.live:
            return host_path if host_path.startswith("/") else "/" + host_path
        return str(self._resolve(host_path))

    # Captured trees sometimes store a sysfs symlink as a small regular file
    # holding the link's target text ("../../devices/pci0000:00/.../net/eth0"):
    # archive formats such as ttar and copies through tools without symlink
    # support do that.  When a path has to go *through* such a file we follow
    # it like the link it was, so those captures replay like live sysfs.
    @staticmethod
    def _text_link(p: Path) -> str | None:
        try:
            if p.is_symlink() or not p.is_file() or p.stat().st_size > 512:
                return None
            t = p.read_text(encoding="utf-8", errors="strict").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if t.startswith(("../", "./")) and not any(c.isspace() for c in t):
            return t
        return None

    def _resolve(self, host_path: str, follow_last: bool = True) -> Path:
        parts = [x for x in host_path.split("/") if x]
        cur: list[str] = []
        i = hops = 0
        while i < len(parts):
            cur.append(parts[i])
            i += 1
            if (i < len(parts) or follow_last) and hops < 40:
                comp = self.root.joinpath(*cur)
                if comp not in self._links:
                    self._links[comp] = self._text_link(comp)
                t = self._links[comp]
                if t:
                    hops += 1
                    joined = os.path.normpath(os.path.join("/" + "/".join(cur[:-1]), t))
                    cur = [x for x in joined.split("/") if x]
        return self.root.joinpath(*cur) if cur else self.root

    def exists(self, host_path: str) -> bool:
        if self.live:
            return os.path.lexists(self._fs(host_path))
        return os.path.lexists(self._resolve(host_path, follow_last=False))

    def is_dir(self, host_path: str) -> bool:
        return os.path.isdir(self._fs(host_path))

    def read(self, host_path: str, limit: int = 1 << 20) -> str | None:
        """File content stripped of surrounding whitespace, or None.

        ``limit`` bounds what we read: some sysfs attributes (config space,
        firmware blobs) are large or binary and we only want text.
        """
        try:
            with open(self._fs(host_path), "rb") as f:
                data = f.read(limit)
        except (OSError, ValueError):
            return None
        return data.decode("utf-8", errors="replace").strip()

    def read_bytes(self, host_path: str, limit: int = 1 << 20) -> bytes | None:
        try:
            with open(self._fs(host_path), "rb") as f:
                return f.read(limit)
        except (OSError, ValueError):
            return None

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entries, [] when the folder is missing or unreadable."""
        try:
            return sorted(os.listdir(self._fs(host_path)))
        except OSError:
            return []

    def readlink(self, host_path: str) -> str | None:
        p = self._fs(host_path) if self.live else str(self._resolve(host_path, follow_last=False))
        try:
            return os.readlink(p)
        except OSError:
            return None if self.live else self._text_link(Path(p))

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
