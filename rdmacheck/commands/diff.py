"""``rdmacheck diff A B``: drift between two nodes, or one node before and after."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

DESCRIPTION = """\
Compare two views of a node, fact by fact and gate by gate: node vs node, or
before vs after a reboot, driver, firmware or image update.  Each side is an
evidence file (rdmacheck preflight/launch --json) or a snapshot (rdmacheck
snapshot .tar.gz, an unpacked one, or a real sysfs capture folder), which is
judged by the preflight gates first.

Every gate-relevant fact (MTU, active MTU, GID index and type, port state and
rate, firmware, NCCL/CUDA/driver versions, kernel, the NCCL environment, the
expectations) and every verdict is shown side by side, differences first,
grouped: fabric, GPU, software, limits, container, other.  Identity facts (MAC
and IP addresses, the GID value, host names) are shown but never count.
"""

EPILOG = """\
examples:
  rdmacheck diff node1/preflight.json node2/preflight.json        node vs node
  rdmacheck diff before.tar.gz after.tar.gz                       a node before and after an update
  rdmacheck diff last-week.json /tmp/node1 --json reports/drift.json
  rdmacheck report reports/ --baseline last-week.json -o reports/acceptance.html   (the same, in the page)

exit codes: 0 nothing gate-relevant differs, 1 something does, 2 bad input.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="evidence JSON, snapshot .tar.gz, or unpacked snapshot/capture folder")
    p.add_argument("b", metavar="B", help="the same kinds as A")
    p.add_argument("--json", metavar="FILE", help="write the comparison as JSON ('-' for stdout)")
    p.add_argument("--all", action="store_true", help="also list the facts and verdicts that are the same")
    g = p.add_argument_group("judging snapshots")
    g.add_argument("--env", metavar="FILE", help="the .env a snapshot side is judged with (default: its recorded env)")
    g.add_argument("--profile", metavar="FILE", help="TOML profile for snapshot sides")
    g.add_argument("--expect", metavar="KEY=VALUE", action="append", default=[], help="override one profile value")


def run(args: argparse.Namespace) -> int:
    from rdmacheck.util.atomic import atomic_write
    from rdmacheck.report.diff import changed, compare, load_side, render_text, to_json

    with tempfile.TemporaryDirectory(prefix="rdmacheck-diff-") as d:
        holder = _Holder(d)
        a = load_side(args.a, args.env, args.profile, args.expect, tmp=holder)
        b = load_side(args.b, args.env, args.profile, args.expect, tmp=holder)
    rows = compare(a, b)
    doc = to_json(a, b, rows)
    if args.json == "-":
        print(json.dumps(doc, indent=1, default=str))
    else:
        from rdmacheck.util.sanitize import clean_text

        print(clean_text(render_text(a, b, rows, show_same=args.all)))  # host names and .env values are foreign text
        if args.json:
            atomic_write(args.json, json.dumps(doc, indent=1, default=str) + "\n")
            print(f"json: {args.json}", file=sys.stderr)
    return 1 if changed(rows) else 0


class _Holder:
    """What load_side needs of a TemporaryDirectory: its name (the caller owns the clean-up)."""

    def __init__(self, name: str) -> None:
        self.name = name
