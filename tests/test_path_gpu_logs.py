"""The real GPU runs' NCCL logs (tests/data/nccl-logs/h100x2-*): parsed and judged exactly.

Made on 2x H100 (NVLink, no RDMA NIC) on 2026-11-27 by tests/data/nccl-logs/capture.sh (rdmacheck bench
with the path-proof hook; each log's first line names its run):
- h100x2-nvlink.rank{0,1}.log: one node, two ranks -> NCCL's intra-node paths (P2P/CUMEM over NVLink);
- h100x2-socket.rank{0,1}.log: two one-GPU "nodes" -- network+UTS+mount namespaces node-0/node-1 joined by
  a veth pair (MTU 9000), torchrun's c10d rendezvous across it -- with NCCL_P2P_DISABLE=1
  NCCL_SHM_DISABLE=1, so NCCL must use its network: with no RDMA NIC that is NET/Socket, bench.transport
  must fail with that diagnosis, and the veth's counters carry NCCL's bytes (bench.wire);
- h100x2-preflight.json: rdmacheck preflight on that machine, cross-referenced by the causes;
- h100x2-{nvlink,socket}.bench.json: rank 0's evidence of the two runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from rdmacheck.bench.gates import PathExpectation, check_transport, check_wire
from rdmacheck.evidence.model import Evidence, Status
from rdmacheck.nccl.log import parse_files

DATA = REPO / "tests" / "data" / "nccl-logs"
CAPTURE_CMD = "OUT=/tmp/nccl-capture bash tests/data/nccl-logs/capture.sh  (as root on a 2-GPU machine)"


def _need(*names: str) -> list[Path]:
    paths = [DATA / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in {DATA.relative_to(REPO)} yet; produce them with: {CAPTURE_CMD}")
    return paths


def test_nvlink_run_paths():
    log = parse_files(_need("h100x2-nvlink.rank0.log", "h100x2-nvlink.rank1.log"))
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
    assert r.status is Status.SKIP and r.observed == "one node (vm): no network path used (P2P/CUMEM x48)"


def test_forced_network_run_falls_back_to_socket_and_fails():
    log = parse_files(_need("h100x2-socket.rank0.log", "h100x2-socket.rank1.log"))
    pre = Evidence.from_dict(json.loads(_need("h100x2-preflight.json")[0].read_text()))
    assert log.version == "2.28.9+cuda13.0"
    assert log.hosts == ["node-0", "node-1"]  # each namespace had its own host name
    assert log.ib_no_device is True and log.ib_devices == []
    assert [(d.name, d.addr) for d in log.socket_devices] == [("vA", "10.199.0.1<0>"), ("vB", "10.199.0.2<0>")]
    assert log.networks == ["Socket"] and log.net_plugin == "Socket"
    assert log.env == {"NCCL_P2P_DISABLE": "1"}  # NCCL 2.28 does not echo NCCL_SHM_DISABLE under INIT,NET,GRAPH
    assert log.path_kinds == {"NET/Socket": 8}  # 2 channels x send/receive x 2 ranks
    assert {c.direction for c in log.channels} == {"send", "receive"}
    assert {c.host for c in log.channels} == {"node-0", "node-1"} and {c.net_dev for c in log.channels} == {0}
    assert log.gdr_enabled is False and log.errors == []
    r = check_transport(log, PathExpectation.from_env({"NCCL_NET_GDR_LEVEL": "5"}), multi_node=True, preflight=[pre])
    assert r.status is Status.FAIL
    assert r.observed == "NCCL fell back to NET/Socket (8 NET channels via NET/Socket)"
    causes = r.details["causes"]
    # that machine has no RDMA device at all: NCCL's log and preflight agree on the first cause
    assert [c["cause"] for c in causes] == ["devfiles", "hca", "gid", "memlock"]
    assert causes[0]["evidence"] == [
        "NCCL log: 'NET/IB : No device found.'",
        "preflight rdma.devfiles warned on vm: /dev/infiniband: rdma_cm; /etc/rdma absent",
        "preflight rdma.devices failed on vm: no RDMA devices in /sys/class/infiniband",
    ]
    memlock = causes[-1]
    assert memlock["evidence"] == ["preflight passed limits.memlock"]  # memlock unlimited there: last
    assert r.remedy.startswith("most likely: RDMA device files not visible")


def test_committed_evidence_of_the_gpu_runs():
    nv, so = _need("h100x2-nvlink.bench.json", "h100x2-socket.bench.json")
    a, b = json.loads(nv.read_text()), json.loads(so.read_text())
    ra = {r["id"]: r for r in a["results"]}
    rb = {r["id"]: r for r in b["results"]}
    assert ra["bench.transport"]["status"] == "skip" and ra["bench.busbw"]["status"] == "pass"
    assert ra["bench.wire"]["status"] == "skip"  # one node: nothing crosses a NIC
    assert rb["bench.transport"]["status"] == "fail"
    assert rb["bench.transport"]["details"]["net_plugin"] == "Socket"
    assert rb["bench.transport"]["details"]["causes"][0]["cause"] == "devfiles"
    assert rb["bench.busbw"]["status"] == "fail"  # the socket path is ~100x slower than NVLink here
    assert sorted(r["host"] for r in b["context"]["ranks"]) == ["node-0", "node-1"]
    assert b["context"]["path_proof"]["nccl"]["paths"] == {"NET/Socket": 8}
    assert all(x["found"] for x in b["context"]["path_proof"]["logs"])
    # bench.wire re-judged from the stored counter deltas with today's call count: NCCL's bytes on the veth
    w = check_wire(b["records"], b["context"])
    assert w.status is Status.PASS
    rows = {r["bytes"]: r for r in w.details["rows"]}
    big = rows[64 << 20]
    assert big["calls"] == 87 and big["factor"] == 1.0  # --graph auto, --iters 20 (see calls_in_window)
    for node in big["nodes"]:
        (ifname, c), = node["netdevs"].items()
        assert ifname in ("vA", "vB") and node["hcas"] == {}
        assert 1.0 <= node["ratio"] < 1.01, node  # 5848706194 B for 87 x 64 MiB: +0.2% TCP/IP at MTU 9000
