"""The lossless verdict (rdmacheck.preflight.facts.lossless) on counter trees laid out with the kernel's own names.

Each of the four verdicts is a pair of sysfs trees (tests/sysfs_builder.counter_tree) read through the
same reader as `rdmacheck counters` (facts.counters.read_sample -> sample_delta), for rxe names
(drivers/infiniband/sw/rxe/rxe_hw_counters.c), mlx5 RDMA names (drivers/infiniband/hw/mlx5/counters.c)
and the IB PortCounters; the pause, storm and per-priority names are mlx5 ethtool statistics
(Documentation/networking/device_drivers/ethernet/mellanox/mlx5/counters.rst), which sysfs never holds,
so those windows carry them as the ``ethtool`` part of the delta.  The real rxe counters under a 1 %
netem loss, a clean run and a UDP 4791 drop are tests/test_softroce_lossless.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from rdmacheck.preflight.facts import lossless as L
from rdmacheck.preflight.facts.counters import read_sample, sample_delta
from rdmacheck.preflight.facts.infiniband import port_netdevs, read_infiniband
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import counter_tree

# rxe's hw_counters, in the driver's order (rxe_counter_name[]), plus its lifespan setting
RXE = ("sent_pkts", "rcvd_pkts", "duplicate_request", "out_of_seq_request", "rcvd_rnr_err", "send_rnr_err",
       "rcvd_seq_err", "ack_deferred", "retry_exceeded_err", "retry_rnr_exceeded_err", "completer_retry_err",
       "send_err", "link_downed", "rdma_sends", "rdma_recvs")
# mlx5's RDMA hw_counters (basic, out_of_seq, retrans, cong, extended error and roce_accl groups)
MLX5_HW = ("rx_write_requests", "rx_read_requests", "rx_atomic_requests", "rx_dct_connect", "out_of_buffer",
           "out_of_sequence", "duplicate_request", "rnr_nak_retry_err", "packet_seq_err", "implied_nak_seq_err",
           "local_ack_timeout_err", "rp_cnp_ignored", "rp_cnp_handled", "np_ecn_marked_roce_packets", "np_cnp_sent",
           "resp_local_length_error", "resp_cqe_error", "req_cqe_error", "req_remote_invalid_request",
           "req_remote_access_errors", "resp_remote_access_errors", "resp_cqe_flush_error", "req_cqe_flush_error",
           "req_transport_retries_exceeded", "req_rnr_retries_exceeded", "roce_adp_retrans", "roce_adp_retrans_to",
           "roce_slow_restart", "roce_slow_restart_cnps", "roce_slow_restart_trans", "rx_icrc_encapsulated")
# IB PortCounters (the PMA), as mlx5 and mlx4 expose them under counters/
PMA = ("port_xmit_data", "port_rcv_data", "port_xmit_packets", "port_rcv_packets", "symbol_error",
       "link_error_recovery", "link_downed", "port_rcv_errors", "port_rcv_remote_physical_errors",
       "port_rcv_switch_relay_errors", "port_xmit_discards", "port_xmit_constraint_errors",
       "port_rcv_constraint_errors", "local_link_integrity_errors", "excessive_buffer_overrun_errors",
       "VL15_dropped", "port_xmit_wait")

RXE_PORT, RXE_ND = "roceP2p1s0f0/1", "enP2p1s0f0np0"
MLX_PORT, MLX_ND = "mlx5_0/1", "enp1s0f0np0"


def _rxe(moved: dict[str, int] | None = None, sent=16000, rcvd=1000, nd_rx=62_084) -> tuple[dict, dict]:
    hw = {n: 0 for n in RXE}
    hw.update({"lifespan": 12, "sent_pkts": sent, "rcvd_pkts": rcvd})
    hw.update(moved or {})
    return {RXE_PORT: {"hw_counters": hw}}, {RXE_ND: {"rx_bytes": nd_rx, "rx_packets": rcvd, "tx_bytes": 66_480_084,
                                                      "tx_packets": sent, "rx_dropped": 0}}


def _window(tmp_path: Path, before: tuple[dict, dict], after: tuple[dict, dict], links=None) -> tuple[dict, dict]:
    a = counter_tree(tmp_path / "a", *before, links=links or {"roceP2p1s0f0": RXE_ND})
    b = counter_tree(tmp_path / "b", *after, links=links or {"roceP2p1s0f0": RXE_ND})
    delta = sample_delta(read_sample(HostRoot(a)), read_sample(HostRoot(b)))
    return delta, port_netdevs(read_infiniband(HostRoot(b)))


def _rxe_verdict(tmp_path, moved: dict[str, int]) -> L.Verdict:
    delta, nds = _window(tmp_path, _rxe(), _rxe({k: v for k, v in moved.items()}, sent=32000, rcvd=2000))
    return L.port_verdicts(delta, nds)[RXE_PORT]


def test_rxe_all_zero_is_lossless_and_uncongested(tmp_path):
    v = _rxe_verdict(tmp_path, {})
    assert v.state == L.LOSSLESS and v.value == 0 and v.moved == {}
    assert v.summary.startswith("lossless and uncongested")


def test_rxe_retransmits_are_lossy_with_no_pause(tmp_path):
    # what the 1 % netem loss showed on real rxe (issue 27): completer_retry_err +358, rcvd_seq_err +361
    v = _rxe_verdict(tmp_path, {"completer_retry_err": 358, "rcvd_seq_err": 361, "out_of_seq_request": 340,
                                "duplicate_request": 12})
    assert v.state == L.LOSSY and v.value == 2
    assert "retransmits with no pause" in v.patterns
    assert v.moved[L.RETRANSMIT] == {"hw_counters/completer_retry_err": 358, "hw_counters/rcvd_seq_err": 361,
                                     "hw_counters/out_of_seq_request": 340, "hw_counters/duplicate_request": 12}
    assert "go-back-N" in v.summary and "retransmits with no pause" in v.summary
    assert "(1071 retransmit-counter increments over 17000 packets)" in v.summary  # sent+rcvd moved 16000 + 1000


def test_rxe_rnr_alone_is_not_loss(tmp_path):
    v = _rxe_verdict(tmp_path, {"rcvd_rnr_err": 5, "send_rnr_err": 5})
    assert v.state == L.LOSSLESS and any("receiver-not-ready" in n for n in v.notes)


def test_rxe_retries_exhausted_is_named(tmp_path):
    v = _rxe_verdict(tmp_path, {"retry_exceeded_err": 1, "completer_retry_err": 7})
    assert v.state == L.LOSSY and any("retries exhausted" in n and "retry_exceeded_err +1" in n for n in v.notes)


def _mlx(hw: dict[str, int] | None = None, pma: dict[str, int] | None = None) -> tuple[dict, dict]:
    h = {n: 0 for n in MLX5_HW}
    h.update(hw or {})
    c = {n: 0 for n in PMA}
    c.update({"port_xmit_data": 10 ** 9, "port_rcv_data": 10 ** 9, "port_xmit_packets": 10 ** 6,
              "port_rcv_packets": 10 ** 6})
    c.update(pma or {})
    return {MLX_PORT: {"hw_counters": h, "counters": c}}, {MLX_ND: {"rx_bytes": 1000, "tx_bytes": 1000}}


def _mlx_verdict(tmp_path, hw=None, pma=None, ethtool=None, names=None) -> L.Verdict:
    delta, _ = _window(tmp_path, _mlx(), _mlx(hw, pma), links={})
    nds = {"mlx5_0:1": [MLX_ND]}  # mlx5: the PCI function's net/ (no such folder in this small tree)
    if ethtool is not None:
        delta["ethtool"] = {MLX_ND: ethtool}
    w = L.port_windows(delta, nds)[MLX_PORT]
    present = list(w) + [f"{MLX_ND}/{n}" for n in (names or [])]
    return L.verdict(w, present=present)


def test_mlx5_all_zero_is_lossless(tmp_path):
    v = _mlx_verdict(tmp_path)
    assert v.state == L.LOSSLESS, v


def test_mlx5_cnp_and_ecn_rising_is_congested(tmp_path):
    v = _mlx_verdict(tmp_path, hw={"np_cnp_sent": 4000, "rp_cnp_handled": 3900, "np_ecn_marked_roce_packets": 4000})
    assert v.state == L.CONGESTED and v.value == 1 and "congestion notification" in v.patterns
    assert v.summary.startswith("lossless under congestion") and "CNP/ECN" in v.summary


def test_mlx5_pfc_pause_rising_is_congested_and_pfc_is_on(tmp_path):
    eth = {"rx_prio3_pause": 120, "tx_prio3_pause": 80, "rx_prio3_pause_duration": 5000, "rx_prio3_bytes": 10 ** 9,
           "rx_prio0_bytes": 10}
    v = _mlx_verdict(tmp_path, ethtool=eth)
    assert v.state == L.CONGESTED and "pause" in v.patterns
    assert v.moved[L.PAUSE][f"{MLX_ND}/rx_prio3_pause"] == 120
    assert any("PFC is on for priority 3" in n for n in v.notes)


def test_ib_credit_wait_is_congestion(tmp_path):
    v = _mlx_verdict(tmp_path, pma={"port_xmit_wait": 100000})
    assert v.state == L.CONGESTED and v.moved[L.PAUSE] == {"counters/port_xmit_wait": 100000}


@pytest.mark.parametrize("hw,pma,eth,pattern", [
    ({"out_of_buffer": 17}, {}, None, "buffer overrun"),
    ({}, {"excessive_buffer_overrun_errors": 3}, None, "buffer overrun"),
    ({}, {}, {"rx_prio3_discards": 44, "rx_prio3_bytes": 10 ** 9, "rx_prio3_pause": 9}, "buffer overrun"),
    ({}, {}, {"tx_pause_storm_error_events": 1, "tx_pause_storm_warning_events": 2}, "pause storm"),
])
def test_storm_or_overrun_breaks_the_contract(tmp_path, hw, pma, eth, pattern):
    v = _mlx_verdict(tmp_path, hw=hw, pma=pma, ethtool=eth)
    assert v.state == L.BROKEN and v.value == 3 and pattern in v.patterns
    assert v.summary.startswith("the lossless contract is broken")


def test_mlx5_retransmits_beside_pause_are_still_lossy(tmp_path):
    v = _mlx_verdict(tmp_path, hw={"packet_seq_err": 9, "out_of_sequence": 9, "local_ack_timeout_err": 2},
                     ethtool={"rx_prio3_pause": 50, "rx_prio3_bytes": 1})
    assert v.state == L.LOSSY and "retransmits with no pause" not in v.patterns
    assert "flow control rose too" in v.summary


def test_link_errors_are_loss(tmp_path):
    v = _mlx_verdict(tmp_path, pma={"symbol_error": 40, "link_error_recovery": 1})
    assert v.state == L.LOSSY and "link errors" in v.patterns


def test_absent_rx_prio_pause_is_evidence_that_pfc_is_off(tmp_path):
    # per-priority traffic counters read, no rx_prio<p>_pause among them: PFC off everywhere
    v = _mlx_verdict(tmp_path, ethtool={"rx_prio0_bytes": 10 ** 6, "rx_prio3_bytes": 10 ** 9})
    assert v.state == L.LOSSLESS
    assert any(n.startswith("PFC is off on every priority") for n in v.notes), v.notes
    names = ["rx_prio3_bytes", "rx_prio3_packets", "rx_prio0_pause"]
    assert "PFC is off for priority 3" in (L.pfc_note(names, priority=3) or "")
    assert L.pfc_note(["rx_prio3_pause", "rx_prio3_bytes"], priority=3).startswith("PFC is on for priority 3")
    # sysfs alone has no per-priority counters: their absence there says nothing
    assert L.pfc_note(["hw_counters/np_cnp_sent", "rx_bytes"]) is None


def test_a_reset_counter_is_not_judged_as_zero(tmp_path):
    before = _rxe({"completer_retry_err": 500})
    after = _rxe({"completer_retry_err": 0}, sent=32000, rcvd=2000)  # went down: a driver reload
    delta, nds = _window(tmp_path, before, after)
    v = L.port_verdicts(delta, nds)[RXE_PORT]
    assert "hw_counters/completer_retry_err" in v.reset
    assert any("reset or saturated" in n for n in v.notes)


def test_unknown_without_any_retransmit_counter():
    assert L.verdict({"port_xmit_wait": 0, "symbol_error": 0}).state == L.UNKNOWN
    assert L.verdict({}).state == L.UNKNOWN
    assert L.worst([L.verdict({}), L.verdict({"duplicate_request": 0})]) == L.LOSSLESS


def test_every_captured_mlx5_counter_name_is_known_to_the_driver_lists(captures):
    """The real mlx5_0 tree (prometheus-procfs fixture): each name it has is one of the driver's."""
    hw = captures / "sysfs/prometheus-procfs/sys/class/infiniband/mlx5_0/ports/1/hw_counters"
    pma = captures / "sysfs/prometheus-procfs/sys/class/infiniband/mlx5_0/ports/1/counters"
    names = {p.name for p in hw.iterdir()} - {"lifespan"}
    assert names <= set(MLX5_HW), names - set(MLX5_HW)
    assert {p.name for p in pma.iterdir()} - {"unicast_rcv_packets", "unicast_xmit_packets", "multicast_rcv_packets",
                                              "multicast_xmit_packets"} <= set(PMA)
    retrans = {n for n in names if L.counter_class(n) == L.RETRANSMIT}
    assert {"out_of_sequence", "packet_seq_err", "local_ack_timeout_err", "duplicate_request",
            "implied_nak_seq_err", "roce_adp_retrans"} <= retrans


# ---------------------------------------------------------------- cross-row findings and the command


def test_port_received_nothing_while_its_netdev_received_bytes(tmp_path):
    """UDP 4791 dropped at the server (iptables): the netdev counts the frames, rxe never sees them."""
    before = _rxe()
    after = _rxe(sent=16000, rcvd=1000, nd_rx=62_084 + 58_000_000)
    delta, nds = _window(tmp_path, before, after)
    f = L.findings(delta, nds)
    assert [x.pattern for x in f] == ["port received 0 packets"]
    assert f"port {RXE_PORT} received 0 packets while its netdev {RXE_ND} received 58000000 bytes" in f[0].text


def test_bytes_on_another_netdev(tmp_path):
    """The port talks but hears nothing; the answers land on eth1 (the peer's neighbour entry is wrong)."""
    b_ports, b_nd = _rxe()
    b_nd["eth1"] = {"rx_bytes": 0, "tx_bytes": 0}
    a_ports, a_nd = _rxe(sent=17000, rcvd=1000)
    a_nd["eth1"] = {"rx_bytes": 4_000_000, "tx_bytes": 0}
    delta, nds = _window(tmp_path, (b_ports, b_nd), (a_ports, a_nd))
    f = L.findings(delta, nds)
    assert [x.pattern for x in f] == ["bytes arrived on another netdev"]
    assert "another netdev, eth1" in f[0].text and "sent 1000 packets" in f[0].text


def test_an_idle_port_is_no_finding(tmp_path):
    b_ports, b_nd = _rxe()
    b_nd["eth0"] = {"rx_bytes": 0}
    a_ports, a_nd = _rxe()
    a_nd["eth0"] = {"rx_bytes": 9_000_000}  # management traffic elsewhere, the RDMA port idle
    delta, nds = _window(tmp_path, (b_ports, b_nd), (a_ports, a_nd))
    assert L.findings(delta, nds) == []


def test_counters_command_states_the_verdict_and_the_patterns(tmp_path):
    a = counter_tree(tmp_path / "a", *_rxe(), links={"roceP2p1s0f0": RXE_ND})
    b = counter_tree(tmp_path / "b", *_rxe({"completer_retry_err": 358, "rcvd_seq_err": 361}, sent=32000, rcvd=2000),
                     links={"roceP2p1s0f0": RXE_ND})
    out = tmp_path / "c.json"
    p = run_cli("counters", "--before", str(a), "--after", str(b), "--seconds", "10", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert f"{RXE_PORT}" in p.stdout and "lossy: packets were lost and recovered by go-back-N" in p.stdout
    assert "pattern: retransmits with no pause" in p.stdout
    data = json.loads(out.read_text())
    assert data["verdicts"][RXE_PORT]["state"] == "lossy" and data["findings"] == []

    c = counter_tree(tmp_path / "c", *_rxe(nd_rx=62_084 + 58_000_000), links={"roceP2p1s0f0": RXE_ND})
    p = run_cli("counters", "--before", str(a), "--after", str(c))
    assert p.returncode == 0, p.stderr
    assert f"port {RXE_PORT} received 0 packets while its netdev {RXE_ND} received 58000000 bytes" in p.stdout


def test_both_ends_on_one_host_are_not_another_netdev(tmp_path):
    """rxe0 on veth0 and rxe1 on veth1 in one guest, RoCE dropped at INPUT: veth0's bytes are rxe0's finding;
    rxe1, which sent and heard nothing, must not blame veth0 as "another netdev" (what the guest showed)."""
    def side(rx0, tx1, nd0_rx):
        hw0 = {n: 0 for n in RXE}
        hw1 = {n: 0 for n in RXE}
        hw0["rcvd_pkts"], hw1["sent_pkts"] = rx0, tx1
        return ({"rxe0/1": {"hw_counters": hw0}, "rxe1/1": {"hw_counters": hw1}},
                {"veth0": {"rx_bytes": nd0_rx, "tx_bytes": 0}, "veth1": {"rx_bytes": 0, "tx_bytes": nd0_rx}})
    links = {"rxe0": "veth0", "rxe1": "veth1"}
    delta, nds = _window(tmp_path, side(0, 0, 0), side(0, 218178, 906_555_036), links=links)
    f = L.findings(delta, nds)
    assert [(x.port, x.pattern) for x in f] == [("rxe0/1", "port received 0 packets")]
