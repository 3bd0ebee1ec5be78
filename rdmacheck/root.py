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
import stat
from pathlib import Path
from typing import Any

# Where a snapshot keeps facts that are not files on a live host.
SNAPSHOT_META_DIR = "rdmacheck"


# Reads are capped (a replayed root may hold a huge file where sysfs has a 4-byte attribute).
READ_LIMIT = 1 << 20


class HostRoot:
    """Every host path preflight reads, live (``/``) or under a replay folder.

    ``record=True`` keeps every host path asked for (``self.recorded``: path -> how it was
    used: read, list, link, stat), so ``rdmacheck snapshot`` captures exactly what the
    readers read.  Replaying, paths are resolved inside the root only: a symlink's absolute
    target is reinterpreted under the root and ``..`` stops at the root, so nothing a
    snapshot holds can make a read reach the live host.  Only regular files are read
    (a FIFO or device in a root would block or stream forever): others are skipped and
    named in ``self.skipped``.
    """

    def __init__(self, root: str | os.PathLike = "/", record: bool = False) -> None:
        self.root = Path(root)
        self.live = self.root.resolve() == Path("/")
        self._top = str(self.root.resolve()) if not self.live else "/"
        # replay: component path -> link target text (real or text link) or None; see _resolve
        self._links: dict[str, str | None] = {}
        self.recorded: dict[str, str] | None = {} if record else None
        self.skipped: set[str] = set()

    def __repr__(self) -> str:
        return f"HostRoot({str(self.root)!r})"

    def _note(self, host_path: str, how: str) -> None:
        if self.recorded is not None:
            hp = host_path if host_path.startswith("/") else "/" + host_path
            # a read implies the stat; keep the strongest use
            if self.recorded.get(hp) not in ("read", "list"):
                self.recorded[hp] = how

    def path(self, host_path: str) -> Path:
        """Map an absolute host path (``/sys/class/net``) into this root."""
        return Path(self._fs(host_path))

    def _fs(self, host_path: str) -> str:
        # Live, the host path is the path: plain strings, no pathlib objects, because a
        # snapshot reads thousands of sysfs files (slow enough to matter in an emulated guest).
        if self.live:
            return host_path if host_path.startswith("/") else "/" + host_path
        return self._resolve(host_path)

    # Captured trees sometimes store a sysfs symlink as a small regular file
    # holding the link's target text ("../../devices/pci0000:00/.../net/eth0"):
    # archive formats such as ttar and copies through tools without symlink
    # support do that.  When a path has to go *through* such a file we follow
    # it like the link it was, so those captures replay like live sysfs.
    @staticmethod
    def _text_link(p: str | Path) -> str | None:
        try:
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 512:
                return None
            with open(p, "rb") as f:
                t = f.read(513).decode("utf-8", errors="strict").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if t.startswith(("../", "./")) and not any(c.isspace() for c in t):
            return t
        return None

    def _link_at(self, comp: str) -> str | None:
        """Target text of the component ``comp`` (a path under the root) when it is a link."""
        if comp not in self._links:
            try:
                t: str | None = os.readlink(comp)
            except OSError:
                t = self._text_link(comp)
            self._links[comp] = t
        return self._links[comp]

    def _resolve(self, host_path: str, follow_last: bool = True) -> str:
        """The path under the root that ``host_path`` names, every link resolved inside the root."""
        parts = [x for x in host_path.split("/") if x]
        cur: list[str] = []
        i = hops = 0
        while i < len(parts):
            name = parts[i]
            i += 1
            if name == ".":
                continue
            if name == "..":  # clamped at the root, as the kernel does at /
                if cur:
                    cur.pop()
                continue
            cur.append(name)
            if (i < len(parts) or follow_last) and hops < 40:
                t = self._link_at(os.path.join(self._top, *cur))
                if t:
                    hops += 1
                    # absolute: reinterpreted under the root; relative: from the link's folder
                    base = [] if t.startswith("/") else cur[:-1]
                    parts = base + [x for x in t.split("/") if x] + parts[i:]
                    cur, i = [], 0
        return os.path.join(self._top, *cur)

    def exists(self, host_path: str) -> bool:
        self._note(host_path, "stat")
        if self.live:
            return os.path.lexists(self._fs(host_path))
        return os.path.lexists(self._resolve(host_path, follow_last=False))

    def is_dir(self, host_path: str) -> bool:
        self._note(host_path, "stat")
        return os.path.isdir(self._fs(host_path))

    def _open_regular(self, host_path: str, limit: int) -> bytes | None:
        self._note(host_path, "read")
        p = self._fs(host_path)
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if self.live else getattr(os, "O_NOFOLLOW", 0))
        try:
            fd = os.open(p, flags)
        except (OSError, ValueError):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.skipped.add(host_path)
                return None
            chunks, left = [], limit
            while left > 0:
                b = os.read(fd, min(left, 1 << 16))
                if not b:
                    break
                chunks.append(b)
                left -= len(b)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def read(self, host_path: str, limit: int = READ_LIMIT) -> str | None:
        """File content stripped of surrounding whitespace, or None.

        ``limit`` bounds what we read: some sysfs attributes (config space,
        firmware blobs) are large or binary and we only want text.
        """
        data = self._open_regular(host_path, limit)
        return None if data is None else data.decode("utf-8", errors="replace").strip()

    def read_bytes(self, host_path: str, limit: int = READ_LIMIT) -> bytes | None:
        return self._open_regular(host_path, limit)

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entries, [] when the folder is missing or unreadable."""
        self._note(host_path, "list")
        try:
            return sorted(os.listdir(self._fs(host_path)))
        except OSError:
            return []

    def readlink(self, host_path: str) -> str | None:
        self._note(host_path, "link")
        p = self._fs(host_path) if self.live else self._resolve(host_path, follow_last=False)
        try:
            return os.readlink(p)
        except OSError:
            return None if self.live else self._text_link(p)

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
        raw = self.read(f"/{SNAPSHOT_META_DIR}/{name}", limit=64 << 20)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def recorded_dotenv(self) -> dict[str, str] | None:
        """The .env values a snapshot was taken with (rdmacheck/dotenv.json), None live or when not recorded:
        a replay without --env is judged with them, one with --env with the .env given now."""
        meta = self.meta("dotenv.json")
        env = meta.get("env") if isinstance(meta, dict) else None
        return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else None

    def environ(self) -> dict[str, str]:
        """The process environment: live, or as the snapshot recorded it."""
        if self.live:
            return dict(os.environ)
        env = self.meta("env.json")
        if isinstance(env, dict):
            return {str(k): str(v) for k, v in env.items()}
        return {}
