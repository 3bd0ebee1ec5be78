"""HCA port counters and netdev counters: what crossed a NIC between two reads.

Sources, all read through a :class:`~rdmacheck.preflight.root.HostRoot`:

* ``/sys/class/infiniband/<dev>/ports/<p>/counters/*`` — the IB PortCounters
  (PMA).  ``port_xmit_data`` and ``port_rcv_data`` count **4-byte words**, not
  bytes (IB spec "data octets divided by 4"; mlx4, mlx5, hfi1 and qib all do),
  so bytes = 4 x value.  Packet counters are plain counts.
* ``/sys/class/infiniband/<dev>/ports/<p>/hw_counters/*`` — driver-specific
  counters, kept raw.  rxe (soft-RoCE) has **no** ``counters/`` folder at all,
  only ``hw_counters`` with packet counts (``sent_pkts``, ``rcvd_pkts``); its
  bytes show on the netdev it runs over.
* ``/sys/class/net/<if>/statistics/{tx,rx}_{bytes,packets}`` — the netdev.
  For RoCE on mlx5 the RDMA traffic bypasses the netdev counters; for rxe it
  is the netdev traffic.

Quirks seen in real trees (../shared/captures):

* Old HCAs without extended counters (qib, some mlx4 firmware) have 32-bit
  PortCounters that **saturate** at 2^32-1 instead of wrapping: a saturated
  value is a floor, and any delta computed from it is meaningless.
* i40iw (iWARP) answers ``N/A (no PMA)`` in every counters file.
* Some files are unreadable (EINVAL/EPERM); reads then give None and the
  counter is listed in ``unreadable``.

A counter that went *down* between two reads was reset (driver reload, port
reset): its delta is None, never a negative number or a silent zero.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from rdmacheck.preflight.root import HostRoot

IB_CLASS = "/sys/class/infiniband"
NET_CLASS = "/sys/class/net"

# PortCounters counting 4-byte words (IB spec 16.1.3.5: PortXmitData, PortRcvData).
WORD_COUNTERS = ("port_xmit_data", "port_rcv_data")
# A 32-bit PMA counter stuck here has saturated (the spec says saturate, not wrap).
SATURATED_32 = (1 << 32) - 1

# Packet counts: the PMA names first, then driver hw_counters (rxe).
_TX_PACKETS = (("counters", "port_xmit_packets"), ("hw_counters", "sent_pkts"))
_RX_PACKETS = (("counters", "port_rcv_packets"), ("hw_counters", "rcvd_pkts"))


def parse_counter(text: str | None) -> int | None:
    """A sysfs counter value as int; None for absent, empty, ``N/A (no PMA)`` or any non-integer."""
    if text is None:
        return None
    t = text.strip()
    if not t:
        return None
    try:
        v = int(t, 0) if t.lower().startswith("0x") else int(t)
    except ValueError:
        return None
    return v if v >= 0 else None


def _read_dir(root: HostRoot, folder: str) -> tuple[dict[str, int], list[str]]:
    values: dict[str, int] = {}
    bad: list[str] = []
    for name in root.listdir(folder):
        v = parse_counter(root.read(f"{folder}/{name}", limit=256))
        if v is None:
            bad.append(name)
        else:
            values[name] = v
    return values, bad


@dataclasses.dataclass
class PortCounters:
    """One HCA port's counters, raw as read (``port_*_data`` still in 4-byte words)."""

    device: str
    port: int
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    hw_counters: dict[str, int] = dataclasses.field(default_factory=dict)
    # "counters/port_xmit_data" style names of files present but not integers (N/A, EINVAL).
    unreadable: list[str] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.device}/{self.port}"

    def _bytes(self, name: str) -> int | None:
        v = self.counters.get(name)
        return None if v is None else 4 * v

    @property
    def tx_bytes(self) -> int | None:
        """Bytes sent (4 x port_xmit_data); None where the driver has no PMA data counters (rxe)."""
        return self._bytes("port_xmit_data")

    @property
    def rx_bytes(self) -> int | None:
        return self._bytes("port_rcv_data")

    def _packets(self, names) -> int | None:
        for family, name in names:
            v = getattr(self, family).get(name)
            if v is not None:
                return v
        return None

    @property
    def tx_packets(self) -> int | None:
        """port_xmit_packets, else hw_counters/sent_pkts (rxe)."""
        return self._packets(_TX_PACKETS)

    @property
    def rx_packets(self) -> int | None:
        return self._packets(_RX_PACKETS)

    @property
    def saturated(self) -> list[str]:
        """Counters stuck at 2^32-1: 32-bit PMA counters that stopped counting."""
        return sorted(f"counters/{k}" for k, v in self.counters.items() if v == SATURATED_32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "port": self.port,
            "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets, "rx_packets": self.rx_packets,
            "counters": dict(self.counters), "hw_counters": dict(self.hw_counters),
            "unreadable": list(self.unreadable), "saturated": self.saturated,
        }


@dataclasses.dataclass
class NetdevCounters:
    """One netdev's ``statistics/*``."""

    name: str
    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    unreadable: list[str] = dataclasses.field(default_factory=list)

    @property
    def tx_bytes(self) -> int | None:
        return self.stats.get("tx_bytes")

    @property
    def rx_bytes(self) -> int | None:
        return self.stats.get("rx_bytes")

    @property
    def tx_packets(self) -> int | None:
        return self.stats.get("tx_packets")

    @property
    def rx_packets(self) -> int | None:
        return self.stats.get("rx_packets")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes,
                "tx_packets": self.tx_packets, "rx_packets": self.rx_packets,
                "stats": dict(self.stats), "unreadable": list(self.unreadable)}


def read_port_counters(root: HostRoot, device: str, port: int | str) -> PortCounters | None:
    """Counters of ``device`` port ``port``; None when that port does not exist."""
    base = f"{IB_CLASS}/{device}/ports/{port}"
    if not root.is_dir(base):
        return None
    try:
        port_no = int(port)
    except ValueError:
        return None
    counters, bad_c = _read_dir(root, f"{base}/counters")
    hw, bad_h = _read_dir(root, f"{base}/hw_counters")
    return PortCounters(
        device=device, port=port_no, counters=counters, hw_counters=hw,
        unreadable=[f"counters/{n}" for n in bad_c] + [f"hw_counters/{n}" for n in bad_h],
    )


def read_netdev_counters(root: HostRoot, name: str) -> NetdevCounters | None:
    """``/sys/class/net/<name>/statistics``; None when the interface has none."""
    folder = f"{NET_CLASS}/{name}/statistics"
    if not root.is_dir(folder):
        return None
    stats, bad = _read_dir(root, folder)
    return NetdevCounters(name=name, stats=stats, unreadable=bad)


@dataclasses.dataclass
class CounterSample:
    """Every selected port and netdev at one moment."""

    ports: dict[str, PortCounters] = dataclasses.field(default_factory=dict)      # "dev/port" ->
    netdevs: dict[str, NetdevCounters] = dataclasses.field(default_factory=dict)  # ifname ->

    def to_dict(self) -> dict[str, Any]:
        return {"ports": {k: v.to_dict() for k, v in self.ports.items()},
                "netdevs": {k: v.to_dict() for k, v in self.netdevs.items()}}


def read_sample(root: HostRoot, devices: list[str] | None = None, netdevs: list[str] | None = None) -> CounterSample:
    """Counters of ``devices`` (every port) and ``netdevs``; None selects everything present."""
    sample = CounterSample()
    for dev in (root.listdir(IB_CLASS) if devices is None else devices):
        for p in root.listdir(f"{IB_CLASS}/{dev}/ports"):
            pc = read_port_counters(root, dev, p)
            if pc is not None:
                sample.ports[pc.key] = pc
    for name in (root.listdir(NET_CLASS) if netdevs is None else netdevs):
        nc = read_netdev_counters(root, name)
        if nc is not None:
            sample.netdevs[name] = nc
    return sample


def counter_delta(before: int | None, after: int | None) -> int | None:
    """after - before; None when either is missing, the counter went down (reset), or was saturated."""
    if before is None or after is None or after < before:
        return None
    if before == SATURATED_32 or after == SATURATED_32:
        return None
    return after - before


def _delta_map(a: dict[str, int], b: dict[str, int]) -> dict[str, int | None]:
    return {k: counter_delta(a.get(k), b[k]) for k in sorted(b) if k in a}


def port_delta(before: PortCounters, after: PortCounters) -> dict[str, Any]:
    """What one port moved between two reads, bytes already converted from words."""
    return {
        "tx_bytes": counter_delta(before.tx_bytes, after.tx_bytes) if not _sat(before, after, "port_xmit_data") else None,
        "rx_bytes": counter_delta(before.rx_bytes, after.rx_bytes) if not _sat(before, after, "port_rcv_data") else None,
        "tx_packets": counter_delta(before.tx_packets, after.tx_packets),
        "rx_packets": counter_delta(before.rx_packets, after.rx_packets),
        "counters": _delta_map(before.counters, after.counters),
        "hw_counters": _delta_map(before.hw_counters, after.hw_counters),
    }


def _sat(a: PortCounters, b: PortCounters, name: str) -> bool:
    return SATURATED_32 in (a.counters.get(name), b.counters.get(name))


def netdev_delta(before: NetdevCounters, after: NetdevCounters) -> dict[str, Any]:
    return {
        "tx_bytes": counter_delta(before.tx_bytes, after.tx_bytes),
        "rx_bytes": counter_delta(before.rx_bytes, after.rx_bytes),
        "tx_packets": counter_delta(before.tx_packets, after.tx_packets),
        "rx_packets": counter_delta(before.rx_packets, after.rx_packets),
        "stats": _delta_map(before.stats, after.stats),
    }


def sample_delta(before: CounterSample, after: CounterSample) -> dict[str, Any]:
    """Per port and netdev present in both samples: see :func:`port_delta` / :func:`netdev_delta`."""
    return {
        "ports": {k: port_delta(before.ports[k], v) for k, v in after.ports.items() if k in before.ports},
        "netdevs": {k: netdev_delta(before.netdevs[k], v) for k, v in after.netdevs.items() if k in before.netdevs},
    }


# ---------------------------------------------------------------- what a counter means (for `rdmacheck counters`)

# Counter names by what they say, across the drivers seen (IB PMA counters/, mlx5 and rxe hw_counters/,
# netdev statistics/).  First match wins; bytes and packets are the fixed fields above.
KINDS = (
    ("link_downs", ("link_downed", "link_error_recovery")),
    ("retransmits", ("retry", "retrans", "duplicate_request", "out_of_seq", "packet_seq_err", "seq_err",
                     "local_ack_timeout", "rnr_nak", "implied_nak")),
    ("pause", ("pause",)),
    ("cnp", ("cnp",)),
    ("ecn", ("ecn",)),
    ("errors", ("err", "discard", "drop", "dropped", "fifo", "collisions", "missed", "symbol", "integrity",
                "overrun", "constraint", "carrier", "crc", "frame", "length")),
)


def kind_of(name: str) -> str | None:
    """``completer_retry_err`` -> "retransmits", ``rx_dropped`` -> "errors", ``tx_bytes`` -> None."""
    low = name.lower()
    words = [w for w in re.split(r"[^a-z0-9]+", low) if w]

    def hit(n: str) -> bool:
        # long or compound needles anywhere; short ones only as the start of a word ("ack_deferred" holds
        # "err" but is no error: rxe defers an ACK)
        return n in low if (len(n) >= 5 or "_" in n) else any(w.startswith(n) for w in words)

    for kind, needles in KINDS:
        if any(hit(n) for n in needles):
            return kind
    return None


def delta_rows(before: CounterSample, after: CounterSample, seconds: float | None = None) -> list[dict[str, Any]]:
    """One row per RDMA port and netdev: byte/packet deltas (the same counter_delta the bench's path proof
    uses), their rates per second when ``seconds`` is known, and every other counter that moved, grouped by
    :data:`KINDS`.  A reset or saturated counter is None, never a negative number or a zero."""
    d = sample_delta(before, after)
    rows: list[dict[str, Any]] = []
    for what, deltas in (("port", d["ports"]), ("netdev", d["netdevs"])):
        for key in sorted(deltas):
            x = deltas[key]
            row: dict[str, Any] = {"kind": what, "name": key, "reset": []}
            src = (after.ports if what == "port" else after.netdevs)[key]
            for f in ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets"):
                row[f] = x[f]
                if x[f] is None and getattr(src, f) is not None:
                    row["reset"].append(f)  # the counter exists: it went down or saturated
                row[f + "_per_s"] = (x[f] / seconds) if seconds and x[f] is not None else None
            others: dict[str, dict[str, int | None]] = {}
            flat = {**{f"counters/{k}": v for k, v in x.get("counters", {}).items()},
                    **{f"hw_counters/{k}": v for k, v in x.get("hw_counters", {}).items()},
                    **{k: v for k, v in x.get("stats", {}).items()}}
            for name, v in flat.items():
                k = kind_of(name.rsplit("/", 1)[-1])
                if k is not None:
                    others.setdefault(k, {})[name] = v
            row["groups"] = others
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m rdmacheck.preflight.facts.counters [--root DIR]``: every counter now, as JSON."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m rdmacheck.preflight.facts.counters", description=main.__doc__)
    ap.add_argument("--root", default="/", help="host root (an unpacked snapshot or sysfs capture)")
    args = ap.parse_args(argv)
    print(json.dumps(read_sample(HostRoot(args.root)).to_dict(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
