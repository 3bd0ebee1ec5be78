"""JUnit XML: the format CI systems (Jenkins, GitLab, GitHub test reporters) show natively.

Shape (what those consumers read; tests/data/junit-ci.xsd checks it):

    <testsuites name="rdmacheck" tests failures errors skipped time>
      <testsuite name="<host>" hostname="<host>" timestamp tests failures errors skipped time>
        <properties><property name="evidence" value="preflight"/>...</properties>
        <testcase classname="<host>" name="<gate id>" time="0">
          <failure message="<observed>" type="fail"><remedy and expected></failure>   fail
          <skipped message="..."/>                                                    skip, waived fail
          <system-out>observed / expected</system-out>
        </testcase>

One suite per host, one testcase per gate (the newest result per gate id when
a host has several evidence files, as in the HTML report); cross-node
consistency goes in a suite named ``cross-node``.  Evidence that judged nothing
gives one failing testcase ``report.gates`` (never an empty, green file).  ElementTree escapes every
attribute and text node, so hostile host strings stay data.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

from rdmacheck.util.atomic import atomic_write
from rdmacheck.evidence.model import Evidence, Result, Status

GATE_KINDS = ("preflight", "launch", "cluster", "bench", "link")
NO_GATE_ID = "report.gates"   # the one testcase of a file whose evidence judged nothing
# XML 1.0 cannot carry most control characters, even escaped: drop them.
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(s: Any) -> str:
    from rdmacheck.util.sanitize import clean_text

    return _BAD_XML.sub("", clean_text(s if s is not None else ""))


def _timestamp(t: str) -> str:
    # JUnit's timestamp is xs:dateTime without zone on some consumers; keep ISO, drop offset
    m = re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", t or "")
    return m.group(0) if m else "1970-01-01T00:00:00"


def _case(suite: ET.Element, host: str, r: Result) -> tuple[int, int]:
    tc = ET.SubElement(suite, "testcase", classname=_x(host), name=_x(r.id), time="0")
    fails = skips = 0
    eff = r.effective_status
    if r.status is Status.FAIL and r.waiver:
        w = r.waiver if isinstance(r.waiver, dict) else {}
        ET.SubElement(tc, "skipped", message=_x(
            f"waived by {w.get('user', '?')} at {w.get('time', '?')}: {w.get('reason', '')}"))
        skips = 1
    elif eff is Status.FAIL:
        f = ET.SubElement(tc, "failure", message=_x(r.observed or "failed"), type="fail")
        f.text = _x(f"observed: {r.observed}\nexpected: {r.expected}\nremedy: {r.remedy}")
        fails = 1
    elif eff is Status.SKIP:
        ET.SubElement(tc, "skipped", message=_x(r.observed or r.remedy or "skipped"))
        skips = 1
    out = ET.SubElement(tc, "system-out")
    out.text = _x(f"{r.status.value.upper()}: observed {r.observed}; expected {r.expected}"
                  + (f"; remedy: {r.remedy}" if r.status is Status.WARN and r.remedy else ""))
    return fails, skips


def build_junit(evidence: Iterable[Evidence], consistency: list[dict[str, Any]] | None = None) -> ET.Element:
    by_host: dict[str, list[Evidence]] = {}
    for ev in evidence:
        if ev.kind in GATE_KINDS and ev.results:
            by_host.setdefault(ev.host, []).append(ev)
    root = ET.Element("testsuites", name="rdmacheck")
    total = tf = ts = 0
    for host in sorted(by_host):
        evs = sorted(by_host[host], key=lambda e: e.time or "")
        merged: dict[str, Result] = {}
        for ev in evs:
            for r in ev.results:
                merged[r.id] = r
        suite = ET.SubElement(root, "testsuite", name=_x(host), hostname=_x(host),
                              timestamp=_timestamp(evs[-1].time), time="0")
        props = ET.SubElement(suite, "properties")
        for ev in evs:
            ET.SubElement(props, "property", name=_x(f"evidence.{ev.kind}"), value=_x(ev.time))
        f = s = 0
        for r in merged.values():
            df, ds = _case(suite, host, r)
            f, s = f + df, s + ds
        suite.set("tests", str(len(merged)))
        suite.set("failures", str(f))
        suite.set("errors", "0")
        suite.set("skipped", str(s))
        total, tf, ts = total + len(merged), tf + f, ts + s
    rows = [r for r in (consistency or []) if r.get("reported", 0) >= 1]
    if rows:
        suite = ET.SubElement(root, "testsuite", name="cross-node", hostname="cluster",
                              timestamp=_timestamp(""), time="0")
        f = 0
        for r in rows:
            tc = ET.SubElement(suite, "testcase", classname="cross-node", name=_x(f"consistency.{r['key']}"), time="0")
            groups = "; ".join(f"{v}: {', '.join(h)}" for v, h in r["groups"])
            if not r["agree"]:
                fl = ET.SubElement(tc, "failure", message=_x(f"{r['label']} differs across nodes"), type="mismatch")
                fl.text = _x(f"{groups}\nremedy: make {r['label']} equal on every node ({r['why']})")
                f += 1
            out = ET.SubElement(tc, "system-out")
            out.text = _x(groups)
        suite.set("tests", str(len(rows)))
        suite.set("failures", str(f))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        total, tf = total + len(rows), tf + f
    if total == 0:
        # a CI test reporter shows an empty file as green: say that nothing was judged, as a failure
        suite = ET.SubElement(root, "testsuite", name="report", hostname="report", timestamp=_timestamp(""),
                              time="0", tests="1", failures="1", errors="0", skipped="0")
        tc = ET.SubElement(suite, "testcase", classname="report", name=NO_GATE_ID, time="0")
        fl = ET.SubElement(tc, "failure", message="no gate was evaluated", type="fail")
        fl.text = "the evidence holds no gate results (only bench numbers, e.g. imported nccl-tests runs); " \
                  "pass preflight, bench, launch or cluster evidence"
        total, tf = 1, 1
    root.set("tests", str(total))
    root.set("failures", str(tf))
    root.set("errors", "0")
    root.set("skipped", str(ts))
    root.set("time", "0")
    return root


def junit_xml(evidence: Iterable[Evidence], consistency: list[dict[str, Any]] | None = None) -> str:
    root = build_junit(evidence, consistency)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(evidence: Iterable[Evidence], path: str | Path,
                consistency: list[dict[str, Any]] | None = None) -> Path:
    return atomic_write(path, junit_xml(evidence, consistency))
