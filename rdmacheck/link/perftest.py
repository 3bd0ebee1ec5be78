"""`rdmacheck link --engine perftest`: ib_write_bw and ib_write_lat between the two nodes, with the flags NCCL's
settings give (``-d -i -x --tclass --sl -m``), for hosts that have perftest and not pyverbs.

The server runs one perftest server per step (bandwidth at each size, then latency), each bounded; the
client runs the matching clients, retrying the connection while the server's next step starts (perftest's
client gives up at once when nobody listens).  Outputs are parsed into the same result shape as the pyverbs
engine's (rdmacheck.verbs.wire.LinkResult.to_dict), so the gates judge both alike.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any, Callable

from rdmacheck.link import CONNECT_GRACE_S

BW_SIZES = (1 << 20, 4 << 20)
LAT_SIZE = 8
STEP_TIMEOUT_S = 60.0


def _flags(plan) -> list[str]:
    qp = plan.qp
    args = ["-F", "-d", plan.device, "-i", str(plan.port), "-x", str(plan.gid_index),
            "--tclass", str(qp.get("traffic_class", 0)), "--sl", str(qp.get("service_level", 0))]
    if plan.active_mtu:
        args += ["-m", str(plan.active_mtu)]
    return args


def _steps(duration: float) -> list[tuple[str, list[str], int]]:
    d = str(int(max(1, round(duration))) + 2)
    # perftest's default unit (MB/sec, which is MiB/s with 2 decimals): --report_gbits' 2 decimals of Gb/s
    # round a slow link's rate to nothing
    return ([("ib_write_bw", ["-D", d, "-f", "1", "-s", str(s)], s) for s in BW_SIZES]
            + [("ib_write_lat", ["-n", "1000", "-s", str(LAT_SIZE)], LAT_SIZE)])


def _exe(tool: str) -> str:
    from rdmacheck.util.errors import UsageError

    exe = shutil.which(tool)
    if not exe:
        raise UsageError(f"--engine perftest: {tool} not found; install perftest (apt-get install perftest) or "
                         "use the default pyverbs engine")
    return exe


def serve(plans, addr: str, port: int, lifetime: float, say: Callable[[str], None], duration: float = 2.0) -> int:
    """Serve the steps of every plan in turn (plan i on port+i) until ``lifetime`` ends."""
    end = time.monotonic() + lifetime
    bad = 0
    for i, plan in enumerate(plans):
        for tool, extra, size in _steps(duration):
            left = end - time.monotonic()
            if left <= 0:
                say("lifetime over")
                return 1 if bad else 0
            argv = [_exe(tool), *_flags(plan), *extra, "-p", str(port + i)]
            say(f"{plan.name}: {tool} {size} B server on port {port + i}")
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=min(left, STEP_TIMEOUT_S + 30),
                                   stdin=subprocess.DEVNULL)
                bad += p.returncode != 0
            except subprocess.TimeoutExpired:
                say(f"{plan.name}: {tool} server: no client within its bound")
                bad += 1
    return 1 if bad else 0


def run_pair(plan, peer: str, port: int, args) -> dict[str, Any]:
    """The client side of every step against ``peer:port``; the LinkResult-shaped outcome."""
    from rdmacheck.verbs.perftest import BW_COLUMNS, LAT_COLUMNS, mib_to_gb, parse_table

    res: dict[str, Any] = {"ok": False, "stage": None, "error": None, "engine": "perftest",
                           "bandwidth": {"points": []}, "latency": {"points": []}, "outputs": []}
    for tool, extra, size in _steps(getattr(args, "duration", 2.0)):
        argv = [_exe(tool), *_flags(plan), *extra, "-p", str(port), peer]
        give_up = time.monotonic() + CONNECT_GRACE_S
        while True:
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, stdin=subprocess.DEVNULL)
                out = p.stdout + p.stderr
            except subprocess.TimeoutExpired as e:
                out = f"{tool} did not finish within {STEP_TIMEOUT_S:g} s"
                p = None
            if p is not None and "Couldn't connect" in out and time.monotonic() < give_up:
                time.sleep(0.5)
                continue
            break
        res["outputs"].append({"argv": argv, "rc": p.returncode if p else None, "tail": out[-800:]})
        if tool == "ib_write_bw":
            rows = parse_table(out, BW_COLUMNS)
            if not rows or rows[-1]["iterations"] <= 0:
                res["stage"], res["error"] = "transfer", f"{tool} -s {size}: no result ({out.strip().splitlines()[-1:] or ['no output']})"
                return res
            res["bandwidth"]["points"].append({"size": size, "gb_per_s": mib_to_gb(rows[-1]["bw_avg_mib_s"]),
                                               "verified": None})
        else:
            rows = parse_table(out, LAT_COLUMNS)
            if not rows:
                res["stage"], res["error"] = "transfer", f"{tool}: no result"
                return res
            r = rows[-1]
            res["latency"]["points"].append({"size": size, "p50_us": r["t_typical_us"], "p99_us": r["p99_us"]})
    res["ok"] = True
    return res
