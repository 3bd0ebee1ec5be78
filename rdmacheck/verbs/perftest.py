"""Ground truth from perftest (``ib_write_bw``, ``ib_write_lat``) on the same devices, GID indexes, sizes
and QP settings as the engine, so the engine's numbers can be read as a ratio of the C tools'.

Both tools are a server and a client that meet over TCP; the client connects once and gives up
("Couldn't connect"), so it starts only once the server's port is in LISTEN (read from /proc/net/tcp).
``-F``: perftest calibrates its cycle counter against the wall clock at start; on a busy (emulated) CPU
that fit can fail its own check and the client then exits 1 after a complete transfer.  With ``-F`` it
reports.  Everything runs under a timeout and is killed past it.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

# ib_write_bw columns (its default unit, MB/sec, is MiB/s: 2 decimals, where --report_gbits' Gb/s with 2
# decimals is too coarse at soft-RoCE's emulated pace: 0.12 vs 0.16 Gb/s); ib_write_lat columns
BW_COLUMNS = ("bytes", "iterations", "bw_peak_mib_s", "bw_avg_mib_s", "msg_rate_mpps")
LAT_COLUMNS = ("bytes", "iterations", "t_min_us", "t_max_us", "t_typical_us", "t_avg_us", "t_stdev_us",
               "p99_us", "p999_us")


def listening(port: int) -> bool:
    hexport = f":{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[1].endswith(hexport) and parts[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def mib_to_gb(mib_per_s: float) -> float:
    """perftest's MB/sec (MiB/s) as GB/s (1e9 bytes/s), the unit every rdmacheck bandwidth is in."""
    return round(mib_per_s * (1 << 20) / 1e9, 6)


def parse_table(text: str, columns: tuple[str, ...]) -> list[dict[str, float]]:
    """The numeric rows under perftest's ``#bytes`` header, by position."""
    rows: list[dict[str, float]] = []
    seen = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#bytes"):
            seen = True
            continue
        if not seen or not s or s.startswith("-"):
            continue
        toks = s.split()
        try:
            nums = [float(t) for t in toks[: len(columns)]]
        except ValueError:
            continue
        if len(nums) == len(columns):
            rows.append(dict(zip(columns, nums)))
    return rows


def run_pair(tool: str, common: list[str], server_addr: str, port: int, timeout_s: float = 120.0,
             server_args: list[str] | None = None, client_args: list[str] | None = None) -> dict[str, Any]:
    """Start ``tool`` as server (``common + server_args``), then as client towards ``server_addr``."""
    srv_cmd = [tool, *common, *(server_args or []), "-p", str(port)]
    cli_cmd = [tool, *common, *(client_args or []), "-p", str(port), server_addr]
    t0 = time.monotonic()
    srv = subprocess.Popen(srv_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    cli = None
    try:
        end = t0 + timeout_s
        while not listening(port):
            if srv.poll() is not None or time.monotonic() > end:
                break
            time.sleep(0.05)
        cli = subprocess.run(cli_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=max(1.0, end - time.monotonic()))
        srv_out, _ = srv.communicate(timeout=max(1.0, end - time.monotonic()))
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        srv_out = ""
    finally:
        if srv.poll() is None:
            try:
                os.killpg(srv.pid, 9)
            except ProcessLookupError:
                pass
            srv.wait()
    return {"server_cmd": srv_cmd, "client_cmd": cli_cmd, "server_rc": srv.returncode,
            "client_rc": None if cli is None else cli.returncode, "server_out": srv_out or "",
            "client_out": "" if cli is None else cli.stdout, "timed_out": timed_out,
            "seconds": round(time.monotonic() - t0, 3)}


def _common(dev: str, gid_index: int, size: int, qp: dict[str, Any]) -> list[str]:
    args = ["-F", "-d", dev, "-x", str(gid_index), "-s", str(size),
            "--tclass", str(qp.get("traffic_class", 0)), "--sl", str(qp.get("service_level", 0)),
            "-u", str(qp.get("timeout", 20))]
    if qp.get("mtu"):
        args += ["-m", str(qp["mtu"])]
    return args


def ib_write_bw(server: tuple[str, int], client: tuple[str, int], server_addr: str, size: int, *,
                duration_s: float | None = None, iters: int | None = None, qps: int = 1, tx_depth: int | None = None,
                qp: dict[str, Any] | None = None, port: int = 18515, timeout_s: float = 120.0) -> dict[str, Any]:
    """One ib_write_bw run: ``client`` (device, GID index) writes to ``server``.  Returns the client's row,
    its average as ``gb_per_s`` (1e9 bytes/s, from perftest's MiB/s), or None with the outputs when it did
    not report (or reported 0 iterations: perftest exits 0 then too).  Prefer ``iters``: in ``duration_s``
    mode perftest counts completions in CQ-moderation batches of 100, and with a few hundred large
    messages (soft-RoCE's pace) it reports 0."""
    qp = qp or {}
    extra = ["-q", str(qps)]
    if duration_s:
        # perftest measures between a margin (-f) after the start and before the end: a 1 s margin on each
        # side of a duration_s window (it insists on DURATION > 2 * MARGIN)
        extra += ["-D", str(int(max(1, round(duration_s))) + 2), "-f", "1"]
    else:
        extra += ["-n", str(iters or 1000)]
    if tx_depth:
        extra += ["-t", str(tx_depth)]
    r = run_pair("ib_write_bw", extra, server_addr, port, timeout_s,
                 server_args=_common(server[0], server[1], size, qp),
                 client_args=_common(client[0], client[1], size, qp))
    rows = parse_table(r["client_out"], BW_COLUMNS)
    row = rows[-1] if rows else None
    good = bool(row) and row["iterations"] > 0 and 0 < row["bw_avg_mib_s"] < float("inf")
    r.update(size=size, rows=rows, iterations=int(row["iterations"]) if row else 0,
             mib_per_s=row["bw_avg_mib_s"] if row else None,
             gb_per_s=mib_to_gb(row["bw_avg_mib_s"]) if good else None,
             # its cycle counter calibration failed: the numbers it printed are not times
             calibration_failed="Correlation coefficient" in r["client_out"])
    return r


def ib_write_lat(server: tuple[str, int], client: tuple[str, int], server_addr: str, size: int, *,
                 iters: int = 1000, qp: dict[str, Any] | None = None, port: int = 18516,
                 timeout_s: float = 120.0) -> dict[str, Any]:
    """One ib_write_lat run; ``t_typical_us`` is its median one-way latency (round trip / 2), None when it
    printed none or ``inf`` (its clock calibration failed on a busy CPU)."""
    r = run_pair("ib_write_lat", ["-n", str(iters)], server_addr, port, timeout_s,
                 server_args=_common(server[0], server[1], size, qp or {}),
                 client_args=_common(client[0], client[1], size, qp or {}))
    rows = parse_table(r["client_out"], LAT_COLUMNS) or parse_table(r["server_out"], LAT_COLUMNS)
    row = rows[-1] if rows else None
    good = bool(row) and 0 < row["t_typical_us"] < float("inf")
    r.update(size=size, rows=rows, t_typical_us=row["t_typical_us"] if good else None,
             p99_us=row["p99_us"] if good else None, iterations=int(row["iterations"]) if row else 0,
             calibration_failed="Correlation coefficient" in r["client_out"])
    return r
