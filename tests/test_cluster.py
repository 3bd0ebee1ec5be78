"""rdmacheck cluster without a Ray cluster: the pairwise scheduler, the link matrix,
node labels, the bounded connect and the command line's input errors.

The end-to-end proofs on a real multi-node Ray cluster are in test_cluster_ray.py.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, require_module, run_cli
from rdmacheck.cluster import matrix
from rdmacheck.output.heatmap import heatmap_svg
from rdmacheck.cluster.driver import label_nodes, ray_error_text
from rdmacheck.cluster.schedule import rounds
from rdmacheck.evidence.model import Status


def _check_schedule(n: int) -> list:
    nodes = [f"node{i:03d}" for i in range(n)]
    rs = rounds(nodes)
    seen = [frozenset(p) for r in rs for p in r]
    assert len(seen) == len(set(seen)), "a pair measured twice"
    assert set(seen) == {frozenset(p) for p in itertools.combinations(nodes, 2)}, "a pair never measured"
    for r in rs:
        members = [x for p in r for x in p]
        assert len(members) == len(set(members)), f"a node twice in one round: {r}"
    return rs


def test_64_nodes_take_63_rounds_every_pair_once():
    rs = _check_schedule(64)
    assert len(rs) == 63
    assert all(len(r) == 32 for r in rs)  # every node busy in every round: nothing left on the table


@pytest.mark.parametrize("n", range(0, 18))
def test_round_count_is_minimal_for_any_n(n):
    rs = _check_schedule(n)
    assert len(rs) == (0 if n < 2 else n - 1 if n % 2 == 0 else n)
    if n % 2 == 1 and n > 1:
        # odd: one node sits out each round, and each node sits out exactly once
        idle = [set(f"node{i:03d}" for i in range(n)) - {x for p in r for x in p} for r in rs]
        assert all(len(s) == 1 for s in idle)
        assert len(set().union(*idle)) == n


def test_rounds_reject_duplicate_nodes():
    with pytest.raises(ValueError):
        rounds(["a", "b", "a"])


def _m(nodes, pairs):
    m = matrix.empty(nodes)
    for (a, b), v in pairs.items():
        i, j = nodes.index(a), nodes.index(b)
        m[i][j] = m[j][i] = v
    return m


def test_one_bad_link_is_flagged_and_named():
    nodes = ["n1", "n2", "n3", "n4"]
    good = {p: 12.2 for p in itertools.combinations(nodes, 2)}
    data, res = matrix.judge(nodes, _m(nodes, good), {}, expected=11.0)
    assert res.status is Status.PASS and data["flagged"] == [] and data["measured"] == 6
    bad = dict(good)
    bad[("n2", "n3")] = 3.1
    data, res = matrix.judge(nodes, _m(nodes, bad), {}, expected=11.0)
    assert res.status is Status.FAIL
    assert [(f["a"], f["b"]) for f in data["flagged"]] == [("n2", "n3")]
    assert "n2<->n3 3.10 GB/s" in res.observed


def test_outlier_below_half_the_median_warns_even_above_expectation():
    nodes = ["a", "b", "c", "d"]
    vals = {p: 20.0 for p in itertools.combinations(nodes, 2)}
    vals[("a", "d")] = 9.0
    data, res = matrix.judge(nodes, _m(nodes, vals), {}, expected=5.0, outlier_factor=0.5)
    assert res.status is Status.WARN and data["flagged"][0]["warn"] is True
    data, res = matrix.judge(nodes, _m(nodes, vals), {}, expected=5.0, outlier_factor=0.0)
    assert res.status is Status.PASS


def test_unmeasured_pair_fails_with_its_reason():
    nodes = ["a", "b", "c"]
    vals = {("a", "b"): 12.0, ("a", "c"): 12.0}
    data, res = matrix.judge(nodes, _m(nodes, vals), {"b|c": "b dead (ActorDiedError: node has died)"}, expected=10.0)
    assert res.status is Status.FAIL and data["measured"] == 2 and data["pairs"] == 3
    assert "not measured: b dead (ActorDiedError" in res.observed


def test_one_node_has_no_pairs_to_judge():
    data, res = matrix.judge(["solo"], matrix.empty(["solo"]), {}, expected=10.0)
    assert res.status is Status.SKIP and data["pairs"] == 0 and "no pair" in res.observed


def test_heatmap_escapes_labels_and_marks_missing_cells():
    nodes = ["<script>x</script>", "n&2", "n3"]
    data, _ = matrix.judge(nodes, _m(nodes, {("n&2", "n3"): 1.0}), {}, expected=0.5)
    svg = heatmap_svg(data)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "n&amp;2" in svg
    assert svg.count(">x</text>") == 4  # two unmeasured pairs, both halves of the matrix
    csv = matrix.to_csv(nodes, data["busbw"])
    assert csv.splitlines()[2] == '"n&2",,,1.0000'


def test_heatmap_of_512_nodes_stays_a_picture():
    nodes = [f"node{i:03d}" for i in range(512)]
    m = [[None if i == j else 10.0 for j in range(512)] for i in range(512)]
    svg = heatmap_svg({"nodes": nodes, "busbw": m, "expected": 5.0, "flagged": []})
    assert "node511" not in svg  # labels dropped above 40 nodes
    assert "data:image/png;base64," in svg and svg.count("<rect") < 10  # one raster, not 262144 rects
    assert len(svg) < 200_000


def _ray_node(nid, host, name, alive=True, gpus=0):
    # the shape of one entry of ray.nodes() (Ray 2.x): data, not a stand-in for Ray
    res = {"CPU": 1.0, f"node:{host}": 1.0}
    if gpus:
        res["GPU"] = float(gpus)
    return {"NodeID": nid, "Alive": alive, "NodeManagerAddress": "10.0.0.1", "NodeManagerHostname": host,
            "NodeName": name, "Resources": res}


def test_labels_use_host_names_and_disambiguate_shared_hosts():
    nodes = label_nodes([
        _ray_node("b" * 56, "spark-02", "10.0.0.1", gpus=1),
        _ray_node("a" * 56, "spark-01", "10.0.0.1", gpus=1),
        _ray_node("c" * 56, "ci", "w1"), _ray_node("d" * 56, "ci", "w2"),
        _ray_node("e" * 56, "ci", "w2"),                       # same node_name twice: NodeID prefix added
        _ray_node("f" * 56, "ci", "10.0.0.1"),                 # node_name defaults to the IP: NodeID prefix
        _ray_node("9" * 56, "gone", "x", alive=False),         # dead nodes are not part of the run
    ])
    labels = [n.label for n in nodes]
    assert labels == sorted(labels)
    assert "spark-01" in labels and "spark-02" in labels and "ci/w1" in labels
    assert "ci/w2/dddddddd" in labels and "ci/w2/eeeeeeee" in labels and "ci/ffffffff" in labels
    assert not any("gone" in l for l in labels)
    assert next(n for n in nodes if n.label == "spark-01").gpus == 1


def test_ray_error_text_is_one_line():
    e = RuntimeError("The actor died unexpectedly.\n\tclass_name: A\n\tThe actor died because its node has died.")
    t = ray_error_text(e)
    assert "\n" not in t and t.startswith("RuntimeError: The actor died") and "node has died" in t


@pytest.mark.parametrize("args, words", [
    (["--ray-address", "nohost"], "--ray-address 'nohost'"),
    (["--ray-address", "h:99999"], "port must be 1..65535"),
    (["--ray-address", "auto", "--node-timeout", "0"], "--node-timeout must be > 0"),
    (["--ray-address", "auto", "--pairwise-sizes", "lots"], "--pairwise-sizes: 'lots' is not a size"),
    (["--ray-address", "auto", "--sizes", "1G..1K"], "ends below its start"),
    (["--ray-address", "auto", "--only", "rdma.nope"], "unknown gate id(s) rdma.nope"),
    (["--ray-address", "auto", "--outlier-factor", "3"], "--outlier-factor must be between 0 and 1"),
    (["--ray-address", "auto", "--op", "allsum"], "is not a collective"),
    (["--ray-address", "auto", "--sizes", "64M", "--max-memory", "1M"], "the largest size needs"),
    (["--ray-address", "auto", "--no-bench", "--pairwise", "--max-memory", "1M"], "the largest size needs"),
])
def test_bad_input_is_one_line_exit_2(args, words, tmp_path):
    (tmp_path / "none.env").write_text("")
    r = run_cli("cluster", *args, "--out-dir", str(tmp_path / "o"), "--env", str(tmp_path / "none.env"))
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_unreachable_head_is_refused_fast(tmp_path):
    require_module("ray")  # without Ray the command refuses before it probes (exit 2 naming the install)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = run_cli("cluster", "--ray-address", f"127.0.0.1:{port}", "--out-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "nothing answers there" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 15  # ray.init alone would retry for minutes
    assert not (tmp_path / "o").exists()


def test_help_teaches_and_imports_neither_ray_nor_torch():
    code = ("import sys; from rdmacheck.cli import main\n"
            "try:\n    main(['cluster', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY []" in r.stdout
    for words in ("--ray-address", "NodeAffinitySchedulingStrategy", "n-1 rounds", "--node-timeout", "report.html"):
        assert words in r.stdout


def _actor_run(opts: dict) -> dict:
    """BenchActor.run exactly as a Ray actor calls it, in a fresh process (it sets RANK,
    MASTER_ADDR ... in its environment, which must not leak into this test session)."""
    require_module("torch")
    import json as _json

    code = (
        "import json, sys\n"
        "from rdmacheck.bench.runner import BenchOptions\n"
        "from rdmacheck.cluster.remote import BenchActor\n"
        "opts = BenchOptions(**json.loads(sys.argv[1]))\n"
        "out = BenchActor('solo').run(opts.to_json(), 0, 1, '127.0.0.1', 0)\n"
        "print('RESULT' + json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, _json.dumps(opts)], capture_output=True, text=True, cwd=REPO,
                       timeout=120, env=dict(__import__("os").environ, GLOO_SOCKET_IFNAME="lo"))
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT")), None)
    assert line, r.stdout + r.stderr
    return _json.loads(line[6:])


def test_bench_actor_runs_the_bench_runner_and_returns_rank0_evidence():
    out = _actor_run({"ops": ["all_reduce"], "sizes": [4096], "backend": "gloo", "timeout": 60, "iters": 5,
                      "warmup": 1, "progress": False})
    assert out["rc"] in (0, 1) and out["rank"] == 0 and out["label"] == "solo"
    ev = out["evidence"]
    assert ev["kind"] == "bench" and ev["records"][0]["bytes"] == 4096 and ev["records"][0]["wrong"] == 0


def test_bench_actor_sends_back_why_the_runner_refused():
    out = _actor_run({"ops": ["all_reduce"], "sizes": [1 << 20], "backend": "gloo", "timeout": 60,
                      "max_memory": 1024, "progress": False})
    assert out["rc"] == 2 and out["evidence"] is None
    assert any("largest size needs" in line for line in out["stderr_tail"]), out
