"""Shared test helpers.

Test beds (network namespaces, Docker, the soft-RoCE guest, Chromium, Ray) are
started by .ci/run.  Locally a missing bed skips with its reason; under CI
(CI=true) it fails, so CI can never go green by skipping what it must prove.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from early import STARTED as EARLY
from early import Early

REPO = Path(__file__).resolve().parent.parent
# The checkout under test, first: in-process CLI runs import rdmacheck from here, whatever another
# installed copy (an editable install of another clone) says.
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))
CAPTURES = REPO.parent / "shared" / "captures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# RDMACHECK_QUICK_TESTS=1: set by tests/test_quickstart.py for the README's test line, run in a fresh clone
# and venv.  That inner run leaves out the slow beds (each runs in full in the outer session) and the
# quick-start test itself (no recursion); see pytest_collection_modifyitems.
QUICK_TESTS = os.environ.get("RDMACHECK_QUICK_TESTS") == "1"
SLOW_BED_MARKERS = ("softroce", "docker", "ray", "browser", "netns", "gpu", "quickstart")


def pytest_collection_modifyitems(config, items):
    if not QUICK_TESTS:
        return
    keep, drop = [], []
    for item in items:
        slow = any(item.get_closest_marker(m) for m in SLOW_BED_MARKERS) or _early_bed(item) == "guest"
        (drop if slow else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# The two slowest beds, the soft-RoCE guest session and the README's fresh-venv run, start the moment
# collection ends and run beside the light tests (tests/early.py says why); the q35 ACS guest follows the
# quick start.  On two cores the run is CPU-bound, so the order spreads the load: the light tests beside the
# beds, the light tests that start several torch ranks last; then the Ray beds once the quick start and the
# q35 guest have ended, beside the soft-RoCE guest (pytest_runtest_setup); then the tests that judge the
# early beds.
MULTI_RANK_MODULES = ("test_bench.py", "test_latency.py")


def _early_bed(item) -> str | None:
    if "guest" in getattr(item, "fixturenames", ()):
        return "guest"
    if item.get_closest_marker("quickstart") and item.name.startswith("test_readme_lines_work_in_a_fresh_venv"):
        return "quickstart"
    if item.name == "test_acs_on_a_real_pcie_root_port_in_a_guest":
        return "q35"
    return None


def _heavy(item) -> bool:
    """Many processes or an emulated CPU of their own: the Ray clusters and the q35 ACS guest (an early
    bed now, whose test only judges its result)."""
    return bool(item.get_closest_marker("ray") or item.get_closest_marker("softroce"))


def _order(item) -> float:
    if _early_bed(item):
        return 2
    if _heavy(item):
        return 1
    return 0.5 if item.path.name in MULTI_RANK_MODULES else 0


def pytest_collection_finish(session):
    if session.config.option.collectonly or QUICK_TESTS:
        return
    # after -k/-m and every other deselection; stable, so each group keeps its own order
    session.items.sort(key=_order)
    if session.config.option.setupplan or session.config.option.setuponly:
        return  # a plan, not a run: start nothing
    wanted = {bed for item in session.items if (bed := _early_bed(item))}
    factory = session.config._tmp_path_factory  # pytest's basetemp: the beds' folders stay for a look after
    if "guest" in wanted and not KEPT_GUEST_DIR:
        from softroce import guest as harness

        if harness.missing_reason() is None:  # else the fixture skips (or fails in CI) with the reason
            out = factory.mktemp("softroce")
            EARLY["guest"] = Early("guest", lambda: harness.run_in_guest(
                SOFTROCE_SESSION, outdir=out, timeout=SOFTROCE_TIMEOUT_S))
    if "quickstart" in wanted and shutil.which("git"):
        from test_quickstart import run_readme_lines

        work = factory.mktemp("quickstart") / "w"
        EARLY["quickstart"] = Early("quickstart", lambda: run_readme_lines(work))
    if "q35" in wanted and shutil.which("vng"):
        from softroce import guest as harness
        from test_pci import run_acs_probe

        if harness.missing_reason() is None:
            # after the quick start (its second pytest ends well before the soft-RoCE guest), beside the guest:
            # behind the guest it added its own ~60 s to the run's longest chain
            q35_out = factory.mktemp("q35")
            EARLY["q35"] = Early("q35", lambda: run_acs_probe(q35_out),
                                 after=[b for n, b in EARLY.items() if n == "quickstart"])


@pytest.hookimpl(tryfirst=True)  # before pytest sets up the module's fixtures (the Ray cluster)
def pytest_runtest_setup(item):
    # Beside Ray's raylets and a CPU hog the early beds starved them (a removed node's peers went
    # unanswered past the bound, a cgroup-limited node no longer stood out, rank actors took 68 s to
    # start): the heavy beds wait for the quick start's pytest and the q35 guest.  The soft-RoCE guest
    # (one emulated CPU's worth of load, the longest bed) goes on beside the Ray beds: waiting for it
    # left a core idle for minutes and put the Ray beds' ~200 s after the guest's ~600 s.
    if _heavy(item):
        for name, bed in EARLY.items():
            if name != "guest" or item.get_closest_marker("softroce"):
                bed.wait()


def pytest_unconfigure(config):
    if EARLY:  # an interrupted session: no guest outlives it (QEMU runs in its own process group)
        from softroce import guest as harness

        harness.kill_running()


def _reference_head_is_local() -> bool:
    try:
        return "spark-01-mesh" in Path("/etc/hosts").read_text()
    except OSError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_dns_for_reference_names():
    """docker/.env.example names MASTER_ADDR=spark-01-mesh; preflight's net.peer resolves it.

    Tests may only send traffic to this machine, so that name must resolve from /etc/hosts
    (.ci/run maps it), never through a DNS server. Fail early and say how, rather than query DNS.
    """
    if not _reference_head_is_local() and os.geteuid() == 0:
        # as the reference cluster's own /etc/hosts does; .ci/run adds the same line
        with open("/etc/hosts", "a") as f:
            f.write("192.168.100.1 spark-01-mesh\n")
    if not _reference_head_is_local():
        pytest.exit("map the reference head name first: echo '192.168.100.1 spark-01-mesh' >> /etc/hosts "
                    "(.ci/run does this), so no test sends a DNS query off this machine", returncode=2)


def cuda_gpu_count() -> int:
    """CUDA GPUs torch sees; 0 without a driver, answered without importing torch (seconds on CI's machine)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


# The line that installs each test bed: a skip names it, so the reader can make the test run.  torch is
# always the CPU build from its pinned version (a bare `torch` pulls a multi-GB CUDA build).
TORCH_LINE = "python3 -m pip install torch==2.13.0"
INSTALL = {
    "torch": f"{TORCH_LINE} (the CPU build; never a bare `torch`, which pulls a multi-GB CUDA build)",
    "ray": f"{TORCH_LINE} && python3 -m pip install -e '.[cluster]'",
    "ping": "apt-get install iputils-ping",
    "root": "run the tests as root (network namespaces, /etc/hosts, privileged sysfs reads)",
    "netns": "run the tests as root with iproute2 (apt-get install iproute2)",
    "unshare": "apt-get install util-linux",
    "dcb": "apt-get install iproute2 (its dcb tool)",
    "softroce": "bash .ci/softroce-setup.sh (apt-get install qemu-system-x86 busybox-static; pip install virtme-ng)",
    "docker": "bash .ci/docker-setup.sh (apt-get install docker.io docker-compose iptables busybox-static)",
    "compose-v2": "DOCKER_COMPOSE_V2=1 bash .ci/docker-setup.sh",
    "chromium": "apt-get install chromium",
    "tmux": "apt-get install tmux",
    "dev": "python3 -m pip install -e '.[dev]'",
    "captures": f"put the real captures at {CAPTURES} (beside the checkout: ../shared/captures, see its README)",
}


# Gates whose rule changed after committed evidence (tests/data) was recorded: the same facts now give
# another verdict.  gate id -> (verdict recorded then, verdict now, why).  Tests that re-judge committed
# evidence hold both ends of each change; nothing else may differ.
RULE_CHANGES = {
    "gpu.gdr": ("fail", "skip", "issue 26 E5: no GPU driver version read and no peer memory is not judged"),
}
def snapshot_probe_timed_out(result: dict) -> bool:
    """A replayed gate that skipped because the snapshot's own probe did not answer in time (the soft-RoCE
    guest under CI load): the snapshot holds no answer to judge, so it cannot repeat the live run's verdict."""
    return result.get("status") == "skip" and "did not answer within" in (result.get("observed") or "")


# Gates whose words changed after committed evidence was recorded while the verdict on the same facts did not:
# re-judging compares their status only.  gate id -> why.
TEXT_CHANGES = {
    "rdma.devfiles": "issue 26: a missing rdma_cm only warns (NCCL never opens it); remedies read the loaded modules",
}


def require(condition: bool, reason: str, install: str | None = None) -> None:
    """Skip (locally) or fail (in CI) when a test bed is missing; ``install`` is an INSTALL key or a line."""
    if condition:
        return
    if install:
        reason = f"{reason}; to run it: {INSTALL.get(install, install)}"
    if IN_CI:
        pytest.fail(f"test bed missing in CI: {reason}")
    pytest.skip(reason)


def require_module(name: str) -> None:
    """torch or ray importable here (found without importing it: importing torch costs seconds)."""
    import importlib.util

    require(importlib.util.find_spec(name) is not None, f"{name} is not installed", name)


def require_tool(tool: str, install: str) -> None:
    require(shutil.which(tool) is not None, f"{tool} not found on PATH", install)


@pytest.fixture
def captures() -> Path:
    """../shared/captures: real sysfs trees and tool outputs (never copied into the repo)."""
    require(CAPTURES.is_dir(), f"real captures not found at {CAPTURES}", "captures")
    return CAPTURES


# Commands that start processes of their own (bench ranks, Ray, docker compose) or run until stopped (watch):
# their children write to the real file descriptors, so they always run as a real process.
SUBPROCESS_COMMANDS = {"bench", "cluster", "launch", "watch"}


def run_cli(*args: str, env: dict | None = None, timeout: float = 60, cwd: str | Path | None = None,
            process: bool = False):
    """Run the real `rdmacheck` CLI and return a CompletedProcess (text).

    In this process by default: ``rdmacheck.cli.main`` (the entry point `python -m rdmacheck` calls) with the
    environment, working folder and argv a process would have, its stdout and stderr captured, and a SIGALRM
    bound for ``timeout``.  That skips a Python start and rdmacheck's imports per call.  ``process=True``, and
    every command in SUBPROCESS_COMMANDS, runs `python -m rdmacheck` in a subprocess: for tests of what only a
    process shows (start-up time, a traceback on the real stderr, the exit status of the interpreter)."""
    command = next((a for a in args if not a.startswith("-")), None)
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    if process or command in SUBPROCESS_COMMANDS:
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        if env:
            e.update(env)
        return subprocess.run(
            [sys.executable, "-m", "rdmacheck", *args],
            capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd or REPO,
        )
    return _run_in_process(list(args), {**e, **(env or {})}, timeout, cwd or REPO)


def _run_in_process(argv: list[str], env: dict, timeout: float, cwd: str | Path):
    import contextlib
    import io
    import signal

    from rdmacheck.cli import main

    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    out, err = io.StringIO(), io.StringIO()

    def expired(signum, frame):
        raise subprocess.TimeoutExpired(["rdmacheck", *argv], timeout)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        os.environ.clear()
        os.environ.update({k: str(v) for k, v in env.items()})
        os.chdir(cwd)
        sys.argv = ["rdmacheck", *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as x:  # --help, --version
                rc = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
    return subprocess.CompletedProcess(["rdmacheck", *argv], rc, out.getvalue(), err.getvalue())


def _can_netns() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"rc-probe-{uuid.uuid4().hex[:6]}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


class NetnsPair:
    """Two namespaces ``a`` and ``b`` joined by veth ``va``/``vb`` (names unique per test)."""

    def __init__(self, mtu: int = 9000, subnet_prefix: str = "10.199.0", prefix_len: int = 24):
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"rca-{tag}", f"rcb-{tag}"
        self.va, self.vb = f"va{tag}", f"vb{tag}"
        self.ip_a, self.ip_b = f"{subnet_prefix}.1", f"{subnet_prefix}.2"
        self.prefix_len = prefix_len
        self.mtu = mtu

    def sh(self, *cmd: str, check: bool = True):
        return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=30)

    def ns(self, which: str, *cmd: str, check: bool = True):
        return self.sh("ip", "netns", "exec", which, *cmd, check=check)

    def up(self) -> "NetnsPair":
        self.sh("ip", "netns", "add", self.a)
        self.sh("ip", "netns", "add", self.b)
        self.sh("ip", "link", "add", self.va, "netns", self.a, "type", "veth", "peer", "name", self.vb, "netns", self.b)
        for ns, dev, ip in ((self.a, self.va, self.ip_a), (self.b, self.vb, self.ip_b)):
            self.ns(ns, "ip", "link", "set", "lo", "up")
            self.ns(ns, "ip", "link", "set", dev, "mtu", str(self.mtu))
            self.ns(ns, "ip", "addr", "add", f"{ip}/{self.prefix_len}", "dev", dev)
            self.ns(ns, "ip", "link", "set", dev, "up")
        return self

    def set_mtu(self, mtu: int) -> None:
        self.mtu = mtu
        self.ns(self.a, "ip", "link", "set", self.va, "mtu", str(mtu))
        self.ns(self.b, "ip", "link", "set", self.vb, "mtu", str(mtu))

    def down(self) -> None:
        for ns in (self.a, self.b):
            self.sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def netns_pair():
    """Two real network namespaces joined by a veth pair at MTU 9000."""
    require(_can_netns(), "network namespaces need root and iproute2 (ip netns add)", "netns")
    pair = NetnsPair().up()
    try:
        yield pair
    finally:
        pair.down()


# ---------------------------------------------------------------- the one soft-RoCE guest session
# One boot of the QEMU soft-RoCE guest per test session (tests/softroce/session.sh runs every scenario,
# including each tests/softroce/scenarios/*.sh, and leaves its files in one folder); any test module
# takes the session-scoped ``guest`` fixture and judges those files.  Never boot a second guest.
SOFTROCE_SESSION = REPO / "tests" / "softroce" / "session.sh"
# Hang guard for the one guest session (not a speed goal: with the data-path and lossless blocks 331 s alone
# and 574 s beside the suite on a 2-core machine, 2026-12-07; see docs/softroce.md).
SOFTROCE_TIMEOUT_S = float(os.environ.get("SOFTROCE_TIMEOUT", "2400"))
# SOFTROCE_GUEST_DIR=DIR: judge a session folder kept from an earlier boot (GUEST_OUT of tests/softroce/guest.py)
# instead of booting one: the guest tests re-run in seconds while their assertions change
KEPT_GUEST_DIR = os.environ.get("SOFTROCE_GUEST_DIR")


class Session:
    def __init__(self, outdir: Path, run) -> None:
        self.dir = outdir
        self.run = run

    def text(self, rel: str) -> str:
        p = self.dir / rel
        assert p.is_file(), f"the guest session did not write {rel}; see {self.dir}/session.log"
        return p.read_text(errors="replace")

    def rc(self, rel: str) -> int:
        return int(self.text(rel + ".rc").strip())

    def evidence(self, name: str) -> dict:
        return json.loads(self.text(f"preflight/{name}.json"))

    def statuses(self, name: str) -> dict[str, str]:
        return {r["id"]: r["status"] for r in self.evidence(name)["results"]}

    def result(self, name: str, gate: str) -> dict:
        for r in self.evidence(name)["results"]:
            if r["id"] == gate:
                return r
        raise AssertionError(f"{gate} missing from preflight/{name}.json")


@pytest.fixture(scope="session")
def guest(tmp_path_factory) -> Session:
    from softroce import guest as harness

    if KEPT_GUEST_DIR:
        out = Path(KEPT_GUEST_DIR)
        require((out / "done").is_file(), f"SOFTROCE_GUEST_DIR={out} holds no finished session (no done file)")
        return Session(out, None)
    reason = harness.missing_reason()
    require(reason is None, str(reason), "softroce")
    if "guest" in EARLY:  # started when collection ended (pytest_collection_finish)
        run = EARLY["guest"].result()
        out = run.outdir
    else:
        out = tmp_path_factory.mktemp("softroce")
        run = harness.run_in_guest(SOFTROCE_SESSION, outdir=out, timeout=SOFTROCE_TIMEOUT_S)
    log = (out / "session.log").read_text(errors="replace")[-4000:] if (out / "session.log").exists() else ""
    if run.timed_out or not (out / "done").is_file():
        pytest.fail(f"guest session did not finish (rc={run.returncode}, timed_out={run.timed_out}, "
                    f"{run.seconds:.0f} s); console tail:\n{run.output[-3000:]}\nsession.log tail:\n{log}")
    return Session(out, run)


