"""(issue 26, E1) A snapshot records the process environment apart from the .env it was taken with; a
replay with --env judges the .env given now, one without judges the recorded .env, and the environment of
the node (set outside any .env) still wins over both, as it does live."""

from __future__ import annotations

import json

from rdmacheck.cli import main
from rdmacheck.config import load_config
from rdmacheck.preflight.root import HostRoot
from rdmacheck.preflight.snapshot import capture
from sysfs_builder import roce_tree


def _verdict(tmp_path, capsys, argv):
    js = tmp_path / "ev.json"
    main([*argv, "--json", str(js)])
    capsys.readouterr()
    doc = json.loads(js.read_text())
    return {r["id"]: r for r in doc["results"]}, doc["context"]["config"]


def test_replay_judges_the_env_given_now(tmp_path, capsys):
    tree = roce_tree(tmp_path / "tree")
    then = tmp_path / "then.env"
    then.write_text("NCCL_IB_HCA=mlx5_9\n")                      # the .env of the day: a missing device
    process = {"NCCL_SOCKET_IFNAME": "enP2p1s0f0np0"}            # set on the node itself
    cfg = load_config(str(then), None, [], process)
    snap = tmp_path / "snap"
    capture(HostRoot(str(tree)), snap, cfg, {**process, **cfg.env}, timeout=60)
    meta = snap / "rdmacheck"
    assert json.loads((meta / "env.json").read_text()) == process          # no .env value as process env
    assert json.loads((meta / "dotenv.json").read_text())["env"] == {"NCCL_IB_HCA": "mlx5_9"}

    now = tmp_path / "now.env"
    now.write_text("NCCL_IB_HCA=roceP2p1s0f0\nNCCL_SOCKET_IFNAME=eth9\n")
    res, conf = _verdict(tmp_path, capsys, ["preflight", "--root", str(snap), "--env", str(now)])
    assert conf["env"]["NCCL_IB_HCA"] == "roceP2p1s0f0" and res["rdma.devices"]["status"] == "pass", res["rdma.devices"]
    assert conf["env"]["NCCL_SOCKET_IFNAME"] == "enP2p1s0f0np0"             # the node's own environment wins
    res, conf = _verdict(tmp_path, capsys, ["preflight", "--root", str(snap)])
    assert conf["env"]["NCCL_IB_HCA"] == "mlx5_9" and res["rdma.devices"]["status"] == "fail"
    assert conf["env_sources"]["NCCL_IB_HCA"] == "env-file"
