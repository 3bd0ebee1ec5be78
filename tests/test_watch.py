"""rdmacheck watch, scraped by a real Prometheus server (Debian's `prometheus` package, .ci/run installs it).

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
from pathlib import Path

import pytest

from conftest import REPO, require, run_cli
from rdmacheck.watch import category

SNAPSHOT = REPO / "tests" / "data" / "softroce-snapshot.tar.gz"
RULES = REPO / "docker" / "prometheus" / "rdmacheck-rules.yml"
RULES_TEST = REPO / "docker" / "prometheus" / "rdmacheck-rules.test.yml"
NETDEV = "enP2p1s0f0np0"
WATCH_INTERVAL = 1.0
SCRAPE_INTERVAL = 3.0  # >= a cycle's wall time on a loaded 2-core machine (~1.6 s seen), so the bound below has room


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
    assert c.returncode == 0 and "SUCCESS: 3 rules found" in c.stdout, c.stdout + c.stderr
    t = subprocess.run(["promtool", "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=60,
                       cwd=RULES.parent)
    assert t.returncode == 0 and "SUCCESS" in t.stdout, t.stdout + t.stderr
    cfg = subprocess.run(["promtool", "check", "config", str(RULES.parent / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr


@pytest.fixture
def watched(tmp_path):
    """`rdmacheck watch` on a snapshot copy, and a real Prometheus scraping it on loopback."""
    require(shutil.which("prometheus") is not None, "prometheus missing: apt-get install prometheus (.ci/run does)")
    root = _unpack(tmp_path / "node")
    wport, pport = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NCCL_IB_HCA", None)
    werr = open(tmp_path / "watch.err", "w")
    watch = subprocess.Popen([sys.executable, "-m", "rdmacheck", "watch", "--interval", str(WATCH_INTERVAL),
                              "--listen", f"127.0.0.1:{wport}", "--root", str(root)],
                             stdout=subprocess.DEVNULL, stderr=werr, env=env, cwd=tmp_path)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL:g}s\n  evaluation_interval: {SCRAPE_INTERVAL:g}s\n"
        f"rule_files:\n  - {RULES}\n"
        f"scrape_configs:\n  - job_name: rdmacheck\n    static_configs:\n      - targets: ['127.0.0.1:{wport}']\n")
    perr = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
                            stdout=perr, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait(lambda: "rdmacheck_gate_status" in _get(f"http://127.0.0.1:{wport}/metrics"), 60, "the watch's first run")
        _wait(lambda: _get(f"http://127.0.0.1:{pport}/-/ready"), 60, "prometheus ready")
        yield {"root": root, "wport": wport, "pport": pport, "watch": watch, "tmp": tmp_path}
    finally:
        for p in (prom, watch):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (prom, watch):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        werr.close()
        perr.close()


def _query(pport: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    d = json.loads(_get(url))
    assert d["status"] == "success", d
    return d["data"]["result"]


def _value(pport: int, expr: str) -> float | None:
    r = _query(pport, expr)
    return float(r[0]["value"][1]) if len(r) == 1 else None


def test_prometheus_sees_the_mtu_gate_fail_and_recover(watched):
    pport, root = watched["pport"], watched["root"]
    mtu_file = _sysfs_file(root, f"/sys/class/net/{NETDEV}/mtu")
    good = int(mtu_file.read_text())
    gate = 'rdmacheck_gate_status{gate="rdma.mtu",job="rdmacheck"}'
    _wait(lambda: _value(pport, gate) == 0, 30, "the first scrape (rdma.mtu passing on the good snapshot)")
    assert _value(pport, f'rdmacheck_netdev_mtu{{netdev="{NETDEV}"}}') == good
    assert _value(pport, 'rdmacheck_port_up{port="roceP2p1s0f0:1"}') == 1
    # every gate of the run is a series, and so are the facts they judge (active MTU, predicted GID index): the same ids preflight writes for this snapshot
    pf = run_cli("preflight", "--root", str(root), "-q", "--json", str(watched["tmp"] / "pf.json"), timeout=120)
    ev = json.loads((watched["tmp"] / "pf.json").read_text())
    want = {r["id"]: {"pass": 0, "warn": 1, "fail": 2, "skip": 3}[r["status"]] for r in ev["results"]}
    got = {r["metric"]["gate"]: float(r["value"][1]) for r in _query(pport, "rdmacheck_gate_status")}
    assert got == want, pf.stdout
    facts = ev["context"]["facts"]["ports"][0]
    assert _value(pport, 'rdmacheck_port_active_mtu{port="roceP2p1s0f0:1"}') == facts["active_mtu"]
    assert _value(pport, 'rdmacheck_port_gid_index{port="roceP2p1s0f0:1"}') == facts["gid"]["predicted"]

    bound = WATCH_INTERVAL + 2 * SCRAPE_INTERVAL  # the watch's next run, then two scrapes
    mtu_file.write_text("1500\n")
    t0 = time.monotonic()
    _wait(lambda: _value(pport, gate) == 2, 30, "rdma.mtu to fail in Prometheus")
    t_fail = time.monotonic() - t0
    assert _value(pport, f'rdmacheck_netdev_mtu{{netdev="{NETDEV}"}}') == 1500
    mtu_file.write_text(f"{good}\n")
    t0 = time.monotonic()
    _wait(lambda: _value(pport, gate) == 0, 30, "rdma.mtu to pass again in Prometheus")
    t_back = time.monotonic() - t0
    assert t_fail <= bound and t_back <= bound, (t_fail, t_back, bound)

    # a link-down counter that climbs: raw value, per-second rate, and the shipped alert's expression
    ld = _sysfs_file(root, "/sys/class/infiniband/roceP2p1s0f0/ports/1/hw_counters") / "link_downed"
    if not ld.exists():
        # a snapshot records only the paths preflight reads, so its hw_counters/ folder is empty; a real rxe
        # port has this counter (the guest session's facts/sysfs.txt lists it): put it back at its idle value
        ld.write_text("0\n")
        _wait(lambda: _value(pport, 'rdmacheck_counter_total{counter="hw_counters/link_downed"}') == 0, 30,
              "the watch to pick up the counter")
    before = int(ld.read_text())
    series = 'rdmacheck_counter_total{device="roceP2p1s0f0/1",counter="hw_counters/link_downed"}'
    assert _value(pport, series) == before
    ld.write_text(f"{before + 3}\n")
    _wait(lambda: _value(pport, series) == before + 3, 30, "the raised link_downed counter")
    _wait(lambda: _query(pport, 'increase(rdmacheck_counter_total{category="link_downs"}[1m]) > 0'), 30,
          "the link-down alert expression to hold")
    rules = json.loads(_get(f"http://127.0.0.1:{pport}/api/v1/rules"))["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} == {"RdmacheckGateFailing", "RdmacheckLinkDownsIncreasing",
                                                              "RdmacheckWatchStale"}

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
