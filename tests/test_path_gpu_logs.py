"""The real GPU runs' NCCL logs (tests/data/nccl-logs/h100x2-*): parsed and judged exactly.

Made on 2x H100 (NVLink, no RDMA NIC) by tests/data/nccl-logs/capture.sh with rdmacheck bench and the
path-proof hook (each file's first line names its run):
- h100x2-nvlink.rank{0,1}.log: one node, two ranks -> NCCL's intra-node paths (P2P/CUMEM over NVLink);
- h100x2-socket.rank{0,1}.log: two one-GPU "nodes" (two torchrun agents), NCCL_P2P_DISABLE=1
  NCCL_SHM_DISABLE=1 -> NCCL must use its network; with no RDMA NIC that is NET/Socket, and
  bench.transport must fail with that diagnosis.
The *.bench.json files are rank 0's evidence of the same runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from rdmacheck.checks.path import PathExpectation, check_transport
from rdmacheck.model import Status
from rdmacheck.nccl_log import parse_files

DATA = REPO / "tests" / "data" / "nccl-logs"
CAPTURE_CMD = "OUT=/tmp/nccl-capture bash tests/data/nccl-logs/capture.sh  (on a 2-GPU machine)"


def _logs(stem: str) -> list[Path]:
    files = sorted(DATA.glob(f"{stem}.rank*.log"))
    if len(files) != 2:
        pytest.skip(f"{stem}.rank0/1.log not in {DATA.relative_to(REPO)} yet; produce them with: {CAPTURE_CMD}")
    return files


def test_nvlink_run_paths():
    log = parse_files(_logs("h100x2-nvlink"))
    assert log.version == "2.28.9+cuda13.0"
    assert log.hosts == ["vm"]
    # NCCL always brings up a network plugin; with no RDMA device it is Socket, even on one node
    assert log.ib_no_device is True and log.ib_devices == [] and log.networks == ["Socket"]
    assert [d.name for d in log.socket_devices] == ["eth0"]
    # every channel of both ranks went over NVLink through CUDA's cuMem P2P: 24 channels x 2 ranks
    assert log.path_kinds == {"P2P/CUMEM": 48}
    assert {(c.src_rank, c.dst_rank) for c in log.channels} == {(0, 1), (1, 0)}
    assert sorted({c.channel for c in log.channels}) == list(range(24))
    assert log.net_channels == [] and log.errors == []
    # the Socket plugin's "GPU Direct RDMA Disabled for HCA 0 'eth0'" says nothing about GDR
    assert [(g.net, g.hca_name, g.enabled) for g in log.gdr] == [("Socket", "eth0", False)] * 2
    assert log.gdr_enabled is None
    r = check_transport(log, PathExpectation(), multi_node=False)
    assert r.status is Status.SKIP and r.observed == "one node: no network path used (P2P/CUMEM x48)"


def test_forced_network_run_falls_back_to_socket_and_fails():
    log = parse_files(_logs("h100x2-socket"))
    assert log.version == "2.28.9+cuda13.0"
    assert log.ib_no_device is True and log.oob == "lo:127.0.0.1<0>"
    assert [(d.name, d.addr) for d in log.socket_devices] == [("lo", "127.0.0.1<0>")]
    assert log.networks == ["Socket"] and log.net_plugin == "Socket"
    assert log.env == {"NCCL_P2P_DISABLE": "1"}  # NCCL 2.28 does not echo NCCL_SHM_DISABLE under INIT,NET,GRAPH
    assert log.path_kinds == {"NET/Socket": 8}  # 2 channels x send/receive x 2 ranks
    assert {c.direction for c in log.channels} == {"send", "receive"}
    assert {c.net_dev for c in log.channels} == {0}
    assert log.gdr_enabled is False and log.errors == []
    # the two "nodes" share one host name; NET channels are judged whatever the host names say
    r = check_transport(log, PathExpectation.from_env({"NCCL_NET_GDR_LEVEL": "5"}), multi_node=False)
    assert r.status is Status.FAIL
    assert r.observed == "NCCL fell back to NET/Socket (8 NET channels via NET/Socket)"
    causes = r.details["causes"]
    assert causes[0]["cause"] == "devfiles"  # no RDMA device at all on that machine: the right diagnosis
    assert causes[0]["evidence"] == ["NCCL log: 'NET/IB : No device found.'"]
    assert [c["cause"] for c in causes] == ["devfiles", "memlock", "hca", "gid"]


def test_committed_evidence_of_the_gpu_runs():
    nv, so = DATA / "h100x2-nvlink.bench.json", DATA / "h100x2-socket.bench.json"
    if not (nv.is_file() and so.is_file()):
        pytest.skip(f"GPU bench evidence not committed yet; produce it with: {CAPTURE_CMD}")
    a, b = json.loads(nv.read_text()), json.loads(so.read_text())
    ra = {r["id"]: r for r in a["results"]}
    rb = {r["id"]: r for r in b["results"]}
    assert ra["bench.transport"]["status"] == "skip" and ra["bench.busbw"]["status"] == "pass"
    assert rb["bench.transport"]["status"] == "fail"
    assert rb["bench.transport"]["details"]["net_plugin"] == "Socket"
    assert rb["bench.transport"]["details"]["causes"][0]["cause"] == "devfiles"
    # the forced-socket run is also ~100x slower: the busbw gate fails for the same reason
    assert rb["bench.busbw"]["status"] == "fail"
    assert b["context"]["path_proof"]["nccl"]["paths"] == {"NET/Socket": 8}
    assert all(x["found"] for x in b["context"]["path_proof"]["logs"])
