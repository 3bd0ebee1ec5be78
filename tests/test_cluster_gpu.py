"""``rdmacheck cluster`` with NCCL: one Ray actor per GPU (marker ``gpu``; skips without 2 GPUs).

Run on a 2-GPU machine (H100 x2):
    CI=true python -m pytest -q -m gpu tests/test_cluster_gpu.py

Two layouts, each a real Ray cluster on the one machine:
* two Ray nodes with one GPU each (each raylet started with its own
  CUDA_VISIBLE_DEVICES, as two single-GPU hosts like the reference DGX Spark
  pair would be): the NCCL bench over 2 ranks and the pairwise link;
* one Ray node with two GPUs: two actors on one node, one per GPU, each
  seeing only its own device (Ray sets CUDA_VISIBLE_DEVICES per actor).
NVLink multicast stays off (NCCL_NVLS_ENABLE=0): on shared machines it can
take the host's GPUs down.
"""

from __future__ import annotations

import json

import pytest

from conftest import cuda_gpu_count
from test_cluster_ray import _cmd, ray_test_cluster

pytestmark = [pytest.mark.gpu, pytest.mark.ray]

SAFE = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
        # every simulated node is 127.0.0.1: NCCL's bootstrap must use loopback too
        "NCCL_SOCKET_IFNAME": "lo"}


@pytest.fixture(autouse=True)
def two_gpus():
    if cuda_gpu_count() < 2:
        pytest.skip("needs 2 CUDA GPUs (runs on the GPU machines)")


def _run(cluster, env, tmp_path, *extra):
    out = tmp_path / "run"
    p = _cmd(cluster, env, out, "--sizes", "1M,64M,256M", "--op", "all_reduce,all_gather", "--node-timeout", "120",
             "--expect-busbw", "1", "--no-preflight", *extra)
    text, _ = p.communicate(timeout=540)
    print(text)
    assert p.returncode in (0, 1), text
    return out, text, json.loads((out / "cluster.json").read_text())


def test_two_single_gpu_nodes_nccl_bench_and_pairwise(tmp_path):
    with ray_test_cluster([{"node_name": "w1", "num_gpus": 1, "env": {"CUDA_VISIBLE_DEVICES": "1"}}],
                          head={"node_name": "head", "num_gpus": 1, "env": {"CUDA_VISIBLE_DEVICES": "0"}},
                          extra_env=SAFE) as (cluster, env):
        out, text, cl = _run(cluster, env, tmp_path, "--pairwise", "--pairwise-sizes", "64M,256M")
    bench = json.loads((out / "bench.json").read_text())
    assert {r["backend"] for r in bench["records"]} == {"nccl"}
    assert {r["world_size"] for r in bench["records"]} == {2}
    assert all(r["wrong"] == 0 for r in bench["records"])
    ranks = bench["context"]["ranks"]
    assert len({r["gpu_bus_id"] for r in ranks}) == 2, ranks  # two different GPUs, one per actor
    res = {r["id"]: r for r in cl["results"]}
    assert res["cluster.bench"]["status"] == "pass", res["cluster.bench"]
    pw = cl["context"]["pairwise"]
    assert pw["measured"] == pw["pairs"] == 1 and pw["busbw"][0][1] > 1.0
    rec = pw["records"][0]
    print(f"pairwise NCCL sendrecv {rec['bytes']} B: {rec['busbw']:.2f} GB/s")


def test_one_node_two_gpus_one_actor_per_gpu(tmp_path):
    with ray_test_cluster([], head={"node_name": "head", "num_gpus": 2, "env": {"CUDA_VISIBLE_DEVICES": "0,1"}},
                          extra_env=SAFE) as (cluster, env):
        out, text, cl = _run(cluster, env, tmp_path)
    bench = json.loads((out / "bench.json").read_text())
    assert {r["backend"] for r in bench["records"]} == {"nccl"} and {r["world_size"] for r in bench["records"]} == {2}
    assert len({r["gpu_bus_id"] for r in bench["context"]["ranks"]}) == 2
    assert cl["context"]["bench"]["world_size"] == 2
    assert [r["node"] for r in cl["context"]["bench"]["ranks"]] == [cl["context"]["nodes"][0]["label"]] * 2
