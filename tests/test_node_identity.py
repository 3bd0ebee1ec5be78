"""rdmacheck's node is NCCL's node: the NCCL host id beside the host name, and the wire gate compares by it.

NCCL (``getHostHash``, src/misc/utils.cc, 2.28) hashes ``$NCCL_HOSTID`` when set, else the host name followed by
the boot id (rdmacheck/facts/nodeid.py).  Here, on this machine's real /proc and real rank processes:

* the id and its source, from the real boot id and host name, and NCCL_HOSTID winning (even empty);
* two torchrun agents on this one machine (gloo over lo, the path-proof hook): with NCCL_HOSTID=node0/node1
  they are two nodes, both read lo's counters, and bench.wire judges lo against their summed bytes and says
  it compared by NCCL host id; without NCCL_HOSTID the same two agents are one node (as NCCL would see them)
  and bench.wire skips, naming the node and the rule;
* older evidence without the id (the committed 2x H100 namespace run) is still compared by host name, and says so.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_module
from rdmacheck.preflight.facts.nodeid import counter_scope, describe_sources, nccl_host_id, rank_facts, short
from rdmacheck.bench.gates import check_wire
from rdmacheck.evidence.model import Status

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def test_nccl_host_id_is_hostname_and_boot_id_unless_nccl_hostid_is_set(tmp_path):
    boot = BOOT_ID.read_text().split()[0]
    host = socket.gethostname()
    assert nccl_host_id({}) == {"id": host + boot, "source": "hostname+boot_id"}
    assert nccl_host_id({"NCCL_HOSTID": "node7"}) == {"id": "node7", "source": "NCCL_HOSTID"}
    # NCCL tests the variable for NULL: set but empty still replaces the host name and boot id
    assert nccl_host_id({"NCCL_HOSTID": ""}) == {"id": "", "source": "NCCL_HOSTID"}
    # no boot id to read (NCCL's fopen fails): the host name alone
    assert nccl_host_id({}, boot_id_path=str(tmp_path / "absent")) == {"id": host, "source": "hostname"}
    assert rank_facts({"NCCL_HOSTID": "a"}) == {"nccl_host_id": "a", "nccl_host_id_source": "NCCL_HOSTID"}
    assert short(host + boot, "hostname+boot_id") == f"{host} (boot {boot[:8]})"
    assert short("node0", "NCCL_HOSTID") == "node0"
    assert describe_sources({"NCCL_HOSTID"}) == "NCCL host id (NCCL_HOSTID)"
    assert describe_sources({None}) == "host name (no NCCL host id recorded)"


def test_counter_scope_is_this_kernels_network_namespace():
    boot = BOOT_ID.read_text().split()[0]
    assert counter_scope() == f"{boot}/{os.readlink('/proc/self/ns/net')}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_agents(tmp: Path, host_ids: list[str | None]) -> dict:
    """Two torchrun agents (--nnodes 2) on this machine, gloo over lo, the path-proof hook; rank 0's evidence."""
    port = _free_port()
    js = tmp / "b.json"
    procs = []
    for node, hid in enumerate(host_ids):
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
                   RDMACHECK_PATH_DIR=str(tmp / "logs"))
        env.pop("NCCL_HOSTID", None)
        if hid is not None:
            env["NCCL_HOSTID"] = hid
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", f"id{port}", "--max-restarts", "0", "-m", "rdmacheck", "bench", "--backend", "gloo",
               "--no-progress", "--op", "all_reduce", "--sizes", "64K,4M", "--iters", "20", "--warmup", "2",
               "--expect", "plateau_min_bytes=4M", "--expect-busbw", "0", "--timeout", "90",
               "--hook", "rdmacheck.bench.path_proof:install", "--json", str(js)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    return json.loads(js.read_text())


def _wire(ev: dict) -> dict:
    return next(r for r in ev["results"] if r["id"] == "bench.wire")


def test_two_agents_with_nccl_hostid_are_two_nodes_sharing_one_namespace(tmp_path):
    require_module("torch")
    ev = _two_agents(tmp_path, ["node0", "node1"])
    ranks = sorted(ev["context"]["ranks"], key=lambda r: r["rank"])
    assert {r["nccl_host_id"] for r in ranks} == {"node0", "node1"}
    assert {r["nccl_host_id_source"] for r in ranks} == {"NCCL_HOSTID"}
    assert {r["host"] for r in ranks} == {socket.gethostname()}     # one host name: it was one node before
    w = _wire(ev)
    d = w["details"]
    assert w["status"] == "pass", w
    assert d["compared_by"] == "NCCL host id (NCCL_HOSTID)" and d["nodes"] == ["node0", "node1"]
    assert list(d["shared_counters"].values()) == [["node0", "node1"]]
    assert w["observed"].endswith("(nodes by NCCL host id (NCCL_HOSTID): node0, node1; node0 and node1 read one "
                                  "network namespace's counters, judged against their summed bytes)"), w["observed"]
    row = next(r for r in d["rows"] if r["bytes"] == 4 << 20)
    assert row["verdict"] == "pass" and row["calls"] == 23   # gloo all_reduce in place: 2 warm-up + 20 + 1 check
    for n in row["nodes"]:
        # lo carries both nodes' bytes once each way: judged against 2 x the per-node bytes
        assert n["sharing"] == 2 and n["expected_bytes"] == 2 * row["expected_bytes"]
        assert n["netdevs"].keys() == {"lo"}
        assert 0.95 <= n["ratio"] < 3.0, n   # TCP's own bytes and the c10d store's on lo come on top
    # the per-node lines for the report are the two NCCL nodes, on one machine
    pp = ev["context"]["path_proof"]["nodes"]
    assert sorted(pp) == ["node0", "node1"]
    assert all(v["hostnames"] == [socket.gethostname()] and v["node_source"] == "NCCL_HOSTID" for v in pp.values())


def test_the_same_two_agents_without_nccl_hostid_are_one_node(tmp_path):
    require_module("torch")
    ev = _two_agents(tmp_path, [None, None])
    ranks = ev["context"]["ranks"]
    boot = BOOT_ID.read_text().split()[0]
    assert {r["nccl_host_id"] for r in ranks} == {socket.gethostname() + boot}
    w = _wire(ev)
    assert w["status"] == "skip", w
    assert w["observed"] == (f"all ranks on one node ({socket.gethostname()} (boot {boot[:8]}); nodes by NCCL host id "
                             "(host name + boot id)): no inter-node traffic to count")


def test_evidence_without_the_id_is_compared_by_host_name():
    """The committed 2x H100 run (two network+UTS namespaces, before the id was recorded), re-judged."""
    src = REPO / "tests" / "data" / "nccl-logs" / "h100x2-socket.bench.json"
    ev = json.loads(src.read_text())
    assert not any("nccl_host_id" in r for r in ev["context"]["ranks"])
    r = check_wire(ev["records"], ev["context"])
    assert r.status is Status.PASS
    assert r.details["compared_by"] == "host name (no NCCL host id recorded)"
    assert r.details["nodes"] == ["node-0", "node-1"] and r.details["shared_counters"] == {}
    assert r.observed.endswith("(nodes by host name (no NCCL host id recorded): node-0, node-1)")


H100_RUN = REPO / "benchmarks" / "results" / "gpu-two-nodes-h100x1-2026-12-07" / "bench-two-nodes-default.json"


def _strip_ids(records: list[dict]) -> list[dict]:
    """The same counter samples as evidence written before the id existed: host name only."""
    out = json.loads(json.dumps(records))
    for r in out:
        for n in (r.get("wire") or {}).get("nodes") or []:
            for k in ("node", "node_source", "scope"):
                n.pop(k, None)
    return out


def test_the_h100_two_node_run_is_judged_by_nccl_host_id():
    """Real records: two NCCL nodes (NCCL_HOSTID node0/node1) on one H100, NCCL 2.28.9 over NET/Socket on lo,
    1K..1G (benchmarks/results/gpu-two-nodes-h100x1-2026-12-07.md)."""
    ev = json.loads(H100_RUN.read_text())
    stored = next(r for r in ev["results"] if r["id"] == "bench.wire")
    r = check_wire(ev["records"], ev["context"])
    assert r.status is Status.PASS and r.observed == stored["observed"]
    assert r.details["compared_by"] == "NCCL host id (NCCL_HOSTID)" and r.details["nodes"] == ["node0", "node1"]
    assert list(r.details["shared_counters"].values()) == [["node0", "node1"]]
    rows = {row["bytes"]: row for row in r.details["rows"]}
    for nbytes, row in rows.items():
        ratios = [n["ratio"] for n in row["nodes"]]
        if nbytes >= 64 << 10:
            # lo carried what NCCL's ring must move for both nodes, to within 2 %
            assert row["verdict"] == "pass" and all(0.99 <= x <= 1.02 for x in ratios), (nbytes, ratios)
        else:
            # about twice that below 64 KiB: consistent with NCCL's LL protocol (a flag with every 8 data bytes)
            assert all(2.0 <= x <= 2.4 for x in ratios), (nbytes, ratios)
    # the report's per-node lines: the two NCCL nodes, one machine
    pp = ev["context"]["path_proof"]["nodes"]
    assert sorted(pp) == ["node0", "node1"] and all(v["hostnames"] == ["vm"] for v in pp.values())
    # what the gate said before NCCL's notion of a node: the same samples compared by host name are one node
    old = check_wire(_strip_ids(ev["records"]), ev["context"])
    assert old.status is Status.SKIP
    assert old.observed == ("all ranks on one node (vm; nodes by host name (no NCCL host id recorded)): "
                            "no inter-node traffic to count")
