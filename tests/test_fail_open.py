"""No PASS without a judged gate: reports of empty or relabelled evidence, and probes that did not answer.

(issue 26, "Fail-open") F1: ``report`` of preflight evidence with no results said PASS, exit 0.  F2: ``report``
ignored the document's own ``status`` and read a preflight body relabelled ``kind: bench``.  A ``dcb`` that did
not answer within its bound made rdma.pfc FAIL; it could not judge, which is neither PASS nor FAIL, and exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from rdmacheck.cli import main
from rdmacheck.evidence.model import Result, Status, exit_code

SOFTROCE = REPO / "tests" / "data" / "softroce-preflight.json"


def _doc(**change) -> dict:
    d = json.loads(SOFTROCE.read_text())
    d.update(change)
    return d


def _report(tmp_path: Path, doc: dict, capsys) -> tuple[int, str]:
    f = tmp_path / "ev.json"
    f.write_text(json.dumps(doc))
    rc = main(["report", str(f), "-o", str(tmp_path / "r.html"), "--junit", str(tmp_path / "j.xml")])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_softroce_evidence_passes_as_before(tmp_path, capsys):
    d = _doc()
    d["results"] = [r for r in d["results"] if r["status"] in ("pass", "warn", "skip")]
    d["status"] = "warn" if any(r["status"] == "warn" for r in d["results"]) else "pass"
    rc, out = _report(tmp_path, d, capsys)
    assert rc == 0 and out.startswith("PASS"), out


@pytest.mark.parametrize("status", ["pass", "fail"])
def test_f1_preflight_evidence_without_results_is_not_pass(tmp_path, capsys, status):
    rc, out = _report(tmp_path, _doc(results=[], status=status), capsys)
    assert rc == 1 and not out.startswith("PASS") and "holds no gate result" in out, out


def test_f2_document_status_worse_than_its_results_is_honoured(tmp_path, capsys):
    d = _doc()
    d["results"] = [r for r in d["results"] if r["status"] == "pass"]
    d["status"] = "fail"   # e.g. a file cut down to its passing gates
    rc, out = _report(tmp_path, d, capsys)
    assert rc == 1 and out.startswith("FAIL") and "says status 'fail'" in out, out


def test_f2_unknown_document_status_is_refused(tmp_path, capsys):
    rc, out = _report(tmp_path, _doc(status="green"), capsys)
    assert rc == 2 and "field 'status'" in out, out


def test_f2_preflight_body_relabelled_bench_is_refused(tmp_path, capsys):
    before = (tmp_path / "r.html")
    before.write_text("old")
    rc, out = _report(tmp_path, _doc(kind="bench"), capsys)
    assert rc == 2 and "kind was changed" in out, out
    assert before.read_text() == "old"
    # the facts removed, the preflight gates still give it away
    d = _doc(kind="bench")
    d["context"] = {}
    rc, out = _report(tmp_path, d, capsys)
    assert rc == 2 and "is not a bench gate" in out, out


# ------------------------------------------------------------------ a probe that did not answer

def _pfc_tree(tmp: Path, timeout_on: str) -> Path:
    tmp.joinpath("sys/class/infiniband/roceP2p1s0f0/device/net/enP2p1s0f0np0").mkdir(parents=True)
    tmp.joinpath("sys/class/infiniband/roceP2p1s0f0/ports/1").mkdir(parents=True)
    (tmp / "rdmacheck").mkdir()
    late = {"json": None, "error": f"dcb -j {timeout_on} show dev enP2p1s0f0np0 did not answer within 3 s",
            "unsupported": False, "timeout": True}
    app = late if timeout_on == "app" else {"json": {}, "error": None, "unsupported": False}
    pfc = late if timeout_on == "pfc" else {"json": {"prio_pfc": [True] + [False] * 7}, "error": None,
                                           "unsupported": False}
    (tmp / "rdmacheck/dcb.json").write_text(json.dumps({"enP2p1s0f0np0": {"app": app, "pfc": pfc}}))
    return tmp


@pytest.mark.parametrize("which", ["app", "pfc"])
def test_timed_out_dcb_could_not_judge(tmp_path, which):
    from rdmacheck.preflight.checks.pfc import gate_rdma_pfc
    from rdmacheck.config import Config
    from rdmacheck.config.profile import build_profile
    from rdmacheck.preflight.gather import gather
    from rdmacheck.preflight.root import HostRoot

    cfg = Config({"NCCL_IB_TC": "106"}, {}, None, build_profile())
    r = gate_rdma_pfc(gather(HostRoot(_pfc_tree(tmp_path, which)), cfg), cfg)[0]
    assert r.status is Status.SKIP and r.unjudged and "did not answer within 3 s" in r.observed, r
    assert r.observed.startswith("could not judge")
    assert exit_code([r]) == 1                                        # never exit 0
    assert exit_code([Result("x", Status.SKIP, observed="not applicable")]) == 0


def test_report_of_an_unjudged_gate_is_not_pass(tmp_path, capsys):
    d = _doc()
    d["results"] = [r for r in d["results"] if r["status"] == "pass"] + [
        {"id": "rdma.pfc", "status": "skip", "observed": "could not judge: dcb did not answer within 3 s",
         "details": {"unjudged": "dcb did not answer within 3 s"}}]
    d["status"] = "skip"
    rc, out = _report(tmp_path, d, capsys)
    assert rc == 1 and "rdma.pfc on" in out and "could not be judged" in out, out


# ------------------------------------------------------------------ the console shows foreign text, never obeys it

def test_terminal_escapes_from_the_env_are_shown_not_sent(tmp_path, capsys):
    from sysfs_builder import roce_tree

    env = tmp_path / "esc.env"
    env.write_text("NCCL_IB_HCA=\x1b[31mRED\x1b]0;title\x07\nNCCL_SOCKET_IFNAME=a\x1b[2Jb\n")
    tree = roce_tree(tmp_path / "t")
    for extra in ([], ["--verbose"]):
        main(["preflight", "--root", str(tree), "--env", str(env), *extra])
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out, out
        assert "\\x1b[31mRED" in out
    snap = tmp_path / "s"
    import shutil

    shutil.copytree(tree, snap)
    (snap / "rdmacheck").mkdir(exist_ok=True)
    (snap / "rdmacheck" / "host.json").write_text('{"host": "evil\\u001b]0;pwned\\u0007"}')
    main(["diff", str(tree), str(snap), "--env", str(env), "--all"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out, out


# ------------------------------------------------------------------ (E11) an unreadable port state is unknown

@pytest.mark.parametrize("how", ["junk", "empty", "dangling"])
def test_unreadable_port_state_is_not_judged_down(tmp_path, capsys, how):
    import os

    from sysfs_builder import roce_tree

    tree = roce_tree(tmp_path / "t", state="x\x00\x01garbage" if how == "junk" else "")
    state = tree / "sys/devices/virtual/infiniband/roceP2p1s0f0/ports/1/state"
    if how == "dangling":
        state.unlink()
        os.symlink(tmp_path / "nowhere", state)
    js = tmp_path / "ev.json"
    rc = main(["preflight", "--root", str(tree), "--only", "rdma.port", "--json", str(js)])
    capsys.readouterr()
    r = {x["id"]: x for x in json.loads(js.read_text())["results"]}["rdma.port"]
    assert r["status"] == "skip" and r["details"]["unjudged"] and "could not be read" in r["observed"], r
    assert "ip link set" not in r["remedy"] and rc == 1        # not "bring it up", and never exit 0


def test_a_port_really_down_still_fails(tmp_path, capsys):
    from sysfs_builder import roce_tree

    js = tmp_path / "ev.json"
    main(["preflight", "--root", str(roce_tree(tmp_path / "t", state="1: DOWN", phys="3: Disabled")),
          "--only", "rdma.port", "--json", str(js)])
    capsys.readouterr()
    assert {x["id"]: x for x in json.loads(js.read_text())["results"]}["rdma.port"]["status"] == "fail"


# ------------------------------------------------------------------ (E6) the README's --expect mtu=1500

def test_expect_mtu_1500_alone_passes_a_consistent_1500_node(tmp_path, capsys):
    from sysfs_builder import roce_tree

    tree = roce_tree(tmp_path / "t", mtu=1500)
    js = tmp_path / "ev.json"
    main(["preflight", "--root", str(tree), "--only", "rdma.mtu", "--expect", "mtu=1500", "--json", str(js)])
    capsys.readouterr()
    r = {x["id"]: x for x in json.loads(js.read_text())["results"]}["rdma.mtu"]
    assert r["status"] == "pass", r
    assert r["details"]["roceP2p1s0f0:1"]["expected_active_mtu"] == 1024
    # an explicit active MTU is still judged as given
    main(["preflight", "--root", str(tree), "--only", "rdma.mtu", "--expect", "mtu=1500", "--expect", "active_mtu=4096",
          "--json", str(js)])
    capsys.readouterr()
    assert {x["id"]: x for x in json.loads(js.read_text())["results"]}["rdma.mtu"]["status"] == "fail"


# ------------------------------------------------------------------ --help at 80 columns wraps on words

@pytest.mark.parametrize("command", ["", "preflight", "snapshot", "bench", "counters", "report", "launch", "cluster",
                                     "diff", "watch"])
def test_help_fits_80_columns_and_breaks_no_word(command, capsys, monkeypatch):
    import re

    from rdmacheck.cli import build_parser

    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser(command or None)
    if command:
        parser = parser._subparsers._group_actions[0].choices[command]
    text = parser.format_help()
    assert all(len(l) <= 80 for l in text.splitlines()), [l for l in text.splitlines() if len(l) > 80]
    # every word of the unwrapped help is still a whole word
    monkeypatch.setenv("COLUMNS", "1000")
    wide = (build_parser(command or None)._subparsers._group_actions[0].choices[command] if command
            else build_parser(None)).format_help()
    assert set(re.findall(r"\S+", text)) == set(re.findall(r"\S+", wide))
