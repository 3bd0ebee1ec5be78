"""Guest side of benchmarks/verbs_vs_perftest.py: the verbs engine (rdmacheck/verbs) against ib_write_bw and
ib_write_lat on two real rxe devices, the same GID indexes, sizes, QP count, WRs in flight, traffic class,
SL, MTU and QP timeout.  Run by benchmarks/softroce/verbs_vs_perftest.sh inside the soft-RoCE guest.

    verbs_vs_perftest.py serve  OUT DEV GID_INDEX ADDR PORT LIFETIME_S QP_JSON   # the link server (rxe0 side)
    verbs_vs_perftest.py client OUT CONFIG.json                                  # the measurements, in order

Each writes JSON under OUT; ``client`` rewrites client.json after each step, so a hang still leaves what was
measured.  The measuring helpers interleave perftest and the engine (P E P E ...) per size and round, so a
load spike on the shared host hits both sides alike.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]   # benchmarks/softroce/ -> the checkout
sys.path.insert(0, str(REPO))

from rdmacheck.verbs import engine as eng  # noqa: E402
from rdmacheck.verbs import perftest  # noqa: E402
from rdmacheck.verbs import wire  # noqa: E402


def say(line: str) -> None:
    """Progress on stdout (the shell keeps it): a crash or a hang still shows how far it got."""
    print(f"{time.time():.3f} {line}", flush=True)


def _dump(path: Path, doc: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- server
def serve_main(out: Path, dev: str, gidx: int, addr: str, port: int, lifetime: float, qp: dict) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    logf = open(out / "server.log", "a", buffering=1)

    def log(line: str) -> None:
        logf.write(f"{time.time():.3f} {line}\n")

    params = eng.QpParams(device=dev, gid_index=gidx, **qp)
    t0 = time.monotonic()
    try:
        rep = wire.serve_link(params, addr, port, lifetime, io_timeout_s=3.0, idle_timeout_s=60.0, stop=stop,
                              log=log, on_listen=lambda p: (out / "server.ready").write_text(str(p)))
        doc = {"report": rep.to_dict()}
    except Exception as e:
        doc = {"error": eng.one_line(f"{type(e).__name__}: {e}"), "traceback": traceback.format_exc()}
    doc["seconds"] = round(time.monotonic() - t0, 3)
    _dump(out / "server.json", doc)
    return 0


# ---------------------------------------------------------------------------------------------- measuring
COUNTERS = ("sent_pkts", "rcvd_pkts", "duplicate_request", "out_of_seq_request", "completer_retry_err",
            "rcvd_seq_err", "retry_exceeded_err")


def counters() -> dict[str, int]:
    """rxe hw_counters of every device (retransmissions explain a slow round: rxe's ACK timeout is 4.3 s)."""
    out = {}
    base = Path("/sys/class/infiniband")
    for dev in sorted(p.name for p in base.iterdir()) if base.is_dir() else []:
        for c in COUNTERS:
            try:
                out[f"{dev}/{c}"] = int((base / dev / "ports/1/hw_counters" / c).read_text())
            except (OSError, ValueError):
                pass
    return out


def delta(before: dict[str, int]) -> dict[str, int]:
    now = counters()
    return {k: now[k] - before.get(k, 0) for k in now if now[k] - before.get(k, 0) and not k.endswith("_pkts")}


def bw_count(size: int, target_bytes: int, num_qps: int) -> int:
    """Messages per QP for one size: about ``target_bytes`` over all QPs (seconds at rxe's emulated pace)."""
    return max(8, target_bytes // (size * num_qps))


def measure_bandwidth(params: eng.QpParams, peer: tuple[str, int], server_addr: str, port: int, sizes: list[int],
                      *, rounds: int = 2, num_qps: int = 2, depth: int = 4, target_bytes: int = 96 << 20,
                      stall_s: float = 15.0, qp: dict | None = None, perftest_port: int = 18515) -> dict:
    """Engine vs ib_write_bw on the same devices, GID indexes, sizes, QP count, WRs in flight per QP (-t),
    message count (-n per QP), traffic class, SL, MTU and QP timeout.  Per round and size, perftest and then
    the engine, back to back (the shared host's load changes by the minute): the best of each per size,
    their ratio, and the median ratio of the back-to-back pairs.  (Not perftest's duration mode: it counts
    completions in CQ-moderation batches of 100, and with a few hundred MiB-sized messages reports 0.)"""
    qp = qp or {}
    runs: dict = {"perftest": [], "engine": []}
    for _ in range(rounds):
        pt, points = {}, []
        for size in sizes:
            n = bw_count(size, target_bytes, num_qps)
            c0 = counters()
            r = perftest.ib_write_bw(peer, (params.device, params.gid_index), server_addr, size, iters=n,
                                     qps=num_qps, tx_depth=depth, qp=qp, port=perftest_port)
            pt[size] = {k: r[k] for k in ("gb_per_s", "mib_per_s", "iterations", "client_rc", "server_rc", "seconds",
                                          "timed_out", "client_cmd", "calibration_failed")}
            pt[size]["retransmissions"] = delta(c0)
            pt[size]["client_out"] = r["client_out"][-1500:]
            pt[size]["server_out"] = r["server_out"][-800:]
            say(f"ib_write_bw {size} x {n} x {num_qps} QPs: {r['gb_per_s']} GB/s rc {r['client_rc']}/{r['server_rc']} "
                f"{r['seconds']} s {pt[size]['retransmissions']}")
            # the engine: the same message count as perftest's (n per QP), one session per size
            cfg = wire.LinkConfig(bw_sizes=[size], bw_duration_s=None, bw_count=n * num_qps, lat_sizes=[],
                                  num_qps=num_qps, depth=depth, stall_s=stall_s)
            c0 = counters()
            res = wire.run_link(params, server_addr, port, cfg)
            rt = delta(c0)
            say(f"engine bw {size}: ok={res.ok} "
                f"{[(p.gb_per_s, p.messages, p.verified) for p in (res.bandwidth.points if res.bandwidth else [])]} "
                f"{res.error or ''} {res.timings_s} {rt}")
            points.append(dict(res.to_dict(), retransmissions=rt))
        runs["perftest"].append(pt)
        runs["engine"].append(points)
    table = []
    for size in sizes:
        ours = [next((p["gb_per_s"] for r in rnd if r["bandwidth"] for p in r["bandwidth"]["points"]
                      if p["size"] == size and p["verified"]), None) for rnd in runs["engine"]]
        theirs = [r[size]["gb_per_s"] for r in runs["perftest"]]
        best_o = max((x for x in ours if x), default=None)
        best_t = max((x for x in theirs if x), default=None)
        both = [(o, t) for o, t in zip(ours, theirs) if o and t]  # rounds where both reported
        pairs = [o / t for o, t in both]
        mean_ratio = (sum(o for o, _ in both) / sum(t for _, t in both)) if both else None
        table.append({"size": size, "engine_gb_per_s": best_o, "perftest_gb_per_s": best_t,
                      "ratio": round(best_o / best_t, 3) if best_o and best_t else None,
                      "mean_ratio": round(mean_ratio, 3) if mean_ratio else None,
                      "median_pair_ratio": round(statistics.median(pairs), 3) if pairs else None,
                      "engine_all": ours, "perftest_all": theirs})
    return {"table": table, "runs": runs}


def measure_latency(params: eng.QpParams, peer: tuple[str, int], server_addr: str, port: int, sizes: list[int],
                    *, rounds: int = 2, iters: int = 1000, qp: dict | None = None, perftest_port: int = 18516) -> dict:
    """Engine ping-pong vs ib_write_lat, per round and size back to back; the lowest median of each per size,
    their ratio, and the median ratio of the back-to-back pairs."""
    qp = qp or {}
    runs: dict = {"perftest": [], "engine": []}
    for _ in range(rounds):
        pt, eg = {}, {}
        for size in sizes:
            for attempt in range(3):  # perftest's clock calibration fails on a busy CPU: it then prints inf
                r = perftest.ib_write_lat(peer, (params.device, params.gid_index), server_addr, size, iters=iters,
                                          qp=qp, port=perftest_port)
                if r["t_typical_us"] is not None and math.isfinite(r["t_typical_us"]):
                    break
            pt[size] = {k: r[k] for k in ("t_typical_us", "p99_us", "iterations", "client_rc", "server_rc", "seconds",
                                          "client_cmd", "calibration_failed")}
            pt[size]["attempts"] = attempt + 1
            pt[size]["client_out"] = r["client_out"][-1500:]
            say(f"ib_write_lat {size}: {r['t_typical_us']} us rc {r['client_rc']}/{r['server_rc']} {r['seconds']} s "
                f"({attempt + 1} tries)")
            cfg = wire.LinkConfig(bw_sizes=[], lat_sizes=[size], lat_iters=iters, num_qps=1, stall_s=15.0)
            res = wire.run_link(params, server_addr, port, cfg)
            say(f"engine lat {size}: ok={res.ok} "
                f"{[(p.p50_us, p.p99_us) for p in (res.latency.points if res.latency else [])]} {res.error or ''}")
            eg[size] = res.to_dict()
        runs["perftest"].append(pt)
        runs["engine"].append(eg)
    def engine_point(r: dict) -> dict | None:
        return r["latency"]["points"][0] if r["latency"] and r["latency"]["points"] else None

    table = []
    for size in sizes:
        e_pts = [engine_point(r[size]) for r in runs["engine"]]                    # per round
        t_pts = [r[size] if r[size]["t_typical_us"] else None for r in runs["perftest"]]
        ours = [p["p50_us"] if p else None for p in e_pts]
        theirs = [p["t_typical_us"] if p else None for p in t_pts]
        o = min((p for p in e_pts if p), key=lambda p: p["p50_us"], default=None)
        t = min((p for p in t_pts if p), key=lambda p: p["t_typical_us"], default=None)
        pairs = [a / b for a, b in zip(ours, theirs) if a and b]
        table.append({"size": size, "engine_p50_us": o and o["p50_us"], "engine_p99_us": o and o["p99_us"],
                      "perftest_p50_us": t and t["t_typical_us"], "perftest_p99_us": t and t["p99_us"],
                      "ratio_p50": round(o["p50_us"] / t["t_typical_us"], 3) if o and t else None,
                      "median_pair_ratio": round(statistics.median(pairs), 3) if pairs else None,
                      "engine_all": ours, "perftest_all": theirs})
    return {"table": table, "runs": runs}


# ---------------------------------------------------------------------------------------------- hostile
# ---------------------------------------------------------------------------------------------- client
def client_main(out: Path, cfg_path: Path) -> int:
    cfg = json.loads(cfg_path.read_text())
    A, B = cfg["a"], cfg["b"]                  # {"dev", "gidx", "ip"}: A = server side (rxe0), B = client side
    qp = cfg.get("qp", {})
    pb = eng.QpParams(device=B["dev"], gid_index=B["gidx"], **qp)
    port = cfg["port"]
    doc: dict = {"config": cfg, "timings": {}}
    path = out / "client.json"

    only = set(cfg.get("only") or [])

    def step(name: str, fn) -> None:
        if only and name not in only and name != "server_wait":
            return
        t0 = time.monotonic()
        say(f"{name} ...")
        try:
            doc[name] = fn()
        except Exception as e:
            doc[name] = {"crash": eng.one_line(f"{type(e).__name__}: {e}"), "traceback": traceback.format_exc()}
        doc["timings"][name] = round(time.monotonic() - t0, 3)
        say(f"{name} done in {doc['timings'][name]} s")
        _dump(path, doc)

    step("gid_index", lambda: {"a": eng.roce_v2_ipv4_gid_index(A["dev"], 1, A["ip"]),
                               "b": eng.roce_v2_ipv4_gid_index(B["dev"], 1, B["ip"])})

    # the server answers once its port listens (it started beside us)
    def wait_server() -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240:
            if (out / "server.ready").exists():
                return {"waited_s": round(time.monotonic() - t0, 3)}
            time.sleep(0.2)
        raise TimeoutError("server.ready not there within 240 s")

    step("server_wait", wait_server)

    peer = (A["dev"], A["gidx"])
    step("bandwidth", lambda: measure_bandwidth(pb, peer, A["ip"], port, cfg["bw_sizes"], rounds=cfg["rounds"],
                                                num_qps=cfg["num_qps"], depth=cfg["depth"],
                                                target_bytes=cfg["bw_target_bytes"], qp=dict(qp, mtu=4096)))
    step("latency", lambda: measure_latency(pb, peer, A["ip"], port, cfg["lat_sizes"], rounds=cfg["lat_rounds"],
                                            iters=cfg["lat_iters"], qp=dict(qp, mtu=4096)))

    doc["done"] = True
    _dump(path, doc)
    return 0


def main(argv: list[str]) -> int:
    cmd, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if cmd == "serve":
        qp = json.loads(argv[7]) if len(argv) > 7 else {}
        return serve_main(out, argv[2], int(argv[3]), argv[4], int(argv[5]), float(argv[6]), qp)
    if cmd == "client":
        return client_main(out, Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
