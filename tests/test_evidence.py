"""Evidence as a contract: one plateau figure, typed and versioned documents, readers that refuse what they
do not know.

Ground truth is the committed evidence of real runs: the 2x H100 NCCL sweep
(benchmarks/results/bench-h100x2-nccl.json) and the NCCL-log bench runs under tests/data/nccl-logs/.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from conftest import REPO, require_module, run_cli
from rdmacheck.bench.gate import busbw_gate
from rdmacheck.evidence.schema import parse
from rdmacheck.evidence.model import Evidence
from rdmacheck.report import make_report

H100_BENCH = REPO / "benchmarks" / "results" / "bench-h100x2-nccl.json"
NCCL_LOG_BENCHES = sorted((REPO / "tests" / "data" / "nccl-logs").glob("*.bench.json"))


def _doc(p: Path) -> dict:
    return json.loads(p.read_text())


# --------------------------------------------------------------------------- one plateau

@pytest.mark.parametrize("path", [H100_BENCH, *NCCL_LOG_BENCHES], ids=lambda p: p.name)
def test_report_plateau_is_the_gates_number(path, tmp_path):
    """The page's plateau figure per op, and its headline, are the bench.busbw gate's numbers.

    Before one function held the plateau, the recorded 2x H100 run read all_reduce 295 GB/s in the
    gate and 323 GB/s on the page (sendrecv 284 vs 354)."""
    doc = _doc(path)
    ctx = doc["context"]
    gate = busbw_gate(doc["records"], ctx["expect_busbw"], ctx["plateau_min_bytes"])
    recorded = next(r for r in doc["results"] if r["id"] == "bench.busbw")
    # the gate today gives what the run recorded then
    assert gate.status.value == recorded["status"] and gate.observed == recorded["observed"]
    ops = gate.details["ops"]
    # and the number is the median of the plateau sizes' busbw, by hand from the records
    for op, d in ops.items():
        by_hand = statistics.median(r["busbw"] for r in doc["records"]
                                    if r["op"] == op and r["bytes"] >= ctx["plateau_min_bytes"])
        assert d["median"] == pytest.approx(by_hand, rel=1e-12)
    model = make_report([str(path)], tmp_path / "r.html")
    page = {s["op"]: s["plateau_busbw"] for s in model["summaries"]}
    assert page == {op: d["median"] for op, d in ops.items()}
    low = min(ops, key=lambda op: ops[op]["median"])
    if model["verdict"] == "PASS":   # the socket run fails bench.transport: its banner names that instead
        assert f"{ops[low]['median']:.2f} GB/s busbw ({low}" in model["reason"], model["reason"]
    else:
        assert {r["status"] for r in doc["results"]} >= {"fail"}


def test_recorded_h100_plateau_figures():
    """The two numbers the issue quotes, from the gate's own observed text of the recorded run."""
    # write=False: renaming a page over /dev/null would replace the device node (atomic_write refuses)
    model = make_report([str(H100_BENCH)], Path("unused.html"), write=False)
    page = {s["op"]: s["plateau_busbw"] for s in model["summaries"]}
    assert round(page["all_reduce"]) == 295 and round(page["sendrecv"]) == 284


# --------------------------------------------------------------------------- a report that judged nothing

def test_report_with_no_gate_exits_1_and_junit_fails(captures, tmp_path):
    out, junit = tmp_path / "r.html", tmp_path / "j.xml"
    r = run_cli("report", "--import", str(captures / "text" / "nccl-tests-allreduce-h100x2-nvlink-reference.txt"),
                "-o", str(out), "--junit", str(junit), timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("INFO: No gates were evaluated") and "Traceback" not in r.stderr
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    assert root.get("tests") == "1" and root.get("failures") == "1"
    assert root.find("testsuite/testcase").get("name") == "report.gates"


# --------------------------------------------------------------------------- readers refuse what they do not know

def _committed_v2() -> dict:
    return _doc(H100_BENCH)


def _bad_docs() -> list[tuple[str, object, str]]:
    """(name, document or raw text, the field the error must name)."""
    base = _committed_v2()
    out: list[tuple[str, object, str]] = [
        ("unknown-kind", dict(base, kind="benchmark"), "'kind'"),
        ("missing-kind", {k: v for k, v in base.items() if k != "kind"}, "'kind'"),
        ("missing-version", {k: v for k, v in base.items() if k != "schema_version"}, "'schema_version'"),
        ("schema-1", dict(base, schema_version=1), "rdmacheck.evidence_v1"),
        ("schema-3", dict(base, schema_version=3), "'schema_version'"),
        ("schema-string", dict(base, schema_version="2"), "'schema_version'"),
        ("schema-float", dict(base, schema_version=2.0), "'schema_version'"),
        ("busbw-text", dict(base, records=[dict(base["records"][0], busbw="fast")]), "'records[0].busbw'"),
        ("bytes-missing", dict(base, records=[{"op": "all_reduce", "busbw": 1.0}]), "'records[0].bytes'"),
        ("plateau-negative", dict(base, context=dict(base["context"], plateau_min_bytes=-1)), "'context.plateau_min_bytes'"),
        ("source-unknown", dict(base, context=dict(base["context"], source="mpi")), "'context.source'"),
        ("results-status", dict(base, results=[{"id": "bench.busbw", "status": "great"}]), "'results[0]'"),
    ]
    text = json.dumps(base)
    out += [
        ("schema-1e400", text.replace('"schema_version": 2', '"schema_version": 1e400', 1), "out of range"),
        ("huge-int", text.replace('"bytes": 1024', '"bytes": 1' + "0" * 400, 1), "out of range"),
        ("nan", text.replace('"busbw": 0.06', '"busbw": NaN, "x": 0.06', 1), "NaN"),
        ("deep", '{"tool": "rdmacheck", "kind": "bench", "schema_version": 2, "context": '
                 + "[" * 5000 + "]" * 5000 + "}", "nested deeper"),
        ("deep-100k", "[" * 100000 + "]" * 100000, "nested deeper"),
    ]
    return out


@pytest.mark.parametrize("name,doc,field", _bad_docs(), ids=[b[0] for b in _bad_docs()])
def test_report_refuses_unknown_evidence_naming_file_and_field(name, doc, field, tmp_path):
    p = tmp_path / f"{name}.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    out = tmp_path / "r.html"
    out.write_text("before")
    r = run_cli("report", str(p), "-o", str(out), timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and str(p) in r.stderr and field in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert out.read_text() == "before"


def test_unknown_kind_inside_a_folder_is_an_error_not_skipped(tmp_path):
    """Before, failing evidence of an unknown kind made 'No gates were evaluated' and exit 0."""
    d = tmp_path / "cluster"
    d.mkdir()
    failing = _committed_v2()
    failing["results"] = [dict(failing["results"][0], status="fail")]
    (d / "a.json").write_text(json.dumps(dict(failing, kind="benchmark")))
    (d / "other.json").write_text(json.dumps({"not": "evidence"}))     # foreign JSON in a folder: skipped
    r = run_cli("report", str(d), "-o", str(tmp_path / "r.html"), timeout=60)
    assert r.returncode == 2 and str(d / "a.json") in r.stderr and "'kind'" in r.stderr, r.stderr


def test_bench_preflight_evidence_reader_refuses_too(tmp_path):
    """The path proof's --preflight evidence goes through the same strict reader (output/jsonout.py)."""
    from rdmacheck.util.errors import UsageError
    from rdmacheck.evidence.jsonout import read_evidence

    p = tmp_path / "pf.json"
    p.write_text(json.dumps(dict(_doc(REPO / "tests" / "data" / "softroce-preflight.json"), schema_version=1)))
    with pytest.raises(UsageError, match=r"pf\.json: field 'schema_version'.*rdmacheck\.evidence_v1"):
        read_evidence(p)


# --------------------------------------------------------------------------- schema 1 -> 2

COMMITTED = [REPO / "tests" / "data" / "softroce-preflight.json", H100_BENCH,
             *sorted((REPO / "tests" / "data" / "nccl-logs").glob("*.json"))]


def _as_v1(doc: dict) -> dict:
    """A schema-2 document as a schema-1 runner wrote it: no calls, no source, version 1."""
    v1 = json.loads(json.dumps(doc))
    v1["schema_version"] = 1
    if v1["kind"] == "bench":
        v1["context"].pop("source", None)
        for r in v1["records"]:
            r.pop("calls", None)
    return v1


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_evidence_is_schema_2_and_the_converter_reproduces_it(path, tmp_path):
    from rdmacheck.evidence.v1 import convert
    from rdmacheck.evidence.model import SCHEMA_VERSION

    doc = _doc(path)
    assert doc["schema_version"] == SCHEMA_VERSION
    parse(doc, str(path))                                   # valid, field by field
    assert convert(_as_v1(doc)) == doc                      # the committed file is exactly the conversion
    old = tmp_path / path.name
    old.write_text(json.dumps(_as_v1(doc), indent=2))
    r = run_cli("report", str(old), "-o", str(tmp_path / "r.html"), timeout=60)
    assert r.returncode == 2 and "python3 -m rdmacheck.evidence_v1" in r.stderr
    import subprocess
    import sys

    c = subprocess.run([sys.executable, "-m", "rdmacheck.evidence_v1", str(old)], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert c.returncode == 0 and "schema 1 -> 2" in c.stdout, c.stderr
    assert json.loads(old.read_text()) == doc
    c = subprocess.run([sys.executable, "-m", "rdmacheck.evidence_v1", str(old)], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert c.returncode == 0 and "already schema 2" in c.stdout


def test_converter_refuses_what_it_cannot_convert(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "x.json"
    p.write_text(json.dumps(dict(_as_v1(_committed_v2()), kind="benchmark")))
    before = p.read_text()
    c = subprocess.run([sys.executable, "-m", "rdmacheck.evidence_v1", str(p)], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert c.returncode == 2 and "'kind'" in c.stderr and "Traceback" not in c.stderr
    assert p.read_text() == before


def test_legacy_call_count_rebuilds_the_schema_1_runner_steps():
    """The rule bench.wire applied to every read before the runner counted (now used only to convert)."""
    from rdmacheck.evidence.v1 import legacy_calls

    ctx = {"world_size": 2, "backend": "nccl", "warmup": 2, "iters": 20, "check": True}
    rec = {"op": "all_reduce", "bytes": 1 << 20, "iters": 20, "in_place": False, "graph": False}
    assert legacy_calls(rec, ctx) == 2 + 20 + 1
    assert legacy_calls(rec, {**ctx, "iters": "time-based", "check": False}) == 2 + 3 + 20
    assert legacy_calls(dict(rec, graph=True), ctx) == 2 + 20 + 1 + 1 + 20
    # --graph auto (2x H100 capture, iters 20): 2 warm-up + 1 + 20 capture replay + 20 sampled replay + 3 + 20
    # eager sample + 20 timed + 1 check = 87, which the veth counters confirmed at 1.00x
    auto = {**ctx, "graph": "auto"}
    assert legacy_calls(dict(rec, graph=True), auto) == 87
    assert legacy_calls(rec, auto) == 87        # auto sampled both and kept eager: the sampling still ran
    slow = dict(rec, time_us=2500.0)            # time-based and >= 1 ms per call: capture skipped
    assert legacy_calls(slow, {**auto, "iters": "time-based"}) == 2 + 3 + 20 + 1


def test_runner_counts_the_calls_the_legacy_rule_predicted(tmp_path):
    """A real 2-rank gloo sweep: each record's counted ``calls`` equals what the schema-1 rule rebuilt
    (for eager runs, where both are exact), and the evidence it writes is valid schema 2."""
    require_module("torch")  # real rank processes
    js = tmp_path / "b.json"
    r = run_cli("bench", "--nproc", "2", "--backend", "gloo", "--op", "all_reduce,all_gather", "--sizes", "1K,8K",
                "--warmup", "2", "--time-per-size", "0.002", "--no-progress", "--json", str(js), timeout=300)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    doc = _doc(js)
    ev = parse(doc, str(js))
    from rdmacheck.evidence.schema import bench_records, context_of
    from rdmacheck.evidence.v1 import legacy_calls

    assert doc["context"]["source"] == "rdmacheck" and context_of(ev).source == "rdmacheck"
    recs = bench_records(ev)
    assert recs and all(x.calls is not None for x in recs)
    for raw in doc["records"]:
        assert raw["calls"] == legacy_calls(raw, doc["context"]), raw
        assert raw["calls"] == 2 + 3 + raw["iters"] + 1        # warm-up, estimate, timed, check


# --------------------------------------------------------------------------- the runner's count on the CUDA-graph paths

class _FakeCuda:
    """torch.cuda as _measure uses it, for a machine with no GPU: streams and synchronize do nothing, a
    CUDAGraph records the collectives issued while capturing and issues them again on every replay,
    and events give a fixed time per event pair so --graph auto's choice is set by the test.
    (Mocked because no GPU exists here; the collectives themselves are counted by the fake dist.)"""

    def __init__(self, dist, graph_faster: bool, sampling_fails: bool = False):
        self.dist, self.graph_faster, self.sampling_fails = dist, graph_faster, sampling_fails

    def Stream(self):
        return type("S", (), {"wait_stream": lambda self, s: None})()

    def current_stream(self):
        return self.Stream()

    def stream(self, s):
        import contextlib

        return contextlib.nullcontext()

    def synchronize(self):
        pass

    def CUDAGraph(self):
        dist = self.dist

        class G:
            captured = 0

            def replay(self):
                dist.executed += self.captured
                dist.replayed += self.captured

        return G()

    def graph(self, g):
        import contextlib

        dist = self.dist

        @contextlib.contextmanager
        def capture():
            dist.capturing = g
            try:
                yield
            finally:
                dist.capturing = None

        return capture()

    def Event(self, enable_timing=False):
        cuda = self

        class E:
            def record(self):
                self.at = (cuda.dist.executed, cuda.dist.replayed)

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                if cuda.sampling_fails and end.at[1] > self.at[1]:
                    raise RuntimeError("operation not permitted when stream is capturing")
                replayed = end.at[1] - self.at[1]
                eager = end.at[0] - self.at[0] - replayed
                # ms: an eager call 0.01; a replayed one cheaper or dearer, which sets auto's choice
                return max(eager * 0.01 + replayed * (0.001 if cuda.graph_faster else 0.1), 1e-6)

        return E()


class _FakeDist:
    def __init__(self):
        self.executed = 0
        self.replayed = 0
        self.capturing = None

    def all_reduce(self, buf, group=None, op=None):
        if self.capturing is not None:
            self.capturing.captured += 1
        else:
            self.executed += 1


@pytest.mark.parametrize("graph,auto,graph_faster,fails", [(True, False, True, False), (True, True, True, False),
                                                            (True, True, False, False), (False, False, True, False),
                                                            (True, True, True, True)])
def test_runner_counts_every_issued_collective_on_the_graph_paths(graph, auto, graph_faster, fails):
    """_measure's ``calls`` equals the collectives that really ran (captured ones run at each replay) on
    the eager, graph and --graph auto paths, and equals the schema-1 rule that met the NIC counters."""
    require_module("torch")  # real rank processes
    import types

    import torch

    from rdmacheck.bench.plan import build_plan
    from rdmacheck.bench.runner import BenchOptions, Runner, Watchdog, _Timer
    from rdmacheck.evidence.v1 import legacy_calls

    dist = _FakeDist()
    fake_torch = types.SimpleNamespace(**{k: getattr(torch, k) for k in ("empty", "tensor", "float32", "float64",
                                                                            "int64")})
    fake_torch.cuda = _FakeCuda(dist, graph_faster, sampling_fails=fails)
    opts = BenchOptions(ops=["all_reduce"], sizes=[4096], iters=30, warmup=3, check=True)
    r = Runner.__new__(Runner)
    r.opts, r.rank, r.world, r.backend, r.context = opts, 0, 1, "nccl", {}
    r.graph_auto = auto
    r.wd = Watchdog(0, 60, lambda *a: None)
    try:
        (row,), _ = build_plan(["all_reduce"], [4096], "float", 1)
        rec = r._measure(fake_torch, dist, torch.device("cpu"), torch.float32,
                         _Timer(fake_torch, types.SimpleNamespace(type="cuda")), row, True, graph, "p")
    finally:
        r.wd.stop()
    assert rec["calls"] == dist.executed
    if fails:   # the auto sampling failed after the capture: measured eagerly, and said so
        assert rec["graph"] is False and "graph_fallback" in r.context
        return
    ctx = {"graph": "auto" if auto else graph, "iters": 30, "warmup": 3, "check": True}
    assert rec["calls"] == legacy_calls(rec, ctx)
    assert rec["graph"] is (graph and (not auto or graph_faster))


def test_fingerprint_versions_come_from_each_kinds_own_fields(tmp_path):
    """The environment fingerprint of the committed runs: the H100 bench's torch and NCCL, the H100
    preflight's kernel and python and the NVML gate's driver and CUDA, as those files recorded them."""
    pre = REPO / "tests" / "data" / "nccl-logs" / "h100x2-preflight.json"
    model = make_report([str(H100_BENCH), str(pre)], tmp_path / "r.html")
    fp = {Path(f["file"]).name: f["versions"] for f in model["fingerprint"]}
    b, p = _doc(H100_BENCH), _doc(pre)
    assert fp[H100_BENCH.name] == f"torch {b['context']['torch_version']}, nccl {b['context']['nccl_version']}"
    nvml = next(r for r in p["results"] if r["id"] == "gpu.nvml")["details"]
    want = [f"kernel {p['context']['facts']['kernel']}", f"python {p['context']['python']}",
            f"driver {nvml['driver_version']}", f"cuda {nvml['cuda_driver_version']}"]
    assert fp[pre.name] == ", ".join(want)
