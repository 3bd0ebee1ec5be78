"""Driver statistics through the ethtool ioctl (rdmacheck/facts/ethtool.py), on real interfaces.

A veth pair in two real network namespaces: veth's statistics carry ``peer_ifindex``, which must be the
peer's own ifindex as its namespace's sysfs gives it (the ground truth, read independently); ``lo`` has no
driver statistics (None, not {}).  The mlx5 names these reads bring (pause, per-priority, storm, discards)
are judged in tests/test_lossless.py.
"""

from __future__ import annotations

import json
import os

from conftest import REPO
from rdmacheck.preflight.facts.ethtool import delta, read_stats


def _in_ns(pair, ns: str, code: str) -> str:
    env = f"PYTHONPATH={REPO}"
    return pair.ns(ns, "env", env, "python3", "-c", code).stdout


def test_veth_statistics_name_the_peer(netns_pair):
    code = ("import json, sys; from rdmacheck.preflight.facts.ethtool import read_stats; "
            f"print(json.dumps([read_stats({netns_pair.va!r}), read_stats('lo')]))")
    stats, lo = json.loads(_in_ns(netns_pair, netns_pair.a, code))
    peer = int(netns_pair.ns(netns_pair.b, "cat", f"/sys/class/net/{netns_pair.vb}/ifindex").stdout)
    assert stats["peer_ifindex"] == peer
    assert all(isinstance(v, int) and v >= 0 for v in stats.values()) and len(stats) > 1
    assert lo is None


def test_no_such_interface_and_deltas():
    assert read_stats("no-such-if0") is None and read_stats("x" * 40) is None
    d = delta({"eth0": {"rx_prio3_pause": 10, "rx_prio3_bytes": 5}, "eth1": {"a": 1}},
              {"eth0": {"rx_prio3_pause": 25, "rx_prio3_bytes": 2, "new": 1}, "eth2": {"a": 1}})
    assert d == {"eth0": {"rx_prio3_bytes": None, "rx_prio3_pause": 15}}  # went down: reset; new name: no delta
