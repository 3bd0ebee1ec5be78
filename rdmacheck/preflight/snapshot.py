"""`rdmacheck snapshot`: capture what preflight reads, to replay with ``--root``.

The capture list is not written down anywhere: the snapshot runs preflight's
phase 1 (``gather``) on the live host through a recording ``HostRoot`` and
copies exactly the paths the readers asked for, so a new reader can never be
missing from a snapshot.  The probe answers (NVML, pyverbs, dcb, addresses,
DNS, route, TCP, ping, bind) go to ``rdmacheck/probes.json``; the environment
and host name to ``env.json`` and ``host.json``.  ``preflight --root`` then
reads the files through the same readers and answers the probes from the
record, so a replay gives the verdicts the live host gave.

Capture rules, and why:

* The tarball mirrors host paths (``sys/class/infiniband/...``,
  ``proc/self/limits``) so ``HostRoot(DIR)`` reads it as it reads ``/``.
* Symlinks on the way to a path are kept as links (sysfs class entries point
  into ``/sys/devices``), so relative links resolve inside the snapshot as on
  the host; an absolute link is written relative to its folder, so the
  snapshot never holds a link out of itself.
* Files are read with the readers' own size cap; only regular files are
  copied.  A folder that was listed gets its entries: links as links, folders
  as folders, other entries (device nodes under /dev/infiniband, files no
  reader opened) as empty files, so a replayed listing matches.
* The deadline (``--timeout``) counts the copy only; phase 1 has its own
  per-probe time bounds.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import tarfile
import tempfile
import time
from pathlib import Path

from rdmacheck.util.atomic import atomic_write
from rdmacheck.config import ENV_KEYS
from rdmacheck.preflight.root import READ_LIMIT, SNAPSHOT_META_DIR, HostRoot

# Environment prefixes worth keeping; everything else (tokens, paths) stays out.
ENV_PREFIXES = ("NCCL_", "GLOO_", "UCX_", "RAY_", "CUDA_", "NVIDIA_", "MASTER_", "VLLM_", "TORCH_")


class _Copy:
    """Copies host paths from ``src`` (``/`` live) into ``dst`` with the links on their way, until a deadline.

    Paths are host paths (``/sys/...``); ``src`` maps them to the folder they are read from.
    """

    def __init__(self, src: str, dst: Path, deadline: float):
        self.src, self.dst, self.deadline = src.rstrip("/") or "", dst, deadline
        self.placed: set[str] = set()
        self.files = 0
        self.complete = True
        self.uncopied = 0    # paths the deadline left out

    def _out(self, host_path: str) -> str:
        return os.path.join(str(self.dst), host_path.lstrip("/"))

    def _in(self, host_path: str) -> str:
        return self.src + host_path

    def _link(self, host_path: str, target: str) -> None:
        out = self._out(host_path)
        if os.path.lexists(out):
            return
        if target.startswith("/"):  # keep the snapshot closed: absolute -> relative to the link's folder
            target = os.path.relpath(target, os.path.dirname(host_path))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        os.symlink(target, out)

    def _walk(self, host_path: str, follow_last: bool) -> str | None:
        """Recreate the links on the way to ``host_path``; the real path it names on the host."""
        parts = [x for x in host_path.split("/") if x]
        cur: list[str] = []
        i = hops = 0
        while i < len(parts):
            cur.append(parts[i])
            i += 1
            p = "/" + "/".join(cur)
            if (i < len(parts) or follow_last) and os.path.islink(self._in(p)) and hops < 40:
                hops += 1
                try:
                    t = os.readlink(self._in(p))
                except OSError:
                    return None
                self._link(p, t)
                base = [] if t.startswith("/") else cur[:-1]
                joined = os.path.normpath("/" + "/".join(base + [x for x in t.split("/") if x]))
                parts = [x for x in joined.split("/") if x] + parts[i:]
                cur, i = [], 0
        return "/" + "/".join(cur)

    def _file(self, real: str, limit: int = READ_LIMIT, tail: bool = False) -> None:
        out = self._out(real)
        if os.path.lexists(out) and os.path.getsize(out) > 0:
            return
        try:
            fd = os.open(self._in(real), os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if self.src else 0))
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            if tail:  # a log read by HostRoot.read_tail: its end, from the first whole line, as the reader saw it
                start = max(0, st.st_size - limit)
                os.lseek(fd, start, os.SEEK_SET)
            data = os.read(fd, limit)
            if tail and start > 0:
                cut = data.find(b"\n")
                data = data[cut + 1:] if cut >= 0 else b""
        except OSError:
            return  # write-only attributes, unused GID slots (EINVAL): the readers saw None too
        finally:
            os.close(fd)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(data)
        self.files += 1

    def _dir(self, real: str, entries: bool) -> None:
        out = self._out(real)
        os.makedirs(out, exist_ok=True)
        if not entries:
            return
        try:
            names = os.listdir(self._in(real))
        except OSError:
            return
        for n in names:
            hp = f"{real.rstrip('/')}/{n}"
            o = os.path.join(out, n)
            if os.path.lexists(o):
                continue
            try:
                st = os.lstat(self._in(hp))
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    self._link(hp, os.readlink(self._in(hp)))
                except OSError:
                    pass
            elif stat.S_ISDIR(st.st_mode):
                os.makedirs(o, exist_ok=True)
            else:
                open(o, "wb").close()  # placeholder: the name is what the listing needs

    def place(self, host_path: str, how: str) -> None:
        if time.monotonic() > self.deadline:
            self.complete = False
            self.uncopied += 1
            return
        real = self._walk(host_path, follow_last=how != "link")
        if real is None or not os.path.lexists(self._in(real)):
            return
        if how == "link":
            if os.path.islink(self._in(real)):
                self._link(real, os.readlink(self._in(real)))
            return
        if os.path.isdir(self._in(real)):
            self._dir(real, entries=how == "list")
        elif how in ("read", "stat"):
            self._file(real)
        elif how == "tail":
            self._file(real, tail=True)


DOTENV_META = "dotenv.json"   # {"file": the .env's path then, "env": its values}: the default .env of a replay


def capture(root: HostRoot, dst: Path, config, env: dict[str, str], timeout: float = 30.0) -> dict:
    """Gather through a recording root, copy what was read into ``dst``.  Returns a summary."""
    from rdmacheck.preflight.gather import PROBES_META, gather
    from rdmacheck.preflight.nodefacts import probe_key

    rec = HostRoot(str(root.root), record=True)
    facts = gather(rec, config)
    # live: from /; a replay root (a snapshot of a snapshot, as tests take one): from its folder
    cp = _Copy("/" if root.live else str(root.root.resolve()), dst, time.monotonic() + timeout)
    # lists before reads: a folder's placeholders never hide a file read later (that file is copied over them)
    order = {"link": 0, "list": 1, "stat": 2, "read": 3, "tail": 3}
    for path, how in sorted((rec.recorded or {}).items(), key=lambda kv: (order.get(kv[1], 9), kv[0])):
        cp.place(path, how)
    meta = dst / SNAPSHOT_META_DIR
    meta.mkdir(parents=True, exist_ok=True)
    probes = {probe_key(p.kind, p.target): {"kind": p.kind, "target": p.target, "answer": p.answer,
                                            "elapsed_s": p.elapsed_s, "error": p.error}
              for p in facts.probes.values()}
    # the process environment apart from the .env the snapshot was taken with: replayed, the environment
    # wins over any --env (as it does live), so .env values recorded there won over the .env given then
    from_file = {k for k, src in (getattr(config, "env_sources", None) or {}).items() if src == "env-file"}
    files = {
        "env.json": {k: v for k, v in env.items()
                     if (k in ENV_KEYS or k.startswith(ENV_PREFIXES)) and k not in from_file},
        DOTENV_META: {"file": getattr(config, "env_file", None),
                      "env": {k: v for k, v in (getattr(config, "env", None) or {}).items() if k in from_file}},
        PROBES_META: probes,
        # complete: false marks a copy the deadline cut short; a replay refuses it (preflight.run)
        "host.json": {"host": socket.gethostname() if root.live else facts.host,
                      "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "complete": cp.complete, "uncopied": cp.uncopied},
    }
    for name, value in files.items():
        # no sort_keys: the order of interfaces is getifaddrs order, which NCCL follows
        (meta / name).write_text(json.dumps(value, indent=1))
    return {"files": cp.files, "paths": len(rec.recorded or {}), "devices": sorted(facts.ib),
            "complete": cp.complete}


def incomplete_name(out: Path) -> Path:
    """Where an incomplete snapshot goes when ``out`` exists: never over it."""
    name = out.name[:-7] if out.name.endswith(".tar.gz") else out.name
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    cand = out.with_name(f"{name}.incomplete-{stamp}.tar.gz")
    n = 1
    while cand.exists():
        n += 1
        cand = out.with_name(f"{name}.incomplete-{stamp}-{n}.tar.gz")
    return cand


def write_snapshot(root: HostRoot, out: str | Path, config, env: dict[str, str], timeout: float = 30.0) -> dict:
    """Capture and write the tarball atomically; an incomplete capture never replaces an existing file."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="rdmacheck-snap-") as tmp:
        summary = capture(root, Path(tmp), config, env, timeout)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            _add_tree(tar, tmp)
    target = out
    if not summary["complete"] and out.exists():
        target = incomplete_name(out)
    atomic_write(target, buf.getvalue())
    summary["bytes"] = len(buf.getvalue())
    summary["written"] = str(target)
    return summary


def _add_tree(tar: tarfile.TarFile, top: str) -> None:
    """Add every entry under ``top`` with TarInfo built here.

    ``tar.add`` looks up the owner's user and group name for every member
    (getpwuid/getgrgid): over 2000 members that cost half a minute in the
    emulated soft-RoCE guest.  Owners mean nothing in a snapshot: root:root.
    """
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            ti = tarfile.TarInfo(os.path.relpath(full, top))
            ti.mtime, ti.uname, ti.gname = int(st.st_mtime), "root", "root"
            if os.path.islink(full):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, os.readlink(full), 0o777
                tar.addfile(ti)
            elif os.path.isdir(full):
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            else:
                ti.size, ti.mode = st.st_size, 0o644
                with open(full, "rb") as f:
                    tar.addfile(ti, f)
