"""``rdmacheck cluster``: fleet acceptance through Ray, one report for every node."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
from pathlib import Path

from rdmacheck.util.errors import UsageError
from rdmacheck.util.units import fraction_type, seconds_type

DESCRIPTION = """\
Fleet acceptance through the Ray cluster the nodes already run: one command
gates every node, measures the fabric and writes one report.

What happens, in order:
  1. discover   read Ray's node table (live nodes only); each node gets a label:
                its host name, or host/node_name where several Ray nodes share a host
  2. preflight  one task pinned to each node (NodeAffinitySchedulingStrategy,
                soft=False: it runs there or fails, never elsewhere), all in
                parallel, with this machine's .env/profile: one set of expectations
  3. bench      one Ray actor per GPU (NCCL), or one per node with gloo when
                there are no GPUs, forming one torch.distributed group and
                running the same runner as 'rdmacheck bench' (same numbers,
                same bench.busbw/bench.check gates)
  4. isolate    (--isolate, instead of the cluster-wide bench) group testing:
                the nodes in groups of about sqrt(N), every group measured at
                once (--isolate-op, default all_reduce); only failing groups
                are bisected; a suspect is named only after failing twice
                beside nodes that passed.  A group fails when its collective
                fails, when it misses --measure-timeout twice, when its busbw
                is below the floor (--expect-busbw / profile min_busbw) or
                below --straggler-factor x the fleet median (a straggler).
                512 nodes with one bad node: about 34 measurements in 6
                rounds (benchmarks/results/isolation-scale.md), against
                130,816 pairs in 511 rounds for --pairwise.
                Nodes found bad or slow are quarantined: recorded with the
                reason and time in --quarantine-file (Ray cannot relabel a
                running node), left out of later --isolate runs, listed first
                in the report.  A group sees a link only between its own
                members: --pairwise stays the way to check every link
  5. pairwise   (--pairwise) sendrecv between every pair of nodes, in rounds
                where each node is in at most one pair (n-1 rounds for even n,
                n for odd n): the one bad cable that an all-reduce over 64
                nodes averages away shows up as one cold cell of the matrix
  6. report     evidence files + report.html in --out-dir

Failures are bounded and named, and the rest is still measured and reported:
  a node Ray reports dead   named at once with Ray's error (ActorDiedError ... its
                            node has died); its collective is given up, the other
                            ranks get fresh actors, its pairs are marked not measured
  a node that never answers "no answer within S s" after --node-timeout (+10 s grace)
  a rank stuck in a size    ended by the bench runner's watchdog after --node-timeout
"""

EPILOG = """\
examples:
  rdmacheck cluster --ray-address auto                        inside the head container
  rdmacheck cluster --ray-address 192.168.100.1:6379 --pairwise --sizes 1M..1G
  rdmacheck cluster --ray-address auto --no-bench --pairwise --pairwise-sizes 256M
  rdmacheck cluster --ray-address auto --backend gloo --sizes 1K..16M --node-timeout 60
  rdmacheck cluster --ray-address auto --isolate                 find the bad nodes of a fleet, quarantine them
  rdmacheck cluster --ray-address auto --isolate --quarantine-only --straggler-factor 0.7
                                                              name nodes below 0.7 x the median, record nothing
  rdmacheck cluster --ray-address auto --isolate --skip-validated-within 12h
                                                              leave out nodes that passed in the last 12 hours
  rdmacheck cluster --ray-address auto --isolate --include-quarantined   re-test (and release) quarantined nodes
  (--isolate exits 1 when it quarantines a node, names a bad link or cannot judge a node)

output (--out-dir, default reports/cluster-<UTC time>):
  cluster.json                     Evidence(kind=cluster): nodes, phases, timings, context.pairwise matrix
  bench.json                       Evidence(kind=bench) of the cluster-wide sweep (rank 0's)
  nodes/<label>/preflight.json     each node's preflight evidence
  nodes/<label>/cluster-node.json  cluster.node: did the node answer (with the Ray error if not)
  nodes/<label>/isolate.json       cluster.isolate: cleared, quarantined (with the reason), flaky
  pairwise.csv, pairwise.svg       the node-by-node sendrecv busbw matrix and its heatmap
  report.html                      rdmacheck report over all of the above, quarantined nodes first
outside --out-dir (--isolate):
  reports/quarantine.json          the quarantine list: label -> reason, kind, time, NodeID, evidence
  reports/validated/<label>.json   when each node last passed --isolate (for --skip-validated-within)

every node needs rdmacheck importable (it is in the node image) and, for the
bench, torch; actors inherit each node's environment (NCCL_*, GLOO_SOCKET_IFNAME).

exit codes: 0 the report says PASS, 1 it says FAIL (a gate, a node, a link), 2 usage error,
3 internal error (crash report saved).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--ray-address", required=True, metavar="ADDR",
                   help="the Ray head's GCS address HOST:PORT (port 6379 by default), or 'auto' on a node "
                        "where Ray already runs (the head container)")
    g.add_argument("--node-timeout", type=seconds_type("--node-timeout"), default=120.0, metavar="S",
                   help="seconds a node may stay silent (preflight phase; a rank in one size) before it is "
                        "reported as lost (default 120)")
    g.add_argument("--out-dir", default=None, metavar="DIR",
                   help="where the evidence and report.html go (default reports/cluster-<UTC time>)")
    g.add_argument("--no-preflight", dest="preflight", action="store_false", help="skip the per-node gates")
    g.add_argument("--only", metavar="IDS", help="comma-separated preflight gate ids to run on every node")
    g.add_argument("--no-bench", dest="bench", action="store_false", help="skip the cluster-wide collective bench")
    g.add_argument("--no-report", dest="report", action="store_false", help="write the evidence only")
    g.add_argument("--title", help="report title")
    g = p.add_argument_group("pairwise link matrix")
    g.add_argument("--pairwise", action="store_true",
                   help="measure sendrecv busbw between every pair of nodes, in rounds (one pair per node per round)")
    g.add_argument("--pairwise-sizes", default="64M", metavar="SIZES",
                   help="sizes for each pair; the largest gives the matrix value (default 64M)")
    g.add_argument("--outlier-factor", type=fraction_type("--outlier-factor"), default=0.5, metavar="F",
                   help="also flag (warn) a link below F x the median link (default 0.5)")
    g = p.add_argument_group("fault isolation (--isolate)")
    g.add_argument("--isolate", action="store_true",
                   help="group testing: groups of about sqrt(N), bisection of failing groups, each suspect "
                        "confirmed beside a node that passed; replaces the cluster-wide bench")
    g.add_argument("--isolate-op", default="all_reduce", metavar="OP",
                   help="the collective each group runs (default all_reduce)")
    g.add_argument("--isolate-sizes", default="64M", metavar="SIZES",
                   help="sizes per measurement; the largest gives its busbw (default 64M)")
    g.add_argument("--group-size", type=int, default=None, metavar="N",
                   help="nodes per first-round group (default round(sqrt(N)), at most N/3)")
    g.add_argument("--straggler-factor", type=float, default=0.5, metavar="F",
                   help="a group below F x the fleet median busbw fails as slow (default 0.5; 0 turns it off)")
    g.add_argument("--measure-timeout", type=float, default=None, metavar="S",
                   help="bound on one measurement; a timed-out one is retried once (default --node-timeout + 10)")
    g.add_argument("--quarantine-file", default=None, metavar="FILE",
                   help="the recorded quarantine list (default reports/quarantine.json)")
    g.add_argument("--quarantine-only", action="store_true",
                   help="print and report what would be quarantined; change neither the list nor the validated index")
    g.add_argument("--include-quarantined", action="store_true",
                   help="measure quarantined nodes too; one that passes is released from the list")
    g.add_argument("--skip-validated-within", default=None, metavar="DURATION",
                   help="leave out nodes whose last passing --isolate is younger than DURATION (90s, 30m, 12h, 7d, 1h30m)")
    g.add_argument("--validated-dir", default=None, metavar="DIR",
                   help="where each node's last passing evidence is indexed (default reports/validated)")
    g = p.add_argument_group("bench (the same meaning as in 'rdmacheck bench')")
    g.add_argument("--op", default="all_reduce", metavar="OPS", help="collectives, comma list or all (default all_reduce)")
    g.add_argument("--sizes", "-s", default="1K..1G", metavar="SIZES", help="MIN..MAX or a list, K/M/G binary (default 1K..1G)")
    g.add_argument("--step-factor", "-f", type=int, default=2, metavar="F", help="range step factor (default 2)")
    g.add_argument("--dtype", "-d", default="float", help="element type (default float)")
    g.add_argument("--backend", choices=["nccl", "gloo"], default=None,
                   help="default: nccl when every node has a GPU in Ray's resources, else gloo (one rank per node)")
    g.add_argument("--iters", "-n", type=int, default=None, help="timed calls per size (default time-based)")
    g.add_argument("--warmup", "-w", type=int, default=5, help="warm-up calls per size (default 5)")
    g.add_argument("--time-per-size", type=seconds_type("--time-per-size", maximum=3600), default=0.02, metavar="S", help="time-based iterations (default 0.02 s)")
    g.add_argument("--check", action=argparse.BooleanOptionalAction, default=True, help="verify every element (default on)")
    g.add_argument("--max-memory", default=None, metavar="SIZE", help="most memory one rank may allocate")
    g = p.add_argument_group("expectations (as in 'rdmacheck preflight')")
    g.add_argument("--env", metavar="FILE", help="the .env compose uses (default docker/.env when it exists)")
    g.add_argument("--profile", metavar="FILE|NAME", help="TOML profile of expectations, or reference / dgx-spark")
    g.add_argument("--expect", metavar="KEY=VALUE", action="append", default=[], help="override one profile value")
    g.add_argument("--expect-busbw", default=None, metavar="GB/s",
                   help="bandwidth the bench plateau and every pairwise link must reach (default: profile min_busbw)")


_ADDR = re.compile(r"^(auto|[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5})$")


def _options(args: argparse.Namespace):
    from ..bench.sizes import parse_sizes
    from ..cluster.driver import ClusterOptions
    from ..config import load_config
    from rdmacheck.preflight.registry import parse_only
    from .bench import build_options

    addr = (args.ray_address or "").strip()
    if not _ADDR.match(addr):
        raise UsageError(f"--ray-address {addr!r}: write HOST:PORT of the Ray head (e.g. 192.168.100.1:6379) or auto")
    if addr != "auto" and not 0 < int(addr.rsplit(":", 1)[1]) < 65536:
        raise UsageError(f"--ray-address {addr!r}: port must be 1..65535")
    if not args.node_timeout > 0:
        raise UsageError("--node-timeout must be > 0 seconds")
    if not 0 <= args.outlier_factor <= 1:
        raise UsageError("--outlier-factor must be between 0 and 1 (0 turns the outlier flag off)")
    picked = parse_only(args.only)
    only = sorted(picked) if picked else None
    # the bench's own validation and defaults, so both commands mean the same by each flag
    ns = argparse.Namespace(**vars(args))
    ns.nproc, ns.json, ns.csv, ns.progress, ns.hook, ns.graph, ns.timeout = None, None, None, False, [], None, args.node_timeout
    ns.table = "nccl-tests"  # rank actors print no table to a terminal
    # bench-only flags the cluster does not take: NCCL_ALGO by the bench's rule (ring across nodes), the profile's latency table
    ns.algo, ns.expect_latency = getattr(args, "algo", None), getattr(args, "expect_latency", None)
    bench_opts = build_options(ns)
    try:
        pw_sizes = parse_sizes(args.pairwise_sizes)
    except UsageError as e:
        raise UsageError(str(e).replace("--sizes", "--pairwise-sizes", 1)) from None
    if bench_opts.max_memory is not None:
        # known before any node is asked: refuse at once, as 'rdmacheck bench' does (2 ranks: the least a
        # cluster has; more ranks only shrink the per-rank buffers of gather/scatter ops)
        from ..bench.gate import memory_verdict
        from ..bench.plan import build_plan

        sweeps = ([(bench_opts.ops, bench_opts.sizes)] if args.bench else []) + (
            [(["sendrecv"], pw_sizes)] if args.pairwise else [])
        for ops, sizes in sweeps:
            plan, _ = build_plan(ops, sizes, bench_opts.dtype, 2)
            if plan:
                msg = memory_verdict(max(r.memory_need() for r in plan), bench_opts.max_memory, "--max-memory",
                                     bench_opts.max_memory)
                if msg:
                    raise UsageError(msg)
    cfg = load_config(args.env, args.profile, args.expect, process_env=dict(os.environ))
    out = Path(args.out_dir) if args.out_dir else Path("reports") / (
        "cluster-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out-dir {out}: exists and is not a folder")
    from rdmacheck.util.outpath import check_output_folder

    check_output_folder(out, "--out-dir")
    if args.bench and not args.pairwise:
        # the expectation judges only the bench plateau here (with --pairwise it also judges every
        # link, at --pairwise-sizes): too small a --sizes is known now; a cluster has >= 2 ranks
        from .bench import refuse_unjudgeable

        refuse_unjudgeable(bench_opts, 2)
    return ClusterOptions(address=addr, out_dir=out, config=cfg, bench_opts=bench_opts, node_timeout=args.node_timeout,
                          preflight=args.preflight, only=only, bench=args.bench, pairwise=args.pairwise,
                          pairwise_sizes=pw_sizes, outlier_factor=args.outlier_factor, report=args.report,
                          title=args.title, argv=list(sys.argv[1:]))


def _isolate_options(args: argparse.Namespace):
    """--isolate and its flags -> IsolateOptions (None without --isolate); every bad value is a usage error."""
    import math

    from ..bench.collectives import parse_ops
    from ..bench.sizes import parse_sizes

    flags = {"--quarantine-only": args.quarantine_only, "--include-quarantined": args.include_quarantined,
             "--skip-validated-within": args.skip_validated_within is not None,
             "--group-size": args.group_size is not None, "--measure-timeout": args.measure_timeout is not None}
    if not args.isolate:
        used = [f for f, on in flags.items() if on]
        if used:
            raise UsageError(f"{used[0]} belongs to --isolate: add --isolate")
        return None
    from ..cluster import validated
    from ..cluster.isolate_run import IsolateOptions
    from ..cluster.quarantine import DEFAULT_FILE

    try:
        ops = parse_ops(args.isolate_op)
    except UsageError as e:
        raise UsageError(str(e).replace("--op", "--isolate-op", 1)) from None
    if len(ops) != 1:
        raise UsageError(f"--isolate-op {args.isolate_op!r}: name one collective (e.g. all_reduce)")
    try:
        sizes = parse_sizes(args.isolate_sizes)
    except UsageError as e:
        raise UsageError(str(e).replace("--sizes", "--isolate-sizes", 1)) from None
    if args.group_size is not None and args.group_size < 2:
        raise UsageError("--group-size must be at least 2 (a collective needs two nodes)")
    if not (math.isfinite(args.straggler_factor) and 0 <= args.straggler_factor < 1):
        raise UsageError("--straggler-factor must be at least 0 and below 1 (0 turns the straggler rule off)")
    if args.measure_timeout is not None and not (math.isfinite(args.measure_timeout) and args.measure_timeout > 0):
        raise UsageError("--measure-timeout must be a number of seconds > 0")
    within = None
    if args.skip_validated_within is not None:
        within = validated.parse_duration(args.skip_validated_within)
    qfile = Path(args.quarantine_file) if args.quarantine_file else DEFAULT_FILE
    if qfile.is_dir():
        raise UsageError(f"--quarantine-file {qfile}: is a folder; name a JSON file")
    vdir = Path(args.validated_dir) if args.validated_dir else validated.DEFAULT_DIR
    if vdir.exists() and not vdir.is_dir():
        raise UsageError(f"--validated-dir {vdir}: exists and is not a folder")
    from ..cluster import quarantine

    quarantine.load(qfile)  # a damaged list is refused now, before any node is asked
    return IsolateOptions(op=ops[0], sizes=sizes, group_size=args.group_size, straggler_factor=args.straggler_factor,
                          measure_timeout=args.measure_timeout, quarantine_file=qfile,
                          quarantine_only=args.quarantine_only, include_quarantined=args.include_quarantined,
                          validated_dir=vdir, skip_validated_within=within)


def run(args: argparse.Namespace) -> int:
    # --isolate's flags first: a refused one leaves nothing behind; --isolate replaces the cluster-wide bench
    isolate = _isolate_options(args)
    if isolate is not None:
        args.bench = False
    opts = _options(args)
    opts.isolate = isolate
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not `import ray`: that costs seconds before the address probe
        raise UsageError("rdmacheck cluster needs Ray on this machine: pip install 'rdmacheck[cluster]' "
                         "(or run it inside the Ray head container)") from None
    from ..cluster.driver import ClusterRun

    out = ClusterRun(opts).run()
    ev = out["evidence"]
    for r in ev.results:
        print(f"# [{r.status.value.upper():4s}] {r.id}: {r.observed}")
    print(f"evidence: {opts.out_dir}")
    if out["report"]:
        print(f"{out['verdict']}: {out['reason']}")
        print(f"report: {out['report']}")
        return 1 if out["verdict"] == "FAIL" else 0
    return ev.exit_code
