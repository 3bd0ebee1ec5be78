"""``rdmacheck bench``: collective bandwidth sweeps with nccl-tests' numbers and a busbw gate."""

from __future__ import annotations

import argparse
import os
import sys

from rdmacheck.util.errors import UsageError
from rdmacheck.util.units import seconds_type

DESCRIPTION = """\
Measure NCCL (or gloo) collectives over torch.distributed and print the table
nccl-tests prints (diff the two), then gate the bus bandwidth on the plateau.

Sizes and numbers mean exactly what nccl-tests' mean:
  size   the larger of the send/receive buffers, bytes (K/M/G are binary)
  time   mean time per call, MAX over ranks (CUDA events on GPU)
  algbw  size / time;  busbw = algbw x 2(n-1)/n (all_reduce),
         (n-1)/n (all_gather, reduce_scatter, alltoall), 1 (broadcast, sendrecv)
  GB/s   1e9 bytes/s

The gate (bench.busbw) takes, per op, the median busbw of the sizes at or above
the plateau threshold (profile plateau_min_bytes, 64 MiB) and compares it with
--expect-busbw (profile min_busbw, 12 GB/s: one 100 Gb/s RoCE link).  It never
averages the whole sweep: 1 KiB latency would drag a healthy link down.

The latency gate (bench.latency, docs/latency.md) judges the other end: per
op, the time per call at the small sizes against --expect-latency or, for NCCL
runs, the profile's [latency] table (all_reduce over one 100 Gb/s RoCE link).

--algo (docs/latency.md#algo): ring when the ranks span nodes (a network
verdict: NCCL's own pick can report busbw above line rate, nccl-tests #196,
nccl #812), NCCL's own choice (auto) on one node; recorded in the evidence.
"""

EPILOG = """\
examples:
  rdmacheck bench --nproc 2                          2 local GPUs, all_reduce 1K..1G
  rdmacheck bench --nproc 2 --op all --sizes 8,1M,64M --json reports/bench.json --csv reports/bench.csv
  rdmacheck bench --backend gloo --nproc 3 --sizes 1K..64K   CPU only, any machine
  rdmacheck bench --nproc 2 --sizes 8K..1M --expect-latency 8K=100us,1M=350us   small-size latency gate
  rdmacheck bench --nproc 2 --algo tree              force NCCL_ALGO=Tree on every rank

two nodes, one GPU each (run on each node, R = 0 on the first node, 1 on the second):
  torchrun --nnodes 2 --nproc-per-node 1 --node-rank R \\
           --rdzv-backend c10d --rdzv-endpoint 192.168.100.1:29500 \\
           -m rdmacheck bench --sizes 1K..1G --json reports/bench.json
  (set NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME and NCCL_IB_HCA as in docker/.env;
   rank 0 prints the table and writes the evidence)

robustness: a rank that never joins, hangs or dies ends the run within --timeout
with the rank and phase named (exit 1); finished sizes stay in --json.
memory: the largest size's buffers (x2 for fill and --check) are compared with
free GPU memory, or with system memory on unified-memory GPUs (DGX Spark),
before anything is allocated; --max-memory sets the limit yourself.

bandwidth gate: --expect-busbw (or min_busbw from a profile/--expect) must be judgeable: with no
size >= plateau_min_bytes in --sizes, or on 1 rank, the run is refused before it starts (exit 2).

exit codes: 0 every gate passed, 1 a gate failed or a rank failed (the rank that stopped
progressing is named), 2 usage error, 3 internal error (crash report saved).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to run")
    g.add_argument("--op", default="all_reduce", metavar="OPS",
                   help="all_reduce, all_gather, reduce_scatter, broadcast, alltoall, sendrecv, a comma list, or all "
                        "(default all_reduce)")
    g.add_argument("--sizes", "-s", default="1K..1G", metavar="SIZES",
                   help="MIN..MAX stepping by --step-factor, or a list such as 8,1M,64M; K/M/G binary (default 1K..1G)")
    g.add_argument("--step-factor", "-f", type=int, default=2, metavar="F", help="range step factor (default 2)")
    g.add_argument("--dtype", "-d", default="float", help="float, half, bfloat16, double, int8, uint8, int32, int64 (default float)")
    g = p.add_argument_group("how")
    g.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="start N ranks on this machine (one per GPU); omit under torchrun")
    g.add_argument("--backend", choices=["nccl", "gloo"], default=None,
                   help="default: nccl when torch sees CUDA, else gloo")
    g.add_argument("--iters", "-n", type=int, default=None,
                   help="timed calls per size (default: time-based, see --time-per-size)")
    g.add_argument("--warmup", "-w", type=int, default=5, help="warm-up calls per size (default 5)")
    g.add_argument("--time-per-size", type=seconds_type("--time-per-size", maximum=3600), default=0.02, metavar="S",
                   help="time-based iterations: about S seconds of calls per size, at least 20, at most 10000 (default 0.02)")
    g.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="capture the timed loop in a CUDA graph.  Default (auto, NCCL on GPUs): per size, time a "
                        "captured and an eager loop and keep the faster; a graph hides ~25 us of torch.distributed "
                        "launch overhead at small sizes, eager wins once a call takes ~1 ms")
    g.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="verify every element on every rank (nccl-tests #wrong; default on)")
    g.add_argument("--timeout", type=seconds_type("--timeout"), default=120.0, metavar="S",
                   help="seconds a rank may spend in init or in one size before the run ends (default 120)")
    g.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="most memory one rank may allocate (default: detected free GPU / system memory)")
    g.add_argument("--algo", choices=["ring", "tree", "auto"], default=None,
                   help="NCCL_ALGO for every rank: ring, tree or auto (NCCL chooses).  Default: ring when the "
                        "ranks span nodes (the network verdict), auto on one node; an NCCL_ALGO already in "
                        "the environment is kept when --algo is not given")
    g.add_argument("--hook", action="append", default=[], metavar="MODULE:FUNC",
                   help="call FUNC(hooks) on every rank to add per-size callbacks (see rdmacheck.bench.hooks)")
    g = p.add_argument_group("expectations and output")
    g.add_argument("--env", default=None, metavar="FILE", help="the compose .env (default docker/.env when present)")
    g.add_argument("--profile", default=None, metavar="FILE|NAME", help="TOML profile of expectations, or reference / dgx-spark")
    g.add_argument("--expect", action="append", default=[], metavar="KEY=VALUE",
                   help="override one profile value, e.g. plateau_min_bytes=16M")
    g.add_argument("--expect-busbw", default=None, metavar="GB/s",
                   help="bus bandwidth the plateau must reach (default: profile min_busbw, 12 GB/s)")
    g.add_argument("--expect-latency", default=None, metavar="SIZE=TIME[,...]",
                   help="small-size ceilings for bench.latency, e.g. 8K=100us,1M=0.35ms (every op) or "
                        "all_reduce:8K=100us (one op); default: the profile's [latency] table, NCCL runs only")
    g.add_argument("--json", default=None, metavar="FILE", help="write Evidence(kind=bench), rewritten after every size")
    g.add_argument("--csv", default=None, metavar="FILE", help="write the table as CSV")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--table", choices=["auto", "compact", "nccl-tests"], default="auto",
                   help="the table on stdout: nccl-tests' layout (118 columns, what its tools and "
                        "`report --import` read) or a compact one (size, then time/algbw/busbw/#wrong per "
                        "variant, 77 columns); auto (default): compact on a terminal narrower than 118 "
                        "columns, nccl-tests' layout otherwise and always into a file or pipe")
    g.add_argument("--verbose", "-v", action="store_const", const="nccl-tests", dest="table",
                   help="the full nccl-tests table on any terminal (= --table nccl-tests)")


def build_options(args: argparse.Namespace):
    """Validate everything that can be validated without torch; return BenchOptions."""
    from ..config import load_config, parse_bandwidth, parse_bytes
    from ..bench.collectives import dtype_name, parse_ops
    from ..bench.runner import BenchOptions
    from ..bench.sizes import parse_sizes

    sizes = parse_sizes(args.sizes, args.step_factor)
    ops = parse_ops(args.op)
    dtype = dtype_name(args.dtype)
    if args.iters is not None and not 1 <= args.iters <= 10_000_000:
        raise UsageError("--iters must be between 1 and 10000000")
    if not 0 <= args.warmup <= 1_000_000:
        raise UsageError("--warmup must be between 0 and 1000000")
    if not args.timeout > 0:
        raise UsageError("--timeout must be > 0 seconds")
    if not args.time_per_size > 0:
        raise UsageError("--time-per-size must be > 0 seconds")
    if args.nproc is not None and not 1 <= args.nproc <= 1024:
        raise UsageError("--nproc must be between 1 and 1024")
    cfg = load_config(args.env, args.profile, args.expect, process_env=dict(os.environ))
    expect = parse_bandwidth(args.expect_busbw, "--expect-busbw") if args.expect_busbw is not None else cfg.profile.min_busbw
    explicit = args.expect_busbw is not None or "min_busbw" in cfg.profile.explicit
    max_mem = parse_bytes(args.max_memory, "--max-memory") if args.max_memory is not None else None
    from ..bench.latency import parse_latency_table

    latency = parse_latency_table(args.expect_latency) if args.expect_latency is not None else None
    return BenchOptions(
        ops=ops, sizes=sizes, dtype=dtype, iters=args.iters, warmup=args.warmup, time_per_size=args.time_per_size,
        graph=args.graph, check=args.check, backend=args.backend, timeout=args.timeout,
        json_path=args.json, csv_path=args.csv, expect_busbw=expect, expect_explicit=explicit,
        plateau_min_bytes=cfg.profile.plateau_min_bytes, max_memory=max_mem, hooks=list(args.hook),
        config=cfg.to_dict(), progress=args.progress, table=args.table, argv=list(sys.argv[1:]),
        algo=args.algo, expect_latency=latency, latency_profile=list(cfg.profile.latency),
    )


def refuse_unjudgeable(opts, world: int) -> None:
    """A bandwidth or latency gate the user asked for that this run could never judge: exit 2 before any rank starts."""
    from ..bench.gate import ONE_RANK, one_rank_refusal, plateau_refusal
    from ..bench.plan import build_plan

    if world == 1 and opts.expect_latency:
        # one rank's "latency" is a local call: an explicit --expect-latency would pass on nothing
        raise UsageError(f"{ONE_RANK}, so --expect-latency cannot be judged; run 2 or more ranks "
                         "(--nproc 2, or torchrun across nodes), or drop --expect-latency")
    if not opts.expect_explicit or opts.expect_busbw == 0:
        # the default expectation, or 0 ("measure, expect nothing"): the gate says SKIP and why
        return
    if world == 1:
        raise UsageError(one_rank_refusal(opts.expect_busbw))
    plan, _ = build_plan(opts.ops, opts.sizes, opts.dtype, world)
    msg = plateau_refusal([r.nbytes for r in plan] or opts.sizes, opts.plateau_min_bytes, opts.expect_busbw)
    if msg:
        raise UsageError(msg)


def run(args: argparse.Namespace) -> int:
    from ..bench.hooks import resolve_hook
    from rdmacheck.util.outpath import check_output_paths

    opts = build_options(args)
    check_output_paths((opts.json_path, "--json"), (opts.csv_path, "--csv"),
                       inputs=((getattr(args, "env", None), "--env"), (getattr(args, "profile", None), "--profile")))
    for spec in opts.hooks:
        resolve_hook(spec)  # a bad module or function is exit 2 here, not a traceback in every rank
    in_torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world = args.nproc if args.nproc else (int(os.environ["WORLD_SIZE"]) if in_torchrun
                                           and os.environ["WORLD_SIZE"].isdecimal() else 1)
    refuse_unjudgeable(opts, world)
    import importlib.util

    try:
        has_torch = importlib.util.find_spec("torch") is not None  # not `import torch`: that costs seconds
    except (ImportError, ValueError):
        has_torch = False
    if not has_torch:
        raise UsageError("torch is not installed; install it first: pip install 'rdmacheck[bench]' "
                         "(on a CPU-only machine: pip install torch==2.13.0, a bare `torch` pulls a CUDA build)")
    if opts.max_memory is not None:
        # known before any rank starts: refuse at once
        from ..bench.gate import memory_verdict
        from ..bench.plan import build_plan

        n = args.nproc or int(os.environ.get("WORLD_SIZE", "1") or 1)
        plan, _ = build_plan(opts.ops, opts.sizes, opts.dtype, n)
        if plan:
            msg = memory_verdict(max(r.memory_need() for r in plan), opts.max_memory, "--max-memory", opts.max_memory)
            if msg:
                raise UsageError(msg)
    if args.nproc and args.nproc > 1:
        if in_torchrun:
            raise UsageError("--nproc starts local ranks itself; under torchrun leave it out")
        from ..bench.launch import spawn

        return spawn(opts, args.nproc)
    from ..bench.runner import run_rank

    return run_rank(opts)
