"""rdmacheck.preflight.facts.counters on real sysfs trees (../shared/captures) and on odd content.

The real trees: prometheus-procfs mlx5_0 (64-bit PMA data counters plus mlx5 hw_counters), node_exporter
mlx4_0 (port_xmit_wait saturated at 2^32-1) and i40iw0 (iWARP: every file says "N/A (no PMA)"), and the
hwloc qib0 dump whose 32-bit data counters are all saturated.  The soft-RoCE guest's real rxe counters
are covered by tests/test_softroce.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rdmacheck.preflight.facts import counters as C
from rdmacheck.preflight.root import HostRoot


def test_mlx5_data_counters_are_words(captures):
    root = HostRoot(captures / "sysfs" / "prometheus-procfs")
    pc = C.read_port_counters(root, "mlx5_0", 1)
    assert pc is not None
    # files hold 2880761508848 and 18126345378 words: bytes are 4x
    assert pc.counters["port_xmit_data"] == 2880761508848
    assert pc.tx_bytes == 4 * 2880761508848
    assert pc.rx_bytes == 4 * 18126345378
    assert pc.tx_packets == 10907922116 and pc.rx_packets == 541889824
    assert pc.hw_counters["rx_write_requests"] == 742114
    assert pc.saturated == [] and pc.unreadable == []


def test_mlx4_saturated_counter_flagged(captures):
    root = HostRoot(captures / "sysfs" / "node_exporter")
    pc = C.read_port_counters(root, "mlx4_0", 1)
    assert pc.saturated == ["counters/port_xmit_wait"]
    assert pc.tx_bytes == 4 * 3733440
    assert pc.hw_counters == {}  # mlx4 has no hw_counters folder


def test_iwarp_no_pma_is_unreadable_not_zero(captures):
    root = HostRoot(captures / "sysfs" / "node_exporter")
    pc = C.read_port_counters(root, "i40iw0", 1)
    assert pc.counters == {}
    assert "counters/port_xmit_data" in pc.unreadable
    assert pc.tx_bytes is None and pc.tx_packets is None


def test_qib_saturated_32bit_data_gives_no_delta(captures, tmp_path):
    # hwloc's dump keeps class entries as plain files; the real device dir goes into a root of its own
    # (copied to the test's temp folder: a replay never follows a link out of its root).
    dev = captures / "sysfs" / "hwloc-40intel64-qib" / "sys/devices/pci0000:40/0000:40:03.0/0000:43:00.0/infiniband/qib0"
    assert dev.is_dir()
    shutil.copytree(dev, tmp_path / "sys/class/infiniband/qib0", symlinks=True)
    pc = C.read_port_counters(HostRoot(tmp_path), "qib0", 1)
    assert pc.counters["port_xmit_data"] == C.SATURATED_32
    assert "counters/port_xmit_data" in pc.saturated
    d = C.port_delta(pc, pc)
    assert d["tx_bytes"] is None and d["rx_bytes"] is None  # a floor, not a count


def test_read_sample_finds_every_port_and_netdev(captures, tmp_path):
    s = C.read_sample(HostRoot(captures / "sysfs" / "prometheus-procfs"))
    assert {"mlx5_0/1", "mlx4_0/1", "mlx4_0/2", "hfi1_0/1"} <= set(s.ports)
    # a real netdev statistics folder (linked in from the capture's device tree)
    net = captures / "sysfs" / "prometheus-procfs" / "sys/devices/pci0000:a2/0000:a2:00.0/net/enp162s0f0np0"
    shutil.copytree(net, tmp_path / "sys/class/net/enp162s0f0np0", symlinks=True)  # inside the root
    nc = C.read_netdev_counters(HostRoot(tmp_path), "enp162s0f0np0")
    assert nc is not None and nc.tx_bytes == int((net / "statistics/tx_bytes").read_text())
    assert C.read_netdev_counters(HostRoot(tmp_path), "nonexistent") is None


def _tree(tmp_path: Path, values: dict[str, str]) -> HostRoot:
    for rel, text in values.items():
        p = tmp_path / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return HostRoot(tmp_path)


RXE = "/sys/class/infiniband/rxe0/ports/1/hw_counters"


def test_rxe_has_packets_but_no_bytes(tmp_path):
    # rxe: no counters/ folder, hw_counters only (layout seen on the guest's kernel 6.1)
    root = _tree(tmp_path, {f"{RXE}/sent_pkts": "32000\n", f"{RXE}/rcvd_pkts": "2001\n", f"{RXE}/lifespan": "12\n"})
    pc = C.read_port_counters(root, "rxe0", "1")
    assert pc.tx_bytes is None and pc.rx_bytes is None
    assert pc.tx_packets == 32000 and pc.rx_packets == 2001


def test_delta_and_reset(tmp_path):
    a = C.PortCounters("d", 1, counters={"port_xmit_data": 100, "port_rcv_data": 50}, hw_counters={"x": 5})
    b = C.PortCounters("d", 1, counters={"port_xmit_data": 350, "port_rcv_data": 10}, hw_counters={"x": 9})
    d = C.port_delta(a, b)
    assert d["tx_bytes"] == 4 * 250
    assert d["rx_bytes"] is None  # went down: reset, never a negative number
    assert d["hw_counters"] == {"x": 4}


@pytest.mark.parametrize("text,value", [
    ("17\n", 17), ("0", 0), ("0x10", 16), ("", None), ("N/A (no PMA)", None), ("-3", None),
    ("12 packets", None), ("\x00\xff", None), (None, None),
])
def test_parse_counter(text, value):
    assert C.parse_counter(text) == value


def test_odd_files_become_unreadable(tmp_path):
    root = _tree(tmp_path, {f"{RXE}/sent_pkts": "garbage", f"{RXE}/rcvd_pkts": "7"})
    pc = C.read_port_counters(root, "rxe0", 1)
    assert pc.unreadable == ["hw_counters/sent_pkts"] and pc.rx_packets == 7 and pc.tx_packets is None
    assert C.read_port_counters(root, "rxe0", 2) is None
    assert C.read_port_counters(root, "rxe0", "x") is None


def test_cli_prints_json(captures, capsys):
    import json
    assert C.main(["--root", str(captures / "sysfs" / "prometheus-procfs")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ports"]["mlx5_0/1"]["tx_bytes"] == 4 * 2880761508848


from hypothesis import given, settings, strategies as st


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_counter_never_raises(text):
    v = C.parse_counter(text)
    assert v is None or (isinstance(v, int) and v >= 0)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["port_xmit_data", "port_rcv_data", "port_xmit_packets", "weird"]),
                       st.binary(max_size=40), max_size=4))
def test_reader_survives_arbitrary_file_content(tmp_path_factory, files):
    base = tmp_path_factory.mktemp("c") / "sys/class/infiniband/x/ports/1/counters"
    base.mkdir(parents=True)
    for name, data in files.items():
        (base / name).write_bytes(data)
    pc = C.read_port_counters(HostRoot(base.parents[6]), "x", 1)
    assert set(pc.counters) | {n.split("/", 1)[1] for n in pc.unreadable} == set(files)
    assert pc.tx_bytes is None or pc.tx_bytes % 4 == 0
    C.port_delta(pc, pc)  # never raises
