"""rdmacheck watch, scraped by a real Prometheus server (Debian's `prometheus` package, started on loopback by
.ci/prometheus-setup.sh, which .ci/run calls).

`rdmacheck watch --root COPY` runs on a copy of the committed soft-RoCE snapshot; the test edits the copy's
sysfs files (the netdev MTU, an rxe hw counter) and reads what Prometheus stored through its HTTP query API.
Expected values come from the files the test wrote and from the snapshot's own files, never from constants.
The alert rules shipped in docker/prometheus/ are loaded by that same server and checked with promtool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import REPO, require, run_cli
from rdmacheck.watch import category

SNAPSHOT = REPO / "tests" / "data" / "softroce-snapshot.tar.gz"
RULES = REPO / "docker" / "prometheus" / "rdmacheck-rules.yml"
RULES_TEST = REPO / "docker" / "prometheus" / "rdmacheck-rules.test.yml"
NETDEV = "enP2p1s0f0np0"
WATCH_INTERVAL = 1.0
# the server .ci/prometheus-setup.sh started: its folder holds url (where it listens) and targets/ (file SD)
PROMETHEUS_DIR = Path(os.environ.get("RDMACHECK_PROMETHEUS_DIR", "/tmp/rdmacheck-prometheus"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def _wait(cond, timeout: float, what: str, step: float = 0.2):
    """Poll cond() until it returns a truthy value; hang guard, not a speed goal."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except OSError:  # not listening yet
            last = None
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _unpack(dest: Path) -> Path:
    with tarfile.open(SNAPSHOT) as t:
        t.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(dest)
    return dest


def _sysfs_file(root: Path, host_path: str) -> Path:
    """The real file behind a /sys/class/... path in the copy (class entries are symlinks into devices/)."""
    p = root / host_path.lstrip("/")
    return p.resolve()


def test_classification_of_counter_names():
    assert category("link_downed") == "link_downs" and category("carrier_down_count") == "link_downs"
    assert category("np_cnp_sent") == "cnp_ecn" and category("np_ecn_marked_roce_packets") == "cnp_ecn"
    assert category("retry_exceeded_err") == "retransmits" and category("roce_adp_retrans") == "retransmits"
    assert category("rx_pause_ctrl_phy") == "pause"
    assert category("rx_crc_errors") == "errors" and category("port_xmit_discards") == "errors"
    for traffic in ("tx_bytes", "rcvd_pkts", "port_xmit_data", "ack_deferred"):
        assert category(traffic) is None, traffic


@pytest.mark.parametrize("listen", ["9109", "localhost", "nohost:9109", "127.0.0.1:0x10", "127.0.0.1:70000"])
def test_bad_listen_exit_2(listen, tmp_path):
    p = run_cli("watch", "--listen", listen, "--root", str(tmp_path), timeout=30)
    assert p.returncode == 2 and p.stderr.startswith("rdmacheck: error: --listen"), p.stderr


def test_bad_interval_and_root_exit_2(tmp_path):
    assert run_cli("watch", "--interval", "0.1", timeout=30).returncode == 2
    assert run_cli("watch", "--interval", "nan", timeout=30).returncode == 2
    p = run_cli("watch", "--root", str(tmp_path / "missing"), timeout=30)
    assert p.returncode == 2 and "--root" in p.stderr


def test_port_in_use_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli("watch", "--listen", f"127.0.0.1:{port}", "--root", str(tmp_path), timeout=30)
    assert p.returncode == 2 and "cannot listen" in p.stderr, p.stderr


def test_promtool_checks_and_tests_the_shipped_rules():
    require(shutil.which("promtool") is not None, "promtool missing: apt-get install prometheus (.ci/run does)")
    c = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert c.returncode == 0 and "SUCCESS: 13 rules found" in c.stdout, c.stdout + c.stderr
    t = subprocess.run(["promtool", "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=60,
                       cwd=RULES.parent)
    assert t.returncode == 0 and "SUCCESS" in t.stdout, t.stdout + t.stderr
    cfg = subprocess.run(["promtool", "check", "config", str(RULES.parent / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr


class Prometheus:
    """The running server, and the targets this test session registers with it."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url.rstrip("/")
        self.targets = folder / "targets"

    def add_target(self, address: str, run: str) -> Path:
        """Scrape ``address`` as job rdmacheck with label run=RUN (file SD: written whole, then renamed)."""
        f = self.targets / f"{run}.json"
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [address], "labels": {"run": run}}]))
        tmp.rename(f)
        return f

    def target(self, run: str) -> dict | None:
        d = json.loads(_get(f"{self.url}/api/v1/targets?state=active"))["data"]["activeTargets"]
        return next((t for t in d if t["labels"].get("run") == run), None)

    def query(self, expr: str) -> list[dict]:
        d = json.loads(_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert d["status"] == "success", d
        return d["data"]["result"]

    def value(self, expr: str) -> float | None:
        r = self.query(expr)
        return float(r[0]["value"][1]) if len(r) == 1 else None


def _seconds(duration: str) -> float:
    """A Prometheus duration as the targets API gives it ("3s", "1m", "1m30s")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    import re

    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def prometheus() -> Prometheus:
    url_file = PROMETHEUS_DIR / "url"
    url = url_file.read_text().strip() if url_file.is_file() else ""
    try:
        up = bool(url) and _get(f"{url}/-/ready", timeout=5) is not None
    except OSError:
        up = False
    require(up, f"no Prometheus server answers at {url or '(no ' + str(url_file) + ')'}",
            "bash .ci/prometheus-setup.sh (apt-get install prometheus; .ci/run does both)")
    return Prometheus(url, PROMETHEUS_DIR)


@pytest.fixture
def watched(tmp_path, prometheus):
    """`rdmacheck watch` on a snapshot copy, scraped by the running Prometheus on loopback."""
    root = _unpack(tmp_path / "node")
    wport = _free_port()
    run = f"watch-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NCCL_IB_HCA", None)
    werr = open(tmp_path / "watch.err", "w")
    watch = subprocess.Popen([sys.executable, "-m", "rdmacheck", "watch", "--interval", str(WATCH_INTERVAL),
                              "--listen", f"127.0.0.1:{wport}", "--root", str(root)],
                             stdout=subprocess.DEVNULL, stderr=werr, env=env, cwd=tmp_path)
    target = None
    try:
        _wait(lambda: "rdmacheck_gate_status" in _get(f"http://127.0.0.1:{wport}/metrics"), 60, "the watch's first run")
        target = prometheus.add_target(f"127.0.0.1:{wport}", run)
        t = _wait(lambda: prometheus.target(run), 30, "Prometheus to discover the watch")
        yield {"root": root, "wport": wport, "prom": prometheus, "run": run, "watch": watch, "tmp": tmp_path,
               "scrape_interval": _seconds(t["scrapeInterval"])}
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
        if watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
        try:
            watch.wait(timeout=20)
        except subprocess.TimeoutExpired:
            watch.kill()
        werr.close()


def test_prometheus_sees_the_mtu_gate_fail_and_recover(watched):
    prom, root, run = watched["prom"], watched["root"], watched["run"]
    on = f'job="rdmacheck",run="{run}"'  # this test's target only: the server is shared with the session
    mtu_file = _sysfs_file(root, f"/sys/class/net/{NETDEV}/mtu")
    good = int(mtu_file.read_text())
    gate = f'rdmacheck_gate_status{{gate="rdma.mtu",{on}}}'
    _wait(lambda: prom.value(gate) == 0, 30, "the first scrape (rdma.mtu passing on the good snapshot)")
    assert prom.value(f'rdmacheck_netdev_mtu{{netdev="{NETDEV}",{on}}}') == good
    assert prom.value(f'rdmacheck_port_up{{port="roceP2p1s0f0:1",{on}}}') == 1
    # every gate of the run is a series, and so are the facts they judge (active MTU, predicted GID index): the same ids preflight writes for this snapshot
    pf = run_cli("preflight", "--root", str(root), "-q", "--json", str(watched["tmp"] / "pf.json"), timeout=120)
    ev = json.loads((watched["tmp"] / "pf.json").read_text())
    want = {r["id"]: {"pass": 0, "warn": 1, "fail": 2, "skip": 3}[r["status"]] for r in ev["results"]}
    got = {r["metric"]["gate"]: float(r["value"][1]) for r in prom.query(f"rdmacheck_gate_status{{{on}}}")}
    assert got == want, pf.stdout
    facts = ev["context"]["facts"]["ports"][0]
    assert prom.value(f'rdmacheck_port_active_mtu{{port="roceP2p1s0f0:1",{on}}}') == facts["active_mtu"]
    assert prom.value(f'rdmacheck_port_gid_index{{port="roceP2p1s0f0:1",{on}}}') == facts["gid"]["predicted"]

    # the watch's next run, then two scrapes (the interval the server reports for this target)
    bound = WATCH_INTERVAL + 2 * watched["scrape_interval"]
    mtu_file.write_text("1500\n")
    t0 = time.monotonic()
    _wait(lambda: prom.value(gate) == 2, 30, "rdma.mtu to fail in Prometheus")
    t_fail = time.monotonic() - t0
    assert prom.value(f'rdmacheck_netdev_mtu{{netdev="{NETDEV}",{on}}}') == 1500
    mtu_file.write_text(f"{good}\n")
    t0 = time.monotonic()
    _wait(lambda: prom.value(gate) == 0, 30, "rdma.mtu to pass again in Prometheus")
    t_back = time.monotonic() - t0
    assert t_fail <= bound and t_back <= bound, (t_fail, t_back, bound)

    # a link-down counter that climbs: raw value, per-second rate, and the shipped alert's expression
    ld = _sysfs_file(root, "/sys/class/infiniband/roceP2p1s0f0/ports/1/hw_counters") / "link_downed"
    if not ld.exists():
        # a snapshot records only the paths preflight reads, so its hw_counters/ folder is empty; a real rxe
        # port has this counter (the guest session's facts/sysfs.txt lists it): put it back at its idle value
        ld.write_text("0\n")
        _wait(lambda: prom.value(f'rdmacheck_counter_total{{counter="hw_counters/link_downed",{on}}}') == 0, 30,
              "the watch to pick up the counter")
    before = int(ld.read_text())
    series = f'rdmacheck_counter_total{{device="roceP2p1s0f0/1",counter="hw_counters/link_downed",{on}}}'
    assert prom.value(series) == before
    ld.write_text(f"{before + 3}\n")
    _wait(lambda: prom.value(series) == before + 3, 30, "the raised link_downed counter")
    _wait(lambda: prom.query(f'increase(rdmacheck_counter_total{{category="link_downs",{on}}}[1m]) > 0'), 30,
          "the link-down alert expression to hold")
    rules = json.loads(_get(f"{prom.url}/api/v1/rules"))["data"]["groups"]
    import re

    shipped = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    assert len(shipped) == 13 and {"RdmacheckGateFailing", "RdmacheckLinkDownsIncreasing"} <= shipped
    assert {r["name"] for g in rules for r in g["rules"]} == shipped

    # one log line per change, then a clean stop on SIGTERM
    w = watched["watch"]
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    log = (watched["tmp"] / "watch.err").read_text()
    assert log.count("gate rdma.mtu: pass -> fail") == 1 and log.count("gate rdma.mtu: fail -> pass") == 1, log
    assert "stopped after" in log


@pytest.mark.parametrize("which", ["v2", "v1"])
def test_compose_watch_profile_validates(which):
    """The optional service validates with the real compose (v1 and v2), runs `rdmacheck watch`, and a plain
    `config` (what `launch` brings up) leaves it out."""
    from rdmacheck.launch.compose import ComposeInvocation, detect_driver, parse_config_output

    d = detect_driver(prefer=which)
    if which == "v2" and d is None:
        pytest.skip("compose v2 plugin not installed (DOCKER_COMPOSE_V2=1 .ci/docker-setup.sh)")
    require(d is not None, "Debian's docker-compose (v1) not installed; run .ci/docker-setup.sh")
    inv = ComposeInvocation(d, REPO / "docker" / "compose.yaml", REPO / "docker" / ".env.example", "rdmacheck-watch", "head")
    p = inv.run("--profile", "watch", "config", timeout=60)
    assert p.rc == 0, p.stderr
    cfg = parse_config_output(p.stdout, "rdmacheck-watch")
    assert cfg["network_mode"] == "host" and cfg["container_name"] == "rdmacheck-watch-head"
    assert "watch" in p.stdout and "0.0.0.0:9109" in p.stdout and "/opt/rdmacheck" in p.stdout
    if d.major >= 2:  # v1's `config` prints every service; its `up` honours profiles all the same (compose >= 1.28)
        plain = inv.run("config", timeout=60)
        assert plain.rc == 0 and "rdmacheck-watch:" not in plain.stdout


@pytest.mark.docker
def test_the_compose_watch_service_runs_in_a_container_and_prometheus_scrapes_it(tmp_path, prometheus):
    """docker/compose.yaml's rdmacheck-watch service, brought up by the real compose with the image's own
    Python (the Python stand-in: no registry here), answers /metrics on the host network at the address its
    .env sets, judges what that container sees (the same verdicts as a preflight run inside it), and the
    running Prometheus scrapes it."""
    from dockerbed import STANDIN_PYTHON, Node, docker, require_engine
    from rdmacheck.launch.compose import ComposeInvocation, detect_driver

    require_engine()
    require(docker("image", "inspect", STANDIN_PYTHON).returncode == 0,
            f"the Python stand-in image {STANDIN_PYTHON} is not built", "docker")
    d = detect_driver()
    require(d is not None, "no compose (docker compose v2 or docker-compose v1)", "docker")
    wport, run = _free_port(), f"watch-ctr-{uuid.uuid4().hex[:12]}"
    node = Node(tmp_path, image=STANDIN_PYTHON,
                env={"WATCH_LISTEN": f"127.0.0.1:{wport}", "WATCH_INTERVAL": str(int(WATCH_INTERVAL))})
    inv = ComposeInvocation(d, node.compose, node.env, node.project, "head")
    target = None
    try:
        up = inv.run("--profile", "watch", "up", "-d", "rdmacheck-watch", timeout=120)
        assert up.rc == 0, up.stderr
        name = "rdmacheck-watch-head"  # container_name: rdmacheck-watch-${RAY_MODE}
        assert docker("inspect", "-f", "{{.Config.Image}}", name).stdout.strip() == STANDIN_PYTHON
        metrics = _wait(lambda: (m := _get(f"http://127.0.0.1:{wport}/metrics")) and "rdmacheck_gate_status" in m
                        and m, 90, "the containerised watch's first run")
        # the same verdicts as preflight in the same container (its mounts, limits and env file)
        pf = docker("exec", name, "python3", "-m", "rdmacheck", "preflight", "-q", "--json", "/tmp/pf.json",
                    timeout=120)
        assert pf.returncode in (0, 1), pf.stderr
        ev = json.loads(docker("exec", name, "cat", "/tmp/pf.json").stdout)
        want = {r["id"]: {"pass": 0, "warn": 1, "fail": 2, "skip": 3}[r["status"]] for r in ev["results"]}
        got = {}
        for line in metrics.splitlines():
            if line.startswith("rdmacheck_gate_status{"):
                labels, value = line.rsplit(" ", 1)
                got[labels.split('gate="', 1)[1].split('"', 1)[0]] = float(value)
        assert got == want
        # and it is the container's view, not the host's: the host has no /dev/infiniband, the service is given
        # the two device nodes the bed made (rdma_cm and uverbs0, by their real major/minor numbers)
        devfiles = next(r for r in ev["results"] if r["id"] == "rdma.devfiles")["observed"]
        assert not os.path.exists("/dev/infiniband/rdma_cm") and "/dev/infiniband: absent" not in devfiles \
            and "rdma_cm missing" not in devfiles, devfiles
        target = prometheus.add_target(f"127.0.0.1:{wport}", run)
        _wait(lambda: prometheus.value(f'up{{run="{run}"}}') == 1, 60, "Prometheus to scrape the container")
        series = prometheus.query(f'rdmacheck_gate_status{{run="{run}"}}')
        assert {r["metric"]["gate"]: float(r["value"][1]) for r in series} == want
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
        inv.run("--profile", "watch", "down", "--timeout", "5", timeout=120)
        node.cleanup()
    assert node.containers() == []
