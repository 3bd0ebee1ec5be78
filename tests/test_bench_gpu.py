"""rdmacheck bench with NCCL on 2 GPUs (marker ``gpu``; skips where torch sees fewer than 2 GPUs).

The same proofs as tests/test_bench.py, on the real NCCL path: every op with
--check on, CUDA-graph timing, the planted wrong element (the test-only
bench hook tests/fault_hooks.py, RDMACHECK_FAULT_CORRUPT), a rank
SIGKILLed mid-sweep (RDMACHECK_FAULT_DIE) ending the run within the
timeout with the rank named, and the memory guard refusing a size that cannot
fit.  NVLink multicast stays off (NCCL_NVLS_ENABLE=0): on shared machines it
can take the host's GPUs down.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import cuda_gpu_count, run_cli
from fault_hooks import HOOK as FAULTS

pytestmark = pytest.mark.gpu

SAFE = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@pytest.fixture(autouse=True)
def two_gpus():
    if cuda_gpu_count() < 2:
        pytest.skip("needs 2 CUDA GPUs (runs on the GPU machines, see docs/bench.md)")


def test_nccl_all_ops_check_graph(tmp_path):
    js = tmp_path / "b.json"
    p = run_cli("bench", "--nproc", "2", "--op", "all", "--sizes", "8,4K,1M,64M", "--check", "--no-progress",
                "--expect-busbw", "1", "--json", str(js), env=SAFE, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    ev = json.loads(js.read_text())
    assert ev["context"]["backend"] == "nccl" and ev["context"]["graph"] == "auto"
    # auto captures small sizes in CUDA graphs (launch overhead dominates there)
    assert any(r["graph"] for r in ev["records"] if r["bytes"] <= 4096)
    assert ev["context"]["nccl_version"]
    assert all(r.get("gpu") for r in ev["context"]["ranks"])
    recs = ev["records"]
    assert {r["op"] for r in recs} == {"all_reduce", "all_gather", "reduce_scatter", "alltoall", "broadcast", "sendrecv"}
    assert all(r["wrong"] == 0 for r in recs)
    assert "graph_fallback" not in ev["context"], ev["context"].get("graph_fallback")
    for r in recs:
        alg = r["bytes"] / 1e9 / (r["time_us"] * 1e-6)
        f = {"all_reduce": 1.0, "broadcast": 1.0, "sendrecv": 1.0}.get(r["op"], 0.5)   # n = 2
        assert r["busbw"] == pytest.approx(alg * f)
    big = [r for r in recs if r["op"] == "all_reduce" and r["bytes"] == 64 << 20][0]
    assert big["busbw"] > 50  # NVLink: hundreds of GB/s; sockets would give a few


def test_nccl_check_catches_planted_wrong_element(tmp_path):
    js = tmp_path / "b.json"
    p = run_cli("bench", "--nproc", "2", "--sizes", "1M", "--no-progress", "--expect-busbw", "0",
                "--expect", "plateau_min_bytes=1M", "--json", str(js),
                "--hook", FAULTS, env=dict(SAFE, RDMACHECK_FAULT_CORRUPT="0"), timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    ev = json.loads(js.read_text())
    assert [r["wrong"] for r in ev["records"]] == [1]


def test_nccl_rank_killed_mid_sweep(tmp_path):
    js = tmp_path / "b.json"
    t0 = time.monotonic()
    p = run_cli("bench", "--nproc", "2", "--sizes", "1K..16K", "--no-progress", "--timeout", "30",
                "--expect-busbw", "0", "--json", str(js), "--hook", FAULTS, env=dict(SAFE, RDMACHECK_FAULT_DIE="1:2"), timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "rank 1 was killed by SIGKILL in phase 'all_reduce 4 KiB" in p.stderr, p.stderr
    assert time.monotonic() - t0 < 30 + 30
    ev = json.loads(js.read_text())
    assert [r["bytes"] for r in ev["records"]] == [1024, 2048]


def test_memory_guard_refuses_more_than_the_gpu_has():
    p = run_cli("bench", "--nproc", "2", "--sizes", "64G", "--no-progress", env=SAFE, timeout=300)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "needs 256 GiB per rank" in p.stderr and "GPU memory" in p.stderr, p.stderr
