"""Preflight on this real machine: the memlock gate fails for real, snapshots replay identically,
and the network readers see real veth pairs in namespaces the test creates."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tarfile

import pytest

from rdmacheck.preflight.root import unpack
from conftest import REPO, run_cli


def test_memlock_gate_fails_on_this_machine(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("this machine has an unlimited memlock hard limit: the gate has nothing to fail on")
    out = tmp_path / "ev.json"
    p = run_cli("preflight", "--only", "limits.memlock", "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    r = json.loads(out.read_text())["results"][0]
    assert r["id"] == "limits.memlock" and r["status"] == "fail"
    assert f"hard {hard // 1024 // 1024} MiB" in r["observed"] or f"hard {hard // 1024} KiB" in r["observed"]
    assert "unlimited" in r["remedy"]


def test_snapshot_replays_identical_verdicts(tmp_path):
    """live, snapshot, replay of the tarball itself: the same status for every gate (pci.acs included);
    the same observation for every gate but the live-only ones, which say how they were judged."""
    from rdmacheck.preflight.registry import LIVE_ONLY_NOTE, live_only
    LIVE_ONLY = live_only()

    snap = tmp_path / "s.tar.gz"
    live, replay = tmp_path / "live.json", tmp_path / "replay.json"
    a = run_cli("preflight", "--json", str(live))
    p = run_cli("snapshot", "-o", str(snap))
    assert p.returncode == 0 and "INCOMPLETE" not in p.stdout, p.stdout + p.stderr
    with tarfile.open(snap) as t:
        names = t.getnames()
        files = [m for m in t.getmembers() if m.isfile()]
    # the printout: file count, uncompressed and compressed size, each read back from the archive itself
    from rdmacheck.util.units import human_bytes

    raw, packed = sum(m.size for m in files), snap.stat().st_size
    assert f": {len(files)} files (" in p.stdout and f"{human_bytes(raw)} uncompressed, {human_bytes(packed)} compressed ({packed} bytes); " \
        in p.stdout, p.stdout
    # what the readers read is there: the limits through the /proc/self link, the net class, the PCI bus
    assert "proc/self" in names and any(n.startswith("proc/") and n.endswith("/limits") for n in names)
    assert "rdmacheck/probes.json" in names and any(n.startswith("sys/class/net/") for n in names)
    b = run_cli("preflight", "--root", str(snap), "--json", str(replay))
    assert a.returncode == b.returncode, b.stdout + b.stderr
    ra = {r["id"]: r for r in json.loads(live.read_text())["results"]}
    rb = {r["id"]: r for r in json.loads(replay.read_text())["results"]}
    assert len(ra) >= 19 and set(ra) == set(rb) and "pci.acs" in ra
    assert {k: r["status"] for k, r in ra.items()} == {k: r["status"] for k, r in rb.items()}
    for k in ra:
        if k in LIVE_ONLY:  # judged from a recorded answer says so; a skip judged nothing and claims nothing
            assert rb[k]["details"].get("live_only") and \
                ((LIVE_ONLY_NOTE in rb[k]["observed"]) == (rb[k]["status"] != "skip")), rb[k]
        else:
            assert ra[k]["observed"] == rb[k]["observed"], k


def test_corrupt_snapshot_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(Exception) as e:
        unpack(bad, tmp_path / "x")
    assert "cannot unpack snapshot" in str(e.value)


READ_NET = "import json; from rdmacheck.preflight.facts.net import read_net; from rdmacheck.preflight.root import HostRoot; " \
           "print(json.dumps({k: v.to_dict() for k, v in read_net(HostRoot('/')).items()}))"


@pytest.mark.netns
def test_net_reader_and_netdev_gate_on_real_veth(netns_pair):
    def facts():
        out = netns_pair.ns(netns_pair.a, sys.executable, "-c", READ_NET).stdout
        return json.loads(out)

    f = facts()
    va = f[netns_pair.va]
    assert va["mtu"] == 9000 and va["up"] and f"{netns_pair.ip_a}/24" in va["ipv4"]
    netns_pair.set_mtu(1500)
    assert facts()[netns_pair.va]["mtu"] == 1500
    env = f"PYTHONPATH={REPO}"
    ok = netns_pair.ns(netns_pair.a, "env", env, f"NCCL_SOCKET_IFNAME={netns_pair.va}", sys.executable, "-m",
                       "rdmacheck", "preflight", "--only", "rdma.netdev", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    netns_pair.ns(netns_pair.a, "ip", "link", "set", netns_pair.va, "down")
    bad = netns_pair.ns(netns_pair.a, "env", env, f"NCCL_SOCKET_IFNAME={netns_pair.va}", sys.executable, "-m",
                        "rdmacheck", "preflight", "--only", "rdma.netdev", check=False)
    assert bad.returncode == 1 and "down" in bad.stdout
