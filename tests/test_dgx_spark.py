"""DGX Spark truths, judged on trees laid out from the real DGX Spark captures in ../shared/captures/text
(`ibdev2netdev` of two nodes, and with only the second port up: NVIDIA/dgx-spark-playbooks) and on the
built-in dgx-spark profile.  No GB10 is reachable from here: the sysfs trees are built (sysfs_builder)
with the device names and link states those captures show."""

from __future__ import annotations

import re

import pytest

from conftest import run_cli
from rdmacheck.preflight.checks.rdma import port_halves
from rdmacheck.config import load_config
from rdmacheck.config.profile import BUILTIN_PROFILES, load_profile
from rdmacheck import preflight
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import LINK_LOCAL, ipv4_gid, roce_tree


def _ibdev2netdev(text: str, node: str | None = None) -> list[tuple[str, str, bool]]:
    """(rdma device, netdev, up) from `ibdev2netdev` output; lines after `NODE:~$ ibdev2netdev` when node given."""
    rows, on = [], node is None
    for line in text.splitlines():
        if "$ ibdev2netdev" in line:
            on = node is None or line.startswith(f"nvidia@{node}:")
            continue
        m = re.match(r"\s*(\S+) port \d+ ==> (\S+) \((Up|Down)\)", line)
        if m and on:
            rows.append((m.group(1), m.group(2), m.group(3) == "Up"))
    return rows


def _tree(tmp_path, rows):
    for i, (dev, nd, up) in enumerate(rows):
        roce_tree(tmp_path, dev=dev, netdev=nd, state="4: ACTIVE" if up else "1: DOWN",
                  phys="5: LinkUp" if up else "3: Disabled", operstate="up" if up else "down",
                  gids=[(LINK_LOCAL, "IB/RoCE v1"), (LINK_LOCAL, "RoCE v2"),
                        (ipv4_gid(f"192.168.100.{10 + i}"), "IB/RoCE v1"), (ipv4_gid(f"192.168.100.{10 + i}"), "RoCE v2")]
                  if up else [(LINK_LOCAL, "IB/RoCE v1"), (LINK_LOCAL, "RoCE v2")])
    return tmp_path


def _verdict(root, env, profile="dgx-spark"):
    r = HostRoot(root)
    cfg = load_config(None, profile, [], {**r.environ(), **env})
    return {x.id: x for x in preflight.run(r, config=cfg, only={"rdma.devices", "rdma.port"}).results}


def test_halves_are_the_same_port_in_two_pci_domains(captures):
    rows = _ibdev2netdev((captures / "text" / "dgx-spark-ibdev2netdev-port2-up.txt").read_text())
    assert port_halves([d for d, _, _ in rows]) == {("1", "0", "0"): ["roceP2p1s0f0", "rocep1s0f0"],
                                                    ("1", "0", "1"): ["roceP2p1s0f1", "rocep1s0f1"]}


def test_one_half_of_a_port_warns_both_halves_pass(tmp_path, captures):
    rows = _ibdev2netdev((captures / "text" / "dgx-spark-ibdev2netdev-2node.txt").read_text(), "spark-5c2d")
    up = sorted(d for d, _, u in rows if u)
    assert up == ["roceP2p1s0f0", "rocep1s0f0"]  # port 0 cabled: both halves Up in the capture
    root = _tree(tmp_path, rows)
    v = _verdict(root, {"NCCL_IB_HCA": "roceP2p1s0f0"})  # the reference .env: one half
    r = v["rdma.devices"]
    assert r.status.value == "warn" and "only one half" in r.observed and "rocep1s0f0" in r.observed
    assert "NCCL_IB_HCA=roceP2p1s0f0,rocep1s0f0" in r.remedy
    v = _verdict(root, {"NCCL_IB_HCA": "roceP2p1s0f0,rocep1s0f0"})
    assert v["rdma.devices"].status.value == "pass", v["rdma.devices"]
    # the DGX Spark prefix: both halves of port 0, the down port 1 skipped by NCCL (warn, never fail)
    v = _verdict(root, {"NCCL_IB_HCA": "roce"})
    assert v["rdma.devices"].status.value == "pass" and v["rdma.port"].status.value == "warn"
    assert "NCCL skips it" in v["rdma.port"].observed
    # the default profile on an unknown platform: no DGX Spark advice
    v = _verdict(root, {"NCCL_IB_HCA": "roceP2p1s0f0"}, profile=None)
    assert "only one half" not in v["rdma.devices"].observed


def test_builtin_profiles_ship_and_differ_where_spark_differs():
    assert set(BUILTIN_PROFILES) == {"reference", "dgx-spark"}
    ref, spark = load_profile("reference"), load_profile("dgx-spark")
    assert ref == load_profile(None)  # the reference profile is the defaults, written out
    assert spark.gpu_platform == "dgx-spark" and spark.min_busbw == 20.0 and ref.min_busbw == 12.0


def test_unknown_profile_name_is_a_usage_error():
    p = run_cli("preflight", "--profile", "dgx-sparkk", "-q")
    assert p.returncode == 2 and "built-in profile" in p.stderr and "dgx-spark" in p.stderr
