"""net.peer against real network namespaces joined by a veth pair.

Name resolution is real: ``ip netns exec NS`` bind-mounts /etc/netns/NS/hosts
and /etc/netns/NS/resolv.conf over /etc, so the probe's getaddrinfo reads the
hosts file and nameserver this test writes, as it would on a node.  The
black-holed DNS is a real UDP socket on the peer that swallows queries; the
black-holed peer is an address in the namespace subnet that nobody owns.
Nothing leaves the namespaces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, require_tool
from rdmacheck.preflight.checks.peer import parse_ray_address
from rdmacheck.preflight.facts import peer as pf

pytestmark = pytest.mark.netns

PROBE = r"""
import json, sys, time
from rdmacheck.config import Config, build_profile
from rdmacheck.preflight.gather import gather
from rdmacheck.preflight.root import HostRoot
import importlib
mod, fn, env, prof = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
gate = getattr(importlib.import_module(mod), fn)
cfg = Config(env, {}, None, build_profile(prof))
t0 = time.monotonic()
r = gate(gather(HostRoot("/"), cfg), cfg)[0]
print(json.dumps({"status": r.status.value, "observed": r.observed, "remedy": r.remedy,
                  "steps": r.details.get("steps", []), "elapsed": time.monotonic() - t0}))
"""

SERVER = r"""
import socket, sys, time
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
if kind == "tcp":
    s.listen(8)
print("ready", flush=True)
end = time.time() + 120          # never outlive the test by much
s.settimeout(1)
while time.time() < end:
    try:
        if kind == "tcp":
            c, _ = s.accept(); c.close()
        else:
            s.recvfrom(2048)     # a DNS server that swallows every query: the black hole
    except OSError:
        pass
"""


class Node:
    """Resolution files for a namespace (/etc/netns/NAME) and helper processes in it; all removed after."""

    def __init__(self, pair, ns: str):
        self.pair, self.ns = pair, ns
        self.etc = Path("/etc/netns") / ns
        self.procs: list[subprocess.Popen] = []

    def files(self, hosts: str, nameserver: str = "127.0.0.1", options: str = "") -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text("127.0.0.1 localhost\n" + hosts)
        (self.etc / "resolv.conf").write_text(f"nameserver {nameserver}\n" + (f"options {options}\n" if options else ""))

    def serve(self, kind: str, host: str, port: int) -> None:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", SERVER, kind, host, str(port)],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def gate(self, mod: str, fn: str, env: dict, profile: dict | None = None) -> dict:
        prof = {"subnet": "10.199.0.0/24", "mtu": 9000, **(profile or {})}
        p = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", PROBE, mod, fn,
                            json.dumps(env), json.dumps(prof)],
                           capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def close(self) -> None:
        for p in self.procs:
            p.kill()          # only the helpers this test started, by their own handle
            p.wait(timeout=10)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture
def nodes(netns_pair):
    require_tool("ping", "ping")  # net.peer's DF probe is the real iputils ping
    a, b = Node(netns_pair, netns_pair.a), Node(netns_pair, netns_pair.b)
    a.files(f"{netns_pair.ip_b} spark-02-mesh\n{netns_pair.ip_a} spark-01-mesh\n")
    try:
        yield netns_pair, a, b
    finally:
        a.close()
        b.close()


def steps(res: dict) -> dict:
    return {s["step"]: s for s in res["steps"]}


def worker_env(pair) -> dict:
    return {"MASTER_ADDR": "spark-02-mesh", "RAY_ADDRESS": "spark-02-mesh:6379", "NCCL_SOCKET_IFNAME": pair.va}


def test_worker_reaches_head_at_mtu_9000(nodes):
    pair, a, b = nodes
    b.serve("tcp", pair.ip_b, 6379)
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair))
    st = steps(res)
    assert res["status"] == "pass", res
    assert st["resolve"]["observed"].startswith(f"spark-02-mesh -> {pair.ip_b}")
    assert f"leaves via {pair.va}" in st["route"]["observed"]
    assert st["tcp"]["status"] == "pass"
    assert "8972 B payload" in st["mtu"]["observed"] and "-M do -s 8972" in st["mtu"]["cmd"]


def test_df_ping_fails_clearly_at_mtu_1500(nodes):
    pair, a, b = nodes
    b.serve("tcp", pair.ip_b, 6379)
    pair.set_mtu(1500)
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair))
    st = steps(res)
    assert res["status"] == "fail" and st["mtu"]["status"] == "fail"
    assert "does not fit the local path (path MTU 1500)" in st["mtu"]["observed"]
    assert "mtu 9000" in st["mtu"]["remedy"]
    assert st["tcp"]["status"] == "pass"  # only the jumbo path is broken


def test_df_ping_peer_side_1500_drops_silently(nodes):
    pair, a, b = nodes
    b.serve("tcp", pair.ip_b, 6379)
    pair.ns(pair.b, "ip", "link", "set", pair.vb, "mtu", "1500")  # local side still 9000: only the peer drops
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair))
    mtu = steps(res)["mtu"]
    assert mtu["status"] == "fail" and "no reply to 8972-byte do-not-fragment pings" in mtu["observed"]
    assert mtu["elapsed_s"] < 8
    # the remedy points at the far end: this node's netdev is healthy, "set its MTU" would fix nothing
    assert f"{pair.va} here already has MTU 9000" in mtu["remedy"], mtu
    assert f"ip link set {pair.va} mtu" not in mtu["remedy"], mtu


def test_host_prefix_mesh_address_gets_the_prefix_remedy(nodes):
    """A /32 mesh address: the interface has its address, but no connected route reaches the head."""
    pair, a, _ = nodes
    pair.ns(pair.a, "ip", "addr", "del", f"{pair.ip_a}/{pair.prefix_len}", "dev", pair.va)
    pair.ns(pair.a, "ip", "addr", "add", f"{pair.ip_a}/32", "dev", pair.va)
    route = steps(a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair)))["route"]
    assert route["status"] == "fail", route
    assert f"{pair.va} holds {pair.ip_a}/32, whose prefix does not reach {pair.ip_b}" in route["remedy"], route
    assert f"ip addr add {pair.ip_a}/24 dev {pair.va}" in route["remedy"] and "give" not in route["remedy"], route


def test_more_specific_route_off_the_mesh_is_named_with_its_prefix(nodes):
    """A /25 through another interface beats the mesh's connected /24: the remedy deletes that route."""
    pair, a, _ = nodes
    dm = "dm" + pair.va[2:]
    # a second veth pair with both ends in this namespace stands for another network (no dummy module here)
    pair.ns(pair.a, "ip", "link", "add", dm, "type", "veth", "peer", "name", "dn" + pair.va[2:])
    pair.ns(pair.a, "ip", "addr", "add", "172.31.9.1/24", "dev", dm)
    pair.ns(pair.a, "ip", "link", "set", "dn" + pair.va[2:], "up")
    pair.ns(pair.a, "ip", "link", "set", dm, "up")
    net = pair.ip_b.rsplit(".", 1)[0] + ".0/25"
    pair.ns(pair.a, "ip", "route", "add", net, "dev", dm)
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair))
    route = steps(res)["route"]
    assert route["status"] == "fail" and f"leaves via {dm}" in route["observed"], route
    assert f"the route {net} dev {dm} is more specific than {pair.va}'s {pair.ip_a}/24" in route["remedy"], route
    assert f"ip route del {net} dev {dm}" in route["remedy"] and "give" not in route["remedy"], route
    assert steps(res)["mtu"]["status"] == "skip"   # nothing was sent off the mesh


def test_head_role_and_wrong_interface(nodes):
    pair, a, _ = nodes
    head = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer",
                  {"MASTER_ADDR": "spark-01-mesh", "NCCL_SOCKET_IFNAME": pair.va})
    st = steps(head)
    assert head["status"] == "pass" and "(head)" in st["route"]["observed"]
    assert st["mtu"]["status"] == "skip" and st["tcp"]["status"] == "skip"
    wrong = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", dict(worker_env(pair), NCCL_SOCKET_IFNAME="lo"))
    assert steps(wrong)["route"]["status"] == "fail" and "does not name it" in steps(wrong)["route"]["observed"]
    assert steps(wrong)["tcp"]["status"] == "skip" and "not probed" in steps(wrong)["mtu"]["observed"]
    outside = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair), {"subnet": "192.168.100.0/24"})
    assert steps(outside)["subnet"]["status"] == "fail"
    assert "has no address in 192.168.100.0/24" in steps(outside)["route"]["observed"]
    assert steps(outside)["mtu"]["status"] == "skip"


def test_unknown_name_fails_with_hosts_remedy(nodes):
    pair, a, _ = nodes
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", dict(worker_env(pair), MASTER_ADDR="spark-09-mesh"))
    assert res["status"] == "fail" and "does not resolve" in res["observed"] and "/etc/hosts" in res["remedy"]


def test_black_holed_dns_costs_the_bound_not_the_resolver_timeout(nodes):
    pair, a, b = nodes
    b.serve("udp", pair.ip_b, 53)  # swallows queries
    a.files("", nameserver=pair.ip_b, options="timeout:5 attempts:2")
    # Unbounded, glibc waits 5 s x 2 attempts (per address family) for this name:
    t0 = time.monotonic()
    g = subprocess.run(["ip", "netns", "exec", pair.a, "timeout", "30", "getent", "ahosts", "spark-02-mesh"],
                       capture_output=True, timeout=40)
    unbounded = time.monotonic() - t0
    assert g.returncode != 0 and unbounded >= 9.5
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", worker_env(pair))
    assert res["status"] == "fail" and "no answer within 3 s" in res["observed"]
    assert res["elapsed"] < pf.RESOLVE_TIMEOUT_S + 1.0


def test_black_holed_peer_is_bounded(nodes):
    pair, a, _ = nodes
    ghost = "10.199.0.99"  # inside the namespace subnet; nobody owns it (ARP goes unanswered)
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer",
                 {"MASTER_ADDR": ghost, "RAY_ADDRESS": f"{ghost}:6379", "NCCL_SOCKET_IFNAME": pair.va})
    st = steps(res)
    assert res["status"] == "fail"
    assert st["tcp"]["status"] == "fail" and st["mtu"]["status"] == "fail"
    assert st["tcp"]["elapsed_s"] <= pf.CONNECT_TIMEOUT_S + 0.5
    assert res["elapsed"] < 12, res["elapsed"]


def test_cli_in_namespace(nodes, tmp_path):
    pair, a, b = nodes
    b.serve("tcp", pair.ip_b, 6379)
    env = tmp_path / "node.env"
    env.write_text(f"MASTER_ADDR=spark-02-mesh\nRAY_ADDRESS=spark-02-mesh:6379\nNCCL_SOCKET_IFNAME={pair.va}\n")
    out = tmp_path / "peer.json"
    cmd = ["ip", "netns", "exec", pair.a, sys.executable, "-m", "rdmacheck", "preflight", "--only", "net.peer",
           "--env", str(env), "--expect", "subnet=10.199.0.0/24", "--json", str(out), "-q"]
    run = lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO,  # noqa: E731
                                 env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)})
    p = run()
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(out.read_text())["results"][0]["status"] == "pass"
    pair.set_mtu(1500)
    p = run()
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert json.loads(out.read_text())["results"][0]["status"] == "fail"


@pytest.mark.parametrize("text,want", [
    ("spark-01-mesh:6379", ("spark-01-mesh", 6379)), ("ray://10.0.0.1:10001", ("10.0.0.1", 10001)),
    ("[fd00::1]:6379", ("fd00::1", 6379)), ("auto", None), (None, None), ("host", None), ("h:99999", None),
])
def test_parse_ray_address(text, want):
    assert parse_ray_address(text) == want


@pytest.mark.parametrize("spec,name,hit", [
    ("enP2p1s0f0np0", "enP2p1s0f0np0", True), ("enP2", "enP2p1s0f0np0", True), ("=enP2", "enP2p1s0f0np0", False),
    ("^docker,lo", "enP2p1s0f0np0", True), ("^docker,lo", "lo", False), ("eth0,enP", "enP2p1s0f0np0", True),
])
def test_ifname_matches(spec, name, hit):
    assert pf.ifname_matches(spec, name) is hit


def test_nccl_env_live_in_namespace(nodes):
    """nccl.env on live interfaces (psutil inside the namespace) and the head's MASTER_PORT bind test."""
    pair, a, _ = nodes
    env = {"MASTER_ADDR": "spark-01-mesh", "MASTER_PORT": "29500", "NCCL_SOCKET_IFNAME": pair.va,
           "GLOO_SOCKET_IFNAME": pair.va, "NCCL_IB_HCA": "=rxe0", "WORLD_SIZE": "2"}
    ok = a.gate("rdmacheck.preflight.checks.nccl_env", "gate_nccl_env", env)
    assert ok["status"] == "pass", ok
    assert "free on this head" in steps(ok)["MASTER_PORT"]["observed"]
    a.serve("tcp", pair.ip_a, 29500)  # something already listens on the rendezvous port
    busy = a.gate("rdmacheck.preflight.checks.nccl_env", "gate_nccl_env", env)
    assert steps(busy)["MASTER_PORT"]["status"] == "fail" and "already in use" in busy["observed"]
    gloo = a.gate("rdmacheck.preflight.checks.nccl_env", "gate_nccl_env", dict(env, GLOO_SOCKET_IFNAME="lo"))
    assert steps(gloo)["GLOO_SOCKET_IFNAME"]["status"] == "fail"
    assert f"GLOO_SOCKET_IFNAME={pair.va}" in steps(gloo)["GLOO_SOCKET_IFNAME"]["remedy"]


def test_declared_role_contradicting_master_addr_fails(nodes):
    pair, a, b = nodes
    b.serve("tcp", pair.ip_b, 6379)
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", dict(worker_env(pair), RAY_MODE="head"))
    role = steps(res)["role"]
    assert res["status"] == "fail" and role["status"] == "fail"
    assert "RAY_MODE=head but MASTER_ADDR spark-02-mesh -> 10.199.0.2 is not an address of this node" in role["observed"]
    ok = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", dict(worker_env(pair), RAY_MODE="worker"))
    assert ok["status"] == "pass" and "role" not in steps(ok)


def test_ray_address_off_the_mesh_is_not_probed(nodes):
    pair, a, _ = nodes
    # 192.0.2.1 (TEST-NET-1) is outside the namespace subnet: judged from the routing table, never contacted
    res = a.gate("rdmacheck.preflight.checks.peer", "gate_net_peer", dict(worker_env(pair), RAY_ADDRESS="192.0.2.1:6379"))
    tcp = steps(res)["tcp"]
    assert tcp["status"] == "fail" and "is not reached over 10.199.0.0/24" in tcp["observed"]
    assert "elapsed_s" not in tcp
