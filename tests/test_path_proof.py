"""The path-proof hook's own parts: NCCL debug env, device selection and counter reads on real sysfs trees.

The live end-to-end use (torchrun across two namespaces, counters of a real veth) is in
test_multinode_netns.py; the GPU runs are in test_path_gpu_logs.py.  Here: the selection rules (NCCL_IB_HCA,
NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME syntax) and the counter reads on real captured trees.
"""

from __future__ import annotations

import pytest

from rdmacheck.bench.hooks import BenchHooks
from rdmacheck.bench.path_proof import (
    PathProof,
    _delta,
    log_file_for,
    nccl_debug_env,
    select_hcas,
    select_netdevs,
)
from rdmacheck.util.errors import UsageError
from rdmacheck.preflight.root import HostRoot


def test_nccl_debug_env_defaults_and_respects_the_user(tmp_path):
    env = nccl_debug_env(tmp_path, {})
    assert env == {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET,GRAPH",
                   "NCCL_DEBUG_FILE": str(tmp_path / "nccl.%h.%p.log")}
    # a quieter level is raised, a narrower subsystem list gets INIT,NET, the user's file is kept
    env = nccl_debug_env(tmp_path, {"NCCL_DEBUG": "WARN", "NCCL_DEBUG_SUBSYS": "COLL", "NCCL_DEBUG_FILE": "/x/%h"})
    assert env == {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "COLL,INIT,NET"}
    assert nccl_debug_env(tmp_path, {"NCCL_DEBUG": "TRACE", "NCCL_DEBUG_SUBSYS": "ALL", "NCCL_DEBUG_FILE": "f"}) == {}
    assert log_file_for("/l/nccl.%h.%p.log", "node-a", 42).as_posix() == "/l/nccl.node-a.42.log"


def test_install_sets_env_and_registers_hooks(tmp_path):
    env = {"RDMACHECK_PATH_DIR": str(tmp_path / "logs")}
    hooks = BenchHooks()
    PathProof(env=env).install(hooks)
    assert (tmp_path / "logs").is_dir()
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_DEBUG_FILE"] == str(tmp_path / "logs" / "nccl.%h.%p.log")
    assert len(hooks.before_size) == len(hooks.after_size) == len(hooks.after_run) == 1
    with pytest.raises(UsageError, match="RDMACHECK_WIRE_MIN_RATIO"):
        PathProof(env={"RDMACHECK_WIRE_MIN_RATIO": "half"})
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot create"):
        PathProof(env={"RDMACHECK_PATH_DIR": str(tmp_path / "file" / "sub")}).install(BenchHooks())


@pytest.mark.parametrize("spec,nccl_style,want", [
    ("eth", True, ["eth0", "eth1"]), ("=eth0", True, ["eth0"]), ("^eth", True, ["ib0", "veth9"]),
    ("eth0,ib", True, ["eth0", "ib0"]), ("eth0", False, ["eth0"]), ("eth", False, []), (None, True, []),
])
def test_select_netdevs_syntax(spec, nccl_style, want):
    assert select_netdevs(spec, ["eth0", "eth1", "ib0", "lo", "veth9"], nccl_style) == want


def test_selection_and_counters_on_real_mlx5_tree(captures):
    """prometheus/procfs fixture: hfi1_0, mlx4_0 (2 ports), mlx5_0 with real PMA counters."""
    root = HostRoot(captures / "sysfs" / "prometheus-procfs")
    assert [hp for hp, _ in select_hcas("mlx5", root)] == [("mlx5_0", 1)]
    assert [hp for hp, _ in select_hcas("=mlx4_0:2", root)] == [("mlx4_0", 2)]
    assert [hp for hp, _ in select_hcas("^mlx4", root)] == [("hfi1_0", 1), ("mlx5_0", 1)]
    p = PathProof(env={"NCCL_IB_HCA": "mlx5_0:1"}, root=root)
    p.select("nccl")
    assert p.hcas == [("mlx5_0", 1)]
    got = p.read()
    # port_xmit_data / port_rcv_data count 4-byte words: 2880761508848 and 18126345378 in the tree
    assert got["hcas"] == {"mlx5_0/1": {"tx": 4 * 2880761508848, "rx": 4 * 18126345378}}
    # NCCL_IB_HCA unset with NCCL: every HCA may carry traffic, so every port with data counters is watched
    q = PathProof(env={}, root=root)
    q.select("nccl")
    assert ("mlx5_0", 1) in q.hcas and ("mlx4_0", 2) in q.hcas
    # gloo never uses an HCA unless asked
    g = PathProof(env={"NCCL_IB_HCA": "mlx5"}, root=root)
    g.select("gloo")
    assert g.hcas == []


def test_delta_uses_counter_rules():
    a = {"x/1": {"tx": 100, "rx": 50}, "gone": {"tx": 1, "rx": 1}}
    b = {"x/1": {"tx": 160, "rx": 40}, "new": {"tx": 5, "rx": 5}}
    # rx went down: the counter was reset -> None, never a negative or silent zero
    assert _delta(a, b) == {"x/1": {"tx": 60, "rx": None}}


def test_bad_preflight_path_is_a_usage_error_at_install(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        PathProof(env={"RDMACHECK_PATH_DIR": str(tmp_path), "RDMACHECK_PREFLIGHT": str(tmp_path / "no.json")}).install(
            BenchHooks())


def test_per_node_summary_from_the_real_gpu_run():
    """The 2x H100 two-namespace run: one line per node with its own transport and wire proof."""
    import json

    from conftest import REPO
    from rdmacheck.bench.path_proof import per_node
    from rdmacheck.bench.gates import check_wire
    from rdmacheck.nccl.log import parse_file

    data = REPO / "tests" / "data" / "nccl-logs"
    if not (data / "h100x2-socket.bench.json").is_file():
        pytest.skip("GPU capture not committed yet (tests/data/nccl-logs/capture.sh)")
    ev = json.loads((data / "h100x2-socket.bench.json").read_text())
    by_host = {"node-0": parse_file(data / "h100x2-socket.rank0.log"), "node-1": parse_file(data / "h100x2-socket.rank1.log")}
    rows = check_wire(ev["records"], ev["context"]).details["rows"]
    nodes = per_node(ev["context"]["ranks"], by_host, rows)
    assert sorted(nodes) == ["node-0", "node-1"]
    a = nodes["node-0"]
    assert a["ranks"] == [0] and a["net_plugin"] == "Socket" and a["paths"] == {"NET/Socket": 4}
    assert a["gdr_enabled"] is False and a["used_hcas"] == [] and a["links"] == []
    assert a["wire"]["bytes"] == 64 << 20 and a["wire"]["devices"] == ["vA"] and a["wire"]["verdict"] == "pass"
    assert 1.0 <= a["wire"]["ratio"] < 1.01
    assert nodes["node-1"]["wire"]["devices"] == ["vB"]


def test_dual_port_hca_preflight_and_the_wire_gate_name_the_same_netdev_per_port(tmp_path):
    """One port -> netdev map: on a dual-port function (both netdevs in its net/ folder) each port counts its
    own netdev in the path proof, the one preflight judged for it, never both."""
    from rdmacheck.config import Config, build_profile
    from rdmacheck.preflight.gather import gather
    from sysfs_builder import dual_port_tree

    root = HostRoot(dual_port_tree(tmp_path))
    for spec, port, netdev in (("=mlx5_0:1", 1, "enp1s0f0np0"), ("=mlx5_0:2", 2, "enp1s0f0np1")):
        facts = gather(root, Config({"NCCL_IB_HCA": spec}, {}, None, build_profile()))
        assert [(p.port, list(p.netdevs)) for p in facts.selection.ports] == [(port, [netdev])]
        proof = PathProof(env={"NCCL_IB_HCA": spec}, root=root)
        proof.select("nccl")
        assert proof.hcas == [("mlx5_0", port)] and proof.netdevs == [netdev]
    # both ports: each its own netdev, in port order
    assert select_hcas(None, root) == [(("mlx5_0", 1), ["enp1s0f0np0"]), (("mlx5_0", 2), ["enp1s0f0np1"])]
