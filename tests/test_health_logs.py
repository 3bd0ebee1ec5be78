"""XID events and NIC fatal lines from the kernel log (facts/kernlog.py), the gpu.xid gate, and the snapshot
carrying the log's tail.

The log lines are laid out as rsyslog writes them (the traditional ``Mon dd hh:mm:ss host kernel: [uptime]``
and the RFC 3339 form of newer Ubuntu), with NVIDIA's Xid wording (``NVRM: Xid (PCI:0000:10:1c): 63,
pid=1896, Row Remapper: New row marked for remapping, reset gpu to activate.``) and mlx5's health.c
messages.  The tail read is proven on real files larger than the window, through the real snapshot.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from rdmacheck.preflight.checks.gpu_health import gate_gpu_xid
from rdmacheck.config import Config, build_profile
from rdmacheck.preflight.facts import kernlog
from rdmacheck.evidence.model import Status
from rdmacheck.preflight.nodefacts import NodeFacts, Probe
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import roce_tree

OLD_BOOT = """\
Dec  6 09:00:01 gpu-node kernel: [    0.000000] Linux version 6.8.0-49-generic (buildd@lcy02-amd64-010) (gcc 13.2.0) #49-Ubuntu SMP
Dec  6 11:12:13 gpu-node kernel: [ 7932.120001] NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=python3, GPU has fallen off the bus.
"""
THIS_BOOT = """\
Dec  7 08:00:01 gpu-node kernel: [    0.000000] Linux version 6.8.0-49-generic (buildd@lcy02-amd64-010) (gcc 13.2.0) #49-Ubuntu SMP
Dec  7 08:00:09 gpu-node kernel: [    8.120001] nvidia-nvlink: Nvlink Core is being initialized, major device number 511
Dec  7 09:31:02 gpu-node kernel: [ 5461.301001] NVRM: Xid (PCI:0000:10:1c): 63, pid=1896, Row Remapper: New row marked for remapping, reset gpu to activate.
Dec  7 09:40:11 gpu-node kernel: [ 6010.000100] NVRM: Xid (PCI:0000:10:1c): 13, pid=2211, name=python3, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0)
Dec  7 09:55:40 gpu-node kernel: [ 6939.512000] mlx5_core 0000:41:00.0: poll_health:852:(pid 0): device's health compromised - reached miss count
Dec  7 09:55:40 gpu-node kernel: [ 6939.512217] mlx5_core 0000:41:00.0: print_health_info:458:(pid 0): synd 0x8: unrecoverable hardware error
"""
RFC3339 = """\
2026-12-07T10:01:02.123456+00:00 gpu-node kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=nvidia-smi, GPU has fallen off the bus.
2026-12-07T10:01:03.000001+00:00 gpu-node kernel: pcieport 0000:40:01.1: AER: Uncorrected (Non-Fatal) error received: 0000:41:00.0
"""


def test_this_boot_only_and_every_kind_of_line():
    k = kernlog.parse(OLD_BOOT + THIS_BOOT)
    assert k["boot_marker"] and k["xid_before_boot"] == 1
    assert [(e["pci"], e["xid"]) for e in k["xid"]] == [("0000:10:1c", 63), ("0000:10:1c", 13)]
    assert k["xid"][0]["text"].startswith("pid=1896, Row Remapper")
    assert [(e["pci"], e["kind"]) for e in k["nic"]] == [("0000:41:00.0", "mlx5"), ("0000:41:00.0", "mlx5")]
    assert "health compromised" in k["nic"][0]["text"] and "unrecoverable hardware error" in k["nic"][1]["text"]
    r = kernlog.parse(RFC3339)
    assert not r["boot_marker"] and [e["xid"] for e in r["xid"]] == [79]
    assert r["nic"] == [{"pci": "0000:41:00.0", "kind": "aer", "text": "Uncorrected (Non-Fatal)"}]


def test_pci_addresses_of_nvml_sysfs_and_xid_are_one_function():
    assert kernlog.same_function("0000:3b:00", "00000000:3B:00.0")
    assert kernlog.same_function("0000:41:00.0", "0000:41:00.0")
    assert not kernlog.same_function("0000:41:00.1", "0000:41:00.0")
    assert not kernlog.same_function("0000:3b:00", "00000000:3c:00.0")


def _node(root_dir, gpus) -> NodeFacts:
    nf = NodeFacts(live=False)
    nf.probes["nvml"] = Probe("nvml", "", {"state": "ok", "gpus": gpus})
    nf.health = {"kernel_log": kernlog.read_kernel_log(HostRoot(root_dir))}
    return nf


CFG = Config({}, {}, None, build_profile({"gpus_per_node": 1}))
H100 = [{"index": 0, "pci_bus_id": "00000000:10:1C.0", "name": "NVIDIA H100 80GB HBM3"}]


def _log(tmp_path, text, name="kern.log"):
    p = tmp_path / "var/log" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return tmp_path


def test_gpu_xid_gate(tmp_path):
    r = gate_gpu_xid(_node(_log(tmp_path / "a", OLD_BOOT + THIS_BOOT), H100), CFG)[0]
    assert r.status is Status.WARN  # 63 is a recording event; 13 is the application's
    assert "Xid 63 on GPU 0 (0000:10:1c) x1: ECC page retirement or row remapping event" in r.observed
    assert "Xid 13 on GPU 0 (0000:10:1c) x1: graphics engine exception (the application's)" in r.observed
    assert "/var/log/kern.log (this boot" in r.observed
    r = gate_gpu_xid(_node(_log(tmp_path / "b", RFC3339, "messages"), H100), CFG)[0]
    assert r.status is Status.FAIL and "Xid 79 on GPU at 0000:3b:00" in r.observed and "fallen off the bus" in r.observed
    assert "no boot banner in the window read" in r.observed and "/var/log/messages" in r.observed
    r = gate_gpu_xid(_node(_log(tmp_path / "c", OLD_BOOT + THIS_BOOT.splitlines()[0] + "\n"), H100), CFG)[0]
    assert r.status is Status.PASS and "1 Xid line(s) from an earlier boot ignored" in r.observed


def test_no_text_log_is_na_not_a_pass(tmp_path):
    (tmp_path / "var/log/journal").mkdir(parents=True)  # journald only
    r = gate_gpu_xid(_node(tmp_path, H100), CFG)[0]
    assert r.status is Status.SKIP and "journald-only host" in r.observed and "/dev/kmsg is a device" in r.observed
    old = NodeFacts(live=False)
    assert gate_gpu_xid(old, CFG)[0].status is Status.SKIP  # a record without the fact
    assert gate_gpu_xid(_node(tmp_path, H100), Config({}, {}, None, build_profile({"gpu_platform": "none"})))[0] \
        .status is Status.SKIP


def test_a_fifo_log_is_skipped_never_read(tmp_path):
    import os

    (tmp_path / "var/log").mkdir(parents=True)
    os.mkfifo(tmp_path / "var/log/kern.log")  # a reader that opened it would block
    root = HostRoot(tmp_path)
    assert root.read_tail("/var/log/kern.log") is None and "/var/log/kern.log" in root.skipped


def test_tail_window_keeps_whole_lines(tmp_path):
    filler = "".join(f"Dec  7 07:{i // 60 % 60:02d}:{i % 60:02d} gpu-node kernel: filler line {i}\n" for i in range(40000))
    _log(tmp_path, OLD_BOOT + filler + THIS_BOOT)
    size = (tmp_path / "var/log/kern.log").stat().st_size
    assert size > kernlog.TAIL_BYTES  # the window really cuts the file
    text = HostRoot(tmp_path).read_tail("/var/log/kern.log", kernlog.TAIL_BYTES)
    assert len(text.encode()) <= kernlog.TAIL_BYTES and text.endswith("unrecoverable hardware error\n")
    assert text.startswith("Dec  7 07:")  # first whole line, not a cut one
    k = kernlog.read_kernel_log(HostRoot(tmp_path))
    assert k["xid_before_boot"] == 0 and [e["xid"] for e in k["xid"]] == [63, 13]  # the old boot is out of the window


def test_snapshot_carries_the_tail_a_replay_reads_the_same(tmp_path):
    """The snapshot's capture (a snapshot of a replay root, as the snapshot tests take one): the log's window is
    copied, whole lines, and a replay of the copy judges it alike."""
    from rdmacheck.config import load_config
    from rdmacheck.preflight.snapshot import capture

    node = roce_tree(tmp_path / "node")
    filler = "".join(f"Dec  7 07:00:00 gpu-node kernel: filler line {i}\n" for i in range(30000))
    _log(node, OLD_BOOT + filler + THIS_BOOT)
    snap = tmp_path / "snap"
    summary = capture(HostRoot(node), snap, load_config(None, None, [], {}), {}, timeout=120)
    assert summary["complete"]
    data = (snap / "var/log/kern.log").read_bytes()
    live = HostRoot(node).read_tail("/var/log/kern.log", kernlog.TAIL_BYTES)
    assert data.decode() == live and len(data) <= kernlog.TAIL_BYTES < (node / "var/log/kern.log").stat().st_size
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for root, out in ((node, a), (snap, b)):
        p = run_cli("preflight", "--root", str(root), "--only", "gpu.xid", "--json", str(out),
                    "--expect", "gpus_per_node=1")
        assert p.returncode in (0, 1), p.stderr
    ra, rb = (json.loads(x.read_text())["results"][0] for x in (a, b))
    assert ra["status"] == rb["status"] and ra["observed"] == rb["observed"]
    assert "Xid 63" in ra["observed"]


@pytest.mark.parametrize("line,kind", [
    ("kernel: mlx5_core 0000:01:00.0: poll_health:800:(pid 0): Fatal error 1 detected", "mlx5"),
    ("kernel: mlx5_core 0000:03:00.0: wait_func:964:(pid 112): ENABLE_HCA(0x104) timeout. Will cause a leak", "mlx5"),
    ("kernel: mlx5_core 0000:01:00.1: print_health_info:430:(pid 0): FW is unable to respond to initialization "
     "segment reads", "mlx5"),
    ("kernel: pcieport 0000:00:01.1: AER: Corrected error received: 0000:01:00.0", "aer"),
    ("kernel: mlx5_core 0000:01:00.0: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)",
     "aer"),
])
def test_nic_lines(line, kind):
    k = kernlog.parse(line + "\n")
    assert [e["kind"] for e in k["nic"]] == [kind]
