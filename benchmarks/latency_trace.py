"""Where the 8 B ping-pong's time goes: ib_write_lat against the verbs engine, from the guest kernel's own trace.

    python3 benchmarks/latency_trace.py [--rounds N] [--iters N] [GUEST_OUT_DIR]

Boots the soft-RoCE guest once (needs `bash .ci/softroce-setup.sh`; about 2 minutes under TCG) and runs
benchmarks/softroce/latency_trace.sh there: ib_write_lat and the engine's ping-pong (the code `rdmacheck link`
runs) on the same rxe pair and settings, each with the function tracer on the rxe path.  From each trace it
splits the one-way time -- from one side's post entering the kernel to the other side's next post entering
it -- into

  kernel    the post's system call entered -> the bytes landed in the peer's memory (rxe_mr_copy called by
            the peer's rxe_responder): the kernel's rxe and network path, the same code for both tools;
  reaction  the bytes landed -> the peer's next post entered the kernel: the peer noticing the byte it polls
            and posting its answer (user space: C for ib_write_lat, Python and pyverbs for the engine).

Medians over every message of the round.  The tracer slows both tools alike (one-way times run ~40 %
above the untraced ones of benchmarks/verbs_vs_perftest.py); read the split, not the totals.
With a folder it reads one kept from an earlier boot.
"""

from __future__ import annotations

import bisect
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GUEST_SCRIPT = REPO / "benchmarks" / "softroce" / "latency_trace.sh"
# "  comm-pid  [cpu] flags  secs.usecs: function <-caller"
EVENT = re.compile(r"^\s*\S.*?-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): (\S+) <-(\S+)")
OUTLIER_US = 1000.0   # a gap this long is a scheduling hiccup or the end of the run, not one message


def split(trace: Path) -> dict | None:
    """Per message: one-way, kernel, reaction (us), medians; None without ping-pong events."""
    posts, landed = [], []            # (time us, pid)
    for line in trace.read_text(errors="replace").splitlines():
        m = EVENT.match(line)
        if not m:
            continue
        t, fn, caller = float(m.group(2)) * 1e6, m.group(3), m.group(4)
        if fn == "ib_uverbs_post_send":
            posts.append((t, int(m.group(1))))
        elif fn == "rxe_mr_copy" and caller == "rxe_responder":
            landed.append(t)
    post_t = [p[0] for p in posts]
    one_way, kernel, reaction = [], [], []
    for t, pid in posts:
        j = bisect.bisect_left(landed, t) - 1           # the last bytes that landed before this post
        if j < 0:
            continue
        k = bisect.bisect_left(post_t, landed[j]) - 1   # the post that carried them
        if k < 0 or posts[k][1] == pid:                 # the peer's post, or this is no ping-pong step
            continue
        parts = (t - posts[k][0], landed[j] - posts[k][0], t - landed[j])
        if max(parts) < OUTLIER_US:
            for xs, x in zip((one_way, kernel, reaction), parts):
                xs.append(x)
    if not one_way:
        return None
    med = statistics.median
    return {"messages": len(one_way), "one_way_us": med(one_way), "kernel_us": med(kernel),
            "reaction_us": med(reaction)}


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="latency_trace.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="a guest folder kept from an earlier boot (read, no boot)")
    ap.add_argument("--rounds", type=int, default=2, help="traced rounds of each tool (default 2)")
    ap.add_argument("--iters", type=int, default=400, help="messages per run (default 400)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.iters < 10:
        ap.error("--rounds needs 1 or more and --iters 10 or more")
    if a.folder:
        out = Path(a.folder)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from softroce import guest

        out = guest.boot_for("latency_trace", GUEST_SCRIPT, [str(a.rounds), str(a.iters)], timeout=900)
        if out is None:
            return 2
    rows = []
    for trace in sorted(out.glob("trace_*_*.txt")):
        tool, rnd = trace.stem.split("_")[1:]
        s = split(trace)
        if s is None:
            print(f"{trace.name}: no ping-pong in the trace; see {out}/guest.log", file=sys.stderr)
            continue
        rows.append(dict(s, tool=tool, round=int(rnd)))
    if not rows:
        return 1
    print(f"{'tool':<9} {'round':>5} {'messages':>8} {'one-way us':>10} {'kernel us':>9} {'reaction us':>11}")
    for r in sorted(rows, key=lambda r: (r["round"], r["tool"])):
        print(f"{r['tool']:<9} {r['round']:>5} {r['messages']:>8} {r['one_way_us']:>10.1f} {r['kernel_us']:>9.1f} "
              f"{r['reaction_us']:>11.1f}")
    med = statistics.median
    by = {t: [r for r in rows if r["tool"] == t] for t in ("perftest", "engine")}
    if by["perftest"] and by["engine"]:
        for part in ("one_way_us", "kernel_us", "reaction_us"):
            e, p = med(r[part] for r in by["engine"]), med(r[part] for r in by["perftest"])
            print(f"engine / ib_write_lat, {part[:-3]:<9}: {e:.1f} / {p:.1f} us = {e / p:.2f}x (+{e - p:.1f} us)")
    for f in sorted(out.glob("engine_*.json")):
        print(f"{f.name}: {f.read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
