"""link.lossless: each `rdmacheck link` run's window of this node's port counters (facts/window.py) judged by
facts.lossless, and the gate over the runs (link/gates.py).

The windows read counter trees laid out with the drivers' own names (tests/sysfs_builder.counter_tree: rxe's
hw_counters, mlx5's), moved between the two reads as a transfer would; the real run is in the soft-RoCE
guest (tests/test_softroce_datapath.py, against the guest's own rxe counters)."""

from __future__ import annotations

import pytest

from rdmacheck.evidence.model import Status, exit_code
from rdmacheck.link.gates import judge_lossless
from rdmacheck.preflight.facts.window import Window
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import counter_tree

RXE = ("sent_pkts", "rcvd_pkts", "duplicate_request", "out_of_seq_request", "rcvd_seq_err", "completer_retry_err",
       "retry_exceeded_err", "rcvd_rnr_err")
MLX5 = ("out_of_sequence", "packet_seq_err", "local_ack_timeout_err", "np_cnp_sent", "rp_cnp_handled",
        "out_of_buffer", "duplicate_request")
ND = "enP2p1s0f0np0"
PORT = "roceP2p1s0f0/1"


def _tree(root, names, **moved):
    hw = {n: 0 for n in names}
    hw.update(moved)
    counter_tree(root, {PORT: {"hw_counters": hw}}, {ND: {"rx_bytes": 0, "tx_bytes": 0}},
                 links={"roceP2p1s0f0": ND})
    return HostRoot(root)


def _run(root, names, after: dict, ok: bool = True) -> dict:
    """One link run's row as the client builds it: its window around the transfer."""
    r = _tree(root, names)
    with Window(r, {"roceP2p1s0f0:1": [ND]}) as w:
        _tree(root, names, **after)      # the transfer moves the counters
    assert not w.root.live               # a tree: no ethtool ioctl on this host's netdevs
    key = PORT
    return {"mode": "pair", "local_port": "roceP2p1s0f0:1", "peer": "10.0.0.1", "result": {"ok": ok},
            "lossless": {key: w.verdicts[key].to_dict()} if key in w.verdicts else {}}


@pytest.mark.parametrize("names,after,state,status", [
    (RXE, {"sent_pkts": 9000, "rcvd_pkts": 4000}, "lossless", Status.PASS),
    (RXE, {"sent_pkts": 9000, "rcvd_pkts": 4000, "completer_retry_err": 358, "rcvd_seq_err": 361}, "lossy",
     Status.WARN),
    (MLX5, {"np_cnp_sent": 40, "rp_cnp_handled": 38}, "congested", Status.PASS),
    (MLX5, {"out_of_sequence": 12, "local_ack_timeout_err": 1}, "lossy", Status.WARN),
    (MLX5, {"out_of_buffer": 5}, "broken", Status.FAIL),
])
def test_each_verdict_of_a_run_window_and_the_gate(tmp_path, names, after, state, status):
    row = _run(tmp_path, names, after)
    v = row["lossless"][PORT]
    assert v["state"] == state, v
    # what moved is what the tree moved, by its kernel name, nothing else
    moved = {k.rsplit("/", 1)[-1]: d for cls in v["moved"].values() for k, d in cls.items()}
    assert moved == {k: d for k, d in after.items() if k not in ("sent_pkts", "rcvd_pkts")}
    r = judge_lossless([row])
    assert r.status is status, r
    assert f"pair {PORT}" in r.observed and r.details[f"pair {PORT}"]["state"] == state


def test_worst_run_decides_and_a_lossy_run_warns_without_failing_the_link(tmp_path):
    a = _run(tmp_path / "a", RXE, {"sent_pkts": 100})
    b = _run(tmp_path / "b", RXE, {"sent_pkts": 100, "duplicate_request": 3})
    r = judge_lossless([a, b])
    assert r.status is Status.WARN and "retransmits with no pause" in r.observed, r
    assert exit_code([r]) == 0
    c = _run(tmp_path / "c", MLX5, {"out_of_buffer": 1})
    assert judge_lossless([a, b, c]).status is Status.FAIL


def test_no_run_reached_or_no_retransmit_counter_is_not_judged_and_fails_closed(tmp_path):
    unreached = _run(tmp_path / "a", RXE, {"sent_pkts": 50}, ok=False)
    r = judge_lossless([unreached])
    assert r.status is Status.SKIP and r.unjudged and "link.reach" in r.observed
    assert exit_code([r]) == 1
    # a driver with packet counters only: loss cannot be told, so no pass
    blind = _run(tmp_path / "b", ("sent_pkts", "rcvd_pkts"), {"sent_pkts": 50, "rcvd_pkts": 50})
    assert blind["lossless"][PORT]["state"] == "unknown"
    r = judge_lossless([blind])
    assert r.status is Status.SKIP and r.unjudged, r
    assert judge_lossless([]).unjudged


def test_a_window_reads_only_its_own_ports(tmp_path):
    counter_tree(tmp_path, {PORT: {"hw_counters": {n: 0 for n in RXE}},
                            "roceP2p1s0f1/1": {"hw_counters": {n: 0 for n in RXE}}},
                 {ND: {"rx_bytes": 0, "tx_bytes": 0}}, links={"roceP2p1s0f0": ND})
    with Window(HostRoot(tmp_path), {"roceP2p1s0f0:1": [ND]}) as w:
        counter_tree(tmp_path, {PORT: {"hw_counters": {n: 0 for n in RXE}},
                                "roceP2p1s0f1/1": {"hw_counters": {**{n: 0 for n in RXE}, "rcvd_seq_err": 9}}},
                     {ND: {"rx_bytes": 0, "tx_bytes": 0}}, links={"roceP2p1s0f0": ND})
    assert set(w.verdicts) == {PORT} and w.verdicts[PORT].state == "lossless"
