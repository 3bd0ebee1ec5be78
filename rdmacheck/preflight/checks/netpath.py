"""Static causes of a dead RoCE path that every configuration gate misses: ARP flux between RDMA netdevs in
one subnet (a peer caches the wrong MAC for a RoCE address) and a packet filter that drops RoCE v2 (UDP
4791) while ping and TCP pass.  Both were seen on soft-RoCE: RDMA hung while preflight passed."""

from __future__ import annotations

import ipaddress

from rdmacheck.evidence.model import Result, Status
from rdmacheck.preflight.facts.firewall import ROCE_V2_PORT, udp4791_drops


def _effective(conf: dict, name: str, key: str) -> int | None:
    """The value the kernel applies: the larger of ``all`` and the netdev's own (arp_ignore, arp_announce and
    rp_filter take the maximum; Documentation/networking/ip-sysctl.rst)."""
    a, n = (conf.get("all") or {}).get(key), (conf.get(name) or {}).get(key)
    if a is None or n is None:
        return None
    return max(a, n)


def gate_arp(facts, config) -> list[Result]:
    """net.arp: several addressed RDMA netdevs in one IPv4 subnet need arp_ignore >= 1 and arp_announce = 2."""
    exp = "one addressed RDMA netdev per subnet, or arp_ignore=1 and arp_announce=2 on each that shares one"
    rdma = sorted({n for nds in facts.port_netdevs.values() for n in nds})
    if not rdma:
        return [Result("net.arp", Status.SKIP, observed="no RDMA netdev", expected=exp, remedy="see rdma.netdev")]
    groups: dict[ipaddress.IPv4Network, list[str]] = {}
    for n in rdma:
        nd = facts.net.get(n)
        if not nd or not nd.up:
            continue
        for a in nd.ipv4:
            try:
                net = ipaddress.ip_interface(a).network
            except ValueError:
                continue
            if net.prefixlen < 32 and n not in groups.setdefault(net, []):
                groups[net].append(n)
    shared = {net: ns for net, ns in groups.items() if len(ns) > 1}
    if not shared:
        return [Result("net.arp", Status.PASS, observed="no two addressed RDMA netdevs share a subnet ("
                       + (", ".join(f"{ns[0]} {net}" for net, ns in sorted(groups.items(), key=str)) or "none addressed")
                       + ")", expected=exp)]
    bad, warn, unknown, parts, details = [], [], [], [], {}
    for net, ns in sorted(shared.items(), key=str):
        for n in ns:
            ai, aa = _effective(facts.ipv4_conf, n, "arp_ignore"), _effective(facts.ipv4_conf, n, "arp_announce")
            rp = _effective(facts.ipv4_conf, n, "rp_filter")
            details[n] = {"subnet": str(net), "arp_ignore": ai, "arp_announce": aa, "rp_filter": rp}
            parts.append(f"{n} ({net}): arp_ignore {ai}, arp_announce {aa}, rp_filter {rp}")
            if ai is None or aa is None:
                unknown.append(n)
            elif ai < 1 or aa < 2:
                bad.append(n)
            elif rp == 1:
                warn.append(n)
    obs = f"{' and '.join('/'.join(ns) for ns in shared.values())} share a subnet: " + "; ".join(parts)
    fix = "; ".join(f"sysctl -w net.ipv4.conf.{n}.arp_ignore=1 net.ipv4.conf.{n}.arp_announce=2" for n in bad)
    if bad:
        return [Result("net.arp", Status.FAIL, details=details, expected=exp,
                       observed=obs + f" — ARP flux: {', '.join(bad)} answer ARP for each other's addresses, so a "
                                      "peer can cache the wrong MAC for a RoCE address and RDMA to it hangs",
                       remedy=fix + " (persist in /etc/sysctl.d/)")]
    if unknown:
        return [Result("net.arp", Status.SKIP, details=details, expected=exp,
                       observed=obs + f" — the ARP sysctls of {', '.join(unknown)} could not be read: not judged",
                       remedy="run preflight on the live host (a snapshot taken before they were recorded has none)")]
    if warn:
        return [Result("net.arp", Status.WARN, details=details, expected=exp,
                       observed=obs + f" — strict reverse-path filtering (rp_filter=1) on {', '.join(warn)} drops "
                                      "packets that arrive on one rail for a route through the other",
                       remedy="; ".join(f"sysctl -w net.ipv4.conf.{n}.rp_filter=2" for n in warn))]
    return [Result("net.arp", Status.PASS, observed=obs, expected=exp, details=details)]


def gate_firewall(facts, config) -> list[Result]:
    """net.firewall: no INPUT/OUTPUT rule drops or rejects RoCE v2 (UDP 4791)."""
    exp = f"no packet filter rule drops UDP {ROCE_V2_PORT} (RoCE v2)"
    if not facts.ib:
        return [Result("net.firewall", Status.SKIP, observed="no RDMA device", expected=exp, remedy="see rdma.devices")]
    ans = facts.answer("firewall")
    if not isinstance(ans, dict):
        return [Result("net.firewall", Status.SKIP, observed="packet filter rules not recorded (a snapshot taken "
                       "before rdmacheck read them): not judged", expected=exp,
                       remedy="run preflight on the live host")]
    drops = udp4791_drops(ans)
    if drops:
        rules = "; ".join(f"{d['source']} {d['chain']}: {d['rule']}" for d in drops[:4])
        ipt = [d for d in drops if d["source"] == "iptables"]
        fix = ("; ".join(f"iptables -D {d['rule'][3:]}" for d in ipt[:4]) if ipt else
               "delete the nft rule (nft -a list ruleset shows its handle; nft delete rule ... handle N)")
        return [Result("net.firewall", Status.FAIL, expected=exp, details={"rules": drops},
                       observed=f"{len(drops)} rule(s) drop RoCE v2 traffic (UDP {ROCE_V2_PORT}): {rules} — ping and "
                                "TCP still pass, every RDMA transfer stalls until the QP's retries run out",
                       remedy=f"{fix}, or accept it first: iptables -I INPUT -p udp --dport {ROCE_V2_PORT} -j ACCEPT")]
    views = [k for k in ("iptables", "nft") if ans.get(k) is not None]
    if not views:
        return [Result("net.firewall", Status.SKIP, expected=exp,
                       observed=f"packet filter rules unreadable: {ans.get('error') or 'no answer'}: not judged",
                       remedy="run preflight as root (iptables-save and nft need it), or check the rules by hand")]
    return [Result("net.firewall", Status.PASS, expected=exp,
                   observed=f"no INPUT/OUTPUT rule drops UDP {ROCE_V2_PORT} ({' and '.join(views)} read)")]


def gate_dad(facts, config) -> list[Result]:
    """net.dad: no other machine answers ARP for this node's addresses on the netdevs NCCL's GIDs live on."""
    exp = "no other MAC answers ARP for this node's mesh addresses (RFC 5227 probe)"
    if not facts.ib:
        return [Result("net.dad", Status.SKIP, observed="no RDMA device", expected=exp, remedy="see rdma.devices")]
    probes = sorted((p for p in facts.probes.values() if p.kind == "dad"), key=lambda p: p.target)
    if not probes:
        return [Result("net.dad", Status.SKIP, expected=exp, remedy="see rdma.netdev and rdma.gid (no address, "
                       "nothing to collide); a snapshot taken before rdmacheck probed for duplicates has no answer",
                       observed="no duplicate address probe: no up, IPv4-addressed netdev carries a selected port's "
                                "GID, or the record has none: not judged")]
    foreign, own, unjudged, ok, details = [], [], [], [], {}
    for p in probes:
        a = p.answer if isinstance(p.answer, dict) else None
        if a is None or a.get("error") or p.error:
            unjudged.append(f"{p.target}: {(a or {}).get('error') or p.error or 'no answer'}")
            continue
        dups = a.get("duplicates") or []
        details[p.target] = {"addresses": a.get("addresses"), "mac": a.get("mac"), "duplicates": dups,
                             "probes": a.get("probes"), "elapsed_s": a.get("elapsed_s")}
        for d in dups:
            (own if d.get("local_netdev") else foreign).append((p.target, d))
        if not dups:
            ok.append(f"{p.target} ({', '.join(a.get('addresses') or [])})")
    if foreign:
        said = "; ".join(f"{d['address']} on {nd} is also held by {d['mac']} (its ARP {d.get('op', 'reply')})"
                         for nd, d in foreign[:4])
        return [Result("net.dad", Status.FAIL, expected=exp, details=details,
                       observed=f"duplicate address on the mesh: {said} — peers cache whichever MAC answered "
                                "last, so RoCE traffic for this node can land on the other machine",
                       remedy="give one of the two machines another address (find it by the MAC in the switch's "
                              "MAC table or `ip neigh` on a peer); then `ip neigh flush dev <netdev>` on the peers")]
    if unjudged:
        return [Result("net.dad", Status.SKIP, expected=exp, details=details,
                       observed="duplicate address probe not judged: " + "; ".join(unjudged),
                       remedy="run preflight as root (the ARP probe needs a raw socket, CAP_NET_RAW), or "
                              "`arping -D -I <netdev> <address>` by hand")]
    if own:
        said = "; ".join(f"{d['address']} on {nd} answered by this node's {d['local_netdev']} ({d['mac']})"
                         for nd, d in own[:4])
        return [Result("net.dad", Status.WARN, expected=exp, details=details,
                       observed=f"no other machine holds these addresses, but {said}: ARP flux between this "
                                "node's own rails",
                       remedy="see net.arp (arp_ignore=1, arp_announce=2 on the rails that share a subnet)")]
    return [Result("net.dad", Status.PASS, expected=exp, details=details,
                   observed="no other MAC answered ARP probes for " + "; ".join(ok))]
