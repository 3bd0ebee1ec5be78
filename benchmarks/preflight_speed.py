"""Wall time of `rdmacheck preflight` on this machine, and proof that it never imports torch.

Target (issue 2): <= 0.5 s per run. Prints the median of N runs of the real CLI in a fresh
process each (what an operator pays), the ratio to the target, and the modules it imported.

    python benchmarks/preflight_speed.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.5

PROBE = (
    "import sys, runpy; sys.argv=['rdmacheck','preflight','-q']\n"
    "try:\n    runpy.run_module('rdmacheck', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    "bad=[m for m in ('torch','pandas','matplotlib','ray') if m in sys.modules]\n"
    "print('HEAVY_IMPORTS=' + ','.join(bad))\n"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # `pip install` byte-compiles the package; this sandbox sets PYTHONDONTWRITEBYTECODE, which would
    # make every run recompile every module. Compile once, as an installed copy would be.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "rdmacheck")], env=env, check=True)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rdmacheck", "preflight", "-q"], env=env, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60).stdout
    heavy = [l.split("=", 1)[1] for l in out.splitlines() if l.startswith("HEAVY_IMPORTS=")]
    med = statistics.median(times)
    print(f"rdmacheck preflight: median {med:.3f} s over {args.runs} runs (min {min(times):.3f}, max {max(times):.3f})")
    print(f"target {TARGET_S:.2f} s -> ratio {med / TARGET_S:.2f}x of the budget ({'OK' if med <= TARGET_S else 'OVER'})")
    print(f"heavy modules imported by preflight: {heavy[0] if heavy and heavy[0] else 'none'}")
    return 0 if med <= TARGET_S and not (heavy and heavy[0]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
