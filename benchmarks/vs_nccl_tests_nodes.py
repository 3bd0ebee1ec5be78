"""Two-node mode of benchmarks/vs_nccl_tests.py: N NCCL "nodes" on one GPU, told apart by NCCL_HOSTID.

Run through vs_nccl_tests.py (``--nodes N``); its docstring says what each tool runs.  This file holds
the two launchers (torchrun agents for rdmacheck, mpirun for nccl-tests), the GPU memory sampler and the
table.  Nothing here is imported by rdmacheck itself.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rdmacheck.importers.nccl_tests_text import parse_text  # noqa: E402

SAFE = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
ALGO = {"ring": "Ring", "tree": "Tree"}
TABLE_END = "# Out of bounds values"


def _env(algo: str | None) -> dict[str, str]:
    e = dict(os.environ)
    e.update(SAFE)  # NVLink multicast stays off on shared machines, whatever the caller had
    e.setdefault("NCCL_SOCKET_IFNAME", "lo")
    e.setdefault("GLOO_SOCKET_IFNAME", "lo")
    e.setdefault("NCCL_IB_DISABLE", "1")
    if algo in ALGO:
        e["NCCL_ALGO"] = ALGO[algo]
    elif algo == "auto":
        e.pop("NCCL_ALGO", None)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemSampler:
    """nvidia-smi's used memory of GPU 0 every 100 ms while a tool runs: (idle level before, peak)."""

    def __init__(self) -> None:
        self.idle = self._once()
        self.peak = self.idle
        self._p: subprocess.Popen | None = None
        self._t: threading.Thread | None = None

    @staticmethod
    def _once() -> int | None:
        try:
            out = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20).stdout
            return int(out.split()[0])
        except Exception:
            return None

    def __enter__(self) -> "MemSampler":
        try:
            self._p = subprocess.Popen(["nvidia-smi", "-i", "0", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                        "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self

        def read() -> None:
            assert self._p is not None and self._p.stdout is not None
            for line in self._p.stdout:
                try:
                    v = int(line.split()[0])
                except (ValueError, IndexError):
                    continue
                self.peak = v if self.peak is None else max(self.peak, v)

        self._t = threading.Thread(target=read, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.terminate()
            try:
                self._p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._p.kill()
        if self._t is not None:
            self._t.join(timeout=5)

    def above_idle_mib(self) -> int | None:
        return None if self.idle is None or self.peak is None else self.peak - self.idle


def _stream(procs: list[subprocess.Popen], t0: float, timeout: float) -> tuple[float | None, list[str]]:
    """Read every process's output; the time the first table-end line appeared, and each process's text."""
    texts = [""] * len(procs)
    t_table: list[float] = []

    def pump(i: int, p: subprocess.Popen) -> None:
        assert p.stdout is not None
        buf = []
        for line in p.stdout:
            buf.append(line)
            if not t_table and TABLE_END in line:
                t_table.append(time.perf_counter() - t0)
        texts[i] = "".join(buf)

    ts = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
    for t in ts:
        t.join(timeout=10)
    return (t_table[0] if t_table else None), texts


def run_rdmacheck_nodes(n: int, b: str, e: str, out: Path, tag: str, algo: str | None, extra: list[str],
                        timeout: float = 900) -> dict:
    """N torchrun agents, agent i with NCCL_HOSTID=node<i>; rank 0's evidence and the wall times."""
    port = _free_port()
    js = out / f"{tag}.json"
    procs = []
    t0 = time.perf_counter()
    with MemSampler() as mem:
        for i in range(n):
            env = _env(algo)
            env["NCCL_HOSTID"] = f"node{i}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(n), "--nproc-per-node", "1",
                   "--node-rank", str(i), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   "--rdzv-id", f"vs{port}", "--rdzv-conf", f"is_host={1 if i == 0 else 0}", "--local-addr", "127.0.0.1",
                   "--max-restarts", "0", "-m", "rdmacheck", "bench", "--sizes", f"{b}..{e}", "--json", str(js),
                   "--no-progress", "--hook", "rdmacheck.bench.gpu_memory:install", *extra]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                          cwd=REPO, stdin=subprocess.DEVNULL))
        t_table, texts = _stream(procs, t0, timeout)
    t_exit = time.perf_counter() - t0
    for i, t in enumerate(texts):
        (out / f"{tag}.node{i}.txt").write_text(t + f"\n# vs_nccl_tests: table at {t_table} s, exit at {t_exit:.3f} s\n")
    rcs = [p.returncode for p in procs]
    if not js.is_file() or any(rc not in (0, 1) for rc in rcs):
        raise SystemExit(f"rdmacheck bench failed (exit codes {rcs}); see {out}/{tag}.node*.txt:\n" + texts[0][-3000:])
    ev = json.loads(js.read_text())
    return {"wall": t_table or t_exit, "exit": t_exit, "records": {r["bytes"]: r for r in ev["records"]}, "evidence": ev,
            "mem_idle_mib": mem.idle, "mem_peak_mib": mem.peak, "mem_above_idle_mib": mem.above_idle_mib(), "rcs": rcs}


def run_nccl_tests_nodes(binary: str, mpirun: str, n: int, b: str, e: str, out: Path, tag: str, algo: str | None,
                         timeout: float = 900) -> dict:
    """mpirun -np N all_reduce_perf -g 1, rank r with NCCL_HOSTID=node<r> and NCCL_TESTS_DEVICE=0."""
    wrapper = out / "hostid.sh"
    wrapper.write_text("#!/bin/bash\n# one NCCL host id per MPI rank: N NCCL nodes on one machine\n"
                       "export NCCL_HOSTID=node${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}\nexec \"$@\"\n")
    wrapper.chmod(0o755)
    env = _env(algo)
    env.update({"NCCL_TESTS_DEVICE": "0", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    passed = sorted(k for k in env if k.startswith(("NCCL_", "CUDA_", "NVSHMEM_", "TORCH_SYMM")) or k == "LD_LIBRARY_PATH")
    cmd = [mpirun, "-np", str(n), "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    for k in passed:
        cmd += ["-x", k]
    cmd += [str(wrapper), binary, "-b", b, "-e", e, "-f", "2", "-g", "1"]
    t0 = time.perf_counter()
    with MemSampler() as mem:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL)
        t_table, (text,) = _stream([p], t0, timeout)
    t_exit = time.perf_counter() - t0
    log = out / f"{tag}.txt"
    log.write_text(text + f"\n# vs_nccl_tests: {' '.join(cmd)}\n# vs_nccl_tests: table at {t_table} s, exit at {t_exit:.3f} s\n")
    if p.returncode != 0:
        raise SystemExit(f"nccl-tests failed ({p.returncode}):\n{text[-3000:]}")
    run = parse_text(text, source=str(log), op="all_reduce")
    recs: dict[int, dict] = {}
    for r in run.records:
        recs.setdefault(r["bytes"], {})["ip" if r["in_place"] else "oop"] = r
    return {"wall": t_table or t_exit, "exit": t_exit, "records": recs, "text": text,
            "mem_idle_mib": mem.idle, "mem_peak_mib": mem.peak, "mem_above_idle_mib": mem.above_idle_mib()}


def _spread(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def _fmt3(t: tuple[float, float, float], f: str = "{:.2f}") -> str:
    return "/".join(f.format(x) for x in t)


def two_node_main(a) -> int:
    n = a.nodes
    if n < 2:
        raise SystemExit("--nodes needs 2 or more")
    out = Path(a.out or tempfile.mkdtemp(prefix="vs-nccl-nodes-"))
    out.mkdir(parents=True, exist_ok=True)
    algo = a.algo or "ring"
    nt_runs, rc_runs = [], []
    for i in range(a.rounds):
        nt_runs.append(run_nccl_tests_nodes(a.nccl_tests, a.mpirun, n, a.b, a.e, out, f"nccl-tests-{i}", algo))
        rc_runs.append(run_rdmacheck_nodes(n, a.b, a.e, out, f"rdmacheck-{i}", algo, ["--algo", algo]))
        print(f"# round {i}: nccl-tests {nt_runs[-1]['wall']:.2f} s, rdmacheck {rc_runs[-1]['wall']:.2f} s", flush=True)
        # every finished round on disk at once: a run cut short still leaves its rounds to compare
        (out / "rounds.json").write_text(json.dumps(
            {"nccl_tests": [{k: v for k, v in r.items() if k != "text"} for r in nt_runs],
             "rdmacheck": [{k: v for k, v in r.items() if k != "evidence"} for r in rc_runs]}, default=str))
    dev = ""
    for line in nt_runs[0]["text"].splitlines():
        if "Rank" in line and "device" in line and "[" in line:
            dev = line.split("]")[-1].strip()
            break
    last = rc_runs[-1]["evidence"]
    ctx = last.get("context", {})
    print(f"# rdmacheck bench vs nccl-tests all_reduce_perf: {n} NCCL nodes (NCCL_HOSTID node0..node{n - 1}) on one GPU "
          f"({dev}), NCCL {ctx.get('nccl_version')}, NCCL_ALGO {ALGO.get(algo, 'default')}, {a.rounds} rounds alternating; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    print("# per size: ratio = rdmacheck / nccl-tests of round i against round i, shown min/median/max over the rounds;")
    print("# nccl-tests time = its in-place column (torch's all_reduce is in place); each tool's own spread: min..max over rounds")
    hdr = (f"{'size':>11} {'nt ip us (min..max)':>22} {'rc us (min..max)':>22} {'t ratio min/med/max':>21} "
           f"{'nt busbw':>9} {'rc busbw':>9} {'bw ratio min/med/max':>21}")
    print(hdr)
    summary: dict = {"nodes": n, "rounds": a.rounds, "algo": algo, "device": dev, "nccl_version": ctx.get("nccl_version"),
                     "sizes": {}, "walls": {}}
    for s in sorted(nt_runs[0]["records"]):
        if not all(s in r["records"] for r in rc_runs) or not all(s in r["records"] and "ip" in r["records"][s] for r in nt_runs):
            continue
        nt_t = [r["records"][s]["ip"]["time_us"] for r in nt_runs]
        rc_t = [r["records"][s]["time_us"] for r in rc_runs]
        nt_b = [r["records"][s]["ip"]["busbw"] for r in nt_runs]
        rc_b = [r["records"][s]["busbw"] for r in rc_runs]
        tr = [x / y for x, y in zip(rc_t, nt_t)]
        br = [x / y for x, y in zip(rc_b, nt_b) if y]
        summary["sizes"][s] = {"nt_time_us": nt_t, "rc_time_us": rc_t, "nt_busbw": nt_b, "rc_busbw": rc_b,
                               "time_ratio": _spread(tr), "busbw_ratio": _spread(br) if br else None}
        print(f"{s:>11} {min(nt_t):>10.2f}..{max(nt_t):<10.2f} {min(rc_t):>10.2f}..{max(rc_t):<10.2f} "
              f"{_fmt3(_spread(tr)):>21} {statistics.median(nt_b):>9.3f} {statistics.median(rc_b):>9.3f} "
              f"{(_fmt3(_spread(br), '{:.3f}') if br else 'n/a'):>21}")
    wr = [r["wall"] / q["wall"] for r, q in zip(rc_runs, nt_runs)]
    summary["walls"] = {"nccl_tests": [r["wall"] for r in nt_runs], "rdmacheck": [r["wall"] for r in rc_runs],
                        "ratio": _spread(wr)}
    nt_w = ", ".join("%.2f" % r["wall"] for r in nt_runs)
    rc_w = ", ".join("%.2f" % r["wall"] for r in rc_runs)
    print(f"# whole-sweep wall, process start to final table: nccl-tests {nt_w} s; rdmacheck {rc_w} s; "
          f"ratio min/med/max {_fmt3(_spread(wr))}")
    w = ctx.get("wall_s")
    if w:
        print("# rdmacheck rank 0 wall breakdown (last round): " + ", ".join(f"{k} {v:.2f} s" for k, v in w.items()))
    # GPU memory at the largest size: torch's peak per rank (the gpu_memory hook) and the device's level
    big = max(rc_runs[-1]["records"])
    gm = rc_runs[-1]["records"][big].get("gpu_memory") or []
    per_rank = {x["rank"]: x for x in gm if isinstance(x, dict)}
    buf = big  # all_reduce in place: one buffer of `bytes` per rank
    mem = {"bytes": big, "torch_max_allocated": {r: x.get("max_allocated") for r, x in sorted(per_rank.items())},
           "torch_reserved": {r: x.get("reserved") for r, x in sorted(per_rank.items())},
           "device_used_at_end_of_size": max((x.get("device_used") or 0) for x in per_rank.values()) if per_rank else None,
           "nvidia_smi_above_idle_mib": {"rdmacheck": [r["mem_above_idle_mib"] for r in rc_runs],
                                         "nccl_tests": [r["mem_above_idle_mib"] for r in nt_runs]},
           "nvidia_smi_idle_mib": [r["mem_idle_mib"] for r in rc_runs + nt_runs]}
    summary["gpu_memory"] = mem
    mx = max((v or 0) for v in mem["torch_max_allocated"].values()) if per_rank else None
    if mx is not None:
        peaks = ", ".join("rank %s %.3f GiB" % (r, v / 2**30) for r, v in mem["torch_max_allocated"].items() if v)
        print(f"# GPU memory at {big} B: torch peak per rank {peaks} = {mx / buf:.2f}x the {buf / 2**30:.2f} GiB buffer "
              "(goal <= 2x, NCCL's own buffers come on top)")
    print(f"# device used memory above idle (nvidia-smi, peak of the run, all {n} processes): rdmacheck "
          f"{mem['nvidia_smi_above_idle_mib']['rdmacheck']} MiB, nccl-tests {mem['nvidia_smi_above_idle_mib']['nccl_tests']} MiB "
          f"(idle {mem['nvidia_smi_idle_mib'][0]} MiB)")
    (out / "vs-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "rdmacheck-bench.json").write_text(json.dumps(last, indent=2))
    print(f"# raw logs, summary (vs-summary.json) and the last rdmacheck evidence: {out}")
    return 0
