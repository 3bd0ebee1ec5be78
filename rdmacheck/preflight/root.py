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
import tarfile
import tempfile
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
            if self.recorded.get(hp) not in ("read", "list", "tail"):
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

    def read_tail(self, host_path: str, limit: int = READ_LIMIT) -> str | None:
        """The end of a regular file (a log), at most ``limit`` bytes, from the first whole line; None if unreadable.

        Recorded as "tail": ``rdmacheck snapshot`` copies the same end (``snapshot.tail_start``), so a replay
        reads exactly what the live read saw."""
        self._note(host_path, "tail")
        p = self._fs(host_path)
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if self.live else getattr(os, "O_NOFOLLOW", 0))
        try:
            fd = os.open(p, flags)
        except (OSError, ValueError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.skipped.add(host_path)
                return None
            start = max(0, st.st_size - limit)
            os.lseek(fd, start, os.SEEK_SET)
            chunks, left = [], limit
            while left > 0:
                b = os.read(fd, min(left, 1 << 16))
                if not b:
                    break
                chunks.append(b)
                left -= len(b)
        except OSError:
            return None
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if start > 0:  # the window began mid-line: keep whole lines only
            cut = data.find(b"\n")
            data = data[cut + 1:] if cut >= 0 else b""
        return data.decode("utf-8", errors="replace")

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


# ---------------------------------------------------------------- opening --root

def check_member(m: tarfile.TarInfo) -> str | None:
    """Why ``m`` must not be unpacked (None when it is safe): a snapshot holds files, folders, inner links."""
    parts = m.name.split("/")
    if m.name.startswith("/") or (len(m.name) > 1 and m.name[1] == ":"):
        return "has an absolute path"
    if ".." in parts:
        return "has a '..' path component"
    if m.isdir() or m.isreg():
        return None
    if m.issym():
        if m.linkname.startswith("/"):
            return f"is an absolute link (-> {m.linkname})"
        target = os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname))
        if target == ".." or target.startswith("../") or target.startswith("/"):
            return f"is a link out of the snapshot (-> {m.linkname})"
        return None
    kind = "a hard link" if m.islnk() else "a device" if (m.ischr() or m.isblk()) else \
        "a FIFO" if m.isfifo() else "not a file, folder or link"
    return f"is {kind}"


# A snapshot is a few MB; a capture of a large host's sysfs some hundred MB.  Past these a tarball is not a
# host tree (a 9 MB file once declared 1.8 GB of members): refused before anything is written.
MAX_UNPACK_BYTES = 1 << 30
MAX_UNPACK_MEMBERS = 500_000
# the top folders of a host tree (a snapshot's or a capture's): a tarball holding none of them at its top but
# one folder that does is a capture packed with its folder (`tar czf node1.tar.gz node1/`) and is entered
HOST_TOPS = frozenset({"sys", "proc", "dev", "etc", "run", "usr", "var", SNAPSHOT_META_DIR})


def unpack(tarball: str | Path, dest: str | Path) -> Path:
    """Unpack a snapshot safely: refuse absolute paths, '..', devices, FIFOs, links out of ``dest`` and more
    than MAX_UNPACK_BYTES / MAX_UNPACK_MEMBERS.  Returns the host tree's folder: ``dest``, or its one top
    folder when the tree was packed inside one."""
    from rdmacheck.util.errors import UsageError

    d = Path(dest)
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members, total = [], 0
            for m in tar:
                why = check_member(m)
                if why:
                    raise UsageError(f"snapshot {tarball}: member {m.name!r} {why}; refusing to unpack it "
                                     "(`rdmacheck snapshot` never writes one): take the snapshot again")
                members.append(m)
                total += max(0, m.size)
                if len(members) > MAX_UNPACK_MEMBERS or total > MAX_UNPACK_BYTES:
                    raise UsageError(f"snapshot {tarball}: more than {MAX_UNPACK_MEMBERS} members or "
                                     f"{MAX_UNPACK_BYTES >> 20} MiB (at member {m.name!r}): not a host tree; "
                                     "pass a file written by `rdmacheck snapshot` or a sysfs capture")
            try:
                tar.extractall(d, members=members, filter="data")
            except TypeError:  # Python < 3.11.4 has no extraction filters; check_member did the filtering
                tar.extractall(d, members=members)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UsageError(f"cannot unpack snapshot {tarball}: {e}; pass a file written by `rdmacheck snapshot`") from None
    return host_tree(d, str(tarball), [m.name for m in members])


def host_tree(d: Path, what: str, names: list[str]) -> Path:
    """``d`` when its top holds a host tree's folders, else its single top folder when that one does; else
    a UsageError naming a member (a tarball of something else reads as an empty host otherwise)."""
    from rdmacheck.util.errors import UsageError

    tops = {n.lstrip("./").split("/", 1)[0] for n in names if n.lstrip("./")}
    if not tops or tops & HOST_TOPS:
        return d
    if len(tops) == 1:
        inner = d / next(iter(tops))
        if inner.is_dir() and any((inner / t).exists() for t in HOST_TOPS):
            return inner
    seen = max(sorted(names), key=lambda n: n.count("/"))   # a member inside, not just the folder
    raise UsageError(f"{what}: no host tree inside (its top holds {', '.join(sorted(tops)[:4])}; e.g. member "
                     f"{seen!r}): pass a file written by `rdmacheck snapshot`, or a capture whose top, or whose "
                     "one top folder, holds sys/ and proc/")


def open_root(arg: str) -> HostRoot:
    """``--root``: a folder, or a snapshot ``.tar.gz`` unpacked safely into a temporary folder."""
    import atexit
    import shutil

    from rdmacheck.util.errors import UsageError

    p = Path(arg)
    if p.is_dir():
        return HostRoot(p)
    if p.is_file():
        tmp = tempfile.mkdtemp(prefix="rdmacheck-root-")
        atexit.register(shutil.rmtree, tmp, True)
        return HostRoot(unpack(p, tmp))
    raise UsageError(f"--root {arg}: not a folder nor a snapshot file; pass a folder or a file written by "
                     "`rdmacheck snapshot` (FILE.tar.gz)")
