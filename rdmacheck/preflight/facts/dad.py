"""Duplicate address detection on an RDMA netdev: does another machine on the wire hold this node's mesh
address?

Two hosts with one IPv4 address split the mesh: each peer caches whichever MAC answered its ARP last, so
RoCE traffic meant for this node lands on the other (the GID NCCL exchanges carries the address, not the
MAC) and every configuration gate still passes.  The probe is RFC 5227's: an ARP request for the address
with sender address 0.0.0.0 (it changes no peer's ARP cache), sent twice on the netdev; a reply, or any
ARP packet whose sender address is ours, from a MAC that is not this netdev's is a duplicate.  A MAC that
belongs to another netdev of this node is this node's own rail answering (ARP flux, judged by net.arp) and is
recorded as such.

Live only (a snapshot records the answer, probe ``dad``).  It needs a raw packet socket (CAP_NET_RAW); without
one the answer says so and the gate cannot judge.  Bounded: ``wait_s`` after the first probe, whatever
arrives.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from typing import Any

ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
BROADCAST = b"\xff" * 6
WAIT_S = 0.2           # on a switched mesh a reply comes within a millisecond; two probes 50 ms apart
PROBES = 2


def _mac_bytes(mac: str) -> bytes | None:
    try:
        b = bytes(int(x, 16) for x in mac.strip().split(":"))
    except ValueError:
        return None
    return b if len(b) == 6 else None


def _mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def probe_frame(src_mac: bytes, target: str) -> bytes:
    """An ARP probe (RFC 5227 2.1.1): who has ``target``, asked by ``src_mac`` from 0.0.0.0; padded to 60 bytes."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac, bytes(4), bytes(6),
                      ipaddress.IPv4Address(target).packed)
    return (BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP) + arp).ljust(60, b"\x00")


def parse_arp(frame: bytes) -> dict[str, Any] | None:
    """(op, sender MAC, sender IPv4, target IPv4) of an Ethernet ARP frame for IPv4, or None."""
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
        return None
    return {"op": op, "mac": _mac_text(sha), "sender": str(ipaddress.IPv4Address(spa)),
            "target": str(ipaddress.IPv4Address(tpa))}


def probe(ifname: str, addresses: list[str], mac: str | None, local_macs: dict[str, str],
          wait_s: float = WAIT_S) -> dict[str, Any]:
    """Probe every IPv4 address of ``ifname`` (``a.b.c.d`` or with a prefix) on its wire.

    ``mac`` is the netdev's own MAC and ``local_macs`` maps every MAC of this node to its netdev (its own rails
    answering are not another machine): both as the node record read them (NodeFacts.net, through the root).
    Returns ``{"ifname", "mac", "addresses", "duplicates": [{"address", "mac", "op", "local_netdev"}],
    "probes", "elapsed_s", "error"}``; never raises for a socket problem (the error says it)."""
    t0 = time.monotonic()
    addrs = sorted({a.split("/")[0] for a in addresses})
    own = _mac_bytes(mac or "")
    ans: dict[str, Any] = {"ifname": ifname, "mac": _mac_text(own) if own else None, "addresses": addrs,
                           "duplicates": [], "probes": 0, "elapsed_s": 0.0,
                           "error": None if own else f"{ifname}: no Ethernet MAC ({mac or 'none read'})"}
    if own is None or not addrs:
        return ans
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except PermissionError:
        ans["error"] = "a raw packet socket needs root (CAP_NET_RAW)"
        return ans
    except OSError as e:
        ans["error"] = f"raw packet socket: {e.strerror or e}"
        return ans
    mine = set(addrs)
    seen: set[tuple[str, str]] = set()
    macs = {k.strip().lower(): v for k, v in local_macs.items()}
    try:
        s.bind((ifname, ETH_P_ARP))
        s.setblocking(False)
        end = time.monotonic() + wait_s
        next_probe, sent = time.monotonic(), 0
        while True:
            now = time.monotonic()
            if sent < PROBES and now >= next_probe:
                for a in addrs:
                    s.send(probe_frame(own, a))
                sent += 1
                ans["probes"] = sent
                next_probe = now + wait_s / (PROBES + 1)
            if now >= end:
                break
            r, _, _ = select.select([s], [], [], max(0.0, min(end, next_probe if sent < PROBES else end) - now))
            if not r:
                continue
            while True:
                try:
                    frame, where = s.recvfrom(2048)
                except BlockingIOError:
                    break
                if len(where) > 2 and where[2] == PACKET_OUTGOING:
                    continue
                a = parse_arp(frame)
                if not a or a["mac"] == ans["mac"] or a["sender"] not in mine:
                    continue
                key = (a["sender"], a["mac"])
                if key not in seen:
                    seen.add(key)
                    ans["duplicates"].append({"address": a["sender"], "mac": a["mac"],
                                              "op": "reply" if a["op"] == 2 else "request",
                                              "local_netdev": macs.get(a["mac"])})
    except OSError as e:
        ans["error"] = f"{ifname}: {e.strerror or e}"
    finally:
        s.close()
        ans["elapsed_s"] = round(time.monotonic() - t0, 4)
    return ans
