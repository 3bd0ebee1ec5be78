"""`rdmacheck counters`: what crossed each RDMA port and netdev, as deltas and rates."""

from __future__ import annotations

import argparse

from rdmacheck.util.units import seconds_type

DESCRIPTION = """\
Read every RDMA port's counters (counters/ and hw_counters/) and every netdev's statistics twice and
print what moved: bytes and packets each way (IB PortXmitData words already turned into bytes) with
their rate, then every error, link-down, retransmit, pause, CNP and ECN counter that changed, where the
driver has them.  The same counter arithmetic as the bench's path proof (rdmacheck.preflight.facts.counters): a
counter that went down (reset) or sits at 2^32-1 (a saturated 32-bit PMA counter) reads "reset", never
a negative number or a zero.  rxe (soft-RoCE) has no byte counters on the RDMA port: its bytes are its
netdev's.

Then, per RDMA port, the verdict of the window in words (rdmacheck.preflight.facts.lossless): lossless and
uncongested; lossless under congestion (pause or CNP/ECN rising, no retransmit); lossy (out-of-sequence,
sequence errors, retransmits or ACK timeouts rising: go-back-N recovery); or the lossless contract broken
(pause storm, buffer overrun).  It names the patterns it sees: "retransmits with no pause" (loss), "port
received 0 packets while its netdev received N bytes" (RoCE dropped before the RDMA stack), "bytes
arrived on another netdev" (the peer sends to the wrong MAC).  Live, the ports' netdevs' driver statistics
(`ethtool -S`: mlx5's pause, per-priority and discard counters, which sysfs lacks) are read too.
"""

EPILOG = """\
examples:
  rdmacheck counters                          # 1 s window on this host
  rdmacheck counters --interval 10 --all      # 10 s, show idle devices too
  rdmacheck counters --interval 5 --json reports/counters.json
  rdmacheck counters --before /tmp/a --after /tmp/b --seconds 30
        # two copies of /sys (unpacked `rdmacheck snapshot`s, or any tree holding
        # sys/class/infiniband/... and sys/class/net/.../statistics) taken 30 s apart
exit codes: 0 counters read, 2 usage or input error.
"""

GROUPS = ("errors", "link_downs", "retransmits", "pause", "cnp", "ecn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--interval", type=float, metavar="S", help="live: read, wait S seconds, read again (default 1)")
    g.add_argument("--before", metavar="DIR", help="a host tree read earlier (with --after)")
    p.add_argument("--after", metavar="DIR", help="the same host's tree read later (with --before)")
    p.add_argument("--seconds", type=seconds_type("--seconds", maximum=366 * 86400.0), metavar="S",
                   help="with --before/--after: the time between them, for rates (> 0; a negative or NaN time gave "
                        "negative or NaN rates)")
    p.add_argument("--all", action="store_true", help="also list ports and netdevs where nothing moved")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON (written atomically)")


def _tree(path: str, flag: str):
    import os

    from rdmacheck.util.errors import UsageError
    from rdmacheck.preflight.root import HostRoot

    if not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: not a folder; give a copy of the host root (e.g. an unpacked snapshot)")
    root = HostRoot(path)
    if not root.listdir("/sys/class/infiniband") and not root.listdir("/sys/class/net"):
        raise UsageError(f"{flag} {path}: no sys/class/infiniband or sys/class/net below it")
    return root


def _fmt_bytes(v) -> str:
    if v is None:
        return "n/a"
    for unit, n in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= n:
            return f"{v / n:.2f} {unit}"
    return f"{v} B"


def _fmt_rate(v) -> str:
    return "" if v is None else f" ({v * 8 / 1e9:.3f} Gb/s)" if v >= 1e6 else f" ({v:.0f} B/s)"


def _moved(row) -> bool:
    """Something counted in the window (a reset counter counts: it is news)."""
    return bool(row["reset"]) or any(row[f] not in (0, None) for f in ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")) or \
        any(v != 0 for grp in row["groups"].values() for v in grp.values())


def _side(row, d: str) -> str:
    def one(f: str, text: str) -> str:
        return "reset" if f in row["reset"] else "n/a" if row[f] is None else text

    b = one(f"{d}_bytes", _fmt_bytes(row[f"{d}_bytes"]) + _fmt_rate(row[f"{d}_bytes_per_s"]))
    return f"{d} {b}, {one(f'{d}_packets', str(row[f'{d}_packets']))} pkts"


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from rdmacheck.util.atomic import atomic_write
    from rdmacheck.util.errors import UsageError
    from rdmacheck.preflight.facts.counters import delta_rows, read_sample
    from rdmacheck.preflight.root import HostRoot
    from rdmacheck.preflight.facts.ethtool import delta as eth_delta
    from rdmacheck.preflight.facts.ethtool import read_many

    if args.before or args.after:
        if not (args.before and args.after):
            raise UsageError("--before and --after go together: give both folders (or use --interval S)")
        root_after = _tree(args.after, "--after")
        before, after = read_sample(_tree(args.before, "--before")), read_sample(root_after)
        eth = {}  # driver statistics are an ioctl answer: a copied tree has none
        seconds = args.seconds
        window = f"{args.before} -> {args.after}" + (f" ({seconds:g} s)" if seconds else " (no --seconds: no rates)")
    else:
        if args.seconds is not None:
            raise UsageError("--seconds is for --before/--after; live, the window is --interval S")
        interval = 1.0 if args.interval is None else args.interval
        if not 0 < interval <= 3600:
            raise UsageError(f"--interval {interval:g}: give a number of seconds in (0, 3600]")
        root = root_after = HostRoot("/")
        eth_nds = _rdma_netdevs(root)
        t0 = time.monotonic()
        before, eth_before = read_sample(root), read_many(eth_nds)
        time.sleep(interval)
        after, eth_after = read_sample(root), read_many(eth_nds)
        seconds = time.monotonic() - t0
        eth = eth_delta(eth_before, eth_after)
        window = f"live, {seconds:.2f} s"
    rows = delta_rows(before, after, seconds)
    verdicts, found = _judge(before, after, root_after, eth)
    if args.json:
        atomic_write(args.json, json.dumps({"window": window, "seconds": seconds, "rows": rows,
                                            "verdicts": {k: v.to_dict() for k, v in verdicts.items()},
                                            "findings": [f.to_dict() for f in found]}, indent=1) + "\n")
    shown = rows if args.all else [r for r in rows if _moved(r)]
    print(f"counters: {window}; {len(rows)} ports/netdevs read, {len(shown)} shown"
          + ("" if args.all else " (those that moved; --all for every one)"))
    for r in shown:
        print(f"  {r['kind']:6} {r['name']:24} {_side(r, 'tx')};  {_side(r, 'rx')}")
        for grp in GROUPS:
            moved = {k: v for k, v in r["groups"].get(grp, {}).items() if v != 0}
            if moved:
                print(f"         {grp}: " + ", ".join(f"{k} {'reset' if v is None else f'+{v}'}" for k, v in moved.items()))
    _print_verdicts(verdicts, found)
    return 0


def _rdma_netdevs(root) -> list[str]:
    from rdmacheck.preflight.facts.infiniband import port_netdevs, read_infiniband

    return sorted({n for nds in port_netdevs(read_infiniband(root)).values() for n in nds})


def _judge(before, after, root, eth=None):
    """Per RDMA port: the lossless verdict of the window, and the cross-row findings (facts.window).
    ``eth``: the window's driver-statistics deltas of the ports' netdevs (facts.ethtool; live only)."""
    from rdmacheck.preflight.facts.infiniband import port_netdevs, read_infiniband
    from rdmacheck.preflight.facts.window import judge

    return judge(before, after, port_netdevs(read_infiniband(root)), eth)


def _print_verdicts(verdicts, found) -> None:
    if not verdicts and not found:
        return
    print("verdict (rdmacheck.preflight.facts.lossless):")
    for port, v in sorted(verdicts.items()):
        print(f"  {port:24} [{v.state}] {v.summary}")
        if v.patterns:
            print(f"  {'':24} pattern: " + "; ".join(v.patterns))
        for n in v.notes:
            print(f"  {'':24} note: {n}")
    for f in found:
        print(f"  {f.port:24} {f.pattern}: {f.text}")
