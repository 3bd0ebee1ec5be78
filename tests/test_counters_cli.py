"""`rdmacheck counters`: deltas and rates from real counter files.

* this machine's real /sys/class/net/lo/statistics, copied before and after a known UDP burst (the
  copies are the ground truth: the command must give exactly their difference, and at least the burst);
* the live `--interval` mode on the same machine;
* the kinds (errors, retransmits, link downs, pause/CNP/ECN) on the counter names real drivers use
  (rxe's hw_counters as docs/softroce.md lists them, mlx5's names from the captured sysfs trees).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from conftest import run_cli
from rdmacheck.preflight.facts.counters import kind_of

LO = Path("/sys/class/net/lo/statistics")


def _copy_lo(dst: Path) -> dict[str, int]:
    d = dst / "sys" / "class" / "net" / "lo" / "statistics"
    d.mkdir(parents=True)
    vals = {}
    for f in LO.iterdir():
        try:
            t = f.read_text()
        except OSError:
            continue
        (d / f.name).write_text(t)
        vals[f.name] = int(t)
    return vals


def test_before_after_gives_the_exact_difference_and_rates(tmp_path):
    a = _copy_lo(tmp_path / "a")
    n, size = 200, 1000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        for _ in range(n):
            tx.sendto(b"x" * size, rx.getsockname())
    b = _copy_lo(tmp_path / "b")
    out = tmp_path / "c.json"
    p = run_cli("counters", "--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"), "--seconds", "2",
                "--json", str(out))
    assert p.returncode == 0, p.stderr
    row = next(r for r in json.loads(out.read_text())["rows"] if r["name"] == "lo")
    assert row["tx_packets"] == b["tx_packets"] - a["tx_packets"] >= n
    assert row["tx_bytes"] == b["tx_bytes"] - a["tx_bytes"] >= n * (size + 28)  # + IPv4 20 + UDP 8 per datagram
    assert row["tx_bytes_per_s"] == pytest.approx(row["tx_bytes"] / 2)
    assert "netdev lo" in p.stdout


def test_a_counter_that_went_down_reads_reset_never_negative(tmp_path):
    _copy_lo(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    f = tmp_path / "b" / "sys/class/net/lo/statistics/rx_bytes"
    f.write_text("0\n")  # what a driver reload leaves
    out = tmp_path / "c.json"
    p = run_cli("counters", "--before", str(tmp_path / "a"), "--after", str(tmp_path / "b"), "--json", str(out), "--all")
    row = next(r for r in json.loads(out.read_text())["rows"] if r["name"] == "lo")
    assert p.returncode == 0 and row["rx_bytes"] is None and row["rx_bytes_per_s"] is None
    assert "rx reset" in p.stdout


def test_live_interval(tmp_path):
    out = tmp_path / "live.json"
    p = run_cli("counters", "--interval", "0.3", "--all", "--json", str(out))
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["seconds"] >= 0.3 and any(r["name"] == "lo" for r in data["rows"])
    assert all(r["tx_bytes"] is None or r["tx_bytes"] >= 0 for r in data["rows"])


@pytest.mark.parametrize("args", [["--before", "/nonexistent", "--after", "/"], ["--before", "/"],
                                  ["--interval", "0"], ["--seconds", "3"]])
def test_usage_errors_exit_2(args):
    p = run_cli("counters", *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1


@pytest.mark.parametrize("name,kind", [
    ("completer_retry_err", "retransmits"), ("duplicate_request", "retransmits"), ("out_of_seq_request", "retransmits"),
    ("retry_exceeded_err", "retransmits"), ("local_ack_timeout_err", "retransmits"),
    ("link_downed", "link_downs"), ("link_error_recovery", "link_downs"),
    ("rx_dropped", "errors"), ("port_rcv_errors", "errors"), ("symbol_error", "errors"), ("rcvd_seq_err", "retransmits"),
    ("rx_pause_ctrl_phy", "pause"), ("np_cnp_sent", "cnp"), ("rp_cnp_handled", "cnp"),
    ("np_ecn_marked_roce_packets", "ecn"), ("tx_bytes", None), ("rcvd_pkts", None), ("lifespan", None), ("ack_deferred", None),
    ("rx_frame_errors", "errors"), ("rx_crc_errors", "errors"), ("tx_carrier_errors", "errors")])
def test_counter_kinds(name, kind):
    assert kind_of(name) == kind
