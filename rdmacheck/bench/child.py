"""Entry of one rank started by ``--nproc`` (options arrive as JSON in the environment)."""

from __future__ import annotations

import os
import sys

from rdmacheck.util.errors import UsageError
from .runner import BenchOptions, run_rank


OPTIONS_FILE_ENV = "RDMACHECK_BENCH_OPTIONS_FILE"
PARENT_PID_ENV = "RDMACHECK_BENCH_PARENT_PID"
PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


def die_with_parent() -> None:
    """A rank must not outlive the ``--nproc`` launcher (SIGTERM or SIGKILL to it): it would finish the sweep,
    rewrite --json after the launcher is gone and leave the status folder behind.

    Three layers, each covering the next one's gap: the kernel signals the rank when the launcher dies
    (``prctl(PR_SET_PDEATHSIG, SIGHUP)``; a launcher that died before that call is caught by comparing getppid
    with the pid it passed down); the SIGHUP handler removes the status folder and exits; and a thread that
    watches getppid every 0.2 s does the same when the main thread sits in C code (a collective) and the
    handler cannot run yet.  SIGHUP, not SIGTERM: the launcher stops ranks with SIGTERM, which keeps its
    default action (immediate, also inside a collective)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent:
        return  # under torchrun: torchrun owns the ranks
    import ctypes
    import signal
    import threading

    status_dir = os.environ.get("RDMACHECK_BENCH_STATUS_DIR") or ""

    def orphaned() -> bool:
        return str(os.getppid()) != parent

    def leave() -> None:
        if status_dir:
            import shutil
            import time

            # the other ranks' heartbeat threads may write into it while it goes: until it is gone
            for _ in range(50):
                shutil.rmtree(status_dir, ignore_errors=True)
                if not os.path.exists(status_dir):
                    break
                time.sleep(0.02)
        os._exit(1)

    def on_hup(signum, frame) -> None:
        if orphaned():
            leave()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a real hang-up: die by it, as before
        os.kill(os.getpid(), signal.SIGHUP)

    signal.signal(signal.SIGHUP, on_hup)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the getppid watch below still ends the rank
    if orphaned():
        leave()

    def watch() -> None:
        import time

        while True:
            time.sleep(0.2)
            if orphaned():
                leave()

    threading.Thread(target=watch, name="rdmacheck-bench-parent-watch", daemon=True).start()


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
    die_with_parent()
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
