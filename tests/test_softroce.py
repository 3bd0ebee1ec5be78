"""Integration suite on real soft-RoCE (rdma_rxe) devices inside a QEMU guest.

Nothing is mocked here: the guest runs Debian's stock kernel with rdma_rxe, the devices and netdevs are
named as on the reference cluster (roceP2p1s0f0 on enP2p1s0f0np0, a veth pair whose peer carries a
second rxe, roceP2p1s0f1), and the real ``rdmacheck preflight`` / ``snapshot`` run there with this
checkout and this Python.  pyverbs, perftest and the kernel's counters are the real ones.

One boot (~30 s of emulated CPU, more when the machine is busy) runs every scenario
(tests/softroce/session.sh) and leaves its evidence in a folder; the tests below judge those files.
Set up with .ci/softroce-setup.sh; see docs/softroce.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import REPO, require, run_cli
from rdmacheck.facts import counters as C
from rdmacheck.nodefacts import LIVE_ONLY
from rdmacheck.root import HostRoot

pytestmark = pytest.mark.softroce

ENVFILE = REPO / "tests" / "softroce" / "reference.env"

HCA, PEER_HCA = "roceP2p1s0f0", "roceP2p1s0f1"
NETDEV, PEER_NETDEV = "enP2p1s0f0np0", "enP2p1s0f1np1"
CORE_GATES = ("rdma.devices", "rdma.port", "rdma.netdev", "rdma.gid", "rdma.mtu")
# Gates whose verdict comes from a live probe: judged on a replay from the snapshot's recorded answers.
LIVE_ONLY_GATES = tuple(LIVE_ONLY)


# ---------------------------------------------------------------- the devices themselves


def test_devices_named_as_on_reference_cluster(guest):
    assert guest.text("facts/setup.rc").strip() == "0"
    links = guest.text("facts/rdma_link.txt")
    assert f"link {HCA}/1 state ACTIVE physical_state LINK_UP netdev {NETDEV}" in links
    assert f"link {PEER_HCA}/1 state ACTIVE physical_state LINK_UP netdev {PEER_NETDEV}" in links


def test_pyverbs_reads_active_mtu_4096_for_real(guest, tmp_path):
    # rxe has no active_mtu in sysfs: only verbs knows it.  The snapshot stores what pyverbs said in
    # the guest (the "verbs" probe of rdmacheck/probes.json); ibv_devinfo (C, libibverbs) is the independent witness.
    assert guest.rc("snapshot") in (0, 1), guest.text("snapshot.out")
    with tarfile.open(guest.dir / "snapshot.tar.gz") as tar:
        verbs = json.load(tar.extractfile("rdmacheck/probes.json"))["verbs"]["answer"]
    assert verbs["available"] is True, verbs
    port = verbs["devices"][HCA]["ports"]["1"]
    assert port["active_mtu"] == 4096 and port["max_mtu"] == 4096
    assert port["state"] == 4 and port["link_layer"] == "Ethernet"
    assert port["gid_tbl_len"] == 1024
    assert verbs["devices"][HCA]["fw_version"] == "0.0.0"  # while sysfs fw_ver is empty
    assert re.search(r"active_mtu:\s+4096 \(5\)", guest.text("facts/ibv_devinfo_v.txt"))
    assert "GID[  1]:\t\t::ffff:192.168.100.1, RoCE v2" in guest.text("facts/ibv_devinfo_v.txt")
    # and drops to 1024 at netdev MTU 1500
    assert re.search(r"active_mtu:\s+1024 \(3\)", guest.text("facts/ibv_devinfo_mtu1500.txt"))


# ---------------------------------------------------------------- preflight scenarios


def test_good_state_core_gates_pass(guest):
    st = guest.statuses("pass")
    for gate in CORE_GATES:
        assert st[gate] == "pass", (gate, guest.result("pass", gate))
    gid = guest.result("pass", "rdma.gid")
    port = next(p for p in guest.evidence("pass")["context"]["facts"]["ports"] if p["port"] == f"{HCA}:1")
    # NCCL's own GID walk picks index 1 (the IPv4-mapped RoCE v2 GID), not the fe80 one at 0
    assert port["gid"]["predicted"] == 1 and port["gid"]["ipv4"] == "192.168.100.1"
    assert "[1] 192.168.100.1" in gid["observed"]
    # the active MTU came from pyverbs (rxe has no active_mtu in sysfs), not derived
    assert port["active_mtu"] == 4096 and port["active_mtu_source"] == "verbs"
    assert port["netdev"] == NETDEV and port["netdev_mtu"] == 9000


def test_memlock_fails_in_guest(guest):
    # The guest inherits this machine's 8 MiB hard memlock limit: a real failing gate.
    assert guest.text("facts/memlock_hard.txt").strip() == "8192"
    r = guest.result("pass", "limits.memlock")
    assert r["status"] == "fail" and "8 MiB" in r["observed"]
    assert guest.rc("preflight/pass") == 1  # any failing gate -> exit 1


def test_mtu_1500_fails_rdma_mtu(guest):
    st = guest.statuses("mtu1500")
    assert st["rdma.mtu"] == "fail"
    assert st["rdma.devices"] == "pass" and st["rdma.gid"] == "pass"  # only the MTU changed
    obs = guest.result("mtu1500", "rdma.mtu")["observed"]
    assert "1500" in obs and "1024" in obs
    assert guest.rc("preflight/mtu1500") == 1


def test_no_ipv4_address_fails_rdma_gid(guest):
    assert guest.text("facts/gids_noip.txt").count("0000:0000:0000:0000:0000:0000:0000:0000") >= 1
    st = guest.statuses("noip")
    assert st["rdma.gid"] == "fail"
    assert st["rdma.devices"] == "pass" and st["rdma.mtu"] == "pass"
    assert guest.rc("preflight/noip") == 1


def test_missing_hca_fails_rdma_devices(guest):
    r = guest.result("badhca", "rdma.devices")
    assert r["status"] == "fail" and "mlx5_9" in r["observed"]
    assert HCA in r["remedy"]  # the remedy names the devices that do exist
    assert guest.evidence("badhca")["context"]["config"]["env_sources"]["NCCL_IB_HCA"] == "process"
    assert guest.rc("preflight/badhca") == 1


# ---------------------------------------------------------------- snapshot replay outside the guest


def test_snapshot_replays_identical_verdicts(guest, tmp_path):
    assert guest.rc("snapshot") == 0, guest.text("snapshot.out")
    tarball = guest.dir / "snapshot.tar.gz"
    dest = tmp_path / "node"
    dest.mkdir()
    subprocess.run(["tar", "xzf", str(tarball), "-C", str(dest)], check=True, timeout=60)  # as the README does
    assert (dest / "sys/class/infiniband" / HCA).exists()
    out = tmp_path / "replay.json"
    env = {k: "" for k in os.environ if k.startswith(("NCCL_", "GLOO_", "MASTER_", "RAY_"))}
    p = run_cli("preflight", "--root", str(dest), "--env", str(ENVFILE), "--json", str(out), env=env,
                timeout=120, cwd=tmp_path)
    assert p.returncode == guest.rc("preflight/pass"), p.stdout + p.stderr
    replay_results = {r["id"]: r for r in json.loads(out.read_text())["results"]}
    replay = {k: r["status"] for k, r in replay_results.items()}
    live = guest.statuses("pass")
    assert set(replay) == set(live)
    # Live probes (DNS, route, ping, the bind test) are answered from the snapshot's record: such a gate
    # says so.  Every gate gives the same verdict from the snapshot as it gave live.
    for gate in LIVE_ONLY_GATES:
        assert "live-only" in replay_results[gate]["observed"], replay_results[gate]
    assert replay == live, {k: (live[k], replay[k]) for k in live if live[k] != replay[k]}
    assert all(replay[g] == "pass" for g in CORE_GATES)
    # and the facts the report compares are the same
    live_ports = guest.evidence("pass")["context"]["facts"]["ports"]
    replay_ports = json.loads(out.read_text())["context"]["facts"]["ports"]
    assert replay_ports == live_ports


# ---------------------------------------------------------------- counter math (issue 5)


def _perftest_row(text: str) -> tuple[int, int, float]:
    """(#bytes, #iterations, BW average Gb/s) from ib_write_bw's result row."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("#bytes") and i + 1 < len(lines):
            f = lines[i + 1].split()
            if len(f) >= 4 and f[0].isdigit():
                return int(f[0]), int(f[1]), float(f[3])
    raise AssertionError(f"no ib_write_bw result row in:\n{text[-2000:]}")


def test_ib_write_bw_moves_counters_by_expected_amount(guest):
    n, size = (int(x) for x in guest.text("counters/params.txt").split())
    assert size % 4096 == 0  # every RoCE packet then carries a full 4096-byte payload (the math below)
    client = guest.text("counters/client.txt")
    assert guest.rc("counters/client") == 0, client
    assert guest.rc("counters/server") == 0, guest.text("counters/server.txt")
    b, iters, gbps = _perftest_row(client)
    # the exit code alone proves nothing: without policy routing both ends exit 0 with 0 iterations
    assert (b, iters) == (size, n) and gbps > 0

    before = C.read_sample(HostRoot(guest.dir / "counters/before"))
    after = C.read_sample(HostRoot(guest.dir / "counters/after"))
    d = C.sample_delta(before, after)
    req, resp = d["ports"][f"{PEER_HCA}/1"], d["ports"][f"{HCA}/1"]  # client (requester), server (responder)

    # RDMA writes of `size` bytes at active MTU 4096: ceil(size/4096) request packets each.
    data_pkts = n * math.ceil(size / 4096)
    sent = req["tx_packets"]                       # hw_counters/sent_pkts of the client's rxe
    retransmitted = sent - data_pkts
    # -u 20 (4 s QP timeout) makes retransmissions rare; a busy host may still cause a few
    assert 0 <= retransmitted <= data_pkts // 10, (sent, data_pkts, req["hw_counters"])
    # nothing is lost on a veth: every packet one rxe sent, the other received, both ways
    assert resp["rx_packets"] == sent
    assert req["rx_packets"] == resp["tx_packets"]
    acks = resp["tx_packets"]
    assert 0 < acks <= sent  # the responder only ACKs (coalesced)
    assert req["hw_counters"]["retry_exceeded_err"] == 0
    # rxe has no PMA data counters: bytes are None there, never a made-up number
    assert req["tx_bytes"] is None and resp["rx_bytes"] is None

    # The client's netdev carries the bytes: per RoCE v2 packet Ethernet 14 + IPv4 20 + UDP 8 + BTH 12 +
    # ICRC 4 = 58 bytes of headers around the 4096 payload, plus a 16-byte RETH on the first packet
    # of each write (retransmitted first packets carry it again).  Anything else on the veth is a few
    # frames (ARP; perftest's TCP exchange goes through lo).
    tx = d["netdevs"][PEER_NETDEV]["tx_bytes"]
    other_frames = d["netdevs"][PEER_NETDEV]["tx_packets"] - sent
    assert 0 <= other_frames <= 16, other_frames
    roce = sent * (4096 + 58)
    low = roce + 16 * n
    high = roce + 16 * (n + retransmitted) + other_frames * (9000 + 14)
    assert low <= tx <= high, (tx, low, high)
    assert tx >= n * size  # at least the payload the benchmark says it wrote
    assert d["netdevs"][NETDEV]["rx_bytes"] == tx  # a veth pair: what one end sends the other receives
    # The other way only ACKs/NAKs: headers + AETH 4 = 62-byte frames (seen: 1000 writes -> 1000 ACKs,
    # 62084 bytes = 1000 x 62 + two 42-byte ARP frames).
    back = d["netdevs"][NETDEV]
    back_other = back["tx_packets"] - acks
    assert 0 <= back_other <= 16
    assert acks * 62 <= back["tx_bytes"] <= acks * 62 + back_other * (9000 + 14), (back, acks)
