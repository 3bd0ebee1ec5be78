"""Entry of one rank started by ``--nproc`` (options arrive as JSON in the environment)."""

from __future__ import annotations

import os
import sys

from rdmacheck.util.errors import UsageError
from .runner import BenchOptions, run_rank


OPTIONS_FILE_ENV = "RDMACHECK_BENCH_OPTIONS_FILE"


def _leave_usage_line(rank: str, message: str) -> None:
    from .runner import STATUS_DIR_ENV

    d = os.environ.get(STATUS_DIR_ENV)
    if not d:  # under torchrun there is no launcher to relay it: say it here, naming the rank
        print(f"rdmacheck: error: rank {rank}: {message}", file=sys.stderr)
        return
    try:
        with open(os.path.join(d, f"usage-{rank}.txt"), "w", encoding="utf-8") as f:
            f.write(message)
    except OSError:
        print(f"rdmacheck: error: rank {rank}: {message}", file=sys.stderr)


def main() -> int:
    try:
        # a file, not an environment variable: Linux caps one variable at 128 KiB (E2BIG at exec)
        with open(os.environ[OPTIONS_FILE_ENV], encoding="utf-8") as f:
            opts = BenchOptions.from_json(f.read())
        return run_rank(opts)
    except UsageError as e:
        rank = os.environ.get("RANK", "0")
        if rank == "0":  # every rank would say the same: rank 0 speaks
            print(f"rdmacheck: error: {e}", file=sys.stderr)
        else:
            # a refusal only this rank met (e.g. more ranks than GPUs): the launcher says it when rank 0 did not
            _leave_usage_line(rank, str(e))
        return 2
    except Exception as e:
        from rdmacheck.util.crash import report_internal_error

        return report_internal_error(e, None, where=f"bench rank {os.environ.get('RANK', '?')}")


if __name__ == "__main__":
    sys.exit(main())
