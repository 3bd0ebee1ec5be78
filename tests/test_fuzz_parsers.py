"""Hypothesis: arbitrary text into every sysfs/env parser and into a sysfs tree; nothing escapes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rdmacheck.config import load_config, parse_env_text
from rdmacheck.config.envfile import EnvFileError
from rdmacheck.util.errors import UsageError
from rdmacheck.preflight.facts.infiniband import _state, gid_bytes
from rdmacheck.preflight.facts.limits import parse_limits
from rdmacheck.evidence.model import Status
from rdmacheck.nccl.spec import parse_list_spec
from rdmacheck import preflight
from rdmacheck.preflight.root import HostRoot
from sysfs_builder import roce_tree

TEXT = st.text(max_size=200)


@given(TEXT)
def test_env_parser_total(text):
    try:
        out = parse_env_text(text)
    except EnvFileError as e:
        assert "line" in str(e)
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.items())


@given(TEXT)
def test_small_parsers_total(text):
    parse_limits(text)
    _state(text)
    gid_bytes(text)
    try:
        parse_list_spec(text, "NCCL_IB_HCA", with_ports=True)
    except UsageError:
        pass


SYSFS_FILES = ["ports/1/state", "ports/1/phys_state", "ports/1/rate", "ports/1/link_layer", "ports/1/gids/1",
               "ports/1/gid_attrs/types/1", "ports/1/gids/0", "fw_ver"]
ENV_KEYS = ["NCCL_IB_HCA", "NCCL_IB_GID_INDEX", "NCCL_IB_TC", "NCCL_IB_SL", "NCCL_SOCKET_IFNAME",
            "NCCL_IB_ADDR_RANGE", "NCCL_IB_ROCE_VERSION_NUM", "NCCL_IB_TIMEOUT"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=st.sampled_from(SYSFS_FILES), content=st.text(max_size=60),
       env=st.dictionaries(st.sampled_from(ENV_KEYS), st.text(max_size=30), max_size=3),
       limits=st.text(max_size=120), mtu=st.text(max_size=8))
def test_odd_sysfs_and_env_become_results(file, content, env, limits, mtu):
    tmp = Path(tempfile.mkdtemp())
    try:
        tree = roce_tree(tmp)
        dev = tree / "sys/devices/virtual/infiniband/roceP2p1s0f0"
        (dev / file).write_text(content)
        (tree / "proc/self/limits").write_text(limits)
        (tree / "sys/devices/virtual/net/enP2p1s0f0np0/mtu").write_text(mtu)
        root = HostRoot(tree)
        try:
            cfg = load_config(None, None, [], env)
        except UsageError:
            return
        results = preflight.run(root, config=cfg).results
        assert len({r.id for r in results}) >= 10
        for r in results:
            assert isinstance(r.status, Status)
            # a probe error is reported as such, never silently; odd content must not crash a gate
            assert "probe error" not in r.observed, r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
