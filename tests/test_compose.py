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


@pytest.fixture(scope="module")
def driver():
    d = detect_driver()
    require(d is not None, "no compose implementation (docker compose v2 or docker-compose v1); run .ci/docker-setup.sh")
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
    for needle in ("/dev/infiniband/rdma_cm", "/dev/infiniband/uverbs0", "/sys/class/infiniband:/sys/class/infiniband:ro",
                   "/sys/class/net:/sys/class/net:ro", "/etc/rdma:/etc/rdma:ro", "67108864", "init: true",
                   "NCCL_IB_HCA: roceP2p1s0f0", "ray start --head --port=6379 --block",
                   'ray start --address="$$RAY_ADDRESS" --block'):
        assert needle in out, needle
    # memlock -1 = unlimited as in the reference (a capped host sets MEMLOCK_LIMIT)
    assert "hard: -1" in out and "soft: -1" in out


def test_invalid_compose_file_fails_the_compose_gate(driver, tmp_path):
    bad = tmp_path / "compose.yaml"
    text = (REPO / "docker" / "compose.yaml").read_text().replace("    ipc: host\n", "    ipc: host\n    ipcc: host\n")
    bad.write_text(text)
    ev = tmp_path / "ev.json"
    cp = run_cli("launch", "--role", "head", "--env", str(EXAMPLE), "--compose", str(bad), "--dry-run",
                 "--json", str(ev), timeout=120)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    import json

    res = {r["id"]: r for r in json.loads(ev.read_text())["results"]}
    assert res["docker.compose"]["status"] == "fail" and "ipcc" in res["docker.compose"]["observed"]
    assert "docker.compose" in json.loads(ev.read_text())["context"]["refused"]
