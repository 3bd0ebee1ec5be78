"""bench.transport and bench.wire as pure functions: parsed logs / counter deltas + expectations -> Results.

The logs are the real captures where they say enough (the Azure completion error) and constructed
lines in NCCL's printed shapes otherwise (see tests/test_nccl_log.py for their sources).  The counter
deltas are written by hand here: the same math on live counters is proven in test_multinode_netns.py.
"""

from __future__ import annotations

import pytest

from rdmacheck.nccl.spec import hca_selected
from rdmacheck.bench.gates import (
    PathExpectation,
    calls_in_window,
    check_transport,
    check_wire,
    node_bytes,
    rank_causes,
    wire_factor,
)
from rdmacheck.evidence.model import Evidence, Result, Status
from rdmacheck.nccl.log import parse_file, parse_text

ROCE_OK = """\
a:1:1 [0] NCCL INFO NCCL version 2.21.5+cuda12.4
a:1:1 [0] NCCL INFO NET/IB : Using [0]roceP2p1s0f0:1/RoCE [RO]; OOB enP2p1s0f0np0:192.168.100.1<0>
a:1:1 [0] NCCL INFO Using network IB
a:1:1 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/IB/0/GDRDMA
a:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA
a:1:1 [0] NCCL INFO NET/IB: NCCL Dev 0 IbDev 0 Port 1 qpn 99 mtu 5 GID 3 (80FE/0) fifoRkey=0x1 fifoLkey=0x2
"""
NO_GDR = ROCE_OK.replace("/GDRDMA", "") + \
    "a:1:1 [0] NCCL INFO GPU Direct RDMA Disabled for GPU 0 / HCA 0 (distance 6 > 5)\n"
SOCKET = """\
a:1:1 [0] NCCL INFO NET/IB : No device found.
a:1:1 [0] NCCL INFO NET/Socket : Using [0]enP2p1s0f0np0:192.168.100.1<0>
a:1:1 [0] NCCL INFO Using network Socket
a:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/Socket/0
a:1:1 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/0
"""
P2P = "a:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n" \
      "a:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"


# ---------------------------------------------------------------- factors and helpers


@pytest.mark.parametrize("op,n,backend,f", [
    ("all_reduce", 2, "nccl", 1.0), ("all_reduce", 4, "nccl", 1.5), ("all_reduce", 8, "gloo", 1.75),
    ("all_gather", 2, "nccl", 0.5), ("reduce_scatter", 4, "nccl", 0.75), ("alltoall", 2, "nccl", 0.5),
    ("broadcast", 8, "nccl", 1.0), ("sendrecv", 2, "gloo", 1.0),
    ("reduce_scatter", 2, "gloo", 1.0), ("reduce_scatter", 4, "gloo", 1.5),  # gloo: a full all_reduce
    ("all_reduce", 1, "nccl", None), ("nope", 2, "nccl", None),
])
def test_wire_factor(op, n, backend, f):
    assert wire_factor(op, n, backend) == f


@pytest.mark.parametrize("spec,name,port,ok", [
    (None, "mlx5_0", 1, True), ("mlx5", "mlx5_1", 1, True), ("=mlx5", "mlx5_1", 1, False),
    ("=mlx5_1", "mlx5_1", 1, True), ("mlx5_0:1", "mlx5_0", 2, False), ("^mlx5_0", "mlx5_0", 1, False),
    ("^mlx5_0", "roceP2p1s0f0", 1, True), ("roceP2p1s0f0:1,mlx5_2", "mlx5_2", 1, True),
])
def test_hca_selected_follows_nccl_syntax(spec, name, port, ok):
    assert hca_selected(spec, name, port) is ok


def test_expectation_from_env():
    e = PathExpectation.from_env({"NCCL_NET_GDR_LEVEL": "5", "NCCL_IB_HCA": "=roceP2p1s0f0"})
    assert (e.net, e.link, e.gdr, e.hca_filter) == ("IB", "RoCE", True, "=roceP2p1s0f0")
    assert PathExpectation.from_env({"NCCL_NET_GDR_LEVEL": "LOC"}).gdr is False
    assert PathExpectation.from_env({}).gdr is None
    assert "GDRDMA" in e.describe() and "RoCE" in e.describe()


# ---------------------------------------------------------------- bench.transport


def test_transport_passes_on_roce_with_gdr():
    r = check_transport(parse_text(ROCE_OK), PathExpectation.from_env({"NCCL_NET_GDR_LEVEL": "5"}), multi_node=True)
    assert r.id == "bench.transport" and r.status is Status.PASS, r
    assert r.observed == "NET/IB over RoCE, GDRDMA, HCA roceP2p1s0f0, GID index 3 (2 NET channels)"
    d = r.details
    assert (d["net_plugin"], d["links"], d["used_hcas"], d["gdr_enabled"], d["gid_indexes"]) == (
        "IB", ["RoCE"], ["roceP2p1s0f0"], True, [3])
    assert d["paths"] == {"NET/IB/GDRDMA": 2} and d["causes"] == [] and d["nccl_version"] == "2.21.5+cuda12.4"


def test_transport_fails_without_gdr_when_level_asks():
    r = check_transport(parse_text(NO_GDR), PathExpectation.from_env({"NCCL_NET_GDR_LEVEL": "5"}), multi_node=True)
    assert r.status is Status.FAIL
    assert "GPUDirect RDMA off on 2 of 2 NET channels (NCCL: distance 6 > level 5)" in r.observed
    assert "nvidia_peermem" in r.remedy
    # without NCCL_NET_GDR_LEVEL, GDR is not demanded
    assert check_transport(parse_text(NO_GDR), PathExpectation(), multi_node=True).status is Status.PASS


def test_transport_fails_on_ib_link_when_roce_expected():
    text = ROCE_OK.replace("roceP2p1s0f0:1/RoCE", "mlx5_0:1/IB")
    r = check_transport(parse_text(text), PathExpectation(), multi_node=True)
    assert r.status is Status.FAIL and "NET/IB used IB links, expected RoCE" in r.observed
    assert check_transport(parse_text(text), PathExpectation(link=None), multi_node=True).status is Status.PASS


def test_socket_fallback_fails_with_ranked_causes():
    r = check_transport(parse_text(SOCKET), PathExpectation(), multi_node=True)
    assert r.status is Status.FAIL
    assert r.observed.startswith("NCCL fell back to NET/Socket (2 NET channels via NET/Socket)")
    causes = r.details["causes"]
    # no preflight, no env: NCCL's 'No device found' puts device files first, then the prior order
    assert [c["cause"] for c in causes] == ["devfiles", "memlock", "hca", "gid"]
    assert [c["rank"] for c in causes] == [1, 2, 3, 4]
    assert causes[0]["evidence"] == ["NCCL log: 'NET/IB : No device found.'"]
    assert r.remedy.startswith("most likely: RDMA device files not visible")


def test_socket_fallback_causes_follow_preflight_and_env():
    log = parse_text(SOCKET)
    pre = Evidence(kind="preflight", host="node-b", results=[
        Result("rdma.devfiles", Status.PASS, observed="/dev/infiniband/uverbs0 rdma_cm"),
        Result("rdma.devices", Status.PASS, observed="roceP2p1s0f0"),
        Result("limits.memlock", Status.FAIL, observed="memlock 8192 KiB"),
        Result("rdma.gid", Status.PASS, observed="GID 3 RoCE v2"),
    ])
    causes = rank_causes(log, {}, [pre])
    assert causes[0]["cause"] == "memlock"
    assert causes[0]["evidence"] == ["preflight limits.memlock failed on node-b: memlock 8192 KiB"]
    devfiles = next(c for c in causes if c["cause"] == "devfiles")
    assert "preflight passed rdma.devfiles, rdma.devices" in devfiles["evidence"]
    # NCCL_IB_HCA naming nothing + 'No device found' outranks a memlock failure
    causes = rank_causes(log, {"NCCL_IB_HCA": "=mlx5_9"}, [pre])
    assert [c["cause"] for c in causes][:2] == ["hca", "memlock"]
    assert causes[0]["evidence"][0] == "NCCL_IB_HCA==mlx5_9 and NCCL log: 'NET/IB : No device found.'"
    # forced by the environment: certain, first
    causes = rank_causes(log, {"NCCL_IB_DISABLE": "1"}, [pre])
    assert causes[0]["cause"] == "forced" and causes[0]["evidence"] == ["NCCL_IB_DISABLE=1"]
    # preflight evidence as JSON dicts works too (as read back from files)
    assert rank_causes(log, {}, [pre.to_dict()])[0]["cause"] == "memlock"


def test_missing_libibverbs_is_the_cause():
    log = parse_text(SOCKET + "a:1:1 [0] misc/ibvsymbols.cc:80 NCCL WARN Failed to open libibverbs.so[.1]\n")
    r = check_transport(log, PathExpectation(), multi_node=True)
    assert r.details["causes"][0]["cause"] == "verbs"


def test_socket_expected_passes():
    assert check_transport(parse_text(SOCKET), PathExpectation(net="Socket"), multi_node=True).status is Status.PASS


def test_completion_error_fails_on_real_capture(captures):
    log = parse_file(captures / "text" / "nccl-debug-azure-ib-plus-roce-net-ib-fail.txt")
    # the excerpt has no channel lines; with the NET channels the run printed, the error still fails it
    log.channels = parse_text("node-2:5776:5898 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/1/GDRDMA").channels
    r = check_transport(log, PathExpectation(), multi_node=True)
    assert r.status is Status.FAIL
    assert "NET/IB completion error 12 (IBV_WC_RETRY_EXC_ERR, vendor err 129) from peer 10.2.0.5<33092>" in r.observed
    assert r.details["used_hcas"] == ["rdmaP1111p0s2"] and r.details["links"] == ["RoCE"]
    assert r.details["errors"][0]["status"] == 12


def test_one_node_skips_and_gloo_skips_and_no_log_fails():
    r = check_transport(parse_text(P2P), PathExpectation(), multi_node=False)
    assert r.status is Status.SKIP and r.observed.startswith("one node") and r.observed.endswith("no network path used (P2P/CUMEM x2)")
    assert check_transport(parse_text(P2P), PathExpectation(), multi_node=True).status is Status.FAIL
    assert check_transport(None, backend="gloo").status is Status.SKIP
    r = check_transport(parse_text("nothing here"), PathExpectation())
    assert r.status is Status.FAIL and "cannot be proven" in r.observed


# ---------------------------------------------------------------- bench.wire


def _records(op: str, nbytes: int, iters: int, wire_nodes: list[dict], variants=(False,), calls: int | None = None) -> list[dict]:
    # calls: what the runner counts for an eager variant with CTX: warm-up + timed + the --check call
    calls = CTX["warmup"] + iters + 1 if calls is None else calls
    recs = [{"op": op, "bytes": nbytes, "iters": iters, "in_place": v, "graph": False, "calls": calls} for v in variants]
    recs[0]["wire"] = {"nodes": wire_nodes}
    return recs


CTX = {"world_size": 2, "backend": "nccl", "warmup": 2, "iters": 20, "check": True}


def test_calls_in_window_is_the_runners_count():
    """The runner counts the calls of each variant where it issues them; bench.wire only adds them up."""
    nodes = [{"host": h, "rank": i, "hcas": {"mlx5_0/1": {"tx": 1 << 30, "rx": 1 << 30}}, "netdevs": {}}
             for i, h in enumerate(("a", "b"))]
    recs = _records("all_reduce", 64 << 20, 20, nodes, variants=(False, True), calls=23)
    assert calls_in_window(recs) == 2 * 23
    recs[1].pop("calls")
    assert calls_in_window(recs) is None       # a record without a count is not guessed at
    r = check_wire(recs, CTX)
    assert r.details["rows"][0]["verdict"].startswith("not judged (no call count recorded")


def test_node_bytes_never_double_counts():
    # RoCE on mlx5: HCA counters only; rxe: HCA has no byte counters, netdev carries; both: the larger family
    assert node_bytes({"hcas": {"mlx5_0/1": {"tx": 100, "rx": 90}}, "netdevs": {"eth0": {"tx": 5, "rx": 3}}}) == 100
    assert node_bytes({"hcas": {}, "netdevs": {"veth0": {"tx": 40, "rx": 60}}}) == 60
    assert node_bytes({"hcas": {"a/1": {"tx": 10, "rx": 0}, "b/1": {"tx": 10, "rx": 0}}, "netdevs": {}}) == 20


def test_wire_passes_fails_and_names_the_other_carrier():
    nbytes, calls = 64 << 20, 23
    exp = nbytes * calls  # all_reduce on 2 ranks: factor 1
    ok = [{"host": h, "rank": i, "hcas": {"roceP2p1s0f0/1": {"tx": int(exp * 1.02), "rx": int(exp * 1.01)}},
           "netdevs": {}, "others": {"eth0": {"tx": 1000, "rx": 1000}}} for i, h in enumerate(("a", "b"))]
    r = check_wire(_records("all_reduce", nbytes, 20, ok), CTX)
    assert r.id == "bench.wire" and r.status is Status.PASS, r
    assert r.observed == ("roceP2p1s0f0/1 carried 1.02x..1.02x of the expected bytes on 2 nodes over 1 sizes "
                          "(nodes by host name (no NCCL host id recorded): a, b)")
    row = r.details["rows"][0]
    assert (row["calls"], row["factor"], row["expected_bytes"], row["verdict"]) == (calls, 1.0, exp, "pass")

    bad = [dict(n, hcas={"roceP2p1s0f0/1": {"tx": 4096, "rx": 4096}}, others={"eno1": {"tx": exp, "rx": exp}})
           for n in ok]
    r = check_wire(_records("all_reduce", nbytes, 20, bad), CTX)
    assert r.status is Status.FAIL
    assert r.observed.startswith(f"all_reduce {nbytes} B: a roceP2p1s0f0/1 carried 4096 B, 0.00x of the {exp} B")
    assert r.observed.endswith(f"(1 of 1 sizes below 0.5x); eno1 carried {exp} B (nodes by host name (no NCCL host id recorded): a, b)")
    assert r.details["rows"][0]["nodes"][0]["top_other"] == {"name": "eno1", "bytes": exp}

    # just below the tolerance fails, just above passes
    edge = [dict(n, hcas={"x/1": {"tx": int(exp * 0.49), "rx": 0}}) for n in ok]
    assert check_wire(_records("all_reduce", nbytes, 20, edge), CTX).status is Status.FAIL
    edge = [dict(n, hcas={"x/1": {"tx": int(exp * 0.51), "rx": 0}}) for n in ok]
    assert check_wire(_records("all_reduce", nbytes, 20, edge), CTX).status is Status.PASS
    edge = [dict(n, hcas={"x/1": {"tx": int(exp * 3.5), "rx": 0}}) for n in ok]
    assert check_wire(_records("all_reduce", nbytes, 20, edge), CTX).status is Status.WARN


def test_wire_skips_small_sizes_one_node_and_no_samples():
    nodes = [{"host": h, "rank": i, "hcas": {}, "netdevs": {"v": {"tx": 0, "rx": 0}}} for i, h in enumerate("ab")]
    r = check_wire(_records("all_reduce", 1024, 20, nodes), CTX)  # 23 KiB expected: not judged
    assert r.status is Status.SKIP and "too small" in r.observed
    assert r.details["rows"][0]["verdict"].startswith("not judged")
    one = [dict(nodes[0], netdevs={"v": {"tx": 0, "rx": 0}})]
    assert check_wire(_records("all_reduce", 64 << 20, 20, one), CTX).status is Status.SKIP
    assert check_wire([{"op": "all_reduce", "bytes": 1, "iters": 1}], CTX).status is Status.SKIP


def test_wire_reset_or_saturated_counter_is_not_judged():
    nbytes = 64 << 20
    nodes = [{"host": h, "rank": i, "hcas": {"mlx4_0/1": {"tx": None, "rx": None}}, "netdevs": {}} for i, h in enumerate("ab")]
    r = check_wire(_records("all_reduce", nbytes, 20, nodes), CTX)
    assert r.status is Status.SKIP
    assert r.details["rows"][0]["verdict"] == ("not judged (counter reset or saturated: a: mlx4_0/1; b: mlx4_0/1)")
    # one good family still proves the bytes: a saturated HCA next to a netdev that carried them
    nodes = [dict(n, netdevs={"ib0": {"tx": nbytes * 23, "rx": nbytes * 23}}) for n in nodes]
    assert check_wire(_records("all_reduce", nbytes, 20, nodes), CTX).status is Status.PASS


# ---------------------------------------------------------------- how many nodes the log proves

def test_real_two_node_capture_without_channel_lines_is_not_one_node(captures):
    """A real Azure 2-node capture (node-2's lines, a NET/IB completion error from peer 10.2.0.5): no channel
    lines, but two nodes took part, so the path cannot be 'one node' and the error must surface."""
    from rdmacheck.nccl import log as nccl_log

    f = captures / "text" / "nccl-debug-azure-ib-plus-roce-net-ib-fail.txt"
    r = check_transport(nccl_log.parse_text(f.read_text(), f.name))
    assert r.status is Status.FAIL and "one node" not in r.observed
    assert "two nodes (node-2, peer 10.2.0.5)" in r.observed and "completion error 12" in r.observed


# Written for this test in NCCL's INFO line format (init.cc/net_ib), with the host and device names of the
# DGX Spark captures in ../shared/captures/text (dgx-spark-ibdev2netdev-2node.txt): each node's INIT/NET
# lines, NCCL_DEBUG_SUBSYS without GRAPH (so no channel lines).
SPARK_TWO_HOSTS = """\
spark-5c2d:2201:2201 [0] NCCL INFO NCCL version 2.28.9+cuda13.0
spark-5c2d:2201:2290 [0] NCCL INFO NET/IB : Using [0]rocep1s0f0:1/RoCE [1]roceP2p1s0f0:1/RoCE [RO]; OOB enp1s0f0np0:192.168.100.10<0>
spark-bd26:1874:1874 [0] NCCL INFO NCCL version 2.28.9+cuda13.0
spark-bd26:1874:1960 [0] NCCL INFO NET/IB : Using [0]rocep1s0f0:1/RoCE [1]roceP2p1s0f0:1/RoCE [RO]; OOB enp1s0f0np0:192.168.100.11<0>
"""


def test_dgx_spark_log_naming_two_hosts_says_two_nodes():
    from rdmacheck.nccl import log as nccl_log

    r = check_transport(nccl_log.parse_text(SPARK_TWO_HOSTS, "spark.log"))
    assert r.status is Status.FAIL and "two nodes (spark-5c2d, spark-bd26)" in r.observed
    assert "NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH" in r.remedy
