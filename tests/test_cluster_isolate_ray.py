"""``rdmacheck cluster --isolate`` on a real multi-node Ray cluster (marker ``ray``).

One ``ray.cluster_utils.Cluster`` for the module (head + 4 worker raylets,
gloo over loopback, the settings of shared/testbeds/ray.md, through
test_cluster_ray's ``ray_test_cluster``).  Nothing is mocked:

* healthy: every node cleared, nothing quarantined, a validated record per
  node; a second run with --skip-validated-within measures none of them.
* slow for real: a 6th raylet and every process it starts are put in a CPU
  cgroup limited to 15 % of one CPU while its rank actor imports torch, and
  to 2 % once the isolation phase starts (cgroup v1 ``cpu.cfs_quota_us`` on
  this machine, whose cgroup2 mount has no cpu controller; ``cpu.max`` where
  the unified hierarchy has one); the cgroup's own nr_throttled proves the
  limit bit.  --isolate must name that node, and only it,
  record it in the quarantine list, and say why in cluster.json and the
  report.
* frozen (opt-in, RDMACHECK_LONG_RAY=1, ~90 s): a 6th raylet and its workers frozen through a cgroup
  freezer: its group times out, is retried, and the node is named once Ray declares it dead.
* killed: a 6th raylet is removed (``cluster.remove_node``: its raylet and
  workers get SIGTERM) once the isolation phase has started; it must be
  named as gone within the bound, and the other nodes must still be cleared.

Run under ``flock /tmp/ray.lock``.
"""

from __future__ import annotations

import html as htmlmod
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import require
from rdmacheck.cluster.nodes import GRACE_S
from test_cluster_ray import NODE_ARGS, ray_test_cluster

pytestmark = pytest.mark.ray

# --node-timeout also bounds the rank actors' start: six torch imports on a 2-core machine beside a CPU hog
# took 82 s.  Every bound a test holds the command to, or waits for it with, follows from this one.
NODE_TIMEOUT = 180
BOUND = NODE_TIMEOUT + GRACE_S  # one phase: the rank actors' start, or one measurement (--measure-timeout's default)
FAST = ["--no-preflight", "--isolate-sizes", "1M", "--iters", "20", "--warmup", "3", "--node-timeout", str(NODE_TIMEOUT),
        "--expect-busbw", "0.001"]


@pytest.fixture(scope="module")
def ray_cluster():
    with ray_test_cluster([{"node_name": f"w{i}"} for i in range(1, 5)]) as c:
        yield c


def _cmd(cluster, env, tmp: Path, out: Path, *extra: str) -> subprocess.Popen:
    (tmp / "empty.env").write_text("")
    return subprocess.Popen(
        [sys.executable, "-m", "rdmacheck", "cluster", "--ray-address", cluster.address, "--out-dir", str(out),
         "--env", str(tmp / "empty.env"), "--isolate", "--quarantine-file", str(tmp / "quarantine.json"),
         "--validated-dir", str(tmp / "validated"), *FAST, *extra],
        cwd=tmp, env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(cluster, env, tmp: Path, out: Path, *extra: str, timeout: float = 4 * BOUND) -> tuple[int, str, dict]:
    p = _cmd(cluster, env, tmp, out, *extra)
    text, _ = p.communicate(timeout=timeout)
    print(text)
    return p.returncode, text, json.loads((out / "cluster.json").read_text())


def _gate(cl: dict, gid: str) -> dict:
    return next(r for r in cl["results"] if r["id"] == gid)


def test_healthy_fleet_quarantines_none_and_skip_validated_measures_none(ray_cluster, tmp_path):
    cluster, env = ray_cluster
    rc, text, cl = _run(cluster, env, tmp_path, tmp_path / "run1")
    iso = cl["context"]["isolate"]
    labels = [n["label"] for n in cl["context"]["nodes"]]
    assert len(labels) == 5
    assert rc == 0, text
    assert iso["quarantine"] == {} and iso["quarantined"] == [] and iso["bad_links"] == []
    assert sorted(iso["cleared"]) == sorted(labels)
    # every first-round group is a real gloo measurement with a busbw
    screens = [e for e in iso["log"] if e["purpose"] == "screen"]
    assert sorted(x for e in screens for x in e["nodes"]) == sorted(labels)
    assert all(e["busbw"] and e["busbw"] > 0 for e in screens)
    assert _gate(cl, "cluster.isolate")["status"] in ("pass", "warn")
    assert json.loads((tmp_path / "quarantine.json").read_text())["nodes"] == {}
    recs = sorted((tmp_path / "validated").glob("*.json"))
    assert len(recs) == 5
    # again, skipping what passed within the hour: nothing is measured, every node is cited
    rc, text, cl = _run(cluster, env, tmp_path, tmp_path / "run2", "--skip-validated-within", "1h")
    iso = cl["context"]["isolate"]
    assert rc == 0, text
    assert sorted(iso["skipped_validated"]) == sorted(labels) and iso["measurements"] == 0
    assert "5 validated recently" in _gate(cl, "cluster.isolate")["observed"]


def _cpu_cgroup(name: str, percent: int) -> tuple[Path, Path, str]:
    """A child CPU cgroup limited to ``percent`` of one CPU: (its folder, the root's procs file, the limit written)."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        ctl = base / "cgroup.controllers"
        if ctl.exists() and "cpu" in ctl.read_text().split():
            d = base / name
            d.mkdir()
            (d / "cpu.max").write_text(f"{percent * 1000} 100000")
            return d, base / "cgroup.procs", "cpu.max=" + (d / "cpu.max").read_text().strip()
    v1 = Path("/sys/fs/cgroup/cpu")
    require((v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK),
            "no writable CPU cgroup (v2 cpu.max or v1 cpu.cfs_quota_us) to slow a node down")
    d = v1 / name
    d.mkdir()
    (d / "cpu.cfs_period_us").write_text("100000")
    (d / "cpu.cfs_quota_us").write_text(str(percent * 1000))
    return d, v1 / "cgroup.procs", "cpu.cfs_quota_us=" + (d / "cpu.cfs_quota_us").read_text().strip()


def _set_limit(d: Path, percent: int) -> None:
    if (d / "cpu.max").exists():
        (d / "cpu.max").write_text(f"{percent * 1000} 100000")
    else:
        (d / "cpu.cfs_quota_us").write_text(str(percent * 1000))


def _throttled(d: Path) -> int:
    stat = dict(line.split() for line in (d / "cpu.stat").read_text().splitlines() if len(line.split()) == 2)
    return int(stat.get("nr_throttled", 0))


def _tree(pid: int) -> list[int]:
    import psutil

    p = psutil.Process(pid)
    return [p.pid] + [c.pid for c in p.children(recursive=True)]


def test_a_cpu_limited_node_is_named_alone_and_quarantined(ray_cluster, tmp_path):
    cluster, env = ray_cluster
    cg, root_procs, limit = _cpu_cgroup(f"rdmc-slow-{uuid.uuid4().hex[:6]}", 15)
    slow = None
    try:
        slow = cluster.add_node(**NODE_ARGS, node_name="slow")
        cluster.wait_for_nodes(timeout=60)
        raylet = slow.all_processes["raylet"][0].process.pid
        for pid in _tree(raylet):  # the workers it starts from now on inherit the cgroup
            (cg / "cgroup.procs").write_text(str(pid))
        assert raylet in {int(x) for x in (cg / "cgroup.procs").read_text().split()}, limit
        before = _throttled(cg)
        # 6 iterations, not 20: the slow node is measured three times (a screen and two confirmations), and
        # the contrast needs no more
        p = _cmd(cluster, env, tmp_path, tmp_path / "run", "--iters", "6", "--warmup", "1")
        lines, deadline = [], time.monotonic() + 2 * BOUND
        for line in p.stdout:
            lines.append(line)
            if "isolate: " in line:
                # the node's actor has imported torch (at 15 %, in seconds); from now on 2 %, applied at once
                # to every process of the cgroup.  Not 1 %: each measurement's set-up (its process group) then
                # takes the slow node 20 s.  Beside stress-ng --cpu 2 the slow pair measured 0.0026-0.0057 GB/s
                # against a median of 0.10-0.12 (the ranks at nice 0: see ray_test_cluster).
                _set_limit(cg, 2)
                break
            assert time.monotonic() < deadline, "".join(lines)
        rest, _ = p.communicate(timeout=6 * BOUND)
        rc, text = p.returncode, "".join(lines) + rest
        print(text)
        cl = json.loads((tmp_path / "run" / "cluster.json").read_text())
        throttled = _throttled(cg) - before
        # again: the quarantined node is left out and named (the others passed minutes ago: skipped too)
        rc2, text2, cl2 = _run(cluster, env, tmp_path, tmp_path / "again", "--skip-validated-within", "1h")
    finally:
        if slow is not None:
            cluster.remove_node(slow)
        for _ in range(50):
            for pid in (cg / "cgroup.procs").read_text().split():
                try:
                    root_procs.write_text(pid)
                except OSError:
                    pass
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.2)
    assert throttled > 0, f"the {limit} limit never throttled the node's processes"
    iso = cl["context"]["isolate"]
    labels = [n["label"] for n in cl["context"]["nodes"]]
    target = [l for l in labels if l.endswith("/slow")]
    assert len(labels) == 6 and len(target) == 1, labels
    assert rc == 1, text
    assert list(iso["quarantine"]) == target, iso["quarantine"]
    why = iso["quarantine"][target[0]]
    assert "fleet median" in why or "no answer" in why, why
    assert sorted(iso["cleared"]) == sorted(set(labels) - set(target))
    # recorded in the quarantine list with the reason and time; Ray could not label it
    q = json.loads((tmp_path / "quarantine.json").read_text())
    assert list(q["nodes"]) == target and q["nodes"][target[0]]["reason"] == why
    assert q["nodes"][target[0]]["time"].endswith("Z") and q["label"] == "rdmacheck=quarantined"
    assert iso["ray_labels"]["supported"] is False and "labels" in iso["ray_labels"]["note"]
    gate = _gate(cl, "cluster.isolate")
    assert gate["status"] == "fail" and target[0] in gate["observed"]
    assert not (tmp_path / "validated" / f"{target[0].replace('/', '_')}.json").exists()
    # the report: the quarantine table comes first, with the reason
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.index('id="quarantined"') < html.index('id="nodes"')
    start = html.index('id="quarantine-table"')
    table = html[start:html.index("</table>", start)]
    assert target[0] in table and "quarantined now" in table
    assert htmlmod.escape(why.split(" (beside")[0], quote=False) in table
    # the second run: left out (nothing measures it), cited as quarantined before
    iso2 = cl2["context"]["isolate"]
    assert list(iso2["quarantined_before"]) == target, text2
    assert sorted(iso2["skipped_validated"]) == sorted(set(labels) - set(target))
    assert iso2["measurements"] == 0 and iso2["quarantine"] == {} and rc2 == 0, text2
    assert "quarantined before, not measured" in (tmp_path / "again" / "report.html").read_text()


def test_a_node_killed_mid_isolation_is_named_within_the_bound(ray_cluster, tmp_path):
    cluster, env = ray_cluster
    doomed = cluster.add_node(**NODE_ARGS, node_name="doomed")
    cluster.wait_for_nodes(timeout=60)
    # larger messages: the first round lasts seconds, so the node dies inside it
    p = _cmd(cluster, env, tmp_path, tmp_path / "run", "--isolate-sizes", "16M", "--iters", "30",
             "--quarantine-only")
    lines, deadline = [], time.monotonic() + 2 * BOUND
    for line in p.stdout:
        lines.append(line)
        if "isolate: round 1" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    t_kill = time.monotonic()
    cluster.remove_node(doomed)
    t_named = None
    for line in p.stdout:
        lines.append(line)
        if t_named is None and "doomed" in line and ("FAILED" in line or "dead" in line):
            t_named = time.monotonic()
        assert time.monotonic() - t_kill < 4 * BOUND, "".join(lines)
    p.wait(timeout=30)
    elapsed = time.monotonic() - t_kill
    text = "".join(lines)
    print(text)
    # named from Ray's own error (or its node table, polled every second, after 5 s of grace) within
    # seconds, not after --measure-timeout (BOUND); then at most fresh actors and the survivors' measurement,
    # each within its bound, and the report
    assert t_named is not None and t_named - t_kill < 20, (t_named and t_named - t_kill, text)
    assert elapsed < (t_named - t_kill) + 2 * BOUND + 30, (elapsed, text)
    cl = json.loads((tmp_path / "run" / "cluster.json").read_text())
    iso = cl["context"]["isolate"]
    labels = [n["label"] for n in cl["context"]["nodes"]]
    gone = [l for l in labels if l.endswith("/doomed")]
    assert len(gone) == 1 and p.returncode == 1, text
    assert list(iso["bad"]) == gone and "gone during isolation" in iso["bad"][gone[0]] and "node has died" in iso["bad"][gone[0]], iso["bad"]
    assert sorted(iso["cleared"]) == sorted(set(labels) - set(gone)), iso
    node = next(n for n in cl["context"]["nodes"] if n["label"] == gone[0])
    assert node["state"] == "dead" and node["phase"] == "isolate", node
    # --quarantine-only: named, not recorded
    assert not (tmp_path / "quarantine.json").exists() or \
        json.loads((tmp_path / "quarantine.json").read_text())["nodes"] == {}
    assert iso["quarantine_applied"] is False


def _freezer(name: str) -> tuple[Path, Path, str]:
    """A child freezer cgroup: (its folder, the root's procs file, the file that freezes it)."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (base / "cgroup.controllers").exists() and (base / "cgroup.subtree_control").exists():
            try:
                (base / name).mkdir()
            except OSError:
                continue
            if (base / name / "cgroup.freeze").exists():
                return base / name, base / "cgroup.procs", "cgroup.freeze"
            (base / name).rmdir()
    v1 = Path("/sys/fs/cgroup/freezer")
    require((v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK), "no writable freezer cgroup")
    (v1 / name).mkdir()
    return v1 / name, v1 / "cgroup.procs", "freezer.state"


@pytest.mark.skipif(os.environ.get("RDMACHECK_LONG_RAY") != "1",
                    reason="long (~90 s: Ray's own heartbeat timeout decides when the frozen node is dead); "
                           "set RDMACHECK_LONG_RAY=1")
def test_a_frozen_node_times_out_is_retried_and_named(ray_cluster, tmp_path):
    """A 6th raylet and its workers are frozen (cgroup freezer) once the isolation phase starts: its
    group gives no answer within --measure-timeout, is killed and retried; the frozen node's actor cannot
    be replaced, Ray declares the node dead, and it is named while the rest is cleared."""
    cluster, env = ray_cluster
    fz, root_procs, ctl = _freezer(f"rdmc-frz-{uuid.uuid4().hex[:6]}")
    stuck = cluster.add_node(**NODE_ARGS, node_name="stuck")
    try:
        cluster.wait_for_nodes(timeout=60)
        raylet = stuck.all_processes["raylet"][0].process.pid
        p = _cmd(cluster, env, tmp_path, tmp_path / "run", "--measure-timeout", "8", "--quarantine-only")
        lines = []
        for line in p.stdout:
            lines.append(line)
            if "isolate: " in line and not (fz / ctl).read_text().strip() in ("1", "FROZEN"):
                for pid in _tree(raylet):
                    (fz / "cgroup.procs").write_text(str(pid))
                (fz / ctl).write_text("1" if ctl == "cgroup.freeze" else "FROZEN")
        p.wait(timeout=300)
    finally:
        (fz / ctl).write_text("0" if ctl == "cgroup.freeze" else "THAWED")
        cluster.remove_node(stuck)
        for _ in range(50):
            for pid in (fz / "cgroup.procs").read_text().split():
                try:
                    root_procs.write_text(pid)
                except OSError:
                    pass
            try:
                fz.rmdir()
                break
            except OSError:
                time.sleep(0.2)
    text = "".join(lines)
    print(text)
    iso = json.loads((tmp_path / "run" / "cluster.json").read_text())["context"]["isolate"]
    labels = [n["label"] for n in json.loads((tmp_path / "run" / "cluster.json").read_text())["context"]["nodes"]]
    gone = [l for l in labels if l.endswith("/stuck")]
    assert p.returncode == 1 and list(iso["bad"]) == gone, text
    first = [e for e in iso["log"] if gone[0] in e["nodes"]]
    assert first[0]["timed_out"] and re.search(r"no answer within [0-9.]+ s", first[0]["error"]), first
    assert any(e["attempt"] == 2 for e in first), first          # the timed-out group was run once more
    assert sorted(iso["cleared"]) == sorted(set(labels) - set(gone))
