"""Entry of one rank started by ``--nproc`` (options arrive as JSON in the environment)."""

from __future__ import annotations

import os
import sys

from .runner import BenchOptions, run_rank


def main() -> int:
    opts = BenchOptions.from_json(os.environ["RDMACHECK_BENCH_OPTIONS"])
    return run_rank(opts)


if __name__ == "__main__":
    sys.exit(main())
