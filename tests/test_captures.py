"""The core readers and gates on real sysfs trees captured from real hosts and test suites.

Trees: ../shared/captures/sysfs (prometheus/procfs, node_exporter, two hwloc host dumps).
All four are InfiniBand; the hwloc ones store sysfs links as text files.
"""

from __future__ import annotations

import pytest

from rdmacheck.config import load_config
from rdmacheck.preflight.facts.infiniband import read_infiniband
from rdmacheck.preflight.facts.net import read_net
from rdmacheck import preflight
from rdmacheck.preflight.gather import gather
from rdmacheck.preflight.root import HostRoot


def tree(captures, name):
    p = captures / "sysfs" / name
    if not p.is_dir():
        require(False, f"{p} absent from the captures", "captures")
    return HostRoot(p)


def test_procfs_fixture_devices_ports_and_quirks(captures):
    ib = read_infiniband(tree(captures, "prometheus-procfs"))
    assert sorted(ib) == ["hfi1_0", "mlx4_0", "mlx5_0"]
    assert sorted(ib["mlx4_0"].ports) == [1, 2]
    p = ib["hfi1_0"].ports[1]
    assert (p.state_id, p.state, p.phys_state_id, p.link_layer) == (4, "ACTIVE", 5, "InfiniBand")
    assert p.rate_gbps == 100.0 and ib["hfi1_0"].fw_ver == "1.27.0"
    # quirk: the mlx5 fixture's phys_state reads "4: ACTIVE"; judged on the number
    m = ib["mlx5_0"].ports[1]
    assert m.phys_state_id == 4 and m.rate_gbps == 25.0 and ib["mlx5_0"].fw_ver == "14.28.2006"


def test_node_exporter_iwarp_and_counters(captures):
    ib = read_infiniband(tree(captures, "node_exporter"))
    assert sorted(ib) == ["i40iw0", "mlx4_0"]
    assert ib["mlx4_0"].ports[1].has_counters


def test_hwloc_text_links_are_followed(captures):
    root = tree(captures, "hwloc-32em64t-mlx4")
    ib = read_infiniband(root)
    assert ib["mlx4_0"].readable and not ib["scif0"].readable  # scif0's target is not in the archive
    p = ib["mlx4_0"].ports[1]
    assert p.rate == "56 Gb/sec (4X FDR)" and p.lid == "0x3a4"
    assert p.netdevs == ["ib0"]
    net = read_net(root)
    assert net["ib0"].mtu == 2044 and "lo" not in net  # lo dangles in that capture


@pytest.mark.parametrize("name,devices_status,port_status", [
    ("prometheus-procfs", "pass", "warn"),      # mlx5_0 phys_state 4 is not LinkUp
    ("node_exporter", "pass", "pass"),
    ("hwloc-32em64t-mlx4", "warn", "pass"),     # scif0 dangles
    ("hwloc-40intel64-qib", "pass", "pass"),
])
def test_gates_on_real_trees(captures, name, devices_status, port_status):
    root = tree(captures, name)
    res = {r.id: r for r in preflight.run(root, config=load_config(None, None, [], {})).results}
    assert res["rdma.devices"].status.value == devices_status
    assert res["rdma.port"].status.value == port_status
    assert res["rdma.gid"].status.value == "pass" and "InfiniBand" in res["rdma.gid"].observed
    # no limits/proc in these captures: skipped with a reason, never a crash
    assert res["limits.memlock"].status.value == "skip"


def test_hca_filter_on_real_tree(captures):
    root = tree(captures, "prometheus-procfs")
    facts = gather(root, load_config(None, None, [], {"NCCL_IB_HCA": "=mlx4_0:2"}))
    assert [p.name for p in facts.selection.ports] == ["mlx4_0:2"]
    facts = gather(root, load_config(None, None, [], {"NCCL_IB_HCA": "^mlx4"}))
    assert [p.name for p in facts.selection.ports] == ["hfi1_0:1", "mlx5_0:1"]


def test_a_capture_without_host_metadata_is_never_reported_as_this_machine(captures, tmp_path):
    """Issue 26 E3: a sysfs capture records no host name; its evidence and console title used this machine's."""
    import json
    import socket

    from conftest import run_cli
    from rdmacheck.preflight.judge import NO_HOST

    out = tmp_path / "ev.json"
    p = run_cli("preflight", "--root", str(captures / "sysfs" / "node_exporter"), "--json", str(out))
    assert json.loads(out.read_text())["host"] == NO_HOST
    title = p.stdout.splitlines()[0]
    assert NO_HOST in title and f"— {socket.gethostname()} " not in title, title
