#!/usr/bin/env python3
"""rdmacheck bench vs nccl-tests all_reduce_perf, side by side, same GPUs, same run.

    python benchmarks/vs_nccl_tests.py --nccl-tests /path/to/all_reduce_perf [--ngpus 2] [--rounds 2] [--algo ring]

Runs, alternately for --rounds rounds:
  nccl-tests   all_reduce_perf -b 1K -e 1G -f 2 -g N          (one process, N GPUs; its defaults: -c 1, 20 iters)
  rdmacheck    python -m rdmacheck bench --nproc N --sizes 1K..1G --json ...   (N processes; --check on)
and prints, per size, the time and busbw ratios (rdmacheck / nccl-tests) against the targets of issue 4:

  busbw  >= 0.98x at every size >= 4 MiB
  time   <= 1.10x at 1 KiB .. 1 MiB
  wall   <= 1.5x for the whole sweep, process start to final table

torch.distributed's all_reduce is in place, so rdmacheck's time is compared with nccl-tests' in-place
column (its out-of-place column is printed for reference).  Per size, the best of the rounds is used for
both tools (the same rule for both), and the spread across rounds is printed so noise is visible.
--algo ring|tree sets NCCL_ALGO for both tools (nccl-tests through the environment, rdmacheck through its own
--algo, which records the choice in the evidence); the small-size latency comparison of docs/latency.md is
`-b 8K -e 1M --algo ring`.
Build all_reduce_perf yourself from the public nccl-tests sources; this repository ships no copy.

Two-node mode (--nodes N, N >= 2): N NCCL "nodes" on this machine's one GPU, told apart by NCCL_HOSTID
(docs/gpu-two-nodes.md; start the MPS control daemon first, or every call waits for a GPU time slice):

    python benchmarks/vs_nccl_tests.py --nodes 2 --nccl-tests BUILD/all_reduce_perf --rounds 3 --out DIR

  rdmacheck    N torchrun agents (--nnodes N --nproc-per-node 1, c10d rendezvous on 127.0.0.1), agent i
               with NCCL_HOSTID=node<i>, each running `python -m rdmacheck bench` on its device 0
  nccl-tests   mpirun -np N, an all_reduce_perf built with MPI=1, each rank with NCCL_HOSTID=node<rank>
               and NCCL_TESTS_DEVICE=0, -g 1
Both with NCCL_SOCKET_IFNAME=lo, NCCL_IB_DISABLE=1 unless set, NCCL_ALGO=Ring (rdmacheck's default across
nodes; --algo changes both).  The tools alternate for --rounds rounds (>= 3 recommended: this path is noisy),
and per size the table gives each round's rdmacheck/nccl-tests ratio of time and of busbw (round i of one
tool against round i of the other) as min / median / max, the whole-sweep wall ratio the same way, and GPU
memory: rdmacheck's torch peak per rank at the largest size (the bench's gpu_memory hook) and the device's
used memory (nvidia-smi, sampled every 100 ms) at its peak during each tool's run, above the idle level.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rdmacheck.importers.nccl_tests_text import parse_text  # noqa: E402

TARGET_BUSBW = 0.98
TARGET_TIME = 1.10
TARGET_WALL = 1.5


def _env() -> dict[str, str]:
    e = dict(os.environ)
    # NVLink multicast (NVLS) stays off on shared machines: it can take the host's GPUs down.
    e.setdefault("NCCL_NVLS_ENABLE", "0")
    e.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    e.setdefault("NVSHMEM_DISABLE_NVLS", "1")
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def _timed(cmd: list[str], cwd=None, algo: str | None = None) -> tuple[float, float, int, str]:
    """(seconds to the line after the table, seconds to exit, rc, output).

    Both tools print '# Out of bounds values' right after the last table row: that is
    "process start to final table"; the process exit (NCCL teardown) is reported too.
    """
    t0 = time.perf_counter()
    env = _env()
    if algo in NCCL_ALGO:
        env["NCCL_ALGO"] = NCCL_ALGO[algo]
    elif algo == "auto":  # NCCL's own choice, as rdmacheck's --algo auto
        env.pop("NCCL_ALGO", None)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    lines, t_table = [], None
    assert p.stdout is not None
    for line in p.stdout:
        lines.append(line)
        if t_table is None and line.startswith("# Out of bounds values"):
            t_table = time.perf_counter() - t0
    rc = p.wait(timeout=600)
    t_exit = time.perf_counter() - t0
    return (t_table or t_exit), t_exit, rc, "".join(lines)


NCCL_ALGO = {"ring": "Ring", "tree": "Tree"}


def run_nccl_tests(binary: str, ngpus: int, b: str, e: str, log: Path, algo: str | None = None) -> tuple[float, dict]:
    cmd = [binary, "-b", b, "-e", e, "-f", "2", "-g", str(ngpus)]
    wall, t_exit, rc, text = _timed(cmd, algo=algo)
    log.write_text(text + f"\n# vs_nccl_tests: table at {wall:.3f} s, exit at {t_exit:.3f} s\n")
    if rc != 0:
        raise SystemExit(f"nccl-tests failed ({rc}):\n{text[-3000:]}")
    run = parse_text(text, source=str(log), op="all_reduce")
    out: dict[int, dict] = {}
    for r in run.records:
        out.setdefault(r["bytes"], {})["ip" if r["in_place"] else "oop"] = r
    return wall, out


def run_rdmacheck(ngpus: int, b: str, e: str, log: Path, extra: list[str]) -> tuple[float, dict, dict]:
    with tempfile.TemporaryDirectory() as td:
        js = Path(td) / "bench.json"
        cmd = [sys.executable, "-m", "rdmacheck", "bench", "--nproc", str(ngpus), "--sizes", f"{b}..{e}",
               "--json", str(js), "--no-progress", *extra]
        wall, t_exit, rc, text = _timed(cmd, cwd=REPO)
        log.write_text(text + f"\n# vs_nccl_tests: table at {wall:.3f} s, exit at {t_exit:.3f} s\n")
        if rc not in (0, 1):
            raise SystemExit(f"rdmacheck bench failed ({rc}):\n{text[-3000:]}")
        ev = json.loads(js.read_text())
    return wall, {r["bytes"]: r for r in ev["records"]}, ev


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nccl-tests", required=True, help="path of an all_reduce_perf binary")
    ap.add_argument("--nodes", type=int, default=0,
                    help="two-node mode: N NCCL nodes on this machine's GPU 0 (NCCL_HOSTID per node); see above")
    ap.add_argument("--mpirun", default="mpirun", help="two-node mode: the mpirun of the MPI nccl-tests was built with")
    ap.add_argument("--ngpus", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-b", default="1K")
    ap.add_argument("-e", default="1G")
    ap.add_argument("--eager", action="store_true", help="also run rdmacheck with --no-graph (a plain torch loop)")
    ap.add_argument("--out", default=None, help="folder for raw logs and the last rdmacheck evidence")
    ap.add_argument("--algo", choices=["ring", "tree", "auto"], default=None,
                    help="NCCL_ALGO for both tools (default: each tool's own default)")
    a = ap.parse_args()
    if a.nodes:
        from vs_nccl_tests_nodes import two_node_main  # the two-node mode lives beside this file

        return two_node_main(a)
    algo_args = ["--algo", a.algo] if a.algo else []
    out = Path(a.out or tempfile.mkdtemp(prefix="vs-nccl-"))
    out.mkdir(parents=True, exist_ok=True)

    nt_walls, rc_walls, eg_walls = [], [], []
    nt_runs, rc_runs, eg_runs = [], [], []
    last_ev: dict = {}
    for i in range(a.rounds):
        w, r = run_nccl_tests(a.nccl_tests, a.ngpus, a.b, a.e, out / f"nccl-tests-{i}.txt", a.algo)
        nt_walls.append(w)
        nt_runs.append(r)
        w, r, ev = run_rdmacheck(a.ngpus, a.b, a.e, out / f"rdmacheck-{i}.txt", algo_args)
        rc_walls.append(w)
        rc_runs.append(r)
        (out / "rdmacheck-bench.json").write_text(json.dumps(ev, indent=2))
        last_ev = ev
        if a.eager:
            w, r, _ = run_rdmacheck(a.ngpus, a.b, a.e, out / f"rdmacheck-eager-{i}.txt", ["--no-graph", *algo_args])
            eg_walls.append(w)
            eg_runs.append(r)

    sizes = sorted(nt_runs[0])
    dev = ""
    for line in (out / "nccl-tests-0.txt").read_text().splitlines():
        if line.startswith("#  Rank") and "device" in line:
            dev = line.split("]")[-1].strip()
    print(f"# rdmacheck bench vs nccl-tests all_reduce_perf, {a.ngpus} GPUs ({dev}), {a.rounds} round(s) alternating, "
          f"best time per size of the rounds for each tool; NCCL_ALGO {NCCL_ALGO.get(a.algo, 'default')}; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    if a.ngpus == 1:
        print("# one GPU: nothing crosses a link (busbw 0); the times compare each tool's timing of the same call")
    print("# nccl-tests time: in-place column (torch all_reduce is in place); oop shown for reference")
    hdr = f"{'size':>11} {'nt oop us':>10} {'nt ip us':>9} {'rc us':>9} {'t ratio':>8} {'nt busbw':>9} {'rc busbw':>9} {'bw ratio':>8} {'rc spread':>9}"
    if a.eager:
        hdr += f" {'eager us':>9} {'e ratio':>8}"
    print(hdr)
    t_fail, b_fail = [], []
    for s in sizes:
        nt_ip = min(r[s]["ip"]["time_us"] for r in nt_runs)
        nt_oop = min(r[s]["oop"]["time_us"] for r in nt_runs)
        nt_bw = max(r[s]["ip"]["busbw"] for r in nt_runs)
        rc_ts = [r[s]["time_us"] for r in rc_runs if s in r]
        if not rc_ts:
            continue
        rc_t = min(rc_ts)
        rc_bw = max(r[s]["busbw"] for r in rc_runs if s in r)
        tr = rc_t / nt_ip
        br = rc_bw / nt_bw if nt_bw else float("nan")
        spread = (max(rc_ts) - min(rc_ts)) / min(rc_ts) if len(rc_ts) > 1 else 0.0
        mark_t = "" if not (1024 <= s <= 1 << 20) else (" " if tr <= TARGET_TIME else "!")
        mark_b = "" if s < 4 << 20 else (" " if br >= TARGET_BUSBW else "!")
        if mark_t == "!":
            t_fail.append(s)
        if mark_b == "!":
            b_fail.append(s)
        line = (f"{s:>11} {nt_oop:>10.2f} {nt_ip:>9.2f} {rc_t:>9.2f} {tr:>7.2f}{mark_t or ' '} {nt_bw:>9.2f} "
                f"{rc_bw:>9.2f} {br:>7.3f}{mark_b or ' '} {spread * 100:>8.1f}%")
        if a.eager:
            et = min(r[s]["time_us"] for r in eg_runs if s in r)
            line += f" {et:>9.2f} {et / nt_ip:>8.2f}"
        print(line)
    ntw, rcw = min(nt_walls), min(rc_walls)
    print(f"# wall, process start to final table (best of {a.rounds}): nccl-tests {ntw:.2f} s "
          f"(all: {', '.join(f'{w:.2f}' for w in nt_walls)}), rdmacheck {rcw:.2f} s "
          f"(all: {', '.join(f'{w:.2f}' for w in rc_walls)}), ratio {rcw / ntw:.2f}")
    if a.eager:
        print(f"# wall rdmacheck --no-graph: {min(eg_walls):.2f} s")
    w = last_ev.get("context", {}).get("wall_s")
    if w:
        print("# rdmacheck rank 0 wall breakdown (last round): " + ", ".join(f"{k} {v:.2f} s" for k, v in w.items()))
    gsizes = [r["bytes"] for r in last_ev.get("records", []) if r.get("graph")]
    if gsizes:
        print(f"# rdmacheck used a CUDA graph at {len(gsizes)} of {len(last_ev['records'])} sizes "
              f"({min(gsizes)}..{max(gsizes)} B); eager elsewhere (--graph auto keeps the faster per size)")
    ok_t, ok_b, ok_w = not t_fail, not b_fail, rcw / ntw <= TARGET_WALL
    print(f"# target busbw >= {TARGET_BUSBW}x at >= 4 MiB: {'MET' if ok_b else 'MISSED at ' + ', '.join(map(str, b_fail))}")
    print(f"# target time <= {TARGET_TIME}x at 1K..1M: {'MET' if ok_t else 'MISSED at ' + ', '.join(map(str, t_fail))}")
    print(f"# target wall <= {TARGET_WALL}x: {'MET' if ok_w else 'MISSED'}")
    print(f"# raw logs: {out}")
    return 0 if (ok_t and ok_b and ok_w) else 1


if __name__ == "__main__":
    sys.exit(main())
