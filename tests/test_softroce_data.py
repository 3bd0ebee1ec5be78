"""The committed outputs of a real soft-RoCE guest run, checked without booting the guest.

tests/data/softroce-preflight.json and tests/data/softroce-snapshot.tar.gz come from one session of
tests/softroce/session.sh (kernel 6.1.0-57-amd64, rdma_rxe, devices named as on the reference
cluster, 2026-12-01, in the NodeFacts format: the evidence carries context.node_facts, the snapshot
rdmacheck/probes.json): the evidence of the passing scenario and the snapshot taken in the same state.
The report uses the evidence; here the snapshot must still replay to the same verdicts.
"""

from __future__ import annotations

import json

from conftest import REPO, RULE_CHANGES, run_cli
from rdmacheck.evidence.model import Evidence
from rdmacheck.preflight.registry import live_only
from rdmacheck.preflight.root import unpack

LIVE_ONLY = live_only()

DATA = REPO / "tests" / "data"
ENVFILE = REPO / "tests" / "softroce" / "reference.env"
CORE_GATES = ("rdma.devices", "rdma.port", "rdma.netdev", "rdma.gid", "rdma.mtu")


def _evidence() -> Evidence:
    return Evidence.from_dict(json.loads((DATA / "softroce-preflight.json").read_text()))


def test_committed_evidence_is_a_real_guest_run():
    ev = _evidence()
    st = {r.id: r.status.value for r in ev.results}
    assert all(st[g] == "pass" for g in CORE_GATES) and st["limits.memlock"] == "fail"
    assert ev.host == "virtme-ng" and ev.kind == "preflight"
    port = ev.context["facts"]["ports"][0]
    # the pick is where that run's own GID table (in the snapshot taken beside it) had the IPv4 RoCE v2 GID
    assert port["port"] == "roceP2p1s0f0:1" and port["gid"]["predicted"] == _snapshot_ipv4_gid_index(port["gid"]["ipv4"])


def _snapshot_ipv4_gid_index(ip: str) -> int:
    import tarfile

    a, b, c, d = (int(x) for x in ip.split("."))
    want = f"0000:0000:0000:0000:0000:ffff:{a:02x}{b:02x}:{c:02x}{d:02x}"
    base = "sys/devices/virtual/infiniband/roceP2p1s0f0/ports/1"  # where sys/class/infiniband/X links
    with tarfile.open(DATA / "softroce-snapshot.tar.gz") as tar:
        def read(name):
            try:
                return tar.extractfile(f"{base}/{name}").read().decode().strip()
            except KeyError:
                return ""
        hits = [int(m.name.rsplit("/", 1)[1]) for m in tar.getmembers() if m.name.startswith(f"{base}/gids/")
                and tar.extractfile(m).read().decode().strip() == want]
        hits = [i for i in hits if read(f"gid_attrs/types/{i}") == "RoCE v2"]
    assert len(hits) == 1, hits
    return hits[0]
    assert port["active_mtu"] == 4096 and port["active_mtu_source"] == "verbs"


def test_committed_snapshot_replays_committed_verdicts(tmp_path):
    unpack(DATA / "softroce-snapshot.tar.gz", tmp_path / "node")  # the product's safe unpacker
    out = tmp_path / "replay.json"
    p = run_cli("preflight", "--root", str(tmp_path / "node"), "--env", str(ENVFILE), "--json", str(out),
                timeout=120, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr  # memlock (8 MiB) fails there, as live
    results = {r["id"]: r for r in json.loads(out.read_text())["results"]}
    replay = {k: r["status"] for k, r in results.items()}
    live = {r.id: r.status.value for r in _evidence().results}
    # rules changed since the evidence was recorded: the same facts, today's verdict (conftest.RULE_CHANGES)
    for k, (then, now, _why) in RULE_CHANGES.items():
        if live.get(k) == then:
            assert replay[k] == now, results[k]
            live[k] = now
    # every gate, the live-only ones too: the snapshot recorded the probe answers they judge
    assert {k: v for k, v in replay.items() if k in live} == live
    # gates newer than the snapshot find none of their facts in it: skip, never pass or fail
    assert {v for k, v in replay.items() if k not in live} <= {"skip"}
    for g in LIVE_ONLY:  # judged from a recorded answer says so; a skip judged nothing and claims nothing
        assert results[g]["details"].get("live_only") and \
            (("live-only" in results[g]["observed"]) == (results[g]["status"] != "skip")), results[g]
