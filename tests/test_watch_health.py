"""`rdmacheck watch` exports the health facts and the lossless state (rdmacheck/watch/health.py).

Real cycles (``preflight_judge``: gather + gates through a fresh HostRoot each cycle) over a soft-RoCE tree
laid out as rxe lays it out (tests/sysfs_builder), whose rxe ``hw_counters`` the test raises between cycles,
plus a kernel log with an Xid and a PCI RDMA function with AER files; the metric families are those the
real prometheus-client collector yields and the text it serves.  The GPU part comes from recorded NVML facts
(no GPU here): the H100 of tests/test_gpu_health.py and the GB10 whose NVML answers N/A.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rdmacheck.preflight.facts import nvml as nvmlf
from rdmacheck.preflight.nodefacts import NodeFacts, Probe
from rdmacheck.watch import Watcher, preflight_judge
from rdmacheck.watch.health import health_summary
from rdmacheck.watch.prometheus import StateCollector
from sysfs_builder import pci_hca_tree, roce_tree

pytest.importorskip("prometheus_client")

RXE = ("sent_pkts", "rcvd_pkts", "duplicate_request", "out_of_seq_request", "rcvd_rnr_err", "send_rnr_err",
       "rcvd_seq_err", "ack_deferred", "retry_exceeded_err", "retry_rnr_exceeded_err", "completer_retry_err",
       "send_err", "link_downed", "rdma_sends", "rdma_recvs")
DEV, PORT = "roceP2p1s0f0", "roceP2p1s0f0/1"


def _hw(root: Path, **values) -> None:
    hw = root / "sys/devices/virtual/infiniband" / DEV / "ports/1/hw_counters"
    hw.mkdir(parents=True, exist_ok=True)
    for n in RXE:
        f = hw / n
        if n in values or not f.exists():
            f.write_text(f"{values.get(n, 0)}\n")


def _samples(st) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in StateCollector(lambda: st).collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_lossless_state_per_port_between_cycles(tmp_path):
    root = roce_tree(tmp_path / "node")
    _hw(root, sent_pkts=100, rcvd_pkts=100)
    w = Watcher(preflight_judge(str(root), None, None, []), log=lambda line: None)
    first = w.cycle()
    assert first.lossless == ()  # no window yet
    assert not any(k[0] == "rdmacheck_lossless_state" for k in _samples(first))
    _hw(root, sent_pkts=16100, rcvd_pkts=1100)
    st = w.cycle()
    assert dict(st.lossless)[PORT].state == "lossless"
    assert _samples(st)[("rdmacheck_lossless_state", (("port", PORT),))] == 0
    _hw(root, sent_pkts=32100, rcvd_pkts=2100, completer_retry_err=358, rcvd_seq_err=361)
    st = w.cycle()
    v = dict(st.lossless)[PORT]
    assert v.state == "lossy" and "retransmits with no pause" in v.patterns
    assert _samples(st)[("rdmacheck_lossless_state", (("port", PORT),))] == 2
    _hw(root, sent_pkts=40000, rcvd_pkts=3000)  # nothing lost in this interval: lossless again
    assert dict(w.cycle().lossless)[PORT].state == "lossless"


def test_nic_and_xid_metrics_from_a_real_cycle(tmp_path):
    root = pci_hca_tree(tmp_path / "node", aer={"correctable": {"BadTLP": 3}, "fatal": {"CmpltTO": 1}},
                        width=("8", "16"))
    log = root / "var/log/kern.log"
    log.parent.mkdir(parents=True)
    log.write_text("Dec  7 10:01:02 n kernel: [ 5.1] NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the "
                   "bus.\n")
    st = Watcher(preflight_judge(str(root), None, None, []), log=lambda line: None).cycle()
    s = _samples(st)
    assert s[("rdmacheck_nic_aer_errors_total", (("device", "mlx5_0"), ("kind", "fatal")))] == 1
    assert s[("rdmacheck_nic_aer_errors_total", (("device", "mlx5_0"), ("kind", "correctable")))] == 3
    assert s[("rdmacheck_nic_pcie_link_width", (("device", "mlx5_0"),))] == 8
    assert s[("rdmacheck_nic_pcie_link_width_max", (("device", "mlx5_0"),))] == 16
    assert s[("rdmacheck_gpu_xid_events", (("class", "hardware"), ("gpu", "0000:3b:00"), ("xid", "79")))] == 1
    gates = {dict(k[1])["gate"]: v for k, v in s.items() if k[0] == "rdmacheck_gate_status"}
    assert gates["nic.pcie"] == 2 and gates["gpu.xid"] == 2  # both fail: fatal AER, Xid 79 (the log needs no NVML)


def _gpu_facts(devices) -> NodeFacts:
    from test_gpu_health import StandIn

    nf = NodeFacts(live=False)
    nf.probes["nvml"] = Probe("nvml", "", nvmlf.collect(timeout=5, api=StandIn(devices)))
    return nf


def test_gpu_health_metrics_and_na_with_its_code():
    from test_gpu_health import GB10_STUCK, H100_HEALTH

    class St:
        facts = {"health": health_summary(_gpu_facts([H100_HEALTH, GB10_STUCK]))}
        lossless = ()

    s = {}
    from rdmacheck.watch.health import health_families

    for fam in health_families(St):
        for x in fam.samples:
            s[(x.name, tuple(sorted(x.labels.items())))] = x.value
    assert s[("rdmacheck_gpu_sm_clock_mhz", (("gpu", "0"),))] == 1980
    assert s[("rdmacheck_gpu_sm_clock_mhz", (("gpu", "1"),))] == 600
    assert s[("rdmacheck_gpu_sm_clock_max_mhz", (("gpu", "1"),))] == 3003
    assert s[("rdmacheck_gpu_clock_event_active", (("gpu", "1"), ("reason", "gpu_idle")))] == 0
    assert s[("rdmacheck_gpu_remap_failure", (("gpu", "0"),))] == 0
    assert s[("rdmacheck_gpu_pcie_replays_total", (("gpu", "0"),))] == 0
    # the GB10 has no remapped rows and no PCIe replay counter: no number, an N/A series with the code
    assert ("rdmacheck_gpu_remap_failure", (("gpu", "1"),)) not in s
    assert s[("rdmacheck_gpu_health_na", (("fact", "pcie_replay"), ("gpu", "1"),
                                          ("reason", "n/a (NVML_ERROR_NOT_SUPPORTED=3)")))] == 1


def test_the_terminal_gets_the_verdict_on_start_and_on_each_change(tmp_path):
    """Driven cycle by cycle in-process: the first cycle prints the node's verdict (the failing and warning
    gates by name, as `preflight` would exit on the same tree), an unchanged cycle prints nothing, a change
    prints the gate's transition and the new verdict."""
    from rdmacheck import preflight
    from rdmacheck.config import load_config
    from rdmacheck.evidence.model import exit_code
    from rdmacheck.preflight.root import HostRoot

    root = roce_tree(tmp_path / "node")
    lines: list[str] = []
    w = Watcher(preflight_judge(str(root), None, None, []), log=lines.append)
    first = w.cycle()
    r = HostRoot(root)
    same = preflight.run(r, config=load_config(None, None, [], r.environ())).results
    assert [x.status for x in first.results] == [x.status for x in same]
    (line,) = lines
    verdict = "FAIL" if exit_code(same) else "PASS"
    assert f" cycle 1: {verdict}: " in line, line
    for x in same:
        if x.status.value in ("fail", "warn") and not x.unjudged and not x.waiver:
            assert x.id in line, (x.id, line)
    w.cycle()
    assert len(lines) == 1, lines  # nothing changed: nothing printed
    (root / "sys/devices/virtual/net/enP2p1s0f0np0/mtu").write_text("1500\n")
    w.cycle()
    assert len(lines) == 3 and "gate rdma.mtu: pass -> fail" in lines[1], lines
    assert " cycle 3: FAIL: fail " in lines[2] and "rdma.mtu" in lines[2], lines
