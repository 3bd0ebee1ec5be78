"""Build small sysfs-shaped trees for gate tests.

Real captured trees (../shared/captures/sysfs) are all InfiniBand; RoCE GID
tables are laid out here in the exact shape the kernel uses (values as seen on
rxe in the soft-RoCE guest and on mlx5 in the DGX Spark captures), and the
soft-RoCE integration suite proves the same gates on real rxe devices.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _w(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def ipv4_gid(addr: str) -> str:
    a, b, c, d = (int(x) for x in addr.split("."))
    return f"0000:0000:0000:0000:0000:ffff:{a:02x}{b:02x}:{c:02x}{d:02x}"


LINK_LOCAL = "fe80:0000:0000:0000:0200:00ff:fe00:0001"


def roce_tree(root: Path, dev: str = "roceP2p1s0f0", netdev: str = "enP2p1s0f0np0", mtu: int = 9000,
              gids: list[tuple[str, str]] | None = None, state: str = "4: ACTIVE", phys: str = "5: LinkUp",
              table_len: int = 16, operstate: str = "up", limits_memlock: str = "unlimited",
              addrs: list[str] | None = None, env: dict | None = None, verbs_active_mtu: int | None = None) -> Path:
    """A RoCE device with one port, its netdev, device files and limits, under ``root``."""
    gids = gids if gids is not None else [(LINK_LOCAL, "RoCE v2"), (ipv4_gid("192.168.100.1"), "RoCE v2")]
    dd = root / "sys/devices/virtual/infiniband" / dev
    _w(dd / "fw_ver", "28.45.1200")
    _w(dd / "node_type", "1: CA")
    port = dd / "ports/1"
    _w(port / "state", state)
    _w(port / "phys_state", phys)
    _w(port / "link_layer", "Ethernet")
    _w(port / "rate", "100 Gb/sec (4X EDR)")
    _w(port / "lid", "0x0")
    for i in range(table_len):
        g, t = gids[i] if i < len(gids) else ("0000:0000:0000:0000:0000:0000:0000:0000", None)
        _w(port / "gids" / str(i), g)
        if t:  # unused slots answer EINVAL on read: no file here
            _w(port / "gid_attrs/types" / str(i), t)
            _w(port / "gid_attrs/ndevs" / str(i), netdev)
    cls = root / "sys/class/infiniband"
    cls.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../devices/virtual/infiniband/{dev}", cls / dev)
    nd = root / "sys/devices/virtual/net" / netdev
    _w(nd / "mtu", str(mtu))
    _w(nd / "operstate", operstate)
    _w(nd / "carrier", "1" if operstate == "up" else "0")
    _w(nd / "type", "1")
    ncls = root / "sys/class/net"
    ncls.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../devices/virtual/net/{netdev}", ncls / netdev)
    _w(root / "sys/class/infiniband_verbs/uverbs0/ibdev", dev)
    for f in ("rdma_cm", "uverbs0"):
        _w(root / "dev/infiniband" / f, "")
    (root / "etc/rdma").mkdir(parents=True, exist_ok=True)
    ml = "unlimited" if limits_memlock == "unlimited" else limits_memlock
    _w(root / "proc/self/limits",
       "Limit                     Soft Limit           Hard Limit           Units     \n"
       "Max stack size            67108864             unlimited            bytes     \n"
       f"Max locked memory         {ml:<20} {ml:<20} bytes     ")
    meta = root / "rdmacheck"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "addrs.json").write_text(json.dumps({netdev: {"ipv4": addrs if addrs is not None else ["192.168.100.1/24"], "ipv6": []}}))
    (meta / "shm.json").write_text(json.dumps({"size": 16 << 30}))
    (meta / "env.json").write_text(json.dumps(env or {}))
    if verbs_active_mtu:
        (meta / "verbs.json").write_text(json.dumps({"available": True, "error": None, "devices": {
            dev: {"fw_version": "28.45.1200", "ports": {"1": {"state": 4, "active_mtu": verbs_active_mtu,
                                                              "max_mtu": 4096, "link_layer": "Ethernet",
                                                              "gid_tbl_len": table_len}}}}}))
    return root


def dual_port_tree(root: Path, dev: str = "mlx5_0", netdevs: tuple[str, str] = ("enp1s0f0np0", "enp1s0f0np1"),
                   addrs: tuple[str, str] = ("192.168.100.1", "192.168.101.1")) -> Path:
    """One PCI function with two RoCE ports (a dual-port ConnectX), each with its own netdev: both netdevs
    sit in the function's ``net/`` folder, told apart by ``dev_port`` (0, 1), and each port's GIDs name its
    own netdev, as mlx5 lays them out."""
    pci = root / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"
    dd = pci / "infiniband" / dev
    _w(dd / "fw_ver", "22.41.1000")
    _w(dd / "node_type", "1: CA")
    for i, (nd, addr) in enumerate(zip(netdevs, addrs)):
        port = dd / "ports" / str(i + 1)
        _w(port / "state", "4: ACTIVE")
        _w(port / "phys_state", "5: LinkUp")
        _w(port / "link_layer", "Ethernet")
        _w(port / "rate", "100 Gb/sec (4X EDR)")
        _w(port / "lid", "0x0")
        for g, (text, kind) in enumerate([(LINK_LOCAL, "RoCE v2"), (ipv4_gid(addr), "RoCE v2")]):
            _w(port / "gids" / str(g), text)
            _w(port / "gid_attrs/types" / str(g), kind)
            _w(port / "gid_attrs/ndevs" / str(g), nd)
        ndir = pci / "net" / nd
        _w(ndir / "mtu", "9000")
        _w(ndir / "operstate", "up")
        _w(ndir / "carrier", "1")
        _w(ndir / "type", "1")
        _w(ndir / "dev_port", str(i))
        ncls = root / "sys/class/net"
        ncls.mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/net/{nd}", ncls / nd)
    os.symlink("../..", dd / "device")  # the PCI function, as on the host
    cls = root / "sys/class/infiniband"
    cls.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/{dev}", cls / dev)
    return root


def counter_tree(root: Path, ports: dict[str, dict[str, dict[str, int]]] | None = None,
                 netdevs: dict[str, dict[str, int]] | None = None, links: dict[str, str] | None = None) -> Path:
    """RDMA port and netdev counter files under ``root`` as the kernel lays them out.

    ``ports``: {"dev/port": {"counters": {name: value}, "hw_counters": {name: value}}} (IB PortCounters and
    driver hw_counters: rxe and mlx5 names as their drivers spell them); ``netdevs``: {ifname: {stat: value}}
    (``statistics/``); ``links``: {rdma dev: netdev} written as rxe's ``parent`` file, so the port -> netdev
    map (facts.infiniband.port_netdevs) finds the netdev as it does on a live rxe device.
    """
    for key, fams in (ports or {}).items():
        dev, port = key.split("/")
        base = root / "sys/class/infiniband" / dev
        for fam, values in fams.items():
            for name, v in values.items():
                _w(base / "ports" / port / fam / name, str(v))
        _w(base / "ports" / port / "state", "4: ACTIVE")
        _w(base / "ports" / port / "link_layer", "Ethernet")
    for dev, nd in (links or {}).items():
        _w(root / "sys/class/infiniband" / dev / "parent", nd)
    for nd, stats in (netdevs or {}).items():
        for name, v in stats.items():
            _w(root / "sys/class/net" / nd / "statistics" / name, str(v))
    return root


AER_COR = ("RxErr", "BadTLP", "BadDLLP", "Rollover", "Timeout", "NonFatalErr", "CorrIntErr", "HeaderOF")
AER_UNCOR = ("Undefined", "DLP", "SDES", "TLP", "FCP", "CmpltTO", "CmpltAbrt", "UnxCmplt", "RxOF", "MalfTLP", "ECRC",
             "UnsupReq", "ACSViol", "UncorrIntErr", "BlockedTLP", "AtomicOpBlocked", "TLPBlockedErr",
             "PoisonTLPBlocked")


def _aer_text(counts: dict[str, int], names: tuple[str, ...], total: str) -> str:
    lines = [f"{n} {counts.get(n, 0)}" for n in names]
    return "\n".join(lines + [f"{total} {sum(counts.get(n, 0) for n in names)}"])


def pci_hca_tree(root: Path, dev: str = "mlx5_0", bdf: str = "0000:41:00.0", bridge: str = "0000:40:01.1",
                 aer: dict[str, dict[str, int]] | None = None, speed: tuple[str, str] = ("16.0 GT/s PCIe", "16.0 GT/s PCIe"),
                 width: tuple[str, str] = ("16", "16"), counters: dict[str, int] | None = None,
                 netdev: str = "enp65s0f0np0") -> Path:
    """A PCI RDMA function as sysfs lays it out: the class entry and ``device`` link into
    /sys/devices/pci.../<bdf>, /sys/bus/pci/devices/<bdf>, its AER statistics (drivers/pci/pcie/aer.c format:
    one ``Name count`` line per error type, then ``TOTAL_ERR_COR`` / ``TOTAL_ERR_NONFATAL`` / ``TOTAL_ERR_FATAL``),
    its PCIe link files and its port's IB PortCounters.  ``aer=None`` writes no AER files (a kernel without them)."""
    fn = root / "sys/devices" / f"pci{bridge[:7]}" / bridge / bdf
    if aer is not None:
        _w(fn / "aer_dev_correctable", _aer_text(aer.get("correctable", {}), AER_COR, "TOTAL_ERR_COR"))
        _w(fn / "aer_dev_nonfatal", _aer_text(aer.get("nonfatal", {}), AER_UNCOR, "TOTAL_ERR_NONFATAL"))
        _w(fn / "aer_dev_fatal", _aer_text(aer.get("fatal", {}), AER_UNCOR, "TOTAL_ERR_FATAL"))
    _w(fn / "current_link_speed", speed[0])
    _w(fn / "max_link_speed", speed[1])
    _w(fn / "current_link_width", width[0])
    _w(fn / "max_link_width", width[1])
    _w(fn / "vendor", "0x15b3")
    _w(fn / "class", "0x020000")
    ib = fn / "infiniband" / dev
    port = ib / "ports/1"
    _w(port / "state", "4: ACTIVE")
    _w(port / "phys_state", "5: LinkUp")
    _w(port / "link_layer", "Ethernet")
    for name in ("link_downed", "symbol_error", "link_error_recovery", "excessive_buffer_overrun_errors",
                 "local_link_integrity_errors", "port_rcv_errors", "port_xmit_data", "port_rcv_data"):
        _w(port / "counters" / name, str((counters or {}).get(name, 0)))
    _w(port / "gid_attrs/ndevs/0", netdev)
    _w(port / "gids/0", LINK_LOCAL)
    _w(port / "gid_attrs/types/0", "RoCE v2")
    os.symlink(f"../../../{bdf}", ib / "device")
    (root / "sys/class/infiniband").mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../devices/pci{bridge[:7]}/{bridge}/{bdf}/infiniband/{dev}", root / "sys/class/infiniband" / dev)
    (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../devices/pci{bridge[:7]}/{bridge}/{bdf}", root / "sys/bus/pci/devices" / bdf)
    return root
