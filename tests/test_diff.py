"""rdmacheck diff and report --baseline, on real inputs.

* two real sysfs captures (../shared/captures/sysfs): the changed facts are derived from the captures' own
  files (read raw through HostRoot, the one read layer), and the changed verdicts from `rdmacheck preflight
  --root` on each capture;
* the committed soft-RoCE snapshot against a copy with one MTU file changed;
* the soft-RoCE guest's own evidence before and after its MTU change (the `guest` fixture), judged against
  the guest's ibv_devinfo output.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from rdmacheck.report.diff import flatten
from rdmacheck.preflight.root import HostRoot

SNAPSHOT = REPO / "tests" / "data" / "softroce-snapshot.tar.gz"
CAP_A, CAP_B = "hwloc-32em64t-mlx4", "node_exporter"


def _diff(tmp_path: Path, a, b, *extra):
    js = tmp_path / "d.json"
    p = run_cli("diff", str(a), str(b), "--json", str(js), *extra, timeout=180)
    doc = json.loads(js.read_text()) if js.exists() else None
    return p, doc


def _rows(doc) -> list[dict]:
    return [r for rows in doc["groups"].values() for r in rows]


def test_flatten_names_groups_and_identity():
    f = flatten({"ports": [{"port": "mlx5_0:1", "active_mtu": 4096, "gid": {"gid": "fe80::1", "type": "RoCE v2"}}],
                 "netdevs": {"eth0": {"mtu": 9000, "address": "aa:bb", "ipv4": ["10.0.0.1/24"]}},
                 "nccl_version": "2.28.9", "driver_version": "580.1", "rdma_devices": ["b", "a"]})
    assert f["ports[mlx5_0:1].active_mtu"].value == 4096 and f["ports[mlx5_0:1].active_mtu"].group == "fabric"
    assert f["ports[mlx5_0:1].gid.type"].relevant and not f["ports[mlx5_0:1].gid.gid"].relevant
    assert not f["netdevs.eth0.address"].relevant and not f["netdevs.eth0.ipv4"].relevant
    assert f["nccl_version"].group == "software" and f["driver_version"].group == "GPU"
    assert f["rdma_devices"].value == '["a", "b"]'  # lists compare sorted, shown as JSON


def test_dotted_netdev_names_stay_one_record_and_the_bootstrap_address_is_identity():
    """Issue 26: a VLAN netdev ``mesh0.100`` was split into ``netdevs.mesh0`` + ``100.mtu``, and two healthy
    nodes differed in ``bootstrap.addr_len`` (each node's own address with its prefix)."""
    a = flatten({"netdevs": {"mesh0.100": {"mtu": 1500}, "mesh0": {"mtu": 9000}},
                 "bootstrap": {"ifname": "mesh0", "addr": "192.168.100.1", "addr_len": "192.168.100.1/24"}})
    assert set(a) >= {"netdevs[mesh0.100].mtu", "netdevs.mesh0.mtu"} and a["netdevs[mesh0.100].mtu"].group == "fabric"
    assert not a["bootstrap.addr_len"].relevant and a["bootstrap.ifname"].relevant
    b = flatten({"netdevs": {"mesh0": {"mtu": 9000}},
                 "bootstrap": {"ifname": "mesh0", "addr": "192.168.100.2", "addr_len": "192.168.100.2/24"}})
    from rdmacheck.report.diff import _one_sided
    # the VLAN present on one node only is one record, named whole
    assert _one_sided(a, b) == {"netdevs[mesh0.100].mtu": "netdevs[mesh0.100]"}


def test_evidence_against_its_own_snapshot_is_the_same(tmp_path):
    """Issue 26 E8: evidence read from its file against the same snapshot judged now reported drift in
    ``expect.latency`` (a list of lists on one side, of tuples on the other)."""
    ev = tmp_path / "ev.json"
    p = run_cli("preflight", "--root", str(SNAPSHOT), "--json", str(ev))
    assert ev.is_file(), p.stdout + p.stderr
    p, doc = _diff(tmp_path, ev, SNAPSHOT)
    assert p.returncode == 0 and doc["verdict"] == "same" and doc["changed"] == [], p.stdout


def _unpack(dest: Path) -> Path:
    with tarfile.open(SNAPSHOT) as t:
        t.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(dest)
    return dest


def test_identical_inputs_exit_0(tmp_path):
    node = _unpack(tmp_path / "n")
    p, doc = _diff(tmp_path, SNAPSHOT, node)          # the tarball and its unpacked copy: one node, twice
    assert p.returncode == 0, p.stdout + p.stderr
    assert doc["verdict"] == "same" and doc["changed"] == []
    ev = REPO / "tests" / "data" / "softroce-preflight.json"
    p, doc = _diff(tmp_path, ev, ev)
    assert p.returncode == 0 and doc["changed"] == [] and "SAME" in p.stdout


def test_snapshot_mtu_change_names_exactly_the_changed_facts(tmp_path):
    a, b = _unpack(tmp_path / "a"), _unpack(tmp_path / "b")
    root = HostRoot(str(b))
    # the port whose GID 1 sits on a netdev: the snapshot's own gid_attrs file names it
    dev = "roceP2p1s0f0"
    netdev = root.read(f"/sys/class/infiniband/{dev}/ports/1/gid_attrs/ndevs/1").strip()
    mtu_file = (b / "sys" / "class" / "net" / netdev).resolve() / "mtu"
    old = int(mtu_file.read_text())
    mtu_file.write_text("1500\n")
    p, doc = _diff(tmp_path, a, b)
    assert p.returncode == 1, p.stdout + p.stderr
    assert set(doc["changed"]) == {f"netdevs.{netdev}.mtu", f"ports[{dev}:1].netdev_mtu", "gate rdma.mtu"}, doc["changed"]
    row = {r["name"]: r for r in _rows(doc)}
    assert (row[f"netdevs.{netdev}.mtu"]["a"], row[f"netdevs.{netdev}.mtu"]["b"]) == (old, 1500)
    assert row["gate rdma.mtu"]["b"] == "fail" and row["gate rdma.mtu"]["group"] == "fabric"
    # differences first in the text, grouped
    out = p.stdout
    assert out.index("gate-relevant differences") < out.index("DIFFERS")
    # the HTML report shows the same, given the baseline
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    for src, dst in ((a, pa), (b, pb)):
        run_cli("preflight", "--root", str(src), "-q", "--json", str(dst), timeout=120)
    html = tmp_path / "r.html"
    r = run_cli("report", str(pb), "--baseline", str(pa), "-o", str(html), timeout=120)
    assert r.returncode in (0, 1), r.stderr
    page = html.read_text()
    assert 'id="changed-since"' in page and "3 gate-relevant difference(s)" in page
    assert f"netdevs.{netdev}.mtu" in page and "ports[roceP2p1s0f0:1].netdev_mtu" in page


def _read(root: HostRoot, path: str):
    v = root.read(path)
    return None if v is None else v.strip()


def _expected_from_files(a: HostRoot, b: HostRoot) -> tuple[set[str], set[tuple[str, str]]]:
    """Changed fact names derivable from raw files, and the (port, field) pairs whose value is derived
    (netdev, MTU of that netdev, GID selection) and checked against the files separately."""
    exp: set[str] = set()
    devs = [sorted(r.listdir("/sys/class/infiniband")) for r in (a, b)]
    if devs[0] != devs[1]:
        exp.add("rdma_devices")

    def ports(r):
        return {f"{d}:{p}" for d in r.listdir("/sys/class/infiniband") for p in r.listdir(f"/sys/class/infiniband/{d}/ports")}

    def netdevs(r):
        return {n for n in r.listdir("/sys/class/net") if n != "lo" and r.is_dir(f"/sys/class/net/{n}")}

    pa, pb = ports(a), ports(b)
    exp |= {f"ports[{p}]" for p in pa ^ pb}
    na, nb = netdevs(a), netdevs(b)
    exp |= {f"netdevs.{n}" for n in na ^ nb}
    for p in pa & pb:
        d, n = p.split(":")
        base = f"/sys/class/infiniband/{d}"
        files = {"fw_ver": f"{base}/fw_ver", "rate": f"{base}/ports/{n}/rate", "link_layer": f"{base}/ports/{n}/link_layer"}
        for field, path in files.items():
            if _read(a, path) != _read(b, path):
                exp.add(f"ports[{p}].{field}")
        st = [(_read(r, f"{base}/ports/{n}/state") or "").split(":")[-1].strip() for r in (a, b)]
        if st[0] != st[1]:
            exp.add(f"ports[{p}].state")
    for n in na & nb:
        for field, fname in (("mtu", "mtu"), ("operstate", "operstate"), ("carrier", "carrier"), ("type", "type"),
                             ("speed_mbps", "speed")):
            if _read(a, f"/sys/class/net/{n}/{fname}") != _read(b, f"/sys/class/net/{n}/{fname}"):
                exp.add(f"netdevs.{n}.{field}")
    return exp, {(p, f) for p in pa & pb for f in ("netdev", "netdev_mtu", "active_mtu", "active_mtu_source", "gid_index")}


def test_two_real_captures_name_exactly_the_changed_facts(captures, tmp_path):
    ca, cb = captures / "sysfs" / CAP_A, captures / "sysfs" / CAP_B
    p, doc = _diff(tmp_path, ca, cb)
    assert p.returncode == 1, p.stdout + p.stderr
    facts_changed = {n for n in doc["changed"] if not n.startswith("gate ")}
    ra, rb = HostRoot(str(ca)), HostRoot(str(cb))
    expected, derived = _expected_from_files(ra, rb)
    # the port facts the gates derive (which netdev, its MTU, the GID pick): consistent with the files
    row = {r["name"]: r for r in _rows(doc)}
    derived_changed = set()
    for port, field in derived:
        name = f"ports[{port}].{field}"
        if name in facts_changed:
            derived_changed.add(name)
        if field == "netdev_mtu" and name in row:
            for side, r in (("a", ra), ("b", rb)):
                nd = row[f"ports[{port}].netdev"][side]
                want = None if nd in (None, "(absent)") else int(_read(r, f"/sys/class/net/{nd}/mtu"))
                assert row[name][side] == want, (name, side)
    assert facts_changed == expected | derived_changed, (sorted(facts_changed ^ (expected | derived_changed)))
    assert "ports[mlx4_0:1].fw_ver" in expected and "ports[mlx4_0:1].rate" in expected  # the captures differ there
    # verdicts: exactly the gates whose status differs between the two captures' own preflight runs
    st = []
    for c in (ca, cb):
        js = tmp_path / f"{c.name}.json"
        run_cli("preflight", "--root", str(c), "-q", "--json", str(js), timeout=120)
        st.append({r["id"]: r["status"] for r in json.loads(js.read_text())["results"]})
    want = {f"gate {g}" for g in set(st[0]) | set(st[1]) if st[0].get(g) != st[1].get(g)}
    assert {n for n in doc["changed"] if n.startswith("gate ")} == want
    # the same capture twice: nothing differs
    p, doc = _diff(tmp_path, ca, ca)
    assert p.returncode == 0 and doc["changed"] == []


@pytest.mark.parametrize("make", ["missing", "not_json", "not_evidence", "bench", "plain_dir", "bad_tar"])
def test_bad_input_exit_2(tmp_path, make):
    good = REPO / "tests" / "data" / "softroce-preflight.json"
    bad = tmp_path / "bad"
    if make == "missing":
        bad = tmp_path / "nope.json"
    elif make == "not_json":
        bad = tmp_path / "x.json"
        bad.write_text("{not json")
    elif make == "not_evidence":
        bad = tmp_path / "x.json"
        bad.write_text('{"a": 1}')
    elif make == "bench":
        d = json.loads(good.read_text())
        d["kind"] = "bench"
        bad = tmp_path / "bench.json"
        bad.write_text(json.dumps(d))
    elif make == "plain_dir":
        bad.mkdir()
    elif make == "bad_tar":
        bad = tmp_path / "x.tar.gz"
        bad.write_bytes(b"not a tarball")
    p = run_cli("diff", str(good), str(bad), timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith("rdmacheck: error:") and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_guest_evidence_before_and_after_the_mtu_change(guest, tmp_path):
    """The guest's own evidence: preflight/pass.json (MTU 9000) and preflight/mtu1500.json (both netdevs at
    1500, rxe then runs active MTU 1024, as the guest's ibv_devinfo says)."""
    import re

    before, after = guest.dir / "preflight" / "pass.json", guest.dir / "preflight" / "mtu1500.json"
    p, doc = _diff(tmp_path, before, after)
    assert p.returncode == 1, p.stdout + p.stderr
    good = re.search(r"active_mtu:\s+(\d+)", guest.text("facts/ibv_devinfo_v.txt")).group(1)
    low = re.search(r"active_mtu:\s+(\d+)", guest.text("facts/ibv_devinfo_mtu1500.txt")).group(1)
    assert good != low
    ev = json.loads(before.read_text())
    port = ev["context"]["facts"]["ports"][0]
    names = {f"netdevs.{n}.mtu" for n, d in ev["context"]["facts"]["netdevs"].items() if d.get("mtu") == 9000}
    names |= {f"ports[{port['port']}].netdev_mtu", f"ports[{port['port']}].active_mtu"}
    assert {n for n in doc["changed"] if not n.startswith("gate ")} == names, doc["changed"]
    # verdicts: exactly the gates whose status differs between the two files (rdma.mtu among them)
    st = [{r["id"]: r["status"] for r in json.loads(f.read_text())["results"]} for f in (before, after)]
    want = {f"gate {g}" for g in set(st[0]) | set(st[1]) if st[0].get(g) != st[1].get(g)}
    assert "gate rdma.mtu" in want and {n for n in doc["changed"] if n.startswith("gate ")} == want
    row = {r["name"]: r for r in _rows(doc)}
    am = row[f"ports[{port['port']}].active_mtu"]
    assert (str(am["a"]), str(am["b"])) == (good, low)
    p, doc = _diff(tmp_path, before, before)
    assert p.returncode == 0 and doc["changed"] == []
