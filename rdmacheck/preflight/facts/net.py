"""Reader for /sys/class/net plus the interfaces' IP addresses.

sysfs gives MTU, operstate and carrier; it has no IP addresses, so those come
from psutil (getifaddrs, no subprocess) on a live host and from the
snapshot's ``rdmacheck/addrs.json`` when replaying.

Quirks: ``carrier`` raises EINVAL on an interface that is administratively
down (read as None); ``operstate`` is ``unknown`` for loopback and for some
virtual devices that are nevertheless passing traffic, so "up" means
operstate up, or unknown with carrier 1.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from rdmacheck.preflight.root import HostRoot

NET_CLASS = "/sys/class/net"


@dataclasses.dataclass
class NetDev:
    name: str
    mtu: int | None = None
    operstate: str | None = None
    carrier: int | None = None
    address: str | None = None
    type: int | None = None
    speed_mbps: int | None = None
    ipv4: list[str] = dataclasses.field(default_factory=list)   # "192.168.100.1/24"
    ipv6: list[str] = dataclasses.field(default_factory=list)

    @property
    def up(self) -> bool:
        if self.operstate == "up":
            return True
        return self.operstate in ("unknown", None) and self.carrier == 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["up"] = self.up
        return d


def _int(t: str | None) -> int | None:
    try:
        return int(t) if t is not None else None
    except ValueError:
        return None


def live_addresses() -> dict[str, dict[str, list[str]]]:
    """{ifname: {"ipv4": [...], "ipv6": [...]}} from getifaddrs via psutil."""
    import socket

    import psutil

    out: dict[str, dict[str, list[str]]] = {}
    for name, addrs in psutil.net_if_addrs().items():
        e = out.setdefault(name, {"ipv4": [], "ipv6": []})
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask:
                try:
                    plen = ipaddress.IPv4Network(f"0.0.0.0/{a.netmask}").prefixlen
                except ValueError:
                    plen = 32
                e["ipv4"].append(f"{a.address}/{plen}")
            elif a.family == socket.AF_INET6:
                e["ipv6"].append(a.address.split("%")[0])
    return out


def addresses(root: HostRoot) -> dict[str, dict[str, list[str]]]:
    """{ifname: {"ipv4": [...], "ipv6": [...]}} in getifaddrs order; {} when not captured (see addresses_known)."""
    if root.live:
        return live_addresses()
    meta = root.meta("addrs.json")
    return meta if isinstance(meta, dict) else {}


def addresses_known(root: HostRoot) -> bool:
    """Whether interface addresses were read at all: a snapshot without rdmacheck/addrs.json (an older
    capture, a hand-made tree) says nothing about addresses, which is not the same as having none."""
    return root.live or isinstance(root.meta("addrs.json"), dict)


def read_net(root: HostRoot, addrs: dict[str, dict[str, list[str]]] | None = None) -> dict[str, NetDev]:
    """Every interface under /sys/class/net; ``addrs`` as ``addresses()`` gives them (read when None)."""
    if addrs is None:
        addrs = addresses(root)
    out: dict[str, NetDev] = {}
    for name in root.listdir(NET_CLASS):
        base = f"{NET_CLASS}/{name}"
        if not root.is_dir(base):
            continue  # bonding_masters is a file; dangling links in captures
        speed = _int(root.read(f"{base}/speed"))
        a = addrs.get(name) or {}
        out[name] = NetDev(
            name=name,
            mtu=_int(root.read(f"{base}/mtu")),
            operstate=root.read(f"{base}/operstate"),
            carrier=_int(root.read(f"{base}/carrier")),
            address=root.read(f"{base}/address"),
            type=_int(root.read(f"{base}/type")),
            speed_mbps=speed if speed is not None and speed >= 0 else None,
            ipv4=list(a.get("ipv4") or []),
            ipv6=list(a.get("ipv6") or []),
        )
    return out


# The IPv4 sysctls that decide who answers ARP for an address (Documentation/networking/ip-sysctl.rst):
# with several netdevs in one subnet and the kernel's defaults (arp_ignore=0, arp_announce=0) every netdev
# answers for every local address ("ARP flux"), and a peer can cache the wrong MAC for a RoCE address.
IPV4_CONF = ("arp_ignore", "arp_announce", "arp_filter", "rp_filter")
IPV4_CONF_DIR = "/proc/sys/net/ipv4/conf"


def read_ipv4_conf(root: HostRoot, names: list[str]) -> dict[str, dict[str, int | None]]:
    """{"all": {...}, name: {...}} of IPV4_CONF for ``all`` and each of ``names`` (None: unreadable)."""
    return {n: {k: _int(root.read(f"{IPV4_CONF_DIR}/{n}/{k}")) for k in IPV4_CONF} for n in ["all", *names]}
