"""The bench's per-size counter windows carry the lossless verdict (bench/path_proof.py + facts/lossless.py).

The path-proof hook is driven as the bench drives it (``select``, then ``before_size``/``after_size`` around
each size) on a soft-RoCE counter tree laid out with rxe's own names (tests/sysfs_builder.counter_tree),
whose counters the test moves between the two reads as a transfer would; one rank, no torch needed.
"""

from __future__ import annotations

from rdmacheck.bench.path_proof import PathProof, lossless_by_size
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import counter_tree

RXE = ("sent_pkts", "rcvd_pkts", "duplicate_request", "out_of_seq_request", "rcvd_rnr_err", "send_rnr_err",
       "rcvd_seq_err", "ack_deferred", "retry_exceeded_err", "retry_rnr_exceeded_err", "completer_retry_err",
       "send_err", "link_downed", "rdma_sends", "rdma_recvs")
ND = "enP2p1s0f0np0"


def _tree(root, **moved):
    hw = {n: 0 for n in RXE}
    hw.update(moved)
    counter_tree(root, {"roceP2p1s0f0/1": {"hw_counters": hw}},
                 {ND: {"rx_bytes": moved.get("nd_rx", 0), "tx_bytes": 0}}, links={"roceP2p1s0f0": ND})
    gid = root / "sys/class/infiniband/roceP2p1s0f0/ports/1/gid_attrs/ndevs/0"  # rxe's GID ndevs: hca_netdevs
    gid.parent.mkdir(parents=True, exist_ok=True)
    gid.write_text(ND + "\n")
    return root


def test_every_size_window_gets_its_verdict(tmp_path):
    root = _tree(tmp_path)
    pp = PathProof(env={"RDMACHECK_WIRE_HCA": "roceP2p1s0f0", "RDMACHECK_WIRE_IFNAME": ND}, root=HostRoot(root))
    pp.select("nccl")
    assert pp.hcas == [("roceP2p1s0f0", 1)] and ND in pp.netdevs
    records = []
    windows = [({"sent_pkts": 16000, "rcvd_pkts": 1000}, "lossless"),
               ({"sent_pkts": 32000, "rcvd_pkts": 2000, "completer_retry_err": 358, "rcvd_seq_err": 361}, "lossy")]
    for size, (after, want) in zip((1 << 20, 1 << 26), windows):
        _tree(root, **{k: 0 for k in after})  # the counters as the size starts ...
        row = {"op": "all_reduce", "bytes": size}
        pp.before_size(row)
        _tree(root, **after)                  # ... and as it ends
        rec = dict(row)
        pp.after_size(row, rec)
        v = rec["wire"]["nodes"][0]["lossless"]["roceP2p1s0f0/1"]
        assert v["state"] == want, v
        records.append(rec)
    assert "retransmits with no pause" in records[1]["wire"]["nodes"][0]["lossless"]["roceP2p1s0f0/1"]["patterns"]
    host = records[0]["wire"]["nodes"][0]["host"]
    assert lossless_by_size(records) == [
        {"op": "all_reduce", "bytes": 1 << 20, "ports": {f"{host}:roceP2p1s0f0/1": "lossless"}},
        {"op": "all_reduce", "bytes": 1 << 26, "ports": {f"{host}:roceP2p1s0f0/1": "lossy"}}]
