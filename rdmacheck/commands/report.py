"""``rdmacheck report``: evidence JSON (and nccl-tests output) -> one HTML page (+ JUnit XML)."""

from __future__ import annotations

import argparse

from rdmacheck.util.errors import UsageError

DESCRIPTION = (
    "Render evidence from any number of nodes and runs into one self-contained HTML acceptance report: "
    "a pass/fail banner, every node's gates, cross-node consistency (MTU, GID, versions, NCCL env), "
    "bandwidth plots and tables, the path proof, waivers and an environment fingerprint."
)
EPILOG = """\
examples:
  rdmacheck report reports/*.json -o reports/acceptance.html
  rdmacheck report reports/ --import nccl-tests/all_reduce.txt --import run.json -o acceptance.html
  rdmacheck report node-*/preflight.json --junit reports/gates.xml -o acceptance.html
  rdmacheck report reports/ --baseline last-week/preflight.json -o acceptance.html   adds "Changed since"

exit codes: 0 the report says PASS; 1 it says FAIL, or INFO (no gate was evaluated: only imported numbers);
  2 usage or input error, e.g. evidence of an unknown kind or schema version (the file and field are named;
  neither -o nor --junit is replaced); 3 internal error (crash report saved).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("evidence", nargs="*", metavar="EVIDENCE",
                   help="evidence JSON files written with --json, folders of them, or globs")
    p.add_argument("-o", "--output", default="reports/acceptance.html", metavar="HTML",
                   help="where to write the page (default: reports/acceptance.html)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="NCCL_TESTS_FILE",
                   help="nccl-tests output to plot beside rdmacheck's runs: a text table (any version, "
                        "mpirun-prefixed or pasted) or a -J JSON file; repeatable")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML: one testcase per gate per node")
    p.add_argument("--title", help="page title (default: Cluster acceptance report)")
    p.add_argument("--baseline", metavar="FILE",
                   help="earlier evidence (or snapshot) of a node: the page gains a 'Changed since' section with "
                        "every gate-relevant fact and verdict that differs, as `rdmacheck diff` prints")
    p.add_argument("--expected-busbw", type=_gbs, metavar="GB/s",
                   help="the expected-bandwidth line (default: the profile's min_busbw, else 12 GB/s)")


def _gbs(text: str) -> float:
    from ..config import parse_bandwidth

    return parse_bandwidth(text, "--expected-busbw")


def run(args: argparse.Namespace) -> int:
    if not args.evidence and not args.imports:
        raise UsageError("no input: pass evidence JSON files/folders/globs and/or --import NCCL_TESTS_FILE")
    from rdmacheck.util.atomic import atomic_write
    from rdmacheck.util.outpath import check_output_paths
    from ..report import make_report
    from rdmacheck.util.sanitize import clean_text

    check_output_paths((args.output, "-o"), (args.junit, "--junit"),
                       inputs=tuple((e, "EVIDENCE") for e in args.evidence) + tuple((i, "--import") for i in args.imports)
                       + ((args.baseline, "--baseline"),))
    model = make_report(args.evidence, args.output, imports=args.imports, title=args.title,
                        expected_busbw=args.expected_busbw, baseline=args.baseline, write=False)
    junit = None
    if args.junit:
        from ..output.junit import junit_xml

        junit = junit_xml([l.evidence for l in model["_loaded"]], consistency=model["consistency"])
    # both outputs exist in memory before either file is replaced
    atomic_write(args.output, model["_html"])
    if junit is not None:
        atomic_write(args.junit, junit)
    print(clean_text(f"{model['verdict']}: {model['reason']}", one_line=True))
    print(f"report: {args.output}" + (f"  junit: {args.junit}" if args.junit else ""))
    # only a PASS is worth a 0: a page that judged nothing (INFO) must not let a pipeline through
    return 0 if model["verdict"] == "PASS" else 1
