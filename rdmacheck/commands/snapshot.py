"""`rdmacheck snapshot`: capture what preflight reads, for replay with --root."""

from __future__ import annotations

import argparse

from rdmacheck.util.units import seconds_type

DESCRIPTION = """\
Capture everything preflight reads into one .tar.gz: preflight's fact gathering runs
through a recording root and exactly the files, folders and links it read are copied
(sysfs infiniband/net/PCI entries, /proc limits and modules, /dev/infiniband, /etc/rdma),
with every probe answer (pyverbs, NVML, dcb, IP addresses, DNS, route, ping) and the
NCCL/Gloo/Ray environment. `rdmacheck preflight --root FILE.tar.gz` then gives the
verdicts the live host gave: how an unreachable node is diagnosed later.
An incomplete capture (--timeout reached) never replaces an existing file: it is written
next to it as NAME.incomplete-TIME.tar.gz, marked so in rdmacheck/host.json ("complete": false); a
replay (--root, diff) refuses it rather than judge a partial copy as a broken host.
"""

EPILOG = """\
examples:
  rdmacheck snapshot --env docker/.env -o reports/node1.tar.gz
  rdmacheck preflight --root reports/node1.tar.gz            replay it (unpacked safely to a temp folder)
  mkdir /tmp/node1 && tar xzf reports/node1.tar.gz -C /tmp/node1 && rdmacheck preflight --root /tmp/node1

exit codes: 0 complete snapshot written, 1 incomplete (timeout reached), 2 usage error (bad -o path,
--env, --timeout), 3 internal error (crash report saved).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE.tar.gz", required=True, help="where to write the snapshot")
    p.add_argument("--env", metavar="FILE", help="the .env whose values are recorded with the snapshot (default docker/.env if present)")
    p.add_argument("--timeout", type=seconds_type("--timeout"), default=30.0,
                   help="stop copying after this many seconds (default 30; the probes before it have their own bounds)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from rdmacheck.util.outpath import check_output_paths
    from rdmacheck.preflight.root import HostRoot

    check_output_paths((args.output, "-o"))
    from rdmacheck.preflight.snapshot import write_snapshot
    from rdmacheck.util.units import human_bytes

    root = HostRoot("/")
    cfg = load_config(args.env, None, None, root.environ())
    env = dict(root.environ())
    env.update(cfg.env)  # the effective values: .env overlaid by the process env
    summary = write_snapshot(root, args.output, cfg, env, args.timeout)
    where = summary["written"]
    files, raw = archive_size(where)
    line = (f"snapshot {where}: {files} files ({summary['paths']} paths read), {human_bytes(raw)} uncompressed, "
            f"{human_bytes(summary['bytes'])} compressed ({summary['bytes']} bytes); "
            f"RDMA devices: {', '.join(summary['devices']) or 'none'}")
    if summary["complete"]:
        print(line)
        return 0
    note = f" (INCOMPLETE: the copy reached --timeout {args.timeout:g} s"
    note += f"; {args.output} exists and was left as it was)" if where != str(args.output) else ")"
    print(line + note)
    return 1


def archive_size(path) -> tuple[int, int]:
    """(regular files, their bytes) in the written archive: what unpacking it gives, read back from it."""
    import tarfile

    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    return len(members), sum(m.size for m in members)
