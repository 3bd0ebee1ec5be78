"""docker/compose.yaml validates with the real compose (v2 plugin or Debian's docker-compose v1).

`config` does not talk to the daemon, so these need only a compose binary, not the engine.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from conftest import REPO, require, run_cli
from rdmacheck.launch.compose import ComposeInvocation, detect_driver, parse_config_output

EXAMPLE = REPO / "docker" / ".env.example"
COMPOSE_FILES = sorted(glob.glob(str(REPO / "docker" / "*.yaml")) + glob.glob(str(REPO / "docker" / "*.yml")))


@pytest.fixture(scope="module", params=["v2", "v1"])
def driver(request):
    """Each compose implementation the launcher drives: v1 (Debian's docker-compose) must exist;
    the v2 plugin is optional on this box (.ci/docker-setup.sh installs it with DOCKER_COMPOSE_V2=1)."""
    d = detect_driver(prefer=request.param)
    if request.param == "v2" and d is None:
        require(False, "compose v2 plugin not installed", "compose-v2")
    require(d is not None, "Debian's docker-compose (v1) not installed", "docker")
    return d


def test_there_is_a_compose_file():
    assert str(REPO / "docker" / "compose.yaml") in COMPOSE_FILES


@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=[Path(c).name for c in COMPOSE_FILES])
@pytest.mark.parametrize("role", ["head", "worker"])
def test_compose_files_validate(driver, compose, role):
    inv = ComposeInvocation(driver, Path(compose), EXAMPLE, f"rdmacheck-{role}", role)
    p = inv.run("config", timeout=60)
    assert p.rc == 0, p.stderr
    cfg = parse_config_output(p.stdout)
    assert cfg["network_mode"] == "host" and cfg["ipc"] == "host" and cfg["runtime"] == "nvidia"
    assert cfg["container_name"] == f"ray-{role}" and cfg["image"] == "nvcr.io/nvidia/vllm:25.09-py3"
    out = p.stdout
    for needle in ("67108864", "init: true", "NCCL_IB_HCA: roceP2p1s0f0", "ray start --head --port=6379 --block",
                   'ray start --address="$$RAY_ADDRESS" --block'):
        assert needle in out, needle
    # devices and read-only mounts: v1 prints the short form, v2 the long form
    for dev in ("/dev/infiniband/rdma_cm", "/dev/infiniband/uverbs0", "/dev/infiniband"):
        assert f"{dev}:{dev}" in out or f"source: {dev}\n        target: {dev}\n" in out, dev
    for path in ("/sys/class/infiniband", "/sys/class/net", "/etc/rdma"):
        assert f"{path}:{path}:ro" in out or (
            f"source: {path}\n        target: {path}\n        read_only: true" in out), path
    # memlock -1 = unlimited as in the reference (a capped host sets MEMLOCK_LIMIT)
    assert "hard: -1" in out and "soft: -1" in out


def test_invalid_compose_file_fails_the_compose_gate(driver, tmp_path):
    bad = tmp_path / "compose.yaml"
    text = (REPO / "docker" / "compose.yaml").read_text().replace("    ipc: host\n", "    ipc: host\n    ipcc: host\n")
    bad.write_text(text)
    ev = tmp_path / "ev.json"
    cp = run_cli("launch", "--role", "head", "--env", str(EXAMPLE), "--compose", str(bad), "--dry-run",
                 "--compose-driver", "v2" if driver.major == 2 and driver.base[-1] == "compose" else "v1",
                 "--json", str(ev), timeout=120)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    import json

    res = {r["id"]: r for r in json.loads(ev.read_text())["results"]}
    assert res["docker.compose"]["status"] == "fail" and "ipcc" in res["docker.compose"]["observed"]
    assert f"compose v{driver.major}" in res["docker.compose"]["observed"]
    assert "docker.compose" in json.loads(ev.read_text())["context"]["refused"]
