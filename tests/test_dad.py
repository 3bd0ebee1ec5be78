"""net.dad: a second machine holding this node's mesh address, found by real ARP probes between two network
namespaces joined by a veth pair; the expected MAC is read from the other namespace's own sysfs.  The gate
is then judged on a tree that records those real answers, as a snapshot would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, require
from rdmacheck import preflight
from rdmacheck.config import load_config
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import roce_tree

pytestmark = pytest.mark.netns

# the probe as gather calls it: the netdev's MAC and every local MAC from the node record (read_net, one root)
PROBE = ("import json, sys; from rdmacheck.preflight.facts.dad import probe; "
         "from rdmacheck.preflight.facts.net import read_net; from rdmacheck.preflight.root import HostRoot; "
         "net = read_net(HostRoot('/'), {}); macs = {n.address: k for k, n in net.items() if n.address}; "
         "print(json.dumps(probe(sys.argv[1], sys.argv[2:], net[sys.argv[1]].address, macs)))")


def _probe(pair, ns: str, dev: str, *addrs: str, drop_net_raw: bool = False) -> dict:
    cmd = ["ip", "netns", "exec", ns]
    if drop_net_raw:  # root without CAP_NET_RAW, as a container without it runs
        require(shutil.which("setpriv") is not None, "setpriv (util-linux) missing", "netns")
        cmd += ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"]
    p = subprocess.run([*cmd, sys.executable, "-c", PROBE, dev, *addrs], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    return json.loads(p.stdout)


def _judge(tmp_path, answer: dict | None, gate: str = "net.dad", master: str | None = None) -> dict:
    root = roce_tree(tmp_path / "root", netdev=answer["ifname"] if answer else "enP2p1s0f0np0",
                     addrs=[a + "/24" for a in answer["addresses"]] if answer else None,
                     env={"MASTER_ADDR": master} if master else None)
    if answer is not None:  # as a snapshot records its probes: the addresses and the ARP probe's answer
        nd = answer["ifname"]
        probes = {
            "addrs": {"kind": "addrs", "target": "", "elapsed_s": 0.0, "error": None,
                      "answer": {nd: {"ipv4": [a + "/24" for a in answer["addresses"]], "ipv6": []}}},
            f"dad:{nd}": {"kind": "dad", "target": nd, "answer": answer, "elapsed_s": answer["elapsed_s"],
                          "error": answer["error"]}}
        if master:  # MASTER_ADDR as an address: its resolution is itself
            probes[f"resolve:{master}"] = {"kind": "resolve", "target": master, "elapsed_s": 0.0, "error": None,
                                           "answer": {"addrs": [master], "error": None, "elapsed_s": 0.0}}
        (root / "rdmacheck/probes.json").write_text(json.dumps(probes))
    r = HostRoot(root)
    subnet = [f"subnet={master.rsplit('.', 1)[0]}.0/24"] if master else []   # the namespaces' mesh
    res = preflight.run(r, config=load_config(None, None, subnet, r.environ()), only={gate}).results
    (one,) = [x for x in res if x.id == gate]
    return one.to_dict()


def test_a_second_machine_on_the_address_is_found_by_its_mac_and_fails_the_gate(netns_pair, tmp_path):
    p = netns_pair
    clean = _probe(p, p.a, p.va, p.ip_a)
    assert clean["error"] is None and clean["duplicates"] == [] and clean["probes"] == 2, clean
    # the other namespace takes this node's address too
    p.ns(p.b, "ip", "addr", "add", f"{p.ip_a}/{p.prefix_len}", "dev", p.vb)
    other_mac = p.ns(p.b, "cat", f"/sys/class/net/{p.vb}/address").stdout.strip()
    dup = _probe(p, p.a, p.va, p.ip_a)
    assert dup["error"] is None and dup["mac"] != other_mac
    assert [(d["address"], d["mac"], d["op"]) for d in dup["duplicates"]] == [(p.ip_a, other_mac, "reply")], dup
    assert dup["duplicates"][0]["local_netdev"] is None   # not one of this namespace's netdevs

    # rename the probed netdev's record to the tree's netdev: the gate judges the real answers
    for answer, status in ((clean, "pass"), (dup, "fail")):
        rec = dict(answer, ifname="enP2p1s0f0np0")
        r = _judge(tmp_path / status, rec)
        assert r["status"] == status, r
        assert "judged from the recorded probe answer" in r["observed"], r   # a replay says so
        if status == "fail":
            assert other_mac in r["observed"] and p.ip_a in r["observed"], r
        # this node is the head (MASTER_ADDR is its own address): with a second machine on that address,
        # net.peer must not pass it as "the head" -- two nodes claim the head's address
        peer = _judge(tmp_path / f"peer-{status}", rec, "net.peer", master=p.ip_a)
        role = next((s for s in peer["details"]["steps"] if s["step"] == "role"), None)
        assert "(head)" in next(s for s in peer["details"]["steps"] if s["step"] == "route")["observed"], peer
        if status == "pass":
            assert role is None and peer["status"] == "pass", peer
        else:
            assert peer["status"] == "fail" and role["status"] == "fail", peer
            assert other_mac in role["observed"] and "two nodes claim the head's address" in role["observed"], role


def test_without_a_raw_socket_the_gate_is_not_judged_and_never_passes(netns_pair, tmp_path):
    p = netns_pair
    ans = _probe(p, p.a, p.va, p.ip_a, drop_net_raw=True)
    assert ans["error"] and "CAP_NET_RAW" in ans["error"], ans
    r = _judge(tmp_path, dict(ans, ifname="enP2p1s0f0np0"))
    assert r["status"] == "skip" and "CAP_NET_RAW" in r["observed"], r
    # a record without the probe (an older snapshot): not judged either
    r = _judge(tmp_path / "old", None)
    assert r["status"] == "skip" and "not judged" in r["observed"], r
    assert "judged from the recorded" not in r["observed"], r   # nothing was judged: no such claim (issue E4)
