"""`rdmacheck link`: prove RDMA moves between two nodes, with NCCL's own QP settings."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from rdmacheck.util.errors import UsageError

DESCRIPTION = """\
Move RDMA bytes between this node and a peer, per selected HCA pair and then all pairs at once, with
queue pairs set up as NCCL would (NCCL_IB_HCA's ports, the GID NCCL picks, NCCL_IB_TC as the traffic
class, NCCL_IB_SL, NCCL_IB_TIMEOUT, NCCL_IB_RETRY_CNT, the smaller active MTU of the two ports):
RDMA WRITE bandwidth at 64 KiB..8 MiB messages, verified in the receiver's memory, and a write
ping-pong for latency.  A TCP side channel exchanges QP numbers, GIDs and keys (as perftest does).
Every wait is bounded: a dropped path ends in seconds with its cause.

Results: link.reach (a QP reached the peer's; when it did not while TCP to the same address works,
it says RoCE v2 / UDP 4791 is dropped or the peer's MAC is wrong), link.bandwidth (GB/s against the
port's line rate x --floor, or --min-bandwidth), link.latency (p50/p99 of the smallest message),
link.lossless (this node's port counters over each run: lossless, lossless under congestion, lossy
(retransmits: warns) or a broken lossless contract (pause storm, overrun: fails)).
"""

EPILOG = """\
examples:
  rdmacheck link --serve                          # on the head: listen on its bootstrap address, 300 s
  rdmacheck link --peer 192.168.100.1 --json reports/link.json
  rdmacheck link --peer spark-01-mesh --engine perftest     # ib_write_bw/ib_write_lat, same flags
  rdmacheck link --serve --engine perftest        # the matching server
exit codes: 0 every result passed (--serve: served until its lifetime ended), 1 a result failed or
the peer could not be reached, 2 usage or input error.  Inside the Ray containers, run it with the
container's .env (the same NCCL_IB_* values the job uses): docs/datapath.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rdmacheck.preflight.judge import add_config_arguments
    from rdmacheck.util.units import seconds_type

    add_config_arguments(p)
    role = p.add_argument_group("role (one of)")
    x = role.add_mutually_exclusive_group()
    x.add_argument("--serve", action="store_true", help="answer one client at a time for --lifetime seconds")
    x.add_argument("--peer", metavar="ADDR", help="the node running --serve (its mesh address or name)")
    g = p.add_argument_group("probe")
    g.add_argument("--port", type=int, default=18515, metavar="N",
                   help="side-channel TCP port of the first HCA; the i-th selected HCA uses N+i (default 18515)")
    g.add_argument("--listen", metavar="ADDR", help="--serve: address to listen on (default: this node's NCCL "
                                                    "bootstrap address, else the address of its first GID)")
    g.add_argument("--lifetime", type=seconds_type("--lifetime", maximum=86400), default=300.0, metavar="S",
                   help="--serve: stop after S seconds (default 300)")
    g.add_argument("--clients", type=int, default=None, metavar="N",
                   help="--serve: stop after answering N clients per HCA (default: until --lifetime ends)")
    g.add_argument("--engine", choices=("pyverbs", "perftest"), default="pyverbs",
                   help="pyverbs (default) or perftest's ib_write_bw/ib_write_lat with the same flags")
    g.add_argument("--duration", type=seconds_type("--duration", maximum=600), default=2.0, metavar="S",
                   help="bandwidth: seconds per message size (default 2)")
    g.add_argument("--lat-iters", type=int, default=1000, metavar="N",
                   help="latency: ping-pong round trips per message size (default 1000)")
    g.add_argument("--floor", type=float, default=0.8, metavar="F",
                   help="link.bandwidth: the fraction of the port's line rate expected at >= 1 MiB (default 0.8)")
    g.add_argument("--min-bandwidth", type=float, metavar="GB/s",
                   help="link.bandwidth: judge against this instead of the line rate (e.g. soft-RoCE)")
    g.add_argument("--max-latency", type=float, nargs=2, default=(20.0, 100.0), metavar=("P50", "P99"),
                   help="link.latency: one-way microseconds of the smallest message (default 20 100)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the link evidence (JSON, atomically) to FILE")


def _validate(args: argparse.Namespace) -> None:
    if not args.serve and not args.peer:
        raise UsageError("pass --serve on one node and --peer ADDR on the other (rdmacheck link --help)")
    if not 1 <= args.port <= 65000:
        raise UsageError(f"--port {args.port}: use 1..65000 (the i-th HCA takes N+i)")
    if args.clients is not None and not 1 <= args.clients <= 10000:
        raise UsageError(f"--clients {args.clients}: use 1..10000")
    if not 10 <= args.lat_iters <= 100000:
        raise UsageError(f"--lat-iters {args.lat_iters}: use 10..100000 round trips")
    if not 0 < args.floor <= 1:
        raise UsageError(f"--floor {args.floor}: a fraction of the line rate, 0 < F <= 1 (e.g. 0.8)")
    if args.min_bandwidth is not None and not args.min_bandwidth > 0:
        raise UsageError("--min-bandwidth must be > 0 GB/s")
    if not all(0 < v < 1e7 for v in args.max_latency):
        raise UsageError("--max-latency P50 P99: two positive microsecond bounds, e.g. 20 100")
    if args.serve and args.json:
        raise UsageError("--json is the client's evidence: pass it with --peer")
    if args.peer is not None:
        peer = args.peer.strip()
        if not peer or len(peer) > 253 or any(c.isspace() or ord(c) < 32 for c in peer) or "/" in peer:
            raise UsageError(f"--peer {args.peer!r}: give the peer's address or host name")
        args.peer = peer


def _plans(args: argparse.Namespace):
    from rdmacheck import preflight
    from rdmacheck.link import plan_ports
    from rdmacheck.preflight.gather import gather

    root, config = preflight.open_config("/", args.env, args.profile, args.expect)
    facts = gather(root, config)
    plans = plan_ports(facts, config)
    return facts, config, plans


def _say(msg: str) -> None:
    print(f"rdmacheck link: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from rdmacheck.util.outpath import check_output_paths

    _validate(args)
    check_output_paths((args.json, "--json"))
    facts, config, plans = _plans(args)
    if not plans:
        _say("no selected RDMA port with a usable GID on this node: run `rdmacheck preflight` (rdma.devices, rdma.gid)")
        return 1
    if args.serve:
        return _serve(args, facts, plans)
    return _client(args, facts, config, plans)


def _serve(args, facts, plans) -> int:
    from rdmacheck.verbs import engine, wire

    addr = args.listen or (facts.bootstrap or {}).get("addr") or plans[0].gid_ip
    if not addr:
        raise UsageError("no address to listen on: pass --listen ADDR (this node's mesh address)")
    if args.engine == "perftest":
        from rdmacheck.link.perftest import serve as perf_serve

        return perf_serve(plans, addr, args.port, args.lifetime, _say)
    reports, threads = [None] * len(plans), []
    for i, plan in enumerate(plans):
        def one(i=i, plan=plan):
            try:
                reports[i] = wire.serve_link(engine.QpParams.from_dict(plan.qp), addr, args.port + i, args.lifetime,
                                             max_sessions=args.clients, log=lambda m, n=plan.name: _say(f"{n}: {m}"))
            except wire.WireError as e:
                reports[i] = e
        t = threading.Thread(target=one, daemon=True, name=f"serve-{plan.name}")
        t.start()
        threads.append(t)
        _say(f"serving {plan.name} (GID {plan.gid_index} {plan.gid_ip}, TC {plan.qp['traffic_class']}, "
             f"SL {plan.qp['service_level']}, MTU {plan.active_mtu}) on {addr}:{args.port + i} for {args.lifetime:g} s")
    for t in threads:
        t.join(args.lifetime + 30)
    bad = [r for r in reports if isinstance(r, Exception) or r is None]
    for r in bad:
        _say(f"could not serve: {r}")
    return 1 if bad else 0


def _client(args, facts, config, plans) -> int:
    from rdmacheck.preflight.facts.window import Window
    from rdmacheck.preflight.root import HostRoot
    from rdmacheck.evidence.jsonout import write_evidence
    from rdmacheck.evidence.model import Evidence, exit_code
    from rdmacheck.link import gates
    from rdmacheck.output.console import render_results

    if args.engine == "perftest":
        from rdmacheck.link.perftest import run_pair
    else:
        run_pair = _run_pyverbs
    nds = _port_netdevs(facts, plans)
    runs = []
    for i, plan in enumerate(plans):
        _say(f"{plan.name} -> {args.peer}:{args.port + i} ...")
        t0 = time.monotonic()
        with Window(HostRoot("/"), {plan.name: nds.get(plan.name, [])}) as w:
            res = run_pair(plan, args.peer, args.port + i, args)
        runs.append(_row(plan, args, i, res, "pair", w))
        _say(f"{plan.name}: {'reached' if res.get('ok') else 'failed at ' + str(res.get('stage'))} "
             f"({time.monotonic() - t0:.1f} s)")
    if len(plans) > 1 and all((r["result"] or {}).get("ok") for r in runs):
        together: list = [None] * len(plans)
        ths = [threading.Thread(target=lambda i=i, p=p: together.__setitem__(i, run_pair(p, args.peer, args.port + i, args)))
               for i, p in enumerate(plans)]
        with Window(HostRoot("/"), {p.name: nds.get(p.name, []) for p in plans}) as w:
            for t in ths:
                t.start()
            for t in ths:
                t.join()
        runs += [_row(p, args, i, together[i] or {}, "together", w) for i, p in enumerate(plans)]
    lo, hi = args.max_latency
    results = [gates.judge_reach(runs), gates.judge_bandwidth(runs, args.floor, args.min_bandwidth),
               gates.judge_latency([r for r in runs if r["mode"] == "pair"], lo, hi), gates.judge_lossless(runs)]
    if args.json:
        ev = Evidence(kind="link", results=results)
        if facts.host:
            ev.host = facts.host
        ev.context = {"peer": args.peer, "port": args.port, "engine": args.engine, "config": config.to_dict(),
                      "ports": [p.to_dict() for p in plans], "runs": runs,
                      "expect": {"floor": args.floor, "min_bandwidth": args.min_bandwidth,
                                 "max_latency_us": list(args.max_latency)}}
        write_evidence(ev, args.json)
    render_results(results, title=f"rdmacheck link — {facts.host} -> {args.peer} ({args.engine})")
    return exit_code(results)


def _row(plan, args, i, res: dict, mode: str, window) -> dict:
    remote = (res.get("server") or {}).get("device") or (res.get("remote") or {}).get("device")
    key = plan.name.replace(":", "/")
    return {"mode": mode, "local_port": plan.name, "remote_port": remote, "peer": args.peer,
            "tcp_port": args.port + i, "rate_gbps": plan.rate_gbps, "result": res,
            # this node's counters over the run (the peer's are the peer's to read)
            "lossless": {key: window.verdicts[key].to_dict()} if key in window.verdicts else {},
            "counter_findings": [f.to_dict() for f in window.findings]}


def _port_netdevs(facts, plans) -> dict:
    """Each planned port's netdevs (gather's selection already holds facts.infiniband's map), for the
    counter windows of its runs."""
    sel = {p.name: list(p.netdevs) for p in (facts.selection.ports if facts.selection else [])}
    return {p.name: sel.get(p.name) or ([p.netdev] if p.netdev else []) for p in plans}


def _run_pyverbs(plan, peer: str, port: int, args) -> dict:
    from rdmacheck.link import CONNECT_GRACE_S
    from rdmacheck.verbs import engine, wire

    cfg = wire.LinkConfig(bw_duration_s=args.duration, lat_iters=args.lat_iters)
    give_up = time.monotonic() + CONNECT_GRACE_S
    while True:
        res = wire.run_link(engine.QpParams.from_dict(plan.qp), peer, port, cfg).to_dict()
        refused = res.get("stage") == "wire" and "Connection refused" in str(res.get("error"))
        if not refused or time.monotonic() >= give_up:
            return res
        time.sleep(1.0)
