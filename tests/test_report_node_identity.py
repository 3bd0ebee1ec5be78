"""(issue 26) The report merged two machines with one host name (cloned VMs are often all "vm"): the second
node's gates silently replaced the first's.  Evidence now records a node id (/etc/machine-id, else the boot
id) and the report keeps the two apart."""

from __future__ import annotations

import json

from conftest import REPO
from rdmacheck.cli import main

SOFTROCE = json.loads((REPO / "tests" / "data" / "softroce-preflight.json").read_text())


def _doc(node_id: str | None, failing: bool) -> dict:
    d = json.loads(json.dumps(SOFTROCE))
    d["host"] = "vm"
    d["context"]["node_id"] = node_id
    d["results"] = [r for r in d["results"] if r["status"] == "pass"]
    if failing:
        d["results"].append({"id": "rdma.port", "status": "fail", "observed": "roceP2p1s0f0:1 DOWN"})
    d["status"] = "fail" if failing else "pass"
    return d


def _report(tmp_path, capsys, docs) -> tuple[int, str]:
    files = []
    for i, d in enumerate(docs):
        f = tmp_path / f"n{i}.json"
        f.write_text(json.dumps(d))
        files.append(str(f))
    rc = main(["report", *files, "-o", str(tmp_path / "r.html")])
    return rc, capsys.readouterr().out


def test_two_machines_with_one_host_name_stay_apart(tmp_path, capsys):
    # the failing node first, the passing one later: merged by host name, the later one replaced the failure
    bad, good = _doc("3f2a91c0aa" + "0" * 22, True), _doc("77c1d2e3bb" + "0" * 22, False)
    good["time"] = "2099-01-01T00:00:00+00:00"
    rc, out = _report(tmp_path, capsys, [bad, good])
    assert rc == 1 and out.startswith("FAIL"), out
    assert "vm (machine 3f2a91c0)" in out and "2 node" in out, out


def test_one_machine_in_two_files_is_still_one_node(tmp_path, capsys):
    nid = "3f2a91c0aa" + "0" * 22
    rc, out = _report(tmp_path, capsys, [_doc(nid, False), _doc(nid, False), _doc(None, False)])
    assert rc == 0 and "All 1 node(s) passed" in out, out


def test_live_evidence_records_the_node_id(tmp_path, capsys):
    from sysfs_builder import roce_tree

    tree = roce_tree(tmp_path / "t")
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    js = tmp_path / "ev.json"
    main(["preflight", "--root", str(tree), "--json", str(js)])
    capsys.readouterr()
    assert json.loads(js.read_text())["context"]["node_id"] == "0123456789abcdef0123456789abcdef"
