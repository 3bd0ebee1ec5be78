"""pci.acs: the config-space parser on spec-built bytes and on this machine's real config files,
and the gate on sysfs trees laid out as the kernel lays them out."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import require
from rdmacheck.preflight.checks.pci import gate_pci_acs
from rdmacheck.config import Config, build_profile
from rdmacheck.preflight.facts import pci
from rdmacheck.evidence.model import Status
from rdmacheck.preflight.gather import gather
from rdmacheck.preflight.root import HostRoot


def bridge_config(acs_ctrl: int | None = 0x001D, size: int = 4096) -> bytes:
    """A PCIe switch downstream port as the PCIe Base spec lays it out.

    Type 1 header, capability list (status bit 4) at 0x40: PCI Express (0x10) -> MSI (0x05) at 0x50;
    extended capabilities: AER (0x0001) at 0x100 -> ACS (0x000D) at 0x148 with Capability 0x005F
    and Control ``acs_ctrl`` (0x001D = SrcValid ReqRedir CmpltRedir UpstreamFwd, what a BIOS with ACS on sets).
    """
    b = bytearray(size)
    struct.pack_into("<HH", b, 0x00, 0x10B5, 0x8747)        # vendor, device (a PLX switch)
    struct.pack_into("<H", b, 0x06, 0x0010)                  # status: capabilities list
    b[0x09:0x0C] = (0x060400).to_bytes(3, "little")           # class: PCI-to-PCI bridge
    b[0x0E] = 0x01                                           # header type 1
    b[0x34] = 0x40
    b[0x40], b[0x41] = 0x10, 0x50                            # PCIe cap -> 0x50
    b[0x50], b[0x51] = 0x05, 0x00                            # MSI cap, end
    if size > 0x100:
        nxt = 0x148 if acs_ctrl is not None else 0
        struct.pack_into("<I", b, 0x100, 0x0001 | (1 << 16) | (nxt << 20))   # AER v1
        if acs_ctrl is not None:
            struct.pack_into("<I", b, 0x148, 0x000D | (1 << 16) | (0 << 20))  # ACS v1, end of list
            struct.pack_into("<HH", b, 0x14C, 0x005F, acs_ctrl)
    return bytes(b)


def endpoint_config(vendor: int, device: int, cls: int) -> bytes:
    b = bytearray(256)
    struct.pack_into("<HH", b, 0, vendor, device)
    b[0x09:0x0C] = cls.to_bytes(3, "little")
    return bytes(b)


# ------------------------------------------------------------------ parser on constructed bytes

def test_parse_spec_layout():
    cs = pci.parse_config(bridge_config())
    assert (cs.vendor, cs.device, cs.class_code, cs.header_type) == (0x10B5, 0x8747, 0x060400, 1)
    assert cs.caps == {0x10: 0x40, 0x05: 0x50}
    assert cs.ext_caps == {0x0001: 0x100, 0x000D: 0x148}
    assert cs.acs_cap == 0x005F and cs.acs_ctrl == 0x001D
    assert cs.acs_enabled() == ["SrcValid", "ReqRedir", "CmpltRedir", "UpstreamFwd"]
    assert cs.is_bridge and cs.extended_readable


def test_parse_without_acs_and_truncated():
    cs = pci.parse_config(bridge_config(acs_ctrl=None))
    assert cs.acs_ctrl is None and cs.acs_enabled() == [] and 0x000D not in cs.ext_caps
    short = pci.parse_config(bridge_config()[:64])          # what a non-root reader gets
    assert short.vendor == 0x10B5 and not short.extended_readable and short.caps == {}
    assert pci.parse_config(b"").vendor is None


def test_parse_loops_terminate():
    b = bytearray(bridge_config())
    b[0x51] = 0x40                                           # MSI points back at PCIe: a loop
    struct.pack_into("<I", b, 0x148, 0x000D | (1 << 16) | (0x100 << 20))  # ACS points back at AER
    cs = pci.parse_config(bytes(b))
    assert cs.caps == {0x10: 0x40, 0x05: 0x50} and cs.acs_ctrl == 0x001D


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_parse_never_raises(data):
    cs = pci.parse_config(data)
    assert cs.size == len(data)


# ------------------------------------------------------------------ parser on this machine's real files

def _real_devices() -> list[Path]:
    base = Path("/sys/bus/pci/devices")
    return sorted(base.iterdir()) if base.is_dir() else []


def test_parse_real_config_files():
    devs = _real_devices()
    if not devs:
        pytest.skip("no /sys/bus/pci on this machine")
    for d in devs:
        cs = pci.parse_config((d / "config").read_bytes())
        # the header agrees with the kernel's own parsed attributes
        assert cs.vendor == int((d / "vendor").read_text(), 16), d
        assert cs.device == int((d / "device").read_text(), 16), d
        assert cs.class_code == int((d / "class").read_text(), 16), d
        if (d / "msi_irqs").is_dir() and any((d / "msi_irqs").iterdir()):
            # the kernel allocated MSI/MSI-X vectors: the device must carry one of those capabilities
            assert {0x05, 0x11} & set(cs.caps), (d, cs.caps)
        for cid, off in cs.caps.items():
            assert 0x40 <= off < 0x100
        if cs.header_type == 1:
            assert cs.is_bridge


def test_real_config_is_64_bytes_without_root():
    """The quirk pci.acs depends on: sysfs shows the first 64 bytes to an unprivileged reader."""
    devs = _real_devices()
    if not devs:
        pytest.skip("no /sys/bus/pci on this machine: nothing to compare")  # the machine, not a missing bed
    require(os.geteuid() == 0, "comparing privileged and unprivileged reads needs root", "root")
    require(shutil.which("setpriv") is not None, "setpriv not found", "apt-get install util-linux")
    cfg = str(devs[0] / "config")
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", cfg],
                       capture_output=True, timeout=10)
    assert p.returncode == 0 and len(p.stdout) == 64
    full = Path(cfg).read_bytes()
    assert len(full) >= 256 and full[:64] == p.stdout


# ------------------------------------------------------------------ the gate on sysfs trees

def _tree(tmp: Path, bridge: bytes | None, gpu: bool = True, hca: bool = True) -> Path:
    """pci0000:00 -> root port 00:01.0 -> GPU 01:00.0 ; root port 00:01.0 -> HCA 01:00.1 (same bridge)."""
    top = tmp / "sys/devices/pci0000:00"
    rp = top / "0000:00:01.0"
    rp.mkdir(parents=True)
    (rp / "config").write_bytes(bridge if bridge is not None else bridge_config())
    for f, v in (("vendor", "0x10b5"), ("device", "0x8747"), ("class", "0x060400")):
        (rp / f).write_text(v + "\n")
    bus = tmp / "sys/bus/pci/devices"
    bus.mkdir(parents=True)
    (bus / "0000:00:01.0").symlink_to("../../../devices/pci0000:00/0000:00:01.0")
    ends = []
    if gpu:
        ends.append(("0000:01:00.0", 0x10DE, 0x2330, 0x030200))
    if hca:
        ends.append(("0000:01:00.1", 0x15B3, 0x1021, 0x020000))
    for bdf, ven, dev, cls in ends:
        d = rp / bdf
        d.mkdir()
        (d / "config").write_bytes(endpoint_config(ven, dev, cls))
        (d / "vendor").write_text(f"0x{ven:04x}\n")
        (d / "device").write_text(f"0x{dev:04x}\n")
        (d / "class").write_text(f"0x{cls:06x}\n")
        (bus / bdf).symlink_to(f"../../../devices/pci0000:00/0000:00:01.0/{bdf}")
    if hca:
        ib = tmp / "sys/class/infiniband/mlx5_0"
        ib.mkdir(parents=True)
        (ib / "device").symlink_to("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.1")
    return tmp


def _ctx(root: Path):
    cfg = Config({}, {}, None, build_profile())
    return gather(HostRoot(root), cfg), cfg


def test_gate_acs_redirect_fails(tmp_path):
    r = gate_pci_acs(*_ctx(_tree(tmp_path, bridge_config(0x001D))))[0]
    assert r.status is Status.FAIL and "0000:00:01.0" in r.observed and "ReqRedir" in r.observed
    assert "setpci" in r.remedy
    assert r.details["gpus"] == ["0000:01:00.0"] and r.details["hcas"] == {"mlx5_0": "0000:01:00.1"}


def test_gate_acs_off_passes(tmp_path):
    r = gate_pci_acs(*_ctx(_tree(tmp_path, bridge_config(0x0000))))[0]
    assert r.status is Status.PASS and "all off" in r.observed


def test_gate_acs_srcvalid_only_warns(tmp_path):
    r = gate_pci_acs(*_ctx(_tree(tmp_path, bridge_config(0x0001))))[0]
    assert r.status is Status.WARN


def test_gate_unreadable_skips_with_reason(tmp_path):
    r = gate_pci_acs(*_ctx(_tree(tmp_path, bridge_config()[:64])))[0]
    assert r.status is Status.SKIP and "root" in r.observed


def test_gate_no_pair_skips(tmp_path):
    r = gate_pci_acs(*_ctx(_tree(tmp_path, None, hca=False)))[0]
    assert r.status is Status.SKIP and "PCI-attached RDMA device" in r.observed


def test_gate_on_this_machine_skips():
    # This VM has virtio devices only: no NVIDIA GPU, no PCI RDMA device.
    r = gate_pci_acs(*_ctx(Path("/")))[0]
    if pci.gpu_functions(HostRoot("/")) and pci.hca_functions(HostRoot("/")):
        assert r.status in (Status.PASS, Status.FAIL, Status.WARN)
    else:
        assert r.status is Status.SKIP


# ------------------------------------------------------------------ a real PCIe root port with ACS (QEMU q35 guest)

GUEST_PROBE = r'''
import json, os, shutil, subprocess, sys, tempfile
from rdmacheck.preflight.checks.pci import judge_bridges
from rdmacheck.preflight.facts import pci
from rdmacheck.preflight.nodefacts import PciFacts
from rdmacheck.preflight.root import HostRoot

root = HostRoot("/")
out = {}


def topo(eps):
    anc, cfg = pci.read_topology(root, eps)
    return PciFacts(ancestors=anc, config=cfg)


# the e1000e behind the root port is the endpoint (no NVIDIA GPU can exist in the guest)
ep = next(b for b in os.listdir("/sys/bus/pci/devices") if pci.ancestors(root, b))
rp = pci.ancestors(root, ep)[0]
cs = pci.read_config(root, rp)
out["endpoint"], out["bridge"] = ep, rp
out["before"] = {"size": cs.size, "acs_at": cs.ext_caps.get(0x000D), "cap": cs.acs_cap, "ctrl": cs.acs_ctrl,
                 "verdict": judge_bridges(topo([ep]), [ep]).status.value}
# switch ACS on as a BIOS would (SrcValid ReqRedir CmpltRedir UpstreamFwd): write the control register through sysfs
with open(f"/sys/bus/pci/devices/{rp}/config", "r+b") as f:
    f.seek(cs.ext_caps[0x000D] + 6)
    f.write((0x001D).to_bytes(2, "little"))
after = pci.read_config(root, rp)
r = judge_bridges(topo([ep]), [ep])
out["after"] = {"ctrl": after.acs_ctrl, "enabled": after.acs_enabled(), "verdict": r.status.value, "observed": r.observed}
# an unprivileged reader sees 64 bytes: the gate must skip, not pass.  It reads rdmacheck from a copy in a
# world-readable folder: the checkout may sit under a folder only root can enter (a CI clone under mktemp -d)
pkg = tempfile.mkdtemp()
os.chmod(pkg, 0o755)
shutil.copytree(os.path.join(os.environ["REPO"], "rdmacheck"), os.path.join(pkg, "rdmacheck"),
                ignore=shutil.ignore_patterns("__pycache__"))
p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-S", "-c",
                    "import sys; sys.path.insert(0, %r); from rdmacheck.preflight.checks.pci import judge_bridges;"
                    "from rdmacheck.preflight.facts import pci; from rdmacheck.preflight.nodefacts import PciFacts;"
                    "from rdmacheck.preflight.root import HostRoot; a, c = pci.read_topology(HostRoot('/'), [%r]);"
                    "print(judge_bridges(PciFacts(ancestors=a, config=c), list(a)).status.value)"
                    % (pkg, ep)], capture_output=True, text=True)
out["unprivileged"] = (p.stdout.strip(), p.stderr[-300:])
print(json.dumps(out))
'''


# python -S: skip site-packages (.pth processing over the guest's 9p root costs minutes under TCG)
_PROBE_SH = 'cd "$REPO" && PYTHONPATH="$REPO" "$PY" -S "$GUEST_OUT/probe.py" > "$GUEST_OUT/result.json" 2> "$GUEST_OUT/err.txt"\n'
Q35 = ["--disable-microvm", "--qemu-opts=-machine q35 -device pcie-root-port,id=rp1,chassis=1,slot=1 -device e1000e,bus=rp1"]


def run_acs_probe(out: Path):
    """Boot a q35 guest with a PCIe root port and run GUEST_PROBE in it (the harness's GuestRun).

    conftest starts it once the early beds have ended (tests/early.py), beside the light tests; the
    test below judges what it returns, and runs it itself when no early bed was started.
    """
    from softroce import guest as harness

    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.py").write_text(GUEST_PROBE)
    (out / "probe.sh").write_text(_PROBE_SH)
    return harness.run_in_guest(out / "probe.sh", outdir=out, timeout=480, memory="1G", cpus=2, vng_args=Q35)


@pytest.mark.softroce
def test_acs_on_a_real_pcie_root_port_in_a_guest(tmp_path):
    """QEMU's pcie-root-port carries a real ACS capability: read it, switch it on through sysfs, judge it."""

    from early import STARTED
    from softroce.guest import kernel_image, missing_reason

    require(kernel_image() is not None and shutil.which("vng") is not None,
            missing_reason() or "virtme-ng (vng) not installed", "softroce")
    run = STARTED["q35"].result() if "q35" in STARTED else run_acs_probe(tmp_path / "out")
    out = run.outdir
    if run.timed_out:
        pytest.fail("guest did not finish within 480 s")
    text = (out / "result.json").read_text() if (out / "result.json").exists() else ""
    err = (out / "err.txt").read_text() if (out / "err.txt").exists() else ""
    assert text, run.output[-2000:] + err
    res = json.loads(text)
    before, after = res["before"], res["after"]
    # the layout pcie_acs_init gives QEMU's root port is the one bridge_config() builds: AER at 0x100, ACS at 0x148
    assert before["size"] == 4096 and before["acs_at"] == 0x148 and before["cap"] == 0x005F
    assert before["ctrl"] == 0 and before["verdict"] == "pass"
    assert after["ctrl"] == 0x001D and after["enabled"] == ["SrcValid", "ReqRedir", "CmpltRedir", "UpstreamFwd"]
    assert after["verdict"] == "fail" and res["bridge"] in after["observed"]
    assert res["unprivileged"][0] == "skip", res["unprivileged"]


def test_hca_functions_on_real_captures(captures):
    assert pci.hca_functions(HostRoot(captures / "sysfs/hwloc-32em64t-mlx4")) == {"mlx4_0": "0000:82:00.0"}
    assert pci.hca_functions(HostRoot(captures / "sysfs/hwloc-40intel64-qib")) == {"qib0": "0000:43:00.0"}
