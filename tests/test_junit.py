"""JUnit XML: one testcase per gate per node, failures carry the remedy; read back by a JUnit
library (junitparser) and validated against the CI-consumer schema in tests/data/junit/."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, require, run_cli
from rdmacheck.evidence.model import Evidence, Result, Status
from rdmacheck.output.junit import junit_xml, write_junit

XSD = REPO / "tests" / "data" / "junit" / "junit-ci.xsd"


def _schema():
    try:
        import xmlschema
    except ImportError:
        xmlschema = None
    require(xmlschema is not None, "xmlschema validates JUnit XML against the CI schema", "dev")
    return xmlschema.XMLSchema(str(XSD))


@pytest.fixture(scope="module")
def real_preflight(tmp_path_factory) -> Evidence:
    p = tmp_path_factory.mktemp("pf") / "preflight.json"
    r = run_cli("preflight", "--json", str(p), timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return Evidence.from_dict(json.loads(p.read_text()))


def _as(ev: Evidence, host: str) -> Evidence:
    e = Evidence.from_dict(ev.to_dict())
    e.host = host
    return e


def test_one_case_per_gate_per_node(real_preflight, tmp_path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    nodes = [_as(real_preflight, h) for h in ("spark-01", "spark-02")]
    path = write_junit(nodes, tmp_path / "gates.xml")
    _schema().validate(str(path))
    xml = JUnitXml.fromfile(str(path))
    suites = {s.name: s for s in xml}
    assert set(suites) == {"spark-01", "spark-02"}
    n_fail = sum(1 for r in real_preflight.results if r.effective_status is Status.FAIL)
    n_skip = sum(1 for r in real_preflight.results if r.effective_status is Status.SKIP)
    for host, suite in suites.items():
        cases = list(suite)
        assert [c.name for c in cases] == [r.id for r in real_preflight.results]
        assert {c.classname for c in cases} == {host}
        assert suite.tests == len(cases) and suite.failures == n_fail and suite.skipped == n_skip
        by_id = {r.id: r for r in real_preflight.results}
        for c in cases:
            r = by_id[c.name]
            kinds = {type(x) for x in c.result}
            if r.effective_status is Status.FAIL:
                assert kinds == {Failure}
                assert r.remedy in c.result[0].text and c.result[0].message == r.observed
            elif r.effective_status is Status.SKIP:
                assert kinds == {Skipped}
            else:
                assert Error not in kinds and Failure not in kinds
    assert xml.failures == 2 * n_fail


def test_waived_failure_is_skipped_with_who_and_why(real_preflight, tmp_path):
    ev = _as(real_preflight, "n1")
    ev.kind = "launch"
    ev.results = [Result("limits.memlock", "fail", observed="soft 8 MiB", remedy="raise memlock",
                         waiver={"reason": "capped by the VM", "user": "alice", "time": "2026-11-27T12:00:00+00:00"})]
    text = junit_xml([ev])
    from junitparser import JUnitXml, Skipped

    xml = JUnitXml.fromstring(text)
    case = next(iter(next(iter(xml))))
    assert isinstance(case.result[0], Skipped)
    assert "alice" in case.result[0].message and "capped by the VM" in case.result[0].message


def test_cross_node_mismatch_is_a_failing_case(real_preflight, tmp_path):
    from junitparser import Failure, JUnitXml


    files = []
    for host, mtu in (("a", 9000), ("b", 1500)):
        ev = _as(real_preflight, host)
        ev.context.setdefault("facts", {})["ports"] = [{"netdev_mtu": mtu}]
        p = tmp_path / f"{host}.json"
        p.write_text(ev.to_json())
        files.append(str(p))
    junit = tmp_path / "j.xml"
    r = run_cli("report", *files, "--junit", str(junit), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 1, r.stderr
    _schema().validate(str(junit))
    suites = {s.name: s for s in JUnitXml.fromfile(str(junit))}
    cross = {c.name: c for c in suites["cross-node"]}
    mtu = cross["consistency.netdev_mtu"]
    assert isinstance(mtu.result[0], Failure) and "9000: a" in mtu.result[0].text and "1500: b" in mtu.result[0].text


def test_hostile_and_control_characters(tmp_path):
    from junitparser import JUnitXml

    host = '<script>alert(1)</script>"&\x1b[31m'
    ev = Evidence(kind="preflight", host=host, results=[
        Result("rdma.netdev", "fail", observed='"><img src=x onerror=alert(1)>', remedy="fix \x00it")])
    path = write_junit([ev], tmp_path / "j.xml")
    _schema().validate(str(path))
    suite = next(iter(JUnitXml.fromfile(str(path))))
    # XML 1.0 cannot hold ESC or NUL, even escaped: rdmacheck.util.sanitize shows them as visible \xNN text
    assert suite.name == '<script>alert(1)</script>"&\\x1b[31m'
    case = next(iter(suite))
    assert case.result[0].message == '"><img src=x onerror=alert(1)>' and "fix \\x00it" in case.result[0].text


def test_bench_results_become_cases(tmp_path):
    ev = Evidence(kind="bench", host="spark-01", results=[
        Result("bench.busbw", "fail", observed="median 3.1 GB/s", expected=">= 12 GB/s", remedy="check the path proof"),
        Result("bench.check", "pass")])
    from junitparser import JUnitXml

    xml = JUnitXml.fromstring(junit_xml([ev]))
    suite = next(iter(xml))
    assert [c.name for c in suite] == ["bench.busbw", "bench.check"] and suite.failures == 1
