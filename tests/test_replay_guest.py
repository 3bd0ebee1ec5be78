"""Live vs replay vs re-judge on real rxe devices in the soft-RoCE guest.

In the guest the session runs `preflight --json preflight/pass.json` and `snapshot -o snapshot.tar.gz` in
the good state, and tests/softroce/scenarios/i12a-replay.sh runs `preflight --only rdma.devices`.
Here, on the host: `preflight --root snapshot.tar.gz` (the tarball itself) and `preflight --facts pass.json`
(as recorded, and with --expect mtu=1500). Expected values come from the guest's own live run and its own
facts (netdev MTU, ibv_devinfo).
"""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import REPO, run_cli, snapshot_probe_timed_out
from rdmacheck.preflight.registry import live_only
from test_softroce import good_state_indexes, ibv_devinfo_gids

LIVE_ONLY = live_only()

pytestmark = pytest.mark.softroce

ENVFILE = REPO / "tests" / "softroce" / "reference.env"
CORE = ("rdma.devices", "rdma.port", "rdma.netdev", "rdma.gid", "rdma.mtu")
# the host's own NCCL/Gloo/Ray variables must not leak into the replayed guest's configuration
CLEAN = {k: "" for k in os.environ if k.startswith(("NCCL_", "GLOO_", "MASTER_", "RAY_", "CUDA_", "GPU_"))}


def _by_id(ev: dict) -> dict[str, dict]:
    return {r["id"]: r for r in ev["results"]}


def test_guest_snapshot_tarball_replays_the_live_verdicts(guest, tmp_path):
    assert guest.rc("snapshot") == 0 and "INCOMPLETE" not in guest.text("snapshot.out"), guest.text("snapshot.out")
    out = tmp_path / "replay.json"
    p = run_cli("preflight", "--root", str(guest.dir / "snapshot.tar.gz"), "--env", str(ENVFILE),
                "--json", str(out), env=CLEAN, timeout=180, cwd=tmp_path)
    live_ev = guest.evidence("pass")
    live, replay = _by_id(live_ev), _by_id(json.loads(out.read_text()))
    assert p.returncode == guest.rc("preflight/pass"), p.stdout + p.stderr
    assert set(live) == set(replay) and len(live) >= 19
    # a probe that timed out while the snapshot was taken left nothing to judge: that gate may skip (said so)
    late = {k for k, r in replay.items() if snapshot_probe_timed_out(r) and live[k]["status"] != "skip"}
    assert not late & set(CORE), late
    assert {k: r["status"] for k, r in live.items() if k not in late} == \
        {k: r["status"] for k, r in replay.items() if k not in late}
    assert all(live[g]["status"] == "pass" for g in CORE)
    for k in live:
        if k in late:
            continue
        if k in LIVE_ONLY:  # judged from a recorded answer says so; a skip judged nothing and claims nothing
            assert ("live-only" in replay[k]["observed"]) == (replay[k]["status"] != "skip"), replay[k]
        else:
            assert replay[k]["observed"] == live[k]["observed"], (k, live[k]["observed"], replay[k]["observed"])
    # pyverbs answered in the guest; the replay uses that recorded answer (rxe has no active_mtu in sysfs)
    lf, rf = live_ev["context"]["node_facts"], json.loads(out.read_text())["context"]["node_facts"]
    assert rf["probes"]["verbs"]["source"] == "snapshot"
    assert rf["probes"]["verbs"]["answer"] == lf["probes"]["verbs"]["answer"]
    assert rf["selection"] == lf["selection"] and rf["ib"] == lf["ib"]
    assert re.search(r"active_mtu:\s+4096 \(5\)", guest.text("facts/ibv_devinfo_v.txt"))
    assert lf["selection"]["active_mtu"]["roceP2p1s0f0:1"] == [4096, "verbs"]


def test_guest_only_keeps_every_fact(guest):
    assert guest.rc("i12a/only") in (0, 1), guest.text("i12a/only.out")
    only = json.loads(guest.text("i12a/only.json"))
    a, b = guest.evidence("pass")["context"], only["context"]
    assert list(_by_id(only)) == ["rdma.devices"]
    assert a["facts"]["ports"] == b["facts"]["ports"]
    port = b["facts"]["ports"][0]
    assert port["port"] == "roceP2p1s0f0:1"
    # NCCL's pick on rxe: the IPv4-mapped RoCE v2 GID, at the index the guest's own GID table gives it (1, or
    # 2 when a second link-local entry came first in this boot), which ibv_devinfo lists there too
    want = good_state_indexes(guest, "roceP2p1s0f0", "192.168.100.1")
    assert port["gid_index"] in want, (port, want)
    listed = ibv_devinfo_gids(guest.text("facts/ibv_devinfo_v.txt"), "roceP2p1s0f0")
    assert listed.get(port["gid_index"]) == "::ffff:192.168.100.1, RoCE v2", listed
    assert port["active_mtu"] == 4096
    for key in ("ib", "selection", "port_netdevs", "peer", "bootstrap", "devfiles", "limits"):
        assert a["node_facts"][key] == b["node_facts"][key], key


def test_guest_facts_rejudge_reproduces_and_expect_flips_mtu(guest, tmp_path):
    ev = guest.dir / "preflight" / "pass.json"
    again, flipped = tmp_path / "again.json", tmp_path / "mtu1500.json"
    run_cli("preflight", "--facts", str(ev), "--json", str(again), env=CLEAN, cwd=tmp_path)
    run_cli("preflight", "--facts", str(ev), "--expect", "mtu=1500", "--json", str(flipped), env=CLEAN, cwd=tmp_path)
    live = _by_id(guest.evidence("pass"))
    a, f = _by_id(json.loads(again.read_text())), _by_id(json.loads(flipped.read_text()))
    assert {k: r["status"] for k, r in a.items()} == {k: r["status"] for k, r in live.items()}
    for k in live:
        if k not in LIVE_ONLY:
            assert a[k]["observed"] == live[k]["observed"], k
    changed = {k for k in live if f[k]["status"] != live[k]["status"]}
    assert changed == {"rdma.mtu"} and f["rdma.mtu"]["status"] == "fail"
    assert "MTU 9000 != 1500" in f["rdma.mtu"]["observed"]
