"""How fast this machine runs one core of plain Python right now, so a CI time can be read against it.

The test suite is CPU-bound on a 2-core machine, and the same machine kind does not run at one speed:
on 2026-12-02 one quiet machine ran this loop in 1.1-1.2 s (the suite's tests: 392-417 s) and, on an
afternoon when the host was contended, in 2.9-3.0 s (tests: 900 s).  .ci/run prints this number before
and after the tests, so a slow CI run says whether the suite or the machine was slow.

    python3 benchmarks/machine_speed.py [--rounds 3] [--adds 20000000]

Prints one line: the best and the worst of the rounds (best: the machine's speed; worst: how steady it was).
"""

from __future__ import annotations

import argparse
import os
import time


# Module-level code (global names), as `python3 -c` runs it: the loop the recorded numbers above come
# from.  Inside a function (local names) the same loop runs about twice as fast, so it is not comparable.
LOOP = compile("x = 0\nfor i in range(adds):\n    x += i\n", "<machine-speed loop>", "exec")


def one_round(adds: int) -> float:
    names = {"adds": adds}
    t0 = time.perf_counter()
    exec(LOOP, names)
    took = time.perf_counter() - t0
    if names["x"] != adds * (adds - 1) // 2:
        raise SystemExit("machine speed: the loop did not run in full")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--adds", type=int, default=20_000_000, help="integer additions per round (default 20M)")
    a = ap.parse_args()
    if a.rounds < 1 or a.adds < 1:
        ap.error("--rounds and --adds must be at least 1")
    times = [one_round(a.adds) for _ in range(a.rounds)]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"machine speed: {a.adds / 1e6:g}M-add Python loop best {min(times):.2f} s, worst {max(times):.2f} s "
          f"over {a.rounds} rounds (load average {load}; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
