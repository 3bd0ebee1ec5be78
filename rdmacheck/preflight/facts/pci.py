"""PCI config-space facts: the ACS capability of the bridges above GPUs and HCAs.

Layout (PCI Local Bus / PCIe Base spec):

* type 0/1 header in bytes 0x00-0x3F: vendor 0x00, device 0x02, status 0x06
  (bit 4: capability list present), class code 0x09-0x0B, header type 0x0E
  (low 7 bits: 0 endpoint, 1 PCI-PCI bridge), capability pointer 0x34;
* conventional capabilities: a linked list of (id byte, next byte) from the
  pointer at 0x34, inside the first 256 bytes;
* PCIe extended capabilities from 0x100 up to 4 KiB: a 32-bit header
  ``id[15:0] | version[19:16] | next[31:20]``.  ACS is extended capability
  0x000D: ACS Capability register at +4 (16 bits), ACS Control at +6.

Reading quirk: sysfs ``config`` returns only the first 64 bytes to a process
without CAP_SYS_ADMIN, so ACS (beyond 0x100) is visible only to root.  A
256-byte file is a device (or a VM's virtual bus) without extended space.
"""

from __future__ import annotations

import dataclasses
import re
import struct

from rdmacheck.preflight.root import HostRoot

PCI_DEVICES = "/sys/bus/pci/devices"
IB_CLASS = "/sys/class/infiniband"
ACS_EXT_CAP_ID = 0x000D
PCIE_CAP_ID = 0x10

# ACS Control register bits (PCIe Base spec 7.7.8.3), named as lspci prints them (ACSCtl:)
ACS_BITS = [
    (0, "SrcValid"), (1, "TransBlk"), (2, "ReqRedir"), (3, "CmpltRedir"),
    (4, "UpstreamFwd"), (5, "EgressCtrl"), (6, "DirectTrans"),
]
# Bits that send peer-to-peer requests/completions up to the root complex (the GPUDirect detour).
ACS_REDIRECT = {"ReqRedir", "CmpltRedir", "EgressCtrl"}

_BDF = re.compile(r"^[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


@dataclasses.dataclass
class ConfigSpace:
    size: int
    vendor: int | None = None
    device: int | None = None
    class_code: int | None = None      # 24 bits, e.g. 0x060400 for a PCI bridge
    header_type: int | None = None     # low 7 bits
    caps: dict[int, int] = dataclasses.field(default_factory=dict)      # conventional id -> offset
    ext_caps: dict[int, int] = dataclasses.field(default_factory=dict)  # extended id -> offset
    acs_cap: int | None = None
    acs_ctrl: int | None = None

    @property
    def extended_readable(self) -> bool:
        return self.size > 0x100

    @property
    def is_bridge(self) -> bool:
        return self.header_type == 1

    def acs_enabled(self) -> list[str]:
        if self.acs_ctrl is None:
            return []
        return [name for bit, name in ACS_BITS if self.acs_ctrl & (1 << bit)]


def _u16(b: bytes, off: int) -> int | None:
    return struct.unpack_from("<H", b, off)[0] if off + 2 <= len(b) else None


def _u32(b: bytes, off: int) -> int | None:
    return struct.unpack_from("<I", b, off)[0] if off + 4 <= len(b) else None


def parse_config(data: bytes) -> ConfigSpace:
    """Parse raw config-space bytes; never raises (truncated or garbage input gives fewer fields)."""
    cs = ConfigSpace(size=len(data))
    if len(data) < 0x10:
        return cs
    cs.vendor = _u16(data, 0)
    cs.device = _u16(data, 2)
    cs.class_code = int.from_bytes(data[0x09:0x0C], "little")
    cs.header_type = data[0x0E] & 0x7F
    status = _u16(data, 6) or 0
    if status & 0x10 and len(data) > 0x34:
        ptr = data[0x34] & 0xFC
        seen: set[int] = set()
        # 48 = the most (id, next) pairs that fit in 0x40..0xFF: a loop guard for corrupt lists
        while 0x40 <= ptr < min(len(data), 0x100) - 1 and ptr not in seen and len(seen) < 48:
            seen.add(ptr)
            cid = data[ptr]
            cs.caps.setdefault(cid, ptr)
            ptr = data[ptr + 1] & 0xFC
    if len(data) > 0x100:
        off = 0x100
        seen = set()
        while 0x100 <= off <= len(data) - 4 and off not in seen and len(seen) < 1024:
            seen.add(off)
            hdr = _u32(data, off)
            if not hdr or hdr == 0xFFFFFFFF:
                break
            cid = hdr & 0xFFFF
            cs.ext_caps.setdefault(cid, off)
            off = (hdr >> 20) & 0xFFC
        acs = cs.ext_caps.get(ACS_EXT_CAP_ID)
        if acs is not None:
            cs.acs_cap = _u16(data, acs + 4)
            cs.acs_ctrl = _u16(data, acs + 6)
    return cs


def read_config(root: HostRoot, bdf: str) -> ConfigSpace | None:
    data = root.read_bytes(f"{PCI_DEVICES}/{bdf}/config", limit=4096)
    return None if data is None else parse_config(data)


def ancestors(root: HostRoot, bdf: str) -> list[str]:
    """PCI functions above ``bdf`` (nearest first), from the sysfs device path."""
    target = root.readlink(f"{PCI_DEVICES}/{bdf}")
    if not target:
        return []
    parts = [p for p in target.split("/") if _BDF.match(p)]
    if parts and parts[-1] == bdf:
        parts = parts[:-1]
    return list(reversed(parts))


def _hex(root: HostRoot, path: str) -> int | None:
    try:
        return int(root.read(path) or "", 16)
    except ValueError:
        return None


def gpu_functions(root: HostRoot) -> list[str]:
    """NVIDIA display/3D controllers (vendor 0x10de, class 0x0300/0x0302)."""
    out = []
    for bdf in root.listdir(PCI_DEVICES):
        cls = _hex(root, f"{PCI_DEVICES}/{bdf}/class")
        if _hex(root, f"{PCI_DEVICES}/{bdf}/vendor") == 0x10DE and cls is not None and cls >> 8 in (0x0300, 0x0302):
            out.append(bdf)
    return out


def hca_functions(root: HostRoot) -> dict[str, str]:
    """{rdma device: PCI function} for RDMA devices backed by PCI (soft-RoCE has none)."""
    out = {}
    for dev in root.listdir(IB_CLASS):
        target = root.readlink(f"{IB_CLASS}/{dev}/device")
        if not target:
            continue
        bdf = target.rstrip("/").rsplit("/", 1)[-1]
        if _BDF.match(bdf):
            out[dev] = bdf
    return out


def read_topology(root: HostRoot, endpoints: list[str]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """({endpoint: bridges above it}, {bridge: config space as hex or None}) for pci.acs."""
    anc: dict[str, list[str]] = {}
    cfg: dict[str, str | None] = {}
    for bdf in endpoints:
        anc[bdf] = ancestors(root, bdf)
        for a in anc[bdf]:
            if a not in cfg:
                data = root.read_bytes(f"{PCI_DEVICES}/{a}/config", limit=4096)
                cfg[a] = None if data is None else data.hex()
    return anc, cfg
