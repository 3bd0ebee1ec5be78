"""rdmacheck launch: input errors (exit 2), waiver rules, compose variable checks, bounded waits.

These run the real CLI and the real compose/.env parsing; none needs the Docker engine
(the tests that start containers are in test_launch_docker.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from rdmacheck.util.errors import UsageError
from rdmacheck.launch import waivers
from rdmacheck.launch.compose import check_variables, detect_driver, parse_config_output
from rdmacheck.launch.gates import container_gates
from rdmacheck.launch.launcher import wait_healthy
from rdmacheck.evidence.model import Result, Status

EXAMPLE = REPO / "docker" / ".env.example"
COMPOSE = REPO / "docker" / "compose.yaml"


def _env(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.env"
    p.write_text(text)
    return p


def _assert_usage(cp, *needles: str) -> None:
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    err = cp.stderr.strip()
    assert err.startswith("rdmacheck: error:") and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def test_env_example_carries_the_reference_values():
    from rdmacheck.config import load_env_file

    env = load_env_file(EXAMPLE)
    want = {
        "NCCL_IB_HCA": "roceP2p1s0f0", "NCCL_SOCKET_IFNAME": "enP2p1s0f0np0", "GLOO_SOCKET_IFNAME": "enP2p1s0f0np0",
        "NCCL_NET_GDR_LEVEL": "5", "MASTER_ADDR": "spark-01-mesh", "MASTER_PORT": "8000", "WORLD_SIZE": "2",
        "RAY_ADDRESS": "192.168.100.1:6379", "CUDA_VISIBLE_DEVICES": "0", "GPU_MEMORY_UTILIZATION": "0.35",
        "MAX_NUM_SEQS": "16", "RAY_MODE": "head", "MEMLOCK_LIMIT": "-1",
        # RoCE lossless class: DSCP 26 << 2 | ECT(0) = 106, SL 3
        "NCCL_IB_TC": "106", "NCCL_IB_SL": "3",
    }
    for k, v in want.items():
        assert env.get(k) == v, k
    assert env["VLLM_IMAGE"] and int(env["NCCL_IB_TIMEOUT"]) in range(1, 32) and int(env["NCCL_IB_RETRY_CNT"]) <= 7
    # GID index is advice only: a fixed index breaks when addresses change
    assert "NCCL_IB_GID_INDEX" not in env
    assert "# NCCL_IB_GID_INDEX=" in EXAMPLE.read_text()


def test_compose_file_uses_only_variables_the_example_defines():
    env = {**__import__("rdmacheck.config", fromlist=["x"]).load_env_file(EXAMPLE),
           "RAY_MODE": "head", "RDMACHECK_ENV_FILE": str(EXAMPLE)}
    used = check_variables(COMPOSE.read_text(), env, "compose.yaml", ".env.example")
    assert {"VLLM_IMAGE", "RAY_MODE", "MEMLOCK_LIMIT", "NCCL_IB_HCA", "RAY_ADDRESS"} <= set(used)


@pytest.mark.parametrize("line, needle", [
    ("NCCL_IB_HCA roceP2p1s0f0", "missing '='"),
    ("NCCL_IB_HCA=`roceP2p1s0f0`", "backtick"),
    ("NCCL_IB_HCA='roceP2p1s0f0", "unterminated"),
])
def test_malformed_env_is_exit_2_naming_the_line(tmp_path, line, needle):
    text = EXAMPLE.read_text().splitlines()
    text.insert(2, line)  # becomes line 3
    env = _env(tmp_path, "\n".join(text) + "\n")
    cp = run_cli("launch", "--role", "head", "--env", str(env), "--dry-run")
    _assert_usage(cp, "line 3", needle)
    cp = run_cli("launch", "--role", "head", "--env", str(env), "down", "--dry-run")
    _assert_usage(cp, "line 3")


def test_compose_with_undefined_variable_is_exit_2_naming_the_line(tmp_path):
    compose = tmp_path / "compose.yaml"
    lines = COMPOSE.read_text().splitlines()
    i = next(n for n, l in enumerate(lines) if "ipc: host" in l)
    lines.insert(i + 1, "    hostname: ${RDMACHECK_TEST_UNDEFINED_HOSTNAME}")
    compose.write_text("\n".join(lines) + "\n")
    cp = run_cli("launch", "--role", "head", "--env", str(EXAMPLE), "--compose", str(compose), "--dry-run")
    _assert_usage(cp, f"line {i + 2}", "RDMACHECK_TEST_UNDEFINED_HOSTNAME")


def test_required_variable_empty_in_env_is_exit_2(tmp_path):
    text = EXAMPLE.read_text().replace("NCCL_IB_HCA=roceP2p1s0f0", "NCCL_IB_HCA=")
    cp = run_cli("launch", "--role", "head", "--env", str(_env(tmp_path, text)), "--dry-run",
                 env={"NCCL_IB_HCA": ""})
    _assert_usage(cp, "NCCL_IB_HCA", "compose.yaml line")


def test_check_variables_semantics():
    env = {"A": "1", "EMPTY": ""}
    text = "\n".join([
        "x: $$NOT_A_VAR and $${ALSO_NOT}",        # compose escape, never substituted
        "# y: ${IN_A_COMMENT}",                   # YAML comment
        "z: ${MISSING_WITH_DEFAULT:-d} ${MISSING_ALT:+x} ${A} $A ${EMPTY}",
    ])
    assert check_variables(text, env, "c", "e") == ["MISSING_WITH_DEFAULT", "MISSING_ALT", "A", "EMPTY"]
    with pytest.raises(UsageError, match=r"c line 1: \$B"):
        check_variables("k: $B", env, "c", "e")
    with pytest.raises(UsageError, match="line 2"):
        check_variables("a: 1\nk: ${EMPTY:?must be set}", env, "c", "e")
    check_variables("k: ${EMPTY?set but may be empty}", env, "c", "e")
    with pytest.raises(UsageError, match="not a valid variable reference"):
        check_variables("k: ${1BAD}", env, "c", "e")


def test_parse_config_output_v1_and_v2_layouts():
    v1 = """services:
  ray-node:
    command:
    - /bin/sh
    container_name: ray-head
    image: nvcr.io/nvidia/vllm:25.09-py3
    ipc: host
    network_mode: host
    runtime: nvidia
    ulimits:
      memlock:
        hard: -1
version: '3.9'
"""
    v2 = """name: rdmacheck-head
services:
  other:
    image: nope
  ray-node:
    container_name: "ray-worker"
    image: 'reg.example/vllm:1'
    network_mode: host
networks: {}
"""
    a = parse_config_output(v1)
    assert a["image"] == "nvcr.io/nvidia/vllm:25.09-py3" and a["container_name"] == "ray-head"
    assert a["runtime"] == "nvidia" and a["ipc"] == "host" and "hard" not in a
    b = parse_config_output(v2)
    assert b == {"container_name": "ray-worker", "image": "reg.example/vllm:1", "network_mode": "host"}
    assert parse_config_output("services:\n  other:\n    image: x\n") == {}


def test_waiver_arguments_need_a_reason_and_a_known_gate(tmp_path):
    env = str(EXAMPLE)
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--dry-run", "--waive", "limits.memlock"),
                  "limits.memlock", "--reason")
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--dry-run", "--reason", "because"),
                  "--reason must follow a --waive")
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--dry-run",
                          "--waive", "limits.memlok", "--reason", "typo"), "limits.memlok", "no such gate")
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--dry-run",
                          "--waive", "docker.container", "--reason", "force it"), "cannot be waived")
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--dry-run",
                          "--waive", "limits.memlock", "--reason", "   "), "empty")
    _assert_usage(run_cli("launch", "--role", "primary", "--env", env), "--role")
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--project", "My Project", "--dry-run"), "--project")
    _assert_usage(run_cli("launch", "--role", "head", "--env", env, "--health-timeout", "soon"), "--health-timeout")


def test_apply_waivers_records_reason_user_time():
    results = [Result("limits.memlock", Status.FAIL), Result("rdma.qos", Status.PASS),
               Result("docker.container", Status.FAIL)]
    notes = waivers.apply(results, [waivers.Waiver("limits.memlock", "capped by provider"),
                                    waivers.Waiver("rdma.qos", "belt and braces")],
                          {"docker.container"}, user="alice")
    w = results[0].waiver
    assert w["reason"] == "capped by provider" and w["user"] == "alice" and w["time"].endswith("+00:00")
    assert results[0].effective_status is Status.WARN
    assert notes == ["waiver for rdma.qos recorded but not needed: the gate did not fail"]
    assert results[2].waiver is None and results[2].effective_status is Status.FAIL
    rt = Result.from_dict(json.loads(json.dumps(results[0].to_dict())))
    assert rt.waiver == w


def test_compose_driver_detection_and_missing_compose(tmp_path):
    missing = str(tmp_path / "no-such-binary")
    assert detect_driver(missing, missing) is None
    results, state = container_gates(None, None, docker=missing)
    by = {r.id: r for r in results}
    assert [r.id for r in results] == ["docker.engine", "docker.runtime", "docker.image", "docker.compose",
                                       "docker.container"]
    assert by["docker.compose"].status is Status.FAIL and "docker-compose" in by["docker.compose"].remedy
    assert by["docker.engine"].status is Status.FAIL and "not found" in by["docker.engine"].observed
    # without an engine the dependent gates cannot judge; the engine failure is what blocks
    assert by["docker.container"].status is Status.SKIP
    d = detect_driver()
    if d is not None:  # this machine: Debian's docker-compose 1.29 (v1), or the v2 plugin when installed
        assert d.major in (1, 2) and d.version[0].isdigit()


def test_health_wait_is_bounded(tmp_path):
    t0 = time.monotonic()
    r = wait_healthy("docker", "rdmacheck-test-no-such-container", timeout=1.0, poll=0.2)
    assert r.status is Status.FAIL and "after 1 s" in r.observed
    assert time.monotonic() - t0 < 15  # each `docker inspect` is bounded too


def _path_without_docker(tmp_path: Path) -> str:
    """A PATH holding only the host tools preflight reads with (no docker, no docker-compose): a machine
    where neither the engine nor compose is installed, as seen by the real CLI."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "ping", "rdma", "ibv_devinfo", "uname"):
        where = shutil.which(tool)
        if where:
            (bin_dir / tool).symlink_to(where)
    assert not (bin_dir / "docker").exists()
    return str(bin_dir)


def test_dry_run_without_compose_or_engine_names_the_cause_and_the_command(tmp_path):
    out = tmp_path / "launch.json"
    env = {"PATH": _path_without_docker(tmp_path), "COLUMNS": "100"}
    r = run_cli("launch", "--role", "head", "--env", str(EXAMPLE), "--dry-run", "--json", str(out),
                env=env, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    by = {x["id"]: x for x in json.loads(out.read_text())["results"]}
    assert by["docker.compose"]["status"] == "fail"
    assert "no compose implementation found" in by["docker.compose"]["observed"]
    assert by["docker.engine"]["status"] == "fail" and "command not found" in by["docker.engine"]["observed"]
    # the .env sets VLLM_IMAGE: the image gate must not blame it, but name compose as the cause
    img = by["docker.image"]
    assert "VLLM_IMAGE" not in img["remedy"] and img["status"] == "skip", img
    assert "no compose implementation found" in img["observed"] and "docker.compose" in img["remedy"]
    # refused, and still the exact compose command it would run is printed and recorded
    want = ["docker", "compose", "-f", str(COMPOSE.resolve()), "--env-file", str(EXAMPLE.resolve()),
            "-p", "rdmacheck-head", "up", "-d"]
    assert json.loads(out.read_text())["context"]["compose_command"] == want
    assert "REFUSED" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("would run once every gate passes:"))
    assert line.endswith(" ".join(want)), line


def test_dry_run_with_v1_asked_for_but_absent_names_it(tmp_path):
    env = {"PATH": _path_without_docker(tmp_path)}
    r = run_cli("launch", "--role", "worker", "--env", str(EXAMPLE), "--dry-run", "--compose-driver", "v1",
                "--json", str(tmp_path / "l.json"), env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    by = {x["id"]: x for x in json.loads((tmp_path / "l.json").read_text())["results"]}
    assert "--compose-driver v1" in by["docker.compose"]["observed"]
    assert any(ln.startswith("would run once every gate passes: docker-compose -f ") and
               ln.endswith("-p rdmacheck-worker up -d") for ln in r.stdout.splitlines()), r.stdout
