"""Reader for /sys/class/infiniband (one reader per sysfs class, as prometheus/procfs does).

No judgement here: values are parsed into plain fields and anything odd is
kept as None so the checks can say what is missing.

Hardware and driver quirks this reader knows about:

* ``state`` / ``phys_state`` read ``"4: ACTIVE"`` / ``"5: LinkUp"``.  The mlx5
  port in prometheus/procfs' fixtures shows phys_state ``"4: ACTIVE"`` (4 is
  PortConfigurationTraining in the phys_state enum): we keep both the number
  and the name and judge on the number, as the kernel's enum means it.
* ``rate`` reads ``"100 Gb/sec (4X EDR)"``; rxe reports a fixed
  ``"10 Gb/sec (1X FDR10)"`` whatever the netdev speed is.
* There is **no** ``active_mtu`` file for most drivers (rxe, mlx5): the active
  MTU comes from verbs (``facts.verbs``).  When a file exists we read it.
* GID tables have up to 1024 entries (rxe) and unused entries read as all
  zeros.  ``gid_attrs/types/N`` and ``gid_attrs/ndevs/N`` of an unused entry
  fail with EINVAL on read (NCCL's net_ib.cc handles the same case), so we read
  the attributes only for non-zero GIDs.
* ``gid_attrs/types/N`` reads ``"RoCE v2"`` or ``"IB/RoCE v1"`` (older kernels:
  ``"RoCE v1"``); IB ports have no meaningful type.
* The netdev of a RoCE port: ``gid_attrs/ndevs/N`` (any non-zero GID), else
  ``device/net/*`` of the PCI function filtered by ``dev_port`` (what
  ibdev2netdev does), else the ``parent`` file that rxe devices carry.
* Captured trees contain dangling links (class entries whose device dir was
  not captured); such a device is still listed with what could be read.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from rdmacheck.preflight.root import HostRoot

IB_CLASS = "/sys/class/infiniband"
ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"
# The largest GID table we walk; real tables are 16..1024 entries.
MAX_GIDS = 4096
# RoCE headers the kernel subtracts from the netdev MTU before rounding down to an IB MTU, per driver:
# mlx5 and the other hardware drivers use iboe_get_mtu (include/rdma/ib_addr.h: GRH 40 + BTH 12 +
# DETH/XRC 4 + AtomicETH 28 + ICRC 4 = 88); rxe uses its own RXE_MAX_HDR_LENGTH, 80
# (drivers/infiniband/sw/rxe/rxe_param.h eth_mtu_int_to_enum): netdev MTU 4176 gives rxe 4096, mlx5 2048.
ROCE_OVERHEAD = 88
ROCE_OVERHEAD_BY_DRIVER = {"rxe": 80}
IB_MTUS = (4096, 2048, 1024, 512, 256)


# ibv_port_state / phys_state numbers as sysfs prints them ("4: ACTIVE", "5: LinkUp").
ACTIVE = 4
LINK_UP = 5


@dataclasses.dataclass
class Gid:
    index: int
    gid: str                      # sysfs form: 8 groups of 4 hex digits
    type: str | None = None       # "RoCE v2", "IB/RoCE v1", or None (unreadable)
    ndev: str | None = None

    @property
    def raw(self) -> bytes | None:
        return gid_bytes(self.gid)

    @property
    def ipv4(self) -> str | None:
        """The IPv4 address of an IPv4-mapped GID (::ffff:a.b.c.d), else None."""
        b = self.raw
        if b and b[:10] == b"\0" * 10 and b[10:12] == b"\xff\xff":
            return str(ipaddress.IPv4Address(b[12:]))
        return None

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The address a RoCE GID carries: IPv4 for ::ffff:a.b.c.d, else the IPv6 address; None when empty."""
        b = self.raw
        if not b or b == bytes(16):
            return None
        if self.ipv4:
            return ipaddress.IPv4Address(self.ipv4)
        return ipaddress.IPv6Address(b)

    @property
    def roce_version(self) -> int | None:
        return roce_version_of(self.type)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ipv4"] = self.ipv4
        d["roce_version"] = self.roce_version
        return d


@dataclasses.dataclass
class Port:
    device: str
    port: int
    state: str | None = None          # "ACTIVE"
    state_id: int | None = None       # 4
    phys_state: str | None = None     # "LinkUp"
    phys_state_id: int | None = None  # 5
    link_layer: str | None = None     # "Ethernet" | "InfiniBand"
    rate: str | None = None           # "100 Gb/sec (4X EDR)"
    rate_gbps: float | None = None
    lid: str | None = None
    active_mtu: int | None = None     # bytes, only when sysfs has the file
    gids: list[Gid] = dataclasses.field(default_factory=list)
    gid_tbl_len: int = 0
    netdevs: list[str] = dataclasses.field(default_factory=list)
    has_counters: bool = False
    has_hw_counters: bool = False

    @property
    def name(self) -> str:
        return f"{self.device}:{self.port}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["gids"] = [g.to_dict() for g in self.gids]
        return d


@dataclasses.dataclass
class Device:
    name: str
    fw_ver: str | None = None
    node_type: str | None = None
    hca_type: str | None = None
    board_id: str | None = None
    node_guid: str | None = None
    driver: str | None = None
    parent: str | None = None        # rxe: the netdev it sits on
    ports: dict[int, Port] = dataclasses.field(default_factory=dict)
    readable: bool = True            # False for a dangling class link

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ports"] = {str(k): v.to_dict() for k, v in self.ports.items()}
        return d


def roce_version_of(type_text: str | None) -> int | None:
    """NCCL's ncclIbRoceGetVersionNum: "IB/RoCE v1"/"RoCE v1" -> 1, "RoCE v2" -> 2."""
    if not type_text:
        return None
    if type_text.startswith("IB/RoCE v1") or type_text.startswith("RoCE v1"):
        return 1
    if type_text.startswith("RoCE v2"):
        return 2
    return None


def gid_bytes(text: str | None) -> bytes | None:
    """Parse a sysfs GID (``fe80:0000:...``) or a compressed IPv6 form into 16 bytes."""
    if not text:
        return None
    t = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{4}(:[0-9a-fA-F]{4}){7}", t):
        return bytes.fromhex(t.replace(":", ""))
    try:
        return ipaddress.IPv6Address(t).packed
    except ValueError:
        return None


def _state(text: str | None) -> tuple[int | None, str | None]:
    """``"4: ACTIVE"`` -> (4, "ACTIVE"); bare names or numbers are accepted too."""
    if text is None:
        return None, None
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\S.*?)\s*", text)
    if m:
        return int(m.group(1)), m.group(2)
    if text.strip().isdecimal():
        return int(text.strip()), None
    return None, text.strip() or None


def _rate_gbps(text: str | None) -> float | None:
    if not text:
        return None
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*Gb/sec", text)
    return float(m.group(1)) if m else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _port_netdevs(root: HostRoot, dev: str, port: int, gids: list[Gid]) -> list[str]:
    names: list[str] = []
    for g in gids:
        if g.ndev and g.ndev not in names:
            names.append(g.ndev)
    if names:
        return names
    # ibdev2netdev's way: the PCI function's net/ folder, matched on dev_port.
    base = f"{IB_CLASS}/{dev}/device/net"
    for nd in root.listdir(base):
        dev_port = _int(root.read(f"{base}/{nd}/dev_port"))
        if dev_port is None:
            # kernels before 3.15 have no dev_port; dev_id ("0x1") carried the port
            try:
                dev_port = int(root.read(f"{base}/{nd}/dev_id") or "", 0)
            except ValueError:
                dev_port = None
        if dev_port is None or dev_port == port - 1:
            names.append(nd)
    if names:
        return names
    parent = root.read(f"{IB_CLASS}/{dev}/parent")
    return [parent] if parent else []


def read_gids(root: HostRoot, dev: str, port: int) -> tuple[list[Gid], int]:
    """Non-zero GIDs of a port and the table length."""
    base = f"{IB_CLASS}/{dev}/ports/{port}"
    entries = [e for e in root.listdir(f"{base}/gids") if e.isdecimal()]
    idxs = sorted(int(e) for e in entries)[:MAX_GIDS]
    out: list[Gid] = []
    for i in idxs:
        g = root.read(f"{base}/gids/{i}")
        if g is None or gid_bytes(g) in (None, bytes(16)):
            continue
        out.append(
            Gid(
                index=i,
                gid=g,
                type=root.read(f"{base}/gid_attrs/types/{i}"),
                ndev=root.read(f"{base}/gid_attrs/ndevs/{i}"),
            )
        )
    return out, len(idxs)


def read_port(root: HostRoot, dev: str, port: int) -> Port:
    base = f"{IB_CLASS}/{dev}/ports/{port}"
    sid, sname = _state(root.read(f"{base}/state"))
    pid, pname = _state(root.read(f"{base}/phys_state"))
    rate = root.read(f"{base}/rate")
    gids, tbl = read_gids(root, dev, port)
    mtu_text = root.read(f"{base}/active_mtu")
    p = Port(
        device=dev,
        port=port,
        state=sname,
        state_id=sid,
        phys_state=pname,
        phys_state_id=pid,
        link_layer=root.read(f"{base}/link_layer"),
        rate=rate,
        rate_gbps=_rate_gbps(rate),
        lid=root.read(f"{base}/lid"),
        active_mtu=_int(mtu_text.split()[0]) if mtu_text else None,
        gids=gids,
        gid_tbl_len=tbl,
        has_counters=root.is_dir(f"{base}/counters"),
        has_hw_counters=root.is_dir(f"{base}/hw_counters"),
    )
    p.netdevs = _port_netdevs(root, dev, port, gids)
    return p


def read_device(root: HostRoot, name: str) -> Device:
    base = f"{IB_CLASS}/{name}"
    d = Device(
        name=name,
        fw_ver=root.read(f"{base}/fw_ver"),
        node_type=root.read(f"{base}/node_type"),
        hca_type=root.read(f"{base}/hca_type"),
        board_id=root.read(f"{base}/board_id"),
        node_guid=root.read(f"{base}/node_guid"),
        driver=root.link_basename(f"{base}/device/driver"),
        parent=root.read(f"{base}/parent"),
        readable=root.is_dir(base),
    )
    for p in root.listdir(f"{base}/ports"):
        if p.isdecimal():
            d.ports[int(p)] = read_port(root, name, int(p))
    return d


def read_infiniband(root: HostRoot) -> dict[str, Device]:
    """Every RDMA device under /sys/class/infiniband, by name."""
    return {name: read_device(root, name) for name in root.listdir(IB_CLASS)}


def roce_driver(dev) -> str | None:
    """"rxe" for soft-RoCE (its class entry carries ``parent``, the netdev it sits on), else the PCI driver."""
    if dev is None:
        return None
    if dev.parent and not dev.name.startswith("siw"):
        return "rxe"
    return dev.driver


def roce_overhead(driver: str | None) -> int:
    return ROCE_OVERHEAD_BY_DRIVER.get(driver or "", ROCE_OVERHEAD)


def roce_active_mtu(netdev_mtu: int, driver: str | None = None) -> int | None:
    """The RoCE MTU the kernel derives from a netdev MTU for ``driver`` (see ROCE_OVERHEAD_BY_DRIVER)."""
    room = netdev_mtu - roce_overhead(driver)
    return next((m for m in IB_MTUS if m <= room), None)


def port_netdevs(devices: dict[str, Device]) -> dict[str, list[str]]:
    """RDMA port ("dev:port") -> its netdevs, for every port of every device.

    The one home of the port -> netdev map (read per port by ``_port_netdevs``:
    GID ndevs, then the PCI function's net/ on dev_port, then rxe's parent).
    """
    return {p.name: list(p.netdevs) for d in devices.values() for p in d.ports.values()}
