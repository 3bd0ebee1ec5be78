"""`rdmacheck snapshot`: capture what preflight reads, for replay with --root."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Capture everything preflight reads (sysfs infiniband/net/infiniband_verbs trees with
their device folders, /proc limits and modules, the /dev/infiniband listing, /etc/rdma,
the NCCL/Gloo/Ray environment, pyverbs answers, IP addresses) into one .tar.gz.
Unpack it anywhere and run `rdmacheck preflight --root DIR` to get the same verdicts
as on the live host: how an unreachable node is diagnosed later.
"""

EPILOG = """\
example:
  rdmacheck snapshot --env docker/.env -o reports/node1.tar.gz
  mkdir /tmp/node1 && tar xzf reports/node1.tar.gz -C /tmp/node1
  rdmacheck preflight --root /tmp/node1
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE.tar.gz", required=True, help="where to write the snapshot")
    p.add_argument("--env", metavar="FILE", help="the .env whose values are recorded with the snapshot (default docker/.env if present)")
    p.add_argument("--timeout", type=float, default=30.0, help="stop copying sysfs after this many seconds (default 30)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..root import HostRoot
    from ..snapshot import write_snapshot
    from ..units import human_bytes

    root = HostRoot("/")
    cfg = load_config(args.env, None, None, root.environ())
    env = dict(root.environ())
    env.update(cfg.env)  # the effective values: .env overlaid by the process env
    summary = write_snapshot(root, args.output, env, args.timeout)
    files, raw = archive_size(args.output)
    print(f"snapshot {args.output}: {files} files, {human_bytes(raw)} uncompressed, "
          f"{human_bytes(summary['bytes'])} compressed ({summary['bytes']} bytes); "
          f"RDMA devices: {', '.join(summary['devices']) or 'none'}"
          + ("" if summary["complete"] else " (INCOMPLETE: timeout reached)"))
    return 0 if summary["complete"] else 1


def archive_size(path) -> tuple[int, int]:
    """(regular files, their bytes) in the written archive: what unpacking it gives, read back from it."""
    import tarfile

    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    return len(members), sum(m.size for m in members)
