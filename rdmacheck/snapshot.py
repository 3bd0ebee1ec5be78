"""`rdmacheck snapshot`: capture what preflight reads, to replay with ``--root``.

The tarball mirrors host paths (``sys/class/infiniband/...``, ``proc/self/limits``,
``dev/infiniband/...``, ``etc/rdma/...``) so ``HostRoot(DIR)`` reads it exactly
as it reads ``/``.  Facts that are not files on a live host are stored as JSON
under ``rdmacheck/``: the configuration environment, pyverbs answers, IP
addresses, the /dev/shm size and the host name.

Capture rules, and why:

* sysfs class entries are symlinks into ``/sys/devices``; we keep the links as
  links and copy the folders they point at, so relative links resolve inside
  the snapshot as they do on the host.
* Only attribute files are copied, with a size cap: PCI ``config``,
  ``resource*`` and ``rom`` are binary and large (and reading ``rom`` can
  stall), ``queues/`` and ``power/`` are noise.
* Unreadable files (write-only attributes, unused GID slots that answer
  EINVAL) are left out: the readers treat a missing file and an unreadable
  one the same way, so verdicts stay identical.
* Device nodes under /dev/infiniband become empty regular files (creating
  character devices would need privileges on the machine that unpacks it).
"""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import tempfile
import time
from pathlib import Path

from .atomic import atomic_write
from .config import ENV_KEYS
from .root import SNAPSHOT_META_DIR, HostRoot

SKIP_NAMES = {"config", "rom", "vpd", "remove", "rescan", "reset", "uevent", "new_id", "remove_id", "bind",
              "unbind", "driver_override", "msi_bus", "broken_parity_status", "subsystem_vendor"}
SKIP_DIRS = {"queues", "power", "msi_irqs", "subsystem", "firmware_node", "iommu", "iommu_group", "holders",
             "slaves", "wakeup", "trace", "mgmt"}
MAX_FILE = 64 * 1024
# Environment prefixes worth keeping; everything else (tokens, paths) stays out.
ENV_PREFIXES = ("NCCL_", "GLOO_", "UCX_", "RAY_", "CUDA_", "NVIDIA_", "MASTER_", "VLLM_", "TORCH_")
# Modules whose presence gates look at (/sys/module/<name>).
MODULES = ("nvidia", "nvidia_peermem", "nv_peer_mem", "mlx5_ib", "mlx5_core", "rdma_rxe", "ib_uverbs",
           "rdma_ucm", "ib_core")
PROC_FILES = ("/proc/self/limits", "/proc/modules", "/proc/sys/kernel/osrelease", "/proc/driver/nvidia/version",
              "/proc/version", "/proc/cmdline", "/proc/mounts", "/proc/meminfo")


class _Capture:
    def __init__(self, src: HostRoot, dst: Path, deadline: float):
        self.src, self.dst, self.deadline = src, dst, deadline
        self.done: set[str] = set()
        self.nonzero: dict[str, set[str]] = {}
        self.files = 0

    def _out(self, host_path: str) -> Path:
        return self.dst / host_path.lstrip("/")

    def file(self, host_path: str) -> None:
        data = self.src.read_bytes(host_path, MAX_FILE + 1)
        if data is None or len(data) > MAX_FILE:
            return
        out = self._out(host_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        self.files += 1

    def link(self, host_path: str) -> str | None:
        target = self.src.readlink(host_path)
        if target is None:
            return None
        out = self._out(host_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(out):
            os.symlink(target, out)
        return os.path.normpath(os.path.join(os.path.dirname(host_path), target))

    def _used_gids(self, gid_attrs_dir: str) -> set[str]:
        """Indices of non-zero GIDs of the port that owns ``.../gid_attrs/{types,ndevs}``."""
        gids = gid_attrs_dir.rsplit("/gid_attrs/", 1)[0] + "/gids"
        if gids not in self.nonzero:
            used = set()
            for n in self.src.listdir(gids):
                g = self.src.read(f"{gids}/{n}")
                if g and g.replace(":", "").strip("0"):
                    used.add(n)
            self.nonzero[gids] = used
        return self.nonzero[gids]

    def tree(self, host_path: str, depth: int, follow: tuple[str, ...] = ()) -> None:
        """Copy a folder's attribute files down to ``depth``; links stay links.

        Links named in ``follow`` also get their targets copied (one level).
        """
        if host_path in self.done or time.monotonic() > self.deadline:
            return
        self.done.add(host_path)
        self._out(host_path).mkdir(parents=True, exist_ok=True)
        names = self.src.listdir(host_path)
        if host_path.endswith(("/gid_attrs/types", "/gid_attrs/ndevs")):
            # unused GID slots answer EINVAL here (1024 of them on rxe): read only the used ones
            used = self._used_gids(host_path)
            names = [n for n in names if n in used]
        for name in names:
            p = f"{host_path}/{name}"
            full = self.src.path(p)
            if os.path.islink(full):
                target = self.link(p)
                if target and name in follow:
                    self.tree(target, 2, follow=("net",) if name == "device" else ())
                continue
            if full.is_dir():
                if depth > 0 and name not in SKIP_DIRS:
                    self.tree(p, depth - 1, follow=follow if name == "net" else ())
                continue
            if name not in SKIP_NAMES and not name.startswith("resource"):
                self.file(p)

    def class_dir(self, cls: str, depth: int, follow: tuple[str, ...] = ()) -> None:
        base = f"/sys/class/{cls}"
        for name in self.src.listdir(base):
            p = f"{base}/{name}"
            full = self.src.path(p)
            if os.path.islink(full):
                target = self.link(p)
                if target:
                    self.tree(target, depth, follow)
            elif full.is_dir():
                self.tree(p, depth, follow)
            else:
                self.file(p)  # e.g. bonding_masters


def capture(root: HostRoot, dst: Path, env: dict[str, str], timeout: float = 30.0) -> dict:
    """Write the snapshot tree into ``dst``.  Returns a small summary."""
    from .facts.dcb import snapshot_facts as dcb_facts
    from .facts.infiniband import IB_CLASS
    from .facts.limits import shm_size
    from .facts.net import addresses
    from .facts.nccl_lib import read_nccl
    from .facts.nvml import read_nvml
    from .facts.verbs import read_verbs

    cap = _Capture(root, dst, time.monotonic() + timeout)
    cap.class_dir("infiniband", 5, follow=("device",))
    cap.class_dir("infiniband_verbs", 1)
    cap.class_dir("net", 2)
    for f in PROC_FILES:
        cap.file(f)
    for m in MODULES:
        if root.is_dir(f"/sys/module/{m}"):
            (dst / "sys/module" / m).mkdir(parents=True, exist_ok=True)
            cap.file(f"/sys/module/{m}/version")
    for name in root.listdir("/dev/infiniband"):
        out = dst / "dev/infiniband" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
    if root.is_dir("/etc/rdma"):
        cap.tree("/etc/rdma", 2)
    # GPUDirect peer-memory clients (MLNX_OFED's nv_peer_mem registers here)
    if root.is_dir("/sys/kernel/mm/memory_peers"):
        cap.tree("/sys/kernel/mm/memory_peers", 2)
    meta = dst / SNAPSHOT_META_DIR
    meta.mkdir(parents=True, exist_ok=True)
    devices = root.listdir(IB_CLASS)  # names only: the GID tables were just copied, no second full read
    facts = {
        "env.json": {k: v for k, v in env.items() if k in ENV_KEYS or k.startswith(ENV_PREFIXES)},
        "verbs.json": read_verbs(root, devices),
        "addrs.json": addresses(root),
        "shm.json": {"size": shm_size(root)},
        "nvml.json": read_nvml(root),
        "dcb.json": dcb_facts(root, env.get("NCCL_IB_HCA")),
        "nccl.json": read_nccl(root),
        "host.json": {"host": socket.gethostname() if root.live else (root.meta("host.json") or {}).get("host"),
                      "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    for name, value in facts.items():
        (meta / name).write_text(json.dumps(value, indent=1, sort_keys=True))
    return {"files": cap.files, "devices": devices, "complete": time.monotonic() <= cap.deadline}


def write_snapshot(root: HostRoot, out: str | Path, env: dict[str, str], timeout: float = 30.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="rdmacheck-snap-") as tmp:
        summary = capture(root, Path(tmp), env, timeout)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            _add_tree(tar, tmp)
        atomic_write(out, buf.getvalue())
    summary["bytes"] = len(buf.getvalue())
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


def unpack(tarball: str | Path, dest: str | Path) -> Path:
    """Unpack a snapshot safely (no absolute paths, no links escaping ``dest``)."""
    from .errors import UsageError

    d = Path(dest)
    try:
        with tarfile.open(tarball, "r:*") as tar:
            try:
                tar.extractall(d, filter="data")
            except TypeError:  # Python < 3.10.12 has no extraction filters
                tar.extractall(d)
    except (OSError, tarfile.TarError) as e:
        raise UsageError(f"cannot unpack snapshot {tarball}: {e}; pass a file written by `rdmacheck snapshot`") from None
    return d
