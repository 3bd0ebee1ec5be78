"""One side of the engine's 8 B RDMA WRITE ping-pong, on its own, for benchmarks/softroce/latency_trace.sh.

    pingpong.py ping|pong DEV GID_INDEX DIR ITERS

Both sides open their device with NCCL's settings as the benchmark passes them to ib_write_lat (TC 106, SL 3,
MTU 4096, timeout 20), swap their endpoint info through files in DIR (no TCP side channel: nothing else runs
while the kernel is traced), and call rdmacheck.verbs.engine.write_latency, the code `rdmacheck link` runs.
The ping side prints the engine's p50 and writes it to DIR/result.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from rdmacheck.verbs import engine as eng  # noqa: E402
from rdmacheck.verbs import wire  # noqa: E402


def _wait_for(path: Path, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} did not appear within {seconds:.0f} s")
        time.sleep(0.02)


def _publish(path: Path, doc: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    role, dev, gidx, d, iters = argv[0], argv[1], int(argv[2]), Path(argv[3]), int(argv[4])
    if role not in ("ping", "pong"):
        print(__doc__, file=sys.stderr)
        return 2
    params = eng.QpParams(device=dev, gid_index=gidx, traffic_class=106, service_level=3, mtu=4096, timeout=20)
    me, other = ("ping", "pong") if role == "ping" else ("pong", "ping")
    with eng.Endpoint(params, mr_size=1 << 16, num_qps=1, max_inline=wire.INLINE_BYTES) as ep:
        _publish(d / f"{me}.json", ep.info())
        _wait_for(d / f"{other}.json", 120)
        eng.connect(ep, json.loads((d / f"{other}.json").read_text()))
        if role == "pong":
            eng.latency_reset(ep, 8)
            _publish(d / "ready", 1)
        else:
            _wait_for(d / "ready", 120)
        res = eng.write_latency(ep, [8], iters, initiator=role == "ping", stall_s=5, start_s=30, reset=False)
        if role == "ping":
            pt = res.points[0] if res.points else None
            doc = {"ok": res.ok, "p50_us": pt and pt.p50_us, "p99_us": pt and pt.p99_us, "max_inline": ep.max_inline,
                   "failure": res.failure and res.failure.to_dict()}
            _publish(d / "result.json", doc)
            print(json.dumps(doc), flush=True)
        return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
