"""rdmacheck report: from evidence produced by real runs on this machine to one HTML page.

Inputs are real wherever this machine can make them: the real `rdmacheck preflight --json`
(it fails limits.memlock here), a real gloo bench run, every real nccl-tests capture, the
path-proof gate run on a real NCCL INFO capture.  Multi-node sets are built by replaying the
real preflight evidence under other host names with changed values (what the fleet issue does),
because this machine is one host.
"""

from __future__ import annotations

import base64
import copy
import csv
import io
import json
import re
from pathlib import Path

import pytest

from conftest import REPO, require_module, run_cli
from rdmacheck.evidence.model import Evidence, Result, Status
from rdmacheck.report import make_report
from rdmacheck.report.consistency import compare, node_facts

SOFTROCE_PREFLIGHT = REPO / "tests" / "data" / "softroce-preflight.json"
H100_BENCH = REPO / "benchmarks" / "results" / "bench-h100x2-nccl.json"


@pytest.fixture(scope="module")
def real_preflight(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pf") / "preflight.json"
    r = run_cli("preflight", "--json", str(p), timeout=120)
    assert r.returncode in (0, 1), r.stderr
    assert p.is_file()
    return p


@pytest.fixture(scope="module")
def gloo_bench(tmp_path_factory) -> Path:
    require_module("torch")
    p = tmp_path_factory.mktemp("bench") / "bench-gloo.json"
    r = run_cli("bench", "--nproc", "2", "--sizes", "1K..64K", "--json", str(p), timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    assert p.is_file()
    return p


def _ev(p: Path) -> Evidence:
    return Evidence.from_dict(json.loads(p.read_text()))


def _write(ev: Evidence, p: Path) -> Path:
    p.write_text(ev.to_json())
    return p


def _replay(src: Path, host: str, dest: Path, *, mtu: int = 9000, fw: str = "28.39.1002", hca: str = "roceP2p1s0f0",
            active_mtu: int = 4096, subnet_ip: str | None = None) -> Path:
    """The real preflight evidence as if taken on `host`, with one RoCE port row in its facts."""
    ev = _ev(src)
    ev.host = host
    ip = subnet_ip or "192.168.100.1"
    ev.context.setdefault("facts", {})["ports"] = [{
        "port": f"{hca}:1", "link_layer": "Ethernet", "state": "ACTIVE", "fw_ver": fw,
        "netdev": "enP2p1s0f0np0", "netdev_mtu": mtu, "active_mtu": active_mtu,
        "gid_index": 3, "gid": {"gid": "0000:0000:0000:0000:0000:ffff:c0a8:6401", "ipv4": ip,
                                "type": "RoCE v2", "in_subnet": True}}]
    ev.context["facts"]["netdevs"] = {"enP2p1s0f0np0": {"name": "enP2p1s0f0np0", "mtu": mtu, "ipv4": [f"{ip}/24"]}}
    ev.context.setdefault("config", {}).setdefault("env", {})["NCCL_IB_HCA"] = hca
    return _write(ev, dest / f"{host}.json")


def _html(model_path: Path) -> str:
    return model_path.read_text()


# --------------------------------------------------------------------------- single real node

def test_real_preflight_report(real_preflight, tmp_path):
    ev = _ev(real_preflight)
    out = tmp_path / "r.html"
    r = run_cli("report", str(real_preflight), "-o", str(out))
    failing = [x.id for x in ev.results if x.effective_status is Status.FAIL]
    assert r.returncode == (1 if failing else 0), r.stderr
    html = out.read_text()
    assert r.stdout.startswith("FAIL" if failing else "PASS")
    # every gate of the evidence is a row of the node table, with its status and remedy
    for x in ev.results:
        assert f'<td class="mono">{x.id}</td>' in html
    if "limits.memlock" in failing:
        assert "limits.memlock" in r.stdout.splitlines()[0] or len(failing) > 3
        mem = next(x for x in ev.results if x.id == "limits.memlock")
        assert _esc(mem.remedy) in html
    # self-contained: no external references at all
    assert not re.search(r'(?:src|href)="(?!data:|#)', html)
    assert "Content-Security-Policy" in html and 'name="viewport"' in html and "@media print" in html


def _esc(s: str) -> str:
    from markupsafe import escape

    return str(escape(s))


# --------------------------------------------------------------------------- several nodes

def test_mismatched_mtu_is_named(real_preflight, tmp_path):
    a = _replay(real_preflight, "spark-01", tmp_path)
    b = _replay(real_preflight, "spark-02", tmp_path, mtu=1500)
    out = tmp_path / "r.html"
    model = make_report([str(a), str(b)], out)
    assert model["verdict"] == "FAIL"
    assert "netdev MTU differs" in model["reason"] and "1500" in model["reason"]
    row = next(r for r in model["consistency"] if r["key"] == "netdev_mtu")
    assert not row["agree"] and dict(row["groups"]) == {"9000": ["spark-01"], "1500": ["spark-02"]}
    for key in ("roce_active_mtu", "gid_type", "gid_subnet", "firmware"):
        assert next(r for r in model["consistency"] if r["key"] == key)["agree"], key
    html = out.read_text()
    assert 'class="mismatch" data-key="netdev_mtu"' in html


def test_every_property_mismatch_is_found(real_preflight, tmp_path):
    a = _replay(real_preflight, "n1", tmp_path)
    b = _replay(real_preflight, "n2", tmp_path, fw="20.31.1014", hca="mlx5_1", active_mtu=1024, subnet_ip="10.0.0.7")
    for p, ver in ((a, "2.28.9"), (b, "2.21.5")):  # versions as the GPU/NCCL gates report them
        ev = _ev(p)
        ev.results.append(Result("gpu.nvml", "pass", details={"driver_version": "580.95" if ver > "2.25" else "550.54",
                                                              "cuda_driver_version": "13.0"}))
        ev.context["facts"]["nccl_version"] = ver
        _write(ev, p)
    rows = compare([node_facts(h, [_ev(p)]) for h, p in (("n1", a), ("n2", b))])
    bad = {r.key for r in rows if not r.agree}
    assert bad == {"roce_active_mtu", "gid_subnet", "firmware", "nccl_version", "driver_version", "env.NCCL_IB_HCA"}


def test_agreeing_nodes_and_missing_keys(real_preflight, tmp_path):
    a = _replay(real_preflight, "n1", tmp_path)
    b = _replay(real_preflight, "n2", tmp_path)
    c = _ev(real_preflight)
    c.host = "n3"
    c.context.pop("facts", None)            # an older or partial evidence file: nothing to compare
    c.context.pop("config", None)
    c = _write(c, tmp_path / "n3.json")
    rows = compare([node_facts(h, [_ev(p)]) for h, p in (("n1", a), ("n2", b))])
    assert all(r.agree for r in rows)
    rows3 = compare([node_facts(h, [_ev(p)]) for h, p in (("n1", a), ("n2", b), ("n3", c))])
    mtu = next(r for r in rows3 if r.key == "netdev_mtu")
    assert mtu.agree and mtu.reported == 2        # not reported is not a mismatch...
    env = next(r for r in rows3 if r.key == "env.NCCL_IB_HCA")
    assert not env.agree                           # ...but an NCCL var set on some nodes only is


def test_folder_glob_and_merge(real_preflight, tmp_path):
    nodes = tmp_path / "cluster"
    (nodes / "a").mkdir(parents=True)
    (nodes / "b").mkdir()
    _replay(real_preflight, "spark-01", nodes / "a")
    _replay(real_preflight, "spark-02", nodes / "b")
    # a later launch on spark-01 waives memlock: the newest result per gate wins, the waiver is shown
    ev = _ev(nodes / "a" / "spark-01.json")
    ev.kind = "launch"
    ev.time = "2099-01-01T00:00:00+00:00"
    for r in ev.results:
        if r.status is Status.FAIL:
            r.waiver = {"reason": "lab box, memlock capped by the hypervisor", "user": "alice", "time": "2099-01-01T00:00:00+00:00"}
    _write(ev, nodes / "a" / "launch.json")
    out = tmp_path / "r.html"
    r = run_cli("report", str(nodes), "-o", str(out))
    assert r.returncode in (0, 1), r.stderr
    html = out.read_text()
    assert html.count('<tr><td class="mono"><a href="#node-') == 2        # two nodes, not three files
    assert "lab box, memlock capped by the hypervisor" in html and ">alice<" in html
    assert "(waived)" in html
    # a folder may hold other JSON (a cluster run's outputs): skipped and listed, not fatal
    (nodes / "b" / "verbs.json").write_text(json.dumps({"available": False}))
    r3 = run_cli("report", str(nodes), "-o", str(tmp_path / "r3.html"))
    assert r3.returncode == r.returncode and 'id="skipped-files"' in (tmp_path / "r3.html").read_text()
    r4 = run_cli("report", str(nodes / "b" / "verbs.json"), "-o", str(tmp_path / "r4.html"))
    assert r4.returncode == 2 and "not an rdmacheck evidence document" in r4.stderr   # named: an error
    # the same through a glob the shell did not expand
    r2 = run_cli("report", str(nodes / "*" / "*.json"), "-o", str(tmp_path / "r2.html"))
    assert r2.returncode == r.returncode


def test_large_fleet_page_summarises_first(real_preflight, tmp_path):
    """70 replayed nodes: the failing-gate summary comes first, node tables start folded."""
    files = [str(_replay(real_preflight, f"node-{i:02d}", tmp_path, mtu=1500 if i == 41 else 9000)) for i in range(70)]
    out = tmp_path / "r.html"
    model = make_report(files, out)
    assert "1500 on node-41" in model["reason"]
    html = out.read_text()
    assert html.index('id="gate-failures"') < html.index('id="node-summary"') < html.index('id="gates"')
    assert "<summary>All 70 nodes</summary>" in html
    assert not re.search(r'<details id="node-\d+" open', html)


# --------------------------------------------------------------------------- bench

def test_gloo_bench_report(gloo_bench, captures, tmp_path):
    ev = _ev(gloo_bench)
    assert ev.kind == "bench" and ev.records
    out = tmp_path / "r.html"
    model = make_report([str(gloo_bench)], out,
                        imports=[str(captures / "text" / "nccl-tests-allreduce-h100x2-nvlink-reference.txt")])
    html = out.read_text()
    assert [p["op"] for p in model["plots"]] == ["all_reduce"]     # one figure per collective, both runs on it
    assert html.count("data:image/svg+xml;base64,") == 1
    svg = base64.b64decode(model["plots"][0]["uri"].split(",", 1)[1]).decode()
    assert "expected 12 GB/s" in svg and "plateau" in svg
    own = [s for s in model["summaries"] if s["source"] == "rdmacheck"]
    assert len(own) == 1 and own[0]["rows"] == len({r["bytes"] for r in ev.records})
    imp = [s for s in model["summaries"] if s["source"] == "nccl-tests"][0]
    # the plateau is every size >= the profile's 64 MiB (the capture holds 64M..1G), its figure their median busbw
    assert imp["peak_busbw"] == pytest.approx(329.15) and imp["plateau"] == "64M..1G" and imp["meets"] is True
    import statistics

    from rdmacheck.importers import import_file

    imported = import_file(captures / "text" / "nccl-tests-allreduce-h100x2-nvlink-reference.txt")
    assert imp["plateau_busbw"] == pytest.approx(statistics.median(
        r["busbw"] for r in imported.records if r["bytes"] >= 64 << 20))
    # CSV download: a data URI holding every record of both runs
    m = re.search(r'download="rdmacheck-bench.csv" href="data:text/csv;base64,([^"]+)"', html)
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(m.group(1)).decode())))
    assert len(rows) == len(ev.records) + 42
    assert {r["source"] for r in rows} == {"rdmacheck", "nccl-tests"}
    # bench gates of the run are shown
    for r in ev.results:
        assert f'<td class="mono">{r.id}</td>' in html


def test_all_captures_in_one_report(captures, tmp_path):
    files = sorted((captures / "text").glob("nccl-tests-*.txt"))
    out = tmp_path / "r.html"
    argv = ["report", "-o", str(out)]
    for f in files:
        argv += ["--import", str(f)]
    r = run_cli(*argv, timeout=120)
    # numbers only: no gate, so no verdict, and exit 1 (a page that judged nothing is not a pass)
    assert r.returncode == 1 and r.stdout.startswith("INFO"), r.stderr
    html = out.read_text()
    assert html.count("data:image/svg+xml;base64,") == 2                # all_reduce, all_gather
    assert html.count('<table class="raw">') == len(files)
    assert "rows elided with &#39;...&#39; in the source" in html


def test_path_proof_from_real_nccl_log(captures, tmp_path):
    """bench.transport judged by the real gate on a real NCCL INFO capture (IB + RoCE bond)."""
    from rdmacheck.bench.gates import check_transport
    from rdmacheck.nccl.log import parse_file

    log = parse_file(captures / "text" / "nccl-debug-net-ib-8xIB-plus-bond-roce.txt")
    res = check_transport(log, multi_node=True, env={"NCCL_IB_HCA": "mlx5"})
    ev = Evidence(kind="bench", host="node-0", results=[res], context={"backend": "nccl"},
                  records=[{"op": "all_reduce", "bytes": 1 << 20, "busbw": 10.0, "algbw": 5.0, "time_us": 100.0,
                            "in_place": False, "backend": "nccl"}])
    p = _write(ev, tmp_path / "bench.json")
    out = tmp_path / "r.html"
    model = make_report([str(p)], out)
    html = out.read_text()
    assert 'id="path-proof"' in html and "bench.transport" in html
    assert _esc(res.observed) in html
    proof = model["path_proof"][0]
    assert proof["status"] == res.status.value
    facts = dict(proof["facts"])
    assert facts["network plugin"] == str(res.details["net_plugin"])
    assert f"<tr><th>network plugin</th><td class=\"mono\">{_esc(facts['network plugin'])}</td></tr>" in html


NCCL_LOGS = REPO / "tests" / "data" / "nccl-logs"


def test_real_h100_runs_socket_fallback_named(tmp_path):
    """Real 2x H100 bench evidence (committed by the path-proof work): the NVLink run and the
    forced two-node run that fell back to NET/Socket.  The page shows the fallback, the ranked
    causes and the bandwidth of both runs on one plot."""
    nv, sock = NCCL_LOGS / "h100x2-nvlink.bench.json", NCCL_LOGS / "h100x2-socket.bench.json"
    if not (nv.is_file() and sock.is_file()):
        pytest.skip("tests/data/nccl-logs/h100x2-*.bench.json not committed")
    out = tmp_path / "r.html"
    model = make_report([str(nv), str(sock)], out)
    html = out.read_text()
    assert model["verdict"] == "FAIL" and f"bench.transport on {_ev(sock).host}" in model["reason"]
    tr = [p for p in model["path_proof"] if p["id"] == "bench.transport" and p["status"] == "fail"][0]
    assert dict(tr["facts"])["network plugin"] == "Socket" and dict(tr["facts"])["channel paths"] == "NET/Socket x8"
    assert tr["causes"][0]["rank"] == 1 and "rdma.devfiles" in tr["causes"][0]["gates"]
    assert "NET/Socket x8" in html and "P2P/CUMEM x48" in html
    peaks = sorted(round(s["peak_busbw"], 2) for s in model["summaries"])
    want = sorted(round(max(r["busbw"] for r in _ev(p).records), 2) for p in (nv, sock))
    assert peaks == want                       # 2.54 GB/s over sockets vs 259.37 over NVLink
    wire = [w for p in model["path_proof"] if p["id"] == "bench.wire" for w in p["wire_rows"]]
    assert wire and all(w["busbw"] is not None for w in wire)   # bytes on the wire next to the bandwidth


def test_committed_softroce_preflight(tmp_path):
    if not SOFTROCE_PREFLIGHT.is_file():
        pytest.skip(f"{SOFTROCE_PREFLIGHT.relative_to(REPO)} not committed yet (the soft-RoCE guest run writes it)")
    a = _ev(SOFTROCE_PREFLIGHT)
    b = copy.deepcopy(a)
    b.host = a.host + "-replayed"
    pb = _write(b, tmp_path / "b.json")
    model = make_report([str(SOFTROCE_PREFLIGHT), str(pb)], tmp_path / "r.html")
    rows = {r["key"]: r for r in model["consistency"]}
    ports = (a.context.get("facts") or {}).get("ports") or []
    # a real RoCE node reports its netdev MTU, active MTU and GID type; a replay of it agrees
    assert all(r["agree"] for r in rows.values())
    if any(p.get("netdev_mtu") for p in ports):
        assert rows["netdev_mtu"]["reported"] == 2
        assert rows["netdev_mtu"]["groups"][0][0] == ",".join(sorted({str(p["netdev_mtu"]) for p in ports if p.get("netdev_mtu")}))
    if any((p.get("gid") or {}).get("type") for p in ports):
        assert rows["gid_type"]["reported"] == 2


def test_rdmacheck_and_nccl_tests_on_one_plot():
    """The committed 2x H100 runs of the same day: rdmacheck's bench (6 collectives) and
    nccl-tests all_reduce_perf (benchmarks/results).  Both land on the all_reduce figure."""
    own = REPO / "benchmarks" / "results" / "bench-h100x2-nccl.json"
    ref = REPO / "benchmarks" / "results" / "nccl-tests-all_reduce_perf-h100x2-2026-11-27.txt"
    if not (own.is_file() and ref.is_file()):
        pytest.skip("benchmarks/results H100 files not committed")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model = make_report([str(own)], Path(d) / "r.html", imports=[str(ref)])
    ops = sorted({r["op"] for r in _ev(own).records})
    assert [p["op"] for p in model["plots"]] == ops      # one figure per collective, op names aligned
    ar = {s["source"]: s for s in model["summaries"] if s["op"] == "all_reduce"}
    assert set(ar) == {"rdmacheck", "nccl-tests"}
    assert ar["nccl-tests"]["peak_busbw"] == pytest.approx(329.35)   # the 1 GiB row, read from the file
    assert ar["rdmacheck"]["peak_busbw"] == pytest.approx(max(r["busbw"] for r in _ev(own).records if r["op"] == "all_reduce"))
    assert ar["rdmacheck"]["meets"] and ar["nccl-tests"]["meets"]


def test_committed_h100_bench(tmp_path):
    if not H100_BENCH.is_file():
        pytest.skip(f"{H100_BENCH.relative_to(REPO)} not committed yet (the GPU bench run writes it)")
    ev = _ev(H100_BENCH)
    model = make_report([str(H100_BENCH)], tmp_path / "r.html")
    own = [s for s in model["summaries"] if s["source"] == "rdmacheck"]
    assert own and max(s["peak_busbw"] for s in own) == pytest.approx(
        max(r["busbw"] for r in ev.records if r.get("busbw") is not None))


# --------------------------------------------------------------------------- escaping, errors

def test_hostile_strings_escaped_in_source(tmp_path):
    hostile = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
    ev = Evidence(kind="preflight", host=hostile[0], results=[
        Result("rdma.netdev", "fail", observed=hostile[1], remedy=hostile[0], details={"x": hostile[1]})],
        context={"facts": {"ports": [{"fw_ver": hostile[1], "netdev_mtu": 9000}]},
                 "config": {"env": {"NCCL_SOCKET_IFNAME": hostile[1]}}})
    p = _write(ev, tmp_path / "h.json")
    out = tmp_path / "r.html"
    make_report([str(p)], out, title=hostile[0])
    html = out.read_text()
    assert "<script" not in html and "<img src=x" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_usage_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases = [
        (["report", "-o", str(tmp_path / "x.html")], "no input"),
        (["report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x.html")], "not found"),
        (["report", str(bad), "-o", str(tmp_path / "x.html")], "is not JSON"),
        (["report", str(tmp_path), "-o", str(tmp_path / "x.html")], "is not JSON"),   # the folder holds bad.json
        (["report", str(tmp_path / "nope-*.json"), "-o", str(tmp_path / "x.html")], "matches no file"),
        (["report", "--import", str(REPO / "tests" / "data" / "nccl-tests" / "all_reduce_perf-J.json"),
          "--expected-busbw", "fast", "-o", str(tmp_path / "x.html")], "not a bandwidth"),
    ]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"version": 2, "config": {}, "results": []}))
    cases.append((["report", str(other), "-o", str(tmp_path / "x.html")], "--import"))
    for argv, msg in cases:
        r = run_cli(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()   # nothing half-written on bad input


def test_json_import_and_junit_from_cli(real_preflight, tmp_path):
    out, junit = tmp_path / "r.html", tmp_path / "gates.xml"
    r = run_cli("report", str(real_preflight), "--import", str(REPO / "tests/data/nccl-tests/all_reduce_perf-J.json"),
                "--junit", str(junit), "--title", "Rack 7 acceptance", "-o", str(out))
    assert r.returncode in (0, 1), r.stderr
    html = out.read_text()
    assert "<title>Rack 7 acceptance" in html and "nccl-tests all_reduce_perf-J (2 ranks)" in html
    assert junit.read_text().startswith('<?xml version="1.0" encoding="UTF-8"?>')


# --------------------------------------------------------------------------- robustness

def test_odd_evidence_never_crashes(tmp_path):
    """Evidence is read months later, from other versions and other people's tools: any
    JSON-shaped content either renders or is refused with a UsageError, never a traceback."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from rdmacheck.util.errors import UsageError

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 12), st.floats(allow_nan=True),
                        st.text(max_size=12))
    anyjson = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), c, max_size=3)),
                           max_leaves=12)
    record = st.one_of(anyjson, st.fixed_dictionaries({
        "op": st.one_of(st.none(), st.text(max_size=6)), "bytes": st.one_of(st.integers(-1, 1 << 40), st.text(max_size=4)),
        "busbw": scalars, "algbw": scalars, "time_us": scalars, "in_place": scalars, "wrong": scalars}))
    result = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=10), "status": st.sampled_from(["pass", "fail", "warn", "skip"])},
                                   optional={"details": anyjson, "waiver": anyjson, "observed": scalars})
    facts = st.fixed_dictionaries({}, optional={
        "ports": st.lists(st.dictionaries(st.sampled_from(["netdev_mtu", "active_mtu", "fw_ver", "gid", "netdev"]), anyjson), max_size=2),
        "netdevs": anyjson, "infiniband": anyjson, "verbs": anyjson, "gpu": anyjson, "netdev_mtu": anyjson})
    doc = st.fixed_dictionaries({
        "tool": st.just("rdmacheck"), "kind": st.sampled_from(["preflight", "bench", "launch", "cluster", "other"]),
        "host": st.text(max_size=10)},
        optional={"results": st.lists(result, max_size=3), "records": st.lists(record, max_size=4),
                  "context": st.fixed_dictionaries({}, optional={"facts": st.one_of(facts, anyjson),
                                                                 "config": anyjson, "backend": anyjson}),
                  "time": st.text(max_size=25), "schema_version": st.sampled_from([2, 2, 2, 1, 3, "2", None])})
    counter = iter(range(10 ** 6))

    # no shrinking phase: a failure is reported as found, keeping the test's time bounded
    @settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(doc, min_size=1, max_size=3))
    def check(docs):
        n = next(counter)
        paths = []
        for i, d in enumerate(docs):
            p = tmp_path / f"e{n}-{i}.json"
            p.write_text(json.dumps(d))
            paths.append(str(p))
        try:
            model = make_report(paths, tmp_path / f"r{n}.html")
        except UsageError:
            return
        assert model["verdict"] in ("PASS", "FAIL", "INFO")
        assert (tmp_path / f"r{n}.html").read_text().startswith("<!DOCTYPE html>")

    check()


def test_real_launch_waiver_shown(real_preflight, tmp_path):
    """A real `rdmacheck launch --dry-run --waive limits.memlock` (memlock is capped on this
    machine): the waiver, its reason, user and time reach the page; the preflight failure of the
    same gate on the same host is superseded by the newer launch result."""
    if not any(r.id == "limits.memlock" and r.status is Status.FAIL for r in _ev(real_preflight).results):
        pytest.skip("limits.memlock passes on this machine: nothing to waive")
    launch = tmp_path / "launch.json"
    r = run_cli("launch", "--role", "head", "--env", str(REPO / "docker" / ".env.example"), "--dry-run",
                "--waive", "limits.memlock", "--reason", "lab VM caps memlock at 8 MiB", "--json", str(launch), timeout=180)
    assert launch.is_file(), r.stderr
    lev = _ev(launch)
    w = next(x for x in lev.results if x.id == "limits.memlock").waiver
    assert w and w["reason"] == "lab VM caps memlock at 8 MiB"
    out = tmp_path / "r.html"
    model = make_report([str(real_preflight), str(launch)], out)
    assert [x["reason"] for x in model["waivers"]] == ["lab VM caps memlock at 8 MiB"]
    assert model["waivers"][0]["user"] == w["user"] and model["waivers"][0]["time"] == w["time"]
    node = model["nodes"][0]
    assert "limits.memlock" not in node["failing"] and node["kinds"] == ["launch", "preflight"]
    html = out.read_text()
    assert "lab VM caps memlock at 8 MiB" in html and _esc(w["time"]) in html
    assert any(x.id.startswith("docker.") for x in lev.results)
    for x in lev.results:
        if x.id.startswith("docker."):
            assert f'<td class="mono">{x.id}</td>' in html


def test_cluster_document_pairwise_and_dead_node(real_preflight, tmp_path):
    """The cluster-wide evidence of `rdmacheck cluster` (host "ray-cluster"): its gates are
    cluster gates, not a node; a dead node is named in the banner; the pairwise matrix, judged
    by the cluster's own code, shows as a heatmap with the bad link flagged."""
    from rdmacheck.cluster import matrix

    labels = ["n0", "n1", "n2", "n3"]
    bw = [[None if i == j else 11.8 for j in range(4)] for i in range(4)]
    bw[1][2] = bw[2][1] = 3.1                                   # the one bad cable
    data, res = matrix.judge(labels, bw, {}, 10.0, 0.5)
    data["rounds"] = [[["n0", "n1"], ["n2", "n3"]], [["n0", "n2"], ["n1", "n3"]], [["n0", "n3"], ["n1", "n2"]]]
    dead = Result("cluster.nodes", "fail", observed="3 of 4 node(s) answered; n3 dead during bench: raylet died",
                  remedy="check it and rerun")
    ev = Evidence(kind="cluster", host="ray-cluster", results=[dead, res],
                  context={"nodes": [{"label": x} for x in labels], "pairwise": data})
    files = [_write(ev, tmp_path / "cluster.json")]
    for h in labels[:3]:
        files.append(_replay(real_preflight, h, tmp_path))
    out = tmp_path / "r.html"
    model = make_report([str(f) for f in files], out)
    assert [n["host"] for n in model["nodes"]] == ["n0", "n1", "n2"]       # "ray-cluster" is not a node
    assert "n3 dead during bench" in model["reason"]
    flagged = {(f["a"], f["b"]) for f in model["pairwise"]["flagged"]}
    assert flagged and all({"n1", "n2"} == {a, b} for a, b in flagged)
    html = out.read_text()
    assert 'id="pairwise-heatmap"' in html and 'id="cluster-gates"' in html
    svg = base64.b64decode(model["pairwise"]["uri"].split(",", 1)[1]).decode()
    assert svg.startswith("<svg") and "n1" in svg


def test_mathtext_in_names_does_not_break_plots(tmp_path):
    """matplotlib reads '$...$' as mathtext; a host or op named '$\\frac$' must plot as text."""
    ev = Evidence(kind="bench", host="$\\frac$ $^^$", context={"backend": "gl$oo$"},
                  records=[{"op": "a$\\b$", "bytes": b, "busbw": 1.0, "algbw": 1.0, "time_us": 1.0, "in_place": False}
                           for b in (1024, 2048)])
    p = _write(ev, tmp_path / "m.json")
    model = make_report([str(p)], tmp_path / "r.html")
    svg = base64.b64decode(model["plots"][0]["uri"].split(",", 1)[1]).decode()
    assert "$\\frac$" in svg and "a$\\b$" in svg


def test_real_sysfs_replays_compare(captures, tmp_path):
    """Two nodes from `rdmacheck preflight --root` over two real hosts' sysfs captures: the
    firmware of their HCAs differs and is named; the IPoIB MTU only one of them reports is
    not reported, not a mismatch."""
    files = []
    for name, host in (("hwloc-32em64t-mlx4", "ib-node-a"), ("prometheus-procfs", "ib-node-b")):
        p = tmp_path / f"{name}.json"
        r = run_cli("preflight", "-q", "--root", str(captures / "sysfs" / name), "--json", str(p), timeout=120)
        assert p.is_file(), r.stderr
        ev = _ev(p)
        ev.host = host
        files.append(str(_write(ev, p)))
    model = make_report(files, tmp_path / "r.html")
    rows = {r["key"]: r for r in model["consistency"]}
    fw = rows["firmware"]
    assert not fw["agree"] and "HCA firmware differs" in model["reason"]
    assert dict(fw["groups"])["2.11.500"] == ["ib-node-a"]                  # mlx4_0 fw_ver in the hwloc capture
    assert rows["netdev_mtu"]["agree"] and rows["netdev_mtu"]["reported"] == 1   # ib0 mtu 2044 on node a only


def test_per_node_path_line_from_real_h100_logs(tmp_path):
    """context.path_proof.nodes as the bench hook builds it (rdmacheck.bench.path_proof.per_node)
    from the real 2x H100 NET/Socket run's per-rank NCCL logs and wire rows: one line per node,
    transport next to the bytes on the wire and the busbw at that size."""
    from rdmacheck.bench.path_proof import per_node
    from rdmacheck.nccl.log import parse_file

    src = NCCL_LOGS / "h100x2-socket.bench.json"
    if not src.is_file():
        pytest.skip("tests/data/nccl-logs/h100x2-socket.bench.json not committed")
    ev = _ev(src)
    ranks = ev.context["ranks"]
    by_host = {r["host"]: parse_file(NCCL_LOGS / f"h100x2-socket.rank{r['rank']}.log") for r in ranks}
    wire = next(r for r in ev.results if r.id == "bench.wire")
    ev.context.setdefault("path_proof", {})["nodes"] = per_node(ranks, by_host, wire.details.get("rows") or [])
    p = _write(ev, tmp_path / "bench.json")
    model = make_report([str(p)], tmp_path / "r.html")
    rows = model["path_nodes"][0]["rows"]
    assert [r["host"] for r in rows] == sorted(r["host"] for r in ranks)
    big = max(wire.details["rows"], key=lambda r: r["bytes"])
    busbw = next(x["busbw"] for x in ev.records if x["bytes"] == big["bytes"] and x["op"] == big["op"])
    for r in rows:
        assert r["net"] == "Socket" and r["gdr"] == "off" and r["paths"].startswith("NET/Socket x")
        assert r["busbw"] == pytest.approx(busbw) and r["verdict"] == big["verdict"]
    html = (tmp_path / "r.html").read_text()
    assert '<table class="path-nodes">' in html
