"""NIC health: the RDMA device's PCI function (AER counters, PCIe link now vs maximum), its fatal kernel-log
lines, and the port's error counters (facts/nichealth.py, checks/nic_health.py).

Trees laid out as sysfs does (tests/sysfs_builder.pci_hca_tree: the AER statistics in
drivers/pci/pcie/aer.c's format, the link files, the IB PortCounters) and judged through the whole
preflight (``--root``), so the gather wiring is proven with the gates; the soft-RoCE device (no PCI
function) through roce_tree.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from rdmacheck.preflight.facts.nichealth import parse_aer, parse_speed, parse_width, read_nic_health
from rdmacheck.preflight.facts.pci import hca_functions
from rdmacheck.preflight.facts.infiniband import read_infiniband
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import pci_hca_tree, roce_tree


def _judge(root, *expect) -> dict[str, dict]:
    out = root.parent / (root.name + ".json")
    args = ["preflight", "--root", str(root), "--only", "nic.pcie,nic.port_errors", "--json", str(out)]
    for e in expect:
        args += ["--expect", e]
    p = run_cli(*args, timeout=120)
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr
    return {r["id"]: r for r in json.loads(out.read_text())["results"]}


def test_aer_file_format_and_link_text():
    text = "RxErr 0\nBadTLP 3\nBadDLLP 1\nRollover 0\nTimeout 0\nNonFatalErr 0\nCorrIntErr 0\nHeaderOF 0\nTOTAL_ERR_COR 4"
    assert parse_aer(text) == {"RxErr": 0, "BadTLP": 3, "BadDLLP": 1, "Rollover": 0, "Timeout": 0, "NonFatalErr": 0,
                               "CorrIntErr": 0, "HeaderOF": 0, "total": 4}
    assert parse_aer(None) is None and parse_aer("garbage") is None
    assert parse_speed("16.0 GT/s PCIe") == 16.0 and parse_speed("Unknown") is None and parse_speed("2.5 GT/s") == 2.5
    assert parse_width("16") == 16 and parse_width("x4") == 4 and parse_width("") is None


def test_reader_finds_the_function_behind_the_rdma_device(tmp_path):
    root = pci_hca_tree(tmp_path, aer={"correctable": {"BadTLP": 3}}, counters={"symbol_error": 7})
    r = HostRoot(root)
    nic = read_nic_health(r, hca_functions(r), read_infiniband(r))
    f = nic["functions"]["mlx5_0"]
    assert f["bdf"] == "0000:41:00.0" and f["aer"]["correctable"]["total"] == 3 and f["aer"]["fatal"]["total"] == 0
    assert (f["width"], f["width_max"], f["speed"], f["speed_max"]) == (16, 16, 16.0, 16.0)
    assert nic["ports"]["mlx5_0/1"]["counters/symbol_error"] == 7


def test_healthy_function_and_port_pass(tmp_path):
    r = _judge(pci_hca_tree(tmp_path / "n", aer={}))
    assert r["nic.pcie"]["status"] == "pass", r["nic.pcie"]
    assert "mlx5_0 (0000:41:00.0): AER correctable 0, nonfatal 0, fatal 0, x16 of x16, 16 of 16 GT/s" in \
        r["nic.pcie"]["observed"]
    assert r["nic.port_errors"]["status"] == "pass" and "6 error counters all 0" in r["nic.port_errors"]["observed"]


@pytest.mark.parametrize("aer,status,text", [
    ({"fatal": {"CmpltTO": 1}}, "fail", "1 fatal PCIe error(s)"),
    ({"nonfatal": {"UnsupReq": 2}}, "warn", "2 non-fatal PCIe error(s)"),
    ({"correctable": {"BadTLP": 5}}, "pass", "correctable 5 (BadTLP 5)"),
    ({"correctable": {"RxErr": 150}}, "warn", "150 corrected PCIe errors"),
])
def test_aer_counts(tmp_path, aer, status, text):
    r = _judge(pci_hca_tree(tmp_path / "n", aer=aer))["nic.pcie"]
    assert r["status"] == status and text in r["observed"], r


def test_downtrained_link_and_the_spark_halves(tmp_path):
    r = _judge(pci_hca_tree(tmp_path / "a", aer={}, width=("8", "16"), speed=("8.0 GT/s PCIe", "16.0 GT/s PCIe")))
    assert r["nic.pcie"]["status"] == "warn"
    assert "link x8 of x16" in r["nic.pcie"]["observed"] and "link at 8 of 16 GT/s" in r["nic.pcie"]["observed"]
    # DGX Spark: each half of the ConnectX-7 port is x4; x2 is the old firmware
    r = _judge(pci_hca_tree(tmp_path / "b", dev="roceP2p1s0f0", bdf="0002:01:00.0", bridge="0002:00:00.0", aer={},
                            width=("2", "4")), "gpu_platform=dgx-spark")
    assert r["nic.pcie"]["status"] == "warn" and "x2 is the old NIC firmware" in r["nic.pcie"]["observed"]


def test_no_aer_files_is_said_not_assumed_clean(tmp_path):
    r = _judge(pci_hca_tree(tmp_path / "n", aer=None))["nic.pcie"]
    assert "AER counters n/a (no aer_dev_* files" in r["observed"] and r["status"] == "pass"  # the link was judged


def test_mlx5_health_line_this_boot_fails(tmp_path):
    root = pci_hca_tree(tmp_path / "n", aer={})
    log = root / "var/log/kern.log"
    log.parent.mkdir(parents=True)
    log.write_text("Dec  7 08:00:01 n kernel: [    0.000000] Linux version 6.8.0-49-generic (buildd@x) #49\n"
                   "Dec  7 09:55:40 n kernel: [ 6939.512000] mlx5_core 0000:41:00.0: poll_health:852:(pid 0): "
                   "device's health compromised - reached miss count\n")
    r = _judge(root)["nic.pcie"]
    assert r["status"] == "fail" and "mlx5_0 kernel log: device's health compromised" in r["observed"]


def test_port_error_counters_warn(tmp_path):
    r = _judge(pci_hca_tree(tmp_path / "n", aer={}, counters={"symbol_error": 40, "link_downed": 2}))
    pe = r["nic.port_errors"]
    assert pe["status"] == "warn" and "mlx5_0/1: link_downed 2, symbol_error 40" in pe["observed"]
    assert "rdmacheck counters --interval 60" in pe["remedy"]


def test_soft_roce_has_no_pci_function(tmp_path):
    root = roce_tree(tmp_path / "n")
    hw = root / "sys/devices/virtual/infiniband/roceP2p1s0f0/ports/1/hw_counters"
    hw.mkdir(parents=True)
    (hw / "link_downed").write_text("0\n")
    r = _judge(root)
    assert r["nic.pcie"]["status"] == "skip" and "soft-RoCE or a virtual device" in r["nic.pcie"]["observed"]
    assert r["nic.port_errors"]["status"] == "pass" and "1 error counters all 0" in r["nic.port_errors"]["observed"]


def test_no_rdma_device_skips(tmp_path):
    (tmp_path / "n/sys/class/net").mkdir(parents=True)
    r = _judge(tmp_path / "n")
    assert {x["status"] for x in r.values()} == {"skip"}
