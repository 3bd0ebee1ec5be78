"""The verbs engine against perftest on one soft-RoCE pair, interleaved, as ratios (the issue's goals).

    python3 benchmarks/verbs_vs_perftest.py [--latency-only] [--rounds N] [--lat-rounds N] [GUEST_OUT_DIR]

Without a folder it boots the soft-RoCE guest once (needs `bash .ci/softroce-setup.sh`; ~6 minutes under TCG
on a quiet 2-core machine) and runs benchmarks/softroce/verbs_vs_perftest.sh there: per round and message
size, ib_write_bw and then the engine's RDMA WRITE (rdmacheck.verbs.wire.run_link, every byte verified by
the server) on the same devices, GID indexes, sizes, QP count (2), WRs in flight per QP (4), message count,
traffic class 106, SL 3, MTU 4096; then ib_write_lat and the engine's ping-pong the same way.  With a folder
it reads one kept from an earlier boot.  --rounds (default 5) and --lat-rounds (default 3) set the
interleaved rounds of each part; --latency-only skips the bandwidth part (a boot for more latency pairs,
~3 minutes beside the ~6 of a whole run).

Prints per size the best of each tool, their ratio, and the median ratio of the back-to-back pairs (the
pairing cancels most of a shared host's load swings); then the goals: bandwidth >= 0.9x ib_write_bw for
messages >= 1 MiB (pooled over those sizes), latency p50 within 1.3x ib_write_lat's typical.  Timings under
TCG emulation: read the spread (each round's numbers are printed) before the ratio.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GUEST_SCRIPT = REPO / "benchmarks" / "softroce" / "verbs_vs_perftest.sh"


def _fmt(xs) -> str:
    return " ".join("-" if x is None else f"{x:.4g}" for x in xs)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="verbs_vs_perftest.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="a guest folder kept from an earlier boot (read, no boot)")
    ap.add_argument("--latency-only", action="store_true", help="skip the bandwidth part")
    ap.add_argument("--rounds", type=int, default=5, help="bandwidth rounds (default 5)")
    ap.add_argument("--lat-rounds", type=int, default=3, help="latency rounds (default 3)")
    ap.add_argument("--tsc", action="store_true",
                    help="boot the guest with clocksource=tsc: its default (hpet) makes every clock read a "
                         "syscall and an emulated device read, which the engine's per-message time stamp pays "
                         "and perftest's rdtsc does not")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.lat_rounds < 1:
        ap.error("--rounds and --lat-rounds need 1 or more")
    if a.folder:
        out = Path(a.folder)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from softroce import guest

        out = guest.boot_for("verbs_vs_perftest", GUEST_SCRIPT, ["latency" if a.latency_only else "all",
                                                                str(a.rounds), str(a.lat_rounds)], timeout=1800,
                             vng_args=["--append", "clocksource=tsc tsc=reliable"] if a.tsc else ())
        if out is None:
            return 2
    try:
        doc = json.loads((out / "client.json").read_text())
    except (OSError, ValueError) as e:
        print(f"verbs_vs_perftest: no client.json in {out} ({e}); see {out}/guest.log", file=sys.stderr)
        return 1
    bw, lat = doc.get("bandwidth") or {}, doc.get("latency") or {}
    print("RDMA WRITE bandwidth, GB/s (engine verified / ib_write_bw), per round:")
    print(f"{'size':>9} {'engine best':>11} {'perftest best':>13} {'ratio':>6} {'pair median':>11}  rounds engine | perftest")
    pooled = []
    for r in bw.get("table", []):
        print(f"{r['size']:>9} {r['engine_gb_per_s'] or 0:>11.4f} {r['perftest_gb_per_s'] or 0:>13.4f} "
              f"{r['ratio'] or 0:>6.2f} {r['median_pair_ratio'] or 0:>11.2f}  {_fmt(r['engine_all'])} | "
              f"{_fmt(r['perftest_all'])}")
        if r["size"] >= 1 << 20:
            pooled += [o / t for o, t in zip(r["engine_all"], r["perftest_all"]) if o and t]
    print("ping-pong latency, one-way us (engine p50 / ib_write_lat typical), per round:")
    print(f"{'size':>9} {'engine p50':>10} {'perftest':>9} {'ratio':>6} {'pair median':>11}  rounds engine | perftest")
    lat8 = None
    for r in lat.get("table", []):
        print(f"{r['size']:>9} {r['engine_p50_us'] or 0:>10.1f} {r['perftest_p50_us'] or 0:>9.1f} "
              f"{r['ratio_p50'] or 0:>6.2f} {r['median_pair_ratio'] or 0:>11.2f}  {_fmt(r['engine_all'])} | "
              f"{_fmt(r['perftest_all'])}")
        if r["size"] == 8:
            lat8 = r["median_pair_ratio"]
    bw_goal = statistics.median(pooled) if pooled else None
    print(f"goal bandwidth >= 0.9x at >= 1 MiB (median of {len(pooled)} back-to-back pairs): "
          + (f"{bw_goal:.2f}x {'met' if bw_goal >= 0.9 else 'NOT met'}" if bw_goal else "no pair measured"))
    print("goal latency p50 <= 1.3x at 8 B (median of the back-to-back pairs): "
          + (f"{lat8:.2f}x {'met' if lat8 <= 1.3 else 'NOT met'}" if lat8 else "no pair measured"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
