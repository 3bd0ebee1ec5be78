"""RDMA gates on RoCE-shaped trees: GID prediction (NCCL's rule), MTU, netdev, devices, QoS, devfiles."""

from __future__ import annotations

import json

import pytest

from rdmacheck.config import load_config
from rdmacheck.evidence.model import SCHEMA_VERSION
from rdmacheck import preflight
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import LINK_LOCAL, ipv4_gid, roce_tree
from conftest import run_cli


def verdicts(root, env_file=None, expect=None, only=None):
    r = HostRoot(root)
    cfg = load_config(env_file, None, expect or [], r.environ())
    return {res.id: res for res in preflight.run(r, config=cfg, only=only).results}


def test_rxe_like_table_predicts_index_1_and_passes(tmp_path):
    # gids/0 = fe80 link-local v2, gids/1 = IPv4-mapped v2: as rxe shows after `ip addr add`.
    v = verdicts(roce_tree(tmp_path, verbs_active_mtu=4096))
    for gid in ("rdma.devices", "rdma.port", "rdma.netdev", "rdma.gid", "rdma.mtu", "rdma.devfiles", "limits.memlock"):
        assert v[gid].status.value in ("pass", "warn"), (gid, v[gid])
    assert v["rdma.gid"].status.value == "pass"
    assert v["rdma.gid"].details["roceP2p1s0f0:1"]["predicted"] == 1
    assert v["rdma.mtu"].details["roceP2p1s0f0:1"]["source"] == "verbs"


def test_dgx_spark_like_table_predicts_index_3(tmp_path):
    # mlx5 lays out v1 and v2 twins: 0 fe80 v1, 1 fe80 v2, 2 IPv4 v1, 3 IPv4 v2.
    # ib_write_bw on DGX Spark used GID index 3 (../shared/captures/text/dgx-spark-ib_write_bw-2rail.txt).
    g = ipv4_gid("192.168.100.1")
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "IB/RoCE v1"), (LINK_LOCAL, "RoCE v2"), (g, "IB/RoCE v1"), (g, "RoCE v2")])
    v = verdicts(tree)
    assert v["rdma.gid"].status.value == "pass"
    assert v["rdma.gid"].details["roceP2p1s0f0:1"]["predicted"] == 3


def test_roce_v1_preference_follows_nccl_ib_roce_version_num(tmp_path):
    g = ipv4_gid("192.168.100.1")
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "IB/RoCE v1"), (LINK_LOCAL, "RoCE v2"), (g, "IB/RoCE v1"), (g, "RoCE v2")],
                     env={"NCCL_IB_ROCE_VERSION_NUM": "1"})
    v = verdicts(tree, expect=["roce_version=1"])
    assert v["rdma.gid"].details["roceP2p1s0f0:1"]["predicted"] == 2


@pytest.mark.parametrize("index,why", [(0, "link-local"), (2, "not RoCE v2"), (7, "empty")])
def test_explicit_gid_index_pointing_at_bad_entry_fails_with_right_index(tmp_path, index, why):
    g = ipv4_gid("192.168.100.1")
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "IB/RoCE v1"), (LINK_LOCAL, "RoCE v2"), (g, "IB/RoCE v1"), (g, "RoCE v2")],
                     env={"NCCL_IB_GID_INDEX": str(index)})
    v = verdicts(tree)
    r = v["rdma.gid"]
    assert r.status.value == "fail"
    assert why.split()[0] in r.observed
    assert "NCCL_IB_GID_INDEX=3" in r.remedy


def test_explicit_gid_169_254_fails(tmp_path):
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "RoCE v2"), (ipv4_gid("169.254.3.3"), "RoCE v2"),
                                     (ipv4_gid("192.168.100.1"), "RoCE v2")], env={"NCCL_IB_GID_INDEX": "1"})
    r = verdicts(tree)["rdma.gid"]
    assert r.status.value == "fail" and "169.254" in r.observed and "NCCL_IB_GID_INDEX=2" in r.remedy


def test_no_ipv4_gid_fails_with_address_remedy(tmp_path):
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "RoCE v2")], addrs=[])
    r = verdicts(tree)["rdma.gid"]
    assert r.status.value == "fail"
    assert "ip addr add" in r.remedy and "enP2p1s0f0np0" in r.remedy


def test_gid_outside_subnet_fails_and_auto_pick_outside_subnet_is_named(tmp_path):
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "RoCE v2"), (ipv4_gid("10.0.0.5"), "RoCE v2"),
                                     (ipv4_gid("192.168.100.1"), "RoCE v2")])
    r = verdicts(tree)["rdma.gid"]
    # NCCL keeps the first IPv4 RoCE v2 GID of its walk (a later one of the same family and
    # version does not displace it): 10.0.0.5, outside the RDMA subnet.
    assert r.details["roceP2p1s0f0:1"]["predicted"] == 1
    assert r.status.value == "fail" and "NCCL_IB_ADDR_RANGE=192.168.100.0/24" in r.remedy


def test_addr_range_steers_prediction(tmp_path):
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "RoCE v2"), (ipv4_gid("10.0.0.5"), "RoCE v2"),
                                     (ipv4_gid("192.168.100.1"), "RoCE v2")], env={"NCCL_IB_ADDR_RANGE": "192.168.100.0/24"})
    r = verdicts(tree)["rdma.gid"]
    assert r.details["roceP2p1s0f0:1"]["predicted"] == 2 and r.status.value == "pass"


def test_mtu_1500_fails_and_active_mtu_is_derived_without_verbs(tmp_path):
    r = verdicts(roce_tree(tmp_path, mtu=1500))["rdma.mtu"]
    assert r.status.value == "fail"
    d = r.details["roceP2p1s0f0:1"]
    assert d["netdev_mtu"] == 1500 and d["active_mtu"] == 1024 and d["source"].startswith("derived")
    assert "mtu 9000" in r.remedy


def test_expect_override_accepts_1500(tmp_path):
    r = verdicts(roce_tree(tmp_path, mtu=1500), expect=["mtu=1500", "active_mtu=1024"])["rdma.mtu"]
    assert r.status.value == "pass"


@pytest.mark.parametrize("hca,status", [("roceP2p1s0f0", "pass"), ("=roceP2p1s0f0:1", "pass"), ("roce", "pass"),
                                        ("mlx5_9", "fail"), ("=roce", "fail"), ("roceP2p1s0f0:2", "fail"),
                                        ("roceP2p1s0f0:x", "fail")])
def test_nccl_ib_hca_syntax(tmp_path, hca, status):
    r = verdicts(roce_tree(tmp_path, env={"NCCL_IB_HCA": hca}))["rdma.devices"]
    assert r.status.value == status, r


def test_port_down_fails_when_pinned(tmp_path):
    v = verdicts(roce_tree(tmp_path, state="1: DOWN", phys="3: Disabled", env={"NCCL_IB_HCA": "roceP2p1s0f0"}))
    assert v["rdma.port"].status.value == "fail"


def test_down_port_pinned_beside_an_active_one_is_dropped_not_addressed(tmp_path):
    """NCCL_IB_HCA names a port that is down while the other is ACTIVE: NCCL skips it, so the fix is the list
    (or the link); its missing address GID is the link's doing, not a missing address."""
    from sysfs_builder import dual_port_tree

    tree = dual_port_tree(tmp_path, addrs=("192.168.100.1", "192.168.100.2"))
    port2 = tree / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/mlx5_0/ports/2"
    (port2 / "state").write_text("1: DOWN\n")
    (port2 / "phys_state").write_text("3: Disabled\n")
    # as the kernel leaves a down netdev's port: the address GID gone (roce_gid_mgmt), the link-local one kept
    (port2 / "gids/1").write_text("0000:0000:0000:0000:0000:0000:0000:0000\n")
    for d in ("types", "ndevs"):
        (port2 / "gid_attrs" / d / "1").unlink()
    envf = tmp_path / "node.env"
    envf.write_text("NCCL_IB_HCA==mlx5_0:1,mlx5_0:2\n")
    v = verdicts(tree, env_file=str(envf))
    port, gid = v["rdma.port"], v["rdma.gid"]
    assert port.status.value == "fail" and "drop mlx5_0" in port.remedy and "from NCCL_IB_HCA" in port.remedy, port
    assert gid.status.value == "warn" and "see rdma.port" in gid.remedy, gid
    assert "addr add" not in gid.remedy and "assign" not in gid.remedy, gid


def test_netdev_down_and_socket_ifname(tmp_path):
    v = verdicts(roce_tree(tmp_path / "a", operstate="down"))
    assert v["rdma.netdev"].status.value == "fail"
    v = verdicts(roce_tree(tmp_path / "b", env={"NCCL_SOCKET_IFNAME": "eth9"}))
    assert v["rdma.netdev"].status.value == "fail" and "eth9" in v["rdma.netdev"].observed
    v = verdicts(roce_tree(tmp_path / "c", env={"NCCL_SOCKET_IFNAME": "=enP2p1s0f0np0"}))
    assert v["rdma.netdev"].status.value == "pass"


@pytest.mark.parametrize("env,status", [
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_IB_TIMEOUT": "22", "NCCL_IB_RETRY_CNT": "7"}, "pass"),
    ({"NCCL_IB_TC": "256", "NCCL_IB_SL": "3"}, "fail"),
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "16"}, "fail"),
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_IB_TIMEOUT": "0"}, "pass"),  # 0: the verbs "infinite" timeout
    ({"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_IB_RETRY_CNT": "8"}, "fail"),
    ({"NCCL_IB_TC": "abc", "NCCL_IB_SL": "3"}, "fail"),
    ({}, "warn"),
])
def test_qos_ranges(tmp_path, env, status):
    assert verdicts(roce_tree(tmp_path, env=env))["rdma.qos"].status.value == status


def test_devfiles_missing_uverbs(tmp_path):
    tree = roce_tree(tmp_path)
    (tree / "dev/infiniband/uverbs0").unlink()
    r = verdicts(tree)["rdma.devfiles"]
    assert r.status.value == "fail" and "uverbs0" in r.observed


def _modules(tree, *names):
    """/proc/modules as the kernel writes it (name size refcount deps state address)."""
    (tree / "proc").mkdir(exist_ok=True)
    (tree / "proc/modules").write_text("".join(f"{n} 16384 1 - Live 0x0000000000000000\n" for n in names))


def test_devfiles_missing_uverbs_with_module_loaded_names_the_container(tmp_path):
    tree = roce_tree(tmp_path)
    (tree / "dev/infiniband/uverbs0").unlink()
    _modules(tree, "ib_uverbs", "ib_core")
    r = verdicts(tree)["rdma.devfiles"]
    # the module is there: loading it again fixes nothing, the container lacks the file
    assert r.status.value == "fail" and "--device /dev/infiniband" in r.remedy and "modprobe" not in r.remedy, r
    _modules(tree, "ib_core")
    r = verdicts(tree)["rdma.devfiles"]
    assert r.status.value == "fail" and "modprobe ib_uverbs" in r.remedy and "(not loaded)" in r.remedy, r


@pytest.mark.parametrize("loaded,needle,absent", [
    (("ib_uverbs", "rdma_ucm"), "rdma_ucm is loaded", "modprobe"),
    (("ib_uverbs",), "modprobe rdma_ucm", "is loaded"),
])
def test_devfiles_missing_rdma_cm_only_warns(tmp_path, loaded, needle, absent):
    """NCCL's IB transport never opens rdma_cm: its absence does not fail an NCCL node."""
    tree = roce_tree(tmp_path)
    (tree / "dev/infiniband/rdma_cm").unlink()
    _modules(tree, *loaded)
    r = verdicts(tree)["rdma.devfiles"]
    assert r.status.value == "warn" and "rdma_cm missing" in r.observed, r
    assert needle in r.remedy and absent not in r.remedy, r
    assert r.details["modules"] == list(loaded)


def test_memlock_finite_fails_in_tree(tmp_path):
    r = verdicts(roce_tree(tmp_path, limits_memlock="65536"))["limits.memlock"]
    assert r.status.value == "fail" and "64 KiB" in r.observed


def test_cli_on_tree_exit_codes_and_json(tmp_path):
    tree = roce_tree(tmp_path / "t", verbs_active_mtu=4096,
                     env={"NCCL_IB_TC": "106", "NCCL_IB_SL": "3", "NCCL_SOCKET_IFNAME": "enP2p1s0f0np0"})
    out = tmp_path / "ev.json"
    p = run_cli("preflight", "--root", str(tree), "--json", str(out), "--only",
                "rdma.devices,rdma.port,rdma.netdev,rdma.gid,rdma.mtu,rdma.qos,rdma.devfiles,limits.memlock")
    assert p.returncode == 0, p.stdout + p.stderr
    ev = json.loads(out.read_text())
    assert ev["kind"] == "preflight" and ev["schema_version"] == SCHEMA_VERSION and ev["status"] == "pass"
    assert {r["id"] for r in ev["results"]} >= {"rdma.gid", "rdma.mtu"}
    assert ev["context"]["facts"]["ports"][0]["gid_index"] == 1
    p = run_cli("preflight", "--root", str(tree), "--expect", "mtu=1500", "--only", "rdma.mtu")
    assert p.returncode == 1 and "FAIL" in p.stdout


def test_roce_version_1_on_mlx5_twins_fails_naming_the_variable(tmp_path):
    """mlx5 lists each address as v1 and v2: NCCL_IB_ROCE_VERSION_NUM=1 makes NCCL take the v1 twin (index 2);
    the fix is the variable, not an address (it is there)."""
    g = ipv4_gid("192.168.100.1")
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "IB/RoCE v1"), (LINK_LOCAL, "RoCE v2"), (g, "IB/RoCE v1"), (g, "RoCE v2")],
                     env={"NCCL_IB_ROCE_VERSION_NUM": "1"})
    r = verdicts(tree)["rdma.gid"]
    assert r.status.value == "fail" and r.details["roceP2p1s0f0:1"]["predicted"] == 2
    assert "NCCL_IB_ROCE_VERSION_NUM=2" in r.remedy and "ip addr add" not in r.remedy


def test_ipv6_subnet_judged_on_ipv6_gids(tmp_path):
    v6 = "fd00:0100:0000:0000:0000:0000:0000:0001"
    tree = roce_tree(tmp_path, gids=[(LINK_LOCAL, "RoCE v2"), (ipv4_gid("192.168.100.1"), "RoCE v2"), (v6, "RoCE v2")],
                     env={"NCCL_IB_ADDR_FAMILY": "AF_INET6"})
    r = verdicts(tree, expect=["subnet=fd00:100::/64"])["rdma.gid"]
    assert r.status.value == "pass" and r.details["roceP2p1s0f0:1"]["predicted"] == 2
    # without NCCL_IB_ADDR_FAMILY NCCL takes the IPv4 GID: the remedy is that variable
    tree2 = roce_tree(tmp_path / "b", gids=[(LINK_LOCAL, "RoCE v2"), (ipv4_gid("192.168.100.1"), "RoCE v2"), (v6, "RoCE v2")])
    r = verdicts(tree2, expect=["subnet=fd00:100::/64"])["rdma.gid"]
    assert r.status.value == "fail" and "NCCL_IB_ADDR_FAMILY=AF_INET6" in r.remedy


def test_mesh_address_on_a_vlan_at_1500_over_a_9000_base_fails_rdma_mtu_naming_the_vlan(tmp_path):
    """The VLAN carries the mesh address, so its GID (ndev = the VLAN) is the one NCCL picks: its MTU is what
    RoCE frames must fit, not the base netdev's 9000 (on soft-RoCE this layout dead-ends the path: send_err)."""
    import os

    vlan = "enP2p1s0f0np0.100"
    tree = roce_tree(tmp_path, verbs_active_mtu=4096, addrs=[])
    port = tmp_path / "sys/devices/virtual/infiniband/roceP2p1s0f0/ports/1"
    (port / "gid_attrs/ndevs/1").write_text(vlan + "\n")          # the IPv4 GID belongs to the VLAN
    nd = tmp_path / "sys/devices/virtual/net" / vlan
    nd.mkdir(parents=True)
    for f, v in (("mtu", "1500"), ("operstate", "up"), ("carrier", "1"), ("type", "1")):
        (nd / f).write_text(v + "\n")
    os.symlink(f"../../devices/virtual/net/{vlan}", tmp_path / "sys/class/net" / vlan)
    (tmp_path / "rdmacheck/addrs.json").write_text(json.dumps({"enP2p1s0f0np0": {"ipv4": [], "ipv6": []},
                                                               vlan: {"ipv4": ["192.168.100.1/24"], "ipv6": []}}))
    r = verdicts(tree)["rdma.mtu"]
    assert r.status.value == "fail", r
    assert f"{vlan} MTU 1500 != 9000" in r.observed and f"ip link set dev {vlan} mtu 9000" in r.remedy, r
    assert r.details["roceP2p1s0f0:1"]["netdev"] == vlan
    # the same tree with the VLAN at 9000 passes: the gate judges the GID's netdev, nothing else changed
    (nd / "mtu").write_text("9000\n")
    assert verdicts(tree)["rdma.mtu"].status.value == "pass"
