"""--isolate's bookkeeping without a Ray cluster: DURATION parsing, the validated index,
the quarantine list, and the command line's refusals (exit 2, one line).

The end-to-end proofs (a node slowed through a CPU cgroup, a node removed) are in
test_cluster_isolate_ray.py.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from rdmacheck.cluster import quarantine, validated
from rdmacheck.util.errors import UsageError


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                          ("1h30m", 5400), ("1.5h", 5400), (" 2m ", 120)])
def test_durations(text, seconds):
    assert validated.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "-5m", "nan", "NaNs", "inf", "infs", "1h-", "0s", "0h0m", "h", "1 h",
                                  "1h 30m", "m30", "2M", "1H", "9" * 400 + "s", "1e3s", "+5m", "5w"])
def test_bad_durations_are_refused(text):
    with pytest.raises(UsageError, match="--skip-validated-within"):
        validated.parse_duration(text)


def test_validated_index_round_trip_and_freshness(tmp_path):
    validated.write(tmp_path, "vm/w1", {"epoch": 1000.0, "time": "t", "evidence": "e"})
    validated.write(tmp_path, "vm/w2", {"epoch": 5000.0, "time": "t", "evidence": "e"})
    (tmp_path / "vm_w3.json").write_text("{not json")          # damaged: counts as no record
    (tmp_path / "vm_w4.json").write_text(json.dumps({"node": "someone-else", "epoch": 1.0}))
    recs = validated.read(tmp_path, ["vm/w1", "vm/w2", "vm/w3", "vm/w4", "vm/w5"])
    assert sorted(recs) == ["vm/w1", "vm/w2"]
    assert sorted(validated.fresh(recs, 600, now=5100.0)) == ["vm/w2"]
    assert validated.fresh(recs, 600, now=4000.0) == {}        # w2's record from the future: not trusted
    validated.drop(tmp_path, "vm/w2")
    validated.drop(tmp_path, "vm/w2")                           # twice: no error
    assert sorted(validated.read(tmp_path, ["vm/w1", "vm/w2"])) == ["vm/w1"]


def test_quarantine_list_merge_save_load(tmp_path):
    f = tmp_path / "q.json"
    assert quarantine.load(f) == {}
    quarantine.save(f, quarantine.merge({}, {"a": {"reason": "slow"}, "b": {"reason": "dead"}}, set()))
    cur = quarantine.load(f)
    assert sorted(cur) == ["a", "b"]
    quarantine.save(f, quarantine.merge(cur, {"c": {"reason": "x"}}, {"a"}))
    doc = json.loads(f.read_text())
    assert sorted(doc["nodes"]) == ["b", "c"] and doc["label"] == "rdmacheck=quarantined" and doc["schema"] == 1
    f.write_text('{"nodes": [1, 2]}')
    with pytest.raises(UsageError, match="not a quarantine list"):
        quarantine.load(f)


def test_installed_ray_cannot_relabel_a_running_node():
    ray = pytest.importorskip("ray")
    ok, why = quarantine.ray_labels_support(ray)
    assert ok is False and ray.__version__ in why


@pytest.mark.parametrize("args,words", [
    (["--skip-validated-within", "1h"], "belongs to --isolate"),
    (["--quarantine-only"], "belongs to --isolate"),
    (["--isolate", "--skip-validated-within=-5m"], "positive duration"),
    (["--isolate", "--skip-validated-within", "nan"], "positive duration"),
    (["--isolate", "--straggler-factor", "nan"], "--straggler-factor"),
    (["--isolate", "--straggler-factor", "1"], "--straggler-factor"),
    (["--isolate", "--group-size", "1"], "--group-size"),
    (["--isolate", "--measure-timeout", "-1"], "--measure-timeout"),
    (["--isolate", "--isolate-op", "frobnicate"], "--isolate-op"),
    (["--isolate", "--isolate-op", "all"], "--isolate-op"),
    (["--isolate", "--isolate-sizes", "12Q"], "--isolate-sizes"),
])
def test_isolate_input_errors_are_one_line_exit_2(args, words, tmp_path):
    (tmp_path / "none.env").write_text("")
    r = run_cli("cluster", "--ray-address", "127.0.0.1:1", *args, "--out-dir", str(tmp_path / "o"),
                "--env", str(tmp_path / "none.env"), "--quarantine-file", str(tmp_path / "q.json"))
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "q.json").exists()


def test_a_damaged_quarantine_list_is_refused_before_any_node_is_asked(tmp_path):
    (tmp_path / "none.env").write_text("")
    (tmp_path / "q.json").write_text("[]")
    r = run_cli("cluster", "--ray-address", "127.0.0.1:1", "--isolate", "--quarantine-file", str(tmp_path / "q.json"),
                "--env", str(tmp_path / "none.env"), "--out-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "not a quarantine list" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (tmp_path / "q.json").read_text() == "[]"          # never clobbered


def test_help_teaches_isolate():
    r = run_cli("cluster", "--help")
    assert r.returncode == 0
    for words in ("--isolate", "--quarantine-only", "--skip-validated-within 12h", "reports/quarantine.json",
                  "--include-quarantined", "--straggler-factor"):
        assert words in r.stdout, words


def test_report_lists_quarantined_nodes_first_with_the_reason_escaped(tmp_path):
    """The report over an --isolate run's evidence (written here the way isolate_run writes it)."""
    from rdmacheck.evidence.model import Evidence, Result, Status

    evil = "rack<script>alert(1)</script>/n9"
    iso = {"quarantine_applied": True,
           "quarantined": [{"node": evil, "kind": "straggler", "reason": "0.02 GB/s < 0.5 x fleet median 0.3 GB/s",
                            "time": "2026-12-01T19:41:52Z"}],
           "quarantined_before": {"old-node": {"kind": "bad", "reason": "RuntimeError: reset", "time": "2026-11-30T01:00:00Z"}}}
    fleet = Evidence(kind="cluster", host="ray-cluster",
                     results=[Result("cluster.isolate", Status.FAIL, observed=f"straggler {evil}")],
                     context={"nodes": [], "isolate": iso})
    (tmp_path / "cluster.json").write_text(fleet.to_json())
    for host, st in (("a-first", Status.PASS), (evil, Status.FAIL), ("z-last", Status.PASS)):
        d = tmp_path / "nodes" / host.replace("/", "_").replace("<", "_").replace(">", "_")
        d.mkdir(parents=True)
        ev = Evidence(kind="cluster", host=host, results=[Result("cluster.isolate", st, observed="x")])
        (d / "isolate.json").write_text(ev.to_json())
    r = run_cli("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 1, r.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<script>alert(1)</script>" not in html
    esc = "rack&lt;script&gt;alert(1)&lt;/script&gt;/n9"
    q = html.index('id="quarantine-table"')
    assert q < html.index('id="nodes"')
    table = html[q:html.index("</table>", q)]
    assert esc in table and "quarantined now" in table and "0.5 x fleet median" in table
    assert "old-node" in table and "quarantined before, not measured" in table
    summary = html[html.index('id="node-summary"'):]
    assert summary.index(esc) < summary.index("a-first") < summary.index("z-last")  # quarantined first


def test_excluded_leaves_out_quarantined_and_fresh_nodes_but_never_leaves_one_node_alone(tmp_path):
    from rdmacheck.cluster.isolate_run import IsolateOptions, excluded

    labels = ["a", "b", "c", "d"]
    quarantine.save(tmp_path / "q.json", {"d": {"reason": "slow", "kind": "straggler", "time": "t"}})
    for l, epoch in (("a", 900.0), ("b", 950.0), ("d", 990.0)):
        validated.write(tmp_path / "v", l, {"epoch": epoch})
    io = IsolateOptions(quarantine_file=tmp_path / "q.json", validated_dir=tmp_path / "v", skip_validated_within=600)
    excluded(io, labels, now=1000.0)
    # d is quarantined (its record does not matter); c alone would be left: b, the newest record, joins it
    assert list(io.quarantined) == ["d"] and sorted(io.skipped) == ["a"]
    io = IsolateOptions(quarantine_file=tmp_path / "q.json", validated_dir=tmp_path / "v", skip_validated_within=600,
                        include_quarantined=True)
    excluded(io, labels, now=1000.0)
    assert io.quarantined == {} and sorted(io.skipped) == ["a", "b"]   # c and d measured
