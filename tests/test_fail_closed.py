"""Fail closed (issue 13): every case the issue lists, through the real CLI in a subprocess.

Each case asserts the contract in fail_closed_util.judge: exit code in the allowed set, no
traceback, bounded wall time, no pre-existing output changed on a failed run.  The three
PASS-by-accident cases and the hangs have their own tests, timed.  Real components throughout:
real FIFOs and /dev/zero, a real unix socket that accepts and never answers as DOCKER_HOST,
real gloo ranks and a real SIGSTOP.  What cannot exist here is a GPU: the CUDA-graph part of the
one-rank case is covered by the runner choosing no graph at world size 1, not run on a GPU.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, require, require_module
from fail_closed_util import COUNTS, UNDER_TEST, cli, judge, print_counts

SOFTROCE_PREFLIGHT = REPO / "tests" / "data" / "softroce-preflight.json"
NCCL_JSON = REPO / "tests" / "data" / "nccl-tests" / "all_reduce_perf-J.json"
SENTINEL = b"pre-existing output: must survive a failed run\n"


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request):
    yield
    print_counts(request, "fail-closed corpus")


@pytest.fixture
def bed(tmp_path):
    """Inputs of every odd kind, and pre-existing outputs holding a sentinel."""
    b = type("Bed", (), {})()
    b.tmp = tmp_path
    b.fifo = tmp_path / "fifo"
    os.mkfifo(b.fifo)
    b.folder = tmp_path / "folder"
    b.folder.mkdir()
    # a private null device (as root), so no other process on the machine shares it; else /dev/null
    b.null = tmp_path / "null"
    try:
        os.mknod(b.null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        b.null = Path("/dev/null")
    b.existing = {}
    for name in ("existing.json", "existing.html", "existing.tar.gz", "existing.csv", "existing.xml"):
        p = tmp_path / name
        p.write_bytes(SENTINEL)
        b.existing[name] = p
    b.long_env = tmp_path / "long.env"
    b.long_env.write_text("NCCL_IB_HCA=" + "x" * (10 << 20) + "\n")
    b.nan_profile = tmp_path / "nan.toml"
    b.nan_profile.write_text("min_busbw = nan\n")
    b.latin1_env = tmp_path / "latin1.env"
    b.latin1_env.write_bytes(b"MASTER_ADDR=h\xf6st\n")
    b.evidence = tmp_path / "good.json"
    b.evidence.write_bytes(SOFTROCE_PREFLIGHT.read_bytes())
    base = json.loads(NCCL_JSON.read_text())
    b.nccl = {}
    for tag, change in {
        "string-size": lambda d: d["results"][0].__setitem__("size", "lots"),
        "list-config": lambda d: d.__setitem__("config", [1, 2]),
        "infinite-size": lambda d: d["results"][0].__setitem__("size", 1e400),
        "string-config": lambda d: d.__setitem__("config", "x"),
        "int-env": lambda d: d.__setitem__("env", 5),
        "int-errors": lambda d: d.__setitem__("errors", 7),
        "huge-version": lambda d: d.__setitem__("nccl_version", 1e400),
    }.items():
        d = json.loads(json.dumps(base))
        change(d)
        p = tmp_path / f"nccl-{tag}.json"
        p.write_text(json.dumps(d))
        b.nccl[tag] = p
    return b


def _outs(bed):
    return list(bed.existing.values())


# ---------------------------------------------------------------------------------------------
# the corpus: (name, argv builder, allowed exit codes).  Every one of these is bad input: exit 2.
def corpus():
    e = lambda b, n: str(b.existing[n])  # noqa: E731
    cases = [
        # output paths that are folders, unreachable, or devices
        ("preflight --json folder", lambda b: ["preflight", "--json", str(b.folder)]),
        ("preflight --json /tmp", lambda b: ["preflight", "--json", "/tmp"]),
        ("preflight --json /proc/nope", lambda b: ["preflight", "--json", "/proc/nope/p.json"]),
        ("preflight --json a null device", lambda b: ["preflight", "--json", str(b.null)]),
        ("report -o a null device", lambda b: ["report", str(b.evidence), "-o", str(b.null)]),
        ("snapshot -o folder", lambda b: ["snapshot", "-o", str(b.folder)]),
        ("snapshot -o /proc/nope", lambda b: ["snapshot", "-o", "/proc/nope/s.tar.gz"]),
        ("bench --json /", lambda b: ["bench", "--json", "/"]),
        ("bench --csv /proc/nope --json existing", lambda b: ["bench", "--csv", "/proc/nope/x.csv", "--json", e(b, "existing.json")]),
        ("bench --json and --csv one file", lambda b: ["bench", "--csv", e(b, "existing.json"), "--json", e(b, "existing.json")]),
        ("report -o folder", lambda b: ["report", str(b.evidence), "-o", str(b.folder)]),
        ("report -o /tmp", lambda b: ["report", str(b.evidence), "-o", "/tmp"]),
        ("report -o existing --junit /proc/nope", lambda b: ["report", str(b.evidence), "-o", e(b, "existing.html"),
                                                            "--junit", "/proc/nope/j.xml"]),
        ("report --junit folder", lambda b: ["report", str(b.evidence), "-o", e(b, "existing.html"), "--junit", str(b.folder)]),
        ("launch --json folder", lambda b: ["launch", "--role", "head", "--dry-run", "--json", str(b.folder)]),
        ("cluster --out-dir /proc/nope", lambda b: ["cluster", "--ray-address", "auto", "--out-dir", "/proc/nope/c"]),
        # input files that block, never end, are too big, or are not text
        ("preflight --env FIFO", lambda b: ["preflight", "--env", str(b.fifo), "--json", e(b, "existing.json")]),
        ("preflight --env /dev/zero", lambda b: ["preflight", "--env", "/dev/zero", "--json", e(b, "existing.json")]),
        ("preflight --profile /dev/zero", lambda b: ["preflight", "--profile", "/dev/zero"]),
        ("preflight --profile FIFO", lambda b: ["preflight", "--profile", str(b.fifo)]),
        ("preflight --env folder", lambda b: ["preflight", "--env", str(b.folder)]),
        ("preflight --env 10 MB line", lambda b: ["preflight", "--env", str(b.long_env)]),
        ("preflight --env latin-1", lambda b: ["preflight", "--env", str(b.latin1_env)]),
        ("bench --env 10 MB line", lambda b: ["bench", "--env", str(b.long_env), "--nproc", "2", "--backend", "gloo"]),
        ("bench --env /dev/zero", lambda b: ["bench", "--env", "/dev/zero"]),
        ("bench --profile /dev/zero", lambda b: ["bench", "--profile", "/dev/zero"]),
        ("snapshot --env FIFO", lambda b: ["snapshot", "--env", str(b.fifo), "-o", e(b, "existing.tar.gz")]),
        ("launch --env FIFO", lambda b: ["launch", "--role", "head", "--env", str(b.fifo), "--dry-run"]),
        ("cluster --env FIFO", lambda b: ["cluster", "--ray-address", "auto", "--env", str(b.fifo),
                                          "--out-dir", str(b.tmp / "c")]),
        ("report EVIDENCE FIFO", lambda b: ["report", str(b.fifo), "-o", e(b, "existing.html")]),
        ("report EVIDENCE /dev/zero", lambda b: ["report", "/dev/zero", "-o", e(b, "existing.html")]),
        ("report --import FIFO", lambda b: ["report", "--import", str(b.fifo), "-o", e(b, "existing.html")]),
        ("report --import /dev/zero", lambda b: ["report", "--import", "/dev/zero", "-o", e(b, "existing.html")]),
        # numbers: NaN, infinite, negative, absurd
        ("bench --timeout inf", lambda b: ["bench", "--timeout", "inf"]),
        ("bench --timeout nan", lambda b: ["bench", "--timeout", "nan"]),
        ("bench --timeout -1", lambda b: ["bench", "--timeout", "-1"]),
        ("bench --time-per-size nan", lambda b: ["bench", "--time-per-size", "nan"]),
        ("bench --expect-busbw 1e400", lambda b: ["bench", "--expect-busbw", "1e400"]),
        ("bench --expect-busbw -3", lambda b: ["bench", "--expect-busbw", "-3"]),
        ("bench --expect min_busbw=nan", lambda b: ["bench", "--expect", "min_busbw=nan"]),
        ("bench --expect plateau_min_bytes=1e400", lambda b: ["bench", "--expect", "plateau_min_bytes=" + "9" * 400]),
        ("bench --iters huge", lambda b: ["bench", "--iters", str(10 ** 15)]),
        ("bench --sizes 99999T", lambda b: ["bench", "--sizes", "99999999999999999999T"]),
        ("bench --max-memory nan", lambda b: ["bench", "--max-memory", "nan"]),
        ("snapshot --timeout nan", lambda b: ["snapshot", "--timeout", "nan", "-o", e(b, "existing.tar.gz")]),
        ("snapshot --timeout inf", lambda b: ["snapshot", "--timeout", "inf", "-o", e(b, "existing.tar.gz")]),
        ("snapshot --timeout -1", lambda b: ["snapshot", "--timeout", "-1", "-o", e(b, "existing.tar.gz")]),
        ("launch --health-timeout inf", lambda b: ["launch", "--role", "head", "--health-timeout", "inf"]),
        ("cluster --node-timeout inf", lambda b: ["cluster", "--ray-address", "auto", "--node-timeout", "inf"]),
        ("cluster --outlier-factor nan", lambda b: ["cluster", "--ray-address", "auto", "--outlier-factor", "nan"]),
        ("cluster --expect-busbw without plateau", lambda b: ["cluster", "--ray-address", "auto", "--sizes", "1K..64K",
                                                               "--expect-busbw", "10", "--out-dir", str(b.tmp / "c")]),
        ("report --expected-busbw nan", lambda b: ["report", str(b.evidence), "--expected-busbw", "nan",
                                                   "-o", e(b, "existing.html")]),
        ("preflight --expect mtu=nan", lambda b: ["preflight", "--expect", "mtu=nan"]),
        # --hook: resolved before any rank starts
        ("bench --hook garbage", lambda b: ["bench", "--hook", "garbage", "--json", e(b, "existing.json")]),
        ("bench --hook no module", lambda b: ["bench", "--hook", "no_such_module_i13:install"]),
        ("bench --hook no function", lambda b: ["bench", "--hook", "os:no_such_function", "--nproc", "2"]),
    ]
    # nccl-tests JSON that is JSON but not the shape nccl-tests writes
    for tag in ("string-size", "list-config", "infinite-size", "string-config"):
        cases.append((f"report --import nccl-tests JSON {tag}",
                      lambda b, tag=tag: ["report", "--import", str(b.nccl[tag]), "-o", e(b, "existing.html")]))
    return cases


CORPUS = corpus()


@pytest.mark.parametrize("name,argv", [(n, a) for n, a in CORPUS], ids=[n for n, _ in CORPUS])
def test_corpus_bad_input_is_exit_2(bed, name, argv):
    judge("corpus", argv(bed), {2}, outputs=_outs(bed) + [bed.null], bound=20, cwd=bed.tmp)
    assert bed.null.is_char_device()  # atomic_write's rename would have replaced the device node


def test_odd_but_valid_nccl_json_fields_are_tolerated(bed):
    """env/errors/nccl_version of the wrong type are context, not results: imported, never a crash."""
    out = bed.tmp / "odd.html"
    imports = [a for tag in ("int-env", "int-errors", "huge-version") for a in ("--import", str(bed.nccl[tag]))]
    # only imported numbers: the page judges no gate (INFO), which is exit 1, never 0
    cp = judge("corpus", ["report", *imports, "-o", str(out)], {1}, cwd=bed.tmp)
    assert cp.stdout.startswith("INFO")
    assert out.stat().st_size > 1000


# ---------------------------------------------------------------------------------------------
# the clobber cases of the issue, each asserting the file is byte-identical after the failed run
def test_report_junit_failure_keeps_existing_html(bed):
    html = bed.existing["existing.html"]
    cp = judge("clobber", ["report", str(bed.evidence), "-o", str(html), "--junit", "/proc/nope/j.xml"], {2},
               outputs=[html], cwd=bed.tmp)
    assert "--junit" in cp.stderr and html.read_bytes() == SENTINEL


def test_bench_csv_failure_keeps_existing_json(bed):
    js = bed.existing["existing.json"]
    cp = judge("clobber", ["bench", "--backend", "gloo", "--nproc", "2", "--sizes", "1K", "--csv", "/proc/nope/x.csv",
                           "--json", str(js)], {2}, outputs=[js], cwd=bed.tmp)
    assert "--csv" in cp.stderr and js.read_bytes() == SENTINEL


# ---------------------------------------------------------------------------------------------
# PASS by accident: each of these exited 0 before (checked against the tree before this change)
def test_accident_expect_busbw_without_plateau_size_is_refused(bed):
    cp = judge("accident", ["bench", "--backend", "gloo", "--nproc", "2", "--sizes", "1K..64K",
                            "--expect-busbw", "1000GB/s", "--iters", "2", "--warmup", "0"], {2}, bound=60, cwd=bed.tmp)
    assert "64 MiB" in cp.stderr and "--sizes" in cp.stderr


def test_accident_profile_min_busbw_nan_is_refused(bed):
    cp = judge("accident", ["bench", "--backend", "gloo", "--nproc", "2", "--sizes", "64M", "--iters", "1",
                            "--warmup", "0", "--no-check", "--profile", str(bed.nan_profile)], {2}, bound=90, cwd=bed.tmp)
    assert "min_busbw" in cp.stderr


def test_accident_one_rank_bandwidth_gate_is_refused(bed):
    # broadcast on one rank "moves" its buffer nowhere: nccl-tests' busbw factor 1 made it look fast
    cp = judge("accident", ["bench", "--backend", "gloo", "--nproc", "1", "--op", "broadcast", "--sizes", "64M",
                            "--iters", "2", "--warmup", "0", "--no-check", "--expect-busbw", "0.001"], {2}, bound=90,
               cwd=bed.tmp)
    assert "1 rank: nothing crosses a link" in cp.stderr


def test_one_rank_default_gate_skips_never_passes(bed):
    """Without an expectation of the user's, one rank still measures; the gate says SKIP and why."""
    require_module("torch")  # real rank processes
    js = bed.tmp / "one.json"
    judge("accident", ["bench", "--backend", "gloo", "--nproc", "1", "--op", "broadcast", "--sizes", "64M",
                       "--iters", "2", "--warmup", "0", "--no-check", "--json", str(js)], {0}, bound=90, cwd=bed.tmp)
    gate = {r["id"]: r for r in json.loads(js.read_text())["results"]}["bench.busbw"]
    assert gate["status"] == "skip" and "1 rank: nothing crosses a link" in gate["observed"]


# ---------------------------------------------------------------------------------------------
# sanitising foreign text
def test_lone_surrogate_and_escapes_in_host_reach_no_output(bed):
    d = json.loads(SOFTROCE_PREFLIGHT.read_text())
    text = json.dumps(d).replace(json.dumps(d["host"]), '"node\\ud800\\u001b[31mred\\u0007"')
    ev = bed.tmp / "hostile.json"
    ev.write_text(text)
    html, xml = bed.tmp / "r.html", bed.tmp / "r.xml"
    cp = judge("sanitize", ["report", str(ev), "-o", str(html), "--junit", str(xml)], {0, 1}, cwd=bed.tmp)
    page = html.read_text(encoding="utf-8")
    assert "node\ufffd\\x1b[31mred\\x07" in page and "\x1b" not in page
    junit = xml.read_text(encoding="utf-8")
    assert "node\ufffd\\x1b[31mred" in junit and "\x1b" not in junit
    assert "\x1b" not in cp.stdout and "\x07" not in cp.stdout


# ---------------------------------------------------------------------------------------------
# internal errors: exit 3, one line, a crash report; provoked deliberately
def test_internal_error_is_exit_3_with_crash_report(tmp_path):
    state = tmp_path / "state"
    code = ("import sys, rdmacheck.commands.preflight as p\n"
            "def boom(args): raise RuntimeError('deliberate bug for the test')\n"
            "p.run = boom\n"
            "from rdmacheck.cli import main\n"
            "sys.exit(main(['preflight']))\n")
    env = dict(os.environ, PYTHONPATH=str(UNDER_TEST), XDG_STATE_HOME=str(state))
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    COUNTS["internal"][cp.returncode] += 1
    assert cp.returncode == 3, cp.stderr
    assert "Traceback" not in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert "RuntimeError: deliberate bug for the test" in cp.stderr
    reports = list((state / "rdmacheck").glob("crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in cp.stderr
    body = reports[0].read_text()
    assert "Traceback" in body and "deliberate bug" in body and "argv: ['preflight']" in body and "rdmacheck " in body


def test_internal_error_in_bench_ranks_is_exit_3(tmp_path):
    """A hook whose install() raises in every rank: each rank saves a report, no traceback, exit 3."""
    require_module("torch")  # real rank processes
    (tmp_path / "i13_bad_hook.py").write_text("def install(hooks):\n    raise KeyError('deliberate')\n")
    state = tmp_path / "state"
    cp = judge("internal", ["bench", "--backend", "gloo", "--nproc", "2", "--sizes", "1K", "--iters", "1",
                            "--hook", "i13_bad_hook:install"], {3}, bound=90, cwd=tmp_path,
               env={"XDG_STATE_HOME": str(state),
                    "PYTHONPATH": str(UNDER_TEST) + os.pathsep + str(tmp_path)})
    assert "internal error in bench rank" in cp.stderr and "KeyError" in cp.stderr
    assert len(list((state / "rdmacheck").glob("crash-*.txt"))) >= 1


def test_hook_that_raises_is_a_named_rank_failure_not_a_crash(tmp_path):
    """A hook's own exception is the run failing (hooks.py: like a failed collective), exit 1, named."""
    require_module("torch")  # real rank processes
    (tmp_path / "i13_raising_hook.py").write_text(
        "def install(hooks):\n"
        "    def boom(row):\n"
        "        raise ValueError('counter file vanished')\n"
        "    hooks.before_size.append(boom)\n")
    js = tmp_path / "b.json"
    cp = judge("internal", ["bench", "--backend", "gloo", "--nproc", "2", "--sizes", "1K", "--iters", "1",
                            "--hook", "i13_raising_hook:install", "--json", str(js)], {1}, bound=90, cwd=tmp_path,
               env={"PYTHONPATH": str(UNDER_TEST) + os.pathsep + str(tmp_path)})
    assert "raised ValueError in phase 'all_reduce 1 KiB: before_size hooks': counter file vanished" in cp.stderr
    run = {r["id"]: r for r in json.loads(js.read_text())["results"]}["bench.run"]
    assert run["status"] == "fail" and "counter file vanished" in run["observed"]


# ---------------------------------------------------------------------------------------------
# hangs, each timed
def test_fifo_env_ends_at_once(bed):
    t0 = time.monotonic()
    cp = judge("hang", ["preflight", "--env", str(bed.fifo)], {2}, bound=10, cwd=bed.tmp)
    assert "FIFO" in cp.stderr and time.monotonic() - t0 < 10


class SilentDaemon:
    """A unix socket that accepts every connection and never answers: a wedged dockerd."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(128)
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(c)

    def close(self):
        self._stop = True
        self.t.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_launch_and_down_end_within_30s_on_a_silent_docker_socket_even_with_a_waiver(tmp_path):
    import shutil

    require(shutil.which("docker") is not None, "docker CLI not installed (bash .ci/run installs it)")
    # compose is what meets the silent daemon here; a box without it is tests/test_no_compose.py's case
    has_compose = shutil.which("docker-compose") is not None or subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    require(has_compose, "no compose implementation (docker compose plugin or docker-compose)", "docker")
    daemon = SilentDaemon(tmp_path / "docker.sock")
    env_file = tmp_path / "node.env"
    env_file.write_text((REPO / "docker" / ".env.example").read_text())
    compose = str(REPO / "docker" / "compose.yaml")
    env = {"DOCKER_HOST": f"unix://{daemon.path}"}
    try:
        # which gates fail here (no RDMA, no GPU, no daemon): waive every one of them.  Asked of a
        # socket path where nothing listens (refused at once), so only the timed runs meet the silent one
        cp, _ = cli("launch", "--role", "head", "--env", str(env_file), "--compose", compose, "--dry-run",
                    "--json", str(tmp_path / "dry.json"), env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"},
                    timeout=90, cwd=tmp_path)
        failing = [r["id"] for r in json.loads((tmp_path / "dry.json").read_text())["results"] if r["status"] == "fail"]
        assert "docker.engine" in failing, cp.stdout[-2000:]
        waive = [a for g in failing for a in ("--waive", g, "--reason", "silent-daemon test")]
        t0 = time.monotonic()
        up = subprocess.Popen([sys.executable, "-m", "rdmacheck", "launch", "--role", "head", "--env", str(env_file),
                               "--compose", compose, "--json", str(tmp_path / "up.json"), *waive],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=dict(os.environ, PYTHONPATH=str(UNDER_TEST), **env))
        down = subprocess.Popen([sys.executable, "-m", "rdmacheck", "launch", "--role", "head", "--env", str(env_file),
                                 "--compose", compose, "down"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                env=dict(os.environ, PYTHONPATH=str(UNDER_TEST), **env))
        try:
            up_out, up_err = up.communicate(timeout=60)
            up_s = time.monotonic() - t0
            down_out, down_err = down.communicate(timeout=60)
            down_s = time.monotonic() - t0
        finally:
            for p in (up, down):
                if p.poll() is None:
                    p.kill()
        for name, p, out, err, s in (("launch", up, up_out, up_err, up_s), ("down", down, down_out, down_err, down_s)):
            COUNTS["hang"][p.returncode] += 1
            assert p.returncode == 1, f"{name}: {err[-1500:]}"
            assert "Traceback" not in err, err
            assert s < 30, f"{name} took {s:.1f} s"
            assert "did not answer" in out + err, f"{name}: {out[-1500:]} {err}"
        assert str(daemon.path) in down_err, down_err
        assert daemon.accepted >= 2  # the docker CLI really connected to the silent socket
        ev = json.loads((tmp_path / "up.json").read_text())
        upr = {r["id"]: r for r in ev["results"]}["launch.up"]
        assert upr["status"] == "fail" and "did not answer" in upr["observed"] and str(daemon.path) in upr["observed"]
    finally:
        daemon.close()


def _children_by_rank(pid: int) -> dict[int, int]:
    out = {}
    for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            env = dict(kv.split("=", 1) for kv in Path(f"/proc/{c}/environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if "RANK" in env:
            out[int(env["RANK"])] = int(c)
            out.setdefault(-1, env.get("RDMACHECK_BENCH_STATUS_DIR"))
    return out


def test_sigstopped_rank_is_named_not_the_rank_waiting_for_it(tmp_path):
    """Real gloo ranks; rank 1 gets a real SIGSTOP mid-sweep; the launcher must name rank 1."""
    require_module("torch")  # real rank processes
    js = tmp_path / "b.json"
    p = subprocess.Popen([sys.executable, "-m", "rdmacheck", "bench", "--backend", "gloo", "--nproc", "2",
                          "--sizes", "1K..64K", "--iters", "400", "--warmup", "1", "--timeout", "5", "--json", str(js)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(UNDER_TEST)))
    stopped = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            ranks = _children_by_rank(p.pid)
            status = ranks.get(-1)
            if 1 in ranks and status:
                try:
                    phase = (Path(status) / "rank1").read_text()
                except OSError:
                    phase = ""
                if "measure" in phase or "timed loop" in phase or "warmup" in phase:
                    stopped = ranks[1]
                    os.kill(stopped, signal.SIGSTOP)
                    break
            time.sleep(0.05)
        assert stopped, "rank 1 never reached the sweep"
        t0 = time.monotonic()
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
        if stopped:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
    COUNTS["hang"][p.returncode] += 1
    assert p.returncode == 1, err
    assert "Traceback" not in err
    assert took < 5 + 20, f"ended {took:.1f} s after the SIGSTOP"
    cause = [l for l in err.splitlines() if "is stopped" in l or "stopped making progress" in l]
    assert cause and cause[-1].startswith("rdmacheck: bench: rank 1 "), err
    run = {r["id"]: r for r in json.loads(js.read_text())["results"]}["bench.run"]
    assert run["status"] == "fail" and run["observed"].startswith("rank 1 ")
