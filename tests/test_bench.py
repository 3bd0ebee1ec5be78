"""rdmacheck bench on CPU: real torch.distributed gloo ranks over loopback (2 and 3 ranks).

Nothing is mocked: every multi-rank test starts real rank processes through
the real CLI (``--nproc N``, or torchrun).  A test-only bench hook,
``--hook tests.fault_hooks:install`` (tests/fault_hooks.py, through the hook mechanism
users have), plants faults that cannot be produced on demand otherwise:
RDMACHECK_FAULT_CORRUPT (one rank adds 1 to one element of its result, i.e. a
reduction that got one element wrong) and RDMACHECK_FAULT_DIE (a rank SIGKILLs
itself at a given size, a real kill -9).
Sizes are tiny so the whole file stays well under a minute; speed goals live in
benchmarks/, not here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, require, require_module, run_cli
from fault_hooks import HOOK as FAULTS
from rdmacheck.bench.collectives import COLLECTIVES, parse_ops
from rdmacheck.bench.gate import busbw_gate, check_result, memory_verdict
from rdmacheck.bench.plan import build_plan
from rdmacheck.bench.sizes import parse_sizes
from rdmacheck.util.errors import UsageError
from rdmacheck.evidence.model import Status



@pytest.fixture
def torch_ranks():
    """Real rank processes need torch (CPU build is enough); the pytest process itself never imports it."""
    require_module("torch")

GLOO = ["--backend", "gloo", "--no-progress", "--warmup", "1", "--time-per-size", "0.002", "--timeout", "60"]


# ---- pure parts -------------------------------------------------------------------------------

def test_sizes_range_list_and_step():
    assert parse_sizes("1K..1M") == [1 << k for k in range(10, 21)]
    assert parse_sizes("1K..64K", 4) == [1024, 4096, 16384, 65536]
    assert parse_sizes("8,1M,64M") == [8, 1 << 20, 64 << 20]
    assert parse_sizes("64MiB,8") == [8, 64 << 20]
    assert parse_sizes("1G..1G") == [1 << 30]


@pytest.mark.parametrize("bad", ["1K..0", "abc", "1G..1K", "", "1K..2K..4K", "8,,16", "-1", "1.5K", "0"])
def test_sizes_rejected(bad):
    with pytest.raises(UsageError):
        parse_sizes(bad)


@pytest.mark.parametrize("bad", ["1K..0", "abc", "1G..1K"])
def test_bad_sizes_exit_2_one_line(bad):
    p = run_cli("bench", "--sizes", bad, "--backend", "gloo", timeout=30)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("rdmacheck: error: --sizes"), p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_bad_flags_exit_2():
    for args in (["--op", "allreduce2"], ["--dtype", "float8"], ["--step-factor", "1"], ["--expect-busbw", "fast"]):
        p = run_cli("bench", *args, timeout=30)
        assert p.returncode == 2 and "Traceback" not in p.stderr, (args, p.stderr)


def test_busbw_factors_by_hand():
    # nccl-tests formulas, written out by hand for n = 2, 3, 8
    hand = {
        "all_reduce": {2: 1.0, 3: 4 / 3, 8: 14 / 8},
        "all_gather": {2: 0.5, 3: 2 / 3, 8: 7 / 8},
        "reduce_scatter": {2: 0.5, 3: 2 / 3, 8: 7 / 8},
        "alltoall": {2: 0.5, 3: 2 / 3, 8: 7 / 8},
        "broadcast": {2: 1.0, 3: 1.0, 8: 1.0},
        "sendrecv": {2: 1.0, 3: 1.0, 8: 1.0},
    }
    for op, by_n in hand.items():
        for n, f in by_n.items():
            assert COLLECTIVES[op].busbw_factor(n) == pytest.approx(f), (op, n)
    # 1 GiB in 3262.19 us on 2 ranks: the nccl-tests reference line reads 329.15 GB/s
    alg, bus = COLLECTIVES["all_reduce"].bandwidth(1 << 30, 3262.19e-6, 2)
    assert round(alg, 2) == 329.15 and round(bus, 2) == 329.15


_SLICED_CHECK = r"""
import itertools, torch, torch.distributed as dist
from rdmacheck.bench import collectives as C
P = C.PERIOD
x = lambda r, j: (3 * r + j) % P + 1          # element j of rank r's input, from _pattern's definition
ref = {  # what rank q's flattened output must hold at element m, written from each collective's meaning
    "all_reduce": lambda q, n, c, m: sum(x(r, m) for r in range(n)),
    "all_gather": lambda q, n, c, m: x(m // c, m % c),
    "reduce_scatter": lambda q, n, c, m: sum(x(r, q * c + m) for r in range(n)),
    "alltoall": lambda q, n, c, m: x(m // c, q * c + m % c),
    "broadcast": lambda q, n, c, m: x(0, m),
    "sendrecv": lambda q, n, c, m: x((q - 1) % n, m),
}
C.SLICE = 7  # small slices, so one fill and one check cross many slice and block edges
checked = 0
for name, coll in C.COLLECTIVES.items():
    for n in (2, 3):
        lay = coll.layout(100 * 4 * n, 4, n)
        for q in range(n):
            b = coll.make(torch, dist, lay, q, n, torch.float32, torch.device("cpu"), False)
            b.fill()
            want_in = [float(x(q, j)) for j in range(b.inp.numel())]
            assert b.inp.reshape(-1).tolist()[:lay.count] == want_in[:lay.count], (name, n, q)
            total = b.out.numel()
            want = [float(ref[name](q, n, lay.count, m)) for m in range(total)]
            for i, k in itertools.chain([(0, total)], ((i, k) for i in range(0, total, 5) for k in (1, 7, 31) if i + k <= total)):
                got = b.expected(i, k).tolist()
                assert got == want[i:i + k], (name, n, q, i, k, got[:5], want[i:i + 5])
                checked += 1
print("checked", checked)
"""


def test_expected_slices_match_each_collectives_meaning(torch_ranks):
    """--check builds the expected result slice by slice (so a 1 GiB check holds no second 1 GiB copy): every
    slice, across rank blocks and slice edges, equals the value written from what the collective means."""
    p = subprocess.run([sys.executable, "-c", _SLICED_CHECK], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    assert int(p.stdout.split()[-1]) > 1000


def test_plan_matches_nccl_tests_sizes():
    rows, _ = build_plan(["all_gather", "alltoall", "all_reduce"], [1024, 1 << 20], "float", 3)
    ag = [r for r in rows if r.op == "all_gather"]
    # nccl-tests: base = (256/3) & ~3 = 84 elements per rank; size column = 84*3*4 = 1008 B
    assert (ag[0].count, ag[0].send, ag[0].recv, ag[0].nbytes) == (84, 84, 252, 1008)
    a2a = [r for r in rows if r.op == "alltoall"][0]
    assert (a2a.count, a2a.send, a2a.nbytes) == (84, 252, 1008)
    ar = [r for r in rows if r.op == "all_reduce"][1]
    assert (ar.count, ar.nbytes, ar.memory_need()) == (262144, 1 << 20, 4 << 20)
    assert parse_ops("all") == list(COLLECTIVES)


def test_gate_uses_plateau_median_only():
    recs = [{"op": "all_reduce", "bytes": 1 << k, "busbw": bw, "wrong": 0}
            for k, bw in ((10, 0.05), (20, 3.0), (26, 11.0), (27, 12.5), (28, 12.6))]
    g = busbw_gate(recs, 12.0, 64 << 20)
    assert g.status is Status.PASS and g.details["ops"]["all_reduce"]["median"] == 12.5
    g = busbw_gate(recs, 13.0, 64 << 20)
    assert g.status is Status.FAIL and "all_reduce" in g.remedy
    assert busbw_gate(recs, 12.0, 1 << 30).status is Status.SKIP
    assert check_result(recs, True).status is Status.PASS
    recs[1]["wrong"] = 3
    assert check_result(recs, True).status is Status.FAIL


def test_gloo_remedy_is_no_fabric_advice():
    recs = [{"op": "all_reduce", "bytes": 1 << 27, "busbw": 0.8, "wrong": 0, "backend": b} for b in ("gloo",)]
    g = busbw_gate(recs, 12.0, 64 << 20)
    assert g.status is Status.FAIL and g.remedy.startswith("CPU/loopback run, not a fabric verdict")
    assert not any(w in g.remedy for w in ("GPUDirect", "PFC", "fallen back to sockets"))
    nccl = busbw_gate([dict(recs[0], backend="nccl")], 12.0, 64 << 20)
    assert "GPUDirect/PFC" in nccl.remedy  # on NCCL the fabric advice stays


def test_blank_columns_are_explained():
    from rdmacheck.bench.table import blank_columns_note

    notes = blank_columns_note(["all_reduce", "all_gather", "alltoall", "broadcast", "sendrecv"])
    assert notes[0].startswith("out-of-place columns blank for all_reduce, broadcast: ")
    assert notes[1].startswith("in-place columns blank for alltoall, sendrecv: ")
    assert blank_columns_note(["all_gather", "reduce_scatter"]) == []  # both variants measured


def test_memory_guard_verdict():
    assert memory_verdict(4 << 30, 8 << 30, "free", None) is None
    msg = memory_verdict(16 << 30, 8 << 30, "unified-memory GPU", None)
    assert "16 GiB" in msg and "8 GiB" in msg and "--sizes" in msg


def test_max_memory_refuses_before_any_rank_starts():
    require_module("torch")  # without torch, bench refuses earlier (exit 2 naming the install line)
    t0 = time.monotonic()
    p = run_cli("bench", "--nproc", "2", "--sizes", "1M..64M", "--max-memory", "64M", "--backend", "gloo", timeout=30)
    assert p.returncode == 2, p.stderr
    assert "needs 256 MiB per rank" in p.stderr and "--max-memory" in p.stderr
    assert time.monotonic() - t0 < 10  # no torch import, no rank


# ---- real gloo runs -----------------------------------------------------------------------------

def _evidence(path):
    return json.loads(path.read_text())


def test_three_ranks_all_ops_factors_gate_and_planted_wrong_element(tmp_path, torch_ranks):
    """One 3-rank run (torch start-up is the cost on CI's 2 cores) proves three things:

    * every op's algbw/busbw follows the hand-computed nccl-tests factor for n = 3;
    * the gate fails when the expectation is above what was measured;
    * --check catches a planted wrong element: the test-only hook makes rank 2 add 1 to
      one element of its broadcast result; every other op must stay at #wrong = 0.
    """
    js, csv = tmp_path / "b.json", tmp_path / "b.csv"
    p = run_cli("bench", "--nproc", "3", "--op", "all", "--sizes", "1K,4K", *GLOO, "--check",
                "--expect", "plateau_min_bytes=1K", "--expect-busbw", "1000000GB/s",
                "--json", str(js), "--csv", str(csv),
                "--hook", FAULTS, env={"RDMACHECK_FAULT_CORRUPT": "2:broadcast"}, timeout=150)
    ev = _evidence(js)
    res = {r["id"]: r for r in ev["results"]}
    assert p.returncode == 1, p.stdout + p.stderr
    assert res["bench.busbw"]["status"] == "fail"         # gate above what was measured
    assert res["bench.run"]["status"] == "pass"
    assert res["bench.check"]["status"] == "fail" and "broadcast" in res["bench.check"]["observed"]
    recs = ev["records"]
    assert {r["op"] for r in recs} == set(COLLECTIVES)
    for r in recs:
        assert r["wrong"] == (1 if r["op"] == "broadcast" else 0), r
        assert r["world_size"] == 3 and r["backend"] == "gloo"
        # busbw = size/time x factor, by hand
        alg = r["bytes"] / 1e9 / (r["time_us"] * 1e-6)
        assert r["algbw"] == pytest.approx(alg)
        hand = {"all_reduce": 4 / 3, "broadcast": 1, "sendrecv": 1}.get(r["op"], 2 / 3)
        assert r["busbw"] == pytest.approx(alg * hand)
    assert ev["context"]["world_size"] == 3 and len(ev["context"]["ranks"]) == 3
    assert all(x["host"] for x in ev["context"]["ranks"])
    # the table is nccl-tests' layout: size count type redop root, then time algbw busbw #wrong
    rows = [ln.split() for ln in p.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    ar = [x for x in rows if x[3] == "sum" and x[0] == "4096" and x[1] == "1024"]
    assert ar and ar[0][2] == "float" and ar[0][4] == "-1" and ar[0][-1] == "0"
    assert "MAX over the 3 ranks" in p.stdout and "Out of bounds values : 2 FAILED" in p.stdout
    # the footer says why columns are blank, and the gate's remedy fits a gloo run
    assert "# note: out-of-place columns blank for all_reduce, broadcast: " in p.stdout
    assert "# note: in-place columns blank for alltoall, sendrecv: " in p.stdout
    assert res["bench.busbw"]["remedy"].startswith("CPU/loopback run, not a fabric verdict")
    import pandas as pd

    df = pd.read_csv(csv)
    assert len(df) == len(recs) and {"op", "bytes", "time_us", "busbw", "wrong"} <= set(df.columns)


def test_rank_killed_mid_sweep_is_named_and_sizes_kept(tmp_path, torch_ranks):
    js = tmp_path / "b.json"
    t0 = time.monotonic()
    p = run_cli("bench", "--nproc", "2", "--sizes", "1K..8K", *GLOO[:-2], "--timeout", "20",
                "--expect-busbw", "0", "--json", str(js), "--hook", FAULTS, env={"RDMACHECK_FAULT_DIE": "1:2"}, timeout=90)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stdout + p.stderr
    assert "rank 1 was killed by SIGKILL in phase 'all_reduce 4 KiB" in p.stderr, p.stderr
    assert took < 20 + 60  # the parent reacts within seconds of the death (start-up under load dominates), never a hang
    ev = _evidence(js)
    assert [r["bytes"] for r in ev["records"]] == [1024, 2048]   # finished sizes survive
    run = [r for r in ev["results"] if r["id"] == "bench.run"][0]
    assert run["status"] == "fail" and "rank 1" in run["observed"] and ev["context"]["complete"] is False


def test_a_refusal_only_rank_1_meets_reaches_the_user_as_one_line(tmp_path, torch_ranks):
    """Rank 1, spawned for real by --nproc, refuses its input while rank 0 goes on: the launcher relays
    the rank's own line, exit 2, no traceback, no evidence written."""
    js = tmp_path / "b.json"
    p = run_cli("bench", "--nproc", "2", "--sizes", "1K", *GLOO[:-2], "--timeout", "20", "--json", str(js),
                "--hook", FAULTS, env={"RDMACHECK_FAULT_REFUSE": "1"}, timeout=90)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == ["rdmacheck: error: rank 1: planted refusal on rank 1 (RDMACHECK_FAULT_REFUSE)"], p.stderr
    assert "Traceback" not in p.stdout + p.stderr and not js.exists()


def test_a_rank_that_finishes_later_than_the_others_is_no_rank_failure(tmp_path, torch_ranks):
    """Every rank measured and a gate failed, so each exits 1 with its verdict; rank 0 (it writes the
    evidence) takes longer to finish than the launcher's grace, as it did beside the rest of CI: rank 1
    exited 1 from the done phase, was taken for a rank giving up, and bench.run failed."""
    js = tmp_path / "b.json"
    p = run_cli("bench", "--nproc", "2", "--sizes", "1K", *GLOO, "--expect", "plateau_min_bytes=1K",
                "--expect-busbw", "1000GB/s", "--json", str(js),
                "--hook", FAULTS, env={"RDMACHECK_FAULT_SLOW_FINISH": "0:6"}, timeout=150)
    assert p.returncode == 1, p.stdout + p.stderr
    res = {r["id"]: r for r in _evidence(js)["results"]}
    assert res["bench.busbw"]["status"] == "fail"   # the verdict: 1000 GB/s is above what gloo measured
    assert res["bench.run"]["status"] == "pass", res["bench.run"]
    assert "exited with status" not in p.stderr, p.stderr


def test_rank_that_never_joins_ends_the_run_named(tmp_path, torch_ranks):
    """Rank 0 of 2 started by hand (as torchrun would), rank 1 never starts: named cause, exit 1, no hang."""
    js = tmp_path / "b.json"
    t0 = time.monotonic()
    p = run_cli("bench", "--backend", "gloo", "--sizes", "1K", "--timeout", "3", "--json", str(js),
                env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": str(_free_port())}, timeout=90)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "rank 0: no progress for 3 s in phase 'init: rendezvous of 2 ranks" in p.stderr, p.stderr
    assert "not every rank joined" in p.stderr
    assert time.monotonic() - t0 < 60
    run = [r for r in _evidence(js)["results"] if r["id"] == "bench.run"][0]
    assert run["status"] == "fail" and "rendezvous" in run["observed"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_rendezvous(tmp_path, torch_ranks):
    """The multi-node entry: two torchrun agents (--nnodes 2, one rank each) meet over c10d on loopback."""
    port = _free_port()
    js = tmp_path / "b.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", f"rc{port}", "-m", "rdmacheck", "bench", "--sizes", "1K,64K", *GLOO,
               "--expect", "plateau_min_bytes=64K", "--expect-busbw", "0", "--json", str(js)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ev = _evidence(js)
    assert ev["context"]["world_size"] == 2 and {r["rank"] for r in ev["context"]["ranks"]} == {0, 1}
    assert [r["bytes"] for r in ev["records"]] == [1024, 65536]
    assert all(r["wrong"] == 0 for r in ev["records"])
