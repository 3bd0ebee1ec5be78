"""Two "hosts" on one machine: torchrun across a veth pair, the path proven by counters.

Real components only: two network namespaces (each with its own UTS namespace
and host name, so the evidence names two hosts), a veth pair at MTU 9000 in a
test subnet, torchrun's c10d rendezvous across the veth, ``rdmacheck bench
--backend gloo`` with the path-proof hook, and the veth's own
/sys/class/net/<if>/statistics counters.

Net of the details:
- ``ip netns exec`` shares the host's UTS namespace, so both sides would have
  the same host name; ``unshare --uts`` + ``hostname`` gives each its own.
- torchrun decides who hosts the c10d store by matching the endpoint against
  the machine's host name/addresses, which fails inside a namespace: node 0
  says ``--rdzv-conf is_host=1`` and every node gives ``--local-addr`` (else
  workers are told to reach the store at the unresolvable host name).
- A second link ("mgmt", 10.199.1.0/24) lets one run send gloo's traffic over
  the management network while the proof watches the data link: bench.wire
  must fail and name mgmt as the carrier.

Each run takes ~10 s; every process is started in its own process group and
the group is killed on timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO, NetnsPair, _can_netns, require, require_module

pytestmark = pytest.mark.netns

RUN_TIMEOUT = 120  # seconds for one two-node run, rendezvous included (~10 s on an idle 2-core box)
PORT = 29731


class TwoHosts(NetnsPair):
    """NetnsPair plus a second 'management' veth pair between the same namespaces."""

    def __init__(self) -> None:
        super().__init__(mtu=9000, subnet_prefix="10.199.0")
        tag = self.va[2:]
        self.ma, self.mb = f"ma{tag}", f"mb{tag}"
        self.mip_a, self.mip_b = "10.199.1.1", "10.199.1.2"

    def up(self) -> "TwoHosts":
        super().up()
        self.sh("ip", "link", "add", self.ma, "netns", self.a, "type", "veth", "peer", "name", self.mb, "netns", self.b)
        for ns, dev, ip in ((self.a, self.ma, self.mip_a), (self.b, self.mb, self.mip_b)):
            self.ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            self.ns(ns, "ip", "link", "set", dev, "up")
        return self


@pytest.fixture(scope="module")
def hosts():
    require(_can_netns(), "network namespaces need root and iproute2 (ip netns add)", "netns")
    import shutil

    require(shutil.which("unshare") is not None, "unshare is needed for per-namespace host names", "unshare")
    require_module("torch")  # every test here runs torchrun in the namespaces
    pair = TwoHosts().up()
    try:
        yield pair
    finally:
        pair.down()


def _torchrun(pair: TwoHosts, tmp: Path, node: int, env_extra: dict[str, str], bench_args: list[str], run_id: str,
              port: int) -> subprocess.Popen:
    ns = pair.a if node == 0 else pair.b
    addr = pair.ip_a if node == 0 else pair.ip_b
    hostname = f"node-{'ab'[node]}-{run_id[:4]}"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(env_extra)
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{pair.ip_a}:{port}", "--rdzv-id", run_id,
        "--rdzv-conf", f"is_host={1 if node == 0 else 0},join_timeout=60",
        "--local-addr", addr, "--max-restarts", "0",
        "-m", "rdmacheck", "bench", "--backend", "gloo", *bench_args,
    ]
    inner = "hostname \"$1\" && shift && exec \"$@\""
    full = ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", inner, "sh", hostname, *cmd]
    out = open(tmp / f"node{node}.log", "w")
    return subprocess.Popen(full, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_two_nodes(pair: TwoHosts, tmp: Path, env0: dict[str, str], env1: dict[str, str], bench_args: list[str],
                  port: int) -> tuple[int, int, dict]:
    """Start both nodes, wait (bounded), kill both process groups on timeout; rank 0's evidence."""
    run_id = uuid.uuid4().hex[:8]
    json_path = tmp / "bench.json"
    args = [*bench_args, "--json", str(json_path), "--timeout", "40"]
    procs = [_torchrun(pair, tmp, 0, env0, args, run_id, port), _torchrun(pair, tmp, 1, env1, args, run_id, port)]
    rcs = []
    try:
        for p in procs:
            rcs.append(p.wait(timeout=RUN_TIMEOUT))
    except subprocess.TimeoutExpired:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        logs = "\n".join((tmp / f"node{i}.log").read_text()[-3000:] for i in range(2))
        pytest.fail(f"two-node run did not finish in {RUN_TIMEOUT} s:\n{logs}")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
    if not json_path.is_file():
        logs = "\n".join((tmp / f"node{i}.log").read_text()[-3000:] for i in range(2))
        pytest.fail(f"rank 0 wrote no evidence (exit codes {rcs}):\n{logs}")
    return rcs[0], rcs[1], json.loads(json_path.read_text())


def _result(ev: dict, rid: str) -> dict:
    found = [r for r in ev["results"] if r["id"] == rid]
    assert found, f"{rid} missing from {[r['id'] for r in ev['results']]}"
    return found[0]


HOOK = ["--hook", "rdmacheck.bench.path_proof:install"]
SIZES = ["--op", "all_reduce,sendrecv", "--sizes", "64K,4M", "--iters", "20", "--warmup", "2"]


def test_two_nodes_over_veth_wire_passes(hosts: TwoHosts, tmp_path: Path):
    """Rendezvous across the veth; the veth's counters show the collective's bytes: bench.wire passes."""
    env0 = {"GLOO_SOCKET_IFNAME": hosts.va, "RDMACHECK_PATH_DIR": str(tmp_path / "logs")}
    env1 = {"GLOO_SOCKET_IFNAME": hosts.vb, "RDMACHECK_PATH_DIR": str(tmp_path / "logs")}
    rc0, rc1, ev = run_two_nodes(hosts, tmp_path, env0, env1, [*SIZES, *HOOK], PORT)
    assert (rc0, rc1) == (0, 0), (tmp_path / "node0.log").read_text()[-3000:]
    ctx = ev["context"]
    assert ctx["world_size"] == 2 and ctx["backend"] == "gloo"
    # two "hosts": each rank recorded its own host name
    assert sorted(r["host"][:6] for r in ctx["ranks"]) == ["node-a", "node-b"]
    wire = _result(ev, "bench.wire")
    assert wire["status"] == "pass", wire
    rows = {(r["op"], r["bytes"]): r for r in wire["details"]["rows"]}
    ar = rows[("all_reduce", 4 << 20)]
    assert ar["verdict"] == "pass" and ar["factor"] == 1.0  # 2(n-1)/n with n = 2
    # calls in the window: in-place only for gloo all_reduce: 2 warm-up + 20 timed + 1 check
    assert ar["calls"] == 23
    assert ar["expected_bytes"] == 23 * (4 << 20)
    for node in ar["nodes"]:
        assert node["hcas"] == {}  # gloo: no HCA selected
        (ifname, c), = node["netdevs"].items()
        assert ifname in (hosts.va, hosts.vb)
        # TCP/IP headers (~1% at MTU 9000) plus the barriers' small messages: a little above 1.0x
        assert 1.0 <= node["ratio"] < 1.1, node
        assert c["tx"] >= 23 * (4 << 20) and c["rx"] >= 23 * (4 << 20)
    # 64 KiB x 23 calls is 1.5 MB: judged too; sendrecv moves size per call one way each
    sr = rows[("sendrecv", 4 << 20)]
    assert sr["verdict"] == "pass" and all(0.9 < n["ratio"] < 1.2 for n in sr["nodes"]), sr
    assert wire["details"]["watched"][ar["nodes"][0]["host"]]["netdevs"] in ([hosts.va], [hosts.vb])
    assert _result(ev, "bench.transport")["status"] == "skip"  # gloo: no NCCL account to judge
    # one line per node for the report: the largest judged size, its own veth
    nodes = ctx["path_proof"]["nodes"]
    assert len(nodes) == 2 and all(n["wire"]["verdict"] == "pass" for n in nodes.values())
    assert sorted(d for n in nodes.values() for d in n["wire"]["devices"]) == sorted([hosts.va, hosts.vb])


def test_traffic_on_mgmt_network_fails_wire(hosts: TwoHosts, tmp_path: Path):
    """gloo pinned to the management link while the proof watches the data link: bench.wire fails."""
    common = {"RDMACHECK_PATH_DIR": str(tmp_path / "logs")}
    env0 = {**common, "GLOO_SOCKET_IFNAME": hosts.ma, "RDMACHECK_WIRE_IFNAME": hosts.va}
    env1 = {**common, "GLOO_SOCKET_IFNAME": hosts.mb, "RDMACHECK_WIRE_IFNAME": hosts.vb}
    small = ["--op", "all_reduce", "--sizes", "4M", "--iters", "20", "--warmup", "2"]
    rc0, rc1, ev = run_two_nodes(hosts, tmp_path, env0, env1, [*small, *HOOK], PORT + 1)
    assert rc0 == 1, (tmp_path / "node0.log").read_text()[-3000:]  # a gate failed
    wire = _result(ev, "bench.wire")
    assert wire["status"] == "fail", wire
    ar = {(r["op"], r["bytes"]): r for r in wire["details"]["rows"]}[("all_reduce", 4 << 20)]
    assert ar["verdict"] == "fail"
    for node in ar["nodes"]:
        assert node["ratio"] < 0.01  # the data link carried (almost) nothing
        assert node["top_other"]["name"] in (hosts.ma, hosts.mb)
        assert node["top_other"]["bytes"] >= 23 * (4 << 20)
    assert hosts.ma in wire["observed"] or hosts.mb in wire["observed"]
    assert "bench.wire" in (tmp_path / "node0.log").read_text()
