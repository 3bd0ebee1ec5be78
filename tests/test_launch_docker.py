"""rdmacheck launch against the real Docker engine (marker `docker`; .ci/docker-setup.sh starts it).

What cannot exist on this machine, and how the tests stand in for it:
- no registry and no vLLM image: the stand-in image (scratch + busybox, docker/standin/) with a fake `ray`;
- no GPU: dockerd maps the `nvidia` runtime name to runc (so docker.runtime is a WARN, honestly);
- no RDMA in this kernel: /dev/infiniband does not exist and the container's sysfs has no infiniband
  class, so runc cannot create that mount point in read-only sysfs.  The tests derive a compose file from
  the real docker/compose.yaml that changes only those sources: device nodes made with mknod (the real
  major/minor numbers of rdma_cm and uverbs0) in a temp tree, and the infiniband class mounted elsewhere.
- memlock: the hard limit here is 8 MiB and root lacks CAP_SYS_RESOURCE, so limits.memlock fails for
  real and the container's MEMLOCK_LIMIT is set to that hard limit (docker cannot exceed it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, require

pytestmark = pytest.mark.docker

COMPOSE = REPO / "docker" / "compose.yaml"
EXAMPLE = REPO / "docker" / ".env.example"
STANDIN = "rdmacheck/standin:latest"
SNAPSHOT = REPO / "tests" / "data" / "softroce-snapshot.tar.gz"


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _docker_ok() -> bool:
    try:
        return shutil.which("docker") is not None and _docker("info", timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def engine():
    require(_docker_ok(), "Docker engine not reachable (`docker info` fails)", "docker")
    require(shutil.which("docker-compose") is not None or _docker("compose", "version").returncode == 0,
            "no compose (docker compose v2 or docker-compose v1)", "docker")
    if _docker("image", "inspect", STANDIN).returncode != 0:
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
    info = json.loads(_docker("info", "--format", "{{json .Runtimes}}").stdout or "{}")
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


def _memlock_limit() -> str:
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    return "-1" if hard == resource.RLIM_INFINITY else str(hard)


class Node:
    """One launcher test bed: stand-in RDMA tree, derived compose file, .env, unique project; cleaned up always."""

    def __init__(self, tmp: Path):
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
        ]
        for old, new in subs:
            assert old in text, f"docker/compose.yaml changed: {old!r} not found"
            text = text.replace(old, new)
        self.compose = tmp / "compose.yaml"
        self.compose.write_text(text)
        env = EXAMPLE.read_text()
        for key, value in (("VLLM_IMAGE", STANDIN), ("MEMLOCK_LIMIT", _memlock_limit()), ("HEALTH_INTERVAL", "1s")):
            lines = [f"{key}={value}" if l.startswith(f"{key}=") else l for l in env.splitlines()]
            env = "\n".join(lines) + "\n"
        self.env = tmp / "node.env"
        self.env.write_text(env)

    def launch(self, *extra: str, role: str = "head", json_name: str = "launch.json"):
        return cli("launch", "--role", role, "--env", str(self.env), "--compose", str(self.compose),
                   "--project", self.project, "--json", str(self.tmp / json_name), "--health-timeout", "30", *extra)

    def evidence(self, json_name: str = "launch.json") -> dict:
        return json.loads((self.tmp / json_name).read_text())

    def containers(self) -> list[str]:
        out = _docker("ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}").stdout
        return out.split()

    def cleanup(self) -> None:
        for cid in self.containers():
            _docker("rm", "-f", "-v", cid)
        for net in _docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}").stdout.split():
            _docker("network", "rm", net)


@pytest.fixture
def node(engine, tmp_path):
    n = Node(tmp_path)
    require(_docker("ps", "-aq", "--filter", "name=^/ray-head$").stdout.strip() == "",
            "a ray-head container already exists on this machine; the test would collide with it")
    try:
        yield n
    finally:
        n.cleanup()
    assert n.containers() == []


_FAILING: list[str] = []


def _failing_gates(node: Node) -> list[str]:
    """The gates that fail on this machine (one dry run per module: the host does not change meanwhile)."""
    if not _FAILING:
        cp = node.launch("--dry-run", json_name="dry.json")
        assert cp.returncode == 1, (cp.stdout, cp.stderr)
        _FAILING.extend(r["id"] for r in node.evidence("dry.json")["results"] if r["status"] == "fail")
    return list(_FAILING)


def test_real_gates_refuse_and_touch_nothing(node):
    cp = node.launch()
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "REFUSED" in cp.stdout and "[limits.memlock]" in cp.stdout and "remedy:" in cp.stdout
    assert node.containers() == []
    assert _docker("ps", "-aq", "--filter", "name=^/ray-head$").stdout.strip() == ""
    ev = node.evidence()
    assert ev["kind"] == "launch" and ev["status"] == "fail"
    assert "limits.memlock" in ev["context"]["refused"] and ev["context"]["launched"] is False
    ids = [r["id"] for r in ev["results"]]
    for gid in ("limits.memlock", "docker.engine", "docker.runtime", "docker.image", "docker.compose", "docker.container"):
        assert gid in ids
    memlock = next(r for r in ev["results"] if r["id"] == "limits.memlock")
    assert memlock["status"] == "fail"  # 8 MiB hard cap on this machine: a real failure
    assert {r["id"]: r["status"] for r in ev["results"]}["docker.image"] == "pass"


def test_waivers_one_by_one_launch_inspect_duplicate_down(node):
    failing = _failing_gates(node)
    assert "limits.memlock" in failing and not any(f.startswith("docker.") for f in failing), failing
    waive = []
    for gid in failing:
        waive += ["--waive", gid, "--reason", f"test bed: {gid} cannot pass on this machine"]

    # every waiver is needed: leaving out the memlock one still refuses, naming only that gate
    partial = []
    for gid in failing:
        if gid != "limits.memlock":
            partial += ["--waive", gid, "--reason", f"test bed: {gid}"]
    cp = node.launch(*partial, json_name="partial.json")
    assert cp.returncode == 1 and node.containers() == []
    assert node.evidence("partial.json")["context"]["refused"] == ["limits.memlock"]

    cp = node.launch(*waive)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    ev = node.evidence()
    assert ev["kind"] == "launch" and ev["context"]["launched"] is True
    by = {r["id"]: r for r in ev["results"]}
    for gid in failing:
        w = by[gid]["waiver"]
        assert w["reason"] == f"test bed: {gid} cannot pass on this machine" and w["user"] and w["time"]
    assert by["launch.up"]["status"] == "pass" and by["launch.health"]["status"] == "pass"
    if shutil.which("docker") and _docker("compose", "version").returncode == 0:
        assert ev["context"]["compose_command"][:2] == ["docker", "compose"]  # v2 preferred when present
    cmd = ev["context"]["compose_command"]
    assert isinstance(cmd, list) and cmd[-2:] == ["up", "-d"] and node.project in cmd and str(node.env) in cmd

    cids = node.containers()
    assert len(cids) == 1 and ev["context"]["container_id"] == cids[0]
    info = json.loads(_docker("inspect", cids[0]).stdout)[0]
    hc = info["HostConfig"]
    assert hc["NetworkMode"] == "host" and hc["IpcMode"] == "host" and hc["Init"] is True
    assert hc["Runtime"] == "nvidia"
    assert {u["Name"]: u["Hard"] for u in hc["Ulimits"]} == {"memlock": int(_memlock_limit()), "stack": 67108864}
    assert {d["PathInContainer"] for d in hc["Devices"]} == {
        "/dev/infiniband/rdma_cm", "/dev/infiniband/uverbs0", "/dev/infiniband"}
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    for k, v in {"NCCL_IB_HCA": "roceP2p1s0f0", "NCCL_SOCKET_IFNAME": "enP2p1s0f0np0",
                 "GLOO_SOCKET_IFNAME": "enP2p1s0f0np0", "NCCL_NET_GDR_LEVEL": "5", "NCCL_IB_TC": "106",
                 "NCCL_IB_SL": "3", "MASTER_ADDR": "spark-01-mesh", "MASTER_PORT": "8000", "WORLD_SIZE": "2",
                 "RAY_ADDRESS": "192.168.100.1:6379", "CUDA_VISIBLE_DEVICES": "0", "GPU_MEMORY_UTILIZATION": "0.35",
                 "MAX_NUM_SEQS": "16", "RAY_MODE": "head"}.items():
        assert env.get(k) == v, k
    assert "NCCL_IB_GID_INDEX" not in env  # commented out in the .env: absent, not empty
    assert info["Name"] == "/ray-head" and info["State"]["Health"]["Status"] == "healthy"
    started = _docker("exec", cids[0], "cat", "/tmp/ray/start-args").stdout.strip()
    assert started == "--head --port=6379 --block"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/sys/class/net"]["RW"] is False and mounts["/etc/rdma"]["RW"] is False

    # a second launch sees the running container and refuses; nothing is recreated
    cp = node.launch(*waive, json_name="again.json")
    assert cp.returncode == 1 and "already running" in cp.stdout
    assert node.containers() == cids
    assert json.loads(_docker("inspect", cids[0]).stdout)[0]["State"]["StartedAt"] == info["State"]["StartedAt"]
    assert node.evidence("again.json")["context"]["refused"] == ["docker.container"]

    cp = cli("launch", "--role", "head", "--env", str(node.env), "--compose", str(node.compose),
             "--project", node.project, "down")
    assert cp.returncode == 0, cp.stderr
    assert node.containers() == []


def test_worker_role_through_compose_v1(node):
    """The worker command, driven through Debian's docker-compose v1 (the fallback), up and down."""
    require(shutil.which("docker-compose") is not None, "Debian's docker-compose (v1) not installed", "apt-get install docker-compose")
    # A .env value with shell syntax in it stays data: no shell on the host or in the container runs it.
    marker = f"/tmp/rdmacheck-pwned-{node.project}"
    hostile = f"192.168.100.1:6379;touch {marker}"
    node.env.write_text(node.env.read_text().replace("RAY_ADDRESS=192.168.100.1:6379", f"RAY_ADDRESS={hostile}"))
    cp = node.launch("--dry-run", role="worker", json_name="dry-worker.json")  # which gates fail: any driver
    waive = []
    for r in node.evidence("dry-worker.json")["results"]:
        if r["status"] == "fail":
            waive += ["--waive", r["id"], "--reason", "test bed"]
    cp = node.launch(*waive, "--compose-driver", "v1", role="worker")
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    ev = node.evidence()
    assert ev["context"]["compose_command"][0] == "docker-compose" and "compose v1" in ev["context"]["compose_driver"]
    # the gates judged the node as a worker although the .env says RAY_MODE=head
    assert ev["context"]["config"]["env"]["RAY_MODE"] == "worker"
    assert ev["context"]["config"]["env_sources"]["RDMACHECK_ROLE"] == "launch --role"
    (cid,) = node.containers()
    assert _docker("exec", cid, "cat", "/tmp/ray/start-args").stdout.strip() == f"--address={hostile} --block"
    assert _docker("exec", cid, "test", "-e", marker).returncode == 1 and not os.path.exists(marker)
    info = json.loads(_docker("inspect", cid).stdout)[0]
    assert info["Name"] == "/ray-worker" and "RAY_MODE=worker" in info["Config"]["Env"]
    assert info["Config"]["Labels"]["com.docker.compose.version"].startswith("1.")
    cp = cli("launch", "--role", "worker", "--env", str(node.env), "--compose", str(node.compose),
             "--project", node.project, "--compose-driver", "v1", "--down")
    assert cp.returncode == 0, cp.stderr
    assert node.containers() == []


def test_health_wait_is_bounded_and_leaves_the_container_for_inspection(node):
    failing = _failing_gates(node)
    waive = []
    for gid in failing:
        waive += ["--waive", gid, "--reason", "test bed"]
    # docker 20.10 runs the first healthcheck one interval after start: 60 s here, far beyond the 2 s bound
    node.env.write_text(node.env.read_text().replace("HEALTH_INTERVAL=1s", "HEALTH_INTERVAL=60s"))
    t0 = time.monotonic()
    cp = cli("launch", "--role", "head", "--env", str(node.env), "--compose", str(node.compose),
             "--project", node.project, "--json", str(node.tmp / "slow.json"), "--health-timeout", "2", *waive)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert time.monotonic() - t0 < 60
    ev = node.evidence("slow.json")
    health = next(r for r in ev["results"] if r["id"] == "launch.health")
    assert health["status"] == "fail" and "after 2 s" in health["observed"] and "starting" in health["observed"]
    assert ev["context"]["launched"] is True and len(node.containers()) == 1  # left for `docker logs`; fixture removes it


def test_start_error_is_reported_and_cleaned_up(node):
    """Waiving limits.memlock does not make the host allow it: Docker itself refuses memlock -1 here."""
    if resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] == resource.RLIM_INFINITY:
        pytest.skip("memlock is not capped on this machine, so memlock -1 cannot provoke a start error")
    failing = _failing_gates(node)
    waive = []
    for gid in failing:
        waive += ["--waive", gid, "--reason", "test bed"]
    node.env.write_text(node.env.read_text().replace(f"MEMLOCK_LIMIT={_memlock_limit()}", "MEMLOCK_LIMIT=-1"))
    cp = node.launch(*waive)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    ev = node.evidence()
    up = next(r for r in ev["results"] if r["id"] == "launch.up")
    assert up["status"] == "fail" and "rlimit" in up["observed"], up
    assert ev["context"]["launched"] is False and node.containers() == []  # the Created container was removed


def test_absent_image_refuses_and_pull_waits_for_the_other_gates(node):
    """No registry may be contacted here, so the pull itself is only shown (--dry-run), never run."""
    failing = _failing_gates(node)
    waive = []
    for gid in failing:
        waive += ["--waive", gid, "--reason", "test bed"]
    node.env.write_text(node.env.read_text().replace(f"VLLM_IMAGE={STANDIN}", "VLLM_IMAGE=rdmacheck/absent:never"))
    cp = node.launch(*waive, "--dry-run", json_name="nopull.json")
    assert cp.returncode == 1 and node.evidence("nopull.json")["context"]["refused"] == ["docker.image"]
    assert "docker pull rdmacheck/absent:never" in cp.stdout  # the remedy
    cp = node.launch(*waive, "--dry-run", "--pull", json_name="pull.json")
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert "would run: docker pull rdmacheck/absent:never" in cp.stdout
    # with a failing gate left unwaived, --pull does not pull: the refusal comes first
    cp = node.launch("--pull", json_name="refused.json")
    assert cp.returncode == 1 and "pulling" not in cp.stdout
    assert _docker("image", "inspect", "rdmacheck/absent:never").returncode != 0
    assert node.containers() == []


def test_snapshot_root_where_host_gates_pass(node, tmp_path):
    if not SNAPSHOT.exists():
        pytest.skip(f"{SNAPSHOT.name} not committed (the soft-RoCE snapshot); the waiver test covers the launch")
    root = tmp_path / "snap"
    root.mkdir()
    with tarfile.open(SNAPSHOT) as tf:
        tf.extractall(root, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(root)
    cp = node.launch("--root", str(root), "--dry-run", json_name="dry.json")
    ev = node.evidence("dry.json")
    status = {r["id"]: r["status"] for r in ev["results"]}
    # the guest had a real rxe device named like the reference (roceP2p1s0f0 on enP2p1s0f0np0): every RDMA
    # gate passes from the snapshot; what is left (the guest's limits, no GPU) is waived with a reason
    for gid in ("rdma.devices", "rdma.port", "rdma.netdev", "rdma.gid", "rdma.mtu", "rdma.devfiles"):
        assert status.get(gid) == "pass", (gid, status)
    assert not [g for g, st in status.items() if g.startswith("rdma.") and st == "fail"], status
    failing = [gid for gid, st in status.items() if st == "fail"]
    waive = []
    for gid in failing:
        waive += ["--waive", gid, "--reason", f"soft-RoCE guest snapshot: {gid} is not what this test proves"]
    cp = node.launch("--root", str(root), *waive)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    ev = node.evidence()
    assert ev["context"]["root"] == str(root) and ev["context"]["launched"] is True
    assert {r["id"] for r in ev["results"] if r.get("waiver")} == set(failing)
    assert len(node.containers()) == 1
