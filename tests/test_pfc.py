"""rdma.pfc: NCCL_IB_TC -> DSCP -> priority (dcb app) -> PFC (dcb pfc).

Parsing runs on the JSON iproute2 really prints (tests/data/dcb, provenance in
SOURCE.md).  The judging runs through the snapshot path (``rdmacheck/dcb.json``
under --root) because no DCB-capable NIC exists here; the live path is shown
for real against a veth in a network namespace, where the kernel answers
"Operation not supported" and the gate must skip with that reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import REPO, require
from rdmacheck.preflight.checks.pfc import gate_rdma_pfc
from rdmacheck.config import Config, build_profile
from rdmacheck.preflight.facts import dcb
from rdmacheck.evidence.model import Status
from rdmacheck.preflight.gather import gather
from rdmacheck.preflight.root import HostRoot

DATA = Path(__file__).parent / "data" / "dcb"


def load(name: str):
    return json.loads((DATA / name).read_text())


def test_parse_app_both_shapes():
    real = dcb.parse_app(load("app-mlxsw-swp1-netdev-2024.json"))
    assert real["dscp_prio"] == {8: [0], 16: [1]}
    old = dcb.parse_app(load("app-manpage-iproute2-6.1.json"))
    new = dcb.parse_app(load("app-manpage-iproute2-6.5.json"))
    assert old == new
    assert new["dscp_prio"] == {0: [0], 24: [2, 3], 48: [6]}


def test_parse_pfc():
    p = dcb.parse_pfc(load("pfc-manpage.json"))
    assert p["prio_pfc"] == [False] * 6 + [True, True]
    assert p["pfc_cap"] == 8 and p["delay"] == 4096


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=5) | st.dictionaries(
                        st.sampled_from(["dscp_prio", "default_prio", "prio_pfc", "pfc_cap", "delay", "x"]), c,
                        max_size=4), max_leaves=20))
def test_parsers_never_raise(doc):
    a = dcb.parse_app(doc)
    p = dcb.parse_pfc(doc)
    assert all(0 <= k <= 63 for k in a["dscp_prio"]) and len(p["prio_pfc"]) == 8


# ------------------------------------------------------------------ judging, through the snapshot path

def _snapshot(tmp: Path, app_file: str | None, pfc_doc) -> Path:
    ib = tmp / "sys/class/infiniband/roceP2p1s0f0/device/net/enP2p1s0f0np0"
    ib.mkdir(parents=True)
    # the netdev is found per port (facts.infiniband.port_netdevs): the device has its port 1
    (tmp / "sys/class/infiniband/roceP2p1s0f0/ports/1").mkdir(parents=True)
    (tmp / "rdmacheck").mkdir()
    app = {"json": load(app_file) if app_file else {}, "error": None, "unsupported": False}
    pfc = {"json": pfc_doc, "error": None, "unsupported": False}
    (tmp / "rdmacheck/dcb.json").write_text(json.dumps({"enP2p1s0f0np0": {"app": app, "pfc": pfc}}))
    return tmp


def _ctx(root: Path, env: dict):
    cfg = Config(dict(env), {}, None, build_profile())
    return gather(HostRoot(root), cfg), cfg


@pytest.mark.parametrize("tc,status,needle", [
    ("192", Status.PASS, "DSCP 48 -> priority 6"),                 # 192 >> 2 = 48 -> prio 6, PFC on
    ("0xc0", Status.PASS, "DSCP 48"),                              # NCCL parses TC with base auto-detect
    ("96", Status.FAIL, "several priorities [2, 3]"),              # DSCP 24 -> 2 and 3, PFC off there
    ("106", Status.FAIL, "no dscp-prio rule for DSCP 26"),          # unmapped -> priority 0, PFC off
])
def test_chain_on_manpage_tables(tmp_path, tc, status, needle):
    root = _snapshot(tmp_path, "app-manpage-iproute2-6.5.json", load("pfc-manpage.json"))
    r = gate_rdma_pfc(*_ctx(root, {"NCCL_IB_TC": tc, "NCCL_IB_HCA": "=roceP2p1s0f0"}))[0]
    assert r.status is status, r
    assert needle in r.observed
    if status is Status.FAIL:
        assert "dcb pfc set dev enP2p1s0f0np0 prio-pfc" in r.remedy


def test_chain_on_real_mlxsw_capture(tmp_path):
    pfc = {"pfc_cap": 8, "macsec_bypass": False, "delay": 0, "prio_pfc": [False, True] + [False] * 6}
    root = _snapshot(tmp_path, "app-mlxsw-swp1-netdev-2024.json", pfc)
    r = gate_rdma_pfc(*_ctx(root, {"NCCL_IB_TC": "64"}))[0]       # DSCP 16 (CS2) -> priority 1, PFC on
    assert r.status is Status.PASS and "priority 1" in r.observed
    r = gate_rdma_pfc(*_ctx(root, {"NCCL_IB_TC": "32"}))[0]       # DSCP 8 (CS1) -> priority 0, PFC off
    assert r.status is Status.FAIL and "prio-pfc 0:on" in r.remedy


def test_empty_app_table_means_pcp_trust(tmp_path):
    pfc = {"pfc_cap": 8, "prio_pfc": [True] + [False] * 7}
    root = _snapshot(tmp_path, None, pfc)
    r = gate_rdma_pfc(*_ctx(root, {"NCCL_IB_TC": "106"}))[0]
    assert r.status is Status.WARN and "trusts PCP" in r.observed and "--trust dscp" in r.remedy


def test_bad_tc_skips_and_no_netdev_skips(tmp_path):
    r = gate_rdma_pfc(*_ctx(tmp_path, {"NCCL_IB_TC": "300"}))[0]
    assert r.status is Status.SKIP and "rdma.qos" in r.observed
    r = gate_rdma_pfc(*_ctx(tmp_path, {"NCCL_IB_TC": "106"}))[0]
    assert r.status is Status.SKIP and "no RDMA netdev" in r.observed


def test_snapshot_without_dcb_facts_skips(tmp_path):
    (tmp_path / "sys/class/infiniband/rxe0/device/net/eth1").mkdir(parents=True)
    (tmp_path / "sys/class/infiniband/rxe0/ports/1").mkdir(parents=True)
    r = gate_rdma_pfc(*_ctx(tmp_path, {"NCCL_IB_TC": "106"}))[0]
    assert r.status is Status.SKIP and "no dcb facts" in r.observed


# ------------------------------------------------------------------ the real dcb against a veth

@pytest.mark.netns
def test_real_dcb_on_veth_skips_with_reason(netns_pair, tmp_path):
    require(shutil.which("dcb") is not None, "iproute2's dcb is not installed", "dcb")
    probe = (
        "import json; from rdmacheck.preflight.facts import dcb; from rdmacheck.preflight.checks.pfc import gate_rdma_pfc;"
        "from rdmacheck.config import Config, build_profile; from rdmacheck.preflight.gather import gather;"
        "from rdmacheck.preflight.root import HostRoot;"
        f"raw = dcb.run_dcb('app', '{netns_pair.va}');"
        "cfg = Config({'NCCL_IB_TC': '106'}, {}, None, build_profile({'subnet': '10.199.0.0/24'}));"
        "r = gate_rdma_pfc(gather(HostRoot('/'), cfg), cfg)[0];"
        "print(json.dumps({'raw': raw, 'status': r.status.value, 'observed': r.observed}))"
    )
    p = netns_pair.ns(netns_pair.a, sys.executable, "-c", probe, check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["raw"]["unsupported"] is True and "Operation not supported" in out["raw"]["error"]
    assert out["status"] == "skip"
    assert f"{netns_pair.va}: DCB not supported by this interface" in out["observed"]
    # the same through the CLI, as an operator runs it
    out_json = Path(tmp_path) / "pfc.json"
    q = subprocess.run(["ip", "netns", "exec", netns_pair.a, sys.executable, "-m", "rdmacheck", "preflight",
                        "--only", "rdma.pfc", "--expect", "subnet=10.199.0.0/24", "-q", "--json", str(out_json)],
                       capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), "NCCL_IB_TC": "106"})
    assert q.returncode == 0 and "Traceback" not in q.stderr, q.stdout + q.stderr
    (res,) = json.loads(out_json.read_text())["results"]
    assert res["id"] == "rdma.pfc" and res["status"] == "skip" and "not supported by this interface" in res["observed"]


def test_rdma_netdevs_on_real_captures(captures):
    """The RDMA device -> netdev walk (device/net) on real host dumps (shared/captures, hwloc test suite)."""
    from rdmacheck.preflight.facts.infiniband import port_netdevs, read_infiniband

    mlx4 = port_netdevs(read_infiniband(HostRoot(captures / "sysfs/hwloc-32em64t-mlx4")))
    assert dcb.rdma_netdevs(mlx4, None) == {"ib0": "mlx4_0"}
    assert dcb.rdma_netdevs(mlx4, "^mlx4") == {}
    assert dcb.rdma_netdevs(mlx4, "mlx4_0:1") == {"ib0": "mlx4_0"}
    qib = port_netdevs(read_infiniband(HostRoot(captures / "sysfs/hwloc-40intel64-qib")))
    assert dcb.rdma_netdevs(qib, "=qib0") == {"ib0": "qib0"}
    assert dcb.rdma_netdevs(qib, "qib0:x") == {}  # malformed port: rdma.devices reports it, no crash here
