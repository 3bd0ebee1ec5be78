"""`rdmacheck preflight`: gate this node before its container starts."""

from __future__ import annotations

import argparse

from rdmacheck.util.errors import UsageError

DESCRIPTION = """\
Check this node's RDMA devices, ports, GIDs, MTU, QoS settings, device files and
resource limits (plus GPU, GPUDirect, NCCL env and peer gates) against the cluster's
.env and profile. Two phases: every fact is gathered once (files through one root,
live probes with their timing) into one record, then the gates judge that record.
A snapshot (`rdmacheck snapshot`) replays exactly like the live host, and the record
in an evidence file can be judged again (--facts) without the node. Never changes the host.
"""

EPILOG = """\
examples:
  rdmacheck preflight                              defaults + auto-detected RDMA devices
  rdmacheck preflight --env docker/.env --json reports/node1-preflight.json
  rdmacheck preflight --expect mtu=1500 --only rdma.mtu,rdma.gid
  rdmacheck preflight --profile dgx-spark --env docker/.env   two DGX Sparks (GB10): GDR N/A, both port halves
  rdmacheck preflight --expect subnet=fd00:100::/64          an IPv6 mesh (with NCCL_IB_ADDR_FAMILY=AF_INET6)
  rdmacheck preflight --root reports/node2.tar.gz  replay a captured node (a snapshot file or an unpacked folder)
  rdmacheck preflight --facts reports/node1-preflight.json --expect mtu=1500
                                                   would node1 pass under MTU 1500? (judged from its recorded facts)
  rdmacheck preflight --facts reports/node1-preflight.json --profile new.toml --json rejudged.json
  rdmacheck preflight --verbose                    the full table instead of one line per gate

The console shows one line per gate (id, status, the start of what was observed), then
observed/expected/remedy for each gate that did not pass, wrapped at the terminal width
(COLUMNS wins; 80 when piped).

--facts EVIDENCE.json judges the facts recorded in preflight evidence (context.node_facts) under the
configuration it was taken with; --env, --profile and --expect replace parts of it (a new --env file
keeps the values the node's own environment set, as compose would there). Live-only gates (net.peer,
nccl.env's bind test) are judged from the recorded probe answers and say so.

--only selects which results are printed and written; the facts are gathered in full either way.

exit codes: 0 every gate passed (warnings allowed), 1 a gate failed, 2 usage/input error,
3 internal error (crash report saved).
Gate ids and remedies: docs/checks.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rdmacheck.preflight.judge import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--facts", metavar="EVIDENCE.json",
                   help="judge the facts recorded in this preflight evidence instead of reading a host "
                        "(with the recorded configuration, changed by --env/--profile/--expect)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the evidence document (JSON, atomically) to FILE")
    o.add_argument("--only", metavar="IDS", help="comma-separated gate ids to show, e.g. rdma.gid,rdma.mtu "
                                                 "(every fact is still gathered: the evidence's facts are the same)")
    o.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    o.add_argument("--verbose", "-v", action="store_true",
                   help="print the full table (every gate's observed, expected and remedy in columns) instead of "
                        "one line per gate plus the details of the gates that did not pass")


def run(args: argparse.Namespace) -> int:
    from ..output.console import render_results, verdict_line
    from rdmacheck import preflight
    from rdmacheck.evidence.jsonout import write_evidence
    from rdmacheck.evidence.model import exit_code
    from rdmacheck.preflight.registry import parse_only
    from rdmacheck.util.outpath import check_output_paths

    check_output_paths((args.json, "--json"), inputs=((getattr(args, "env", None), "--env"),
                       (getattr(args, "profile", None), "--profile"), (getattr(args, "facts", None), "--facts"),
                       (getattr(args, "root", None), "--root")))
    only = parse_only(args.only)
    if args.facts and (getattr(args, "root", "/") or "/") != "/":
        raise UsageError("--facts and --root both name a node; pass one: --facts EVIDENCE.json judges its "
                         "recorded facts, --root replays a snapshot")
    done = preflight.run(args.root or "/", env=args.env, profile=args.profile, expect=args.expect, only=only,
                         facts_file=args.facts)
    if args.facts:
        where = f" (facts from {args.facts})"
    else:
        where = "" if done.root.live else f" (root {done.root.root})"
    results = done.results
    if args.json:
        write_evidence(done.evidence(), args.json)
    if args.quiet:
        verdict, summary = verdict_line(results)
        print(f"{verdict}: {summary}")
    else:
        from rdmacheck.preflight.judge import host_of

        render_results(results, title=f"rdmacheck preflight — {host_of(done.facts)}{where}", verbose=args.verbose)
    return exit_code(results)
