"""The Docker test bed shared by the launcher and watch tests (marker `docker`; .ci/docker-setup.sh starts it).

What cannot exist on this machine, and how the tests stand in for it (tests/test_launch_docker.py's
docstring gives the detail): no registry, so stand-in images (docker/standin/, docker/standin-python/); no
GPU, so dockerd maps the `nvidia` runtime name to runc; no RDMA in this kernel, so a compose file derived
from the real docker/compose.yaml changes only the RDMA sources (mknod device nodes in a temp tree).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import uuid
from pathlib import Path

from conftest import REPO, require

COMPOSE = REPO / "docker" / "compose.yaml"
EXAMPLE = REPO / "docker" / ".env.example"
STANDIN = "rdmacheck/standin:latest"
STANDIN_PYTHON = "rdmacheck/standin-python:latest"  # the stand-in with a Python (docker/standin-python/)


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker_ok() -> bool:
    try:
        return shutil.which("docker") is not None and docker("info", timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def require_engine() -> None:
    """The engine answers, a compose exists, the stand-in image is there (built here if not), and dockerd
    knows the `nvidia` runtime name; else skip (locally) or fail (CI) with the line that fixes it."""
    require(docker_ok(), "Docker engine not reachable (`docker info` fails)", "docker")
    require(shutil.which("docker-compose") is not None or docker("compose", "version").returncode == 0,
            "no compose (docker compose v2 or docker-compose v1)", "docker")
    if docker("image", "inspect", STANDIN).returncode != 0:
        # .ci/docker-setup.sh builds it; build it here too so a local run needs only the engine.
        require(os.path.exists("/bin/busybox"), "busybox-static not installed (stand-in image needs /bin/busybox)",
                "apt-get install busybox-static")
        ctx = Path(__import__("tempfile").mkdtemp(prefix="rc-standin-"))
        try:
            shutil.copy(REPO / "docker" / "standin" / "Dockerfile", ctx)
            shutil.copy(REPO / "docker" / "standin" / "ray", ctx)
            shutil.copy("/bin/busybox", ctx / "busybox")
            b = subprocess.run(["docker", "build", "-q", "-t", STANDIN, str(ctx)], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "DOCKER_BUILDKIT": "0"})
            assert b.returncode == 0, b.stderr
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
    info = json.loads(docker("info", "--format", "{{json .Runtimes}}").stdout or "{}")
    require("nvidia" in info, "dockerd lacks the nvidia runtime name",
            "start dockerd with --add-runtime nvidia=/usr/sbin/runc (bash .ci/docker-setup.sh does)")


def cli(*argv: str) -> subprocess.CompletedProcess:
    """The real CLI entry point, in this process: the many launches here would otherwise pay a Python
    start-up each (test_launch.py runs the CLI as a subprocess)."""
    from rdmacheck.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return subprocess.CompletedProcess(list(argv), rc, out.getvalue(), err.getvalue())


def memlock_limit() -> str:
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    return "-1" if hard == resource.RLIM_INFINITY else str(hard)


class Node:
    """One launcher test bed: stand-in RDMA tree, derived compose file, .env, unique project; cleaned up always."""

    def __init__(self, tmp: Path, image: str = STANDIN, env: dict[str, str] | None = None):
        self.tmp = tmp
        self.project = f"rdmacheck-t{uuid.uuid4().hex[:8]}"
        tree = tmp / "host"
        (tree / "dev" / "infiniband").mkdir(parents=True)
        (tree / "sys" / "class" / "infiniband").mkdir(parents=True)
        (tree / "etc" / "rdma").mkdir(parents=True)
        os.mknod(tree / "dev/infiniband/rdma_cm", 0o666 | 0o020000, os.makedev(10, 58))
        os.mknod(tree / "dev/infiniband/uverbs0", 0o666 | 0o020000, os.makedev(231, 192))
        text = COMPOSE.read_text()
        subs = [
            ("      - /dev/infiniband", f"      - {tree}/dev/infiniband"),
            ("      - /sys/class/infiniband:/sys/class/infiniband:ro",
             f"      - {tree}/sys/class/infiniband:/run/rdmacheck-host/sys/class/infiniband:ro"),
            ("      - /etc/rdma:", f"      - {tree}/etc/rdma:"),
            # the checkout the watch service runs rdmacheck from (`..` of docker/, not of this temp folder)
            ("      - ..:/opt/rdmacheck:ro", f"      - {REPO}:/opt/rdmacheck:ro"),
        ]
        for old, new in subs:
            assert old in text, f"docker/compose.yaml changed: {old!r} not found"
            text = text.replace(old, new)
        self.compose = tmp / "compose.yaml"
        self.compose.write_text(text)
        sets = {"VLLM_IMAGE": image, "MEMLOCK_LIMIT": memlock_limit(), "HEALTH_INTERVAL": "1s", **(env or {})}
        text_env = EXAMPLE.read_text()
        for key, value in sets.items():
            lines = [f"{key}={value}" if l.startswith(f"{key}=") else l for l in text_env.splitlines()]
            if not any(l.startswith(f"{key}=") for l in lines):
                lines.append(f"{key}={value}")
            text_env = "\n".join(lines) + "\n"
        self.env = tmp / "node.env"
        self.env.write_text(text_env)

    def launch(self, *extra: str, role: str = "head", json_name: str = "launch.json"):
        return cli("launch", "--role", role, "--env", str(self.env), "--compose", str(self.compose),
                   "--project", self.project, "--json", str(self.tmp / json_name), "--health-timeout", "30", *extra)

    def evidence(self, json_name: str = "launch.json") -> dict:
        return json.loads((self.tmp / json_name).read_text())

    def containers(self) -> list[str]:
        out = docker("ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}").stdout
        return out.split()

    def cleanup(self) -> None:
        for cid in self.containers():
            docker("rm", "-f", "-v", cid)
        for net in docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}").stdout.split():
            docker("network", "rm", net)
