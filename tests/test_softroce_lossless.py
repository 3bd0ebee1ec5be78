"""The lossless verdict on real rxe counters in the soft-RoCE guest (marker softroce).

The one guest session runs it (tests/softroce/lossless.sh, sourced by session.sh: roceP2p1s0f0/roceP2p1s0f1 over a veth pair, three ib_write_bw
transfers with the counter files mirrored before and after each) and runs the real `rdmacheck counters
--before --after` on the mirrors:

* clean: nothing in the way                                  -> every port "lossless"
* loss:  ``tc qdisc add dev enP2p1s0f1np1 root netem loss 1%``        -> "lossy" from the real retransmit counters
         (rxe's out_of_seq_request / rcvd_seq_err / completer_retry_err), "retransmits with no pause"
* drop:  ``iptables -A INPUT -p udp --dport 4791 -j DROP``     -> "port roceP2p1s0f0/1 received 0 packets while its
         netdev enP2p1s0f0np0 received N bytes"

Expected values come from the guest's own files (netem's drop count, iptables' packet count, the netdev
statistics), never from constants.  It shares the one guest boot with every other soft-RoCE test.
  Set up with .ci/softroce-setup.sh (docs/softroce.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.softroce



@pytest.fixture(scope="module")
def run(guest) -> Path:
    """The lossless block of the one guest session (tests/softroce/lossless.sh, sourced by session.sh)."""
    out = guest.dir / "lossless"
    assert (out / "done").is_file(), f"the session's lossless block did not finish; see {guest.dir}/session.log"
    return out


def _counters(run: Path, name: str) -> tuple[dict, str]:
    r = run / name
    t0, t1 = (float(x) for x in (r / "window.txt").read_text().split())
    js = r / "counters.json"
    p = run_cli("counters", "--before", str(r / "before"), "--after", str(r / "after"), "--seconds", f"{t1 - t0:.3f}",
                "--json", str(js))
    assert p.returncode == 0, p.stderr
    return json.loads(js.read_text()), p.stdout


def _stat(run: Path, name: str, side: str, netdev: str, stat: str) -> int:
    return int((run / name / side / f"sys/class/net/{netdev}/statistics/{stat}").read_text())


def _hw(run: Path, name: str, side: str, dev: str, counter: str) -> int:
    return int((run / name / side / f"sys/class/infiniband/{dev}/ports/1/hw_counters/{counter}").read_text())


def _moved(run: Path, name: str, dev: str, counter: str) -> int:
    return _hw(run, name, "after", dev, counter) - _hw(run, name, "before", dev, counter)


def test_clean_transfer_is_lossless(run):
    assert (run / "clean/client.rc").read_text().strip() == "0", (run / "clean/client.txt").read_text()
    data, out = _counters(run, "clean")
    # the transfer happened: the server's port received what the client's sent
    n, s = (int(x) for x in (run / "clean/params.txt").read_text().split())
    assert _moved(run, "clean", "roceP2p1s0f0", "rcvd_pkts") >= n * s // 4096
    for port in ("roceP2p1s0f0/1", "roceP2p1s0f1/1"):
        v = data["verdicts"][port]
        retrans = sum(_moved(run, "clean", port.split("/")[0], c)
                      for c in ("duplicate_request", "out_of_seq_request", "rcvd_seq_err", "completer_retry_err"))
        # lossless exactly when the guest's own retransmit counters stayed put (an emulated guest can stall an
        # ACK past the timeout; then the verdict must say lossy, and the counters show why)
        assert (v["state"] == "lossless") == (retrans == 0), (port, v, retrans)
    assert data["findings"] == []
    assert "[lossless] lossless and uncongested" in out or "[lossy]" in out


def test_netem_loss_is_lossy_from_real_retransmits(run):
    netem = (run / "netem.txt").read_text()
    dropped = [int(x) for x in re.findall(r"dropped (\d+)", netem)]
    assert dropped and dropped[-1] > 0, netem  # netem really dropped packets during the run
    data, out = _counters(run, "loss")
    # the responder (roceP2p1s0f0) saw the gaps, the requester (roceP2p1s0f1) got the NAKs and retransmitted
    oos = _moved(run, "loss", "roceP2p1s0f0", "out_of_seq_request")
    seq = _moved(run, "loss", "roceP2p1s0f1", "rcvd_seq_err")
    retry = _moved(run, "loss", "roceP2p1s0f1", "completer_retry_err")
    assert oos > 0 and seq + retry > 0, (oos, seq, retry)
    v = data["verdicts"]["roceP2p1s0f1/1"]
    assert v["state"] == "lossy" and "retransmits with no pause" in v["patterns"], v
    moved = v["moved"]["retransmit"]
    assert moved.get("hw_counters/rcvd_seq_err", 0) == seq and moved.get("hw_counters/completer_retry_err", 0) == retry
    assert data["verdicts"]["roceP2p1s0f0/1"]["state"] == "lossy"  # out_of_seq_request on the responder
    assert "pattern: retransmits with no pause" in out and "go-back-N" in out


def test_udp_4791_drop_gives_zero_packets_at_the_port(run):
    ipt = (run / "iptables.txt").read_text()
    m = re.search(r"^\s*(\d+)\s+(\d+)\s+DROP\s+(?:udp|17)\b.*dpt:4791", ipt, re.M)
    assert m and int(m.group(1)) > 0, ipt  # iptables dropped RoCE frames during the run
    data, out = _counters(run, "drop")
    rx_pkts = _moved(run, "drop", "roceP2p1s0f0", "rcvd_pkts")
    nd_bytes = _stat(run, "drop", "after", "enP2p1s0f0np0", "rx_bytes") - _stat(run, "drop", "before", "enP2p1s0f0np0", "rx_bytes")
    assert rx_pkts == 0 and nd_bytes > 100_000, (rx_pkts, nd_bytes)
    line = f"port roceP2p1s0f0/1 received 0 packets while its netdev enP2p1s0f0np0 received {nd_bytes} bytes"
    assert line in out, out
    assert [f["pattern"] for f in data["findings"] if f["port"] == "roceP2p1s0f0/1"] == ["port received 0 packets"]
    # the client's port sent and heard nothing, but enP2p1s0f0np0's bytes are roceP2p1s0f0's finding, not "another netdev"
    assert [f for f in data["findings"] if f["port"] == "roceP2p1s0f1/1"] == []
    assert _moved(run, "drop", "roceP2p1s0f1", "completer_retry_err") > 0 and data["verdicts"]["roceP2p1s0f1/1"]["state"] == "lossy"
    # the client got nothing back: its transfer never completed
    assert (run / "drop/client.rc").read_text().strip() != "0"
