"""nccl.env: judging on a replayed node (snapshot root with rdmacheck/addrs.json) and the live
MASTER_PORT bind test on this machine's loopback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from rdmacheck.preflight.checks.nccl_env import gate_nccl_env
from rdmacheck.config import Config, build_profile
from rdmacheck.evidence.model import Status
from rdmacheck.preflight.gather import gather
from rdmacheck.preflight.root import HostRoot

REFERENCE = {
    "NCCL_SOCKET_IFNAME": "enP2p1s0f0np0", "GLOO_SOCKET_IFNAME": "enP2p1s0f0np0", "NCCL_IB_HCA": "=roceP2p1s0f0",
    "WORLD_SIZE": "2", "MASTER_ADDR": "192.168.100.1", "MASTER_PORT": "29500", "NCCL_IB_GID_INDEX": "3",
}


def node(tmp: Path) -> Path:
    (tmp / "rdmacheck").mkdir(exist_ok=True)
    (tmp / "rdmacheck/addrs.json").write_text(json.dumps({
        "lo": {"ipv4": ["127.0.0.1/8"], "ipv6": ["::1"]},
        "eth0": {"ipv4": ["10.20.0.5/24"], "ipv6": []},
        "enP2p1s0f0np0": {"ipv4": ["192.168.100.2/24"], "ipv6": []},
    }))
    return tmp


def judge(root: Path | str, env: dict, **profile):
    cfg = Config(dict(env), {}, None, build_profile(profile))
    r = gate_nccl_env(gather(HostRoot(root), cfg), cfg)[0]
    return r, {s["step"]: s for s in r.details["steps"]}


def test_reference_env_passes_with_gid_advice(tmp_path):
    r, st_ = judge(node(tmp_path), REFERENCE)
    assert r.status is Status.PASS, r
    assert "NCCL >= 2.21" in st_["NCCL_IB_GID_INDEX"]["observed"]
    assert "bind test runs on the head" in st_["MASTER_PORT"]["observed"]


@pytest.mark.parametrize("change,step,status,needle", [
    ({"GLOO_SOCKET_IFNAME": None}, "GLOO_SOCKET_IFNAME", Status.FAIL, "GLOO_SOCKET_IFNAME=enP2p1s0f0np0"),
    ({"GLOO_SOCKET_IFNAME": "eth0"}, "GLOO_SOCKET_IFNAME", Status.FAIL, "GLOO_SOCKET_IFNAME=enP2p1s0f0np0"),
    ({"NCCL_SOCKET_IFNAME": None}, "NCCL_SOCKET_IFNAME", Status.FAIL, "NCCL_SOCKET_IFNAME=enP2p1s0f0np0"),
    ({"NCCL_SOCKET_IFNAME": "eth"}, "NCCL_SOCKET_IFNAME", Status.FAIL, "NCCL_SOCKET_IFNAME=enP2p1s0f0np0"),
    ({"NCCL_IB_HCA": None}, "NCCL_IB_HCA", Status.WARN, "NCCL_IB_HCA"),
    ({"NCCL_IB_DISABLE": "1"}, "NCCL_IB_DISABLE", Status.FAIL, "remove NCCL_IB_DISABLE"),
    ({"WORLD_SIZE": "4"}, "WORLD_SIZE", Status.FAIL, "WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE", Status.FAIL, "WORLD_SIZE=2"),
    ({"MASTER_PORT": "70000"}, "MASTER_PORT", Status.FAIL, "29500"),
    ({"MASTER_PORT": "29500x"}, "MASTER_PORT", Status.FAIL, "29500"),
])
def test_each_inconsistency(tmp_path, change, step, status, needle):
    env = {k: v for k, v in {**REFERENCE, **change}.items() if v is not None}
    r, st_ = judge(node(tmp_path), env)
    assert st_[step]["status"] == status.value, st_[step]
    assert needle in st_[step]["remedy"]
    assert r.status is status


def test_prefix_and_exclusion_syntax(tmp_path):
    r, st_ = judge(node(tmp_path), dict(REFERENCE, NCCL_SOCKET_IFNAME="^lo,eth,docker"))
    assert st_["NCCL_SOCKET_IFNAME"]["status"] == "pass"
    r, st_ = judge(node(tmp_path), dict(REFERENCE, NCCL_SOCKET_IFNAME="e"))  # also matches eth0 (management)
    assert st_["NCCL_SOCKET_IFNAME"]["status"] == "warn" and "also eth0" in st_["NCCL_SOCKET_IFNAME"]["observed"]
    assert "NCCL_SOCKET_IFNAME=enP2p1s0f0np0" in st_["NCCL_SOCKET_IFNAME"]["remedy"]
    r, st_ = judge(node(tmp_path), dict(REFERENCE, NCCL_SOCKET_IFNAME="=enP2"))
    assert st_["NCCL_SOCKET_IFNAME"]["status"] == "fail"


def test_no_subnet_address(tmp_path):
    r, st_ = judge(node(tmp_path), REFERENCE, subnet="192.168.200.0/24")
    assert st_["NCCL_SOCKET_IFNAME"]["status"] == "fail" and "no interface has an address" in st_["NCCL_SOCKET_IFNAME"]["observed"]


def test_world_size_follows_profile(tmp_path):
    r, st_ = judge(node(tmp_path), dict(REFERENCE, WORLD_SIZE="16"), nodes=2, gpus_per_node=8)
    assert st_["WORLD_SIZE"]["status"] == "pass"


def test_master_port_bind_on_the_head_live():
    # Live on this machine: MASTER_ADDR on loopback makes this node the head; the port is really bound.
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        r, st_ = judge("/", env, subnet="127.0.0.0/8")
        assert st_["MASTER_PORT"]["status"] == "fail" and "already in use" in st_["MASTER_PORT"]["observed"]
        assert f"sport = :{port}" in st_["MASTER_PORT"]["remedy"]
    r, st_ = judge("/", env, subnet="127.0.0.0/8")
    assert st_["MASTER_PORT"]["status"] == "pass" and "free on this head" in st_["MASTER_PORT"]["observed"]


def test_time_wait_port_counts_as_free():
    # A port left in TIME_WAIT by a finished rendezvous must not fail the gate (SO_REUSEADDR, as servers bind).
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port), timeout=3)
    conn, _ = srv.accept()
    conn.close()  # server side closes first -> TIME_WAIT on the server's port
    cli.close()
    srv.close()
    r, st_ = judge("/", {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}, subnet="127.0.0.0/8")
    assert st_["MASTER_PORT"]["status"] == "pass"


KEYS = ["NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_IB_DISABLE", "WORLD_SIZE",
        "NCCL_IB_GID_INDEX", "MASTER_PORT", "MASTER_ADDR"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(KEYS), st.text(max_size=12)))
@example({"WORLD_SIZE": "0\x1f"})  # isdigit() says yes, int() says no: found by this test in CI
@example({"WORLD_SIZE": "\u00b9"})
@example({"MASTER_PORT": "1\x1f"})  # str.strip() takes the \x1f, int() does not: found by this test in CI
def test_arbitrary_env_never_raises(tmp_path, env):
    # snapshot root: MASTER_ADDR is not resolved when replaying, so no DNS traffic here
    r, _ = judge(node(tmp_path), env)
    assert r.id == "nccl.env" and r.status in (Status.PASS, Status.WARN, Status.FAIL)


@pytest.mark.parametrize("port,needle", [("6379", "GCS"), ("6380", "RAY_ADDRESS"), ("8265", "dashboard")])
def test_master_port_colliding_with_the_stack_warns(tmp_path, port, needle):
    env = dict(REFERENCE, MASTER_PORT=port, RAY_ADDRESS="192.168.100.1:6380" if port == "6380" else "192.168.100.1:6379")
    r, st_ = judge(node(tmp_path), env)
    assert st_["MASTER_PORT"]["status"] == "warn" and needle in st_["MASTER_PORT"]["observed"]
    assert r.status is Status.WARN


def test_master_port_8000_is_the_model_server_port_its_compose_role(tmp_path):
    """docker/compose.yaml's reference cluster uses MASTER_PORT as the model server's port (vLLM's 8000):
    the reference .env's MASTER_PORT=8000 is that role, not a collision with it."""
    env = dict(REFERENCE, MASTER_PORT="8000")
    r, st_ = judge(node(tmp_path), env)
    assert st_["MASTER_PORT"]["status"] == "pass" and "model server" in st_["MASTER_PORT"]["observed"]


@pytest.mark.parametrize("raw", ["1\x1f", "\u00b9", "29500\x1c", "0", "65536"])
def test_master_port_torch_cannot_read_fails(raw):
    """MASTER_PORT as torch reads it (int()): what int() refuses or what is no TCP port fails, never raises."""
    _, st_ = judge("/", {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": raw}, subnet="127.0.0.0/8")
    assert st_["MASTER_PORT"]["status"] == "fail", st_["MASTER_PORT"]
