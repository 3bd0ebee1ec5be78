"""rdmacheck link against perftest on the same soft-RoCE pair, GIDs, sizes and QP settings, as ratios.

    python3 benchmarks/link_vs_perftest.py [GUEST_OUT_DIR]

Without a folder it boots the soft-RoCE guest once (tests/softroce/session.sh, ~3-6 minutes under TCG on
2 cores; needs `bash .ci/softroce-setup.sh`) and reads what its data-path block wrote; with one it reads a
session folder kept from a test run.  Prints, per message size, link's verified RDMA WRITE GB/s (pyverbs
engine and --engine perftest) beside ib_write_bw's on the same pair, and link's 8 B one-way p50 beside
ib_write_lat's typical latency: the numbers the issue's goals are stated in (>= 0.9x, <= 1.3x, +-10 %).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def perftest_gbs(text: str) -> float | None:
    rows = [ln.split() for ln in text.splitlines() if re.match(r"^\s*\d+\s+\d+\s+[\d.]+\s+[\d.]+", ln)]
    return float(rows[-1][3]) / 8 if rows and int(rows[-1][1]) > 0 else None


def main(argv: list[str]) -> int:
    if argv:
        out = Path(argv[0])
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from softroce import guest

        out = guest.boot_for("link_vs_perftest", REPO / "tests" / "softroce" / "session.sh", timeout=1500)
        if out is None:
            return 2
    d = out / "datapath"
    good = json.loads((d / "good.json").read_text())
    perf = json.loads((d / "perftest.json").read_text())
    link = {p["size"]: p["gb_per_s"] for p in good["context"]["runs"][0]["result"]["bandwidth"]["points"]}
    plink = {p["size"]: p["gb_per_s"] for p in perf["context"]["runs"][0]["result"]["bandwidth"]["points"]}
    print(f"guest folder: {out}")
    print(f"{'size':>9} {'link GB/s':>10} {'ib_write_bw':>12} {'ratio':>6} {'link --engine perftest':>23} {'pyverbs/perftest':>17}")
    for size in (1 << 20, 4 << 20):
        f = d / f"ib_write_bw_{size}.txt"
        truth = perftest_gbs(f.read_text()) if f.is_file() else None
        a, b = link.get(size), plink.get(size)
        print(f"{size:>9} {a or 0:>10.4f} {truth or 0:>12.4f} {(a / truth if a and truth else 0):>6.2f} "
              f"{b or 0:>23.4f} {(a / b if a and b else 0):>17.2f}")
    lat = next(p for p in good["context"]["runs"][0]["result"]["latency"]["points"] if p["size"] == 8)
    rows = [ln.split() for ln in (d / "ib_write_lat.txt").read_text().splitlines() if re.match(r"^\s*8\s+\d+\s", ln)]
    typical = float(rows[-1][4]) if rows else None
    print(f"8 B one-way: link p50 {lat['p50_us']:.1f} us, p99 {lat['p99_us']:.1f} us; ib_write_lat typical "
          f"{typical or 0:.1f} us; ratio {(lat['p50_us'] / typical if typical else 0):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
