"""`rdmacheck preflight`: gate this node before its container starts."""

from __future__ import annotations

import argparse

from ..errors import UsageError

DESCRIPTION = """\
Check this node's RDMA devices, ports, GIDs, MTU, QoS settings, device files and
resource limits (plus GPU, GPUDirect, NCCL env and peer gates where built) against
the cluster's .env and profile. Reads the host through one root, so a snapshot
(`rdmacheck snapshot`) replays exactly like the live host. Never changes the host.
"""

EPILOG = """\
examples:
  rdmacheck preflight                              defaults + auto-detected RDMA devices
  rdmacheck preflight --env docker/.env --json reports/node1-preflight.json
  rdmacheck preflight --expect mtu=1500 --only rdma.mtu,rdma.gid
  rdmacheck preflight --root /tmp/node2-snapshot   replay a captured node
  rdmacheck preflight --verbose                    the full table instead of one line per gate

The console shows one line per gate (id, status, the start of what was observed), then
observed/expected/remedy for each gate that did not pass, wrapped at the terminal width
(COLUMNS wins; 80 when piped).

exit codes: 0 every gate passed (warnings allowed), 1 a gate failed, 2 usage/input error.
Gate ids and remedies: docs/checks.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..preflight import add_config_arguments

    add_config_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the evidence document (JSON, atomically) to FILE")
    o.add_argument("--only", metavar="IDS", help="comma-separated gate ids to run, e.g. rdma.gid,rdma.mtu")
    o.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    o.add_argument("--verbose", "-v", action="store_true",
                   help="print the full table (every gate's observed, expected and remedy in columns) instead of "
                        "one line per gate plus the details of the gates that did not pass")


def run(args: argparse.Namespace) -> int:
    from ..checks import GATE_IDS
    from ..output.console import render_results, verdict_line
    from ..output.jsonout import write_evidence
    from ..preflight import _gates, context_from_args, preflight_evidence, run_preflight

    ctx = context_from_args(args)
    only = None
    if args.only:
        _gates()  # import every gate module so GATE_IDS is complete
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = sorted(only - set(GATE_IDS))
        if unknown:
            raise UsageError(f"--only: unknown gate id(s) {', '.join(unknown)}; known: {', '.join(GATE_IDS)}")
    results = run_preflight(ctx, only)
    ev = preflight_evidence(ctx, results)
    if args.json:
        write_evidence(ev, args.json)
    if args.quiet:
        verdict, summary = verdict_line(results)
        print(f"{verdict}: {summary}")
    else:
        title = f"rdmacheck preflight — {ev.host}" + ("" if ctx.root.live else f" (root {ctx.root.root})")
        render_results(results, title=title, verbose=args.verbose)
    return ev.exit_code
