"""A netdev's driver statistics (what ``ethtool -S IF`` prints), read with the kernel's ethtool ioctl.

mlx5 puts its pause, pause-storm, per-priority and discard counters there and nowhere in sysfs
(Documentation/networking/device_drivers/ethernet/mellanox/mlx5/counters.rst: ``rx_prio<p>_pause``,
``tx_pause_storm_error_events``, ``rx_discards_phy`` ...), so the lossless verdict needs this read to see
pause at all, and to see that ``rx_prio<p>_pause`` is absent (PFC off for p).

Live only: statistics are an ioctl answer (``SIOCETHTOOL``: ``ETHTOOL_GSSET_INFO`` for the count,
``ETHTOOL_GSTRINGS`` for the names, ``ETHTOOL_GSTATS`` for the values, include/uapi/linux/ethtool.h), not
a file, so a replayed tree has none.  A netdev without driver statistics (``lo``: EOPNOTSUPP) reads None.
"""

from __future__ import annotations

import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x0000001B
ETHTOOL_GSTATS = 0x0000001D
ETHTOOL_GSSET_INFO = 0x00000037
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16
_IFREQ_SIZE = 40      # struct ifreq on 64-bit Linux: name[16] + a 24-byte union (ifr_data: a pointer)
MAX_STATS = 1 << 16   # a bound on what a driver may claim


def _ioctl(fd: int, ifname: str, buf) -> None:
    import ctypes
    import fcntl

    ifr = struct.pack(f"{IFNAMSIZ}sP", ifname.encode()[:IFNAMSIZ - 1], ctypes.addressof(buf))
    fcntl.ioctl(fd, SIOCETHTOOL, ifr + b"\0" * (_IFREQ_SIZE - len(ifr)))


def read_stats(ifname: str) -> dict[str, int] | None:
    """{stat name: value} of ``ifname`` (``ethtool -S``), None when the driver has none or the read fails."""
    import ctypes
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fd = s.fileno()
            # struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
            info = ctypes.create_string_buffer(struct.pack("IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS, 0))
            _ioctl(fd, ifname, info)
            _, _, mask, n = struct.unpack("IIQI", info.raw[:20])
            if not mask & (1 << ETH_SS_STATS) or not 0 < n <= MAX_STATS:
                return None
            # struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[len * 32]; }
            names = ctypes.create_string_buffer(12 + n * ETH_GSTRING_LEN)
            struct.pack_into("III", names, 0, ETHTOOL_GSTRINGS, ETH_SS_STATS, n)
            _ioctl(fd, ifname, names)
            # struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[n_stats]; }
            stats = ctypes.create_string_buffer(8 + n * 8)
            struct.pack_into("II", stats, 0, ETHTOOL_GSTATS, n)
            _ioctl(fd, ifname, stats)
    except OSError:
        return None
    n_names = min(n, struct.unpack_from("I", names, 8)[0])
    n_vals = min(n, struct.unpack_from("I", stats, 4)[0])
    out: dict[str, int] = {}
    for i in range(min(n_names, n_vals)):
        raw = names.raw[12 + i * ETH_GSTRING_LEN: 12 + (i + 1) * ETH_GSTRING_LEN]
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        if name:
            out[name] = struct.unpack_from("Q", stats, 8 + i * 8)[0]
    return out


def read_many(ifnames: list[str]) -> dict[str, dict[str, int]]:
    """{ifname: stats} for each netdev that has driver statistics."""
    out = {}
    for n in ifnames:
        s = read_stats(n)
        if s is not None:
            out[n] = s
    return out


def delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int | None]]:
    """Per netdev and stat: after - before (None when it went down: a reset), for names read both times."""
    from .counters import counter_delta

    return {nd: {k: counter_delta(before[nd].get(k), v) for k, v in sorted(st.items()) if k in before[nd]}
            for nd, st in after.items() if nd in before}
